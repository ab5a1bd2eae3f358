//! The cache interface the tiered storage composes (the redb cache implements it).
//!
//! A cache holds copies: it may forget anything at any time, and nothing is lost when it does.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::episode::{Episode, EpisodeId};
use crate::error::Result;
use crate::learned::{Heuristic, HeuristicId, LearnedId, LearnedItem, Pattern, PatternId};
use crate::namespace::Namespace;

/// What a cache entry is keyed by (within a namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum CacheKey {
    /// An episode.
    Episode(EpisodeId),
    /// A pattern.
    Pattern(PatternId),
    /// A heuristic.
    Heuristic(HeuristicId),
}

/// A cached object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CachedValue {
    /// An episode with its steps, shared: a hit hands out the same allocation, never a copy.
    Episode(Arc<Episode>),
    /// A pattern.
    Pattern(Pattern),
    /// A heuristic.
    Heuristic(Heuristic),
}

impl CacheKey {
    /// The key of a learned item, if its kind is cached (patterns and heuristics).
    pub fn for_learned(id: &LearnedId) -> Option<CacheKey> {
        match id {
            LearnedId::Pattern(id) => Some(CacheKey::Pattern(id.clone())),
            LearnedId::Heuristic(id) => Some(CacheKey::Heuristic(id.clone())),
            LearnedId::Lesson(_) => None,
        }
    }
}

impl CachedValue {
    /// A learned item as a cache value, if its kind is cached.
    pub fn from_learned(item: LearnedItem) -> Option<CachedValue> {
        match item {
            LearnedItem::Pattern(p) => Some(CachedValue::Pattern(p)),
            LearnedItem::Heuristic(h) => Some(CachedValue::Heuristic(h)),
            LearnedItem::Lesson(_) => None,
        }
    }

    /// The learned item it holds, if it holds one.
    pub fn into_learned(self) -> Option<LearnedItem> {
        match self {
            CachedValue::Pattern(p) => Some(LearnedItem::Pattern(p)),
            CachedValue::Heuristic(h) => Some(LearnedItem::Heuristic(h)),
            CachedValue::Episode(_) => None,
        }
    }

    /// The key this value is stored under.
    pub fn key(&self) -> CacheKey {
        match self {
            CachedValue::Episode(e) => CacheKey::Episode(e.id),
            CachedValue::Pattern(p) => CacheKey::Pattern(p.id.clone()),
            CachedValue::Heuristic(h) => CacheKey::Heuristic(h.id.clone()),
        }
    }
}

/// Counters a cache exposes (`memory stats` shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Hits served from process memory.
    pub memory_hits: u64,
    /// Hits served from the cache file.
    pub disk_hits: u64,
    /// Misses.
    pub misses: u64,
    /// Inserts and replacements.
    pub inserts: u64,
    /// Entries evicted for the entry or byte bound.
    pub evictions: u64,
    /// Entries removed because their TTL passed.
    pub expirations: u64,
    /// Entries that failed to decode (counted as misses and removed).
    pub corrupt: u64,
    /// Entries now held.
    pub entries: u64,
    /// Encoded bytes now held.
    pub bytes: u64,
}

impl CacheStats {
    /// Share of lookups that hit, in [0, 1]; 0 with no lookups.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.memory_hits + self.disk_hits;
        let total = hits + self.misses;
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    }
}

/// The change-feed position a cache's contents were coherent with when it was closed (see
/// [`crate::Storage::changes_since`]): a process that reopens the cache drops only what
/// changed after it, instead of everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMark {
    /// The database the position belongs to.
    pub database: String,
    /// The position.
    pub position: u64,
}

/// A namespaced object cache. Errors are for the caller to log and count; the tiered storage
/// never fails an operation because of one.
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug {
    /// The cached value, if present and not expired. A corrupt entry is removed and reported as
    /// a miss.
    async fn get(&self, ns: &Namespace, key: &CacheKey) -> Result<Option<CachedValue>>;
    /// Stores or replaces a value (may evict others to stay within bounds).
    async fn put(&self, ns: &Namespace, value: &CachedValue) -> Result<()>;
    /// Stores or replaces several values; the first error is returned, after every value was
    /// tried. A cache with a commit per write should override this to commit them together
    /// (the default puts them one after another).
    async fn put_many(&self, ns: &Namespace, values: &[CachedValue]) -> Result<()> {
        let mut first = None;
        for v in values {
            if let Err(e) = self.put(ns, v).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
    /// Removes a value, if present.
    async fn invalidate(&self, ns: &Namespace, key: &CacheKey) -> Result<()>;
    /// Removes several values; the first error is returned, after every key was tried. A
    /// cache with a commit per write should override this to commit them together.
    async fn invalidate_many(&self, keys: &[(Namespace, CacheKey)]) -> Result<()> {
        let mut first = None;
        for (ns, key) in keys {
            if let Err(e) = self.invalidate(ns, key).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
    /// Removes everything.
    async fn clear(&self) -> Result<()>;
    /// Removes everything and leaves no old value in the free space of its own storage: what
    /// an erasure asks of the cache that may hold the erased episodes. A cache in a file
    /// gives the freed pages back (the file shrinks to what is live). The default clears.
    async fn scrub(&self) -> Result<()> {
        self.clear().await
    }
    /// Waits until every write queued so far is in the cache's own storage. A cache that
    /// writes behind its callers overrides this; the tiered layer's shutdown
    /// (`memory_tiered::TieredStorage::shutdown`) calls it, so that a process ending right after leaves no queued write to be dropped with its
    /// runtime. The default has nothing queued.
    async fn settle(&self) {}
    /// Current counters.
    fn stats(&self) -> CacheStats;
    /// The mark stored when the cache was last closed, if it outlives processes and had one.
    /// A cache that forgets everything when it closes has none (the default).
    fn opened_mark(&self) -> Option<CacheMark> {
        None
    }
    /// The mark to store when the cache closes (ignored by a cache that does not outlive its
    /// process).
    fn set_close_mark(&self, mark: CacheMark) {
        let _ = mark;
    }
}
