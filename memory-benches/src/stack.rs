//! The default storage stack, opened as the `memory` CLI opens it: a libsql file, a redb cache
//! and a redb outbox, all in one data directory, behind `TieredStorage`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use memory_core::{
    Cache, CompletionReport, MemoryConfig, Namespace, SelfLearningMemory, SystemClock,
    TieredConfig, TieredStorage,
};
use memory_storage_redb::{CacheConfig, OutboxConfig, RedbCache, RedbOutbox};
use memory_storage_turso::{DATA_DIR_FILE, TursoStorage};

use crate::WorkloadEpisode;

/// The cache file in the data directory (the same name the CLI uses).
pub const CACHE_FILE: &str = "cache.redb";
/// The outbox file in the data directory (the same name the CLI uses).
pub const OUTBOX_FILE: &str = "outbox.redb";

/// The memory over the default stack, and the tiered storage under it.
pub struct DefaultStack {
    /// The memory facade.
    pub memory: Arc<SelfLearningMemory>,
    /// The tiered storage (cache, outbox, breaker, sync task) over the libsql file.
    pub tiered: Arc<TieredStorage>,
    /// The data directory.
    pub dir: PathBuf,
}

impl DefaultStack {
    /// Opens (or creates) the stack in `dir` with `config` and no embedder: the write path
    /// only, as `memory episode ...` runs it (embeddings are computed off the write path).
    pub async fn open(dir: &Path, config: MemoryConfig) -> Result<Self> {
        Self::open_with(dir, config, CacheConfig::default()).await
    }

    /// As [`DefaultStack::open`], with a cache configuration.
    pub async fn open_with(dir: &Path, config: MemoryConfig, cache: CacheConfig) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let durable = TursoStorage::open_in_data_dir(dir)
            .await
            .with_context(|| format!("cannot open the database in {}", dir.display()))?;
        let outbox = RedbOutbox::open(dir.join(OUTBOX_FILE), OutboxConfig::default())
            .await
            .context("cannot open the outbox")?;
        let cache = RedbCache::open(dir.join(CACHE_FILE), cache)
            .await
            .context("cannot open the cache")?;
        let tiered = TieredStorage::open(
            Arc::new(durable),
            Some(Arc::new(cache) as Arc<dyn Cache>),
            Arc::new(outbox),
            TieredConfig::default(),
            Arc::new(SystemClock),
        )
        .await
        .context("cannot open the tiered storage")?;
        let memory = SelfLearningMemory::new(tiered.clone(), config)?;
        Ok(DefaultStack {
            memory: Arc::new(memory),
            tiered,
            dir: dir.to_owned(),
        })
    }

    /// Bytes of the libsql database (with its WAL and shared-memory files).
    pub fn database_bytes(&self) -> u64 {
        let db = self.dir.join(DATA_DIR_FILE);
        let mut total = file_size(&db);
        for suffix in ["-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            total += file_size(Path::new(&name));
        }
        total
    }

    /// Bytes of the redb cache file.
    pub fn cache_bytes(&self) -> u64 {
        file_size(&self.dir.join(CACHE_FILE))
    }

    /// Bytes of the redb outbox file.
    pub fn outbox_bytes(&self) -> u64 {
        file_size(&self.dir.join(OUTBOX_FILE))
    }

    /// Flushes and closes the memory, then the tiered storage.
    pub async fn shutdown(&self) -> Result<()> {
        self.memory.shutdown().await?;
        self.tiered.shutdown().await?;
        Ok(())
    }
}

/// The size of a file, 0 when it does not exist.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Records one workload episode (start, every step, complete) and returns the completion
/// report with the time `complete_episode` took.
pub async fn record_workload_episode(
    memory: &SelfLearningMemory,
    ns: &Namespace,
    episode: WorkloadEpisode,
) -> Result<(CompletionReport, Duration)> {
    let id = memory.start_episode(ns, episode.task).await?;
    for step in episode.steps {
        memory.log_step(ns, id, step).await?;
    }
    let start = Instant::now();
    let report = memory.complete_episode(ns, id, episode.outcome).await?;
    Ok((report, start.elapsed()))
}
