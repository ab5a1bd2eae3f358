//! A storage wrapper that injects failures, for testing resilience.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use memory_core::Namespace;
use memory_core::{
    ConsolidationRun, EstimateRecord, MetricsSnapshot, RestoreRecord, StepCompaction,
};
use memory_core::{
    EmbeddingCoverage, EmbeddingStore, EpisodeCompletion, EpisodeQuery, EpisodeStore, IndexChanges,
    IndexSnapshot, LearnedItems, LearnedQuery, LearningStore, MaintenanceStore, NamespaceStats,
    Storage, StoredEmbedding, TextHit, TextQuery,
};
use memory_core::{Episode, EpisodeId, EpisodeSummary, ExecutionStep};
use memory_core::{Error, Result};
use memory_core::{FailureLesson, LessonId};
use memory_core::{Feedback, FeedbackTarget};
use memory_core::{Heuristic, HeuristicId};
use memory_core::{LearnedChanges, LearningUpdate};
use memory_core::{Pattern, PatternId};

/// When [`FaultInjecting`] fails a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultMode {
    /// Never: a transparent wrapper.
    Never,
    /// Every call.
    Always,
    /// Every call after the first `n` succeed.
    FailAfter(u64),
    /// Each call independently with probability `ratio`, from a seeded generator.
    Ratio {
        /// Probability of failure in [0, 1].
        ratio: f64,
        /// Seed, for reproducible runs.
        seed: u64,
    },
}

