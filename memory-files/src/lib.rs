//! Files and directories only their owner may read: the data directory is created `0700` and
//! every file the memory creates in it `0600`, whatever the process umask (Unix; elsewhere the
//! platform's defaults apply). What already exists keeps its permissions: the memory never
//! changes modes someone chose.
//!
//! One crate for the storage crates (the database in `memory-storage-turso`, the cache and
//! journals in `memory-storage-redb`), the data directory layout in `memory-stack` and the CLI's
//! exports and backups. Own code: the standard library has the pieces (`DirBuilderExt`,
//! `OpenOptionsExt`) but nothing that applies them to a whole path whatever the umask.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let tmp = std::env::temp_dir().join(format!("memory-files-doc-{}", std::process::id()));
//! memory_files::create_dir_all(&tmp.join("data"))?;
//! memory_files::write(&tmp.join("data/notes"), b"only mine")?;
//! # std::fs::remove_dir_all(&tmp)?;
//! # Ok(())
//! # }
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Permissions of the directories created here (Unix).
pub const DIR_MODE: u32 = 0o700;
/// Permissions of the files created here (Unix).
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each `0700` whatever the umask. A directory that
/// already exists keeps its permissions.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    match builder.create(dir) {
        Ok(()) => set_mode(dir, DIR_MODE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Options that create a file `0600` (before the umask; [`create_new`] also fixes the mode
/// after it).
pub fn file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// Creates the new file `path`, `0600` whatever the umask; fails if anything is at `path`.
pub fn create_new(path: &Path) -> io::Result<File> {
    let file = file_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    #[cfg(unix)]
    file.set_permissions(
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(FILE_MODE),
    )?;
    Ok(file)
}

/// Creates `path` empty and `0600` unless something is there already, so that the library
/// that opens it next (SQLite, redb: both take an empty file as a new database) opens this
/// file instead of creating one with the umask's permissions.
pub fn precreate(path: &Path) -> io::Result<()> {
    match create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(
        path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
    )
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Writes `bytes` to `path`, creating it `0600` when it is new (an existing file keeps its
/// permissions and is replaced in place).
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = if path.exists() {
        OpenOptions::new().write(true).truncate(true).open(path)?
    } else {
        create_new(path)?
    };
    file.write_all(bytes)
}

/// Sets `path` to `0600` if it is a regular file: for files another library creates itself
/// (an embedded replica's database), right after it created them. Missing files and anything
/// else (a directory, a symlink) are left alone.
pub fn restrict(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => set_mode(path, FILE_MODE),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_are_0700_and_existing_ones_keep_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&tmp.path().join(d)), 0o700, "{d}");
        }
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        create_dir_all(&shared.join("inner")).unwrap();
        assert_eq!(mode(&shared), 0o750, "an existing directory is left alone");
        assert_eq!(mode(&shared.join("inner")), 0o700);
    }

    #[test]
    fn new_files_are_0600_and_existing_ones_keep_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        create_new(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(
            create_new(&f).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let w = tmp.path().join("w");
        write(&w, b"one").unwrap();
        assert_eq!(mode(&w), 0o600);
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&w, b"two").unwrap();
        assert_eq!(
            (mode(&w), std::fs::read(&w).unwrap()),
            (0o640, b"two".to_vec())
        );
        precreate(&w).unwrap();
        assert_eq!(
            std::fs::read(&w).unwrap(),
            b"two",
            "precreate keeps content"
        );
    }
}
