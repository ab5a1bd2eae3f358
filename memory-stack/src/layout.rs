//! What lives in a data directory, and the lock that tells a restore whether anyone uses it.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::StackError;
use memory_files as private_fs;

/// The libsql database file (local mode).
pub const DATABASE_FILE: &str = memory_storage_turso::DATA_DIR_FILE;
/// The redb cache file, held by one process at a time.
pub const CACHE_FILE: &str = "cache.redb";
/// The folder of the per-process journals.
pub const JOURNAL_DIR: &str = "journal";
/// The single-file outbox of earlier versions (adopted like an orphaned journal).
pub const LEGACY_OUTBOX_FILE: &str = "outbox.redb";
/// The local replica of a remote primary (replica mode).
pub const REPLICA_FILE: &str = "replica.db";
/// Files that could not be trusted (a damaged cache) are moved here, never deleted.
pub const DAMAGED_DIR: &str = "damaged";
/// The presence lock: every process using the directory holds it shared.
pub const LOCK_FILE: &str = "memory.lock";

/// How long opening waits for a restore (the only exclusive holder) to finish.
const PRESENCE_WAIT: Duration = Duration::from_secs(1);

/// The paths of a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The layout under `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The libsql database file.
    pub fn database(&self) -> PathBuf {
        self.root.join(DATABASE_FILE)
    }

    /// The redb cache file.
    pub fn cache(&self) -> PathBuf {
        self.root.join(CACHE_FILE)
    }

    /// The per-process journals.
    pub fn journals(&self) -> PathBuf {
        self.root.join(JOURNAL_DIR)
    }

    /// The outbox file of earlier versions.
    pub fn legacy_outbox(&self) -> PathBuf {
        self.root.join(LEGACY_OUTBOX_FILE)
    }

    /// The local replica file.
    pub fn replica(&self) -> PathBuf {
        self.root.join(REPLICA_FILE)
    }

    /// Where untrusted files are moved.
    pub fn damaged(&self) -> PathBuf {
        self.root.join(DAMAGED_DIR)
    }

    /// The presence lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// Creates the directory, `0700` on Unix, if it does not exist (an existing one keeps its
    /// permissions).
    pub fn create(&self) -> Result<(), StackError> {
        private_fs::create_dir_all(&self.root).map_err(|e| self.unusable(e))
    }

    /// The [`StackError::DataDir`] of this directory.
    pub(crate) fn unusable(&self, source: std::io::Error) -> StackError {
        StackError::DataDir {
            dir: self.root.clone(),
            source,
        }
    }

    /// Moves an untrusted file into [`DataDir::damaged`] (never deletes it); returns where it
    /// went.
    pub fn move_aside(&self, file: &Path) -> std::io::Result<PathBuf> {
        let dir = self.damaged();
        private_fs::create_dir_all(&dir)?;
        let name = file
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let to = dir.join(format!("{stamp}-{name}"));
        std::fs::rename(file, &to)?;
        Ok(to)
    }
}

/// A held presence lock on a data directory, released when dropped (or when the process
/// dies: the operating system releases it).
///
/// Every process that opens the stack holds it *shared*, for as long as it runs; `restore`
/// takes it *exclusive*, which succeeds only when no other process uses the directory, and
/// keeps new ones out until it has finished.
#[derive(Debug)]
pub struct PresenceLock {
    _file: File,
    exclusive: bool,
}

impl PresenceLock {
    fn open_file(dir: &DataDir) -> Result<File, StackError> {
        let path = dir.lock_file();
        private_fs::file_options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| dir.unusable(e))
    }

    /// Takes the lock shared, waiting up to a second for a restore that holds it.
    pub fn shared(dir: &DataDir) -> Result<Self, StackError> {
        let file = Self::open_file(dir)?;
        let started = Instant::now();
        loop {
            match file.try_lock_shared() {
                Ok(()) => {
                    return Ok(PresenceLock {
                        _file: file,
                        exclusive: false,
                    });
                }
                Err(TryLockError::WouldBlock) if started.elapsed() < PRESENCE_WAIT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(StackError::Restoring {
                        dir: dir.root().to_path_buf(),
                    });
                }
                Err(TryLockError::Error(source)) => return Err(dir.unusable(source)),
            }
        }
    }

    /// Takes the lock exclusive, without waiting: `Err(InUse)` when another process uses the
    /// directory.
    pub fn exclusive(dir: &DataDir) -> Result<Self, StackError> {
        let file = Self::open_file(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(PresenceLock {
                _file: file,
                exclusive: true,
            }),
            Err(TryLockError::WouldBlock) => Err(StackError::InUse {
                dir: dir.root().to_path_buf(),
            }),
            Err(TryLockError::Error(source)) => Err(dir.unusable(source)),
        }
    }

    /// Whether this is the exclusive lock.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn shared_holders_keep_the_exclusive_lock_out_and_it_keeps_them_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let a = PresenceLock::shared(&dir).unwrap();
        let b = PresenceLock::shared(&dir).unwrap();
        assert!(matches!(
            PresenceLock::exclusive(&dir),
            Err(StackError::InUse { .. })
        ));
        drop((a, b));
        let x = PresenceLock::exclusive(&dir).unwrap();
        assert!(x.is_exclusive());
        let started = Instant::now();
        assert!(matches!(
            PresenceLock::shared(&dir),
            Err(StackError::Restoring { .. })
        ));
        assert!(started.elapsed() >= PRESENCE_WAIT);
        drop(x);
        PresenceLock::shared(&dir).unwrap();
    }

    #[test]
    fn untrusted_files_are_moved_aside_not_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        std::fs::write(dir.cache(), b"garbage").unwrap();
        let to = dir.move_aside(&dir.cache()).unwrap();
        assert!(!dir.cache().exists());
        assert_eq!(std::fs::read(to).unwrap(), b"garbage");
    }
}
