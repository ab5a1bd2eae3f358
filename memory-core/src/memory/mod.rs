//! [`SelfLearningMemory`]: the facade agents and applications use.

pub(crate) mod config;
mod consolidate;
mod history;
mod report;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, instrument, warn};

pub use config::{LearningConfig, MemoryConfig, StepBatchConfig};
pub use consolidate::{ConsolidationReport, LearnedChange};
pub use report::{CompletionReport, LearnedSummary};

use crate::clock::{SharedClock, SystemClock};
use crate::embedding::Embedder;
use crate::episode::{
    Episode, EpisodeId, EpisodeSummary, ExecutionStep, NewEpisode, Outcome, StepInput,
};
use crate::error::{Error, ObjectKind, Result};
use crate::extract::extract_learning;
use crate::feedback::{Feedback, FeedbackOutcome, FeedbackTarget};
use crate::heuristic::{Heuristic, HeuristicId};
use crate::lesson::{FailureLesson, LessonId};
use crate::namespace::Namespace;
use crate::pattern::{Pattern, PatternId};
use crate::quota::RateLimiter;
use crate::redact::Redactor;
use crate::reflection::reflect;
use crate::retrieval::{Retrieval, RetrievalQuery, Retriever};
use crate::reward::{RewardHistory, compute_reward};
use crate::storage::{
    EpisodeCompletion, EpisodeFilter, EpisodeQuery, EpisodeStatus, LearnedQuery, NamespaceStats,
    Storage, TextHit, TextQuery,
};

/// Buffered state of an in-progress episode in this process.
#[derive(Debug)]
struct EpisodeBuffer {
    next_step: u32,
    bytes: usize,
    pending: Vec<ExecutionStep>,
    /// Held from taking steps out of `pending` until they are written, and by
    /// `complete_episode` until the completion is stored: a late flush can then never race the
    /// completion (which would reject, and lose, the late steps). Per episode, so writes to
    /// different episodes still run concurrently.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Set while `complete_episode` runs: a step logged now could no longer be written, so
    /// `log_step` refuses it rather than acknowledge it and lose it.
    completing: bool,
}

impl EpisodeBuffer {
    fn new(next_step: u32, bytes: usize) -> Self {
        Self {
            next_step,
            bytes,
            pending: Vec::new(),
            write: Arc::default(),
            completing: false,
        }
    }
}

/// Marks an episode as completing for as long as it lives (also when the completion fails
/// or its future is dropped), so later steps are accepted again.
struct Completing<'a> {
    buffers: &'a Mutex<HashMap<BufferKey, EpisodeBuffer>>,
    key: BufferKey,
}

impl<'a> Completing<'a> {
    fn mark(buffers: &'a Mutex<HashMap<BufferKey, EpisodeBuffer>>, key: BufferKey) -> Self {
        if let Some(b) = lock(buffers).get_mut(&key) {
            b.completing = true;
        }
        Completing { buffers, key }
    }
}

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        // After a successful completion the buffer is gone and this does nothing.
        if let Some(b) = lock(self.buffers).get_mut(&self.key) {
            b.completing = false;
        }
    }
}

/// What this process knows of a namespace's size, for quotas: read from storage on first use
/// and again once [`COUNTS_FRESH_FOR`] has passed (other processes write to it too), advanced
/// by this process's own writes in between.
#[derive(Debug, Clone, Copy)]
struct NsCounters {
    episodes: u64,
    steps: u64,
    read_at: chrono::DateTime<chrono::Utc>,
}

/// How long a namespace's counts are used before they are read from storage again.
const COUNTS_FRESH_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

type BufferKey = (Namespace, EpisodeId);

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn Storage>,
    config: MemoryConfig,
    clock: SharedClock,
    redactor: Redactor,
    limiter: RateLimiter,
    buffers: Mutex<HashMap<BufferKey, EpisodeBuffer>>,
    /// Episodes whose buffered steps the store refused when the flush timer wrote them (the
    /// episode was completed by another writer): the next call for the episode says so.
    refused: Mutex<HashMap<BufferKey, String>>,
    counters: Mutex<HashMap<Namespace, NsCounters>>,
    shut_down: AtomicBool,
    stop_flusher: Notify,
    retriever: Retriever,
    /// Namespaces with episodes that may need embedding; the embed task drains them.
    to_embed: Mutex<HashSet<Namespace>>,
    wake_embedder: Notify,
    /// Held by a consolidation run: runs of one memory never overlap.
    consolidating: tokio::sync::Mutex<()>,
    /// Consolidation runs this process finished.
    consolidations: std::sync::atomic::AtomicU64,
    stop_consolidation: Notify,
    /// Step counts of recent successes per kind: the reward's efficiency baseline.
    history: history::HistoryCache,
}

