//! Tiered storage: a cache in front of the durable layer, a circuit breaker around it, and an
//! outbox that keeps acknowledged writes while it is unreachable.
//!
//! Reads: cache, then durable (concurrent misses on one key share one durable read), then fill
//! the cache (best effort). Writes: durable first, then update or invalidate the cache. A cache
//! error is logged and counted, never returned. When the durable layer fails transiently, or the
//! breaker is open, or earlier writes are still journaled, a write is appended to the fsynced
//! outbox and acknowledged; reads see it (read-your-writes) through an in-process overlay that is
//! rebuilt from the outbox at start-up. The sync task replays the outbox in order when the
//! breaker lets calls through, and acks only what the durable layer accepted.

mod breaker;
mod cache_ops;
mod coherence;
mod config;
mod overlay;
mod quota;
mod reads;
mod storage_impl;
mod sync;
mod watchdog;
mod writes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, instrument, warn};
use uuid::Uuid;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use cache_ops::{cache_values, learned_keys, learned_values};
use coherence::{Coherence, MAX_CHANGES, Verdict, log_feed_error, log_verdict};
pub use config::{SyncStatus, TieredConfig};
use overlay::Overlay;
use sync::sync_loop;

use memory_core::Namespace;
use memory_core::StepCompaction;
use memory_core::{
    Cache, CacheKey, CachedValue, EpisodeCompletion, GuardedItems, LearnedItems, Outbox,
    OutboxEntry, Storage, WriteOp,
};
use memory_core::{Episode, EpisodeId, ExecutionStep};
use memory_core::{Erasure, ErasureReport, ExistingLearned, LearnedChanges, LearningUpdate};
use memory_core::{Error, ObjectKind, Result};
use memory_core::{
    Feedback, FeedbackTarget, Heuristic, LearnedId, LearnedItem, Pattern, PatternId,
};
use memory_core::{SharedClock, SystemClock};

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    replayed: AtomicU64,
    dead_letters: AtomicU64,
    cache_errors: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncInfo {
    last_success: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// Why the last dead-lettered entry was refused.
    rejected: Option<String>,
}

type Inflight = Mutex<HashMap<(Namespace, CacheKey), Arc<OnceCell<Option<CachedValue>>>>>;

#[derive(Debug)]
struct Inner {
    durable: Arc<dyn Storage>,
    cache: Option<Arc<dyn Cache>>,
    outbox: Arc<dyn Outbox>,
    breaker: CircuitBreaker,
    config: TieredConfig,
    clock: SharedClock,
    overlay: Mutex<Overlay>,
    pending: AtomicU64,
    inflight: Inflight,
    /// Serializes every read-modify-write of a cached episode (write-through patches, the
    /// replay's refresh) and every fill of one from the durable layer, so no update is lost
    /// to an interleaving and no stale fill lands after a patch. Patches are additive, so a
    /// fill that read before a write is corrected by the write's patch, which waits here.
    episode_cache: tokio::sync::Mutex<()>,
    counters: Counters,
    sync_info: Mutex<SyncInfo>,
    wake: Notify,
    stop: Notify,
    /// Serializes replays (the task and explicit `sync_now` calls).
    replay_lock: tokio::sync::Mutex<()>,
    /// Where the cache stands in the durable layer's change feed.
    coherence: Coherence,
    /// Tells a slow call from a hung layer.
    watchdog: watchdog::Watchdog,
    /// What the journal holds against the quotas, and what the replay refused.
    quota: quota::QuotaBook,
}

/// The tiered composition. Use it as the memory's `Arc<dyn Storage>`, and call
/// [`TieredStorage::shutdown`] when done.
#[derive(Debug)]
pub struct TieredStorage {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Composes [`TieredStorage`]: the durable layer and the journal, and optionally a cache, the
/// settings (default [`TieredConfig`]) and a clock (default the system's).
#[derive(Debug)]
pub struct TieredBuilder {
    durable: Arc<dyn Storage>,
    outbox: Arc<dyn Outbox>,
    cache: Option<Arc<dyn Cache>>,
    config: TieredConfig,
    clock: SharedClock,
    durable_unreachable: bool,
}

impl TieredBuilder {
    /// With a cache in front of the durable layer.
    #[must_use]
    pub fn cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// With a cache, or none.
    #[must_use]
    pub fn maybe_cache(mut self, cache: Option<Arc<dyn Cache>>) -> Self {
        self.cache = cache;
        self
    }

    /// With these settings.
    #[must_use]
    pub fn config(mut self, config: TieredConfig) -> Self {
        self.config = config;
        self
    }

    /// With this clock.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Starts with the breaker open when `unreachable` (the durable layer's server did not
    /// answer when it was opened): writes are journaled at once instead of each waiting out
    /// the durable layer's call timeout, until a probe finds the server answering.
    #[must_use]
    pub fn durable_unreachable(mut self, unreachable: bool) -> Self {
        self.durable_unreachable = unreachable;
        self
    }

