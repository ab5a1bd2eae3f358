//! [`Withholding`]: a storage decorator that hides kinds of learned items from every read, so
//! an ablated arm of the learning evaluation really runs without them: not in the
//! recommendation, not in the playbook, not in any ranking that reads them.
//!
//! Writes pass through unchanged (the memory still learns everything); only reads of the
//! withheld kinds come back empty.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use memory_core::Namespace;
use memory_core::Result;
use memory_core::{
    ConsolidationRun, EstimateRecord, MetricsSnapshot, RestoreRecord, StepCompaction,
};
use memory_core::{
    EmbeddingCoverage, EmbeddingStore, EpisodeCompletion, EpisodeQuery, EpisodeStore, IndexChanges,
    IndexSnapshot, LearnedItems, LearnedQuery, LearningStore, MaintenanceStore, NamespaceStats,
    Storage, StoredEmbedding, TextHit, TextQuery,
};
use memory_core::{Episode, EpisodeId, EpisodeSummary, ExecutionStep};
use memory_core::{FailureLesson, LessonId};
use memory_core::{Feedback, FeedbackTarget};
use memory_core::{Heuristic, HeuristicId};
use memory_core::{LearnedChanges, LearningUpdate};
use memory_core::{Pattern, PatternId};

/// Which learned items reads return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible {
    /// Patterns (tool sequences, decision points, error recoveries, context statistics).
    pub patterns: bool,
    /// Heuristics.
    pub heuristics: bool,
    /// Failure lessons.
    pub lessons: bool,
}

impl Visible {
    /// Everything visible.
    pub const ALL: Visible = Visible {
        patterns: true,
        heuristics: true,
        lessons: true,
    };
}

/// Forwards every call to `inner`, except that reads of withheld learned items return nothing.
#[derive(Debug)]
pub struct Withholding<S: ?Sized> {
    visible: Visible,
    inner: std::sync::Arc<S>,
}

impl<S: Storage + ?Sized> Withholding<S> {
    /// Wraps `inner`, showing only the `visible` kinds of learned items.
    pub fn new(inner: std::sync::Arc<S>, visible: Visible) -> Self {
        Withholding { visible, inner }
    }
}

