//! [`RedbCache`]: a bounded LRU + TTL cache of episodes, patterns and heuristics in a redb file,
//! with a moka cache of the hottest entries in front.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, TryLockError};

use async_trait::async_trait;
use memory_core::{
    Cache, CacheKey, CacheMark, CacheStats, CachedValue, Error, Namespace, Result, SharedClock,
    TokioClock,
};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    WriteTransaction,
};
use tracing::{debug, info, warn};

use crate::codec::{Decoded, decode_cached_value, encode_cached_value_into};
use crate::config::CacheConfig;
use crate::error::{StoreError, blocking, create_file, failed};
use crate::gone_keys::GoneKeys;
use crate::group_commit::{self, Committer, GroupCommit, Reply};
use crate::tables::{
    CACHE_INFO, CACHE_MARK, ENTRIES, EXPIRY, HEADER_LEN, INFO_BYTES, INFO_CLEAN, INFO_LAYOUT,
    INFO_MARK_POSITION, LAYOUT_VERSION, LRU, MARK_DATABASE, META, entry_key, expiry_key,
    split_expiry_key, split_stored,
};
use crate::write_behind::{InFlight, PendingPuts};

type Front = moka::future::Cache<Vec<u8>, Arc<FrontEntry>>;

/// A decoded entry held in process memory.
struct FrontEntry {
    value: CachedValue,
    expires_ms: u64,
    bytes: u32,
}

/// A cache of episodes, patterns and heuristics in a redb file, bounded by entry count and
/// bytes, with a TTL, and a moka cache of the hottest entries in front.
///
/// - **Reads** check the moka front (a `memory_hit`), then the file (a `disk_hit`), in a read
///   transaction on tokio's blocking pool. A hit does not write: its recency is buffered and
///   written with the next write transaction (or once
///   [`touch_flush_threshold`](CacheConfig::touch_flush_threshold) keys are pending), before
///   any eviction decision is made, so eviction still follows true LRU order.
/// - **Writes** share transactions (group commit, in arrival order). A put returns once
///   queued: reads see the queued value at once and the file has it when the transaction
///   commits in the background ([`RedbCache::flush`] and [`RedbCache::close`] wait for that);
///   an invalidation returns once committed. They commit with `Durability::None`: the
///   cache is a copy and may lose its last writes in a crash. Every
///   [`durable_commit_every`](CacheConfig::durable_commit_every)-th commit is durable so redb can
///   reuse freed pages. A write that crosses a bound deletes least recently used entries (rows
///   in every table) until both bounds hold; it also deletes up to
///   [`expire_batch`](CacheConfig::expire_batch) expired entries. The file is compacted when it
///   grows past [`CacheConfig::effective_compact_file_bytes`].
/// - **Expiry** is checked on every read against the injected [`memory_core::Clock`] (by
///   default a [`TokioClock`], which stands still under paused tokio time).
/// - **Corrupt entries** (a checksum that does not match, undecodable, or for another key) count
///   as `corrupt` and a miss, are logged once (a warning) and deleted, so the caller reads the
///   durable layer and puts the value back; entries of another format version (written before
///   entries carried a checksum, for instance) are a plain miss and are deleted.
/// - **Restart safety**: a file not closed cleanly (see [`RedbCache::close`]) is emptied when
///   opened, so a crash can never resurrect an entry that was invalidated or replaced.
///
/// Clones share the same cache. The file is closed cleanly when the last clone is dropped (a
/// durable commit, on the dropping thread) or by [`RedbCache::close`].
#[derive(Clone)]
pub struct RedbCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedbCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbCache")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    corrupt: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// Largest stored entry (header included) that a read decodes on the caller's thread; larger
/// ones go to the blocking pool. A 50-step episode is ~4-5 KB.
const INLINE_READ_BYTES: usize = 64 * 1024;

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Inner {
    /// Transactions run under the read lock; compaction takes the write lock (it needs
    /// `&mut Database` and no live transaction).
    db: RwLock<Database>,
    path: PathBuf,
    config: CacheConfig,
    clock: SharedClock,
    front: Option<Front>,
    /// Entry key -> newest access tick, not yet written.
    touches: Mutex<HashMap<Vec<u8>, u64>>,
    /// Puts and invalidations waiting to be committed.
    writes: GroupCommit<WriteOp, WriteOutcome>,
    /// Puts queued and not committed yet: reads see them first.
    pending: PendingPuts<Arc<FrontEntry>>,
    /// Keys the file is known not to hold: invalidating them again needs no transaction.
    gone: GoneKeys,
    /// Puts whose commit nobody waits for yet.
    in_flight: InFlight,
    next_tick: AtomicU64,
    /// Writers bump `writes_started` before touching the front or the file and
    /// `writes_finished` after; a reader fills the front only when no write overlapped its read.
    writes_started: AtomicU64,
    writes_finished: AtomicU64,
    commits_since_durable: AtomicU32,
    compact_at: AtomicU64,
    counters: Counters,
    closed: AtomicBool,
    /// The mark the file was closed with last time (kept entries are coherent with it).
    opened_mark: Option<CacheMark>,
    /// The mark to write with the clean close.
    close_mark: Mutex<Option<CacheMark>>,
}

/// Marks a write in progress for the front-fill check; ends it when dropped (even if the
/// caller's future is cancelled).
struct WriteEpoch<'a>(&'a Inner);

