//! The storage traits and the query types they take.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::assessment::{Reflection, RewardScore};
use crate::episode::{
    Episode, EpisodeId, EpisodeSummary, ExecutionStep, Outcome, OutcomeKind, TaskContext, TaskType,
};
use crate::error::{Error, Result};
use crate::learned::{
    ContextKey, FailureLesson, Feedback, FeedbackTarget, Heuristic, HeuristicId, Learned,
    LearnedId, LearnedItem, LearnedKind, LessonId, Pattern, PatternId,
};
use crate::learning::{LearnedChanges, LearningUpdate};
use crate::namespace::Namespace;
use crate::records::{
    ConsolidationRun, EstimateActual, EstimateRecord, MetricsSnapshot, RestoreRecord,
    StepCompaction,
};

/// Filters over episodes, applied by the backend inside its query (never by post-filtering).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpisodeFilter {
    /// Only this task type.
    pub task_type: Option<TaskType>,
    /// Only this domain (exact).
    pub domain: Option<String>,
    /// Only this language (exact).
    pub language: Option<String>,
    /// Only this framework (exact).
    pub framework: Option<String>,
    /// Only episodes carrying this tag.
    pub tag: Option<String>,
    /// Only episodes with this status.
    pub status: Option<EpisodeStatus>,
    /// Only episodes started at or after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Only episodes started before this time.
    pub started_before: Option<DateTime<Utc>>,
}

/// An episode's state, for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeStatus {
    /// Not completed yet.
    InProgress,
    /// Completed with this outcome.
    Completed(OutcomeKind),
    /// Completed with any outcome.
    AnyCompleted,
}

impl EpisodeFilter {
    /// True when the episode passes every set filter. Backends that filter in code (the
    /// in-memory one) use this; SQL backends translate the same rules to `WHERE` clauses.
    pub fn matches(&self, e: &Episode) -> bool {
        self.matches_parts(
            e.task_type,
            &e.context,
            e.outcome.as_ref().map(Outcome::kind),
            e.started_at,
        )
    }

    /// [`matches`](Self::matches) for a summary (the in-process vector index filters these).
    pub fn matches_summary(&self, e: &EpisodeSummary) -> bool {
        self.matches_parts(e.task_type, &e.context, e.outcome, e.started_at)
    }

    fn matches_parts(
        &self,
        task_type: TaskType,
        context: &TaskContext,
        outcome: Option<OutcomeKind>,
        started_at: DateTime<Utc>,
    ) -> bool {
        self.task_type.is_none_or(|t| task_type == t)
            && self.domain.as_ref().is_none_or(|d| &context.domain == d)
            && self
                .language
                .as_ref()
                .is_none_or(|l| context.language.as_ref() == Some(l))
            && self
                .framework
                .as_ref()
                .is_none_or(|f| context.framework.as_ref() == Some(f))
            && self.tag.as_ref().is_none_or(|t| context.tags.contains(t))
            && self.status.is_none_or(|s| match s {
                EpisodeStatus::InProgress => outcome.is_none(),
                EpisodeStatus::AnyCompleted => outcome.is_some(),
                EpisodeStatus::Completed(k) => outcome == Some(k),
            })
            && self.started_after.is_none_or(|t| started_at >= t)
            && self.started_before.is_none_or(|t| started_at < t)
    }
}

/// A page of episodes, newest first (by start time, then id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeQuery {
    /// Filters.
    pub filter: EpisodeFilter,
    /// Page size.
    pub limit: u32,
    /// Items to skip.
    pub offset: u32,
}

impl Default for EpisodeQuery {
    fn default() -> Self {
        EpisodeQuery {
            filter: EpisodeFilter::default(),
            limit: 50,
            offset: 0,
        }
    }
}

/// A lexical (full-text) query over task descriptions, reflections and step text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextQuery {
    /// Free text; backends tokenize it and match any term.
    pub text: String,
    /// Filters, applied inside the query.
    pub filter: EpisodeFilter,
    /// Most hits.
    pub limit: u32,
}

