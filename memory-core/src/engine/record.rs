//! Recording: starting episodes, logging steps, completing (where the memory learns), and
//! feedback on the advice an agent applied.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{Instrument, debug, field::display, info_span, warn};

use super::history::HistoryKey;

use super::memory::SelfLearningMemory;
use super::report::CompletionReport;
use super::steps::{Flush, StepCheck};
use crate::consolidation::estimate_actual;
use crate::episode::{
    Episode, EpisodeId, ExecutionStep, NewEpisode, Outcome, OutcomeKind, StepInput,
};
use crate::error::{Error, ObjectKind, Result};
use crate::indexed_work_text;
use crate::learned::{Feedback, FeedbackOutcome, FeedbackTarget};
use crate::learning::{RewardHistory, compute_reward, extract_learning, reflect};
use crate::namespace::Namespace;
use crate::records::EstimateRecord;
use crate::storage::EpisodeCompletion;
use crate::telemetry::{
    self, CREATE_MEMORY, MEMORY_RECORD_ID, UPDATE_MEMORY, UPSERT_MEMORY, memory_span,
};

/// How far in the future a given start or completion time may be: the clocks of the machine
/// that recorded an episode and of the one importing it differ a little.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

fn already_completed(id: EpisodeId) -> Error {
    Error::Conflict {
        kind: ObjectKind::Episode,
        id: id.to_string(),
        reason: "is already completed".into(),
    }
}

impl SelfLearningMemory {
    /// Starts an episode and returns its id.
    ///
    /// Checks limits, the namespace's episode quota and rate limit; redacts secrets from the
    /// description; normalizes domain, language and framework to lowercase.
    ///
    /// Traced as `create_memory` (see [`telemetry`](crate::telemetry)).
    pub async fn start_episode(&self, ns: &Namespace, new: NewEpisode) -> Result<EpisodeId> {
        let span = memory_span!(CREATE_MEMORY, "start_episode", ns);
        let started = self
            .start_episode_untraced(ns, new)
            .instrument(span.clone())
            .await;
        if let Ok(id) = &started {
            span.record(MEMORY_RECORD_ID, display(id));
        }
        telemetry::ended(&span, started, |_| 1)
    }

    async fn start_episode_untraced(&self, ns: &Namespace, new: NewEpisode) -> Result<EpisodeId> {
        self.ensure_running()?;
        let inner = &self.inner;
        inner.config.limits.check_new_episode(&new)?;
        inner.limiter.acquire(ns, 1)?;
        let quota = inner.config.quotas.max_episodes;
        if inner.counts.get(ns, inner.clock.now()).await?.episodes >= quota {
            return Err(Error::QuotaExceeded {
                namespace: ns.to_string(),
                resource: "episodes",
                limit: quota,
            });
        }
        if let Some(at) = new.started_at
            && at > inner.clock.now() + CLOCK_SKEW
        {
            return Err(Error::invalid("started_at", "is in the future"));
        }
        let estimate = inner.pending_estimates.claim(ns, &new.task_description);
        let mut new = new;
        // Redacted before normalization: lowercasing would hide the shape of many keys.
        inner
            .redactor
            .redact_new_episode(&mut new.task_description, &mut new.context);
        new.context.normalize();
        let episode = Episode::start(new, inner.clock.now());
        inner.storage.create_episode(ns, &episode).await?;
        inner.counts.add_episode(ns);
        inner.steps.open(ns, episode.clone());
        if let Some(estimate) = estimate {
            let record = EstimateRecord {
                episode_id: episode.id,
                domain: episode.context.domain.clone(),
                recorded_at: episode.started_at,
                estimate,
                actual: None,
            };
            // Advisory: the episode is started either way.
            if let Err(e) = inner.storage.put_estimate(ns, &record).await {
                warn!(episode_id = %episode.id, error = %e, "the recommendation's estimate was not recorded");
            }
        }
        debug!(episode_id = %episode.id, "episode started");
        Ok(episode.id)
    }