    /// Opens it: rebuilds the read-your-writes overlay from any journaled writes left by an
    /// earlier process and starts the sync task (inside a tokio runtime).
    pub async fn open(self) -> Result<Arc<TieredStorage>> {
        TieredStorage::open(self).await
    }
}

impl TieredStorage {
    /// Starts composing tiered storage over `durable`, journaling into `outbox` while it is
    /// unreachable; add a cache, settings and a clock, then [`TieredBuilder::open`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use memory_core::{InMemoryStorage, Outbox};
    /// use memory_tiered::{TieredConfig, TieredStorage};
    /// # async fn demo(outbox: Arc<dyn Outbox>) -> memory_core::Result<()> {
    /// let tiered = TieredStorage::builder(Arc::new(InMemoryStorage::new()), outbox)
    ///     .config(TieredConfig::default())
    ///     .open()
    ///     .await?;
    /// tiered.shutdown().await
    /// # }
    /// ```
    pub fn builder(durable: Arc<dyn Storage>, outbox: Arc<dyn Outbox>) -> TieredBuilder {
        TieredBuilder {
            durable,
            outbox,
            cache: None,
            config: TieredConfig::default(),
            clock: Arc::new(SystemClock),
            durable_unreachable: false,
        }
    }

    /// Composes the layers, rebuilds the read-your-writes overlay from any journaled writes left
    /// by an earlier process, and starts the sync task (inside a tokio runtime).
    async fn open(b: TieredBuilder) -> Result<Arc<Self>> {
        let TieredBuilder {
            durable,
            outbox,
            cache,
            config,
            clock,
            durable_unreachable,
        } = b;
        let coherence = Coherence::new(cache.as_ref().and_then(|c| c.opened_mark()));
        let inner = Arc::new(Inner {
            durable,
            cache,
            coherence,
            outbox,
            breaker: CircuitBreaker::new(config.breaker.clone()),
            config,
            clock,
            overlay: Mutex::new(Overlay::default()),
            pending: AtomicU64::new(0),
            inflight: Mutex::new(HashMap::new()),
            episode_cache: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            sync_info: Mutex::new(SyncInfo::default()),
            wake: Notify::new(),
            stop: Notify::new(),
            replay_lock: tokio::sync::Mutex::new(()),
            watchdog: watchdog::Watchdog::default(),
            quota: quota::QuotaBook::default(),
        });
        if durable_unreachable {
            inner.breaker.trip();
        }
        // Journals of processes that stopped before replaying them become this one's.
        if let Err(e) = inner.outbox.adopt().await {
            warn!(error = %e, "cannot adopt the journals of stopped processes now; retrying later");
        }
        inner.rebuild_overlay().await?;
        let task = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(sync_loop(Arc::downgrade(&inner))));
        Ok(Arc::new(TieredStorage {
            inner,
            task: Mutex::new(task),
        }))
    }

    /// Sync status: breaker, outbox length, last success and error, counters.
    pub fn status(&self) -> SyncStatus {
        let i = &self.inner;
        let info = lock(&i.sync_info);
        SyncStatus {
            breaker: i.breaker.state(),
            outbox_len: i.pending.load(Ordering::SeqCst),
            last_successful_sync: info.last_success,
            last_error: info.last_error.clone(),
            queued_total: i.counters.queued.load(Ordering::Relaxed),
            replayed_total: i.counters.replayed.load(Ordering::Relaxed),
            dead_letters: i.counters.dead_letters.load(Ordering::Relaxed),
            last_rejected: info.rejected.clone(),
            refused_over_quota: i.quota.refused.load(Ordering::Relaxed),
            cache_errors: i.counters.cache_errors.load(Ordering::Relaxed),
            cache: i.cache.as_ref().map(|c| c.stats()),
        }
    }

    /// Replays the outbox now (as far as the durable layer accepts); returns entries replayed.
    pub async fn sync_now(&self) -> Result<u64> {
        self.inner.replay().await
    }

    /// The durable layer.
    pub fn durable(&self) -> &Arc<dyn Storage> {
        &self.inner.durable
    }

    /// Stops the sync task after one last replay attempt. Journaled writes that could not be
    /// replayed stay in the outbox for the next process.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.stop.notify_one();
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
        if let Some(c) = &self.inner.cache
            && let Some(mark) = self.inner.coherence.state.lock().await.mark()
        {
            c.set_close_mark(mark);
        }
        let replayed = match self.inner.replay().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_transient() => {
                warn!(error = %e, pending = self.inner.pending.load(Ordering::SeqCst), "shutdown with journaled writes pending; they replay on the next start");
                Ok(())
            }
            Err(e) => Err(e),
        };
        // Cache writes queued behind their callers (by the replay too) land in the cache's
        // file now: a process that ends right after would drop them with its runtime, and the
        // file, not marked clean, would be emptied at the next open.
        if let Some(c) = &self.inner.cache {
            c.settle().await;
        }
        replayed
    }
}

impl Drop for TieredStorage {
    fn drop(&mut self) {
        self.inner.stop.notify_one();
    }
}

impl Inner {
    /// Runs a durable call (`op`, for the forwarding macro) through the breaker and the hang
    /// watchdog ([`watchdog`]).
    async fn guarded<T, F>(&self, _op: &'static str, f: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if let Err(r) = self.breaker.allow() {
            return Err(Error::CircuitOpen {
                retry_after: r.retry_after,
            });
        }
        // A call the watchdog ends counts as a failure (the breaker is already open).
        let r = tokio::select! {
            r = f => r,
            () = self.until_hung() => Err(Error::CircuitOpen {
                retry_after: self.config.breaker.open_for,
            }),
        };
        self.breaker
            .record(matches!(&r, Err(e) if e.is_transient()));
        r
    }
}