/// One lexical hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextHit {
    /// The episode.
    pub episode_id: EpisodeId,
    /// Relevance; higher is better (BM25-like, not comparable across backends).
    pub score: f64,
    /// The episode's summary (read in the same query, so ranking needs no second read).
    pub summary: EpisodeSummary,
}

/// The result of a lexical search: its hits, best first, and how much of the query the
/// namespace's index knows at all.
///
/// `known_terms` of the query's `terms` (distinct, as [`tokenize`](crate::tokenize) gives
/// them) occur in at least one indexed episode of the namespace, whatever the filter. The
/// share tells a query worded like the memory (most words known: the lexical list is
/// informative) from a paraphrase (many words the memory never used: it is blind to them),
/// and the fusion leans on the semantic list by that much
/// ([`RetrievalConfig::unknown_term_shift`](crate::RetrievalConfig::unknown_term_shift)).
///
/// ```
/// use memory_core::TextSearch;
/// let found = TextSearch { hits: Vec::new(), terms: 4, known_terms: 3 };
/// assert_eq!(found.known_share(), Some(0.75));
/// assert_eq!(TextSearch::default().known_share(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextSearch {
    /// The hits, best first, at most the query's limit.
    pub hits: Vec<TextHit>,
    /// Distinct terms of the query text.
    pub terms: u32,
    /// How many of them occur in the namespace's index.
    pub known_terms: u32,
}

impl TextSearch {
    /// The share of the query's terms the index knows; `None` for a query with no terms.
    pub fn known_share(&self) -> Option<f64> {
        (self.terms > 0)
            .then(|| f64::from(self.known_terms.min(self.terms)) / f64::from(self.terms))
    }
}

/// Which learned items to list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearnedQuery {
    /// Only items whose context is compatible with this task type (unset item fields match).
    pub task_type: Option<TaskType>,
    /// Only items compatible with this domain.
    pub domain: Option<String>,
    /// Only items compatible with this language.
    pub language: Option<String>,
    /// Only patterns of this kind (`tool_sequence`, ...); ignored for heuristics and lessons.
    pub kind: Option<String>,
    /// Include superseded, pruned and merged items.
    pub include_inactive: bool,
    /// Page size.
    pub limit: u32,
    /// Items to skip.
    pub offset: u32,
}

impl Default for LearnedQuery {
    fn default() -> Self {
        LearnedQuery {
            task_type: None,
            domain: None,
            language: None,
            kind: None,
            include_inactive: false,
            limit: 50,
            offset: 0,
        }
    }
}

impl LearnedQuery {
    /// True when the item passes the query: its context, status and (patterns) kind.
    pub fn matches<T: Learned>(&self, item: &T) -> bool {
        self.matches_context(item.context(), item.status().is_active())
            && self
                .kind
                .as_deref()
                .is_none_or(|k| item.subkind().is_none_or(|s| s == k))
    }

    /// True when an item with this context and status passes the query (kind aside).
    pub fn matches_context(&self, ctx: &ContextKey, active: bool) -> bool {
        (self.include_inactive || active)
            && ctx.matches(
                self.task_type,
                self.domain.as_deref(),
                self.language.as_deref(),
            )
    }
}

/// Counts of what a namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStats {
    /// Episodes, completed or not.
    pub episodes: u64,
    /// Completed episodes.
    pub completed: u64,
    /// Successful episodes.
    pub successes: u64,
    /// Stored steps.
    pub steps: u64,
    /// Patterns (all statuses).
    pub patterns: u64,
    /// Active patterns.
    pub active_patterns: u64,
    /// Heuristics (all statuses).
    pub heuristics: u64,
    /// Active heuristics.
    pub active_heuristics: u64,
    /// Failure lessons.
    pub lessons: u64,
    /// Feedback events.
    pub feedback: u64,
}