/// The self-learning episodic memory.
///
/// Record episodes (`start_episode`, `log_step`, `complete_episode`); completion scores the
/// episode, reflects on it and merges what it teaches into patterns, heuristics and failure
/// lessons in storage. Everything learned lives in the storage backend, so a new instance over
/// the same storage continues where another left off.
///
/// ```
/// use std::sync::Arc;
/// use memory_core::*;
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
/// let ns = Namespace::default();
/// let id = memory
///     .start_episode(&ns, NewEpisode::new("fix the flaky login test", TaskType::Testing, TaskContext::new("testing").with_language("rust")))
///     .await?;
/// memory.log_step(&ns, id, StepInput::error("shell", "cargo test", "test login ... FAILED")).await?;
/// memory.log_step(&ns, id, StepInput::ok("edit_file", "inject a fake clock", "edit applied")).await?;
/// memory.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok. 12 passed")).await?;
/// let report = memory.complete_episode(&ns, id, Outcome::success("test is stable")).await?;
/// assert!(report.reward.total > 0.5);
/// assert!(!report.patterns.is_empty());
/// memory.shutdown().await?;
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct SelfLearningMemory {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    embed_task: Mutex<Option<JoinHandle<()>>>,
    consolidation_task: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The kind of `episode` for the reward's efficiency baseline.
fn history_key(ns: &Namespace, episode: &Episode) -> history::HistoryKey {
    history::HistoryKey {
        ns: ns.clone(),
        task_type: episode.task_type,
        domain: episode.context.domain.clone(),
        language: episode.context.language.clone(),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

impl SelfLearningMemory {
    /// A memory over `storage` with the system clock.
    ///
    /// Starts the step-flush timer when called inside a tokio runtime.
    pub fn new(storage: Arc<dyn Storage>, config: MemoryConfig) -> Result<Self> {
        Self::with_clock(storage, config, Arc::new(SystemClock))
    }

    /// A memory with an explicit clock (tests use [`crate::TokioClock`] with paused time).
    pub fn with_clock(
        storage: Arc<dyn Storage>,
        config: MemoryConfig,
        clock: SharedClock,
    ) -> Result<Self> {
        Self::with_embedder(storage, config, clock, None)
    }

    /// A memory with an embedder for semantic retrieval (`None`: lexical retrieval only, and
    /// [`SelfLearningMemory::retrieval_degraded`] says so).
    ///
    /// Inside a tokio runtime this also starts the embedding task, which embeds completed
    /// episodes in the background (off the write path) and, at start, whatever a previous run
    /// left unembedded.
    pub fn with_embedder(
        storage: Arc<dyn Storage>,
        config: MemoryConfig,
        clock: SharedClock,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Self> {
        if config.steps.max_batch == 0 {
            return Err(Error::invalid("steps.max_batch", "must be at least 1"));
        }
        config.consolidation.validate()?;
        config.retention.validate()?;
        let redactor = Redactor::new(&config.redaction)?;
        let limiter = RateLimiter::new(config.rate_limit.clone());
        if let Some(e) = &embedder {
            info!(
                model = e.model_id(),
                dims = e.dimensions(),
                "semantic retrieval on"
            );
        } else {
            // Reported where it matters: `retrieval_degraded`, every retrieval's `degraded`.
            info!("no embedding model: retrieval is lexical only (BM25)");
        }
        let retriever = Retriever::new(
            Arc::clone(&storage),
            embedder,
            Arc::clone(&clock),
            config.retrieval.clone(),
        );
        let history = history::HistoryCache::new(config.learning.history_window);
        let inner = Arc::new(Inner {
            storage,
            config,
            clock,
            redactor,
            limiter,
            buffers: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            counters: Mutex::new(HashMap::new()),
            shut_down: AtomicBool::new(false),
            stop_flusher: Notify::new(),
            retriever,
            to_embed: Mutex::new(HashSet::new()),
            wake_embedder: Notify::new(),
            consolidating: tokio::sync::Mutex::new(()),
            consolidations: std::sync::atomic::AtomicU64::new(0),
            stop_consolidation: Notify::new(),
            history,
        });
        let runtime = tokio::runtime::Handle::try_current().ok();
        let flusher = runtime
            .as_ref()
            .map(|rt| rt.spawn(flush_loop(Arc::downgrade(&inner))));
        let consolidation_task = runtime
            .as_ref()
            .filter(|_| inner.config.consolidation.schedule)
            .map(|rt| rt.spawn(consolidate::consolidation_loop(Arc::downgrade(&inner))));
        let embed_task = runtime
            .filter(|_| inner.retriever.embedder().is_some())
            .map(|rt| rt.spawn(embed_loop(Arc::downgrade(&inner))));
        Ok(SelfLearningMemory {
            inner,
            flusher: Mutex::new(flusher),
            embed_task: Mutex::new(embed_task),
            consolidation_task: Mutex::new(consolidation_task),
        })
    }

    /// The storage backend.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The configuration.
    pub fn config(&self) -> &MemoryConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    fn ensure_running(&self) -> Result<()> {
        if self.inner.shut_down.load(Ordering::Acquire) {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    /// The namespace's counts for quota checks. While the durable layer is unreachable they
    /// cannot be read; writes are then journaled and quotas are checked again once it answers.
    async fn counters(&self, ns: &Namespace) -> Result<NsCounters> {
        let now = self.inner.clock.now();
        if let Some(c) = lock(&self.inner.counters).get(ns)
            && now - c.read_at < COUNTS_FRESH_FOR
        {
            return Ok(*c);
        }
        let stats = match self.inner.storage.namespace_stats(ns).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                warn!(error = %e, namespace = %ns, "namespace counts unavailable; quota not enforced for this call");
                return Ok(NsCounters {
                    episodes: 0,
                    steps: 0,
                    read_at: now,
                });
            }
            Err(e) => return Err(e),
        };
        let c = NsCounters {
            episodes: stats.episodes,
            steps: stats.steps,
            read_at: now,
        };
        lock(&self.inner.counters).insert(ns.clone(), c);
        Ok(c)
    }

    /// Starts an episode and returns its id.
    ///
    /// Checks limits, the namespace's episode quota and rate limit; redacts secrets from the
    /// description; normalizes domain, language and framework to lowercase.
    #[instrument(skip_all, fields(namespace = %ns))]
    pub async fn start_episode(&self, ns: &Namespace, new: NewEpisode) -> Result<EpisodeId> {
        self.ensure_running()?;
        self.inner.config.limits.check_new_episode(&new)?;
        self.inner.limiter.acquire(ns, 1)?;
        let quota = self.inner.config.quotas.max_episodes;
        if self.counters(ns).await?.episodes >= quota {
            return Err(Error::QuotaExceeded {
                namespace: ns.to_string(),
                resource: "episodes",
                limit: quota,
            });
        }
        let mut new = new;
        // Redacted before normalization: lowercasing would hide the shape of many keys.
        self.inner
            .redactor
            .redact_new_episode(&mut new.task_description, &mut new.context);
        new.context.normalize();
        let episode = Episode::start(new, self.inner.clock.now());
        self.inner.storage.create_episode(ns, &episode).await?;
        if let Some(c) = lock(&self.inner.counters).get_mut(ns) {
            c.episodes += 1;
        }
        lock(&self.inner.buffers).insert(
            (ns.clone(), episode.id),
            EpisodeBuffer::new(1, episode.approx_size()),
        );
        debug!(episode_id = %episode.id, "episode started");
        Ok(episode.id)
    }

    /// Loads buffer state for an episode started elsewhere (another process or instance).
    async fn ensure_buffer(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        let key = (ns.clone(), id);
        if lock(&self.inner.buffers).contains_key(&key) {
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
        let next_step = episode
            .steps
            .iter()
            .map(|s| s.step_number)
            .max()
            .unwrap_or(0)
            + 1;
        lock(&self.inner.buffers)
            .entry(key)
            .or_insert_with(|| EpisodeBuffer::new(next_step, episode.approx_size()));
        Ok(())
    }

    /// Logs one step of an in-progress episode.
    ///
    /// The step is validated, redacted and buffered; it is written (as a row) when the batch
    /// fills, the flush timer fires, or the episode completes. `NotFound` for an unknown
    /// episode, `Conflict` for a completed one.
    pub async fn log_step(&self, ns: &Namespace, id: EpisodeId, step: StepInput) -> Result<()> {
        self.ensure_running()?;
        self.inner.take_refused(ns, id)?;
        let limits = &self.inner.config.limits;
        limits.check_step(&step)?;
        self.inner.limiter.acquire(ns, 1)?;
        self.ensure_buffer(ns, id).await?;
        let step_quota = self.inner.config.quotas.max_steps;
        let counters = self.counters(ns).await?;

        let mut step = step;
        self.inner.redactor.redact_step(&mut step);

        let batch = {
            let mut buffers = lock(&self.inner.buffers);
            let buf = buffers
                .get_mut(&(ns.clone(), id))
                .ok_or_else(|| Error::not_found(ObjectKind::Episode, id))?;
            if buf.completing {
                return Err(Error::Conflict {
                    kind: ObjectKind::Episode,
                    id: id.to_string(),
                    reason: "is being completed".into(),
                });
            }
            if buf.next_step as usize > limits.max_steps_per_episode {
                return Err(Error::LimitExceeded {
                    field: "steps_per_episode",
                    limit: limits.max_steps_per_episode as u64,
                    actual: u64::from(buf.next_step),
                });
            }
            if counters.steps >= step_quota {
                return Err(Error::QuotaExceeded {
                    namespace: ns.to_string(),
                    resource: "steps",
                    limit: step_quota,
                });
            }
            let stored = ExecutionStep {
                step_number: buf.next_step,
                key: ExecutionStep::new_key(),
                timestamp: self.inner.clock.now(),
                input: step,
            };
            let size = stored.approx_size();
            if buf.bytes + size > limits.max_episode_bytes {
                return Err(Error::LimitExceeded {
                    field: "episode",
                    limit: limits.max_episode_bytes as u64,
                    actual: (buf.bytes + size) as u64,
                });
            }
            buf.bytes += size;
            buf.next_step += 1;
            buf.pending.push(stored);
            if let Some(c) = lock(&self.inner.counters).get_mut(ns) {
                c.steps += 1;
            }
            (buf.pending.len() >= self.inner.config.steps.max_batch).then(|| Arc::clone(&buf.write))
        };
        if let Some(write) = batch {
            let _writing = write.lock().await;
            self.inner.write_pending(ns, id).await?;
        }
        Ok(())
    }

    /// Writes every buffered step now.
    pub async fn flush(&self) -> Result<()> {
        self.inner.flush_all().await
    }

    /// Writes the episode's buffered steps now: a step logged and then flushed is stored (or
    /// journaled, while the durable layer is unreachable) when this returns. Servers that
    /// acknowledge each step to a client call it after [`SelfLearningMemory::log_step`].
    pub async fn flush_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        self.inner.take_refused(ns, id)?;
        let key = (ns.clone(), id);
        let write = lock(&self.inner.buffers)
            .get(&key)
            .map(|b| Arc::clone(&b.write));
        let Some(write) = write else {
            return Ok(());
        };
        let _writing = write.lock().await;
        self.inner.write_pending(ns, id).await?;
        let left = lock(&self.inner.buffers)
            .get(&key)
            .map_or(0, |b| b.pending.len());
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

    /// Completes an episode: writes its buffered steps, scores it, reflects on it, and merges
    /// what it teaches into the learned patterns, heuristics and lessons, atomically.
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %id))]
    pub async fn complete_episode(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        outcome: Outcome,
    ) -> Result<CompletionReport> {
        self.ensure_running()?;
        self.inner.take_refused(ns, id)?;
        self.inner.config.limits.check_outcome(&outcome)?;
        self.inner.limiter.acquire(ns, 1)?;
        let mut outcome = outcome;
        self.inner.redactor.redact_outcome(&mut outcome);

        // Held until the completion is stored, so no flush of this episode runs meanwhile.
        let write = lock(&self.inner.buffers)
            .get(&(ns.clone(), id))
            .map(|b| Arc::clone(&b.write));
        let _writing = match &write {
            Some(w) => Some(w.lock().await),
            None => None,
        };
        let _completing = Completing::mark(&self.inner.buffers, (ns.clone(), id));
        self.inner.write_pending(ns, id).await?;
        // A transient failure keeps steps in the buffer; completing without them would
        // complete a different episode and then drop them.
        let unwritten = lock(&self.inner.buffers)
            .get(&(ns.clone(), id))
            .map_or(0, |b| b.pending.len());
        if unwritten > 0 {
            return Err(Error::storage(
                self.inner.storage.backend_name(),
                "complete_episode",
                true,
                format!("{unwritten} steps could not be written yet; retry the completion"),
            ));
        }
        let episode = self
            .inner
            .storage
            .get_episode(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, id))?;
        if episode.is_completed() {
            lock(&self.inner.buffers).remove(&(ns.clone(), id));
            return Err(already_completed(id));
        }

        let history = match self.history_for(ns, &episode).await {
            Ok(h) => h,
            Err(e) if e.is_transient() => {
                warn!(error = %e, "history unavailable; reward efficiency uses the complexity baseline");
                RewardHistory::default()
            }
            Err(e) => return Err(e),
        };
        let now = self.inner.clock.now();
        let reward = compute_reward(
            &episode.steps,
            episode.context.complexity,
            &outcome,
            history,
        );
        let reflection = reflect(&episode, &outcome, &reward);
        let learning = extract_learning(&episode, &outcome, now);
        let completion = EpisodeCompletion {
            episode_id: id,
            outcome,
            reward,
            reflection,
            completed_at: now,
            learning,
        };
        let changes = self.inner.storage.complete_episode(ns, &completion).await?;
        lock(&self.inner.buffers).remove(&(ns.clone(), id));
        let changes = changes.ok_or_else(|| already_completed(id))?;
        if completion.outcome.kind() == crate::OutcomeKind::Success {
            let steps = u32::try_from(episode.steps.len()).unwrap_or(u32::MAX);
            self.inner
                .history
                .record_success(history_key(ns, &episode), steps);
        }
        let mut completed = episode;
        completed.outcome = Some(completion.outcome.clone());
        completed.completed_at = Some(completion.completed_at);
        completed.reward = Some(completion.reward.clone());
        self.inner
            .close_estimate(ns, &completed, &completion.outcome)
            .await;
        self.inner
            .retriever
            .episode_changed(ns, completed.summary());
        self.inner.mark_to_embed(ns);
        Ok(CompletionReport::new(
            completion,
            &changes,
            now,
            self.inner.config.learning.half_life_days,
        ))
    }

    async fn history_for(&self, ns: &Namespace, episode: &Episode) -> Result<RewardHistory> {
        let key = history_key(ns, episode);
        let counts = if let Some(counts) = self.inner.history.get(&key) {
            counts
        } else {
            let query = EpisodeQuery {
                filter: EpisodeFilter {
                    task_type: Some(key.task_type),
                    domain: Some(key.domain.clone()),
                    language: key.language.clone(),
                    status: Some(EpisodeStatus::Completed(crate::OutcomeKind::Success)),
                    ..EpisodeFilter::default()
                },
                limit: self.inner.config.learning.history_window,
                offset: 0,
            };
            let similar = self.inner.storage.query_episodes(ns, &query).await?;
            let counts: Vec<u32> = similar.iter().map(|s| s.step_count).collect();
            self.inner.history.fill(key, counts.clone());
            Arc::new(counts)
        };
        Ok(RewardHistory {
            median_success_steps: median(counts.iter().map(|&c| f64::from(c)).collect()),
            similar_episodes: counts.len(),
        })
    }

    /// An episode with all its steps, including steps still buffered in this process.
    pub async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Episode> {
        let mut episode = self
            .inner
            .storage
            .get_episode(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, id))?;
        if let Some(buf) = lock(&self.inner.buffers).get(&(ns.clone(), id)) {
            // Numbered after the stored steps, as the store will number them.
            let buffered = crate::episode::steps_to_append(&episode.steps, &buf.pending);
            episode.steps.extend(buffered);
            episode.steps.sort_by_key(|s| s.step_number);
        }
        Ok(episode)
    }

    /// A page of episodes, newest first.
    pub async fn list_episodes(
        &self,
        ns: &Namespace,
        query: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>> {
        self.inner.storage.query_episodes(ns, query).await
    }

    /// Lexical search over episodes; each hit with its summary.
    pub async fn search_episodes(&self, ns: &Namespace, query: &TextQuery) -> Result<Vec<TextHit>> {
        self.inner.storage.search_episodes(ns, query).await
    }

    /// Records how applying a pattern or heuristic went in an episode. Recording again for the
    /// same target and episode replaces the earlier verdict.
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id))]
    pub async fn record_feedback(
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

    /// A pattern by id.
    pub async fn pattern(&self, ns: &Namespace, id: &PatternId) -> Result<Pattern> {
        self.inner
            .storage
            .get_pattern(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Pattern, id))
    }

    /// Patterns matching the query.
    pub async fn patterns(&self, ns: &Namespace, query: &LearnedQuery) -> Result<Vec<Pattern>> {
        self.inner.storage.query_patterns(ns, query).await
    }

    /// A heuristic by id.
    pub async fn heuristic(&self, ns: &Namespace, id: &HeuristicId) -> Result<Heuristic> {
        self.inner
            .storage
            .get_heuristic(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Heuristic, id))
    }

    /// Heuristics matching the query.
    pub async fn heuristics(&self, ns: &Namespace, query: &LearnedQuery) -> Result<Vec<Heuristic>> {
        self.inner.storage.query_heuristics(ns, query).await
    }

    /// A lesson by id.
    pub async fn lesson(&self, ns: &Namespace, id: &LessonId) -> Result<FailureLesson> {
        self.inner
            .storage
            .get_lesson(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Lesson, id))
    }

    /// Lessons matching the query.
    pub async fn lessons(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<FailureLesson>> {
        self.inner.storage.query_lessons(ns, query).await
    }

    /// Counts of what the namespace holds.
    pub async fn stats(&self, ns: &Namespace) -> Result<NamespaceStats> {
        self.inner.storage.namespace_stats(ns).await
    }

    /// Finds the past episodes most relevant to a task: hybrid (BM25 + embeddings) unless
    /// the query asks otherwise or no embedder is loaded. See [`crate::retrieval`].
    pub async fn retrieve(&self, ns: &Namespace, query: &RetrievalQuery) -> Result<Retrieval> {
        self.ensure_running()?;
        self.inner.config.limits.check_retrieval(query)?;
        self.inner.limiter.acquire(ns, 1)?;
        self.inner.retriever.retrieve(ns, query).await
    }

    /// Recommends for a new task: similar episodes (near-duplicates folded), patterns,
    /// heuristics, pitfalls, a playbook and an estimate, each item with a `why`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use memory_core::*;
    /// use memory_core::retrieval::recommend::RecommendRequest;
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
    /// let ns = Namespace::default();
    /// let ctx = TaskContext::new("web_api").with_language("rust");
    /// for _ in 0..3 {
    ///     let id = memory.start_episode(&ns, NewEpisode::new("add a health endpoint", TaskType::CodeGeneration, ctx.clone())).await?;
    ///     memory.log_step(&ns, id, StepInput::ok("read_file", "open router", "ok")).await?;
    ///     memory.log_step(&ns, id, StepInput::ok("edit_file", "add route", "edit applied")).await?;
    ///     memory.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok")).await?;
    ///     memory.complete_episode(&ns, id, Outcome::success("endpoint works")).await?;
    /// }
    /// let rec = memory
    ///     .recommend(&ns, &RecommendRequest::new("add a health endpoint").with_context(Some(TaskType::CodeGeneration), ctx))
    ///     .await?;
    /// assert_eq!(rec.episodes.len(), 1); // three runs of one task, folded
    /// assert_eq!(rec.episodes[0].near_duplicates.len(), 2);
    /// assert_eq!(rec.playbook.iter().map(|s| s.tool.as_str()).collect::<Vec<_>>(), ["read_file", "edit_file", "shell"]);
    /// assert_eq!(rec.estimate.sample_size, 3);
    /// memory.shutdown().await?;
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    #[instrument(skip_all, fields(namespace = %ns, limit = req.limit))]
    pub async fn recommend(
        &self,
        ns: &Namespace,
        req: &crate::retrieval::recommend::RecommendRequest,
    ) -> Result<crate::retrieval::recommend::Recommendation> {
        use crate::retrieval::recommend::{
            Recommendation, estimate, fold_duplicates, playbook, rank_heuristics, rank_patterns,
            rank_pitfalls,
        };
        self.ensure_running()?;
        let limits = &self.inner.config.limits;
        limits.check_retrieval(&req.retrieval_query(req.limit))?;
        self.inner.limiter.acquire(ns, 1)?;
        let limit = req.limit as usize;
        // Retrieve more than shown: near-duplicates fold, and the estimate wants a sample.
        let wide = (req.limit.max(10) * 2).min(limits.max_results as u32);
        let retriever = &self.inner.retriever;
        let retrieval = retriever.retrieve(ns, &req.retrieval_query(wide)).await?;
        let rc = retriever.config();
        let threshold = f64::from(if req.context.is_some() || req.task_type.is_some() {
            rc.strong_match_cosine
        } else {
            rc.strong_match_cosine_bare
        });
        // Similar = close in meaning when that is measurable, else the top lexical hits.
        let similar: Vec<&crate::retrieval::RetrievedEpisode> = if retrieval.confidence.is_some() {
            retrieval
                .results
                .iter()
                .filter(|r| r.breakdown.cosine.is_some_and(|c| c >= threshold - 0.1))
                .collect()
        } else {
            retrieval.results.iter().take(5).collect()
        };
        let similar_ids: HashSet<EpisodeId> = similar.iter().map(|r| r.episode.id).collect();
        // Learned items by context: the request's, else that of the closest episode.
        let closest = similar.first().map(|r| &r.episode);
        let (task_type, context) = match (&req.context, closest) {
            (Some(c), _) => (req.task_type, Some(c.clone())),
            (None, Some(e)) => (Some(e.task_type), Some(e.context.clone())),
            (None, None) => (req.task_type, None),
        };
        let learned = LearnedQuery {
            task_type,
            domain: context
                .as_ref()
                .map(|c| c.domain.clone())
                .filter(|d| !d.is_empty()),
            language: context.as_ref().and_then(|c| c.language.clone()),
            limit: 200,
            ..LearnedQuery::default()
        };
        let storage = &self.inner.storage;
        let now = self.inner.clock.now();
        let half_life = self.inner.config.learning.half_life_days;
        let mut patterns = rank_patterns(
            storage.query_patterns(ns, &learned).await?,
            &similar_ids,
            now,
            half_life,
        );
        let mut heuristics = rank_heuristics(
            storage.query_heuristics(ns, &learned).await?,
            &similar_ids,
            now,
            half_life,
        );
        let mut pitfalls = rank_pitfalls(
            storage.query_lessons(ns, &learned).await?,
            &similar_ids,
            now,
            half_life,
        );
        let playbook = playbook(&patterns, &pitfalls);
        let domain = context.as_ref().map(|c| c.domain.clone());
        let estimate = self
            .inner
            .calibrated(ns, domain.as_deref(), estimate(&similar))
            .await;
        patterns.truncate(limit);
        heuristics.truncate(limit);
        pitfalls.truncate(limit);
        // Only the similar episodes are shown: a weak lexical or semantic hit is not advice.
        let mut episodes = fold_duplicates(similar.iter().map(|r| (*r).clone()).collect());
        episodes.truncate(limit);
        Ok(Recommendation {
            episodes,
            patterns,
            heuristics,
            pitfalls,
            playbook,
            estimate,
            confidence: retrieval.confidence,
            strong_match: retrieval.strong_match,
            degraded: retrieval.degraded,
        })
    }

    /// Embeds every episode of `ns` still waiting for an embedding, now (the background task
    /// does the same lazily). Returns how many were embedded.
    pub async fn embed_pending(&self, ns: &Namespace) -> Result<usize> {
        self.ensure_running()?;
        self.inner.retriever.embed_pending(ns).await
    }

    /// [`SelfLearningMemory::embed_pending`], calling `progress` with the number embedded so
    /// far after each batch.
    pub async fn embed_pending_reporting(
        &self,
        ns: &Namespace,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<usize> {
        self.ensure_running()?;
        self.inner
            .retriever
            .embed_pending_reporting(ns, progress)
            .await
    }

    /// Consolidation runs this process finished (on demand and scheduled).
    pub fn consolidations_run(&self) -> u64 {
        self.inner.consolidations.load(Ordering::Relaxed)
    }

    /// Episodes of `ns` waiting to be embedded (0 without an embedder): two counts.
    pub async fn embedding_backlog(&self, ns: &Namespace) -> Result<u64> {
        self.inner.retriever.embedding_backlog(ns).await
    }

    /// The retriever (its embedder, settings and index size).
    pub fn retriever(&self) -> &Retriever {
        &self.inner.retriever
    }

    /// Why retrieval is degraded (no embedding model), if it is.
    pub fn retrieval_degraded(&self) -> Option<&str> {
        self.inner.retriever.degraded()
    }

    /// Writes every buffered step and stops the flush timer, the embedding task and the
    /// consolidation schedule. Later calls fail with [`Error::Shutdown`]; calling `shutdown`
    /// again is harmless. Episodes not embedded yet stay queued in storage for the next run;
    /// a scheduled consolidation run in flight is abandoned (each of its writes is atomic,
    /// and the next run redoes what is left); an index snapshot being written is finished
    /// (at 100k episodes, about a second).
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.shut_down.store(true, Ordering::Release);
        self.inner.stop_flusher.notify_one();
        self.inner.wake_embedder.notify_one();
        self.inner.stop_consolidation.notify_one();
        let handle = lock(&self.consolidation_task).take();
        if let Some(h) = handle {
            h.abort();
            let _ = h.await;
        }
        let handle = lock(&self.flusher).take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let handle = lock(&self.embed_task).take();
        if let Some(h) = handle {
            // An embedding batch in flight is abandoned, not lost: the queue is the data.
            h.abort();
            let _ = h.await;
        }
        self.inner.retriever.finish_snapshots().await;
        self.inner.flush_all().await
    }
}

