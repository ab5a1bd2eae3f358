//! The default storage stack, opened as the `memory` CLI opens it (`memory-stack`): a libsql
//! file, the redb cache and this process's journal, all in one data directory, behind
//! `TieredStorage`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use memory_core::{CompletionReport, MemoryConfig, Namespace, SelfLearningMemory};
use memory_stack::{DataDir, StackBuilder};
use memory_storage_redb::CacheConfig;
use memory_storage_turso::Synchronous;
use memory_tiered::TieredStorage;

use crate::WorkloadEpisode;

pub use memory_stack::{CACHE_FILE, JOURNAL_DIR};

/// The memory over the default stack, and the tiered storage under it.
pub struct DefaultStack {
    /// The memory facade.
    pub memory: Arc<SelfLearningMemory>,
    /// The tiered storage (cache, journal, breaker, sync task) over the libsql file.
    pub tiered: Arc<TieredStorage>,
    /// The data directory.
    pub dir: PathBuf,
    stack: memory_stack::Stack,
}

impl DefaultStack {
    /// Opens (or creates) the stack in `dir` with `config` and no embedder: the write path
    /// only, as `memory episode ...` runs it (embeddings are computed off the write path).
    pub async fn open(dir: &Path, config: MemoryConfig) -> Result<Self> {
        Self::open_with(dir, config, CacheConfig::default()).await
    }

    /// As [`DefaultStack::open`], with a cache configuration.
    pub async fn open_with(dir: &Path, config: MemoryConfig, cache: CacheConfig) -> Result<Self> {
        Self::open_synchronous(dir, config, cache, Synchronous::default()).await
    }

    /// As [`DefaultStack::open_with`], with the libsql file's `synchronous` setting.
    pub async fn open_synchronous(
        dir: &Path,
        config: MemoryConfig,
        cache: CacheConfig,
        synchronous: Synchronous,
    ) -> Result<Self> {
        Self::open_keyed(dir, config, cache, synchronous, None).await
    }

    /// As [`DefaultStack::open_synchronous`], encrypted at rest under `key` when it is given
    /// (the database needs the `encryption` feature).
    pub async fn open_keyed(
        dir: &Path,
        config: MemoryConfig,
        cache: CacheConfig,
        synchronous: Synchronous,
        key: Option<memory_stack::MasterKey>,
    ) -> Result<Self> {
        let stack = StackBuilder::new(dir)
            .encryption_key(key)
            .memory_config(config)
            .cache_config(Some(cache))
            .configure_turso(move |b| b.synchronous(synchronous))
            .open()
            .await
            .with_context(|| format!("cannot open the stack in {}", dir.display()))?;
        Ok(DefaultStack {
            memory: stack.memory_arc(),
            tiered: Arc::clone(stack.tiered()),
            dir: dir.to_owned(),
            stack,
        })
    }

    /// Commits that concurrent writes shared, and the writes they held.
    pub fn group_commits(&self) -> memory_storage_turso::GroupCommits {
        self.stack.durable().group_commits()
    }

    /// Bytes of the libsql database (with its WAL and shared-memory files).
    pub fn database_bytes(&self) -> u64 {
        let db = DataDir::new(&self.dir).database();
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

    /// Bytes of the journals (a process's journal exists only while it holds writes).
    pub fn outbox_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.join(JOURNAL_DIR)).map_or(0, |rd| {
            rd.filter_map(std::result::Result::ok)
                .map(|e| file_size(&e.path()))
                .sum()
        })
    }

    /// Flushes and closes the memory, then the tiered storage.
    pub async fn shutdown(&self) -> Result<()> {
        self.stack.shutdown().await?;
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
