//! The default stack of the self-learning memory, assembled in one place.
//!
//! [`StackBuilder`] opens, in a data directory: the libsql durable layer (a local file, a
//! remote server, or an embedded replica of one), the redb cache, this process's journal of
//! writes acknowledged while the durable layer is unreachable, and (optionally) the embedding
//! model, behind [`TieredStorage`] and [`SelfLearningMemory`]. The `memory` CLI, its MCP
//! server, the benchmarks and the test programs all open the stack here, so they cannot drift
//! apart.
//!
//! Any number of processes may open one data directory at once (see `ARCHITECTURE.md`,
//! "Many processes, one memory"):
//!
//! - the database is shared (SQLite's WAL locking; every write transaction is short);
//! - the cache file is held by the first process that opens it; the others keep their cached
//!   copies in memory ([`CacheState`]), and every process drops copies that another writer
//!   changed before it reads them (the durable layer's change feed);
//! - each process journals into a file of its own, and adopts the journals of processes that
//!   stopped before replaying them;
//! - every process holds the directory's presence lock shared, so `restore` can tell that the
//!   directory is in use ([`PresenceLock`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), memory_stack::StackError> {
//! use memory_core::{Namespace, NewEpisode, Outcome, StepInput, TaskContext, TaskType};
//! use memory_stack::StackBuilder;
//!
//! let stack = StackBuilder::new(".memory").open().await?;
//! let ns = Namespace::new("acme/api")?;
//! let m = stack.memory();
//! let id = m
//!     .start_episode(&ns, NewEpisode::new("add a route", TaskType::CodeGeneration, TaskContext::new("web_api")))
//!     .await?;
//! m.log_step(&ns, id, StepInput::ok("edit_file", "add the route", "ok")).await?;
//! m.complete_episode(&ns, id, Outcome::success("route added")).await?;
//! stack.shutdown().await?;
//! # Ok(()) }
//! ```

mod database;
mod embedder;
mod encryption;
mod health;
mod layout;
#[cfg(test)]
mod private_files_test;
mod reencrypt;

/// Private files and directories (`0700` / `0600` whatever the umask), re-exported for the
/// CLI's exports and backups.
pub use memory_files as private_fs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use memory_core::{Cache, Embedder, MemoryConfig, SelfLearningMemory, SystemClock};
use memory_storage_redb::{
    CacheConfig, CacheOpening, JournalDir, MemoryCache, OutboxConfig, RedbCache,
};
use memory_storage_turso::{TursoConfig, TursoConfigBuilder, TursoStorage};
use tracing::{info, warn};

pub use database::{open_data_dir_database, open_database_file, open_scratch_store};
pub use embedder::load_embedder;
pub use encryption::{
    ENCRYPTION_FILE, EncryptionMarker, holds_a_memory, marker_path, read_marker, settle,
    write_marker,
};
pub use health::{ComponentHealth, HealthReport, Status};
pub use layout::{
    CACHE_FILE, DAMAGED_DIR, DATABASE_FILE, DataDir, JOURNAL_DIR, LEGACY_OUTBOX_FILE, LOCK_FILE,
    PresenceLock, REPLICA_FILE,
};
pub use memory_seal::{KeyError, KeySource, MasterKey, Sealer};
/// The file, in the journal directory, that lists the journaled writes refused for a quota.
pub use memory_storage_redb::REFUSED_FILE;
/// The tiered layer's configuration and state, for [`StackBuilder::tiered_config`] and health
/// reports without a direct dependency on `memory-tiered`.
pub use memory_tiered::{BreakerConfig, BreakerState, SyncStatus, TieredConfig, TieredStorage};
/// The key and the sealed formats, for programs that open a stack with a key.
pub use reencrypt::{Reencrypted, reencrypt};

/// Why the stack could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// The memory or a storage layer failed.
    #[error(transparent)]
    Memory(#[from] memory_core::Error),
    /// The data directory cannot be created or used.
    #[error("cannot use the data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A restore holds the directory.
    #[error("a restore is replacing the database in {dir}; try again when it has finished")]
    Restoring {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory is encrypted and no key was given.
    #[error(
        "{dir} is encrypted (key {fingerprint}): set MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or MEMORY_ENCRYPTION_KEY_COMMAND"
    )]
    KeyMissing {
        /// The directory.
        dir: PathBuf,
        /// The fingerprint of the key it is encrypted under.
        fingerprint: String,
    },
    /// The key given is not the directory's key; nothing was read or changed.
    #[error(
        "the encryption key given (key {given}) does not open {dir}: it is encrypted under key {expected}"
    )]
    WrongKey {
        /// The directory.
        dir: PathBuf,
        /// The fingerprint of the key given.
        given: String,
        /// The fingerprint of the directory's key.
        expected: String,
    },
    /// A key was given for a memory that is not encrypted.
    #[error(
        "{dir} holds a memory that is not encrypted: `memory encrypt` encrypts it in place (with every other process stopped); or unset the key"
    )]
    NotEncrypted {
        /// The directory.
        dir: PathBuf,
    },
    /// The key cannot be read, or the encryption marker cannot be used.
    #[error("encryption: {0}")]
    Encryption(String),
    /// Other processes use the directory (for operations that need it to themselves).
    #[error(
        "other memory processes are using {dir} (a `memory mcp` server, another command or an application); stop them first"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
}