/// Completing an episode: its outcome, scores, and what it teaches, applied atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeCompletion {
    /// The episode.
    pub episode_id: EpisodeId,
    /// How it ended.
    pub outcome: Outcome,
    /// Its reward.
    pub reward: RewardScore,
    /// Its reflection.
    pub reflection: Reflection,
    /// When it was completed.
    pub completed_at: DateTime<Utc>,
    /// What it teaches.
    pub learning: LearningUpdate,
    /// Steps logged since the episode's steps were last appended, written in the same
    /// transaction, as [`EpisodeStore::append_steps`] writes them (keys already stored are
    /// skipped), so a completion is one transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ExecutionStep>,
    /// What actually happened (steps, duration, success), stored with the episode's estimate
    /// record by the same transaction when one was recorded and is still open; no estimate
    /// record is touched otherwise, or when this is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_actual: Option<EstimateActual>,
    /// How many steps the episode has once `steps` are stored, as the completing process knows
    /// it (the episode it started or read, plus the steps it logged since): the learning above
    /// was computed from those steps, without reading the episode back. When set and the
    /// store then holds another count (another writer added steps meanwhile), nothing is
    /// written and the call fails with [`Error::steps_changed`](crate::Error::steps_changed);
    /// the caller reads the episode and completes it again. `None` checks nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_steps: Option<u32>,
    /// The text of the episode's steps (all of them, `steps` included) that the store's
    /// full-text index holds for it: [`indexed_work_text`](crate::indexed_work_text).
    /// Step batches are not indexed as they are logged; this is written once, with the
    /// completion. Empty indexes nothing (a completion journaled by an earlier version).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub indexed_work: String,
}

/// Episodes: create, append steps, complete, read, list, search.
#[async_trait]
pub trait EpisodeStore: Send + Sync + Debug {
    /// Stores a new episode (with any steps it carries).
    ///
    /// Idempotent: storing an episode whose id already exists in the namespace changes nothing
    /// and returns `Ok` (a replay). Atomic.
    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()>;

    /// Appends steps to an in-progress episode, as rows (the episode is not rewritten).
    ///
    /// Numbers are assigned here, inside the write, as [`crate::episode::steps_to_append`] describes:
    /// after the highest number stored, in the order given, so writers that number steps
    /// from different copies of the episode never collide. Idempotent per step key: a key
    /// already stored is skipped (a retry or replay). Atomic per call. `NotFound` if the
    /// episode is not in the namespace; `Conflict` if it is completed.
    async fn append_steps(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()>;

    /// Appends the completion's `steps`, records the outcome, reward and reflection and merges
    /// the learning update (via [`LearningUpdate::apply`]), in one transaction.
    ///
    /// Returns `Ok(Some(changes))` when applied, `Ok(None)` when the episode was already
    /// completed (nothing changed: a replay is harmless). `NotFound` if the episode is absent.
    async fn complete_episode(
        &self,
        ns: &Namespace,
        completion: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>>;

    /// The episode with all its steps in order; `Ok(None)` if it is not in the namespace.
    /// Shared: a layer that holds the episode in memory hands out its allocation, not a copy.
    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Arc<Episode>>>;

    /// The episodes `ids` name, in their order (`None` for one not in the namespace): one
    /// round trip where the backend can, so a caller reading several (a recommendation reads
    /// the similar episodes it learns from) does not pay one per episode. The default reads
    /// them one by one.
    async fn get_episodes(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
    ) -> Result<Vec<Option<Arc<Episode>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get_episode(ns, *id).await?);
        }
        Ok(out)
    }

    /// A page of episode summaries, newest first.
    async fn query_episodes(
        &self,
        ns: &Namespace,
        query: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>>;

    /// Lexical search: hits best first, at most `query.limit`, and how many of the query's
    /// terms the namespace's index knows ([`TextSearch`]).
    async fn search_text(&self, ns: &Namespace, query: &TextQuery) -> Result<TextSearch>;

    /// The hits of [`EpisodeStore::search_text`] alone.
    async fn search_episodes(&self, ns: &Namespace, query: &TextQuery) -> Result<Vec<TextHit>> {
        Ok(self.search_text(ns, query).await?.hits)
    }

    /// Counts of the namespace's contents.
    async fn namespace_stats(&self, ns: &Namespace) -> Result<NamespaceStats>;

    /// Namespaces that hold at least one episode.
    async fn list_namespaces(&self) -> Result<Vec<Namespace>>;

    /// Cheap liveness check of the backend.
    async fn ping(&self) -> Result<()>;

    /// Brings a local copy up to date with its primary (embedded replicas); a no-op for
    /// backends without one.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Whether reading an episode depends on a server that can be unreachable while the
    /// process runs (a remote database, or the primary of an embedded replica).
    ///
    /// A tiered layer over such a store writes every step batch through to its cached copy of
    /// the in-progress episode, so that a process restarted during an outage can still read,
    /// and complete, an episode started before it. Over a store read from a local file it
    /// drops the cached copy instead: patching re-encodes the whole episode on every batch.
    /// Default `true`, the answer that keeps the outage guarantee.
    ///
    /// ```
    /// use memory_core::{EpisodeStore, InMemoryStorage};
    /// assert!(!InMemoryStorage::new().reads_need_a_server());
    /// ```
    fn reads_need_a_server(&self) -> bool {
        true
    }
}

