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
//! cache, journals, encryption marker) are never deleted: with `--force` they are moved into
//! `pre-restore-<time>/` inside the data directory; without it the restore refuses. It takes
//! the directory's presence lock exclusively first: while any other process (a `memory mcp`
//! server, another command, an application) uses the directory it refuses, and while it runs
//! no process can open the directory.
//!
//! Encryption (see [`BackupEncryption`]): the snapshot of an encrypted memory is encrypted
//! under the memory's key already (`VACUUM INTO` writes the copy under the same key), and
//! restore needs that key and leaves an encrypted memory (it writes the encryption marker). A
//! memory that is not encrypted is backed up with `--encrypt` by taking the snapshot into a
//! scratch file of a random name inside DIR, sealing it into `memory.db.sealed` and removing
//! the scratch file (on every error too); restore unseals it with the configured key into the
//! new file it checks. The manifest of an encrypted backup holds no namespace name: the
//! per-namespace counts are sealed, and only the total episode count is in plain text.

mod incoming;
mod sealed;
#[cfg(all(test, unix))]
mod tests;
mod verify;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memory_seal::{MasterKey, Sealer};
use memory_storage_turso::{DATA_DIR_FILE, TursoStorage};
use serde::{Deserialize, Serialize};
use serde_json::json;

use memory_stack::{
    CACHE_FILE, DataDir, ENCRYPTION_FILE, EncryptionMarker, JOURNAL_DIR, LEGACY_OUTBOX_FILE,
    PresenceLock, Stack, StorageMode, private_fs,
};

use crate::backend::stack_error;
use crate::cli::Mode;
use crate::display_safe;
use crate::output;
use crate::settings::Settings;

use incoming::Incoming;
use sealed::{SEALED_DATABASE, Scratch, open_namespaces, seal_namespaces, seal_snapshot};
use verify::{ListedFile, MANIFEST};

/// The key sources to name when a key is needed and none is configured.
const KEY_SOURCES: &str = "MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or \
     MEMORY_ENCRYPTION_KEY_COMMAND (or `key_file` / `key_command` under `[encryption]` in \
     memory.toml)";

/// How a backup is encrypted (`encryption` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BackupEncryption {
    /// Not encrypted: `memory.db` is a plain database (and every manifest of earlier versions).
    #[default]
    None,
    /// `memory.db` is encrypted under the memory's key (the snapshot of an encrypted memory).
    Database,
    /// `memory.db.sealed`: the snapshot of a memory that is not encrypted, sealed under the
    /// configured key (`--encrypt`).
    Sealed,
}

impl BackupEncryption {
    /// The backup's database file.
    fn database_file(self) -> &'static str {
        match self {
            BackupEncryption::None | BackupEncryption::Database => DATA_DIR_FILE,
            BackupEncryption::Sealed => SEALED_DATABASE,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    created_at: chrono::DateTime<chrono::Utc>,
    source_data_dir: PathBuf,
    mode: String,
    schema_version: u32,
    /// Episodes per namespace at the time of the snapshot; absent from an encrypted backup's
    /// manifest (namespace names are user data: see `namespaces_sealed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespaces: Option<Vec<(String, u64)>>,
    /// An encrypted backup's episodes per namespace: hex of the JSON list sealed under the
    /// backup's key (associated data `backup manifest namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespaces_sealed: Option<String>,
    /// Episodes in all namespaces (absent from manifests of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    episodes: Option<u64>,
    /// How the backup is encrypted; `none` for manifests of earlier versions.
    #[serde(default)]
    encryption: BackupEncryption,
    /// The fingerprint of the key an encrypted backup is encrypted under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_fingerprint: Option<String>,
    /// Journaled writes that were still waiting for the durable layer (not in this backup).
    outbox_pending: u64,
    /// Every file of the backup but the manifest, with its size and SHA-256: what restore
    /// checks. Empty in manifests of earlier versions (which restore refuses).
    #[serde(default)]
    files: Vec<ListedFile>,
}

/// How a backup is taken, and under which key.
enum Plan {
    /// A plain snapshot.
    Plain,
    /// The snapshot of an encrypted memory, encrypted under its key.
    Database(MasterKey),
    /// A plain snapshot sealed under the configured key.
    Sealed(MasterKey),
}

impl Plan {
    /// An encrypted memory's snapshot is encrypted under its key whatever `encrypt` says;
    /// otherwise `encrypt` seals it under the configured key (an error without one).
    fn decide(encrypt: bool, stack: &Stack, s: &Settings) -> Result<Plan> {
        if let Some(fingerprint) = stack.encryption() {
            let key = s
                .load_key()?
                .filter(|k| k.fingerprint() == fingerprint)
                .with_context(|| {
                    format!("the memory is encrypted (key {fingerprint}), but that key is not the configured one")
                })?;
            return Ok(Plan::Database(key));
        }
        if !encrypt {
            return Ok(Plan::Plain);
        }
        match s.load_key()? {
            Some(key) => Ok(Plan::Sealed(key)),
            None => bail!(
                "--encrypt needs the encryption key: set {KEY_SOURCES}; `memory key generate` \
                 makes one. Nothing was written."
            ),
        }
    }