impl Drop for WriteEpoch<'_> {
    fn drop(&mut self) {
        self.0.writes_finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// Why a stored entry is not served.
enum Stale {
    Expired,
    Corrupt(String),
    OtherVersion(u8),
}

// Returned once per read and moved once; boxing the value would cost an allocation per hit.
#[allow(clippy::large_enum_variant)]
enum DiskGet {
    Hit {
        value: CachedValue,
        expires_ms: u64,
        bytes: u64,
    },
    Miss,
    Removed(Stale),
}

/// What a committed write did.
#[derive(Default)]
struct WriteOutcome {
    /// Entries deleted for the bounds.
    evicted: Vec<Vec<u8>>,
    /// Expired entries deleted by the sweep.
    expired: Vec<Vec<u8>>,
    /// The written key had an entry before.
    replaced: bool,
}

/// Most writes committed by one transaction.
const MAX_WRITE_BATCH: usize = 256;

/// A write waiting for the committing task.
enum WriteOp {
    Put(EncodedEntry),
    Invalidate { key: Vec<u8> },
}

/// A value encoded for the disk tier, not yet queued.
struct EncodedEntry {
    key: Vec<u8>,
    stored: Vec<u8>,
    expires: u64,
    now: u64,
    /// The LRU tick, taken when the put was queued.
    tick: u64,
}

impl EncodedEntry {
    /// The queued write, and what goes to the front once it committed.
    fn into_op(self, value: &CachedValue) -> (WriteOp, FrontPut) {
        let front = FrontPut {
            key: self.key.clone(),
            entry: FrontEntry {
                value: value.clone(),
                expires_ms: self.expires,
                bytes: u32::try_from(self.stored.len()).unwrap_or(u32::MAX),
            },
        };
        (WriteOp::Put(self), front)
    }
}

/// The end of queued puts: waits for their commit. Dropped before that (the runtime stopped),
/// it records that the file may lack them, so it is not marked clean.
struct FinishPuts {
    cache: RedbCache,
    keys: Vec<(Vec<u8>, u64)>,
    replies: Vec<Reply<WriteOutcome>>,
    done: bool,
}

impl FinishPuts {
    async fn run(mut self) {
        let keys = std::mem::take(&mut self.keys);
        let replies = std::mem::take(&mut self.replies);
        self.cache.finish_puts(keys, replies).await;
        self.done = true;
    }
}

impl Drop for FinishPuts {
    fn drop(&mut self) {
        let inner = &self.cache.inner;
        if !self.done {
            inner.in_flight.set_lost();
        }
        inner.writes_finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// The front (moka) entry of a put, inserted at once.
struct FrontPut {
    key: Vec<u8>,
    entry: FrontEntry,
}

/// What [`RedbCache::try_open`] found.
#[derive(Debug)]
pub enum CacheOpening {
    /// Open, held by this process now.
    Open(RedbCache),
    /// Another process holds the file.
    Held,
    /// The file cannot be trusted: why.
    Damaged(String),
    /// Something else failed (settings, permissions, disk): the error.
    Failed(Error),
}

/// What opening the file found.
struct Opened {
    db: Database,
    entries: u64,
    bytes: u64,
    next_tick: u64,
    mark: Option<CacheMark>,
}

impl RedbCache {
    /// Opens (or creates) the cache file at `path`, with a [`TokioClock`] for TTLs.
    ///
    /// A file that was not closed cleanly is emptied. Fails with `InvalidInput` for bad
    /// settings and `Storage` when the file cannot be opened (e.g. another process holds it).
    pub async fn open(path: impl AsRef<Path>, config: CacheConfig) -> Result<Self> {
        Self::open_with_clock(path, config, Arc::new(TokioClock::new())).await
    }

    /// Opens the cache file unless another process holds it or it cannot be trusted, and says
    /// which: a damaged file (truncated, overwritten, not a redb file) fails here, even where
    /// redb would panic reading it, so the caller can move it aside and start a new one.
    pub async fn try_open(path: impl AsRef<Path>, config: CacheConfig) -> CacheOpening {
        if let Err(e) = config.validate() {
            return CacheOpening::Failed(e);
        }
        let path = path.as_ref().to_path_buf();
        let (p, c) = (path.clone(), config.clone());
        match tokio::task::spawn_blocking(move || open_file(&p, &c)).await {
            Ok(Ok(opened)) => CacheOpening::Open(Self::from_opened(
                opened,
                path,
                config,
                Arc::new(TokioClock::new()),
            )),
            Ok(Err(StoreError::Redb(redb::Error::DatabaseAlreadyOpen))) => CacheOpening::Held,
            // Permissions, a full disk: not the file's fault; leave it where it is.
            Ok(Err(StoreError::Redb(redb::Error::Io(e))))
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                CacheOpening::Failed(crate::error::map(
                    "cache open",
                    StoreError::Redb(redb::Error::Io(e)),
                ))
            }
            Ok(Err(StoreError::Core(e))) => CacheOpening::Failed(e),
            Ok(Err(StoreError::Io(e))) if e.kind() != std::io::ErrorKind::InvalidData => {
                CacheOpening::Failed(crate::error::map("cache open", StoreError::Io(e)))
            }
            Ok(Err(e)) => CacheOpening::Damaged(crate::error::map("cache open", e).to_string()),
            Err(join) => CacheOpening::Damaged(format!("reading the file panicked: {join}")),
        }
    }

    /// Like [`RedbCache::open`], with the clock that decides expiry.
    pub async fn open_with_clock(
        path: impl AsRef<Path>,
        config: CacheConfig,
        clock: SharedClock,
    ) -> Result<Self> {
        config.validate()?;
        let path = path.as_ref().to_path_buf();
        let (p, c) = (path.clone(), config.clone());
        let opened = blocking("cache open", move || open_file(&p, &c)).await?;
        Ok(Self::from_opened(opened, path, config, clock))
    }

    fn from_opened(opened: Opened, path: PathBuf, config: CacheConfig, clock: SharedClock) -> Self {
        let front = config.front_enabled().then(|| build_front(&config));
        let inner = Inner {
            db: RwLock::new(opened.db),
            compact_at: AtomicU64::new(config.effective_compact_file_bytes()),
            path,
            config,
            clock,
            front,
            touches: Mutex::new(HashMap::new()),
            writes: GroupCommit::new(MAX_WRITE_BATCH, "cache write"),
            pending: PendingPuts::new(),
            gone: GoneKeys::default(),
            in_flight: InFlight::new(),
            next_tick: AtomicU64::new(opened.next_tick),
            writes_started: AtomicU64::new(0),
            writes_finished: AtomicU64::new(0),
            commits_since_durable: AtomicU32::new(0),
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            opened_mark: opened.mark,
            close_mark: Mutex::new(None),
        };
        inner
            .counters
            .entries
            .store(opened.entries, Ordering::Relaxed);
        inner.counters.bytes.store(opened.bytes, Ordering::Relaxed);
        debug!(path = %inner.path.display(), entries = opened.entries, bytes = opened.bytes, "opened redb cache");
        RedbCache {
            inner: Arc::new(inner),
        }
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings in use.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// Waits until every put queued so far is committed to the file (its entry counts,
    /// evictions and bytes are then in [`Cache::stats`]).
    pub async fn settle(&self) {
        self.inner.in_flight.drained().await;
    }

    /// Waits for queued puts, then writes buffered recency updates with a durable commit.
    pub async fn flush(&self) -> Result<()> {
        self.settle().await;
        let inner = self.inner.clone();
        blocking("cache flush", move || inner.flush_touches(true)).await
    }

    /// Compacts the file now; true if redb could shrink it.
    pub async fn compact(&self) -> Result<bool> {
        let inner = self.inner.clone();
        blocking("cache compact", move || inner.compact_now()).await
    }

    /// Closes the cache cleanly (writes buffered recency and marks the file clean, durably), so
    /// the next open keeps its entries. Other clones keep the cache open; the last one to be
    /// dropped closes it the same way.
    pub async fn close(self) -> Result<()> {
        self.inner.in_flight.drained().await;
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                blocking("cache close", move || {
                    let r = inner.mark_clean();
                    inner.closed.store(true, Ordering::Relaxed);
                    drop(inner);
                    r
                })
                .await
            }
            Err(_) => Ok(()),
        }
    }

    /// Records an access for LRU ordering; writes the buffer once it is large.
    async fn touch(&self, key: Vec<u8>) {
        let inner = &self.inner;
        let tick = inner.next_tick.fetch_add(1, Ordering::Relaxed);
        let pending = {
            let mut t = inner.lock_touches();
            t.insert(key, tick);
            t.len()
        };
        if pending >= inner.config.touch_flush_threshold {
            let inner = inner.clone();
            if let Err(e) = blocking("cache touch flush", move || inner.flush_touches(false)).await
            {
                warn!(error = %e, "cannot record cache recency");
            }
        }
    }

    /// Queues a write and waits until its transaction is committed.
    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome> {
        let mut done = self.submit_many(vec![op]).await;
        done.pop()
            .unwrap_or_else(|| Err(failed("cache write", "no outcome for the write")))
    }

    /// Queues `ops` together (one commit unless the batch limit splits them) and waits for
    /// each outcome, in order.
    async fn submit_many(&self, ops: Vec<WriteOp>) -> Vec<Result<WriteOutcome>> {
        group_commit::submit(&self.inner, ops).await
    }

    /// Encodes `value` for the disk tier and checks it against the size limits.
    fn encode_entry(&self, ns: &Namespace, value: &CachedValue) -> Result<EncodedEntry> {
        let inner = &self.inner;
        let key = value.key();
        let now = inner.now_ms();
        let expires = inner.expires_at(now);
        let mut stored = Vec::with_capacity(1024);
        stored.extend_from_slice(&expires.to_be_bytes());
        encode_cached_value_into(&mut stored, value)?;
        let record = stored.len() - HEADER_LEN;
        let limit = inner.config.limit_for(&key);
        if record > limit {
            return Err(Error::LimitExceeded {
                field: "cache entry",
                limit: limit as u64,
                actual: record as u64,
            });
        }
        let size = stored.len() as u64;
        if size > inner.config.max_bytes {
            return Err(Error::LimitExceeded {
                field: "cache entry",
                limit: inner.config.max_bytes,
                actual: size,
            });
        }
        Ok(EncodedEntry {
            key: entry_key(ns, &key),
            stored,
            expires,
            now,
            tick: inner.next_tick.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Counts a committed put and drops what it evicted or expired from the front.
    async fn after_put(&self, out: WriteOutcome, key: &[u8]) {
        let inner = &self.inner;
        add(&inner.counters.evictions, out.evicted.len() as u64);
        add(&inner.counters.expirations, out.expired.len() as u64);
        if !out.evicted.is_empty() {
            debug!(count = out.evicted.len(), "evicted cache entries");
        }
        self.front_invalidate(&out.evicted).await;
        self.front_invalidate(&out.expired).await;
        debug!(key = ?key, replaced = out.replaced, "cache put committed");
    }

    /// Waits for the commits of queued puts (`seqs` and `replies` in the order of `keys`),
    /// then lets reads go to the file for them. A put that failed is invalidated (the file
    /// may hold an older value); if even that fails, the file is not marked clean at close.
    async fn finish_puts(&self, keys: Vec<(Vec<u8>, u64)>, replies: Vec<Reply<WriteOutcome>>) {
        let inner = &self.inner;
        let outcomes = group_commit::wait(&inner.writes, replies).await;
        let mut first = None;
        for ((key, seq), out) in keys.into_iter().zip(outcomes) {
            match out {
                Ok(out) => self.after_put(out, &key).await,
                Err(e) => {
                    let undone = self.submit(WriteOp::Invalidate { key: key.clone() }).await;
                    if undone.is_err() {
                        inner.in_flight.set_lost();
                    }
                    self.front_invalidate(std::slice::from_ref(&key)).await;
                    first.get_or_insert(e);
                }
            }
            inner.pending.committed(&key, seq);
        }
        if let Some(e) = first {
            warn!(error = %e, "cache write failed; the entries were dropped");
        }
    }

    async fn front_invalidate(&self, keys: &[Vec<u8>]) {
        if let Some(front) = &self.inner.front {
            for k in keys {
                front.invalidate(k.as_slice()).await;
            }
        }
    }
}

fn build_front(config: &CacheConfig) -> Front {
    // Each entry weighs at least max_bytes / max_entries, so the weight budget bounds both the
    // bytes and the number of entries.
    let floor = (config.memory_max_bytes / config.memory_max_entries).max(1);
    moka::future::Cache::builder()
        .max_capacity(config.memory_max_bytes)
        .weigher(move |_k: &Vec<u8>, v: &Arc<FrontEntry>| {
            u32::try_from(u64::from(v.bytes).max(floor)).unwrap_or(u32::MAX)
        })
        .build()
}

fn open_file(path: &Path, config: &CacheConfig) -> Result<Opened, StoreError> {
    let db = create_file(path, config.redb_cache_bytes)?;
    let txn = db.begin_write()?;
    let (entries, bytes, next_tick, mark) = {
        let (layout, clean) = {
            let info = txn.open_table(CACHE_INFO)?;
            let layout = info.get(INFO_LAYOUT)?.map(|g| g.value());
            let clean = info.get(INFO_CLEAN)?.map(|g| g.value());
            (layout, clean)
        };
        let wrong_layout = layout.is_some_and(|l| l != LAYOUT_VERSION);
        let has_rows = !wrong_layout && !txn.open_table(ENTRIES)?.is_empty()?;
        let wiped = wrong_layout || (has_rows && clean != Some(1));
        if wiped {
            info!(
                path = %path.display(),
                reason = if wrong_layout { "another layout version" } else { "not closed cleanly" },
                "emptying redb cache file"
            );
            wipe(&txn)?;
        }
        // The mark describes the entries as closed; once open, they move on without it.
        let mark = take_mark(&txn)?.filter(|_| !wiped && clean == Some(1));
        let mut tabs = Tabs::open(&txn)?;
        tabs.info.insert(INFO_LAYOUT, LAYOUT_VERSION)?;
        tabs.info.insert(INFO_CLEAN, 0)?;
        let bytes = tabs.bytes()?;
        let entries = tabs.meta.len()?;
        let next_tick = tabs
            .lru
            .last()?
            .map_or(0, |(t, _)| t.value())
            .saturating_add(1);
        (entries, bytes, next_tick, mark)
    };
    txn.commit()?;
    Ok(Opened {
        db,
        entries,
        bytes,
        next_tick,
        mark,
    })
}

/// Reads and deletes the close mark.
fn take_mark(txn: &WriteTransaction) -> Result<Option<CacheMark>, StoreError> {
    let position = txn
        .open_table(CACHE_INFO)?
        .remove(INFO_MARK_POSITION)?
        .map(|g| g.value());
    let database = txn
        .open_table(CACHE_MARK)?
        .remove(MARK_DATABASE)?
        .map(|g| g.value().to_owned());
    Ok(match (database, position) {
        (Some(database), Some(position)) => Some(CacheMark { database, position }),
        _ => None,
    })
}

/// Deletes every data table and resets the byte count (tables are recreated on next open).
fn wipe(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(ENTRIES)?;
    txn.delete_table(META)?;
    txn.delete_table(LRU)?;
    txn.delete_table(EXPIRY)?;
    txn.open_table(CACHE_INFO)?.insert(INFO_BYTES, 0)?;
    Ok(())
}

/// The cache tables open in one write transaction.
struct Tabs<'t> {
    entries: Table<'t, &'static [u8], &'static [u8]>,
    meta: Table<'t, &'static [u8], (u64, u64, u64)>,
    lru: Table<'t, u64, &'static [u8]>,
    expiry: Table<'t, &'static [u8], ()>,
    info: Table<'t, &'static str, u64>,
}

impl<'t> Tabs<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tabs {
            entries: txn.open_table(ENTRIES)?,
            meta: txn.open_table(META)?,
            lru: txn.open_table(LRU)?,
            expiry: txn.open_table(EXPIRY)?,
            info: txn.open_table(CACHE_INFO)?,
        })
    }

    fn bytes(&self) -> Result<u64, StoreError> {
        Ok(self.info.get(INFO_BYTES)?.map_or(0, |g| g.value()))
    }

    fn set_bytes(&mut self, bytes: u64) -> Result<(), StoreError> {
        self.info.insert(INFO_BYTES, bytes)?;
        Ok(())
    }

    /// Deletes an entry's rows from every table and takes its stored size off `bytes`; its
    /// stored size if it existed.
    fn remove_entry(&mut self, key: &[u8], bytes: &mut u64) -> Result<Option<u64>, StoreError> {
        let meta = self.meta.remove(key)?.map(|g| g.value());
        let stored = self.entries.remove(key)?.map(|g| g.value().len() as u64);
        let size = match meta {
            Some((tick, expires, size)) => {
                self.lru.remove(tick)?;
                self.expiry.remove(expiry_key(expires, key).as_slice())?;
                Some(size)
            }
            None => stored,
        };
        *bytes = bytes.saturating_sub(size.unwrap_or(0));
        Ok(size)
    }

    fn insert(
        &mut self,
        key: &[u8],
        stored: &[u8],
        tick: u64,
        expires: u64,
    ) -> Result<(), StoreError> {
        self.entries.insert(key, stored)?;
        self.meta
            .insert(key, (tick, expires, stored.len() as u64))?;
        self.lru.insert(tick, key)?;
        self.expiry
            .insert(expiry_key(expires, key).as_slice(), ())?;
        Ok(())
    }

    /// Moves touched entries to their newest tick in the LRU order; returns the touches of
    /// keys not in the file (read while their put was queued).
    fn apply_touches(
        &mut self,
        touches: HashMap<Vec<u8>, u64>,
    ) -> Result<HashMap<Vec<u8>, u64>, StoreError> {
        let mut absent = HashMap::new();
        for (key, tick) in touches {
            let Some((old, expires, size)) = self.meta.get(key.as_slice())?.map(|g| g.value())
            else {
                absent.insert(key, tick);
                continue;
            };
            if tick <= old {
                continue;
            }
            self.lru.remove(old)?;
            self.lru.insert(tick, key.as_slice())?;
            self.meta.insert(key.as_slice(), (tick, expires, size))?;
        }
        Ok(absent)
    }

    /// Deletes up to `max` entries whose expiry is at or before `now`, soonest first.
    fn sweep_expired(
        &mut self,
        now: u64,
        max: usize,
        bytes: &mut u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut removed = Vec::new();
        while removed.len() < max {
            let Some(first) = self.expiry.first()?.map(|(k, _)| k.value().to_vec()) else {
                break;
            };
            let Some((expires, key)) = split_expiry_key(&first) else {
                self.expiry.remove(first.as_slice())?;
                continue;
            };
            if expires > now {
                break;
            }
            let key = key.to_vec();
            self.remove_entry(&key, bytes)?;
            self.expiry.remove(first.as_slice())?;
            removed.push(key);
        }
        Ok(removed)
    }

    /// Deletes least recently used entries until both bounds hold.
    fn evict(
        &mut self,
        max_entries: u64,
        max_bytes: u64,
        bytes: &mut u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut evicted = Vec::new();
        while self.meta.len()? > max_entries || *bytes > max_bytes {
            let Some((tick, key)) = self
                .lru
                .first()?
                .map(|(t, k)| (t.value(), k.value().to_vec()))
            else {
                break;
            };
            self.remove_entry(&key, bytes)?;
            self.lru.remove(tick)?;
            evicted.push(key);
        }
        Ok(evicted)
    }
}

