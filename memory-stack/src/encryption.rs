//! Whether a data directory is encrypted at rest, and under which key.
//!
//! An encrypted data directory holds `encryption.json` (0600): the format, what is encrypted
//! with which primitive, the key's fingerprint and a key check (a token sealed under the
//! key). Opening compares the key given with it before any file is read, so a missing or
//! wrong key is a clear error that changes nothing, and a key given for a memory that is not
//! encrypted is refused instead of sealing half of it (`memory encrypt` converts one). The
//! file holds no secret: the check opens only under the key, and the fingerprint is one-way.

use std::path::{Path, PathBuf};

use memory_seal::{MasterKey, Sealer};
use serde::{Deserialize, Serialize};

use crate::layout::DataDir;
use crate::{StackError, StorageMode, private_fs};

/// The marker of an encrypted data directory.
pub const ENCRYPTION_FILE: &str = "encryption.json";
/// The marker's format version.
const FORMAT: u32 = 1;
/// Larger than any marker; a bigger file is not one.
const MAX_MARKER_BYTES: u64 = 16 * 1024;

/// What `encryption.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionMarker {
    /// Format version (1).
    pub format: u32,
    /// How the database is encrypted: `sqlite3mc-aes256cbc` for a local file or replica,
    /// `server` when the database is on a server (encrypted there or not: its business).
    pub database: String,
    /// How the cache, journals and notes are sealed.
    pub records: String,
    /// The key's fingerprint (one-way; tells keys apart).
    pub fingerprint: String,
    /// Hex of a token sealed under the key ([`Sealer::key_check`]).
    pub key_check: String,
    /// When the directory was encrypted.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl EncryptionMarker {
    /// The marker for `key` in `mode`.
    pub fn new(key: &MasterKey, mode: &StorageMode) -> Result<Self, StackError> {
        let sealer = Sealer::new(key);
        let check = sealer
            .key_check()
            .map_err(|e| StackError::Encryption(format!("cannot seal the key check: {e}")))?;
        Ok(EncryptionMarker {
            format: FORMAT,
            database: match mode {
                StorageMode::Remote { .. } => "server".into(),
                _ => "sqlite3mc-aes256cbc".into(),
            },
            records: "xchacha20poly1305".into(),
            fingerprint: key.fingerprint(),
            key_check: memory_seal::hex::encode(&check),
            created_at: chrono::Utc::now(),
        })
    }

    /// Whether `key` is the key of this marker.
    pub fn opens_with(&self, key: &MasterKey) -> bool {
        memory_seal::hex::decode(self.key_check.as_bytes())
            .is_some_and(|token| Sealer::new(key).verify_check(&token))
    }
}

/// The marker of `dir`, if it has one. A marker that is a link, too large or unreadable is an
/// error (never trusted, never taken for "not encrypted").
pub fn read_marker(dir: &DataDir) -> Result<Option<EncryptionMarker>, StackError> {
    let path = dir.root().join(ENCRYPTION_FILE);
    let bad = |reason: String| StackError::Encryption(format!("{}: {reason}", path.display()));
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    if !meta.file_type().is_file() {
        return Err(bad("not a regular file (a link is never followed)".into()));
    }
    if meta.len() > MAX_MARKER_BYTES {
        return Err(bad(format!(
            "{} bytes is not an encryption marker",
            meta.len()
        )));
    }
    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| bad(format!("damaged encryption marker: {e}")))
}

/// Writes `marker` into `dir` unless one is there already (then the one there is returned):
/// written to a temporary file and linked into place, so no process reads half a marker and
/// two processes encrypting a new directory at once agree on one.
pub fn write_marker(
    dir: &DataDir,
    marker: &EncryptionMarker,
) -> Result<EncryptionMarker, StackError> {
    let path = dir.root().join(ENCRYPTION_FILE);
    let tmp = dir
        .root()
        .join(format!(".{ENCRYPTION_FILE}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(marker)
        .map_err(|e| StackError::Encryption(format!("cannot write the marker: {e}")))?;
    let _ = std::fs::remove_file(&tmp);
    private_fs::write(&tmp, &text).map_err(|e| dir.unusable(e))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir.root());
            Ok(marker.clone())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_marker(dir)?
            .ok_or_else(|| StackError::Encryption(format!("{} vanished", path.display()))),
        Err(e) => Err(dir.unusable(e)),
    }
}

