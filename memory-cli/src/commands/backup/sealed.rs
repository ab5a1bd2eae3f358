//! Sealed backups (`memory backup DIR --encrypt` of a memory that is not encrypted): the
//! snapshot is taken into a scratch file of a random name inside DIR, sealed into
//! `memory.db.sealed` with [`memory_seal::SealedWriter`], and the scratch file is removed,
//! whether the backup succeeds or not. And the namespace counts an encrypted backup's manifest
//! holds sealed (namespace names are user data).

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memory_seal::{SealedWriter, Sealer};
use memory_stack::private_fs;

use super::incoming::{random_name, remove_ours, sidecar};
use super::verify;

/// The sealed snapshot's file name in a backup directory.
pub(super) const SEALED_DATABASE: &str = "memory.db.sealed";
/// What the sealed namespace counts of a manifest are bound to.
const NAMESPACES_AAD: &[u8] = b"backup manifest namespaces";

/// A plaintext snapshot that exists only until it is sealed: a path of a random name inside
/// the backup directory, removed (with SQLite's `-wal`, `-shm` and `-journal` files of its
/// name) when dropped, on success and on every error alike.
pub(super) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A path for the snapshot in `dir` (nothing is created: `VACUUM INTO` creates it, and
    /// refuses a path that exists).
    pub(super) fn new(dir: &Path) -> Scratch {
        Scratch {
            path: dir.join(random_name(".memory.db.unsealed-", 0)),
        }
    }

    /// Where the snapshot goes.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_ours(&self.path);
        for ext in ["-wal", "-shm", "-journal"] {
            remove_ours(&sidecar(&self.path, ext));
        }
    }
}

/// Seals the snapshot `plain` into `dir/memory.db.sealed` (a new file, 0600) and fsyncs it,
/// advancing `bar` (its length is set here). A partial sealed file is removed on error.
pub(super) fn seal_snapshot(
    plain: &Path,
    dir: &Path,
    sealer: &Sealer,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let target = dir.join(SEALED_DATABASE);
    let Some(input) = verify::open_regular(plain)? else {
        bail!(
            "the snapshot {} disappeared before it was sealed",
            plain.display()
        );
    };
    let out = private_fs::create_new(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let sealed = (|| -> std::io::Result<()> {
        bar.set_length(input.metadata()?.len());
        let mut input = std::io::BufReader::with_capacity(1 << 20, bar.wrap_read(input));
        let mut w = SealedWriter::new(BufWriter::with_capacity(1 << 20, out), sealer.clone())?;
        std::io::copy(&mut input, &mut w)?;
        let mut out = w.finish()?;
        out.flush()?;
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?
            .sync_all()?;
        bar.finish_and_clear();
        Ok(())
    })();
    if let Err(e) = sealed {
        remove_ours(&target);
        return Err(e)
            .with_context(|| format!("cannot seal the snapshot into {}", target.display()));
    }
    Ok(())
}

/// The namespace counts sealed for a manifest: hex of `Sealer::seal(json, NAMESPACES_AAD)`.
pub(super) fn seal_namespaces(namespaces: &[(String, u64)], sealer: &Sealer) -> Result<String> {
    let json = serde_json::to_vec(namespaces)?;
    let sealed = sealer
        .seal(&json, NAMESPACES_AAD)
        .context("cannot seal the namespace counts")?;
    Ok(memory_seal::hex::encode(&sealed))
}

/// The namespace counts of a manifest sealed by [`seal_namespaces`], or `None` when they do
/// not open under `sealer`'s key.
pub(super) fn open_namespaces(hex: &str, sealer: &Sealer) -> Option<Vec<(String, u64)>> {
    let bytes = memory_seal::hex::decode(hex.as_bytes())?;
    let json = sealer.open(&bytes, NAMESPACES_AAD).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::io::Read as _;

    use memory_seal::{MasterKey, SealedReader};

    use super::*;

    #[test]
    fn namespace_counts_are_sealed_and_open_only_under_their_key() {
        let sealer = Sealer::new(&MasterKey::generate().unwrap());
        let counts = vec![
            ("team/secret-project".to_owned(), 3u64),
            ("default".into(), 1),
        ];
        let hex = seal_namespaces(&counts, &sealer).unwrap();
        assert!(!hex.contains("secret"));
        assert_eq!(open_namespaces(&hex, &sealer), Some(counts));
        let other = Sealer::new(&MasterKey::generate().unwrap());
        assert_eq!(open_namespaces(&hex, &other), None);
        assert_eq!(open_namespaces("zz", &sealer), None);
    }

    #[test]
    fn a_snapshot_is_sealed_and_its_scratch_file_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::new(&MasterKey::generate().unwrap());
        let plain: Vec<u8> = b"SQLite format 3\0 MARKER-ROW ".repeat(20_000);
        let scratch = Scratch::new(dir.path());
        let path = scratch.path().to_path_buf();
        std::fs::write(&path, &plain).unwrap();
        std::fs::write(sidecar(&path, "-wal"), b"MARKER-ROW").unwrap();
        let bar = indicatif::ProgressBar::hidden();
        seal_snapshot(&path, dir.path(), &sealer, &bar).unwrap();
        drop(scratch);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [SEALED_DATABASE], "{names:?}");
        let sealed = std::fs::read(dir.path().join(SEALED_DATABASE)).unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"MARKER-ROW"));
        let mut back = Vec::new();
        SealedReader::new(sealed.as_slice(), sealer)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
        // A second seal into the same directory is refused and leaves the first intact.
        let scratch = Scratch::new(dir.path());
        std::fs::write(scratch.path(), b"x").unwrap();
        let other = Sealer::new(&MasterKey::generate().unwrap());
        assert!(seal_snapshot(scratch.path(), dir.path(), &other, &bar).is_err());
        assert_eq!(
            std::fs::read(dir.path().join(SEALED_DATABASE)).unwrap(),
            sealed
        );
    }
}
