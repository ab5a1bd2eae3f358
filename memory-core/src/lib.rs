//! The domain, learning pipeline and storage traits of a self-learning episodic memory for AI
//! agents.
//!
//! Agents record episodes (a task, the tool steps taken, the outcome). On completion the memory
//! scores a [`RewardScore`], writes a [`Reflection`], and merges what the episode teaches into
//! [`Pattern`]s, [`Heuristic`]s and [`FailureLesson`]s held in storage. Start with
//! [`SelfLearningMemory`].
//!
//! This crate does no I/O of its own: storage backends implement [`Storage`]
//! (`memory-storage-turso` for libsql, [`InMemoryStorage`] here as the reference).
//!
//! ```
//! use std::sync::Arc;
//! use memory_core::{InMemoryStorage, MemoryConfig, Namespace, NewEpisode, Outcome, SelfLearningMemory, StepInput, TaskContext, TaskType};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
//! let ns = Namespace::new("acme/api")?;
//! let id = memory.start_episode(&ns, NewEpisode::new("add rate limiting", TaskType::CodeGeneration, TaskContext::new("web_api"))).await?;
//! memory.log_step(&ns, id, StepInput::ok("edit_file", "add middleware", "ok")).await?;
//! let report = memory.complete_episode(&ns, id, Outcome::success("done")).await?;
//! println!("reward {:.2}", report.reward.total);
//! # memory.shutdown().await?;
//! # Ok::<(), memory_core::Error>(())
//! # }).unwrap();
//! ```

mod clock;
mod confidence;
mod consolidation;
mod embedding;
mod episode;
mod error;
mod extract;
mod feedback;
mod heuristic;
mod json_field;
mod learned;
mod learning;
mod lesson;
mod limits;
mod maintenance;
mod memory;
mod namespace;
mod pattern;
mod quota;
mod quote;
mod redact;
mod reflection;
pub mod retrieval;
mod reward;
mod signature;
mod storage;
mod text;
mod tiered;

pub use clock::{Clock, SharedClock, SystemClock, TokioClock, truncate_to_millis};
pub use confidence::{beta_mean, decay_factor, wilson_lower_bound};
pub use consolidation::{
    ConsolidationConfig, MAX_CONSOLIDATION_INTERVAL, MAX_CONSOLIDATION_ITEMS, MAX_RETENTION_DAYS,
    MIN_CONSOLIDATION_INTERVAL, RetentionConfig, calibrate, correction_from, estimate_error,
    heuristic_merge_key, lexical_similarity, merge_heuristic_into, merge_pattern_into,
    pattern_merge_key, trend,
};
pub use embedding::{Embedder, cosine, l2_normalize};
pub use episode::{
    Complexity, Episode, EpisodeId, EpisodeSummary, ExecutionStep, IMPORT_TAG_PREFIX, NewEpisode,
    Outcome, OutcomeKind, StepInput, StepResult, TaskContext, TaskType, steps_to_append,
};
pub use error::{Error, ObjectKind, Result};
pub use extract::{Recovery, extract_learning, find_recoveries};
pub use feedback::{Feedback, FeedbackOutcome, FeedbackTarget};
pub use heuristic::{Heuristic, HeuristicId, HeuristicObservation, resolve_contradictions};
pub use learned::{Evidence, LearnedStatus, RECENT_EVIDENCE};
pub use learning::{Changed, ExistingLearned, LearnedChanges, LearningUpdate};
pub use lesson::{FailureLesson, LessonId, LessonObservation, Remedy, lesson_id};
pub use limits::Limits;
pub use maintenance::{
    ConsolidationRun, EstimateActual, EstimateRecord, MetricsSnapshot, RestoreRecord,
    StepCompaction,
};
pub use memory::{
    CompletionReport, ConsolidationReport, LearnedChange, LearnedSummary, LearningConfig,
    MemoryConfig, SelfLearningMemory, StepBatchConfig,
};
pub use namespace::{MAX_NAMESPACE_LEN, Namespace};
pub use pattern::{Effectiveness, Pattern, PatternId, PatternKind, PatternObservation, pattern_id};
pub use quota::{QuotaConfig, RateLimitConfig, RateLimiter};
pub use quote::{QUOTE_MAX_CHARS, cut_to, cut_value, quote_value};
pub use redact::{RedactionConfig, Redactor};
pub use reflection::{Reflection, reflect};
pub use retrieval::{
    IndexStatus, Retrieval, RetrievalConfig, RetrievalMethod, RetrievalQuery, RetrievedEpisode,
    Retriever, ScoreBreakdown,
};
pub use reward::{RewardHistory, RewardScore, compute_reward};
pub use signature::{ContextKey, collapse_tools, error_class, normalize_label, normalize_tool};
pub use storage::cache::{Cache, CacheKey, CacheMark, CacheStats, CachedValue};
pub use storage::memory::InMemoryStorage;
pub use storage::outbox::{Outbox, OutboxEntry, WriteOp};
pub use storage::{
    Change, ChangeSet, EmbeddingCoverage, EmbeddingStore, EpisodeCompletion, EpisodeFilter,
    EpisodeQuery, EpisodeStatus, EpisodeStore, IndexChanges, IndexSnapshot, LearnedItems,
    LearnedQuery, LearningStore, MAX_INDEX_SNAPSHOT_BYTES, MaintenanceStore, NamespaceStats,
    Storage, StoredEmbedding, TextHit, TextQuery, check_index_snapshot_size,
};
pub use text::{BM25_B, BM25_K1, bm25_weight, episode_search_text, task_search_text, tokenize};
pub use tiered::{
    BreakerConfig, BreakerState, CircuitBreaker, Refused, SyncStatus, TieredConfig, TieredStorage,
};
