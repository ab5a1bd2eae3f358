//! `memory backup DIR` and `memory restore DIR`.
//!
//! A backup is a directory holding `memory.db` (a consistent, compacted snapshot of the libsql
//! database taken with `VACUUM INTO` while the memory stays usable) and `manifest.json` (when,
//! from where, the schema version, the episode count of each namespace, and every file of the
//! backup with its size and SHA-256). The redb cache is not backed up: it only holds copies.
//! Journaled writes are replayed into the database first; any the durable layer could not take
//! yet are counted in the manifest.
//!
//! Restore puts a backup's `memory.db` into the data directory (local mode). Before it touches
//! anything it checks the backup (`verify`): the manifest, and every file it lists, a regular
//! file (never a symbolic link) of the listed size and SHA-256. It never follows a link in the
//! data directory either: the copy goes into a new file of a random name (created exclusively,
//! so nothing already at that name is written through), is fsynced, hashed again and opened
//! once as a database, and only then renamed over `memory.db` (a rename replaces a link
//! itself, never its target), and the directory is fsynced. Files already there (database,
//! cache, journals) are never deleted: with `--force` they are moved into
//! `pre-restore-<time>/` inside the data directory; without it the restore refuses. It takes
//! the directory's presence lock exclusively first: while any other process (a `memory mcp`
//! server, another command, an application) uses the directory it refuses, and while it runs
//! no process can open the directory.

mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memory_storage_turso::{DATA_DIR_FILE, TursoStorage};
use serde::{Deserialize, Serialize};
use serde_json::json;

use memory_stack::{
    CACHE_FILE, DataDir, JOURNAL_DIR, LEGACY_OUTBOX_FILE, PresenceLock, Stack, private_fs,
};

use crate::backend::stack_error;
use crate::cli::Mode;
use crate::display_safe;
use crate::output;
use crate::settings::Settings;

use verify::{ListedFile, MANIFEST};

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    created_at: chrono::DateTime<chrono::Utc>,
    source_data_dir: PathBuf,
    mode: String,
    schema_version: u32,
    /// Episodes per namespace at the time of the snapshot.
    namespaces: Vec<(String, u64)>,
    /// Journaled writes that were still waiting for the durable layer (not in this backup).
    outbox_pending: u64,
    /// Every file of the backup but the manifest, with its size and SHA-256: what restore
    /// checks. Empty in manifests of earlier versions (which restore refuses).
    #[serde(default)]
    files: Vec<ListedFile>,
}

pub async fn backup(dir: &Path, stack: &Stack, s: &Settings) -> Result<()> {
    if matches!(s.mode, Mode::Remote) {
        bail!(
            "backup copies a local database file; in remote mode back up on the server, or use `memory export FILE` for a logical copy"
        );
    }
    let target = dir.join(DATA_DIR_FILE);
    if target.exists() {
        bail!(
            "{} already holds a backup; choose a new directory",
            dir.display()
        );
    }
    // Whatever the outbox holds goes to the database first, if the database takes it.
    if let Err(e) = stack.tiered().sync_now().await {
        tracing::warn!(error = %e, "outbox replay before the backup failed");
    }
    let outbox_pending = stack.tiered().status().outbox_len;
    // VACUUM INTO writes the copy as it goes: its size against the database's shows progress.
    let total = std::fs::metadata(s.data_dir.join(DATA_DIR_FILE)).map_or(0, |m| m.len());
    let bar = crate::progress::bytes(total, "backing up", s);
    let copying = stack.durable().backup_to(&target);
    tokio::pin!(copying);
    let copied = loop {
        tokio::select! {
            r = &mut copying => break r,
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                bar.set_position(std::fs::metadata(&target).map_or(0, |m| m.len()));
            }
        }
    };
    bar.finish_and_clear();
    copied?;
    // Counted on the snapshot itself, so the manifest describes the file next to it.
    let snapshot = memory_stack::open_database_file(&target).await?;
    let namespaces = episodes_per_namespace(&snapshot).await?;
    let schema_version = snapshot.schema_version();
    // Closed before it is hashed: the file is final once no connection holds it.
    drop(snapshot);
    let files = vec![
        verify::describe(dir, DATA_DIR_FILE)
            .with_context(|| format!("cannot hash {}", target.display()))?,
    ];
    let manifest = Manifest {
        created_at: chrono::Utc::now(),
        source_data_dir: std::fs::canonicalize(&s.data_dir).unwrap_or_else(|_| s.data_dir.clone()),
        mode: format!("{:?}", s.mode).to_lowercase(),
        schema_version,
        namespaces,
        outbox_pending,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest)?;
    private_fs::write(&dir.join(MANIFEST), text.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join(MANIFEST).display()))?;
    if s.json {
        return output::json(&json!({
            "backup": dir,
            "file": target,
            "bytes": std::fs::metadata(&target).map(|m| m.len()).ok(),
            "manifest": manifest,
        }));
    }
    let episodes: u64 = manifest.namespaces.iter().map(|(_, n)| n).sum();
    outln!(
        "backed up {episodes} episodes in {} namespaces to {}",
        manifest.namespaces.len(),
        display_safe::path(&target)
    );
    if outbox_pending > 0 {
        outln!(
            "note: {outbox_pending} journaled writes were still waiting for the database and are not in this backup"
        );
    }
    Ok(())
}