/// Where the durable layer lives.
#[derive(Clone, PartialEq, Eq)]
pub enum StorageMode {
    /// A libsql file in the data directory (the default; nothing to start).
    Local,
    /// A remote server (sqld, Turso Cloud) over HTTP.
    Remote {
        /// The server's URL.
        url: String,
        /// Its token, if it needs one.
        auth_token: Option<String>,
    },
    /// A local replica (in the data directory) of a remote primary: reads are local, writes
    /// go to the primary.
    Replica {
        /// The primary's URL.
        url: String,
        /// Its token, if it needs one.
        auth_token: Option<String>,
    },
}

impl std::fmt::Debug for StorageMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageMode::Local => f.write_str("Local"),
            StorageMode::Remote { url, .. } => f
                .debug_struct("Remote")
                .field("url", url)
                .finish_non_exhaustive(),
            StorageMode::Replica { url, .. } => f
                .debug_struct("Replica")
                .field("url", url)
                .finish_non_exhaustive(),
        }
    }
}

impl StorageMode {
    /// `local`, `remote` or `replica`.
    pub fn name(&self) -> &'static str {
        match self {
            StorageMode::Local => "local",
            StorageMode::Remote { .. } => "remote",
            StorageMode::Replica { .. } => "replica",
        }
    }
}

/// How the stack's cache came out when it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// This process holds the cache file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// The cache file could not be trusted: it was moved aside and a new one started.
    Rebuilt {
        /// The new file.
        path: PathBuf,
        /// Where the damaged one went.
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Another process holds the cache file: this one caches in memory.
    InMemory {
        /// Why.
        reason: String,
    },
    /// No cache.
    Off {
        /// Why.
        reason: String,
    },
}

/// Whether the embedding model was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedderState {
    /// The stack was opened without it (the command needs no semantic retrieval).
    NotLoaded,
    /// Loaded: what it is.
    Loaded(String),
    /// Asked for but not available: why (retrieval is lexical).
    Missing(String),
}

/// Opens a [`Stack`].
pub struct StackBuilder {
    dir: DataDir,
    mode: StorageMode,
    memory: MemoryConfig,
    tiered: TieredConfig,
    cache: Option<CacheConfig>,
    outbox: OutboxConfig,
    semantic: bool,
    embedder: Option<Arc<dyn Embedder>>,
    turso: Option<Box<dyn FnOnce(TursoConfigBuilder) -> TursoConfigBuilder + Send>>,
    encryption: Option<MasterKey>,
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .field("semantic", &self.semantic)
            .finish_non_exhaustive()
    }
}