/// Learned items: patterns, heuristics, lessons, feedback.
#[async_trait]
pub trait LearningStore: Send + Sync + Debug {
    /// Merges an update outside an episode completion (e.g. re-learning during import or
    /// consolidation), atomically. Not idempotent: each call adds its evidence.
    async fn apply_learning(
        &self,
        ns: &Namespace,
        update: &LearningUpdate,
    ) -> Result<LearnedChanges>;

    /// Replaces stored items verbatim (upsert by id), atomically. Idempotent.
    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()>;

    /// Writes each group's items only if every item the group read is still stored exactly
    /// as it was read (absent, for one read as absent); one transaction for all groups.
    /// Returns the indexes of the groups left unwritten because another writer changed one
    /// of their items meanwhile. Consolidation writes through this, so a completion that
    /// lands between a run's read and its write keeps its evidence. The condition key of
    /// every observed heuristic written (not a general rule) is then resolved again in the
    /// same transaction ([`crate::resolve_contradictions`] over its heuristics that are not
    /// pruned): merges, forwarded evidence and recomputed votes move ranks, and a completion's
    /// merge expects every key resolved ([`LearningUpdate::keys_needing_whole_group`]).
    async fn put_learned_unless_changed(
        &self,
        ns: &Namespace,
        groups: &[GuardedItems],
    ) -> Result<Vec<usize>>;

    /// A learned item by id; `Ok(None)` if the namespace holds none of that kind and id.
    async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>>;

