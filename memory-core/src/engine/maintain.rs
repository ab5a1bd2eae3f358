//! Keeping the memory in shape: consolidation runs, restores, and the estimate records that
//! calibrate later estimates.

use tracing::instrument;

use super::memory::SelfLearningMemory;
use crate::consolidation::{ConsolidationReport, check_estimate};
use crate::episode::EpisodeId;
use crate::error::{Error, ObjectKind, Result};
use crate::learned::FeedbackTarget;
use crate::namespace::Namespace;
use crate::records::{ConsolidationRun, Estimate, EstimateRecord, MetricsSnapshot};

impl SelfLearningMemory {
    /// Runs consolidation on `ns` now: forwards evidence that arrived under merged ids,
    /// revives pruned items with new evidence, merges near-duplicate patterns and heuristics
    /// (embeddings when an embedder is loaded, word-set similarity otherwise), recomputes
    /// effectiveness from the usage events, prunes (tombstones) items whose decayed confidence
    /// and use fell below the floors, applies retention, takes a learning-metrics snapshot and
    /// records the run. A second run right after changes nothing.
    ///
    /// Runs of one memory never overlap. While the durable layer is unreachable the run fails
    /// with a transient error; nothing is journaled.
    #[instrument(skip_all, fields(namespace = %ns))]
    pub async fn consolidate(&self, ns: &Namespace) -> Result<ConsolidationReport> {
        self.ensure_running()?;
        self.inner.limiter.acquire(ns, 1)?;
        self.inner.consolidator.run(ns, "manual").await
    }

    /// Consolidation runs this process finished (on demand and scheduled).
    pub fn consolidations_run(&self) -> u64 {
        self.inner.consolidator.runs()
    }

    /// Brings a pruned pattern or heuristic back into use and records the restore, so
    /// consolidation leaves it alone for `restore_grace_days`. `NotFound` for an unknown item,
    /// `Conflict` for one that is not pruned (merged items live on in their survivor).
    #[instrument(skip_all, fields(namespace = %ns, id = target.id()))]
    pub async fn restore(&self, ns: &Namespace, target: FeedbackTarget) -> Result<()> {
        self.ensure_running()?;
        self.inner.limiter.acquire(ns, 1)?;
        self.inner.consolidator.restore(ns, target).await
    }

    /// Stores a recommendation's estimate with the episode that follows it; when the episode
    /// completes, the actual steps, duration and outcome are stored beside it, and later
    /// estimates in the episode's domain are corrected by the mean actual / estimated ratio.
    ///
    /// `NotFound` for an unknown episode, `Conflict` for a completed one, `InvalidInput` for
    /// negative or non-finite figures or a `why` longer than `limits.max_description_bytes`.
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id))]
    pub async fn record_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        estimate: &Estimate,
    ) -> Result<()> {
        self.ensure_running()?;
        check_estimate(estimate, self.inner.config.limits.max_description_bytes)?;
        self.inner.limiter.acquire(ns, 1)?;
        let episode = self
            .inner
            .storage
            .get_episode(ns, episode_id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, episode_id))?;
        if episode.is_completed() {
            return Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: episode_id.to_string(),
                reason: "is already completed; record the estimate before completing it".into(),
            });
        }
        let record = EstimateRecord {
            episode_id,
            domain: episode.context.domain.clone(),
            recorded_at: self.inner.clock.now(),
            estimate: estimate.clone(),
            actual: None,
        };
        self.inner.storage.put_estimate(ns, &record).await
    }

    /// The estimate record of an episode, if one was recorded.
    pub async fn estimate_record(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>> {
        self.inner.storage.get_estimate(ns, episode_id).await
    }

    /// The most recent consolidation runs, newest first.
    pub async fn consolidation_runs(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ConsolidationRun>> {
        self.inner.storage.list_consolidations(ns, limit).await
    }

    /// The most recent learning-metrics snapshots, newest first.
    pub async fn metrics_history(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<MetricsSnapshot>> {
        self.inner.storage.list_metrics_snapshots(ns, limit).await
    }
}
