//! Opening one database on its own, outside a running stack: a backup's snapshot, the copy a
//! restore checks, the restored data directory, and the scratch store of an evaluation. In one
//! place, so every file the tools open is opened as the stack opens its own.

use std::path::Path;
use std::sync::Arc;

use memory_core::{Result, Storage};
use memory_seal::MasterKey;
use memory_storage_turso::{TursoConfig, TursoStorage};

/// A memory database file (a backup's snapshot, a copy being checked), with the stack's
/// settings for a local file; migrated to the current schema if it is older.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("db-file-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let db = memory_stack::open_database_file(&dir.join("copy.db"), None).await?;
/// assert!(db.schema_version() > 0);
/// # drop(db);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// An encrypted file needs its `key` (a wrong one fails at open).
pub async fn open_database_file(path: &Path, key: Option<&MasterKey>) -> Result<TursoStorage> {
    TursoStorage::open(TursoConfig::local(path).encryption(key.cloned()).build()?).await
}

/// The database of the data directory `dir` alone (no cache, journal or embedding model), as
/// a restore reopens it.
pub async fn open_data_dir_database(dir: &Path, key: Option<&MasterKey>) -> Result<TursoStorage> {
    open_database_file(&dir.join(crate::DATABASE_FILE), key).await
}

/// A fresh store in memory (libsql, nothing on disk), as the evaluations import into.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = memory_stack::open_scratch_store().await?;
/// assert!(store.list_namespaces().await?.is_empty());
/// # Ok::<(), memory_core::Error>(())
/// # }).unwrap();
/// ```
pub async fn open_scratch_store() -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(TursoStorage::open_local(":memory:").await?))
}

/// The episode count of every namespace of `storage`, by name.
pub(crate) async fn episode_counts(storage: &TursoStorage) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for ns in memory_core::EpisodeStore::list_namespaces(storage).await? {
        let n = memory_core::EpisodeStore::namespace_stats(storage, &ns).await?;
        out.push((ns.to_string(), n.episodes));
    }
    Ok(out)
}