    /// Loads buffer state for an episode started elsewhere (another process or instance).
    async fn ensure_buffer(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        if self.inner.steps.has(ns, id) {
            return Ok(());
        }
        let episode = self
            .inner
            .storage
            .get_episode(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, id))?;
        if episode.is_completed() {
            return Err(already_completed(id));
        }
        self.inner.steps.open(ns, Arc::unwrap_or_clone(episode));
        Ok(())
    }

    /// Logs one step of an in-progress episode.
    ///
    /// The step is validated, redacted and buffered; it is written when the batch fills (in
    /// the background, see [`StepBatchConfig`](crate::StepBatchConfig)), the flush timer
    /// fires, or the episode completes. `NotFound` for an unknown episode, `Conflict` for a
    /// completed one (also when buffered steps of it were refused when written).
    ///
    /// Traced as `update_memory` (see [`telemetry`](crate::telemetry)).
    pub async fn log_step(&self, ns: &Namespace, id: EpisodeId, step: StepInput) -> Result<()> {
        let span = memory_span!(UPDATE_MEMORY, "log_step", ns);
        if span.is_disabled() {
            // The hot path: no subscriber wants the span, so no wrapper around the future.
            return self.log_step_untraced(ns, id, step).await;
        }
        span.record(MEMORY_RECORD_ID, display(id));
        let logged = self
            .log_step_untraced(ns, id, step)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, logged, |()| 1)
    }

    async fn log_step_untraced(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        step: StepInput,
    ) -> Result<()> {
        self.ensure_running()?;
        let inner = &self.inner;
        inner.steps.take_refused(ns, id)?;
        let limits = &inner.config.limits;
        limits.check_step(&step)?;
        inner.limiter.acquire(ns, 1)?;
        self.ensure_buffer(ns, id).await?;
        let counts = inner.counts.get(ns, inner.clock.now()).await?;
        let mut step = step;
        inner.redactor.redact_step(&mut step);
        let check = StepCheck {
            max_steps: limits.max_steps_per_episode,
            max_bytes: limits.max_episode_bytes,
            quota: inner.config.quotas.max_steps,
            used: counts.steps,
        };
        let now = inner.clock.now();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let max_batch = inner.config.steps.max_batch;
        let next = inner
            .steps
            .push(ns, id, max_batch, runtime.is_some(), &check, |n| {
                ExecutionStep {
                    step_number: n,
                    key: ExecutionStep::new_key(),
                    timestamp: now,
                    input: step,
                }
            })?;
        inner.counts.add_step(ns);
        match (next, runtime) {
            (Flush::Nothing, _) => {}
            (Flush::Behind(write), Some(rt)) => {
                let (inner, ns) = (Arc::clone(inner), ns.clone());
                let span = info_span!("write_behind", namespace = %ns, episode_id = %id);
                let task = async move {
                    let _writing = write.lock().await;
                    inner.steps.write_behind(&ns, id, max_batch).await;
                };
                // Not awaited: the episode's write lock orders it with every other write of
                // the episode (flush, completion, shutdown), which wait for it.
                drop(rt.spawn(task.instrument(span)));
            }
            (Flush::Behind(write) | Flush::Now(write), _) => {
                let _writing = write.lock().await;
                inner.steps.write_pending(ns, id).await?;
            }
        }
        Ok(())
    }

    /// Writes every buffered step now.
    pub async fn flush(&self) -> Result<()> {
        self.inner.steps.flush_all().await
    }

    /// Writes the episode's buffered steps now: a step logged and then flushed is stored (or
    /// journaled, while the durable layer is unreachable) when this returns. Servers that
    /// acknowledge each step to a client call it after [`SelfLearningMemory::log_step`].
    pub async fn flush_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        let steps = &self.inner.steps;
        steps.take_refused(ns, id)?;
        let Some(write) = steps.write_lock(ns, id) else {
            return Ok(());
        };
        let _writing = write.lock().await;
        steps.write_pending(ns, id).await?;
        let left = steps.pending_len(ns, id);
        if left > 0 {
            return Err(Error::storage(
                self.inner.storage.backend_name(),
                "flush_episode",
                true,
                format!("{left} steps could not be written yet; they are buffered and retried"),
            ));
        }
        Ok(())
    }

    /// Completes an episode: scores it, reflects on it, and writes its buffered steps, its
    /// outcome and what it teaches (merged into the learned patterns, heuristics and lessons)
    /// in one transaction.
    ///
    /// Traced as `update_memory` (see [`telemetry`](crate::telemetry)).
    pub async fn complete_episode(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        outcome: Outcome,
    ) -> Result<CompletionReport> {
        let span = memory_span!(UPDATE_MEMORY, "complete_episode", ns);
        span.record(MEMORY_RECORD_ID, display(id));
        let completed = self
            .complete(ns, id, outcome, None)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, completed, |_| 1)
    }

    /// [`SelfLearningMemory::complete_episode`] as of `completed_at` instead of now: an
    /// episode recorded elsewhere and imported keeps its duration, and what it teaches is
    /// dated (and decays) from then. `InvalidInput` when `completed_at` is in the future or
    /// before the episode started (5 minutes of clock skew are tolerated).
    pub async fn complete_episode_at(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        outcome: Outcome,
        completed_at: DateTime<Utc>,
    ) -> Result<CompletionReport> {
        let span = memory_span!(UPDATE_MEMORY, "complete_episode_at", ns);
        span.record(MEMORY_RECORD_ID, display(id));
        let completed = if completed_at > self.inner.clock.now() + CLOCK_SKEW {
            Err(Error::invalid("completed_at", "is in the future"))
        } else {
            self.complete(ns, id, outcome, Some(completed_at))
                .instrument(span.clone())
                .await
        };
        telemetry::ended(&span, completed, |_| 1)
    }

    /// The stored episode with the steps still buffered here, for a completion; closes the
    /// buffer of an episode completed already.
    async fn read_to_complete(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        pending: &[ExecutionStep],
    ) -> Result<Episode> {
        let inner = &self.inner;
        let stored = inner
            .storage
            .get_episode(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, id))?;
        if stored.is_completed() {
            inner.steps.close(ns, id);
            return Err(already_completed(id));
        }
        let mut episode = Arc::unwrap_or_clone(stored);
        episode.add_steps(pending);
        Ok(episode)
    }

    /// What completing `episode` (all its steps, `pending` among them) with `outcome` stores:
    /// scores, reflection and learning. Also the key of its reward history.
    async fn completion_of(
        &self,
        ns: &Namespace,
        episode: &Episode,
        outcome: Outcome,
        at: DateTime<Utc>,
        pending: &[ExecutionStep],
    ) -> Result<(HistoryKey, EpisodeCompletion)> {
        let inner = &self.inner;
        let key = HistoryKey::of(ns, episode);
        let history = match inner
            .history
            .reward_history(inner.storage.as_ref(), key.clone())
            .await
        {
            Ok(h) => h,
            Err(e) if e.is_transient() => {
                warn!(error = %e, "history unavailable; reward efficiency uses the complexity baseline");
                RewardHistory::default()
            }
            Err(e) => return Err(e),
        };
        if at < episode.started_at {
            return Err(Error::invalid(
                "completed_at",
                format!("is before the episode started ({})", episode.started_at),
            ));
        }
        let reward = compute_reward(
            &episode.steps,
            episode.context.complexity,
            &outcome,
            history,
        );
        let reflection = reflect(episode, &outcome, &reward);
        let learning = extract_learning(episode, &outcome, at);
        let actual = estimate_actual(episode, &outcome, at);
        let completion = EpisodeCompletion {
            episode_id: episode.id,
            outcome,
            reward,
            reflection,
            completed_at: at,
            learning,
            steps: pending.to_vec(),
            estimate_actual: Some(actual),
            expected_steps: None,
            indexed_work: indexed_work_text(&episode.steps),
        };
        Ok((key, completion))
    }

    async fn complete(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        outcome: Outcome,
        completed_at: Option<DateTime<Utc>>,
    ) -> Result<CompletionReport> {
        self.ensure_running()?;
        let inner = &self.inner;
        inner.steps.take_refused(ns, id)?;
        inner.config.limits.check_outcome(&outcome)?;
        inner.limiter.acquire(ns, 1)?;
        let mut outcome = outcome;
        inner.redactor.redact_outcome(&mut outcome);

        // Held until the completion is stored, so no flush of this episode runs meanwhile.
        let write = inner.steps.write_lock(ns, id);
        let _writing = match &write {
            Some(w) => Some(w.lock().await),
            None => None,
        };
        let _completing = inner.steps.completing(ns, id);
        // Steps logged since the last batch are written by the completion's own transaction;
        // they leave the buffer only once it committed.
        let pending = inner.steps.pending(ns, id).unwrap_or_default();
        // The episode as this process knows it (started or read here, plus what it logged)
        // needs no read; if another writer added steps meanwhile, the store refuses it and the
        // episode is read back.
        let mut known = inner.steps.known(ns, id);
        let now = inner.clock.now();
        let at = completed_at.unwrap_or(now);
        let (episode, key, completion, changes) = loop {
            let (episode, expected) = match known.take() {
                Some(e) => {
                    let n = u32::try_from(e.steps.len()).unwrap_or(u32::MAX);
                    (e, Some(n))
                }
                None => (self.read_to_complete(ns, id, &pending).await?, None),
            };
            let (key, completion) = self
                .completion_of(ns, &episode, outcome.clone(), at, &pending)
                .await?;
            let completion = EpisodeCompletion {
                expected_steps: expected,
                ..completion
            };
            match inner.storage.complete_episode(ns, &completion).await {
                Err(e) if expected.is_some() && e.is_steps_changed() => {
                    debug!(error = %e, "steps were added elsewhere; reading the episode");
                }
                changes => break (episode, key, completion, changes?),
            }
        };
        inner.steps.close(ns, id);
        let changes = changes.ok_or_else(|| already_completed(id))?;
        if completion.outcome.kind() == OutcomeKind::Success {
            let steps = u32::try_from(episode.steps.len()).unwrap_or(u32::MAX);
            inner.history.record_success(key, steps);
        }
        let mut completed = episode;
        completed.outcome = Some(completion.outcome.clone());
        completed.completed_at = Some(completion.completed_at);
        completed.reward = Some(completion.reward.clone());
        inner.retriever.episode_changed(ns, completed.summary());
        inner.mark_to_embed(ns);
        Ok(CompletionReport::new(
            completion,
            &changes,
            now,
            inner.config.learning.half_life_days,
        ))
    }

    /// Records how applying a pattern or heuristic went in an episode. Recording again for the
    /// same target and episode replaces the earlier verdict.
    ///
    /// Traced as `upsert_memory` of the pattern or heuristic (see
    /// [`telemetry`](crate::telemetry)), with the episode as `episode_id`.
    pub async fn record_feedback(
        &self,
        ns: &Namespace,
        target: FeedbackTarget,
        episode_id: EpisodeId,
        outcome: FeedbackOutcome,
    ) -> Result<()> {
        let span = memory_span!(
            UPSERT_MEMORY,
            "record_feedback",
            ns,
            episode_id = %episode_id
        );
        span.record(MEMORY_RECORD_ID, target.id());
        let recorded = self
            .record_feedback_untraced(ns, target, episode_id, outcome)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, recorded, |()| 1)
    }

    async fn record_feedback_untraced(
        &self,
        ns: &Namespace,
        target: FeedbackTarget,
        episode_id: EpisodeId,
        outcome: FeedbackOutcome,
    ) -> Result<()> {
        self.ensure_running()?;
        self.inner.limiter.acquire(ns, 1)?;
        if self
            .inner
            .storage
            .get_episode(ns, episode_id)
            .await?
            .is_none()
        {
            return Err(Error::not_found(ObjectKind::Episode, episode_id));
        }
        let fb = Feedback {
            target,
            episode_id,
            outcome,
            recorded_at: self.inner.clock.now(),
        };
        self.inner.storage.record_feedback(ns, &fb).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::MemoryConfig;
    use crate::episode::{TaskContext, TaskType};
    use crate::storage::InMemoryStorage;

    #[tokio::test]
    async fn a_step_logged_while_the_episode_completes_is_refused_not_lost() {
        let memory =
            SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())
                .unwrap();
        let ns = Namespace::default();
        let id = memory
            .start_episode(
                &ns,
                NewEpisode::new("t", TaskType::Testing, TaskContext::new("d")),
            )
            .await
            .unwrap();
        memory
            .log_step(&ns, id, StepInput::ok("a", "b", "c"))
            .await
            .unwrap();
        {
            // What complete_episode holds while it runs.
            let _completing = memory.inner.steps.completing(&ns, id);
            let late = memory.log_step(&ns, id, StepInput::ok("a", "b", "c")).await;
            assert!(
                matches!(late, Err(Error::Conflict { ref reason, .. }) if reason == "is being completed"),
                "{late:?}"
            );
        }
        // A completion that ended (or failed) no longer blocks steps.
        memory
            .log_step(&ns, id, StepInput::ok("a", "b", "c"))
            .await
            .unwrap();
        let report = memory
            .complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
        assert_eq!(report.episode_id, id);
        assert_eq!(memory.get_episode(&ns, id).await.unwrap().steps.len(), 2);
        memory.shutdown().await.unwrap();
    }

    /// A completion learns from the episode as its process knows it, without reading it back;
    /// when another instance (a second process) added steps meanwhile, the store refuses that
    /// and the episode is read: every step is kept and learned from.
    #[tokio::test]
    async fn a_completion_reads_the_steps_another_writer_added() {
        let storage: Arc<dyn crate::storage::Storage> = Arc::new(InMemoryStorage::new());
        let a = SelfLearningMemory::new(Arc::clone(&storage), MemoryConfig::default()).unwrap();
        let b = SelfLearningMemory::new(storage, MemoryConfig::default()).unwrap();
        let ns = Namespace::default();
        let new = || NewEpisode::new("t", TaskType::Testing, TaskContext::new("d"));
        let id = a.start_episode(&ns, new()).await.unwrap();
        a.log_step(&ns, id, StepInput::ok("one", "x", "ok"))
            .await
            .unwrap();
        a.flush_episode(&ns, id).await.unwrap();
        b.log_step(&ns, id, StepInput::ok("two", "x", "ok"))
            .await
            .unwrap();
        b.flush_episode(&ns, id).await.unwrap();
        a.log_step(&ns, id, StepInput::ok("three", "x", "ok"))
            .await
            .unwrap();
        let report = a
            .complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
        assert_eq!(report.episode_id, id);
        let stored = a.get_episode(&ns, id).await.unwrap();
        let tools: Vec<&str> = stored.steps.iter().map(|s| s.input.tool.as_str()).collect();
        assert_eq!(tools, ["one", "two", "three"]);
        assert!(stored.is_completed());
        let reflection = stored.reflection.as_ref().unwrap().text();
        assert!(
            reflection.contains("two"),
            "learned from b's step too: {reflection}"
        );

        // Without another writer the known episode is the whole story.
        let id = a.start_episode(&ns, new()).await.unwrap();
        a.log_step(&ns, id, StepInput::ok("one", "x", "ok"))
            .await
            .unwrap();
        a.flush_episode(&ns, id).await.unwrap();
        a.log_step(&ns, id, StepInput::ok("two", "x", "ok"))
            .await
            .unwrap();
        a.complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
        assert_eq!(a.get_episode(&ns, id).await.unwrap().steps.len(), 2);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    /// An imported episode keeps its times: a start and a completion in the past are taken
    /// (at the limits: the completion at the start, and now), one in the future or a
    /// completion before the start is refused and changes nothing.
    #[tokio::test]
    async fn an_episode_keeps_past_times_and_refuses_future_or_reversed_ones() {
        let memory =
            SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())
                .unwrap();
        let ns = Namespace::default();
        let now = Utc::now();
        let new = || NewEpisode::new("t", TaskType::Testing, TaskContext::new("d"));
        let future = memory
            .start_episode(&ns, new().with_started_at(now + chrono::Duration::hours(1)))
            .await;
        assert!(
            matches!(future, Err(Error::InvalidInput { .. })),
            "{future:?}"
        );

        let start = now - chrono::Duration::days(3);
        let id = memory
            .start_episode(&ns, new().with_started_at(start))
            .await
            .unwrap();
        let early = memory
            .complete_episode_at(
                &ns,
                id,
                Outcome::success("ok"),
                start - chrono::Duration::milliseconds(1),
            )
            .await;
        assert!(
            matches!(early, Err(Error::InvalidInput { .. })),
            "{early:?}"
        );
        let late = memory
            .complete_episode_at(
                &ns,
                id,
                Outcome::success("ok"),
                Utc::now() + chrono::Duration::hours(1),
            )
            .await;
        assert!(matches!(late, Err(Error::InvalidInput { .. })), "{late:?}");
        assert!(!memory.get_episode(&ns, id).await.unwrap().is_completed());

        memory
            .complete_episode_at(&ns, id, Outcome::success("ok"), start)
            .await
            .unwrap();
        let e = memory.get_episode(&ns, id).await.unwrap();
        assert_eq!((e.started_at, e.completed_at), (start, Some(start)));

        let other = memory
            .start_episode(&ns, new().with_started_at(start))
            .await
            .unwrap();
        memory
            .complete_episode_at(&ns, other, Outcome::success("ok"), Utc::now())
            .await
            .unwrap();
        memory.shutdown().await.unwrap();
    }
}
