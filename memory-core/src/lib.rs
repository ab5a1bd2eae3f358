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

mod assessment;
mod clock;
mod consolidation;
mod embedding;
mod engine;
mod episode;
mod error;
mod learned;
mod learning;
mod namespace;
mod policy;
mod quote;
mod records;
pub mod retrieval;
mod search_text;
pub mod serde_adapters;
mod statistics;
mod storage;
pub mod telemetry;
mod text;

pub use assessment::{Reflection, RewardScore};
pub use clock::{Clock, SharedClock, SystemClock, TokioClock, truncate_to_millis};
pub use consolidation::{
    ConsolidationConfig, ConsolidationReport, LearnedChange, RetentionConfig, trend,
};
pub use embedding::{Embedder, cosine, l2_normalize};
pub use engine::{
    CompletionReport, LearnedSummary, LearningConfig, MAX_CURATE_REASON_BYTES, MAX_FORGET_RECORDS,
    MemoryConfig, SelfLearningMemory, StepBatchConfig,
};
pub use episode::{
    Complexity, Episode, EpisodeId, EpisodeSummary, ExecutionStep, IMPORT_TAG_PREFIX, NewEpisode,
    Outcome, OutcomeKind, StepInput, StepResult, TaskContext, TaskType, steps_to_append,
};
pub use error::{Error, ObjectKind, Result};
pub use learned::{
    ContextKey, Effectiveness, Evidence, FailureLesson, Feedback, FeedbackOutcome, FeedbackTarget,
    HINDERED_STREAK_DISCOUNT, Heuristic, HeuristicId, HeuristicObservation, Learned, LearnedId,
    LearnedItem, LearnedKind, LearnedStatus, LessonId, LessonObservation, MAX_MARKS, MarkSeen,
    Marks, Pattern, PatternId, PatternKind, PatternObservation, Pin, Remedy, StepReplaced,
    context_marks, general_identity, keys_to_resolve, lesson_id, pattern_id, rank_order,
    resolve_contradictions,
};
pub use learning::{
    Changed, ExistingLearned, LearnedChanges, LearningUpdate, Recovery, RemovedItems,
    RewardHistory, Unlearned, compute_reward, extract_learning, find_recoveries, is_mistake,
    reflect,
};
pub use namespace::{MAX_NAMESPACE_LEN, Namespace};
pub use policy::{Limits, QuotaConfig, RateLimitConfig, RateLimiter, RedactionConfig, Redactor};
pub use quote::{QUOTE_MAX_CHARS, cut_to, cut_value, quote_value};
pub use records::{
    ConsolidationRun, Estimate, EstimateActual, EstimateCorrection, EstimateRecord,
    MetricsSnapshot, RestoreRecord, StepCompaction,
};
pub use retrieval::{
    FusionMethod, IndexStatus, Retrieval, RetrievalConfig, RetrievalMethod, RetrievalQuery,
    RetrievedEpisode, Retriever, ScoreBreakdown,
};
pub use search_text::{INDEXED_WORK_CHARS, indexed_work_text, task_search_text};
pub use storage::{
    Cache, CacheKey, CacheMark, CacheStats, CachedValue, Change, ChangeSet, EmbeddingCoverage,
    EmbeddingStore, EpisodeCompletion, EpisodeFilter, EpisodeQuery, EpisodeStatus, EpisodeStore,
    ErasedRows, Erasure, ErasureReport, ForgetEpisode, ForgetRecord, GuardedItems, InMemoryStorage,
    IndexChanges, IndexSnapshot, KeptUsage, LearnedItems, LearnedQuery, LearningStore,
    MAX_FORGET_EPISODES, MAX_FORGET_REASON_BYTES, MAX_INDEX_SNAPSHOT_BYTES, MaintenanceStore,
    NamespaceStats, Outbox, OutboxEntry, QuotaUsage, RefusedWrite, Storage, StorageExt,
    StoredEmbedding, TextHit, TextQuery, TextSearch, WriteOp, check_index_snapshot_size, forget_in,
    prepare_erasure,
};
pub use text::{bm25_weight, collapse_tools, error_class, for_each_token, tokenize};

/// What the exported macros need from other crates.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use chrono::{DateTime, Utc};
}