    /// The learned items `ids` name (any kinds), in their order (`None` for one the
    /// namespace does not hold): one round trip where the backend can. The default reads them
    /// one by one through [`get_learned`](Self::get_learned), so a decorator that changes
    /// `get_learned` changes this too unless it forwards this method.
    async fn get_learned_many(
        &self,
        ns: &Namespace,
        ids: &[LearnedId],
    ) -> Result<Vec<Option<LearnedItem>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get_learned(ns, id).await?);
        }
        Ok(out)
    }

    /// A page of the learned items of `kind` compatible with the query's context: patterns and
    /// lessons most occurrences first, heuristics most support first (ties by id).
    async fn query_learned(
        &self,
        ns: &Namespace,
        kind: LearnedKind,
        query: &LearnedQuery,
    ) -> Result<Vec<LearnedItem>>;

    /// A pattern by id ([`get_learned`](Self::get_learned) of one kind).
    async fn get_pattern(&self, ns: &Namespace, id: &PatternId) -> Result<Option<Pattern>> {
        get_typed(self, ns, id).await
    }
    /// Patterns compatible with the query's context, most occurrences first.
    async fn query_patterns(&self, ns: &Namespace, query: &LearnedQuery) -> Result<Vec<Pattern>> {
        query_typed(self, ns, query).await
    }
    /// A heuristic by id.
    async fn get_heuristic(&self, ns: &Namespace, id: &HeuristicId) -> Result<Option<Heuristic>> {
        get_typed(self, ns, id).await
    }
    /// Heuristics compatible with the query's context, most support first.
    async fn query_heuristics(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<Heuristic>> {
        query_typed(self, ns, query).await
    }
    /// A lesson by id.
    async fn get_lesson(&self, ns: &Namespace, id: &LessonId) -> Result<Option<FailureLesson>> {
        get_typed(self, ns, id).await
    }
    /// Lessons compatible with the query's context, most occurrences first.
    async fn query_lessons(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<FailureLesson>> {
        query_typed(self, ns, query).await
    }

    /// Records feedback and updates the target's effectiveness (patterns) or votes
    /// (heuristics) from all its feedback events, atomically. One event per (target, episode):
    /// recording again replaces the earlier one, so a replay is harmless. `NotFound` if the
    /// target is absent. Votes move a heuristic's rank, so an observed heuristic's condition
    /// key is resolved again in the same transaction, as after
    /// [`LearningStore::put_learned_unless_changed`].
    async fn record_feedback(&self, ns: &Namespace, feedback: &Feedback) -> Result<()>;

    /// Feedback events of a target, oldest first.
    async fn list_feedback(&self, ns: &Namespace, target: &FeedbackTarget)
    -> Result<Vec<Feedback>>;
}

/// [`LearningStore::get_learned`] for one kind, typed.
pub async fn get_typed<T: Learned, S: LearningStore + ?Sized>(
    store: &S,
    ns: &Namespace,
    id: &T::Id,
) -> Result<Option<T>> {
    Ok(store
        .get_learned(ns, &T::learned_id(id))
        .await?
        .and_then(T::from_item))
}

/// [`LearningStore::query_learned`] for one kind, typed.
pub async fn query_typed<T: Learned, S: LearningStore + ?Sized>(
    store: &S,
    ns: &Namespace,
    query: &LearnedQuery,
) -> Result<Vec<T>> {
    Ok(store
        .query_learned(ns, T::KIND, query)
        .await?
        .into_iter()
        .filter_map(T::from_item)
        .collect())
}

/// Items written together by [`LearningStore::put_learned_unless_changed`], and what they
/// were when read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardedItems {
    /// Every item of the group as read: `None` for one that was absent.
    pub read: Vec<(LearnedId, Option<LearnedItem>)>,
    /// What to write when none of them changed.
    pub write: LearnedItems,
}

impl GuardedItems {
    /// True when `stored` (what the store holds now, in the order of [`GuardedItems::read`])
    /// is what was read.
    ///
    /// ```
    /// use memory_core::{GuardedItems, LearnedId, PatternId};
    /// let g = GuardedItems { read: vec![(LearnedId::Pattern(PatternId("p".into())), None)], ..GuardedItems::default() };
    /// assert!(g.unchanged(&[None]));
    /// ```
    pub fn unchanged(&self, stored: &[Option<LearnedItem>]) -> bool {
        stored.len() == self.read.len()
            && self
                .read
                .iter()
                .zip(stored)
                .all(|((_, read), now)| read == now)
    }
}

/// Items written verbatim by [`LearningStore::put_learned`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedItems {
    /// Patterns.
    pub patterns: Vec<Pattern>,
    /// Heuristics.
    pub heuristics: Vec<Heuristic>,
    /// Lessons.
    pub lessons: Vec<FailureLesson>,
}

impl LearnedItems {
    /// Adds `item` to the list of its kind.
    pub fn push(&mut self, item: LearnedItem) {
        match item {
            LearnedItem::Pattern(p) => self.patterns.push(p),
            LearnedItem::Heuristic(h) => self.heuristics.push(h),
            LearnedItem::Lesson(l) => self.lessons.push(l),
        }
    }
}

/// A stored embedding with the summary of its episode: what the in-process vector index loads
/// (the summary carries the fields its filters and re-ranking use).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    /// The episode.
    pub summary: EpisodeSummary,
    /// Its vector (L2-normalized by the embedder).
    pub vector: Vec<f32>,
}

/// How far a namespace's episodes are embedded for one model: two counts and the newest
/// episode id, which tell in one cheap read whether the "needs embedding" queue is empty
/// (every embedding belongs to a stored episode, one per episode and model, so equal counts
/// mean every episode has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddingCoverage {
    /// Episodes in the namespace.
    pub episodes: u64,
    /// Of them, embedded for the model.
    pub embedded: u64,
    /// The newest (largest) episode id, if any.
    pub last_episode: Option<EpisodeId>,
}