    fn encryption(&self) -> BackupEncryption {
        match self {
            Plan::Plain => BackupEncryption::None,
            Plan::Database(_) => BackupEncryption::Database,
            Plan::Sealed(_) => BackupEncryption::Sealed,
        }
    }

    fn key(&self) -> Option<&MasterKey> {
        match self {
            Plan::Plain => None,
            Plan::Database(key) | Plan::Sealed(key) => Some(key),
        }
    }
}

/// `memory backup DIR [--encrypt]`.
pub async fn backup(dir: &Path, encrypt: bool, stack: &Stack, s: &Settings) -> Result<()> {
    if matches!(s.mode, Mode::Remote) {
        bail!(
            "backup copies a local database file; in remote mode back up on the server, or use `memory export FILE` for a logical copy"
        );
    }
    if [DATA_DIR_FILE, SEALED_DATABASE]
        .iter()
        .any(|name| std::fs::symlink_metadata(dir.join(name)).is_ok())
    {
        bail!(
            "{} already holds a backup; choose a new directory",
            dir.display()
        );
    }
    let plan = Plan::decide(encrypt, stack, s)?;
    // Whatever the outbox holds goes to the database first, if the database takes it.
    if let Err(e) = stack.tiered().sync_now().await {
        tracing::warn!(error = %e, "outbox replay before the backup failed");
    }
    let outbox_pending = stack.tiered().status().outbox_len;
    let (namespaces, schema_version) = match &plan {
        Plan::Sealed(key) => {
            // The plaintext snapshot exists only as the scratch file, removed when `scratch`
            // is dropped: after sealing, or on any error before.
            let scratch = Scratch::new(dir);
            snapshot_into(stack, scratch.path(), s).await?;
            let counted = count_snapshot(scratch.path(), None).await?;
            let bar = crate::progress::bytes(0, "sealing", s);
            seal_snapshot(scratch.path(), dir, &Sealer::new(key), &bar)?;
            bar.finish_and_clear();
            counted
        }
        Plan::Plain | Plan::Database(_) => {
            let target = dir.join(DATA_DIR_FILE);
            snapshot_into(stack, &target, s).await?;
            count_snapshot(&target, plan.key()).await?
        }
    };
    let db_file = plan.encryption().database_file();
    let files = vec![
        verify::describe(dir, db_file)
            .with_context(|| format!("cannot hash {}", dir.join(db_file).display()))?,
    ];
    let sealer = plan.key().map(Sealer::new);
    let manifest = Manifest {
        created_at: chrono::Utc::now(),
        source_data_dir: std::fs::canonicalize(&s.data_dir).unwrap_or_else(|_| s.data_dir.clone()),
        mode: format!("{:?}", s.mode).to_lowercase(),
        schema_version,
        namespaces: sealer.is_none().then(|| namespaces.clone()),
        namespaces_sealed: sealer
            .as_ref()
            .map(|k| seal_namespaces(&namespaces, k))
            .transpose()?,
        episodes: Some(namespaces.iter().map(|(_, n)| n).sum()),
        encryption: plan.encryption(),
        key_fingerprint: plan.key().map(MasterKey::fingerprint),
        outbox_pending,
        files,
    };
    let text = serde_json::to_string_pretty(&manifest)?;
    private_fs::write(&dir.join(MANIFEST), text.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join(MANIFEST).display()))?;
    print_backup(dir, &manifest, namespaces.len(), s)
}