impl Inner {
    fn read_db(&self) -> RwLockReadGuard<'_, Database> {
        // A panic while holding the lock leaves the database itself consistent (transactions
        // are atomic), so a poisoned lock is still usable.
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_touches(&self) -> MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        self.touches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts back the touches of keys whose put is still queued (a later batch writes it).
    fn keep_touches_of_queued(&self, touches: HashMap<Vec<u8>, u64>) {
        let queued: Vec<(Vec<u8>, u64)> = touches
            .into_iter()
            .filter(|(k, _)| self.pending.get(k).is_some())
            .collect();
        if queued.is_empty() {
            return;
        }
        let mut t = self.lock_touches();
        for (k, tick) in queued {
            let e = t.entry(k).or_insert(tick);
            *e = (*e).max(tick);
        }
    }

    fn take_touches(&self) -> HashMap<Vec<u8>, u64> {
        std::mem::take(&mut *self.lock_touches())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    fn expires_at(&self, now: u64) -> u64 {
        self.config.ttl.map_or(u64::MAX, |ttl| {
            now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        })
    }

    fn begin_epoch(&self) -> WriteEpoch<'_> {
        self.writes_started.fetch_add(1, Ordering::SeqCst);
        WriteEpoch(self)
    }

    /// Begins a write transaction: non-durable, except every `durable_commit_every`-th one.
    fn begin_write(
        &self,
        db: &Database,
        force_durable: bool,
    ) -> Result<(WriteTransaction, bool), StoreError> {
        let mut txn = db.begin_write()?;
        let n = self.commits_since_durable.fetch_add(1, Ordering::Relaxed) + 1;
        let durable = force_durable || n >= self.config.durable_commit_every;
        if durable {
            self.commits_since_durable.store(0, Ordering::Relaxed);
        } else {
            txn.set_durability(Durability::None)?;
        }
        Ok((txn, durable))
    }

