//! Durable storage of the self-learning episodic memory on libsql (the database Turso runs).
//!
//! [`TursoStorage`] implements [`memory_core::Storage`] in three modes ([`TursoMode`]):
//!
//! - **Local file** (the embedded default): a libsql database file, e.g. `./.memory/memory.db`.
//!   Nothing to install or start. `:memory:` gives a private in-memory database for tests.
//! - **Remote** (feature `remote`): Hrana over HTTP to a `sqld` server or Turso Cloud, e.g.
//!   from `TURSO_DATABASE_URL` / `TURSO_AUTH_TOKEN` via [`TursoConfig::from_env`].
//! - **Embedded replica** (feature `replica`): a local file that syncs from a remote primary;
//!   reads are local, writes go to the primary and are readable here when the call returns;
//!   other replicas see them after they [`sync`](TursoStorage::sync).
//!
//! Both features are on by default (the CLI needs every mode). Without them
//! (`default-features = false`) libsql is built with only its `core` feature: roughly 100
//! fewer crates and several minutes less of cold build on 2 cores.
//!
//! The schema (normalized tables, namespace in every key, an FTS5 index over task, step and
//! reflection text kept per namespace, an `F32_BLOB` vector column) and its migrations are described in
//! `SCHEMA.md`; local files run in WAL mode with `synchronous = NORMAL` by default (see
//! [`Synchronous`] for what survives a crash and what survives power loss), and a background
//! task checkpoints their WAL so that no commit pays for it ([`WalCheckpoints`]).
//!
//! ```
//! use std::sync::Arc;
//! use memory_core::{MemoryConfig, Namespace, NewEpisode, Outcome, SelfLearningMemory, StepInput, TaskContext, TaskType};
//! use memory_storage_turso::TursoStorage;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let storage = TursoStorage::open_in_data_dir(dir.path().join(".memory")).await?;
//! let memory = SelfLearningMemory::new(Arc::new(storage), MemoryConfig::default())?;
//!
//! let ns = Namespace::new("acme/api")?;
//! let task = NewEpisode::new("add rate limiting", TaskType::CodeGeneration, TaskContext::new("web_api"));
//! let id = memory.start_episode(&ns, task).await?;
//! memory.log_step(&ns, id, StepInput::ok("edit_file", "add middleware", "ok")).await?;
//! let report = memory.complete_episode(&ns, id, Outcome::success("done")).await?;
//! assert!(report.reward.total > 0.5);
//! memory.shutdown().await?;
//!
//! // Everything is in the file: a new storage over it sees the episode.
//! let reopened = TursoStorage::open_in_data_dir(dir.path().join(".memory")).await?;
//! let memory = SelfLearningMemory::new(Arc::new(reopened), MemoryConfig::default())?;
//! assert_eq!(memory.get_episode(&ns, id).await?.steps.len(), 1);
//! # Ok::<(), memory_core::Error>(())
//! # }).unwrap();
//! ```

mod backend;
mod changes;
mod checkpoint;
mod codec;
mod compressed_json;
mod config;
mod connection;
mod deferred_text;
mod embeddings;
mod episode_rows;
mod episodes;
mod error;
mod forget;
mod group_commit;
mod group_state;
#[cfg(feature = "remote")]
mod hrana;
mod learned;
#[cfg(feature = "remote")]
mod learned_bodies;
mod maintenance;
mod prepared;
mod reencrypt;
#[cfg(feature = "remote")]
mod remote_batch;
mod schema;
mod server_gate;
mod sql;
mod step_pages;
mod text_index;

pub use backend::{DATA_DIR_FILE, IntegrityCheck, SalvagedIds, TursoStorage};
pub use checkpoint::WalCheckpoints;
pub use config::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_CALL_TIMEOUT, DEFAULT_CHANGE_POLL_INTERVAL, DEFAULT_READERS,
    ENV_AUTH_TOKEN, ENV_DATABASE_URL, MAX_READERS, MEMORY_PATH, Synchronous, TursoConfig,
    TursoConfigBuilder, TursoMode,
};
pub use group_state::GroupCommits;
pub use reencrypt::reencrypt_file;
pub use schema::SCHEMA_VERSION;
