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
mod coherence;
mod overlay;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, instrument, warn};
use uuid::Uuid;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use coherence::{Coherence, MAX_CHANGES, Verdict, log_feed_error, log_verdict};
use overlay::Overlay;

use memory_core::Namespace;
use memory_core::StepCompaction;
use memory_core::{
    Cache, CacheKey, CacheStats, CachedValue, EpisodeCompletion, GuardedItems, LearnedItems,
    Outbox, OutboxEntry, Storage, WriteOp,
};
use memory_core::{Episode, EpisodeId, ExecutionStep};
use memory_core::{Error, ObjectKind, Result};
use memory_core::{ExistingLearned, LearnedChanges, LearningUpdate};
use memory_core::{
    Feedback, FeedbackTarget, Heuristic, LearnedId, LearnedItem, Pattern, PatternId,
};
use memory_core::{SharedClock, SystemClock};

/// Tiered-storage settings.
///
/// # Default
/// Default breaker; replay in batches of 256; the sync task wakes every 1 s (and at once when a
/// write is journaled); replica sync every 30 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TieredConfig {
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Outbox entries replayed per batch.
    pub replay_batch: usize,
    /// How often the sync task runs.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub sync_interval: Duration,
    /// How often the durable layer's own sync (embedded replicas) runs.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub replica_sync_interval: Duration,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            breaker: BreakerConfig::default(),
            replay_batch: 256,
            sync_interval: Duration::from_secs(1),
            replica_sync_interval: Duration::from_secs(30),
        }
    }
}

/// What the sync task reports (`memory sync status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The breaker's state.
    pub breaker: BreakerState,
    /// Writes waiting in the outbox.
    pub outbox_len: u64,
    /// Last time the outbox was seen empty after a replay, or a replica sync succeeded.
    pub last_successful_sync: Option<DateTime<Utc>>,
    /// The last replay or sync error.
    pub last_error: Option<String>,
    /// Writes journaled since start.
    pub queued_total: u64,
    /// Writes replayed since start.
    pub replayed_total: u64,
    /// Journaled writes the memory refused on replay for what they are (a conflict, such as a
    /// step for an episode another writer completed; an episode not found): logged at error
    /// level with the entry, then removed so the journal can proceed. Storage failures never
    /// remove an entry: it is tried again.
    pub dead_letters: u64,
    /// Why the last of them was rejected.
    pub last_rejected: Option<String>,
    /// Cache errors swallowed since start.
    pub cache_errors: u64,
    /// Cache counters, if a cache is configured.
    pub cache: Option<CacheStats>,
}

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
        });
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

async fn sync_loop(inner: Weak<Inner>) {
    let (interval, replica_every) = match inner.upgrade() {
        Some(i) => (i.config.sync_interval, i.config.replica_sync_interval),
        None => return,
    };
    let mut last_replica_sync = tokio::time::Instant::now();
    let mut last_adoption = tokio::time::Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = strong.wake.notified() => {}
            () = strong.stop.notified() => return,
        }
        if last_adoption.elapsed() >= ADOPT_EVERY {
            last_adoption = tokio::time::Instant::now();
            strong.adopt_orphans().await;
        }
        if let Err(e) = strong.replay().await {
            debug!(error = %e, "replay incomplete");
        }
        if last_replica_sync.elapsed() >= replica_every {
            last_replica_sync = tokio::time::Instant::now();
            strong.replica_sync().await;
        }
    }
}

/// How often the sync task looks for journals of processes that stopped.
const ADOPT_EVERY: Duration = Duration::from_secs(2);

impl Inner {
    /// Takes in the journals of processes that stopped (see [`Outbox::adopt`]): their entries
    /// join this process's journal, overlay and replay.
    async fn adopt_orphans(&self) {
        match self.outbox.adopt().await {
            Ok(adopted) if !adopted.is_empty() => {
                self.overlay_journaled(&adopted);
                self.pending
                    .fetch_add(adopted.len() as u64, Ordering::SeqCst);
                self.counters
                    .queued
                    .fetch_add(adopted.len() as u64, Ordering::Relaxed);
                self.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot adopt the journals of stopped processes now"),
        }
    }

    /// Puts journaled entries (found at start-up or adopted) into the read-your-writes
    /// overlay, completions merged provisionally against what the overlay knows.
    fn overlay_journaled(&self, entries: &[(u64, OutboxEntry)]) {
        let mut ov = lock(&self.overlay);
        for (seq, entry) in entries {
            let learned = match &entry.op {
                WriteOp::CompleteEpisode(c) => {
                    let existing = ov.existing_for(&entry.namespace, c, ExistingLearned::default());
                    Some(c.learning.apply(existing))
                }
                _ => None,
            };
            ov.apply(&entry.namespace, *seq, &entry.op, learned.as_ref());
        }
    }

    fn cache_error(&self, op: &'static str, e: &Error) {
        self.counters.cache_errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %e, op, "cache error ignored");
    }

