//! Storage traits: the primitives every backend implements, each scoped to a namespace.
//!
//! The traits are object-safe; use them as `Arc<dyn Storage>`. A backend that passes
//! the conformance suite of `memory-testkit` can stand in for any other.
//!
//! Atomicity and idempotency, per method, are part of the contract and are written on each
//! method; backends must keep them.

mod cache;
mod forward;
mod index_data;
mod memory;
mod outbox;
mod queries;
mod traits;

pub use cache::{Cache, CacheKey, CacheMark, CacheStats, CachedValue};
pub use index_data::{
    EmbeddingCoverage, IndexChanges, IndexSnapshot, MAX_INDEX_SNAPSHOT_BYTES, StoredEmbedding,
    check_index_snapshot_size,
};
pub use memory::InMemoryStorage;
pub use outbox::{Outbox, OutboxEntry, WriteOp};
pub use queries::{
    EpisodeCompletion, EpisodeFilter, EpisodeQuery, EpisodeStatus, LearnedQuery, NamespaceStats,
    TextHit, TextQuery, TextSearch,
};
pub use traits::{
    Change, ChangeSet, EmbeddingStore, EpisodeStore, GuardedItems, LearnedItems, LearningStore,
    MaintenanceStore, Storage, get_typed, query_typed,
};
