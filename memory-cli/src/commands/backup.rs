//! `memory backup DIR` and `memory restore DIR`.
//!
//! A backup is a directory holding `memory.db` (a consistent, compacted snapshot of the libsql
//! database taken with `VACUUM INTO` while the memory stays usable) and `manifest.json` (when,
//! from where, the schema version, and the episode count of each namespace). The redb cache is
//! not backed up: it only holds copies. Journaled writes are replayed into the database first;
//! any the durable layer could not take yet are counted in the manifest.
//!
//! Restore puts a backup's `memory.db` into the data directory (local mode). Files already
//! there (database, cache, journals) are never deleted: with `--force` they are moved into
//! `pre-restore-<time>/` inside the data directory; without it the restore refuses. It takes
//! the directory's presence lock exclusively first: while any other process (a `memory mcp`
//! server, another command, an application) uses the directory it refuses, and while it runs
//! no process can open the directory.

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

const MANIFEST: &str = "manifest.json";

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
    let mut namespaces = Vec::new();
    // Counted on the snapshot itself, so the manifest describes the file next to it.
    let snapshot = TursoStorage::open_local(&target).await?;
    for ns in memory_core::EpisodeStore::list_namespaces(&snapshot).await? {
        let n = memory_core::EpisodeStore::namespace_stats(&snapshot, &ns)
            .await?
            .episodes;
        namespaces.push((ns.to_string(), n));
    }
    let manifest = Manifest {
        created_at: chrono::Utc::now(),
        source_data_dir: std::fs::canonicalize(&s.data_dir).unwrap_or_else(|_| s.data_dir.clone()),
        mode: format!("{:?}", s.mode).to_lowercase(),
        schema_version: snapshot.schema_version(),
        namespaces,
        outbox_pending,
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
    println!(
        "backed up {episodes} episodes in {} namespaces to {}",
        manifest.namespaces.len(),
        display_safe::path(&target)
    );
    if outbox_pending > 0 {
        println!(
            "note: {outbox_pending} journaled writes were still waiting for the database and are not in this backup"
        );
    }
    Ok(())
}

pub async fn restore(dir: &Path, force: bool, s: &Settings) -> Result<()> {
    if !matches!(s.mode, Mode::Local) {
        bail!(
            "restore replaces the local database file; in {:?} mode the server is the source of truth",
            s.mode
        );
    }
    let source = dir.join(DATA_DIR_FILE);
    if !source.is_file() {
        bail!(
            "{} is not a backup: {} is missing",
            dir.display(),
            source.display()
        );
    }
    // Refuse a file that is not a usable database before touching the data directory.
    let check = TursoStorage::open_local(&source)
        .await
        .with_context(|| format!("{} is not a usable memory database", source.display()))?;
    drop(check);

    private_fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create {}", s.data_dir.display()))?;
    // Held until the restore is done: refused while anyone uses the directory, and keeps
    // everyone out meanwhile, so no process writes into files that are moved aside.
    let _alone = PresenceLock::exclusive(&DataDir::new(&s.data_dir)).map_err(stack_error)?;
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
    .filter(|p| p.exists())
    .collect();
    let mut moved_to = None;
    if !present.is_empty() {
        if !force {
            bail!(
                "{} already holds a memory; pass --force to move its files into a pre-restore-<time>/ folder first (nothing is deleted)",
                s.data_dir.display()
            );
        }
        let aside = s.data_dir.join(format!(
            "pre-restore-{}",
            chrono::Utc::now().format("%Y%m%d-%H%M%S%.3f")
        ));
        private_fs::create_dir_all(&aside)
            .with_context(|| format!("cannot create {}", aside.display()))?;
        for p in &present {
            let name = p.file_name().map(PathBuf::from).unwrap_or_default();
            std::fs::rename(p, aside.join(name))
                .with_context(|| format!("cannot move {} aside", p.display()))?;
        }
        moved_to = Some(aside);
    }
    let dest = s.data_dir.join(DATA_DIR_FILE);
    let partial = s.data_dir.join(format!("{DATA_DIR_FILE}.restoring"));
    // A partial copy an interrupted restore left is ours to replace; anything else under
    // that name (a symbolic link) is refused, never written through.
    if let Ok(meta) = std::fs::symlink_metadata(&partial) {
        if !meta.file_type().is_file() {
            bail!(
                "{} exists and is not a regular file; remove it and restore again",
                partial.display()
            );
        }
        std::fs::remove_file(&partial)
            .with_context(|| format!("cannot replace {}", partial.display()))?;
    }
    copy_with_progress(&source, &partial, s)
        .with_context(|| format!("cannot copy {}", source.display()))?;
    std::fs::rename(&partial, &dest)?;
    let restored = TursoStorage::open_in_data_dir(&s.data_dir).await?;
    // The copies other data directories cached of the backed-up database are not copies of
    // this one any more.
    restored.renew_identity().await?;
    let mut namespaces = Vec::new();
    for ns in memory_core::EpisodeStore::list_namespaces(&restored).await? {
        let n = memory_core::EpisodeStore::namespace_stats(&restored, &ns)
            .await?
            .episodes;
        namespaces.push((ns.to_string(), n));
    }
    if s.json {
        return output::json(&json!({
            "restored": dest,
            "from": dir,
            "moved_aside": moved_to,
            "namespaces": namespaces,
        }));
    }
    let episodes: u64 = namespaces.iter().map(|(_, n)| n).sum();
    println!(
        "restored {episodes} episodes in {} namespaces into {}",
        namespaces.len(),
        display_safe::path(&dest)
    );
    if let Some(a) = moved_to {
        println!(
            "the previous files were moved to {}",
            display_safe::path(&a)
        );
    }
    Ok(())
}

/// Copies `from` to the new file `to` (fsynced), showing a bar of the bytes copied.
fn copy_with_progress(from: &Path, to: &Path, s: &Settings) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut input = std::fs::File::open(from)?;
    let total = input.metadata()?.len();
    let mut output = private_fs::create_new(to)?;
    let bar = crate::progress::bytes(total, "restoring", s);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    output.sync_all()?;
    bar.finish_and_clear();
    Ok(())
}
