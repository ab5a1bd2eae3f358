//! The database a restore brings into the data directory: copied (or unsealed) into a new file
//! of a random name, checked, and only then renamed over `memory.db`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memory_seal::{MasterKey, SealedReader, Sealer};
use memory_stack::private_fs;
use memory_storage_turso::DATA_DIR_FILE;
use sha2::{Digest as _, Sha256};

use super::verify::{self, ListedFile};
use crate::settings::Settings;

/// A refusal that names the backup (exit code 2), without the underlying error's chain (an
/// SQLite message would be taken for a damaged data directory).
fn invalid(reason: String) -> anyhow::Error {
    anyhow::Error::new(memory_core::Error::invalid("backup", reason))
}

/// The incoming database in the data directory under a fresh name, not yet in place. Removed
/// (with any `-wal` / `-shm` of its name) if dropped before [`Incoming::install`].
pub(super) struct Incoming {
    path: PathBuf,
    installed: bool,
}

impl Incoming {
    /// Copies `source` into a new file of `data_dir`, fsyncs it, checks its size and SHA-256
    /// against `listed` again (read back from the copy) and that it opens as a memory database
    /// (with `key` when the backup's database is encrypted).
    pub(super) async fn copy(
        source: &Path,
        listed: &ListedFile,
        data_dir: &Path,
        key: Option<&MasterKey>,
        s: &Settings,
    ) -> Result<Incoming> {
        let (path, mut output) = create_fresh(data_dir)?;
        let incoming = Incoming {
            path,
            installed: false,
        };
        let Some(mut input) = verify::open_regular(source)? else {
            bail!("{} disappeared during the restore", source.display());
        };
        copy_with_progress(&mut input, &mut output, s)
            .with_context(|| format!("cannot copy {}", source.display()))?;
        drop(output);
        // What landed on disk, read back: the backup may have changed since it was checked.
        let mut copied = std::fs::File::open(&incoming.path)
            .with_context(|| format!("cannot read {}", incoming.path.display()))?;
        verify::check_file(&mut copied, &incoming.path, listed, "checking the copy", s)
            .with_context(|| format!("the copy of {} is not what was checked", source.display()))?;
        drop(copied);
        incoming.check_database(source, key).await?;
        Ok(incoming)
    }