#[async_trait]
impl<S: Storage + ?Sized> EpisodeStore for Withholding<S> {
    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        self.inner.create_episode(ns, episode).await
    }
    async fn append_steps(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()> {
        self.inner.append_steps(ns, id, steps).await
    }
    async fn complete_episode(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>> {
        self.inner.complete_episode(ns, c).await
    }
    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Episode>> {
        self.inner.get_episode(ns, id).await
    }
    async fn query_episodes(
        &self,
        ns: &Namespace,
        q: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>> {
        self.inner.query_episodes(ns, q).await
    }
    async fn search_episodes(&self, ns: &Namespace, q: &TextQuery) -> Result<Vec<TextHit>> {
        self.inner.search_episodes(ns, q).await
    }
    async fn namespace_stats(&self, ns: &Namespace) -> Result<NamespaceStats> {
        self.inner.namespace_stats(ns).await
    }
    async fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        self.inner.list_namespaces().await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
}

#[async_trait]
impl<S: Storage + ?Sized> LearningStore for Withholding<S> {
    async fn apply_learning(&self, ns: &Namespace, u: &LearningUpdate) -> Result<LearnedChanges> {
        self.inner.apply_learning(ns, u).await
    }
    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        self.inner.put_learned(ns, items).await
    }
    async fn get_pattern(&self, ns: &Namespace, id: &PatternId) -> Result<Option<Pattern>> {
        if !self.visible.patterns {
            return Ok(None);
        }
        self.inner.get_pattern(ns, id).await
    }
    async fn query_patterns(&self, ns: &Namespace, q: &LearnedQuery) -> Result<Vec<Pattern>> {
        if !self.visible.patterns {
            return Ok(Vec::new());
        }
        self.inner.query_patterns(ns, q).await
    }
    async fn get_heuristic(&self, ns: &Namespace, id: &HeuristicId) -> Result<Option<Heuristic>> {
        if !self.visible.heuristics {
            return Ok(None);
        }
        self.inner.get_heuristic(ns, id).await
    }
    async fn query_heuristics(&self, ns: &Namespace, q: &LearnedQuery) -> Result<Vec<Heuristic>> {
        if !self.visible.heuristics {
            return Ok(Vec::new());
        }
        self.inner.query_heuristics(ns, q).await
    }
    async fn get_lesson(&self, ns: &Namespace, id: &LessonId) -> Result<Option<FailureLesson>> {
        if !self.visible.lessons {
            return Ok(None);
        }
        self.inner.get_lesson(ns, id).await
    }
    async fn query_lessons(&self, ns: &Namespace, q: &LearnedQuery) -> Result<Vec<FailureLesson>> {
        if !self.visible.lessons {
            return Ok(Vec::new());
        }
        self.inner.query_lessons(ns, q).await
    }
    async fn record_feedback(&self, ns: &Namespace, f: &Feedback) -> Result<()> {
        self.inner.record_feedback(ns, f).await
    }
    async fn list_feedback(&self, ns: &Namespace, t: &FeedbackTarget) -> Result<Vec<Feedback>> {
        self.inner.list_feedback(ns, t).await
    }
}

#[async_trait]
impl<S: Storage + ?Sized> EmbeddingStore for Withholding<S> {
    async fn put_embedding(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        self.inner.put_embedding(ns, id, model, vector).await
    }
    async fn get_embedding(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        self.inner.get_embedding(ns, id, model).await
    }
    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>> {
        self.inner
            .episodes_missing_embedding(ns, model, after, limit)
            .await
    }
    async fn scan_embeddings(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<StoredEmbedding>> {
        self.inner.scan_embeddings(ns, model, after, limit).await
    }
    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage> {
        self.inner.embedding_coverage(ns, model).await
    }
    async fn index_log_head(&self, ns: &Namespace) -> Result<u64> {
        self.inner.index_log_head(ns).await
    }
    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges> {
        self.inner.index_changes(ns, model, after, limit).await
    }
    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>> {
        self.inner.get_index_snapshot(ns, model).await
    }
    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()> {
        self.inner.put_index_snapshot(ns, model, snapshot).await
    }
}

/// Consolidation's bookkeeping passes through unchanged (it holds no learned advice).
#[async_trait]
impl<S: Storage + ?Sized> MaintenanceStore for Withholding<S> {
    async fn record_consolidation(&self, ns: &Namespace, run: &ConsolidationRun) -> Result<()> {
        self.inner.record_consolidation(ns, run).await
    }

    async fn list_consolidations(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ConsolidationRun>> {
        self.inner.list_consolidations(ns, limit).await
    }

    async fn put_metrics_snapshot(&self, ns: &Namespace, snapshot: &MetricsSnapshot) -> Result<()> {
        self.inner.put_metrics_snapshot(ns, snapshot).await
    }

    async fn list_metrics_snapshots(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<MetricsSnapshot>> {
        self.inner.list_metrics_snapshots(ns, limit).await
    }

    async fn put_estimate(&self, ns: &Namespace, record: &EstimateRecord) -> Result<()> {
        self.inner.put_estimate(ns, record).await
    }

    async fn get_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>> {
        self.inner.get_estimate(ns, episode_id).await
    }

    async fn query_estimates(
        &self,
        ns: &Namespace,
        domain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EstimateRecord>> {
        self.inner.query_estimates(ns, domain, limit).await
    }

    async fn record_restore(&self, ns: &Namespace, restore: &RestoreRecord) -> Result<()> {
        self.inner.record_restore(ns, restore).await
    }

    async fn list_restores(
        &self,
        ns: &Namespace,
        since: DateTime<Utc>,
    ) -> Result<Vec<RestoreRecord>> {
        self.inner.list_restores(ns, since).await
    }

    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction> {
        self.inner
            .compact_step_outputs(ns, completed_before, max_episodes)
            .await
    }
}

impl<S: Storage + ?Sized> Storage for Withholding<S> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}