impl StackBuilder {
    /// The default stack in `data_dir`: local mode, default settings, a cache, no model.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StackBuilder {
            dir: DataDir::new(data_dir),
            mode: StorageMode::Local,
            memory: MemoryConfig::default(),
            tiered: TieredConfig::default(),
            cache: Some(CacheConfig::default()),
            outbox: OutboxConfig::default(),
            semantic: false,
            embedder: None,
            turso: None,
            encryption: None,
        }
    }

    /// Encrypts the memory at rest under `key` (see `SECURITY.md`): the local database file
    /// or replica (needs the `encryption` feature), the cache, the journals and their notes.
    /// A new directory becomes encrypted; an encrypted one opens only with its key
    /// ([`StackError::KeyMissing`], [`StackError::WrongKey`]); one holding a memory that is
    /// not encrypted is refused ([`StackError::NotEncrypted`]).
    #[must_use]
    pub fn encryption_key(mut self, key: Option<MasterKey>) -> Self {
        self.encryption = key;
        self
    }

    /// Where the durable layer lives.
    #[must_use]
    pub fn mode(mut self, mode: StorageMode) -> Self {
        self.mode = mode;
        self
    }

    /// The memory's settings.
    #[must_use]
    pub fn memory_config(mut self, config: MemoryConfig) -> Self {
        self.memory = config;
        self
    }

    /// The tiered storage's settings (breaker, replay, sync).
    #[must_use]
    pub fn tiered_config(mut self, config: TieredConfig) -> Self {
        self.tiered = config;
        self
    }

    /// The cache's settings; `None` runs without a cache.
    #[must_use]
    pub fn cache_config(mut self, config: Option<CacheConfig>) -> Self {
        self.cache = config;
        self
    }

    /// The journals' settings.
    #[must_use]
    pub fn outbox_config(mut self, config: OutboxConfig) -> Self {
        self.outbox = config;
        self
    }

    /// Loads the embedding model (a few hundred milliseconds) for semantic retrieval.
    #[must_use]
    pub fn semantic(mut self, on: bool) -> Self {
        self.semantic = on;
        self
    }

    /// Uses this embedder instead of loading the model.
    #[must_use]
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// Adjusts the libsql settings (timeouts, readers, ...) before opening.
    #[must_use]
    pub fn configure_turso(
        mut self,
        f: impl FnOnce(TursoConfigBuilder) -> TursoConfigBuilder + Send + 'static,
    ) -> Self {
        self.turso = Some(Box::new(f));
        self
    }

    /// Opens the stack.
    ///
    /// Fails only when the directory cannot be used, a restore holds it, or the durable layer
    /// cannot be opened (a local file; a server that is down does not stop remote and replica
    /// modes from opening: writes are journaled until it answers). A cache file another
    /// process holds, or one that is damaged, never stops it.
    pub async fn open(self) -> Result<Stack, StackError> {
        let dir = self.dir;
        dir.create()?;
        let presence = {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || PresenceLock::shared(&d))
                .await
                .map_err(|e| dir.unusable(std::io::Error::other(e)))??
        };
        if self.encryption.is_some()
            && !cfg!(feature = "encryption")
            && !matches!(self.mode, StorageMode::Remote { .. })
        {
            // Refused before the marker is written: a build that cannot encrypt leaves nothing.
            return Err(StackError::Encryption(
                "an encryption key is set, but this build cannot encrypt the database file: build \
                 with the `encryption` feature (`cargo build --release -p memory-cli --features \
                 encryption`; it needs cmake: `bash scripts/install-cmake.sh`)"
                    .into(),
            ));
        }
        let key = {
            let (d, mode, key) = (dir.clone(), self.mode.clone(), self.encryption.clone());
            tokio::task::spawn_blocking(move || encryption::settle(&d, &mode, key.as_ref()))
                .await
                .map_err(|e| dir.unusable(std::io::Error::other(e)))??
        };
        let mut config = match &self.mode {
            StorageMode::Local => TursoConfig::local(dir.database()),
            StorageMode::Remote { url, auth_token } => {
                TursoConfig::remote(url.clone(), auth_token.clone()).open_when_unreachable(true)
            }
            StorageMode::Replica { url, auth_token } => {
                TursoConfig::replica(dir.replica(), url.clone(), auth_token.clone())
                    .open_when_unreachable(true)
            }
        };
        if let Some(f) = self.turso {
            config = f(config);
        }
        if !matches!(self.mode, StorageMode::Remote { .. }) {
            config = config.encryption(key.clone());
        }
        let durable = TursoStorage::open(config.build()?).await?;
        let sealer = key.as_ref().map(Sealer::new);
        let mut outbox = self.outbox.clone();
        outbox.sealer.clone_from(&sealer);
        let journal = JournalDir::open(dir.journals(), vec![dir.legacy_outbox()], outbox).await?;
        let (cache, cache_state) = match self.cache.clone() {
            Some(mut c) => {
                c.sealer.clone_from(&sealer);
                open_cache(&dir, &c).await
            }
            None => (
                None,
                CacheState::Off {
                    reason: "turned off".into(),
                },
            ),
        };
        let clock = Arc::new(SystemClock);
        // A server that did not answer at open (down or hung) is unreachable from the start:
        // writes are journaled at once, as they are once the breaker trips.
        let unreachable = !matches!(self.mode, StorageMode::Local) && durable.schema_version() == 0;
        let tiered = TieredStorage::builder(Arc::new(durable.clone()), journal.clone())
            .durable_unreachable(unreachable)
            .maybe_cache(cache)
            .config(TieredConfig {
                quotas: self
                    .tiered
                    .quotas
                    .or_else(|| Some(self.memory.quotas.clone())),
                ..self.tiered
            })
            .clock(clock.clone())
            .open()
            .await?;
        let (embedder, embedder_state) = match self.embedder {
            Some(e) => {
                let desc = format!("{} ({} dimensions)", e.model_id(), e.dimensions());
                (Some(e), EmbedderState::Loaded(desc))
            }
            None if self.semantic => match load_embedder(dir.root()).await {
                Ok(e) => {
                    let from = memory_embed::ModelLocation::resolve(Some(dir.root()))
                        .map(|l| format!(", from {} ({})", l.dir.display(), l.source))
                        .unwrap_or_default();
                    let desc = format!("{} ({} dimensions{from})", e.model_id(), e.dimensions());
                    (Some(e), EmbedderState::Loaded(desc))
                }
                Err(why) => {
                    warn!("{why}; retrieval is lexical only");
                    (None, EmbedderState::Missing(why))
                }
            },
            None => (None, EmbedderState::NotLoaded),
        };
        let memory =
            SelfLearningMemory::with_embedder(tiered.clone(), self.memory, clock, embedder)?;
        Ok(Stack {
            memory: Arc::new(memory),
            tiered,
            durable,
            journal,
            cache: cache_state,
            embedder: embedder_state,
            dir,
            mode: self.mode,
            encryption: key.map(|k| k.fingerprint()),
            _presence: presence,
        })
    }
}

