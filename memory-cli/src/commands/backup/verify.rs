//! What `memory restore` checks before it touches anything: the backup's manifest and every
//! file it lists.
//!
//! - `manifest.json` must be a regular file (not a symbolic link) of at most
//!   [`MAX_MANIFEST_BYTES`], holding a file list (manifests of earlier versions have none and
//!   are refused: they cannot be checked).
//! - Every listed path is a plain file name inside the backup directory (no `/`, `\`, `..`),
//!   listed once, and `memory.db` is among them.
//! - Every listed file is a regular file (never a symbolic link: `symlink_metadata`, and the
//!   opened handle is checked to be that same file), of the listed size and SHA-256.
//!
//! Each failure is an [`memory_core::Error::InvalidInput`] (exit code 2) naming the file and
//! what differs. Nothing here writes anywhere.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::settings::Settings;

/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";

/// Largest manifest read, in bytes (1 MiB): a real one is a few hundred bytes plus a line per
/// namespace.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// One file of a backup, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedFile {
    /// The file's name inside the backup directory.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
}

/// A refusal: the backup is not what its manifest says.
fn invalid(reason: String) -> anyhow::Error {
    anyhow::Error::new(memory_core::Error::invalid("backup", reason))
}

/// The SHA-256 (hex) and size of everything `input` yields, advancing `bar` as it reads.
pub fn sha256_of(
    input: &mut impl Read,
    bar: &indicatif::ProgressBar,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut input = BufReader::with_capacity(1 << 20, bar.wrap_read(input));
    let total = std::io::copy(&mut input, &mut hasher)?;
    Ok((format!("{:x}", hasher.finalize()), total))
}

/// Opens `path` for reading if it is a regular file and not a symbolic link. The handle is
/// checked to be the file `symlink_metadata` saw, so a link swapped in between is refused too.
/// `Ok(None)` when nothing is at `path`.
pub fn open_regular(path: &Path) -> anyhow::Result<Option<File>> {
    let seen = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(format!("cannot read {}: {e}", path.display()))),
    };
    if seen.file_type().is_symlink() {
        return Err(invalid(format!(
            "{} is a symbolic link; a backup holds regular files only",
            path.display()
        )));
    }
    if !seen.file_type().is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    let file =
        File::open(path).map_err(|e| invalid(format!("cannot open {}: {e}", path.display())))?;
    let opened = file
        .metadata()
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    if !opened.file_type().is_file() || !same_file(&seen, &opened) {
        return Err(invalid(format!(
            "{} changed while it was opened (replaced by a link or another file)",
            path.display()
        )));
    }
    Ok(Some(file))
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len()
}

/// Whether `name` is a plain file name: one path component, not `.` or `..`.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains(['/', '\\', '\0'])
        && !name.contains("..")
        && name != "."
        && matches!(
            Path::new(name).components().collect::<Vec<_>>().as_slice(),
            [std::path::Component::Normal(_)]
        )
}

/// Reads `dir/manifest.json` (a regular file of at most [`MAX_MANIFEST_BYTES`]) into `T`.
pub fn read_manifest<T: serde::de::DeserializeOwned>(dir: &Path) -> anyhow::Result<T> {
    let path = dir.join(MANIFEST);
    let Some(file) = open_regular(&path)? else {
        return Err(invalid(format!(
            "{} is not a backup: {} is missing",
            dir.display(),
            path.display()
        )));
    };
    let mut text = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "{} is larger than {MAX_MANIFEST_BYTES} bytes; not a manifest written by `memory backup`",
            path.display()
        )));
    }
    serde_json::from_slice(&text)
        .map_err(|e| invalid(format!("{} is not a valid manifest: {e}", path.display())))
}

/// Checks every file `listed` in `dir` (see the module docs); `must_list` must be among them.
pub fn check_files(
    dir: &Path,
    listed: &[ListedFile],
    must_list: &str,
    s: &Settings,
) -> anyhow::Result<()> {
    let manifest = dir.join(MANIFEST);
    if listed.is_empty() {
        return Err(invalid(format!(
            "{} lists no files (written by an earlier version of `memory backup`), so the backup cannot be checked; make a new backup with this version",
            manifest.display()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for f in listed {
        if !plain_name(&f.path) {
            return Err(invalid(format!(
                "{} lists the path {}, which is not a file name inside the backup directory",
                manifest.display(),
                memory_core::quote_value(&f.path)
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(invalid(format!(
                "{} lists {} twice",
                manifest.display(),
                f.path
            )));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "{} lists {} with a malformed SHA-256 {}",
                manifest.display(),
                f.path,
                memory_core::quote_value(&f.sha256)
            )));
        }
    }
    if !seen.contains(must_list) {
        return Err(invalid(format!(
            "{} does not list {must_list}",
            manifest.display()
        )));
    }
    for f in listed {
        let path = dir.join(&f.path);
        let Some(mut file) = open_regular(&path)? else {
            return Err(invalid(format!(
                "{} is not a backup: {} is missing",
                dir.display(),
                path.display()
            )));
        };
        check_file(&mut file, &path, f, "checking", s)?;
    }
    Ok(())
}

/// Checks that `file` (at `path`) has `f`'s size and SHA-256.
pub fn check_file(
    file: &mut File,
    path: &Path,
    f: &ListedFile,
    what: &str,
    s: &Settings,
) -> anyhow::Result<()> {
    let size = file
        .metadata()
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
        .len();
    if size != f.bytes {
        return Err(invalid(format!(
            "{} is {size} bytes; the manifest lists {} bytes",
            path.display(),
            f.bytes
        )));
    }
    let bar = crate::progress::bytes(size, what, s);
    let (sha, read) = sha256_of(file, &bar)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    bar.finish_and_clear();
    if read != f.bytes {
        return Err(invalid(format!(
            "{} is {read} bytes; the manifest lists {} bytes",
            path.display(),
            f.bytes
        )));
    }
    if !sha.eq_ignore_ascii_case(&f.sha256) {
        return Err(invalid(format!(
            "{} does not match the manifest: its SHA-256 is {sha}, the manifest lists {}",
            path.display(),
            f.sha256
        )));
    }
    Ok(())
}

/// The entry describing `dir/name` as it is now.
pub fn describe(dir: &Path, name: &str) -> anyhow::Result<ListedFile> {
    let path: PathBuf = dir.join(name);
    let Some(mut file) = open_regular(&path)? else {
        anyhow::bail!("{} disappeared before it was hashed", path.display());
    };
    let (sha256, bytes) = sha256_of(&mut file, &indicatif::ProgressBar::hidden())?;
    Ok(ListedFile {
        path: name.to_owned(),
        bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn plain_names_only() {
        for ok in ["memory.db", "a", "x.y-z"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "x..y",
            "a\0",
            "./a",
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn sha256_of_empty_input_is_the_known_digest() {
        let (sha, n) = sha256_of(&mut &b""[..], &indicatif::ProgressBar::hidden()).unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            sha,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