    /// Unseals `source` (a sealed backup, checked against `listed`) into a new file of
    /// `data_dir`: the sealed bytes are hashed as they are read and must be the ones checked,
    /// and every chunk is authenticated under `sealer`'s key before it is written. The result
    /// must open as a memory database (not encrypted).
    pub(super) async fn unseal(
        source: &Path,
        listed: &ListedFile,
        data_dir: &Path,
        sealer: &Sealer,
        s: &Settings,
    ) -> Result<Incoming> {
        let (path, mut output) = create_fresh(data_dir)?;
        let incoming = Incoming {
            path,
            installed: false,
        };
        let Some(input) = verify::open_regular(source)? else {
            bail!("{} disappeared during the restore", source.display());
        };
        let bar = crate::progress::bytes(listed.bytes, "unsealing", s);
        let mut hashing = Hashing {
            inner: bar.wrap_read(input),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let unsealed = SealedReader::new(&mut hashing, sealer.clone())
            .and_then(|mut r| std::io::copy(&mut r, &mut output));
        if let Err(e) = unsealed {
            return Err(invalid(format!(
                "{} does not open with the configured key (key {}): {e}; nothing was changed",
                source.display(),
                sealer.fingerprint()
            )));
        }
        // Whatever follows the last chunk is part of the file that was checked too.
        std::io::copy(&mut hashing, &mut std::io::sink())
            .with_context(|| format!("cannot read {}", source.display()))?;
        bar.finish_and_clear();
        let sha = format!("{:x}", hashing.hasher.finalize());
        if hashing.bytes != listed.bytes || !sha.eq_ignore_ascii_case(&listed.sha256) {
            return Err(invalid(format!(
                "{} changed after it was checked ({} bytes, SHA-256 {sha}; the manifest lists {} bytes, {}); nothing was changed",
                source.display(),
                hashing.bytes,
                listed.bytes,
                listed.sha256
            )));
        }
        output
            .sync_all()
            .with_context(|| format!("cannot sync {}", incoming.path.display()))?;
        drop(output);
        incoming.check_database(source, None).await?;
        Ok(incoming)
    }

    /// Refuses a file that is not a usable database before anything is moved aside. The
    /// copy is opened (never the backup itself, which restore does not write to); its name
    /// is random, so the `-wal` / `-shm` files SQLite makes beside it are new too.
    async fn check_database(&self, source: &Path, key: Option<&MasterKey>) -> Result<()> {
        match memory_stack::open_database_file(&self.path, key).await {
            Ok(check) => drop(check),
            Err(e) => {
                return Err(match key {
                    Some(key) => invalid(format!(
                        "{} does not open with the configured key (key {}): another key, or the file is damaged ({e}); nothing was changed",
                        source.display(),
                        key.fingerprint()
                    )),
                    None => anyhow::Error::new(e).context(format!(
                        "{} is not a usable memory database",
                        source.display()
                    )),
                });
            }
        }
        let wal = sidecar(&self.path, "-wal");
        if std::fs::symlink_metadata(&wal).is_ok_and(|m| m.len() > 0) {
            bail!(
                "the check of the copy left {} behind; restore again",
                wal.display()
            );
        }
        std::fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", self.path.display()))
    }

    /// Renames the copy over `dest` (replacing a link there, never writing through it) and
    /// fsyncs the directory.
    pub(super) fn install(mut self, dest: &Path) -> Result<()> {
        for ext in ["-wal", "-shm"] {
            remove_ours(&sidecar(&self.path, ext));
        }
        std::fs::rename(&self.path, dest).with_context(|| {
            format!("cannot move {} to {}", self.path.display(), dest.display())
        })?;
        self.installed = true;
        if let Some(dir) = dest.parent() {
            sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.installed {
            return;
        }
        remove_ours(&self.path);
        for ext in ["-wal", "-shm"] {
            remove_ours(&sidecar(&self.path, ext));
        }
    }
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// `path` with `ext` appended to its file name (SQLite's `-wal` / `-shm` files).
pub(super) fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

/// Removes a file this command created (a link is removed itself, never its target).
pub(super) fn remove_ours(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a file of the command");
    }
}

/// A random name: std's `RandomState` is seeded from the operating system's random source.
pub(super) fn random_name(prefix: &str, attempt: u32) -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one((
        std::process::id(),
        attempt,
        std::time::SystemTime::now(),
    ));
    format!("{prefix}{random:016x}")
}

/// A new file in `dir` under a random name, created exclusively (`O_CREAT | O_EXCL`): a link
/// or file already at the name makes the attempt fail instead of being followed, and another
/// name is drawn.
fn create_fresh(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    let mut last = None;
    for attempt in 0u32..16 {
        let path = dir.join(random_name(&format!(".{DATA_DIR_FILE}.incoming-"), attempt));
        match private_fs::create_new(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no attempt made"), anyhow::Error::new))
        .with_context(|| format!("cannot create a new file in {}", dir.display()))
}

#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Copies `input` into `output` and fsyncs it, showing a bar of the bytes copied.
fn copy_with_progress(
    input: &mut std::fs::File,
    output: &mut std::fs::File,
    s: &Settings,
) -> std::io::Result<()> {
    let bar = crate::progress::bytes(input.metadata()?.len(), "restoring", s);
    let mut input = std::io::BufReader::with_capacity(1 << 20, bar.wrap_read(input));
    std::io::copy(&mut input, output)?;
    output.sync_all()?;
    bar.finish_and_clear();
    Ok(())
}