/// The episode count of every namespace of `storage`.
async fn episodes_per_namespace(storage: &TursoStorage) -> Result<Vec<(String, u64)>> {
    let mut namespaces = Vec::new();
    for ns in memory_core::EpisodeStore::list_namespaces(storage).await? {
        let n = memory_core::EpisodeStore::namespace_stats(storage, &ns).await?;
        namespaces.push((ns.to_string(), n.episodes));
    }
    Ok(namespaces)
}

pub async fn restore(dir: &Path, force: bool, s: &Settings) -> Result<()> {
    if !matches!(s.mode, Mode::Local) {
        bail!(
            "restore replaces the local database file; in {:?} mode the server is the source of truth",
            s.mode
        );
    }
    // The whole backup is checked before anything in the data directory is touched.
    let manifest: Manifest = verify::read_manifest(dir)?;
    verify::check_files(dir, &manifest.files, DATA_DIR_FILE, s)?;
    let listed = manifest
        .files
        .iter()
        .find(|f| f.path == DATA_DIR_FILE)
        .cloned()
        .context("the manifest does not list memory.db")?;
    let source = dir.join(DATA_DIR_FILE);

    private_fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create {}", s.data_dir.display()))?;
    // Held until the restore is done: refused while anyone uses the directory, and keeps
    // everyone out meanwhile, so no process writes into files that are moved aside.
    let _alone = PresenceLock::exclusive(&DataDir::new(&s.data_dir)).map_err(stack_error)?;
    // Links count as present (and are moved aside as links): nothing here is followed.
    let present: Vec<PathBuf> = [
        DATA_DIR_FILE.to_owned(),
        format!("{DATA_DIR_FILE}-wal"),
        format!("{DATA_DIR_FILE}-shm"),
        CACHE_FILE.to_owned(),
        LEGACY_OUTBOX_FILE.to_owned(),
        JOURNAL_DIR.to_owned(),
    ]
    .iter()
    .map(|f| s.data_dir.join(f))
    .filter(|p| std::fs::symlink_metadata(p).is_ok())
    .collect();
    if !present.is_empty() && !force {
        bail!(
            "{} already holds a memory; pass --force to move its files into a pre-restore-<time>/ folder first (nothing is deleted)",
            s.data_dir.display()
        );
    }

    // The copy, complete and checked, before anything is moved.
    let incoming = Incoming::copy(&source, &listed, &s.data_dir, s).await?;

    let mut moved_to = None;
    if !present.is_empty() {
        let aside = s.data_dir.join(format!(
            "pre-restore-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S%.3f")
        ));
        private_fs::create_dir_all(&aside)
            .with_context(|| format!("cannot create {}", aside.display()))?;
        // Never move the files through a link someone planted under that name.
        if !std::fs::symlink_metadata(&aside).is_ok_and(|m| m.file_type().is_dir()) {
            bail!(
                "{} is not a directory (a link?); remove it and restore again",
                aside.display()
            );
        }
        for p in &present {
            let name = p.file_name().map(PathBuf::from).unwrap_or_default();
            std::fs::rename(p, aside.join(name))
                .with_context(|| format!("cannot move {} aside", p.display()))?;
        }
        moved_to = Some(aside);
    }
    let dest = s.data_dir.join(DATA_DIR_FILE);
    incoming.install(&dest)?;

    let restored = memory_stack::open_data_dir_database(&s.data_dir).await?;
    // The copies other data directories cached of the backed-up database are not copies of
    // this one any more.
    restored.renew_identity().await?;
    let namespaces = episodes_per_namespace(&restored).await?;
    if s.json {
        return output::json(&json!({
            "restored": dest,
            "from": dir,
            "moved_aside": moved_to,
            "namespaces": namespaces,
            "verified": manifest.files,
        }));
    }
    let episodes: u64 = namespaces.iter().map(|(_, n)| n).sum();
    outln!(
        "restored {episodes} episodes in {} namespaces into {}",
        namespaces.len(),
        display_safe::path(&dest)
    );
    if let Some(a) = moved_to {
        outln!(
            "the previous files were moved to {}",
            display_safe::path(&a)
        );
    }
    Ok(())
}