/// Takes the snapshot into `target` (`VACUUM INTO`, a new file) while the memory stays usable.
async fn snapshot_into(stack: &Stack, target: &Path, s: &Settings) -> Result<()> {
    // VACUUM INTO writes the copy as it goes: its size against the database's shows progress.
    let total = std::fs::metadata(s.data_dir.join(DATA_DIR_FILE)).map_or(0, |m| m.len());
    let bar = crate::progress::bytes(total, "backing up", s);
    let copying = stack.durable().backup_to(target);
    tokio::pin!(copying);
    let copied = loop {
        tokio::select! {
            r = &mut copying => break r,
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                bar.set_position(std::fs::metadata(target).map_or(0, |m| m.len()));
            }
        }
    };
    bar.finish_and_clear();
    Ok(copied?)
}

/// The episodes per namespace and the schema version of the snapshot at `path` (opened with
/// `key` when it is encrypted), counted on the snapshot itself so the manifest describes the
/// file next to it.
async fn count_snapshot(path: &Path, key: Option<&MasterKey>) -> Result<(Vec<(String, u64)>, u32)> {
    let snapshot = memory_stack::open_database_file(path, key).await?;
    let namespaces = episodes_per_namespace(&snapshot).await?;
    let schema_version = snapshot.schema_version();
    // Closed before it is hashed: the file is final once no connection holds it.
    drop(snapshot);
    Ok((namespaces, schema_version))
}