    /// Puts `v`, prepared from durable state read or written after epoch `since`; if the
    /// change feed dropped anything meanwhile, drops it again (it may be older than what
    /// another writer committed).
    async fn cache_put(&self, ns: &Namespace, v: CachedValue, since: u64) {
        self.cache_put_many(ns, std::slice::from_ref(&v), since)
            .await;
    }

    /// Puts the changed learned items, in one cache commit.
    async fn cache_put_changes(&self, ns: &Namespace, changes: &LearnedChanges, since: u64) {
        let values: Vec<CachedValue> = learned_values(changes).collect();
        self.cache_put_many(ns, &values, since).await;
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cache_put_many(&self, ns: &Namespace, values: &[CachedValue], since: u64) {
        if values.is_empty() {
            return;
        }
        let Some(c) = &self.cache else {
            return;
        };
        if let Err(e) = c.put_many(ns, values).await {
            self.cache_error("put", &e);
        }
        if self.coherence.epoch() != since {
            let keys: Vec<(Namespace, CacheKey)> =
                values.iter().map(|v| (ns.clone(), v.key())).collect();
            if let Err(e) = c.invalidate_many(&keys).await {
                self.cache_error("invalidate", &e);
            }
        }
    }

    /// Brings the cache up to date with other writers before a cached read (see
    /// [`coherence`]). Errors are logged: an unreachable feed leaves the copies as they are.
    async fn refresh(&self) {
        let Some(cache) = &self.cache else {
            return;
        };
        if self.coherence.unfed() {
            return;
        }
        let mut state = self.coherence.state.lock().await;
        if state.known() {
            match self.durable.may_have_changed().await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    log_feed_error(&e);
                    return;
                }
            }
        }
        let after = state.after();
        let limit = if after.is_some() { MAX_CHANGES } else { 0 };
        let set = match self.durable.changes_since(after.unwrap_or(0), limit).await {
            Ok(Some(set)) => set,
            Ok(None) => {
                self.coherence.set_unfed();
                return;
            }
            Err(e) => {
                log_feed_error(&e);
                return;
            }
        };
        let verdict = state.take(set);
        log_verdict(&verdict, cache.stats().entries);
        match verdict {
            Verdict::Current => {}
            Verdict::Drop(keys) => {
                if keys.is_empty() {
                    return;
                }
                self.coherence.advance();
                if let Err(e) = cache.invalidate_many(&keys).await {
                    self.cache_error("invalidate", &e);
                }
            }
            Verdict::Clear(_) => {
                self.coherence.advance();
                if cache.stats().entries > 0
                    && let Err(e) = cache.clear().await
                {
                    self.cache_error("clear", &e);
                }
            }
        }
    }

    async fn cache_invalidate(&self, ns: &Namespace, key: &CacheKey) {
        if let Some(c) = &self.cache
            && let Err(e) = c.invalidate(ns, key).await
        {
            self.cache_error("invalidate", &e);
        }
    }

    async fn cache_invalidate_many(&self, keys: &[(Namespace, CacheKey)]) {
        if keys.is_empty() {
            return;
        }
        if let Some(c) = &self.cache
            && let Err(e) = c.invalidate_many(keys).await
        {
            self.cache_error("invalidate", &e);
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cache_get(&self, ns: &Namespace, key: &CacheKey) -> Option<CachedValue> {
        let c = self.cache.as_ref()?;
        match c.get(ns, key).await {
            Ok(v) => v,
            Err(e) => {
                self.cache_error("get", &e);
                None
            }
        }
    }

    /// Runs a durable call (`op`, for the forwarding macro) through the breaker.
    async fn guarded<T, F>(&self, _op: &'static str, f: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if let Err(r) = self.breaker.allow() {
            return Err(Error::CircuitOpen {
                retry_after: r.retry_after,
            });
        }
        let r = f.await;
        self.breaker
            .record(matches!(&r, Err(e) if e.is_transient()));
        r
    }

    /// Cache, then durable (one shared read per key), then fill.
    async fn cached_get<F, Fut>(
        &self,
        ns: &Namespace,
        key: CacheKey,
        load: F,
    ) -> Result<Option<CachedValue>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<CachedValue>>>,
    {
        self.refresh().await;
        if let Some(v) = self.cache_get(ns, &key).await {
            return Ok(Some(v));
        }
        let cell = {
            let mut inflight = lock(&self.inflight);
            inflight
                .entry((ns.clone(), key.clone()))
                .or_default()
                .clone()
        };
        let is_episode = matches!(key, CacheKey::Episode(_));
        let result = cell
            .get_or_try_init(|| async {
                let _filling = if is_episode {
                    Some(self.episode_cache.lock().await)
                } else {
                    None
                };
                let since = self.coherence.epoch();
                let v = self.guarded("get", load()).await?;
                if let Some(v) = &v {
                    self.cache_put(ns, v.clone(), since).await;
                }
                Ok::<_, Error>(v)
            })
            .await
            .cloned();
        {
            let mut inflight = lock(&self.inflight);
            if inflight
                .get(&(ns.clone(), key.clone()))
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                inflight.remove(&(ns.clone(), key));
            }
        }
        result
    }

    fn journaling(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Appends a write to the outbox (durable on return) and to the overlay.
    async fn enqueue(
        &self,
        ns: &Namespace,
        op: WriteOp,
        learned: Option<&LearnedChanges>,
    ) -> Result<()> {
        let entry = OutboxEntry {
            idempotency_key: Uuid::now_v7().to_string(),
            namespace: ns.clone(),
            op,
        };
        let since = self.coherence.epoch();
        let seq = self.outbox.append(&entry).await?;
        lock(&self.overlay).apply(ns, seq, &entry.op, learned);
        // Patch the cached copy now, as for a durable write: otherwise, between the replay
        // releasing this entry from the overlay and refreshing the cache, readers would see
        // the cached copy from before the write (e.g. an episode not yet completed).
        self.after_write(ns, &entry.op, since).await;
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        debug!(seq, "write journaled in the outbox");
        Ok(())
    }

    /// Applies one journaled write to the durable layer (idempotent by the trait contract).
    async fn apply_durable(&self, ns: &Namespace, op: &WriteOp) -> Result<()> {
        let d = &self.durable;
        match op {
            WriteOp::CreateEpisode(e) => d.create_episode(ns, e).await,
            WriteOp::AppendSteps { episode_id, steps } => {
                d.append_steps(ns, *episode_id, steps).await
            }
            WriteOp::CompleteEpisode(c) => d.complete_episode(ns, c).await.map(|_| ()),
            WriteOp::RecordFeedback(f) => d.record_feedback(ns, f).await,
            WriteOp::PutLearned(items) => d.put_learned(ns, items).await,
            WriteOp::PutEmbedding {
                episode_id,
                model,
                vector,
            } => d.put_embedding(ns, *episode_id, model, vector).await,
        }
    }

    async fn rebuild_overlay(&self) -> Result<()> {
        let entries = self.outbox.peek(usize::MAX).await?;
        self.overlay_journaled(&entries);
        self.pending
            .store(self.outbox.len().await?, Ordering::SeqCst);
        if !entries.is_empty() {
            info!(
                entries = entries.len(),
                "journaled writes from an earlier process will be replayed"
            );
        }
        Ok(())
    }

    /// Replays journaled writes in order while the durable layer accepts them.
    #[instrument(skip_all)]
    async fn replay(&self) -> Result<u64> {
        let _guard = self.replay_lock.lock().await;
        let mut replayed = 0u64;
        loop {
            if self.pending.load(Ordering::SeqCst) == 0 {
                self.sync_succeeded();
                if replayed > 0
                    && let Err(e) = self.outbox.release_if_empty().await
                {
                    warn!(error = %e, "cannot remove the emptied journal");
                }
                return Ok(replayed);
            }
            let batch = self.outbox.peek(self.config.replay_batch.max(1)).await?;
            if batch.is_empty() {
                self.pending.store(0, Ordering::SeqCst);
                continue;
            }
            let mut acked_to = None;
            let mut failure = None;
            let mut applied = 0u64;
            let since = self.coherence.epoch();
            for (seq, entry) in &batch {
                match self
                    .guarded("replay", self.apply_durable(&entry.namespace, &entry.op))
                    .await
                {
                    Ok(()) => {
                        acked_to = Some(*seq);
                        applied += 1;
                    }
                    // Only the memory's own verdicts on the write itself (a conflict, an
                    // episode not found, input over a limit) are final. A storage failure,
                    // even one the driver calls permanent (a server answering 404 while it
                    // stops or starts), keeps the entry for the next attempt: an acknowledged
                    // write is never dropped for the state of a server.
                    Err(e) if e.is_transient() || matches!(e, Error::Storage { .. }) => {
                        failure = Some(e);
                        break;
                    }
                    Err(e) => {
                        let body = serde_json::to_string(entry).unwrap_or_default();
                        error!(error = %e, seq, entry = %body, "journaled write rejected by the durable layer; moving past it");
                        self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                        let why = format!("entry {seq} rejected: {e}");
                        let mut info = lock(&self.sync_info);
                        info.last_error = Some(why.clone());
                        info.rejected = Some(why);
                        acked_to = Some(*seq);
                    }
                }
            }
            if let Some(seq) = acked_to {
                self.outbox.ack(seq).await?;
                self.pending
                    .store(self.outbox.len().await?, Ordering::SeqCst);
                // Count this batch only: `replayed` totals the whole call.
                replayed += applied;
                self.counters.replayed.fetch_add(applied, Ordering::Relaxed);
                // The durable layer now holds base + delta. The cached copies learn it before
                // the overlay lets go: a read in between would otherwise find the copy from
                // before the journaled writes (an episode completed while the server was
                // away would read as in progress). Until then reads fold the overlay over
                // the patched copy, which changes nothing (folding is idempotent).
                let settled = lock(&self.overlay).settled_up_to(seq);
                self.patch_cached(settled, since).await;
                let released = lock(&self.overlay).release_up_to(seq);
                for (ns, key) in released.keys {
                    self.cache_invalidate(&ns, &key).await;
                }
            }
            if let Some(e) = failure {
                lock(&self.sync_info).last_error = Some(e.to_string());
                return Err(e);
            }
        }
    }

    fn sync_succeeded(&self) {
        lock(&self.sync_info).last_success = Some(self.clock.now());
    }

    async fn replica_sync(&self) {
        match self.guarded("durable", self.durable.sync()).await {
            Ok(()) => self.sync_succeeded(),
            Err(e) => {
                warn!(error = %e, "replica sync failed");
                lock(&self.sync_info).last_error = Some(e.to_string());
            }
        }
    }

    /// A write: durable first (while nothing is journaled and the breaker allows), then the
    /// cache; on a transient failure, the outbox.
    async fn write(&self, ns: &Namespace, op: WriteOp) -> Result<()> {
        if let Some(((), since)) = self.try_durable(self.apply_durable(ns, &op)).await? {
            self.after_write(ns, &op, since).await;
            return Ok(());
        }
        self.enqueue(ns, op, None).await
    }

    /// The durable half of a write: runs `durable` through the breaker unless writes are
    /// being journaled. `Some((its result, the coherence epoch before it))` once stored,
    /// `None` when the write must be journaled (journaling, or a transient failure); a
    /// permanent failure is returned.
    async fn try_durable<T>(
        &self,
        durable: impl Future<Output = Result<T>>,
    ) -> Result<Option<(T, u64)>> {
        if self.journaling() {
            return Ok(None);
        }
        let since = self.coherence.epoch();
        match self.guarded("write", durable).await {
            Ok(v) => Ok(Some((v, since))),
            Err(e) if !e.is_transient() => Err(e),
            Err(e) => {
                warn!(error = %e, "durable write failed; journaling it");
                Ok(None)
            }
        }
    }

    /// Folds journaled deltas the durable layer now holds into the cached episodes and drops
    /// the cached learned items they changed.
    async fn patch_cached(&self, settled: overlay::Released, since: u64) {
        for (ns, key) in &settled.keys {
            self.cache_invalidate(ns, key).await;
        }
        let _patching = self.episode_cache.lock().await;
        for (ns, id, delta) in settled.episodes {
            let key = CacheKey::Episode(id);
            let base = match self.cache_get(&ns, &key).await {
                Some(CachedValue::Episode(e)) => Some(Arc::unwrap_or_clone(e)),
                _ => None,
            };
            match delta.fold(base) {
                Some(e) => {
                    self.cache_put(&ns, CachedValue::Episode(Arc::new(e)), since)
                        .await;
                }
                None => self.cache_invalidate(&ns, &key).await,
            }
        }
    }

    /// The cached in-progress episode `c` completes, patched, to put back; an absent one is
    /// invalidated (a fill may be racing) and a completed one left alone. Call with the
    /// episode-patching lock held.
    async fn completed_in_cache(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Option<CachedValue> {
        let key = CacheKey::Episode(c.episode_id);
        match self.cache_get(ns, &key).await {
            Some(CachedValue::Episode(mut shared)) if !shared.is_completed() => {
                // Copy on write: readers holding the cached episode keep what they read.
                let e = Arc::make_mut(&mut shared);
                e.add_steps(&c.steps);
                e.outcome = Some(c.outcome.clone());
                e.reward = Some(c.reward.clone());
                e.reflection = Some(c.reflection.clone());
                e.completed_at = Some(c.completed_at);
                Some(CachedValue::Episode(shared))
            }
            Some(_) => None,
            None => {
                self.cache_invalidate(ns, &key).await;
                None
            }
        }
    }

    /// After a durable completion: the patched episode goes to the cache, and so do the
    /// learned items it changed over a durable layer whose reads need a server (in one
    /// commit), so that they stay readable through an outage. Over a local file the changed
    /// items are only dropped from the cache, not written to it: reading one back from the
    /// file is cheap and few are read by id soon after, while writing every changed item
    /// through took about a quarter of an ingest's CPU. Dropping a key the cache file does not hold
    /// (every item a completion creates) needs no cache transaction.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn after_complete(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
        changes: Option<&LearnedChanges>,
        since: u64,
    ) {
        let _patching = self.episode_cache.lock().await;
        let mut values: Vec<CachedValue> =
            self.completed_in_cache(ns, c).await.into_iter().collect();
        let mut stale: Vec<(Namespace, CacheKey)> = Vec::new();
        if let Some(ch) = changes {
            if self.durable.reads_need_a_server() {
                values.extend(learned_values(ch));
            } else {
                stale.extend(learned_keys(ch).map(|k| (ns.clone(), k)));
            }
        }
        self.cache_put_many(ns, &values, since).await;
        self.cache_invalidate_many(&stale).await;
    }

    /// Keeps the cache in step with a write the durable layer accepted. Over a durable layer
    /// whose reads need a server, in-progress episodes are patched in place (write-through),
    /// so that an episode started before an outage can still be read, and completed, during
    /// it; over a local file, a new episode is not cached and a step batch drops the cached
    /// copy.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn after_write(&self, ns: &Namespace, op: &WriteOp, since: u64) {
        // Over a local file a create touches no cached episode, so it does not queue here
        // behind the patches of concurrent writes.
        let caches_creates = self.cache.is_some() && self.durable.reads_need_a_server();
        let _patching = match op {
            WriteOp::CreateEpisode(_) if !caches_creates => None,
            WriteOp::CreateEpisode(_)
            | WriteOp::AppendSteps { .. }
            | WriteOp::CompleteEpisode(_) => Some(self.episode_cache.lock().await),
            _ => None,
        };
        match op {
            WriteOp::CreateEpisode(e) => {
                // A create is idempotent: if the id existed, the stored episode wins, so only
                // fill an empty slot. Over a local file the new episode is not cached: its
                // first step batch would drop the copy, and reading it back is cheap.
                if caches_creates && self.cache_get(ns, &CacheKey::Episode(e.id)).await.is_none() {
                    self.cache_put(ns, CachedValue::Episode(Arc::new(e.clone())), since)
                        .await;
                }
            }
            WriteOp::AppendSteps { episode_id, steps } => {
                self.after_append(ns, *episode_id, steps, since).await;
            }
            WriteOp::CompleteEpisode(c) => {
                if let Some(e) = self.completed_in_cache(ns, c).await {
                    self.cache_put(ns, e, since).await;
                }
            }
            WriteOp::RecordFeedback(f) => {
                let key = match &f.target {
                    FeedbackTarget::Pattern(id) => CacheKey::Pattern(id.clone()),
                    FeedbackTarget::Heuristic(id) => CacheKey::Heuristic(id.clone()),
                };
                self.cache_invalidate(ns, &key).await;
            }
            WriteOp::PutLearned(items) => {
                let values: Vec<CachedValue> =
                    cache_values(items.patterns.iter(), items.heuristics.iter()).collect();
                self.cache_put_many(ns, &values, since).await;
            }
            WriteOp::PutEmbedding { .. } => {}
        }
    }

    /// After a durable step batch: the cached episode is dropped or patched. Call with the
    /// episode-patching lock held.
    async fn after_append(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
        since: u64,
    ) {
        let key = CacheKey::Episode(episode_id);
        // Step batches patch the cached in-progress episode only when the durable layer's
        // reads need a server (a restarted process reads it during an outage).
        if !self.durable.reads_need_a_server() {
            // Read back from the local durable file when next asked for: cheaper than copying
            // and re-encoding the whole episode on every batch.
            self.cache_invalidate(ns, &key).await;
        } else if let Some(CachedValue::Episode(mut e)) = self.cache_get(ns, &key).await {
            // Numbered as the store numbered them, if the cached copy was current; if another
            // writer had added steps, the change feed drops this copy before the next read.
            Arc::make_mut(&mut e).add_steps(steps);
            self.cache_put(ns, CachedValue::Episode(e), since).await;
        }
    }

    /// The episode as the reader should see it: overlay over (cache or durable).
    async fn read_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Arc<Episode>>> {
        let (in_overlay, created_here) = {
            let ov = lock(&self.overlay);
            (ov.has_episode(ns, id), ov.created_here(ns, id))
        };
        if in_overlay {
            let base = if created_here {
                None
            } else {
                match self.load_episode(ns, id).await {
                    Ok(b) => b,
                    Err(e) if e.is_transient() => None,
                    Err(e) => return Err(e),
                }
            };
            let merged = lock(&self.overlay).episode(ns, id, base.map(Arc::unwrap_or_clone));
            return match merged {
                Some(e) => Ok(Some(Arc::new(e))),
                None => Err(Error::CircuitOpen {
                    retry_after: self.config.breaker.open_for,
                }),
            };
        }
        self.load_episode(ns, id).await
    }

    /// [`Inner::read_episode`] of several: journaled ones one by one, the rest from the
    /// cache, and what it misses from the durable layer in one call (filled into the cache as
    /// a single read would be). Without the single-flight of one read: two processes' misses of
    /// one episode may both read it, which costs a read, never a stale copy (the fill is
    /// checked against the change feed like any other).
    async fn read_episodes(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
    ) -> Result<Vec<Option<Arc<Episode>>>> {
        self.refresh().await;
        let mut out = vec![None; ids.len()];
        let mut misses = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            if lock(&self.overlay).has_episode(ns, id) {
                out[k] = self.read_episode(ns, id).await?;
            } else if let Some(CachedValue::Episode(e)) =
                self.cache_get(ns, &CacheKey::Episode(id)).await
            {
                out[k] = Some(e);
            } else {
                misses.push(k);
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<EpisodeId> = misses.iter().map(|&k| ids[k]).collect();
        let _filling = self.episode_cache.lock().await;
        let since = self.coherence.epoch();
        let read = self
            .guarded("get_episodes", self.durable.get_episodes(ns, &wanted))
            .await?;
        for (k, episode) in misses.into_iter().zip(read) {
            if let Some(e) = episode {
                self.cache_put(ns, CachedValue::Episode(Arc::clone(&e)), since)
                    .await;
                out[k] = Some(e);
            }
        }
        Ok(out)
    }

    /// `get_learned` of several: journaled ones from the overlay, the rest from the cache,
    /// and what it misses from the durable layer in one call (filled into the cache).
    async fn read_learned_many(
        &self,
        ns: &Namespace,
        ids: &[LearnedId],
    ) -> Result<Vec<Option<LearnedItem>>> {
        self.refresh().await;
        let mut out = vec![None; ids.len()];
        let mut misses = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            if let Some(item) = lock(&self.overlay).learned(ns, id) {
                out[k] = Some(item);
                continue;
            }
            let cached = match CacheKey::for_learned(id) {
                Some(key) => self.cache_get(ns, &key).await,
                None => None,
            };
            match cached.and_then(CachedValue::into_learned) {
                Some(item) => out[k] = Some(item),
                None => misses.push(k),
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<LearnedId> = misses.iter().map(|&k| ids[k].clone()).collect();
        let since = self.coherence.epoch();
        let read = self
            .guarded(
                "get_learned_many",
                self.durable.get_learned_many(ns, &wanted),
            )
            .await?;
        let mut fill = Vec::new();
        for (k, item) in misses.into_iter().zip(read) {
            if let Some(item) = item {
                if CacheKey::for_learned(&ids[k]).is_some() {
                    fill.extend(CachedValue::from_learned(item.clone()));
                }
                out[k] = Some(item);
            }
        }
        self.cache_put_many(ns, &fill, since).await;
        Ok(out)
    }

    async fn load_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Arc<Episode>>> {
        let v = self
            .cached_get(ns, CacheKey::Episode(id), || async {
                Ok(self
                    .durable
                    .get_episode(ns, id)
                    .await?
                    .map(CachedValue::Episode))
            })
            .await?;
        Ok(match v {
            Some(CachedValue::Episode(e)) => Some(e),
            _ => None,
        })
    }
}

memory_core::forward_storage! {
    impl[] EpisodeStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward query_episodes, search_episodes, namespace_stats, list_namespaces, ping;
    {
    fn reads_need_a_server(&self) -> bool {
        self.inner.durable.reads_need_a_server()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        self.inner
            .write(ns, WriteOp::CreateEpisode(episode.clone()))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn append_steps(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()> {
        let i = &self.inner;
        if i.journaling() || i.breaker.state() == BreakerState::Open {
            // Check what can be checked locally before acknowledging into the journal.
            if let Ok(Some(e)) = i.read_episode(ns, episode_id).await
                && e.is_completed()
            {
                return Err(Error::Conflict {
                    kind: ObjectKind::Episode,
                    id: episode_id.to_string(),
                    reason: "is already completed; steps can no longer be added".into(),
                });
            }
        }
        // As `Inner::write`, without copying the batch into a `WriteOp`: only a journaled
        // write needs its own copy.
        let durable = i.durable.append_steps(ns, episode_id, steps);
        if let Some(((), since)) = i.try_durable(durable).await? {
            let _patching = i.episode_cache.lock().await;
            i.after_append(ns, episode_id, steps, since).await;
            return Ok(());
        }
        let op = WriteOp::AppendSteps {
            episode_id,
            steps: steps.to_vec(),
        };
        i.enqueue(ns, op, None).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn complete_episode(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>> {
        let i = &self.inner;
        if let Some((changes, since)) = i.try_durable(i.durable.complete_episode(ns, c)).await? {
            i.after_complete(ns, c, changes.as_ref(), since).await;
            return Ok(changes);
        }
        // Journaled: refuse what is known to be a replay, merge provisionally against what is
        // known locally.
        if let Ok(Some(e)) = i.read_episode(ns, c.episode_id).await
            && e.is_completed()
        {
            return Ok(None);
        }
        let mut known = ExistingLearned::default();
        for id in c.learning.pattern_ids() {
            if let Some(CachedValue::Pattern(p)) = i.cache_get(ns, &CacheKey::Pattern(id)).await {
                known.patterns.push(p);
            }
        }
        let existing = lock(&i.overlay).existing_for(ns, c, known);
        let mut changes = c.learning.apply(existing);
        changes.provisional = true;
        // A replay cannot compute the learning again, so it must not be refused for steps
        // another writer added meanwhile: the journaled completion checks no step count.
        let journaled = EpisodeCompletion {
            expected_steps: None,
            ..c.clone()
        };
        i.enqueue(ns, WriteOp::CompleteEpisode(journaled), Some(&changes))
            .await?;
        Ok(Some(changes))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Arc<Episode>>> {
        self.inner.read_episode(ns, id).await
    }

    async fn get_episodes(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
    ) -> Result<Vec<Option<Arc<Episode>>>> {
        self.inner.read_episodes(ns, ids).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.replay().await?;
        self.inner.guarded("sync", self.inner.durable.sync()).await
    }
    }
}

memory_core::forward_storage! {
    impl[] LearningStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward query_learned, list_feedback;
    {
    async fn apply_learning(
        &self,
        ns: &Namespace,
        update: &LearningUpdate,
    ) -> Result<LearnedChanges> {
        // Not idempotent, so never journaled: it needs the durable layer now.
        let since = self.inner.coherence.epoch();
        let changes = self
            .inner
            .guarded("apply_learning", self.inner.durable.apply_learning(ns, update))
            .await?;
        self.inner.cache_put_changes(ns, &changes, since).await;
        Ok(changes)
    }

    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        self.inner
            .write(ns, WriteOp::PutLearned(items.clone()))
            .await
    }

    /// Never journaled: the guard needs the durable layer (a consolidation run fails with a
    /// transient error while it is unreachable). The written groups' items are put in the
    /// cache; the others were changed by another writer, whose change the feed brings.
    async fn put_learned_unless_changed(
        &self,
        ns: &Namespace,
        groups: &[GuardedItems],
    ) -> Result<Vec<usize>> {
        let since = self.inner.coherence.epoch();
        let refused = self
            .inner
            .guarded(
                "put_learned_unless_changed",
                self.inner.durable.put_learned_unless_changed(ns, groups),
            )
            .await?;
        let written = groups
            .iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(i))
            .map(|(_, g)| &g.write);
        let values: Vec<CachedValue> = written
            .flat_map(|w| cache_values(w.patterns.iter(), w.heuristics.iter()))
            .collect();
        self.inner.cache_put_many(ns, &values, since).await;
        Ok(refused)
    }

    async fn record_feedback(&self, ns: &Namespace, feedback: &Feedback) -> Result<()> {
        self.inner
            .write(ns, WriteOp::RecordFeedback(feedback.clone()))
            .await
    }

    async fn get_learned_many(
        &self,
        ns: &Namespace,
        ids: &[LearnedId],
    ) -> Result<Vec<Option<LearnedItem>>> {
        self.inner.read_learned_many(ns, ids).await
    }

    async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>> {
        let i = &self.inner;
        if let Some(item) = lock(&i.overlay).learned(ns, id) {
            return Ok(Some(item));
        }
        let Some(key) = CacheKey::for_learned(id) else {
            return i.guarded("get_learned", i.durable.get_learned(ns, id)).await;
        };
        let v = i
            .cached_get(ns, key, || async {
                Ok(i.durable
                    .get_learned(ns, id)
                    .await?
                    .and_then(CachedValue::from_learned))
            })
            .await?;
        Ok(v.and_then(CachedValue::into_learned))
    }
    }
}

memory_core::forward_storage! {
    impl[] EmbeddingStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward get_embedding, episodes_missing_embedding, scan_embeddings, embedding_coverage,
        index_log_head, index_changes, get_index_snapshot, put_index_snapshot;
    {
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        self.inner
            .write(
                ns,
                WriteOp::PutEmbedding {
                    episode_id,
                    model: model.to_owned(),
                    vector: vector.to_vec(),
                },
            )
            .await
    }
    }
}

// Maintenance calls go to the durable layer through the breaker and are never journaled:
// while it is unreachable they fail with a transient error (a consolidation run is simply
// retried later). Pattern and heuristic writes of consolidation go through `put_learned`,
// which keeps the cache in step. Index snapshots are not journaled either: a snapshot is
// derived data, and one that cannot be written now is written again later.

memory_core::forward_storage! {
    impl[] MaintenanceStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward record_consolidation, claim_consolidation, list_consolidations, put_metrics_snapshot,
        list_metrics_snapshots, put_estimate, get_estimate, query_estimates, record_restore,
        list_restores;
    {
    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction> {
        // Durable first; then the cached copies of the compacted episodes go (they still hold
        // the outputs). Never journaled: a retention pass simply fails while the durable
        // layer is unreachable.
        let done = self
            .inner
            .guarded(
                "compact_step_outputs",
                self.inner
                    .durable
                    .compact_step_outputs(ns, completed_before, max_episodes),
            )
            .await?;
        let _patching = self.inner.episode_cache.lock().await;
        for id in &done.episode_ids {
            self.inner
                .cache_invalidate(ns, &CacheKey::Episode(*id))
                .await;
        }
        Ok(done)
    }

    async fn compact_merged_patterns(&self, ns: &Namespace, ids: &[PatternId]) -> Result<u64> {
        // Durable first (never journaled), then the cached copies of every id asked about
        // go: a row that stayed is read again from the durable layer.
        let removed = self
            .inner
            .guarded(
                "compact_merged_patterns",
                self.inner.durable.compact_merged_patterns(ns, ids),
            )
            .await?;
        for id in ids {
            self.inner
                .cache_invalidate(ns, &CacheKey::Pattern(id.clone()))
                .await;
        }
        Ok(removed)
    }

    async fn compact_pruned_patterns(
        &self,
        ns: &Namespace,
        rows: &[(PatternId, DateTime<Utc>)],
    ) -> Result<u64> {
        // As `compact_merged_patterns`: durable first, then every cached copy asked about.
        let removed = self
            .inner
            .guarded(
                "compact_pruned_patterns",
                self.inner.durable.compact_pruned_patterns(ns, rows),
            )
            .await?;
        for (id, _) in rows {
            self.inner
                .cache_invalidate(ns, &CacheKey::Pattern(id.clone()))
                .await;
        }
        Ok(removed)
    }
    }
}

impl Storage for TieredStorage {
    fn backend_name(&self) -> &'static str {
        "tiered"
    }
}

/// The changed patterns and heuristics as cache values.
fn learned_values(changes: &LearnedChanges) -> impl Iterator<Item = CachedValue> + '_ {
    cache_values(
        changes.patterns.iter().map(|p| &p.item),
        changes.heuristics.iter().map(|h| &h.item),
    )
}

/// The cache keys of the changed patterns and heuristics (the cached kinds).
fn learned_keys(changes: &LearnedChanges) -> impl Iterator<Item = CacheKey> + '_ {
    let patterns = changes.patterns.iter();
    let patterns = patterns.map(|p| CacheKey::Pattern(p.item.id.clone()));
    patterns.chain(
        changes
            .heuristics
            .iter()
            .map(|h| CacheKey::Heuristic(h.item.id.clone())),
    )
}

/// Patterns and heuristics (the cached kinds) as cache values.
fn cache_values<'a>(
    patterns: impl Iterator<Item = &'a Pattern> + 'a,
    heuristics: impl Iterator<Item = &'a Heuristic> + 'a,
) -> impl Iterator<Item = CachedValue> + 'a {
    let patterns = patterns.cloned().map(CachedValue::Pattern);
    patterns.chain(heuristics.cloned().map(CachedValue::Heuristic))
}
