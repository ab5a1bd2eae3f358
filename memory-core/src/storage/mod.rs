//! Storage traits: the primitives every backend implements, each scoped to a namespace.
//!
//! The traits are object-safe; use them as `Arc<dyn Storage>`. A backend that passes
//! the conformance suite of `memory-testkit` can stand in for any other.
//!
//! Atomicity and idempotency, per method, are part of the contract and are written on each
//! method; backends must keep them.

mod cache;
mod forward;
mod memory;
mod outbox;
mod traits;

pub use cache::{Cache, CacheKey, CacheMark, CacheStats, CachedValue};
pub use memory::InMemoryStorage;
pub use outbox::{Outbox, OutboxEntry, WriteOp};
pub use traits::{
    Change, ChangeSet, EmbeddingCoverage, EmbeddingStore, EpisodeCompletion, EpisodeFilter,
    EpisodeQuery, EpisodeStatus, EpisodeStore, GuardedItems, IndexChanges, IndexSnapshot,
    LearnedItems, LearnedQuery, LearningStore, MAX_INDEX_SNAPSHOT_BYTES, MaintenanceStore,
    NamespaceStats, Storage, StoredEmbedding, TextHit, TextQuery, TextSearch,
    check_index_snapshot_size, get_typed, query_typed,
};
