//! Forgetting: episodes erased with what they taught, and the audit records that remain.

use std::collections::BTreeMap;

use tracing::Instrument;

use super::memory::SelfLearningMemory;
use crate::episode::EpisodeId;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::storage::{
    EpisodeFilter, EpisodeQuery, ErasureReport, ForgetRecord, MAX_FORGET_EPISODES,
    MAX_FORGET_REASON_BYTES, forget_in,
};
use crate::telemetry::{self, DELETE_MEMORY, memory_span};

/// The most audit records one call lists.
pub const MAX_FORGET_RECORDS: u32 = 1_000;

impl SelfLearningMemory {
    /// Forgets episodes of `ns`: each one's row, steps, full-text rows, embeddings, feedback
    /// events and estimate are removed, and what it taught is taken out of the learned items
    /// (counts as if it had never been recorded; an item only it taught is removed). Steps of
    /// them still buffered in this process are dropped. An audit record (id, time, `reason`)
    /// remains; the reason is redacted like every stored text. Ids the namespace does not
    /// hold are reported `missing`.
    ///
    /// At most [`MAX_FORGET_EPISODES`] ids and a reason of at most
    /// [`MAX_FORGET_REASON_BYTES`]; more is an `InvalidInput` error and nothing is forgotten.
    /// Traced as `delete_memory` (see [`telemetry`](crate::telemetry)).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use memory_core::*;
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
    /// let ns = Namespace::default();
    /// let id = memory.start_episode(&ns, NewEpisode::new("fix the login bug", TaskType::Debugging, TaskContext::new("web"))).await?;
    /// memory.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok")).await?;
    /// memory.complete_episode(&ns, id, Outcome::success("fixed")).await?;
    /// let report = memory.forget_episodes(&ns, &[id], "recorded by mistake").await?;
    /// assert_eq!(report.forgotten, [id]);
    /// assert!(memory.get_episode(&ns, id).await.is_err());
    /// assert_eq!(memory.forgotten_episodes(&ns, 10).await?[0].reason, "recorded by mistake");
    /// memory.shutdown().await?;
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn forget_episodes(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
        reason: &str,
    ) -> Result<ErasureReport> {
        let span = memory_span!(DELETE_MEMORY, "forget_episodes", ns);
        let forgotten = self
            .forget_untraced(ns, ids, reason)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, forgotten, |r| r.forgotten.len())
    }

    async fn forget_untraced(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
        reason: &str,
    ) -> Result<ErasureReport> {
        self.ensure_running()?;
        check_forget(ids.len(), reason)?;
        let inner = &self.inner;
        inner.limiter.acquire(ns, 1)?;
        let reason = inner.redactor.redact(reason).into_owned();
        // No buffered step of these episodes is written after they are gone.
        for &id in ids {
            inner.steps.close(ns, id);
        }
        let at = inner.clock.now();
        let report = forget_in(inner.storage.as_ref(), ns, ids, &reason, at).await?;
        inner.counts.forget(ns);
        Ok(report)
    }

    /// Forgets every episode of `ns` that `filter` matches (for instance everything started
    /// before a date), in rounds of [`MAX_FORGET_EPISODES`]; see
    /// [`SelfLearningMemory::forget_episodes`]. Returns the reports of all rounds together.
    /// `on_round` is told how many were forgotten so far, after each round.
    pub async fn forget_matching(
        &self,
        ns: &Namespace,
        filter: &EpisodeFilter,
        reason: &str,
        mut on_round: impl FnMut(usize),
    ) -> Result<ErasureReport> {
        check_forget(0, reason)?;
        let mut report = ErasureReport::default();
        loop {
            let query = EpisodeQuery {
                filter: filter.clone(),
                limit: MAX_FORGET_EPISODES as u32,
                offset: 0,
            };
            let page = self.inner.storage.query_episodes(ns, &query).await?;
            if page.is_empty() {
                return Ok(report);
            }
            let ids: Vec<EpisodeId> = page.iter().map(|s| s.id).collect();
            let round = self.forget_episodes(ns, &ids, reason).await?;
            let progressed = !round.forgotten.is_empty();
            report.absorb(round);
            on_round(report.forgotten.len());
            if !progressed {
                // Listed but gone meanwhile (another process forgot them): listed again
                // would loop.
                return Ok(report);
            }
        }
    }

    /// Purges a namespace: every episode forgotten (in rounds, as
    /// [`SelfLearningMemory::forget_matching`] does, each with its audit record), then every
    /// other row it holds removed (learned items, feedback, consolidation runs, metrics,
    /// estimates, restore records, index snapshots), so its quota is free again. Safe beside
    /// other processes: an episode another one starts meanwhile is forgotten in a further
    /// round (up to 3), after which the purge fails with `Conflict` and can be run again.
    /// Returns the erasure's report and the other rows removed, per kind.
    pub async fn purge_namespace(
        &self,
        ns: &Namespace,
        reason: &str,
        mut on_round: impl FnMut(usize),
    ) -> Result<(ErasureReport, BTreeMap<String, u64>)> {
        check_forget(0, reason)?;
        let mut report = ErasureReport::default();
        let mut tries = 0;
        loop {
            let round = self
                .forget_matching(ns, &EpisodeFilter::default(), reason, &mut on_round)
                .await?;
            report.absorb(round);
            match self.inner.storage.purge_namespace(ns).await {
                Err(Error::Conflict { .. }) if tries < 3 => tries += 1,
                Err(e) => return Err(e),
                Ok(rows) => {
                    self.inner.counts.forget(ns);
                    return Ok((report, rows));
                }
            }
        }
    }

    /// The audit records of the episodes forgotten in `ns`, newest first, at most `limit`
    /// (at most [`MAX_FORGET_RECORDS`]).
    pub async fn forgotten_episodes(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ForgetRecord>> {
        if limit > MAX_FORGET_RECORDS {
            return Err(Error::invalid(
                "limit",
                format!("is {limit}; at most {MAX_FORGET_RECORDS} records are listed at once"),
            ));
        }
        self.inner.storage.forgotten_episodes(ns, limit).await
    }
}

/// The limits of one erasure: at most [`MAX_FORGET_EPISODES`] ids, and a reason of
/// [`MAX_FORGET_REASON_BYTES`] at most.
fn check_forget(episodes: usize, reason: &str) -> Result<()> {
    if episodes > MAX_FORGET_EPISODES {
        return Err(Error::invalid(
            "episodes",
            format!(
                "names {episodes} episodes; at most {MAX_FORGET_EPISODES} are forgotten at once (forget by a filter for more)"
            ),
        ));
    }
    if reason.len() > MAX_FORGET_REASON_BYTES {
        return Err(Error::invalid(
            "reason",
            format!(
                "is {} bytes; at most {MAX_FORGET_REASON_BYTES}",
                reason.len()
            ),
        ));
    }
    Ok(())
}
