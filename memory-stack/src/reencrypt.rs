//! Encrypting a memory in place (`memory encrypt`) and rotating its key (`memory rekey`).
//!
//! Both are one operation, "re-encrypt from key A (or none) to key B", run with every other
//! process stopped:
//!
//! 1. a stack is opened with the current key and its journals are replayed into the
//!    database; if any journaled write is still waiting (a server that does not answer), the
//!    operation stops before it changes anything;
//! 2. the data directory's presence lock is taken exclusively (refused while any other
//!    process uses the directory; keeps new ones out until the end);
//! 3. the database file is copied and the copy re-encrypted under the new key, then checked
//!    (it opens under the new key, and holds the same episodes per namespace);
//! 4. the old files (database, WAL, cache, journal notes, marker; a replica's files, which
//!    resync from the primary) are moved into `pre-rekey-<time>/` (`pre-encrypt-<time>/`),
//!    the copy is renamed into place and the new marker written: nothing is deleted, and the
//!    old files are there until the operator deletes them.
//!
//! Acknowledged writes are never lost: everything journaled is in the database before the
//! copy, and no process can write while the lock is held.

use std::path::{Path, PathBuf};

use memory_seal::MasterKey;
use tracing::info;

use crate::encryption::{EncryptionMarker, marker_path, write_marker};
use crate::layout::{DataDir, PresenceLock};
use crate::{CACHE_FILE, StackBuilder, StackError, StorageMode, private_fs, settle};

/// What a re-encryption did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reencrypted {
    /// Where the old files went (delete it once the new key is known to work).
    pub moved_to: PathBuf,
    /// The files moved there.
    pub moved: Vec<PathBuf>,
    /// Whether a local database file was re-encrypted (local mode).
    pub database: bool,
    /// Episodes per namespace in the database, checked the same before and after.
    pub episodes: u64,
    /// The fingerprint of the new key.
    pub fingerprint: String,
}

/// Re-encrypts the memory in `dir` from `from` (`None`: not encrypted) to `to`. See the
/// module docs; every other process must be stopped ([`StackError::InUse`] otherwise).
pub async fn reencrypt(
    dir: &DataDir,
    mode: &StorageMode,
    from: Option<&MasterKey>,
    to: &MasterKey,
) -> Result<Reencrypted, StackError> {
    if from.is_some_and(|f| f == to) {
        return Err(StackError::Encryption(
            "the new key is the current key; generate another with `memory key generate`".into(),
        ));
    }
    let local = !matches!(mode, StorageMode::Remote { .. });
    if local && !cfg!(feature = "encryption") {
        return Err(StackError::Encryption(
            "this build cannot encrypt the database file: build with the `encryption` feature"
                .into(),
        ));
    }
    // 1. Everything journaled goes to the database first (with the current key).
    replay_journals(dir, mode, from).await?;
    // 2. Alone from here on.
    let lock_dir = dir.clone();
    let _alone = tokio::task::spawn_blocking(move || PresenceLock::exclusive(&lock_dir))
        .await
        .map_err(|e| dir.unusable(std::io::Error::other(e)))??;
    // The key was checked by the replay's open; a process may have journaled since.
    settle(dir, mode, from)?;
    let waiting = journal_files(dir);
    if !waiting.is_empty() {
        return Err(StackError::Encryption(format!(
            "{} journal files still hold writes for the database ({}); run `memory sync now` when the database answers, then retry",
            waiting.len(),
            waiting[0].display()
        )));
    }
    let label = if from.is_some() {
        "pre-rekey"
    } else {
        "pre-encrypt"
    };
    let aside = dir.root().join(format!(
        "{label}-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S%.3f")
    ));
    // 3. The database under the new key, checked, beside the old one.
    let mut episodes = 0;
    let fresh = dir
        .root()
        .join(format!(".memory.db.{}.reencrypt", std::process::id()));
    let database = matches!(mode, StorageMode::Local) && dir.database().exists();
    if database {
        episodes = copy_database(&dir.database(), from, &fresh, to).await?;
    }
    // 4. Old files aside, new ones in place, the new marker last.
    private_fs::create_dir_all(&aside).map_err(|e| dir.unusable(e))?;
    let mut moved = Vec::new();
    for file in files_to_move(dir, mode) {
        if std::fs::symlink_metadata(&file).is_ok() {
            let to_path = aside.join(file.file_name().unwrap_or_default());
            std::fs::rename(&file, &to_path).map_err(|e| dir.unusable(e))?;
            moved.push(to_path);
        }
    }
    if database {
        std::fs::rename(&fresh, dir.database()).map_err(|e| dir.unusable(e))?;
    }
    write_marker(dir, &EncryptionMarker::new(to, mode)?)?;
    sync_dir(dir.root());
    info!(fingerprint = %to.fingerprint(), moved = moved.len(), "memory re-encrypted");
    Ok(Reencrypted {
        moved_to: aside,
        moved,
        database,
        episodes,
        fingerprint: to.fingerprint(),
    })
}