    /// Commits `txn`, lets go of the database, and compacts after a durable commit.
    fn commit(
        &self,
        txn: WriteTransaction,
        db: RwLockReadGuard<'_, Database>,
        durable: bool,
    ) -> Result<(), StoreError> {
        txn.commit()?;
        drop(db);
        if durable {
            self.compact_logged();
        }
        Ok(())
    }

    fn publish_size(&self, entries: u64, bytes: u64) {
        self.counters.entries.store(entries, Ordering::Relaxed);
        self.counters.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Why `stored` cannot be served for `key` at `now`, or its value and expiry.
    fn classify(
        &self,
        stored: &[u8],
        key: &CacheKey,
        now: u64,
    ) -> Result<(CachedValue, u64), Stale> {
        let Some((expires, record)) = split_stored(stored) else {
            return Err(Stale::Corrupt(format!(
                "{} bytes is shorter than the header",
                stored.len()
            )));
        };
        if expires <= now {
            return Err(Stale::Expired);
        }
        match decode_cached_value(record, self.config.decode_limits()) {
            Ok(Decoded::Value(v)) if v.key() == *key => Ok((v, expires)),
            Ok(Decoded::Value(v)) => Err(Stale::Corrupt(format!(
                "holds {:?}, not the requested key",
                v.key()
            ))),
            Ok(Decoded::OtherVersion(version)) => Err(Stale::OtherVersion(version)),
            Err(e) => Err(Stale::Corrupt(e.to_string())),
        }
    }

    /// Looks `key` up in `db`: a miss, a servable hit, or `None` when the stored entry is not
    /// served from here (expired, corrupt, of another version, or over `max_bytes`, which is
    /// checked before anything is decoded).
    fn lookup(
        &self,
        db: &Database,
        key_bytes: &[u8],
        key: &CacheKey,
        now: u64,
        max_bytes: usize,
    ) -> Result<Option<DiskGet>, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let Some(guard) = table.get(key_bytes)? else {
            return Ok(Some(DiskGet::Miss));
        };
        let stored = guard.value();
        if stored.len() > max_bytes {
            return Ok(None);
        }
        Ok(self
            .classify(stored, key, now)
            .ok()
            .map(|(value, expires_ms)| DiskGet::Hit {
                value,
                expires_ms,
                bytes: stored.len() as u64,
            }))
    }

