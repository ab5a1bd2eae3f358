//! The storage traits and the query types they take.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::erasure::{Erasure, ErasureReport, ForgetRecord};
use super::index_data::{EmbeddingCoverage, IndexChanges, IndexSnapshot, StoredEmbedding};
use super::queries::{
    EpisodeCompletion, EpisodeQuery, LearnedQuery, NamespaceStats, QuotaUsage, TextQuery,
    TextSearch,
};
use crate::episode::{Episode, EpisodeId, EpisodeSummary, ExecutionStep};
use crate::error::Result;
use crate::learned::{
    FailureLesson, Feedback, FeedbackTarget, Heuristic, LearnedId, LearnedItem, LearnedKind,
    Pattern, PatternId,
};
use crate::learning::{LearnedChanges, LearningUpdate};
use crate::namespace::Namespace;
use crate::records::{
    ConsolidationRun, EstimateRecord, MetricsSnapshot, RestoreRecord, StepCompaction,
};

/// Episodes: create, append steps, complete, read, list, search.
#[async_trait]
pub trait EpisodeStore: Send + Sync + Debug {
    /// Stores a new episode (with any steps it carries).
    ///
    /// Idempotent: storing an episode whose id already exists in the namespace changes nothing
    /// and returns `Ok` (a replay). Atomic. The id of an episode the namespace forgot is
    /// refused ([`crate::Error::forgotten`]), and nothing is stored.
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

    /// Forgets episodes, in one transaction: each one's row, steps, tags, full-text rows,
    /// embeddings, the feedback events given in it and its estimate are removed, and what its
    /// completion taught is taken out of the learned items ([`LearningUpdate::unapply`]: the
    /// counts become those of a store that never recorded it, an item only it taught is
    /// removed). An audit record per episode remains ([`ForgetRecord`]: id, time, reason).
    /// Stored images of the namespace's vector index are dropped (they hold the episodes'
    /// summaries) and rebuilt at the next load.
    ///
    /// An episode the namespace does not hold is reported `missing`. A forgotten id is never
    /// stored again: a later `create_episode` of it (a start replayed from a journal, an
    /// import) changes nothing and fails with [`crate::Error::forgotten`]. `Conflict` ([`crate::Error::is_steps_changed`]) when an episode holds another
    /// step count than [`crate::ForgetEpisode::expected_steps`], or was completed though `learning`
    /// is `None`: nothing is written, and the caller reads the episodes again.
    async fn forget_episodes(&self, ns: &Namespace, erasure: &Erasure) -> Result<ErasureReport>;

    /// The audit records of the namespace's forgotten episodes, newest first, at most `limit`.
    async fn forgotten_episodes(&self, ns: &Namespace, limit: u32) -> Result<Vec<ForgetRecord>>;

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

    /// Counts of the namespace's contents.
    async fn namespace_stats(&self, ns: &Namespace) -> Result<NamespaceStats>;

    /// Namespaces that hold at least one episode.
    async fn list_namespaces(&self) -> Result<Vec<Namespace>>;

    /// Cheap liveness check of the backend.
    async fn ping(&self) -> Result<()>;

    /// Whether the backend answers a trivial request within `deadline`, asked on a path that
    /// does not queue behind this process's own calls where the backend has one (a fresh
    /// connection). The tiered layer asks it while a call runs long, to tell a slow call from
    /// a server that stopped answering. The default is [`EpisodeStore::ping`] under the
    /// deadline.
    async fn answers_within(&self, deadline: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(deadline, self.ping()).await,
            Ok(Ok(()))
        )
    }

    /// The namespace's episode and step counts for its quotas. The default reads
    /// [`EpisodeStore::namespace_stats`]; a tiered layer answers from the last counts it kept
    /// plus what it journaled while the durable layer is unreachable ([`QuotaUsage::estimated`]).
    async fn quota_usage(&self, ns: &Namespace) -> Result<QuotaUsage> {
        let stats = self.namespace_stats(ns).await?;
        Ok(QuotaUsage {
            episodes: stats.episodes,
            steps: stats.steps,
            estimated: false,
        })
    }

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
    /// [`MAX_INDEX_SNAPSHOT_BYTES`](super::MAX_INDEX_SNAPSHOT_BYTES).
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

    /// Deletes every row the namespace holds but the audit records of its forgotten episodes:
    /// learned items (with their feedback), consolidation runs, metrics snapshots, estimates,
    /// restore records, index snapshots and its full-text statistics; returns the rows removed
    /// per kind. Atomic. `Conflict` while the namespace holds an episode: forget them first
    /// ([`EpisodeStore::forget_episodes`] takes their evidence out properly), so this only
    /// clears what no episode stands behind.
    async fn purge_namespace(&self, ns: &Namespace) -> Result<BTreeMap<String, u64>>;
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