/// Wraps a backend and fails calls according to a [`FaultMode`], before they reach the backend
/// (so a failed call changed nothing). Failures are [`Error::Storage`] with backend `fault`,
/// transient or permanent as configured.
#[derive(Debug)]
pub struct FaultInjecting<S: ?Sized> {
    inner: Arc<S>,
    mode: Mutex<(FaultMode, StdRng)>,
    transient: std::sync::atomic::AtomicBool,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl<S: ?Sized> FaultInjecting<S> {
    /// Wraps `inner` (any backend, including an `Arc<dyn Storage>`); injected failures are
    /// transient.
    pub fn new(inner: Arc<S>, mode: FaultMode) -> Self {
        let seed = match mode {
            FaultMode::Ratio { seed, .. } => seed,
            _ => 0,
        };
        FaultInjecting {
            inner,
            mode: Mutex::new((mode, StdRng::seed_from_u64(seed))),
            transient: std::sync::atomic::AtomicBool::new(true),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Makes injected failures permanent (not transient) instead.
    #[must_use]
    pub fn permanent(self) -> Self {
        self.set_transient(false);
        self
    }

    /// Makes the failures injected from now on transient (true) or permanent (false).
    pub fn set_transient(&self, transient: bool) {
        self.transient.store(transient, Ordering::SeqCst);
    }

    /// Changes the mode (e.g. `Always` to simulate an outage, `Never` to heal). Resets the
    /// call count that `FailAfter` counts from.
    pub fn set_mode(&self, mode: FaultMode) {
        let seed = match mode {
            FaultMode::Ratio { seed, .. } => seed,
            _ => 0,
        };
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) =
            (mode, StdRng::seed_from_u64(seed));
        self.calls.store(0, Ordering::SeqCst);
    }

    /// Calls seen since the last mode change.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Checks, then runs `fut` (which only starts when awaited, so a failed check changes
    /// nothing).
    async fn checked<T>(
        &self,
        operation: &'static str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.check(operation)?;
        fut.await
    }

    fn check(&self, operation: &'static str) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = {
            let mut guard = self.mode.lock().unwrap_or_else(PoisonError::into_inner);
            let (mode, rng) = &mut *guard;
            match *mode {
                FaultMode::Never => false,
                FaultMode::Always => true,
                FaultMode::FailAfter(k) => n >= k,
                FaultMode::Ratio { ratio, .. } => rng.random::<f64>() < ratio,
            }
        };
        if fail {
            self.injected.fetch_add(1, Ordering::SeqCst);
            Err(Error::storage(
                "fault",
                operation,
                self.transient.load(Ordering::SeqCst),
                "injected fault",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl<S: Storage + ?Sized> MaintenanceStore for FaultInjecting<S> {
    async fn record_consolidation(&self, ns: &Namespace, run: &ConsolidationRun) -> Result<()> {
        self.checked(
            "record_consolidation",
            self.inner.record_consolidation(ns, run),
        )
        .await
    }

    async fn list_consolidations(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ConsolidationRun>> {
        self.checked(
            "list_consolidations",
            self.inner.list_consolidations(ns, limit),
        )
        .await
    }

    async fn put_metrics_snapshot(&self, ns: &Namespace, snapshot: &MetricsSnapshot) -> Result<()> {
        self.checked(
            "put_metrics_snapshot",
            self.inner.put_metrics_snapshot(ns, snapshot),
        )
        .await
    }

    async fn list_metrics_snapshots(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<MetricsSnapshot>> {
        self.checked(
            "list_metrics_snapshots",
            self.inner.list_metrics_snapshots(ns, limit),
        )
        .await
    }

    async fn put_estimate(&self, ns: &Namespace, record: &EstimateRecord) -> Result<()> {
        self.checked("put_estimate", self.inner.put_estimate(ns, record))
            .await
    }

    async fn get_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>> {
        self.checked("get_estimate", self.inner.get_estimate(ns, episode_id))
            .await
    }

    async fn query_estimates(
        &self,
        ns: &Namespace,
        domain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EstimateRecord>> {
        self.checked(
            "query_estimates",
            self.inner.query_estimates(ns, domain, limit),
        )
        .await
    }

    async fn record_restore(&self, ns: &Namespace, restore: &RestoreRecord) -> Result<()> {
        self.checked("record_restore", self.inner.record_restore(ns, restore))
            .await
    }

    async fn list_restores(
        &self,
        ns: &Namespace,
        since: DateTime<Utc>,
    ) -> Result<Vec<RestoreRecord>> {
        self.checked("list_restores", self.inner.list_restores(ns, since))
            .await
    }

    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction> {
        self.checked(
            "compact_step_outputs",
            self.inner
                .compact_step_outputs(ns, completed_before, max_episodes),
        )
        .await
    }
}

#[async_trait]
impl<S: Storage + ?Sized> EpisodeStore for FaultInjecting<S> {
    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        self.check("create_episode")?;
        self.inner.create_episode(ns, episode).await
    }
    async fn append_steps(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()> {
        self.check("append_steps")?;
        self.inner.append_steps(ns, id, steps).await
    }
    async fn complete_episode(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>> {
        self.check("complete_episode")?;
        self.inner.complete_episode(ns, c).await
    }
    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Episode>> {
        self.check("get_episode")?;
        self.inner.get_episode(ns, id).await
    }
    async fn query_episodes(
        &self,
        ns: &Namespace,
        q: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>> {
        self.check("query_episodes")?;
        self.inner.query_episodes(ns, q).await
    }
    async fn search_episodes(&self, ns: &Namespace, q: &TextQuery) -> Result<Vec<TextHit>> {
        self.check("search_episodes")?;
        self.inner.search_episodes(ns, q).await
    }
    async fn namespace_stats(&self, ns: &Namespace) -> Result<NamespaceStats> {
        self.check("namespace_stats")?;
        self.inner.namespace_stats(ns).await
    }
    async fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        self.check("list_namespaces")?;
        self.inner.list_namespaces().await
    }
    async fn ping(&self) -> Result<()> {
        self.check("ping")?;
        self.inner.ping().await
    }
    async fn sync(&self) -> Result<()> {
        self.check("sync")?;
        self.inner.sync().await
    }
}

#[async_trait]
impl<S: Storage + ?Sized> LearningStore for FaultInjecting<S> {
    async fn apply_learning(&self, ns: &Namespace, u: &LearningUpdate) -> Result<LearnedChanges> {
        self.check("apply_learning")?;
        self.inner.apply_learning(ns, u).await
    }
    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        self.check("put_learned")?;
        self.inner.put_learned(ns, items).await
    }
    async fn get_pattern(&self, ns: &Namespace, id: &PatternId) -> Result<Option<Pattern>> {
        self.check("get_pattern")?;
        self.inner.get_pattern(ns, id).await
    }
    async fn query_patterns(&self, ns: &Namespace, q: &LearnedQuery) -> Result<Vec<Pattern>> {
        self.check("query_patterns")?;
        self.inner.query_patterns(ns, q).await
    }
    async fn get_heuristic(&self, ns: &Namespace, id: &HeuristicId) -> Result<Option<Heuristic>> {
        self.check("get_heuristic")?;
        self.inner.get_heuristic(ns, id).await
    }
    async fn query_heuristics(&self, ns: &Namespace, q: &LearnedQuery) -> Result<Vec<Heuristic>> {
        self.check("query_heuristics")?;
        self.inner.query_heuristics(ns, q).await
    }
    async fn get_lesson(&self, ns: &Namespace, id: &LessonId) -> Result<Option<FailureLesson>> {
        self.check("get_lesson")?;
        self.inner.get_lesson(ns, id).await
    }
    async fn query_lessons(&self, ns: &Namespace, q: &LearnedQuery) -> Result<Vec<FailureLesson>> {
        self.check("query_lessons")?;
        self.inner.query_lessons(ns, q).await
    }
    async fn record_feedback(&self, ns: &Namespace, f: &Feedback) -> Result<()> {
        self.check("record_feedback")?;
        self.inner.record_feedback(ns, f).await
    }
    async fn list_feedback(&self, ns: &Namespace, t: &FeedbackTarget) -> Result<Vec<Feedback>> {
        self.check("list_feedback")?;
        self.inner.list_feedback(ns, t).await
    }
}

#[async_trait]
impl<S: Storage + ?Sized> EmbeddingStore for FaultInjecting<S> {
    async fn put_embedding(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        model: &str,
        v: &[f32],
    ) -> Result<()> {
        self.check("put_embedding")?;
        self.inner.put_embedding(ns, id, model, v).await
    }
    async fn get_embedding(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        self.check("get_embedding")?;
        self.inner.get_embedding(ns, id, model).await
    }
    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>> {
        self.check("episodes_missing_embedding")?;
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
        self.check("scan_embeddings")?;
        self.inner.scan_embeddings(ns, model, after, limit).await
    }
    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage> {
        self.check("embedding_coverage")?;
        self.inner.embedding_coverage(ns, model).await
    }
    async fn index_log_head(&self, ns: &Namespace) -> Result<u64> {
        self.check("index_log_head")?;
        self.inner.index_log_head(ns).await
    }
    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges> {
        self.check("index_changes")?;
        self.inner.index_changes(ns, model, after, limit).await
    }
    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>> {
        self.check("get_index_snapshot")?;
        self.inner.get_index_snapshot(ns, model).await
    }
    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()> {
        self.check("put_index_snapshot")?;
        self.inner.put_index_snapshot(ns, model, snapshot).await
    }
}

impl<S: Storage + ?Sized> Storage for FaultInjecting<S> {
    fn backend_name(&self) -> &'static str {
        "fault"
    }
}