    /// The read of [`Inner::disk_get`] on the caller's thread, when it is cheap for sure: the
    /// database lock is free (not compacting), and the entry is absent or a servable one of at
    /// most [`INLINE_READ_BYTES`]. `None` means "ask the blocking pool": a busy lock, a large
    /// entry, a stale or corrupt one (removing it is a write), or any error (reported there).
    ///
    /// Why inline: a point read of a small entry from redb's page cache plus its decode takes
    /// a few microseconds, and handing it to the blocking pool and back (two thread wake-ups)
    /// cost more than the read itself on the 2-core machine measured (`redb_cache/get_hit_redb`
    /// 137 µs through the pool). Pages outside redb's and the OS's caches make it a short file
    /// read, as a moka miss would on any disk-backed cache.
    fn disk_get_inline(&self, key_bytes: &[u8], key: &CacheKey, now: u64) -> Option<DiskGet> {
        let db = match self.db.try_read() {
            Ok(db) => db,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.lookup(&db, key_bytes, key, now, INLINE_READ_BYTES)
            .ok()
            .flatten()
    }

    /// For each key paired with `true`, whether the file surely holds no entry for it, all
    /// read in one transaction on the caller's thread when the database lock is free (as
    /// [`Inner::disk_get_inline`]); `false` for the keys paired with `false` and when that
    /// cannot be told cheaply (compacting, an error). No transaction when no key is asked.
    fn file_lacks(&self, keys: &[(&[u8], bool)]) -> Vec<bool> {
        let mut out = vec![false; keys.len()];
        if !keys.iter().any(|(_, ask)| *ask) {
            return out;
        }
        let db = match self.db.try_read() {
            Ok(db) => db,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return out,
        };
        let Ok(txn) = db.begin_read() else {
            return out;
        };
        let Ok(table) = txn.open_table(ENTRIES) else {
            return out;
        };
        for (slot, (key, ask)) in out.iter_mut().zip(keys) {
            *slot = *ask && matches!(table.get(*key), Ok(None));
        }
        out
    }

    fn disk_get(&self, key_bytes: &[u8], key: &CacheKey, now: u64) -> Result<DiskGet, StoreError> {
        let db = self.read_db();
        if let Some(read) = self.lookup(&db, key_bytes, key, now, usize::MAX)? {
            return Ok(read);
        }
        // Delete it, if it is still unservable (a writer may have replaced it meanwhile).
        let (txn, durable) = self.begin_write(&db, false)?;
        let removed = {
            let mut tabs = Tabs::open(&txn)?;
            let stale = match tabs.entries.get(key_bytes)? {
                Some(g) => self.classify(g.value(), key, now).err(),
                None => None,
            };
            if let Some(stale) = stale {
                let mut bytes = tabs.bytes()?;
                tabs.remove_entry(key_bytes, &mut bytes)?;
                tabs.set_bytes(bytes)?;
                self.publish_size(tabs.meta.len()?, bytes);
                Some(stale)
            } else {
                None
            }
        };
        self.commit(txn, db, durable)?;
        Ok(removed.map_or(DiskGet::Miss, DiskGet::Removed))
    }

    /// Applies a batch of writes in one transaction (group commit); one result per write, in
    /// order. A failure of the transaction fails every write of the batch.
    fn commit_writes(&self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StoreError> {
        let db = self.read_db();
        let (txn, durable) = self.begin_write(&db, false)?;
        let results = {
            let mut tabs = Tabs::open(&txn)?;
            let mut touched_before = tabs.apply_touches(self.take_touches())?;
            let mut bytes = tabs.bytes()?;
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    WriteOp::Put(EncodedEntry {
                        key,
                        stored,
                        expires,
                        now,
                        tick,
                    }) => {
                        let old = tabs.remove_entry(key, &mut bytes)?;
                        // A read of the queued value counts as a use after the put.
                        let tick = touched_before
                            .remove(key)
                            .map_or(*tick, |read| read.max(*tick));
                        tabs.insert(key, stored, tick, *expires)?;
                        bytes = bytes.saturating_add(stored.len() as u64);
                        let expired =
                            tabs.sweep_expired(*now, self.config.expire_batch, &mut bytes)?;
                        let evicted =
                            tabs.evict(self.config.max_entries, self.config.max_bytes, &mut bytes)?;
                        WriteOutcome {
                            evicted,
                            expired,
                            replaced: old.is_some(),
                        }
                    }
                    WriteOp::Invalidate { key } => {
                        let removed = tabs.remove_entry(key, &mut bytes)?;
                        WriteOutcome {
                            replaced: removed.is_some(),
                            ..WriteOutcome::default()
                        }
                    }
                });
            }
            tabs.set_bytes(bytes)?;
            self.publish_size(tabs.meta.len()?, bytes);
            self.keep_touches_of_queued(touched_before);
            results
        };
        self.commit(txn, db, durable)?;
        Ok(results)
    }

    fn disk_clear(&self) -> Result<(), StoreError> {
        drop(self.take_touches());
        let db = self.read_db();
        let (txn, _) = self.begin_write(&db, true)?;
        wipe(&txn)?;
        drop(Tabs::open(&txn)?);
        txn.commit()?;
        self.publish_size(0, 0);
        drop(db);
        self.compact_logged();
        Ok(())
    }

    /// Writes buffered recency updates.
    fn flush_touches(&self, durable: bool) -> Result<(), StoreError> {
        let touches = self.take_touches();
        if touches.is_empty() && !durable {
            return Ok(());
        }
        let db = self.read_db();
        let (txn, durable) = self.begin_write(&db, durable)?;
        let absent = Tabs::open(&txn)?.apply_touches(touches)?;
        self.keep_touches_of_queued(absent);
        self.commit(txn, db, durable)
    }

    /// Durably writes buffered recency and the clean flag (not when a queued put may be
    /// missing: then the file is emptied when reopened).
    fn mark_clean(&self) -> Result<(), StoreError> {
        if self.in_flight.lost() {
            warn!(path = %self.path.display(), "cache writes may be missing; the file will be emptied when reopened");
            return Ok(());
        }
        let db = self.read_db();
        let txn = db.begin_write()?;
        {
            let mut tabs = Tabs::open(&txn)?;
            tabs.apply_touches(self.take_touches())?;
            tabs.info.insert(INFO_CLEAN, 1)?;
            let mark = self
                .close_mark
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(m) = mark {
                tabs.info.insert(INFO_MARK_POSITION, m.position)?;
                txn.open_table(CACHE_MARK)?
                    .insert(MARK_DATABASE, m.database.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn file_size(&self) -> Result<u64, StoreError> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Compacts when the file is over its bound (called after durable commits only).
    fn compact_logged(&self) {
        let r = self.file_size().and_then(|size| {
            if size > self.compact_at.load(Ordering::Relaxed) {
                self.compact_now().map(|_| ())
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            warn!(error = %crate::error::map("cache compact", e), "cannot compact redb cache file");
        }
    }

    fn compact_now(&self) -> Result<bool, StoreError> {
        let before = self.file_size()?;
        let mut compacted = false;
        {
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            // Each round moves pages towards the start of the file; a few rounds get most of
            // what is possible.
            for _ in 0..8 {
                if !db.compact()? {
                    break;
                }
                compacted = true;
            }
        }
        let after = self.file_size()?;
        // If the live data alone is close to the bound, wait until the file doubles before
        // compacting again rather than compacting on every durable commit.
        let base = self.config.effective_compact_file_bytes();
        self.compact_at
            .store(base.max(after.saturating_mul(2)), Ordering::Relaxed);
        info!(path = %self.path.display(), before, after, "compacted redb cache file");
        Ok(compacted)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.mark_clean() {
            warn!(error = %crate::error::map("cache close", e), "redb cache not closed cleanly; it will be emptied when reopened");
        }
    }
}

#[async_trait]
impl Cache for RedbCache {
    async fn get(&self, ns: &Namespace, key: &CacheKey) -> Result<Option<CachedValue>> {
        let inner = &self.inner;
        let k = entry_key(ns, key);
        let now = inner.now_ms();
        let queued = inner.pending.get(&k).filter(|e| e.expires_ms > now);
        let mut hit = queued.map(|e| (e, "queued"));
        if hit.is_none()
            && let Some(front) = &inner.front
            && let Some(entry) = front.get(k.as_slice()).await
        {
            if entry.expires_ms > now {
                hit = Some((entry, "memory"));
            } else {
                front.invalidate(k.as_slice()).await;
            }
        }
        if let Some((entry, tier)) = hit {
            add(&inner.counters.memory_hits, 1);
            debug!(namespace = ns.as_str(), key = ?key, "cache hit ({tier})");
            let value = entry.value.clone();
            self.touch(k).await;
            return Ok(Some(value));
        }

        let started = inner.writes_started.load(Ordering::SeqCst);
        let finished = inner.writes_finished.load(Ordering::SeqCst);
        let read = if let Some(read) = inner.disk_get_inline(&k, key, now) {
            read
        } else {
            let (this, kb, kc) = (inner.clone(), k.clone(), key.clone());
            blocking("cache get", move || this.disk_get(&kb, &kc, now)).await?
        };
        match read {
            DiskGet::Hit {
                value,
                expires_ms,
                bytes,
            } => {
                add(&inner.counters.disk_hits, 1);
                debug!(namespace = ns.as_str(), key = ?key, "cache hit (disk)");
                self.touch(k.clone()).await;
                if let Some(front) = &inner.front
                    && started == finished
                {
                    let entry = FrontEntry {
                        value: value.clone(),
                        expires_ms,
                        bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                    };
                    front.insert(k.clone(), Arc::new(entry)).await;
                    if inner.writes_started.load(Ordering::SeqCst) != started {
                        // A write overlapped the fill: what was read may be stale.
                        front.invalidate(k.as_slice()).await;
                    }
                }
                Ok(Some(value))
            }
            DiskGet::Miss => {
                add(&inner.counters.misses, 1);
                debug!(namespace = ns.as_str(), key = ?key, "cache miss");
                Ok(None)
            }
            DiskGet::Removed(stale) => {
                add(&inner.counters.misses, 1);
                match stale {
                    Stale::Expired => {
                        add(&inner.counters.expirations, 1);
                        debug!(namespace = ns.as_str(), key = ?key, "cache miss (expired, removed)");
                    }
                    Stale::Corrupt(reason) => {
                        add(&inner.counters.corrupt, 1);
                        warn!(namespace = ns.as_str(), key = ?key, reason, "removed corrupt cache entry");
                    }
                    Stale::OtherVersion(version) => {
                        debug!(namespace = ns.as_str(), key = ?key, version, "cache miss (other format version, removed)");
                    }
                }
                Ok(None)
            }
        }
    }

    async fn put(&self, ns: &Namespace, value: &CachedValue) -> Result<()> {
        self.put_many(ns, std::slice::from_ref(value)).await
    }

    /// Queues every put at once, so the committing task writes them in one transaction, and
    /// returns without waiting for it (write-behind): until it commits, reads
    /// are served the queued values.
    async fn put_many(&self, ns: &Namespace, values: &[CachedValue]) -> Result<()> {
        let inner = &self.inner;
        let mut first = None;
        let mut entries = Vec::with_capacity(values.len());
        for v in values {
            match self.encode_entry(ns, v) {
                Ok(e) => entries.push((e, v)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if entries.is_empty() {
            return first.map_or(Ok(()), Err);
        }
        inner.writes_started.fetch_add(1, Ordering::SeqCst);
        let mut ops = Vec::with_capacity(entries.len());
        let mut keys = Vec::with_capacity(entries.len());
        let mut fronts = Vec::with_capacity(entries.len());
        for (e, v) in entries {
            let (op, front) = e.into_op(v);
            let entry = Arc::new(front.entry);
            let seq = inner.pending.put(front.key.clone(), Arc::clone(&entry));
            fronts.push((front.key.clone(), entry));
            keys.push((front.key, seq));
            ops.push(op);
        }
        add(&inner.counters.inserts, ops.len() as u64);
        // Queued now, so an invalidation or put that comes later commits after these.
        let put_keys = keys.iter().map(|(k, _)| k.as_slice());
        let replies = inner
            .gone
            .queue_puts(put_keys, || group_commit::enqueue(inner, ops));
        if let Some(f) = &inner.front {
            for (key, entry) in fronts {
                f.insert(key, entry).await;
            }
        }
        debug!(
            namespace = ns.as_str(),
            count = keys.len(),
            "cache put queued"
        );
        let finish = FinishPuts {
            cache: self.clone(),
            keys,
            replies,
            done: false,
        };
        match inner.in_flight.begin() {
            Some(permit) => {
                drop(tokio::spawn(async move {
                    finish.run().await;
                    // After the handle is gone, so a close that waited can take the file.
                    drop(permit);
                }));
            }
            None => finish.run().await,
        }
        first.map_or(Ok(()), Err)
    }

    async fn invalidate(&self, ns: &Namespace, key: &CacheKey) -> Result<()> {
        self.invalidate_many(&[(ns.clone(), key.clone())]).await
    }

    async fn invalidate_many(&self, keys: &[(Namespace, CacheKey)]) -> Result<()> {
        let inner = &self.inner;
        let encoded: Vec<Vec<u8>> = keys.iter().map(|(ns, k)| entry_key(ns, k)).collect();
        let _epoch = inner.begin_epoch();
        self.front_invalidate(&encoded).await;
        // Keys whose removal from the file already committed (and nothing was put since), and
        // keys the file does not hold with no put of them queued, need no transaction. Asked
        // under the gone-keys lock, which every put is queued under and every pending value
        // of a queued put is dropped under: a put queued earlier still has its pending value
        // then, unless an invalidation queued since (which the map knows) dropped it.
        let absent = |asked: &[(&[u8], bool)]| {
            // Every pending value first, then one read of the file for all the keys: a put
            // whose pending value is gone has committed before that read began.
            let candidates: Vec<(&[u8], bool)> = asked
                .iter()
                .map(|&(key, unknown)| {
                    let had_pending = inner.pending.remove(key);
                    (key, unknown && !had_pending)
                })
                .collect();
            inner.file_lacks(&candidates)
        };
        let queued = inner.gone.queue_invalidations(encoded, absent, |fresh| {
            let ops = fresh
                .into_iter()
                .map(|key| WriteOp::Invalidate { key })
                .collect();
            group_commit::enqueue(inner, ops)
        });
        let Some((going, replies)) = queued else {
            debug!(count = keys.len(), "cache invalidate: not in the file");
            return Ok(());
        };
        let mut first = None;
        let outcomes = group_commit::wait(&inner.writes, replies).await;
        for ((key, generation), out) in going.iter().zip(outcomes) {
            inner.gone.finished(key, *generation, out.is_ok());
            if let Err(e) = out {
                first.get_or_insert(e);
            }
        }
        debug!(count = keys.len(), "cache invalidate");
        first.map_or(Ok(()), Err)
    }

    async fn settle(&self) {
        self.inner.in_flight.drained().await;
    }

    async fn clear(&self) -> Result<()> {
        let inner = &self.inner;
        // Queued puts first, so none lands after the wipe.
        inner.in_flight.drained().await;
        inner.pending.clear();
        let _epoch = inner.begin_epoch();
        if let Some(front) = &inner.front {
            front.invalidate_all();
        }
        let this = inner.clone();
        blocking("cache clear", move || this.disk_clear()).await?;
        if let Some(front) = &inner.front {
            front.invalidate_all();
        }
        debug!("cache cleared");
        Ok(())
    }

    fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            memory_hits: l(&c.memory_hits),
            disk_hits: l(&c.disk_hits),
            misses: l(&c.misses),
            inserts: l(&c.inserts),
            evictions: l(&c.evictions),
            expirations: l(&c.expirations),
            corrupt: l(&c.corrupt),
            entries: l(&c.entries),
            bytes: l(&c.bytes),
        }
    }

    fn opened_mark(&self) -> Option<CacheMark> {
        self.inner.opened_mark.clone()
    }

    fn set_close_mark(&self, mark: CacheMark) {
        *self
            .inner
            .close_mark
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(mark);
    }
}

impl Committer for Inner {
    type Op = WriteOp;
    type Out = WriteOutcome;

    fn group(&self) -> &GroupCommit<WriteOp, WriteOutcome> {
        &self.writes
    }

    fn commit(&self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StoreError> {
        self.commit_writes(ops)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use memory_core::{Episode, NewEpisode, TaskContext, TaskType};
    use memory_testkit::conformance;

    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap()
    }

    fn episode(task: &str) -> Episode {
        let at = DateTime::<Utc>::from_timestamp(1_750_000_000, 0).unwrap();
        let mut e = Episode::start(
            NewEpisode::new(task, TaskType::Testing, TaskContext::new("d")),
            at,
        );
        e.steps = conformance::steps(&[("cargo", true), ("edit", false)], 1, at);
        e
    }

    async fn open(dir: &Path, config: CacheConfig) -> RedbCache {
        RedbCache::open(dir.join("cache.redb"), config)
            .await
            .unwrap()
    }

    /// Rewrites the stored bytes of an entry behind the cache's back (the cache must be closed).
    fn tamper(path: &Path, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(ENTRIES).unwrap();
            let mut v = t.get(key).unwrap().unwrap().value().to_vec();
            f(&mut v);
            t.insert(key, v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn a_memory_hit_shares_the_episode_and_a_disk_hit_fills_the_front_once() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let shared = Arc::new(episode("t"));
        let key = CacheKey::Episode(shared.id);
        let c = open(dir.path(), CacheConfig::default()).await;
        c.put(&n, &CachedValue::Episode(Arc::clone(&shared)))
            .await
            .unwrap();
        let Some(CachedValue::Episode(hit)) = c.get(&n, &key).await.unwrap() else {
            panic!("episode cached");
        };
        assert!(
            Arc::ptr_eq(&hit, &shared),
            "the put's allocation, not a copy"
        );
        c.close().await.unwrap();

        // Reopened: the first hit decodes from the file, the next ones share that decode.
        let c = open(dir.path(), CacheConfig::default()).await;
        let mut hits = Vec::new();
        for _ in 0..2 {
            match c.get(&n, &key).await.unwrap() {
                Some(CachedValue::Episode(e)) => hits.push(e),
                other => panic!("episode cached, got {other:?}"),
            }
        }
        assert_eq!(*hits[0], *shared);
        assert!(Arc::ptr_eq(&hits[0], &hits[1]));
        assert_eq!(c.stats().disk_hits, 1);
        assert_eq!(c.stats().memory_hits, 1);
        c.close().await.unwrap();
    }

    #[tokio::test]
    async fn clean_close_keeps_entries_and_unclean_file_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let e = episode("t");
        let key = CacheKey::Episode(e.id);
        let c = open(dir.path(), CacheConfig::default()).await;
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
        c.close().await.unwrap();

        let c = open(dir.path(), CacheConfig::default()).await;
        assert_eq!(c.stats().entries, 1);
        assert_eq!(
            c.get(&n, &key).await.unwrap(),
            Some(CachedValue::Episode(Arc::new(e)))
        );
        assert_eq!(c.stats().disk_hits, 1);
        c.close().await.unwrap();

        // Simulate a crash: the clean flag stays 0.
        {
            let db = Database::create(dir.path().join("cache.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(CACHE_INFO)
                .unwrap()
                .insert(INFO_CLEAN, 0)
                .unwrap();
            txn.commit().unwrap();
        }
        let c = open(dir.path(), CacheConfig::default()).await;
        assert_eq!(c.stats().entries, 0);
        assert_eq!(c.stats().bytes, 0);
        assert_eq!(c.get(&n, &key).await.unwrap(), None);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let e = episode("t");
        let c = open(dir.path(), CacheConfig::default()).await;
        let c2 = c.clone();
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
        drop(c);
        c2.close().await.unwrap();
        let c = open(dir.path(), CacheConfig::default()).await;
        assert!(c.get(&n, &CacheKey::Episode(e.id)).await.unwrap().is_some());
    }

    /// Reads on the caller's thread stop at `INLINE_READ_BYTES`: an entry at the limit and one
    /// past it both come back whole from the file (the second through the blocking pool).
    #[tokio::test]
    async fn entries_at_and_past_the_inline_read_size_are_served_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let stored_len = |e: &Episode| {
            HEADER_LEN
                + encode_cached_value_for_test(&CachedValue::Episode(Arc::new(e.clone()))).len()
        };
        let sized = |stored: usize| {
            let mut e = episode("big");
            e.task_description = "x".repeat(stored / 2);
            let short = stored - stored_len(&e);
            e.task_description.push_str(&"x".repeat(short));
            assert_eq!(stored_len(&e), stored);
            e
        };
        let (at, past) = (sized(INLINE_READ_BYTES), sized(INLINE_READ_BYTES + 1));
        let c = open(dir.path(), CacheConfig::default()).await;
        for e in [&at, &past] {
            c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
                .await
                .unwrap();
        }
        c.close().await.unwrap();
        let c = open(
            dir.path(),
            CacheConfig::default().with_memory_capacity(0, 0),
        )
        .await;
        for e in [&at, &past] {
            match c.get(&n, &CacheKey::Episode(e.id)).await.unwrap() {
                Some(CachedValue::Episode(got)) => assert_eq!(*got, *e),
                other => panic!("episode cached, got {other:?}"),
            }
        }
        assert_eq!(c.stats().disk_hits, 2);
        c.close().await.unwrap();
    }

    #[tokio::test]
    async fn corrupt_and_foreign_entries_are_misses_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.redb");
        let n = ns("a");
        let (e1, e2, e3) = (episode("1"), episode("2"), episode("3"));
        let c = open(dir.path(), CacheConfig::default()).await;
        for e in [&e1, &e2, &e3] {
            c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
                .await
                .unwrap();
        }
        c.close().await.unwrap();
        // e1: garbage body; e2: another format version; e3: the body of e1 (wrong key).
        let k1 = entry_key(&n, &CacheKey::Episode(e1.id));
        let k2 = entry_key(&n, &CacheKey::Episode(e2.id));
        let k3 = entry_key(&n, &CacheKey::Episode(e3.id));
        tamper(&path, &k1, |v| {
            v.truncate(HEADER_LEN + 5);
            v.extend([0xff; 7]);
        });
        tamper(&path, &k2, |v| v[HEADER_LEN] = 99);
        let body1 = encode_cached_value_for_test(&CachedValue::Episode(Arc::new(e1.clone())));
        tamper(&path, &k3, |v| {
            v.truncate(HEADER_LEN);
            v.extend(body1);
        });

        let c = open(dir.path(), CacheConfig::default()).await;
        for e in [&e1, &e2, &e3] {
            assert_eq!(c.get(&n, &CacheKey::Episode(e.id)).await.unwrap(), None);
        }
        let s = c.stats();
        assert_eq!((s.corrupt, s.misses, s.disk_hits), (2, 3, 0), "{s:?}");
        assert_eq!((s.entries, s.bytes), (0, 0), "all three removed: {s:?}");
        // Gone for good: a second read is a plain miss.
        assert_eq!(c.get(&n, &CacheKey::Episode(e1.id)).await.unwrap(), None);
        assert_eq!(c.stats().corrupt, 2);
    }

    fn encode_cached_value_for_test(v: &CachedValue) -> Vec<u8> {
        crate::codec::encode_cached_value(v).unwrap()
    }

    /// A byte of a stored value changed in place (same length, still valid bincode and UTF-8)
    /// is a miss and removed, never the changed text served; the value put back (as the
    /// tiered layer does after reading the durable layer) round-trips.
    #[tokio::test]
    async fn a_changed_byte_in_a_stored_value_is_a_miss_not_wrong_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.redb");
        let n = ns("a");
        let mut e = episode("t");
        e.task_description = "fix the flaky test in the billing module".into();
        let key = CacheKey::Episode(e.id);
        let k = entry_key(&n, &key);
        // No moka front: every read decodes the file.
        let config = CacheConfig::default().with_memory_capacity(0, 0);
        let c = open(dir.path(), config.clone()).await;
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
        c.close().await.unwrap();
        let mut len = 0;
        tamper(&path, &k, |v| {
            len = v.len();
            let at = v.windows(7).position(|w| w == b"billing").unwrap();
            v[at] = b'k'; // "killing": the same length, a valid string
        });

        let c = open(dir.path(), config.clone()).await;
        assert_eq!(c.stats().bytes, len as u64, "same length");
        assert_eq!(c.get(&n, &key).await.unwrap(), None, "served changed data");
        let s = c.stats();
        assert_eq!((s.corrupt, s.misses, s.disk_hits), (1, 1, 0), "{s:?}");
        assert_eq!(s.entries, 0, "the bad entry is removed: {s:?}");

        // The durable layer's value, put back, is served again.
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
        c.close().await.unwrap();
        let c = open(dir.path(), config).await;
        assert_eq!(
            c.get(&n, &key).await.unwrap(),
            Some(CachedValue::Episode(Arc::new(e)))
        );
        assert_eq!((c.stats().disk_hits, c.stats().corrupt), (1, 0));
    }

    #[tokio::test]
    async fn entries_of_the_previous_format_are_plain_misses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.redb");
        let n = ns("a");
        let e = episode("t");
        let key = CacheKey::Episode(e.id);
        let c = open(dir.path(), CacheConfig::default()).await;
        c.put(&n, &CachedValue::Episode(Arc::new(e))).await.unwrap();
        c.close().await.unwrap();
        // An entry written by the previous version: version byte 2, no checksum.
        tamper(&path, &entry_key(&n, &key), |v| {
            v.drain(HEADER_LEN + 1..HEADER_LEN + 5);
            v[HEADER_LEN] = 2;
        });
        let c = open(dir.path(), CacheConfig::default()).await;
        assert_eq!(c.get(&n, &key).await.unwrap(), None);
        let s = c.stats();
        assert_eq!((s.corrupt, s.misses, s.entries), (0, 1, 0), "{s:?}");
    }

    #[tokio::test]
    async fn moka_hits_count_as_memory_hits_and_keep_lru_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let c = open(dir.path(), CacheConfig::default().with_max_entries(3)).await;
        let es: Vec<Episode> = (0..4).map(|i| episode(&i.to_string())).collect();
        for e in &es[..3] {
            c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
                .await
                .unwrap();
        }
        // Served from the front, but the access still counts for LRU.
        assert!(
            c.get(&n, &CacheKey::Episode(es[0].id))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(c.stats().memory_hits, 1);
        c.put(&n, &CachedValue::Episode(Arc::new(es[3].clone())))
            .await
            .unwrap();
        c.flush().await.unwrap(); // evictions happen when the put commits
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(
            c.get(&n, &CacheKey::Episode(es[1].id)).await.unwrap(),
            None,
            "LRU entry evicted"
        );
        for e in [&es[0], &es[2], &es[3]] {
            assert!(c.get(&n, &CacheKey::Episode(e.id)).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn oversized_entries_are_refused_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let c = open(
            dir.path(),
            CacheConfig::default().with_max_episode_bytes(300),
        )
        .await;
        let mut e = episode("t");
        e.task_description = "x".repeat(1_000);
        let err = c
            .put(&n, &CachedValue::Episode(Arc::new(e)))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    field: "cache entry",
                    limit: 300,
                    ..
                }
            ),
            "{err}"
        );
        let c2 = RedbCache::open(
            dir.path().join("other.redb"),
            CacheConfig::default().with_max_bytes(100),
        )
        .await
        .unwrap();
        let err = c2
            .put(&n, &CachedValue::Episode(Arc::new(episode("t"))))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::LimitExceeded { limit: 100, .. }),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_by_writes() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let config = CacheConfig::default()
            .with_ttl(Some(Duration::from_secs(10)))
            .with_memory_capacity(0, 0);
        let c = open(dir.path(), config).await;
        let old = episode("old");
        c.put(&n, &CachedValue::Episode(Arc::new(old.clone())))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        c.put(&n, &CachedValue::Episode(Arc::new(episode("new"))))
            .await
            .unwrap();
        c.flush().await.unwrap();
        let s = c.stats();
        assert_eq!((s.expirations, s.entries), (1, 1), "{s:?}");
    }

    #[tokio::test]
    async fn clear_then_compact_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let n = ns("a");
        let c = open(
            dir.path(),
            CacheConfig::default().with_memory_capacity(0, 0),
        )
        .await;
        for i in 0..300 {
            let mut e = episode(&i.to_string());
            e.task_description.push_str(&"x".repeat(20_000));
            c.put(&n, &CachedValue::Episode(Arc::new(e))).await.unwrap();
        }
        c.flush().await.unwrap();
        let full = std::fs::metadata(c.path()).unwrap().len();
        c.clear().await.unwrap();
        c.flush().await.unwrap();
        assert!(c.compact().await.unwrap());
        let after = std::fs::metadata(c.path()).unwrap().len();
        assert_eq!(c.stats().entries, 0);
        assert!(after * 4 < full, "{full} -> {after}");
    }
}
