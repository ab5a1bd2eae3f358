//! [`SelfLearningMemory`]: the facade agents and applications use. This file holds what it is
//! made of and its life cycle (start, background tasks, shutdown); its operations are grouped
//! by concern in `record.rs`, `read.rs` and `maintain.rs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::MemoryConfig;
use super::counts::QuotaCounts;
use super::history::HistoryCache;
use super::pending_estimates::PendingEstimates;
use super::steps::StepBuffers;
use super::tasks::every;
use crate::clock::{SharedClock, SystemClock};
use crate::consolidation::Consolidator;
use crate::embedding::Embedder;
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::policy::{RateLimiter, Redactor};
use crate::retrieval::Retriever;
use crate::storage::Storage;

/// When a process's schedule first looks for namespaces due for consolidation (catch-up after
/// a restart or a pause): soon, but not in the first seconds, which short commands finish in.
const CATCH_UP_AFTER: Duration = Duration::from_secs(10);
/// The most one scheduled run of one namespace may take; past it the run stops (each of its
/// writes is atomic) and the rest waits for the next interval.
const SCHEDULED_RUN_BUDGET: Duration = Duration::from_secs(300);

/// What a memory is made of, shared with its background tasks.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) config: MemoryConfig,
    pub(super) clock: SharedClock,
    pub(super) redactor: Redactor,
    pub(super) limiter: RateLimiter,
    pub(super) steps: StepBuffers,
    pub(super) counts: QuotaCounts,
    pub(super) retriever: Retriever,
    pub(super) consolidator: Consolidator,
    /// Step counts of recent successes per kind: the reward's efficiency baseline.
    pub(super) history: HistoryCache,
    /// Estimates `recommend` gave, waiting for the episode that follows.
    pub(super) pending_estimates: PendingEstimates,
    shut_down: AtomicBool,
    stop_flusher: Notify,
    stop_consolidation: Notify,
    /// Namespaces with episodes that may need embedding; the embed task drains them.
    to_embed: Mutex<HashSet<Namespace>>,
    wake_embedder: Notify,
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
    pub(super) inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    embed_task: Mutex<Option<JoinHandle<()>>>,
    consolidation_task: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        let consolidator = Consolidator::new(
            Arc::clone(&storage),
            config.consolidation.clone(),
            config.retention.clone(),
            config.learning.half_life_days,
            Arc::clone(&clock),
            embedder.clone(),
        );
        let retriever = Retriever::new(
            Arc::clone(&storage),
            embedder,
            Arc::clone(&clock),
            config.retrieval.clone(),
        );
        let inner = Arc::new(Inner {
            steps: StepBuffers::new(Arc::clone(&storage)),
            counts: QuotaCounts::new(Arc::clone(&storage)),
            history: HistoryCache::new(config.learning.history_window),
            pending_estimates: PendingEstimates::new(),
            storage,
            config,
            clock,
            redactor,
            limiter,
            retriever,
            consolidator,
            shut_down: AtomicBool::new(false),
            stop_flusher: Notify::new(),
            stop_consolidation: Notify::new(),
            to_embed: Mutex::new(HashSet::new()),
            wake_embedder: Notify::new(),
        });
        let runtime = tokio::runtime::Handle::try_current().ok();
        let flusher = runtime.as_ref().map(|rt| {
            rt.spawn(every(
                Arc::downgrade(&inner),
                inner.config.steps.flush_interval,
                inner.config.steps.flush_interval,
                |i| &i.stop_flusher,
                Inner::stopped,
                |i| async move {
                    let flush = i.steps.flush_all().instrument(info_span!("flush_timer"));
                    if let Err(e) = flush.await {
                        debug!(error = %e, "timer flush incomplete");
                    }
                },
            ))
        });
        let consolidation_task = runtime
            .as_ref()
            .filter(|_| inner.config.consolidation.schedule)
            .map(|rt| {
                let interval = inner.config.consolidation.interval;
                rt.spawn(every(
                    Arc::downgrade(&inner),
                    interval.min(CATCH_UP_AFTER),
                    interval,
                    |i| &i.stop_consolidation,
                    Inner::stopped,
                    |i| async move { i.consolidate_all().await },
                ))
            });
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

    /// The retriever (its embedder, settings and index size).
    pub fn retriever(&self) -> &Retriever {
        &self.inner.retriever
    }

    /// Why retrieval is degraded (no embedding model), if it is.
    pub fn retrieval_degraded(&self) -> Option<&str> {
        self.inner.retriever.degraded()
    }

    pub(super) fn ensure_running(&self) -> Result<()> {
        if self.inner.stopped() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
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
        self.inner.steps.flush_all().await
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

impl Inner {
    fn stopped(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Queues `ns` for the embedding task, when there is an embedder.
    pub(super) fn mark_to_embed(&self, ns: &Namespace) {
        if self.retriever.embedder().is_some() {
            lock(&self.to_embed).insert(ns.clone());
            self.wake_embedder.notify_one();
        }
    }

    /// A scheduled consolidation of every namespace in storage that is due and claimed by this
    /// process (`Consolidator::run_if_due`); a failed run is logged and retried at the next
    /// tick.
    async fn consolidate_all(&self) {
        let namespaces = match self.storage.list_namespaces().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "scheduled consolidation: namespaces unavailable");
                return;
            }
        };
        let interval = self.config.consolidation.interval;
        for ns in namespaces {
            let span = info_span!("consolidation_schedule", namespace = %ns);
            let run = self.consolidator.run_if_due(&ns, interval).instrument(span);
            match tokio::time::timeout(SCHEDULED_RUN_BUDGET, run).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, namespace = %ns, "scheduled consolidation failed; retrying next interval");
                }
                Err(_) => warn!(
                    namespace = %ns,
                    "scheduled consolidation stopped at its time budget; its writes so far stand, the rest waits for the next interval"
                ),
            }
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
        if strong.stopped() {
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