impl EmbeddingCoverage {
    /// True when every episode has an embedding for the model.
    pub fn complete(&self) -> bool {
        self.embedded >= self.episodes
    }
}

/// The largest index snapshot a backend stores: a namespace of about 1.5 million episodes
/// (some 650 bytes each at 384 dimensions: the int8 codes, the summary and its postings; a
/// million took 0.65 GB, over the 512 MiB this was before). Larger snapshots are refused
/// with `InvalidInput`; the index then loads from the embeddings as it would without one,
/// and the process tries again only after a twentieth of the namespace changed.
pub const MAX_INDEX_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;

/// `InvalidInput` when an index snapshot of `len` bytes is over [`MAX_INDEX_SNAPSHOT_BYTES`].
///
/// ```
/// use memory_core::{MAX_INDEX_SNAPSHOT_BYTES, check_index_snapshot_size};
/// assert!(check_index_snapshot_size(MAX_INDEX_SNAPSHOT_BYTES).is_ok());
/// assert!(check_index_snapshot_size(MAX_INDEX_SNAPSHOT_BYTES + 1).is_err());
/// ```
pub fn check_index_snapshot_size(len: usize) -> Result<()> {
    if len > MAX_INDEX_SNAPSHOT_BYTES {
        return Err(Error::invalid(
            "index_snapshot",
            format!("{len} bytes is over the limit of {MAX_INDEX_SNAPSHOT_BYTES}"),
        ));
    }
    Ok(())
}

/// What changed among a namespace's indexed episodes after a position of its change log.
///
/// The log records every change to an embedding (any model) and to the summary of an episode
/// that has an embedding; each entry names the episode only, and this reports the episode's
/// state when it was read, so applying it is idempotent and a reader that applies pages in
/// order converges on the stored data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexChanges {
    /// Changed episodes that have an embedding for the model: their current summary and
    /// vector.
    pub upserts: Vec<StoredEmbedding>,
    /// Changed episodes with no embedding for the model (any more).
    pub removed: Vec<EpisodeId>,
    /// The log position this page runs through: pass it as `after` for the next page. Equal
    /// to `after` when nothing changed.
    pub through: u64,
    /// Whether to read another page: the page was full, so the log may hold entries after
    /// `through` (the next page may then be empty). False when the log held none after it.
    pub more: bool,
}

/// A persisted image of a namespace's in-process index (opaque bytes to storage), with the
/// change-log position it reflects: every change up to `as_of` is in it, so loading it and
/// applying [`IndexChanges`] after `as_of` gives the stored state without reading every
/// embedding.
///
/// The bytes are held in parts, in order: a backend may store and return them split
/// differently from how it was given them (two snapshots are equal when their bytes are), so
/// a large image is never joined into one buffer on its way from storage to the decoder.
///
/// ```
/// use memory_core::IndexSnapshot;
/// let whole = IndexSnapshot::new(7, vec![1, 2, 3]);
/// let split = IndexSnapshot { as_of: 7, parts: vec![vec![1], vec![2, 3]] };
/// assert_eq!(whole, split);
/// assert_eq!(split.len(), 3);
/// assert_eq!(split.pieces(2), vec![vec![1, 2], vec![3]]);
/// assert!(IndexSnapshot::new(0, Vec::new()).pieces(2).is_empty());
/// ```
#[derive(Debug, Clone, Eq)]
pub struct IndexSnapshot {
    /// The change-log position the image reflects.
    pub as_of: u64,
    /// The encoded index, in order.
    pub parts: Vec<Vec<u8>>,
}