/// The incoming database in the data directory under a fresh name, not yet in place. Removed
/// (with any `-wal` / `-shm` of its name) if dropped before [`Incoming::install`].
struct Incoming {
    path: PathBuf,
    installed: bool,
}

impl Incoming {
    /// Copies `source` into a new file of `data_dir`, fsyncs it, checks its size and SHA-256
    /// against `listed` again (read back from the copy) and that it opens as a memory database.
    async fn copy(
        source: &Path,
        listed: &ListedFile,
        data_dir: &Path,
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
        // Refuse a file that is not a usable database before anything is moved aside. The
        // copy is opened (never the backup itself, which restore does not write to); its
        // name is random, so the `-wal` / `-shm` files SQLite makes beside it are new too.
        let check = memory_stack::open_database_file(&incoming.path)
            .await
            .with_context(|| format!("{} is not a usable memory database", source.display()))?;
        drop(check);
        let wal = sidecar(&incoming.path, "-wal");
        if std::fs::symlink_metadata(&wal).is_ok_and(|m| m.len() > 0) {
            bail!(
                "the check of the copy left {} behind; restore again",
                wal.display()
            );
        }
        std::fs::File::open(&incoming.path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", incoming.path.display()))?;
        Ok(incoming)
    }

    /// Renames the copy over `dest` (replacing a link there, never writing through it) and
    /// fsyncs the directory.
    fn install(mut self, dest: &Path) -> Result<()> {
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

/// `path` with `ext` appended to its file name (SQLite's `-wal` / `-shm` files).
fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(ext);
    PathBuf::from(name)
}

/// Removes a file this restore created (a link is removed itself, never its target).
fn remove_ours(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a file of the restore");
    }
}

/// A new file in `dir` under a random name, created exclusively (`O_CREAT | O_EXCL`): a link
/// or file already at the name makes the attempt fail instead of being followed, and another
/// name is drawn.
fn create_fresh(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    use std::hash::BuildHasher;
    let mut last = None;
    for attempt in 0u32..16 {
        // std's RandomState is seeded from the operating system's random source.
        let random = std::collections::hash_map::RandomState::new().hash_one((
            std::process::id(),
            attempt,
            std::time::SystemTime::now(),
        ));
        let path = dir.join(format!(".{DATA_DIR_FILE}.incoming-{random:016x}"));
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
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
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