impl Drop for SelfLearningMemory {
    fn drop(&mut self) {
        // Only signal; flushing needs `shutdown().await`.
        self.inner.stop_flusher.notify_one();
        self.inner.stop_consolidation.notify_one();
        if let Some(h) = lock(&self.consolidation_task).take() {
            h.abort();
        }
        if let Some(h) = lock(&self.embed_task).take() {
            h.abort();
        }
    }
}

fn already_completed(id: EpisodeId) -> Error {
    Error::Conflict {
        kind: ObjectKind::Episode,
        id: id.to_string(),
        reason: "is already completed".into(),
    }
}

impl Inner {
    /// A conflict for an episode whose buffered steps the flush timer had refused, once.
    fn take_refused(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        match lock(&self.refused).remove(&(ns.clone(), id)) {
            Some(reason) => Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: id.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn mark_to_embed(&self, ns: &Namespace) {
        if self.retriever.embedder().is_some() {
            lock(&self.to_embed).insert(ns.clone());
            self.wake_embedder.notify_one();
        }
    }

    /// Writes a batch; on a transient failure the steps go back into the buffer (the timer
    /// retries) and the call succeeds, since the steps are held. Other failures are returned.
    async fn write_batch(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        batch: Vec<ExecutionStep>,
    ) -> Result<()> {
        match self.storage.append_steps(ns, id, &batch).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => {
                warn!(error = %e, episode_id = %id, steps = batch.len(), "step write failed; kept in buffer for retry");
                let mut buffers = lock(&self.buffers);
                if let Some(buf) = buffers.get_mut(&(ns.clone(), id)) {
                    let mut merged = batch;
                    merged.append(&mut buf.pending);
                    buf.pending = merged;
                }
                Ok(())
            }
            Err(e) => {
                lock(&self.buffers).remove(&(ns.clone(), id));
                Err(e)
            }
        }
    }

    /// Writes the episode's pending steps, if any. The caller holds the episode's write lock.
    async fn write_pending(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        let pending = lock(&self.buffers)
            .get_mut(&(ns.clone(), id))
            .map(|b| std::mem::take(&mut b.pending))
            .unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        self.write_batch(ns, id, pending).await
    }

    async fn flush_all(&self) -> Result<()> {
        let due: Vec<(BufferKey, Arc<tokio::sync::Mutex<()>>)> = lock(&self.buffers)
            .iter()
            .filter(|(_, b)| !b.pending.is_empty())
            .map(|(k, b)| (k.clone(), Arc::clone(&b.write)))
            .collect();
        let mut first_err = None;
        for ((ns, id), write) in due {
            let _writing = write.lock().await;
            let key = (ns.clone(), id);
            let n = lock(&self.buffers).get(&key).map_or(0, |b| b.pending.len());
            if let Err(e) = self.write_pending(&ns, id).await {
                warn!(error = %e, episode_id = %id, steps = n, "buffered steps refused by the store");
                lock(&self.refused).insert(
                    key,
                    format!("{n} steps logged earlier were refused when written: {e}"),
                );
                first_err.get_or_insert(e);
            }
        }
        // A transient failure leaves steps in the buffer: report it so `shutdown` is honest.
        let left: usize = lock(&self.buffers).values().map(|b| b.pending.len()).sum();
        match first_err {
            Some(e) => Err(e),
            None if left > 0 => Err(Error::storage(
                self.storage.backend_name(),
                "flush",
                true,
                format!("{left} steps could not be written yet and are still buffered"),
            )),
            None => Ok(()),
        }
    }
}

async fn flush_loop(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.config.steps.flush_interval) else {
        return;
    };
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let stop = async { strong.stop_flusher.notified().await };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop => return,
        }
        if strong.shut_down.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = strong
            .flush_all()
            .instrument(info_span!("flush_timer"))
            .await
        {
            debug!(error = %e, "timer flush incomplete");
        }
    }
}

