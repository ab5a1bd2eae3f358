//! [`RedbCache`]: a bounded LRU + TTL cache of episodes, patterns and heuristics in a redb file,
//! with a moka cache of the hottest entries in front.

mod cache_impl;
mod disk;
mod front;
mod inner;
#[cfg(test)]
mod tests;

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
use crate::sealing::{SEAL_OVERHEAD, cache_entry_key, check_matches, key_check_text};
use crate::tables::{
    CACHE_INFO, CACHE_MARK, ENTRIES, EXPIRY, HEADER_LEN, INFO_BYTES, INFO_CLEAN, INFO_LAYOUT,
    INFO_MARK_POSITION, LAYOUT_VERSION, LRU, MARK_DATABASE, MARK_SEAL, META, expiry_key,
    split_expiry_key, split_stored,
};
use crate::write_behind::{InFlight, PendingPuts};
use disk::{Tabs, open_file, wipe};
use front::build_front;

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
/// - **Encryption at rest** ([`CacheConfig::sealer`]): values are sealed, bound to their key,
///   and keys are keyed hashes of the namespace, kind and id; a value that does not open counts
///   as `corrupt` (a miss). A file written under another key or without one is replaced by an
///   empty file when opened.
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
    /// The limits apply as without a sealer: the kind's to the encoded entry, `max_bytes` to
    /// what is stored (with a sealer, 41 bytes more than the encoded entry), which is also
    /// what the byte counts add up.
    fn encode_entry(&self, ns: &Namespace, value: &CachedValue) -> Result<EncodedEntry> {
        let inner = &self.inner;
        let value_key = value.key();
        let now = inner.now_ms();
        let expires = inner.expires_at(now);
        let mut stored = Vec::with_capacity(1024);
        stored.extend_from_slice(&expires.to_be_bytes());
        encode_cached_value_into(&mut stored, value)?;
        let record = stored.len() - HEADER_LEN;
        let limit = inner.config.limit_for(&value_key);
        if record > limit {
            return Err(Error::LimitExceeded {
                field: "cache entry",
                limit: limit as u64,
                actual: record as u64,
            });
        }
        let key = inner.key_bytes(ns, &value_key);
        if let Some(sealer) = &inner.config.sealer {
            let sealed = sealer
                .seal(&stored[HEADER_LEN..], &key)
                .map_err(|e| failed("cache put", e))?;
            stored.truncate(HEADER_LEN);
            stored.extend_from_slice(&sealed);
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
            key,
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