/// Opens the stack with the current key, replays its journals and closes it; fails while a
/// journaled write is still waiting.
async fn replay_journals(
    dir: &DataDir,
    mode: &StorageMode,
    from: Option<&MasterKey>,
) -> Result<(), StackError> {
    let stack = StackBuilder::new(dir.root())
        .mode(mode.clone())
        .encryption_key(from.cloned())
        .cache_config(None)
        .open()
        .await?;
    let replayed = stack.tiered().sync_now().await;
    let waiting = stack.tiered().status().outbox_len;
    stack.shutdown().await?;
    drop(stack);
    if let Err(e) = replayed
        && waiting > 0
    {
        return Err(StackError::Encryption(format!(
            "{waiting} journaled writes wait for the database, which does not take them ({e}); retry when it answers"
        )));
    }
    if waiting > 0 {
        return Err(StackError::Encryption(format!(
            "{waiting} journaled writes still wait for the database; retry when it answers"
        )));
    }
    Ok(())
}

/// Journal files (this directory's processes' and the single-file outbox of earlier
/// versions): each exists only while it holds writes.
fn journal_files(dir: &DataDir) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.journals())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "redb"))
                .collect()
        })
        .unwrap_or_default();
    if dir.legacy_outbox().exists() {
        out.push(dir.legacy_outbox());
    }
    out
}

/// What is moved aside: files written under the old key (or none).
fn files_to_move(dir: &DataDir, mode: &StorageMode) -> Vec<PathBuf> {
    let mut files = vec![
        dir.root().join(CACHE_FILE),
        dir.journals().join(memory_storage_redb::USAGE_FILE),
        dir.journals().join(memory_storage_redb::REFUSED_FILE),
        marker_path(dir),
    ];
    let with_suffixes = |base: PathBuf, suffixes: &[&str]| -> Vec<PathBuf> {
        suffixes
            .iter()
            .map(|s| {
                let mut name = base.as_os_str().to_owned();
                name.push(s);
                PathBuf::from(name)
            })
            .collect()
    };
    match mode {
        StorageMode::Local => files.extend(with_suffixes(dir.database(), &["", "-wal", "-shm"])),
        // The replica resyncs from its primary under the new key.
        StorageMode::Replica { .. } => files.extend(with_suffixes(
            dir.replica(),
            &["", "-wal", "-shm", "-client_wal_index", "-info"],
        )),
        StorageMode::Remote { .. } => {}
    }
    files
}

/// Copies the database `src` (under `from`) to `dst` under `to`, checks the copy and returns
/// its episode count.
async fn copy_database(
    src: &Path,
    from: Option<&MasterKey>,
    dst: &Path,
    to: &MasterKey,
) -> Result<u64, StackError> {
    let _ = std::fs::remove_file(dst);
    let before = crate::open_database_file(src, from).await?;
    let counts_before = crate::database::episode_counts(&before).await?;
    drop(before);
    memory_storage_turso::reencrypt_file(src, from, dst, to).await?;
    let after = crate::open_database_file(dst, Some(to)).await?;
    let counts_after = crate::database::episode_counts(&after).await?;
    drop(after);
    if counts_before != counts_after {
        let _ = std::fs::remove_file(dst);
        return Err(StackError::Encryption(format!(
            "the re-encrypted copy does not hold the same episodes ({counts_after:?} against {counts_before:?}); nothing was changed"
        )));
    }
    Ok(counts_after.iter().map(|(_, n)| n).sum())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