impl IndexSnapshot {
    /// A snapshot of one buffer.
    pub fn new(as_of: u64, data: Vec<u8>) -> Self {
        IndexSnapshot {
            as_of,
            parts: vec![data],
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    /// True when it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes in `size`-byte pieces (the last may be shorter; none when it is empty), across
    /// part boundaries: how a backend with a row-size limit stores it.
    pub fn pieces(&self, size: usize) -> Vec<Vec<u8>> {
        let size = size.max(1);
        let total = self.len();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for part in &self.parts {
            let mut rest = part.as_slice();
            while !rest.is_empty() {
                let room = match out.last() {
                    Some(piece) if piece.len() < size => size - piece.len(),
                    _ => {
                        out.push(Vec::with_capacity(size.min(total)));
                        size
                    }
                };
                let (head, tail) = rest.split_at(room.min(rest.len()));
                if let Some(piece) = out.last_mut() {
                    piece.extend_from_slice(head);
                }
                rest = tail;
            }
        }
        out
    }
}

impl PartialEq for IndexSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.as_of == other.as_of
            && self.len() == other.len()
            && self.parts.iter().flatten().eq(other.parts.iter().flatten())
    }
}

/// Embeddings of episodes, one per (episode, model).
#[async_trait]
pub trait EmbeddingStore: Send + Sync + Debug {
    /// Stores or replaces an embedding. Idempotent. `NotFound` if the episode is absent.
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()>;
    /// An embedding, if stored.
    async fn get_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>>;
    /// Episodes with no embedding for `model`, oldest (smallest id) first, starting after
    /// `after` (from the first when `None`): the durable "needs embedding" queue (it is derived
    /// from the data, so it survives restarts). The cursor lets a drain page through a large
    /// backlog without rescanning what it has embedded.
    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>>;
    /// A page of the namespace's embeddings for `model` with their episodes' summaries, in
    /// episode-id order, starting after `after` (from the first when `None`).
    async fn scan_embeddings(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<StoredEmbedding>>;
    /// How many of the namespace's episodes have an embedding for `model`, and the newest
    /// episode id: a count, not a scan of the queue.
    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage>;
    /// The newest position of the namespace's index change log (0 when it is empty). Read it
    /// before a full [`scan_embeddings`](Self::scan_embeddings): the changes after it bring
    /// the scanned state up to date.
    async fn index_log_head(&self, ns: &Namespace) -> Result<u64>;
    /// Up to `limit` entries of the namespace's index change log after `after`, as the
    /// current state of the episodes they name (see [`IndexChanges`]).
    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges>;
    /// The stored index snapshot for `model`, if any.
    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>>;
    /// Stores or replaces the index snapshot for `model`. `InvalidInput` over
    /// [`MAX_INDEX_SNAPSHOT_BYTES`].
    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()>;
}

/// Consolidation bookkeeping: run records, metrics snapshots, estimate records, restore records
/// and retention's step compaction.
#[async_trait]
pub trait MaintenanceStore: Send + Sync + Debug {
    /// Records a finished consolidation run. Idempotent by `run.id` (a replay replaces the row
    /// with the same content).
    async fn record_consolidation(&self, ns: &Namespace, run: &ConsolidationRun) -> Result<()>;

    /// Records `run` as started, only if no run of `ns` started after `not_before` (another
    /// process's included); true when recorded, and the caller then owns the run and records
    /// its result under the same id. An atomic check-and-insert: of processes claiming at
    /// once, one wins.
    async fn claim_consolidation(
        &self,
        ns: &Namespace,
        run: &ConsolidationRun,
        not_before: DateTime<Utc>,
    ) -> Result<bool>;