/// Drains the embedding queue of every namespace marked since the last round; at start, of
/// every namespace in storage (a previous run may have left work). Failures are retried on
/// the next wake-up or after a pause.
async fn embed_loop(inner: Weak<Inner>) {
    let retry = std::time::Duration::from_secs(5);
    if let Some(strong) = inner.upgrade() {
        match strong.storage.list_namespaces().await {
            Ok(all) => lock(&strong.to_embed).extend(all),
            Err(e) => debug!(error = %e, "embedding task: namespaces unavailable at start"),
        }
    }
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.shut_down.load(Ordering::Acquire) {
            return;
        }
        let due: Vec<Namespace> = lock(&strong.to_embed).drain().collect();
        let mut failed = false;
        for ns in due {
            let span = info_span!("embed_queue", namespace = %ns);
            if let Err(e) = strong.retriever.embed_pending(&ns).instrument(span).await {
                warn!(error = %e, namespace = %ns, "embedding failed; will retry");
                lock(&strong.to_embed).insert(ns);
                failed = true;
            }
        }
        let wake = async { strong.wake_embedder.notified().await };
        if failed {
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                () = wake => {}
            }
        } else if lock(&strong.to_embed).is_empty() {
            wake.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InMemoryStorage, TaskContext, TaskType};

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
            let _completing = Completing::mark(&memory.inner.buffers, (ns.clone(), id));
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
}
