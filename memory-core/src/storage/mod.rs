//! Storage traits: the primitives every backend implements, each scoped to a namespace.
//!
//! # For a backend author
//! A backend implements five traits, and only their required methods (the provided ones are
//! overrides for speed or policy, with correct defaults):
//!
//! | trait | required | what it holds | provided (override if you can do better) |
//! |---|---|---|---|
//! | [`EpisodeStore`] | 11 | episodes and their steps: create, append, complete, forget (and its audit records), get, list, lexical search, counts, ping | `get_episodes` (one round trip), `sync`, `reads_need_a_server` |
//! | [`LearningStore`] | 7 | patterns, heuristics, lessons: apply a learning update, put, guarded put, get, query, feedback | `get_learned_many` (one round trip) |
//! | [`EmbeddingStore`] | 9 | vectors and the vector index's change log and snapshots | |
//! | [`MaintenanceStore`] | 14 | bookkeeping outside the learning loop: consolidation runs and their claims, metrics snapshots, estimates, restores, compaction, purging a namespace | |
//! | [`Storage`] | 1 | the backend's name | `may_have_changed`, `changes_since` (a change feed for caches) |
//!
//! Everything derivable from those (typed reads of learned items, search hits alone) is in
//! [`StorageExt`], implemented for every store; a decorator forwards only what it changes
//! with [`forward_storage!`](crate::forward_storage). The `memory-testkit` conformance suite
//! tells whether a backend keeps the contracts, and a backend that passes it can stand in for
//! any other. [`InMemoryStorage`] is a complete backend to read; `examples/custom_backend.rs`
//! is a decorator.
//!
//! The primitive traits are object-safe; use them as `Arc<dyn Storage>`.
//!
//! Atomicity and idempotency, per method, are part of the contract and are written on each
//! method; backends must keep them.

mod cache;
mod erasure;
mod ext;
mod forgetting;
mod forward;
mod index_data;
mod memory;
mod outbox;
mod queries;
mod traits;

pub use cache::{Cache, CacheKey, CacheMark, CacheStats, CachedValue};
pub use erasure::{
    ErasedRows, Erasure, ErasureReport, ForgetEpisode, ForgetRecord, MAX_FORGET_EPISODES,
    MAX_FORGET_REASON_BYTES,
};
pub use ext::StorageExt;
pub use forgetting::{forget_in, prepare_erasure};
pub use index_data::{
    EmbeddingCoverage, IndexChanges, IndexSnapshot, MAX_INDEX_SNAPSHOT_BYTES, StoredEmbedding,
    check_index_snapshot_size,
};
pub use memory::InMemoryStorage;
pub use outbox::{KeptUsage, Outbox, OutboxEntry, RefusedWrite, WriteOp};
pub use queries::{
    EpisodeCompletion, EpisodeFilter, EpisodeQuery, EpisodeStatus, LearnedQuery, NamespaceStats,
    QuotaUsage, TextHit, TextQuery, TextSearch,
};
pub use traits::{
    Change, ChangeSet, EmbeddingStore, EpisodeStore, GuardedItems, LearnedItems, LearningStore,
    MaintenanceStore, Storage,
};