    /// The namespace's most recent runs, newest (by start) first, at most `limit`.
    async fn list_consolidations(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ConsolidationRun>>;

    /// Stores a metrics snapshot. Idempotent by `snapshot.taken_at` (one per instant: a later
    /// write at the same instant replaces it).
    async fn put_metrics_snapshot(&self, ns: &Namespace, snapshot: &MetricsSnapshot) -> Result<()>;

    /// The namespace's most recent snapshots, newest first, at most `limit`.
    async fn list_metrics_snapshots(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<MetricsSnapshot>>;

    /// Stores or replaces the estimate record of an episode. Idempotent. `NotFound` if the
    /// episode is not in the namespace.
    async fn put_estimate(&self, ns: &Namespace, record: &EstimateRecord) -> Result<()>;

    /// The estimate record of an episode; `Ok(None)` if none was recorded.
    async fn get_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>>;

    /// Estimate records that have actuals, most recently completed first, at most `limit`;
    /// only the domain's when `domain` is set.
    async fn query_estimates(
        &self,
        ns: &Namespace,
        domain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EstimateRecord>>;

    /// Records that a pruned item was restored (the latest restore per item is kept).
    /// Idempotent.
    async fn record_restore(&self, ns: &Namespace, restore: &RestoreRecord) -> Result<()>;

    /// Restores recorded at or after `since`.
    async fn list_restores(
        &self,
        ns: &Namespace,
        since: DateTime<Utc>,
    ) -> Result<Vec<RestoreRecord>>;

    /// Retention: empties the output text of the successful steps of up to `max_episodes`
    /// successful episodes completed before `completed_before` that still have non-empty
    /// outputs (oldest completions first). The full-text index holds no such output (see
    /// [`indexed_work_text`](crate::indexed_work_text)), except in a store written before
    /// 11-27, whose per-batch step rows a backend replaces here. Everything
    /// else of the episode stays. Atomic; idempotent (a compacted output is empty, so a second
    /// call finds nothing).
    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction>;

    /// Deletes those of `ids` that are patterns merged into another (status `merged`) holding
    /// no evidence (no occurrences; their counts moved to the survivor) and no feedback
    /// events; any other id is left as it is (a pattern that got evidence or feedback since the
    /// caller looked keeps its row). Returns how many rows went. Atomic; idempotent.
    /// Consolidation calls it only for rows no other merged row points into, so merge chains
    /// stay whole.
    async fn compact_merged_patterns(&self, ns: &Namespace, ids: &[PatternId]) -> Result<u64>;

    /// Deletes those of `rows` (a pattern id and the time it was pruned) that are patterns
    /// with status `pruned`, no evidence since that time (`last_seen` at or before it) and no
    /// feedback events; any other row is left as it is (a pattern seen again since the
    /// caller looked, which the next run revives, keeps its row). Returns how many rows
    /// went. Atomic; idempotent. Consolidation calls it only for rows pruned more than
    /// `pruned_rows_kept_days` ago that no merged row points into.
    async fn compact_pruned_patterns(
        &self,
        ns: &Namespace,
        rows: &[(PatternId, DateTime<Utc>)],
    ) -> Result<u64>;
}

/// One changed object from a backend's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The feed position of the write that last changed it.
    pub seq: u64,
    /// Its namespace.
    pub namespace: Namespace,
    /// Which object.
    pub key: crate::storage::CacheKey,
}

/// What changed in a backend after a feed position (see [`Storage::changes_since`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeSet {
    /// The identity of the database: it changes when a backup is restored over it, and a
    /// position is meaningless across identities.
    pub database: String,
    /// The feed's position when read: every write up to it is reflected in `changes`.
    pub head: u64,
    /// Cacheable objects (episodes, patterns, heuristics) last changed after the position
    /// asked for, oldest change first. A backend may leave it empty when every position
    /// after the one asked for is in `own` (a reader drops nothing then), or when asked for
    /// none (`limit` 0: the head only).
    pub changes: Vec<Change>,
    /// More objects changed than were asked for: `changes` is cut, and a reader should drop
    /// everything it holds.
    pub truncated: bool,
    /// Positions after the one asked for (up to `head`) that writes through this handle
    /// took. A position in the range that is not listed was taken by another writer.
    pub own: Vec<u64>,
}

/// A complete backend.
#[async_trait]
pub trait Storage: EpisodeStore + LearningStore + EmbeddingStore + MaintenanceStore {
    /// A short backend name for logs and health output.
    fn backend_name(&self) -> &'static str;

    /// Whether a write may have been committed (by anyone) since the previous call: `false`
    /// only when certainly nothing was. Cheap: tiered storage asks before every cached read.
    /// Backends without a change feed answer `true`.
    async fn may_have_changed(&self) -> Result<bool> {
        Ok(true)
    }

    /// The objects changed after feed position `after` (at most `limit`), for caches kept by
    /// several processes or machines over one database. `Ok(None)`: this backend has no
    /// change feed (it is private to one process, and a cache over it needs none).
    async fn changes_since(&self, after: u64, limit: u32) -> Result<Option<ChangeSet>> {
        let _ = (after, limit);
        Ok(None)
    }
}