/// Opens the cache file; another process holding it, or a damaged file, never fails the
/// stack (see [`CacheState`]).
async fn open_cache(dir: &DataDir, config: &CacheConfig) -> (Option<Arc<dyn Cache>>, CacheState) {
    let path = dir.cache();
    let in_memory = |reason: String| {
        (
            Some(Arc::new(MemoryCache::new(config)) as Arc<dyn Cache>),
            CacheState::InMemory { reason },
        )
    };
    match RedbCache::try_open(&path, config.clone()).await {
        CacheOpening::Open(c) => (Some(Arc::new(c)), CacheState::File { path }),
        CacheOpening::Held => in_memory("another process holds the cache file".into()),
        CacheOpening::Failed(e) => {
            warn!(error = %e, "cannot open the cache file; caching in memory");
            in_memory(format!("the cache file cannot be opened: {e}"))
        }
        CacheOpening::Damaged(reason) => {
            let moved_to = match dir.move_aside(&path) {
                Ok(to) => to,
                Err(e) => {
                    warn!(error = %e, reason, "the cache file is damaged and cannot be moved aside; caching in memory");
                    return in_memory(format!(
                        "the cache file is damaged ({reason}) and cannot be moved aside: {e}"
                    ));
                }
            };
            warn!(file = %moved_to.display(), reason, "the cache file was damaged: moved aside, starting a new one");
            match RedbCache::try_open(&path, config.clone()).await {
                CacheOpening::Open(c) => (
                    Some(Arc::new(c)),
                    CacheState::Rebuilt {
                        path,
                        moved_to,
                        reason,
                    },
                ),
                CacheOpening::Held => in_memory("another process holds the cache file".into()),
                CacheOpening::Damaged(again) => {
                    in_memory(format!("a new cache file failed: {again}"))
                }
                CacheOpening::Failed(e) => in_memory(format!("a new cache file failed: {e}")),
            }
        }
    }
}

/// The opened stack: the memory, the layers under it, and what opening found.
#[derive(Debug)]
pub struct Stack {
    memory: Arc<SelfLearningMemory>,
    tiered: Arc<TieredStorage>,
    durable: TursoStorage,
    journal: Arc<JournalDir>,
    cache: CacheState,
    embedder: EmbedderState,
    dir: DataDir,
    mode: StorageMode,
    encryption: Option<String>,
    _presence: PresenceLock,
}

impl Stack {
    /// The memory.
    pub fn memory(&self) -> &SelfLearningMemory {
        &self.memory
    }

    /// The memory, shareable.
    pub fn memory_arc(&self) -> Arc<SelfLearningMemory> {
        Arc::clone(&self.memory)
    }

    /// The tiered storage under the memory.
    pub fn tiered(&self) -> &Arc<TieredStorage> {
        &self.tiered
    }

    /// The durable layer.
    pub fn durable(&self) -> &TursoStorage {
        &self.durable
    }

    /// This process's journal and the data directory's others.
    pub fn journal(&self) -> &Arc<JournalDir> {
        &self.journal
    }

    /// How the cache came out.
    pub fn cache_state(&self) -> &CacheState {
        &self.cache
    }

    /// Whether the model was loaded.
    pub fn embedder_state(&self) -> &EmbedderState {
        &self.embedder
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    /// The storage mode.
    pub fn mode(&self) -> &StorageMode {
        &self.mode
    }

    /// The fingerprint of the key the memory is encrypted under; `None` when it is not.
    pub fn encryption(&self) -> Option<&str> {
        self.encryption.as_deref()
    }

    /// Writes buffered steps, finishes background work, replays what the durable layer takes
    /// and closes the journal; journaled writes it could not replay stay for the next process.
    /// Calling it again is harmless.
    pub async fn shutdown(&self) -> Result<(), StackError> {
        let closed = self.memory.shutdown().await;
        self.tiered.shutdown().await?;
        closed?;
        info!(dir = %self.dir.root().display(), "memory stack closed");
        Ok(())
    }
}

/// Default deadline of the database check in [`Stack::health`].
pub const HEALTH_CHECK_DEADLINE: Duration = Duration::from_secs(2);