/// Where the marker of `dir` is.
pub fn marker_path(dir: &DataDir) -> PathBuf {
    dir.root().join(ENCRYPTION_FILE)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Whether `dir` already holds a memory (database, replica, cache or journals).
pub fn holds_a_memory(dir: &DataDir) -> bool {
    let non_empty = |p: PathBuf| std::fs::symlink_metadata(p).is_ok_and(|m| m.len() > 0);
    let journals = std::fs::read_dir(dir.journals())
        .is_ok_and(|mut entries| entries.any(|e| e.is_ok_and(|e| e.path().is_file())));
    non_empty(dir.database())
        || non_empty(dir.replica())
        || non_empty(dir.cache())
        || non_empty(dir.legacy_outbox())
        || journals
}

/// The key the stack opens `dir` with: checks `key` against the directory's marker.
///
/// - marker and the right key: the key;
/// - marker and no key, or another key: [`StackError::KeyMissing`] / [`StackError::WrongKey`];
/// - no marker and a key: a new directory becomes encrypted (the marker is written first); one
///   that already holds a memory is [`StackError::NotEncrypted`];
/// - neither: `None` (not encrypted).
pub fn settle(
    dir: &DataDir,
    mode: &StorageMode,
    key: Option<&MasterKey>,
) -> Result<Option<MasterKey>, StackError> {
    let root = dir.root().to_path_buf();
    match (read_marker(dir)?, key) {
        (Some(marker), Some(key)) if marker.opens_with(key) => Ok(Some(key.clone())),
        (Some(marker), Some(key)) => Err(StackError::WrongKey {
            dir: root,
            given: key.fingerprint(),
            expected: marker.fingerprint,
        }),
        (Some(marker), None) => Err(StackError::KeyMissing {
            dir: root,
            fingerprint: marker.fingerprint,
        }),
        (None, Some(_)) if holds_a_memory(dir) => Err(StackError::NotEncrypted { dir: root }),
        (None, Some(key)) => {
            let written = write_marker(dir, &EncryptionMarker::new(key, mode)?)?;
            if written.opens_with(key) {
                Ok(Some(key.clone()))
            } else {
                Err(StackError::WrongKey {
                    dir: root,
                    given: key.fingerprint(),
                    expected: written.fingerprint,
                })
            }
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_directory_is_marked_and_then_needs_its_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let key = MasterKey::generate().unwrap();
        assert!(settle(&dir, &StorageMode::Local, None).unwrap().is_none());
        assert_eq!(
            settle(&dir, &StorageMode::Local, Some(&key)).unwrap(),
            Some(key.clone())
        );
        assert_eq!(
            settle(&dir, &StorageMode::Local, Some(&key)).unwrap(),
            Some(key.clone())
        );
        let err = settle(&dir, &StorageMode::Local, None).unwrap_err();
        assert!(matches!(err, StackError::KeyMissing { .. }), "{err}");
        let other = MasterKey::generate().unwrap();
        let err = settle(&dir, &StorageMode::Local, Some(&other)).unwrap_err();
        assert!(matches!(err, StackError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains(&key.fingerprint()), "{err}");
        let text = std::fs::read_to_string(dir.root().join(ENCRYPTION_FILE)).unwrap();
        assert!(!text.contains(key.to_hex().as_str()));
    }

    #[test]
    fn a_plain_memory_is_not_silently_half_encrypted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        std::fs::write(dir.database(), b"SQLite format 3\0").unwrap();
        let key = MasterKey::generate().unwrap();
        let err = settle(&dir, &StorageMode::Local, Some(&key)).unwrap_err();
        assert!(matches!(err, StackError::NotEncrypted { .. }), "{err}");
        assert!(!dir.root().join(ENCRYPTION_FILE).exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_linked_or_damaged_marker_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        std::fs::write(tmp.path().join("elsewhere"), b"{}").unwrap();
        std::os::unix::fs::symlink(
            tmp.path().join("elsewhere"),
            dir.root().join(ENCRYPTION_FILE),
        )
        .unwrap();
        assert!(matches!(read_marker(&dir), Err(StackError::Encryption(_))));
        std::fs::remove_file(dir.root().join(ENCRYPTION_FILE)).unwrap();
        std::fs::write(dir.root().join(ENCRYPTION_FILE), b"{\"format\":").unwrap();
        assert!(matches!(
            settle(&dir, &StorageMode::Local, None),
            Err(StackError::Encryption(_))
        ));
    }
}