/// Reports a backup.
fn print_backup(dir: &Path, manifest: &Manifest, namespaces: usize, s: &Settings) -> Result<()> {
    let file = dir.join(manifest.encryption.database_file());
    if s.json {
        return output::json(&json!({
            "backup": dir,
            "file": file,
            "bytes": std::fs::metadata(&file).map(|m| m.len()).ok(),
            "manifest": manifest,
        }));
    }
    let how = match (manifest.encryption, &manifest.key_fingerprint) {
        (BackupEncryption::Database, Some(k)) => format!(" (encrypted under the memory's key {k})"),
        (BackupEncryption::Sealed, Some(k)) => format!(" (sealed under key {k})"),
        _ => String::new(),
    };
    outln!(
        "backed up {} episodes in {namespaces} namespaces to {}{how}",
        manifest.episodes.unwrap_or(0),
        display_safe::path(&file)
    );
    if manifest.outbox_pending > 0 {
        outln!(
            "note: {} journaled writes were still waiting for the database and are not in this backup",
            manifest.outbox_pending
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

/// A refusal about the key (exit code 2); nothing has been changed when it is returned.
fn key_refused(reason: String) -> anyhow::Error {
    anyhow::Error::new(memory_core::Error::invalid("encryption key", reason))
}

/// The key an encrypted backup is restored with: the configured one, which must be the
/// backup's (by fingerprint; the copy is then opened or unsealed with it). `None` for a backup
/// that is not encrypted.
fn restore_key(m: &Manifest, s: &Settings) -> Result<Option<MasterKey>> {
    if m.encryption == BackupEncryption::None {
        return Ok(None);
    }
    if m.encryption == BackupEncryption::Database && !cfg!(feature = "encryption") {
        bail!(
            "the backup's database is encrypted, and this build of `memory` cannot open an encrypted database: build it with `--features encryption` (it needs cmake: `bash scripts/install-cmake.sh`); nothing was changed"
        );
    }
    let expected = m.key_fingerprint.as_deref().unwrap_or("unknown");
    let Some(key) = s.load_key()? else {
        return Err(key_refused(format!(
            "none is configured, and the backup is encrypted (key {expected}): set {KEY_SOURCES} to its key; nothing was changed"
        )));
    };
    if m.key_fingerprint
        .as_ref()
        .is_some_and(|f| *f != key.fingerprint())
    {
        return Err(key_refused(format!(
            "the configured key (key {}) is not the backup's key (key {expected}); nothing was changed",
            key.fingerprint()
        )));
    }
    // The fingerprint is not authenticated; the sealed counts are, under the key itself.
    if let Some(sealed) = &m.namespaces_sealed
        && open_namespaces(sealed, &Sealer::new(&key)).is_none()
    {
        return Err(key_refused(format!(
            "the configured key (key {}) does not open the backup's manifest (its sealed namespace counts): another key, or a damaged manifest; nothing was changed",
            key.fingerprint()
        )));
    }
    Ok(Some(key))
}

/// The files of a memory in `data_dir` (links count, and are moved aside as links: nothing
/// here is followed).
fn present_files(data_dir: &Path) -> Vec<PathBuf> {
    [
        DATA_DIR_FILE.to_owned(),
        format!("{DATA_DIR_FILE}-wal"),
        format!("{DATA_DIR_FILE}-shm"),
        CACHE_FILE.to_owned(),
        LEGACY_OUTBOX_FILE.to_owned(),
        JOURNAL_DIR.to_owned(),
        ENCRYPTION_FILE.to_owned(),
    ]
    .iter()
    .map(|f| data_dir.join(f))
    .filter(|p| std::fs::symlink_metadata(p).is_ok())
    .collect()
}

/// Moves `present` into a new `pre-restore-<time>/` of `data_dir`; `None` when there is
/// nothing to move.
fn move_aside(present: &[PathBuf], data_dir: &Path) -> Result<Option<PathBuf>> {
    if present.is_empty() {
        return Ok(None);
    }
    let aside = data_dir.join(format!(
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
    for p in present {
        let name = p.file_name().map(PathBuf::from).unwrap_or_default();
        std::fs::rename(p, aside.join(name))
            .with_context(|| format!("cannot move {} aside", p.display()))?;
    }
    Ok(Some(aside))
}

/// Marks `data_dir` as encrypted under `key` (its old marker was moved aside).
fn mark_encrypted(data_dir: &Path, key: &MasterKey) -> Result<()> {
    let dir = DataDir::new(data_dir);
    let marker = EncryptionMarker::new(key, &StorageMode::Local).map_err(stack_error)?;
    let written = memory_stack::write_marker(&dir, &marker).map_err(stack_error)?;
    if !written.opens_with(key) {
        bail!(
            "{} holds an encryption marker of another key (key {}), written while the restore ran",
            memory_stack::marker_path(&dir).display(),
            written.fingerprint
        );
    }
    Ok(())
}

/// `memory restore DIR [--force]`.
pub async fn restore(dir: &Path, force: bool, s: &Settings) -> Result<()> {
    if !matches!(s.mode, Mode::Local) {
        bail!(
            "restore replaces the local database file; in {:?} mode the server is the source of truth",
            s.mode
        );
    }
    // The whole backup, and the key it needs, are checked before anything in the data
    // directory is touched.
    let manifest: Manifest = verify::read_manifest(dir)?;
    let db_file = manifest.encryption.database_file();
    verify::check_files(dir, &manifest.files, db_file, s)?;
    let listed = manifest
        .files
        .iter()
        .find(|f| f.path == db_file)
        .cloned()
        .with_context(|| format!("the manifest does not list {db_file}"))?;
    let key = restore_key(&manifest, s)?;
    let source = dir.join(db_file);

    private_fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create {}", s.data_dir.display()))?;
    // Held until the restore is done: refused while anyone uses the directory, and keeps
    // everyone out meanwhile, so no process writes into files that are moved aside.
    let _alone = PresenceLock::exclusive(&DataDir::new(&s.data_dir)).map_err(stack_error)?;
    let present = present_files(&s.data_dir);
    if !present.is_empty() && !force {
        bail!(
            "{} already holds a memory; pass --force to move its files into a pre-restore-<time>/ folder first (nothing is deleted)",
            s.data_dir.display()
        );
    }

    // The copy, complete and checked, before anything is moved.
    let db_key = key
        .as_ref()
        .filter(|_| manifest.encryption == BackupEncryption::Database);
    let incoming = match (&key, manifest.encryption) {
        (Some(key), BackupEncryption::Sealed) => {
            Incoming::unseal(&source, &listed, &s.data_dir, &Sealer::new(key), s).await?
        }
        _ => Incoming::copy(&source, &listed, &s.data_dir, db_key, s).await?,
    };

    let moved_to = move_aside(&present, &s.data_dir)?;
    if let Some(key) = db_key {
        mark_encrypted(&s.data_dir, key)?;
    }
    let dest = s.data_dir.join(DATA_DIR_FILE);
    incoming.install(&dest)?;

    let restored = memory_stack::open_data_dir_database(&s.data_dir, db_key).await?;
    // The copies other data directories cached of the backed-up database are not copies of
    // this one any more.
    restored.renew_identity().await?;
    let namespaces = episodes_per_namespace(&restored).await?;
    drop(restored);
    let restored = Restored {
        dest,
        from: dir,
        moved_to,
        encrypted_under: db_key.map(MasterKey::fingerprint),
        unsealed_from: (manifest.encryption == BackupEncryption::Sealed)
            .then(|| manifest.key_fingerprint.clone())
            .flatten(),
    };
    print_restore(&restored, &namespaces, &manifest.files, s)
}

/// What a restore did, for its report.
struct Restored<'a> {
    dest: PathBuf,
    from: &'a Path,
    moved_to: Option<PathBuf>,
    /// The key the restored memory is encrypted under.
    encrypted_under: Option<String>,
    /// The key a sealed backup was unsealed with (the restored memory is not encrypted).
    unsealed_from: Option<String>,
}

/// Reports a restore.
fn print_restore(
    r: &Restored<'_>,
    namespaces: &[(String, u64)],
    verified: &[ListedFile],
    s: &Settings,
) -> Result<()> {
    let unsealed_note = r.unsealed_from.as_ref().map(|k| {
        format!(
            "the backup was sealed under key {k}; the restored memory is not encrypted. Run `memory encrypt` (with the key configured) to encrypt it in place; until then, commands refuse it while a key is configured"
        )
    });
    if s.json {
        return output::json(&json!({
            "restored": r.dest,
            "from": r.from,
            "moved_aside": r.moved_to,
            "namespaces": namespaces,
            "encrypted": r.encrypted_under.is_some(),
            "key_fingerprint": r.encrypted_under,
            "note": unsealed_note,
            "verified": verified,
        }));
    }
    let episodes: u64 = namespaces.iter().map(|(_, n)| n).sum();
    let how = r
        .encrypted_under
        .as_ref()
        .map_or_else(String::new, |k| format!(" (encrypted under key {k})"));
    outln!(
        "restored {episodes} episodes in {} namespaces into {}{how}",
        namespaces.len(),
        display_safe::path(&r.dest)
    );
    if let Some(a) = &r.moved_to {
        outln!("the previous files were moved to {}", display_safe::path(a));
    }
    if let Some(note) = unsealed_note {
        outln!("note: {note}");
    }
    Ok(())
}
