//! [`MemoryCache`]: the cache of a process that does not hold the cache file.
//!
//! Only one process at a time can hold a redb file; the others on the same data directory
//! keep their cached copies in process memory only (moka, bounded by bytes, with the same TTL),
//! and the change feed keeps them coherent exactly as it keeps the file coherent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use memory_core::{Cache, CacheKey, CacheStats, CachedValue, Namespace, Result};

use crate::config::CacheConfig;
use crate::tables::entry_key;

/// A bounded in-process cache with the [`CacheConfig`] of the file cache it stands in for
/// (its memory tier's byte budget and entry TTL).
#[derive(Clone)]
pub struct MemoryCache {
    map: moka::future::Cache<Vec<u8>, Arc<(CachedValue, u32)>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("entries", &self.map.entry_count())
            .finish_non_exhaustive()
    }
}

/// Approximate bytes of a value, for the byte budget.
fn weight(v: &CachedValue) -> u32 {
    let bytes = match v {
        CachedValue::Episode(e) => e.approx_size(),
        CachedValue::Pattern(_) | CachedValue::Heuristic(_) => 2_048,
    };
    u32::try_from(bytes).unwrap_or(u32::MAX).max(1)
}

impl MemoryCache {
    /// A cache bounded by `config.memory_max_bytes`, entries expiring after `config.ttl`
    /// (if set).
    pub fn new(config: &CacheConfig) -> Self {
        let mut builder = moka::future::Cache::builder()
            .max_capacity(config.memory_max_bytes.max(1))
            .weigher(|_k: &Vec<u8>, v: &Arc<(CachedValue, u32)>| v.1);
        if let Some(ttl) = config.ttl.filter(|t| !t.is_zero()) {
            builder = builder.time_to_live(ttl.min(Duration::from_secs(365 * 24 * 3600)));
        }
        MemoryCache {
            map: builder.build(),
            counters: Arc::default(),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, ns: &Namespace, key: &CacheKey) -> Result<Option<CachedValue>> {
        let v = self.map.get(&entry_key(ns, key)).await;
        let counter = if v.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(v.map(|e| e.0.clone()))
    }

    async fn put(&self, ns: &Namespace, value: &CachedValue) -> Result<()> {
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        let w = weight(value);
        self.map
            .insert(entry_key(ns, &value.key()), Arc::new((value.clone(), w)))
            .await;
        Ok(())
    }

    async fn invalidate(&self, ns: &Namespace, key: &CacheKey) -> Result<()> {
        self.map.invalidate(&entry_key(ns, key)).await;
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        self.map.invalidate_all();
        Ok(())
    }

    fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            memory_hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            entries: self.map.entry_count(),
            bytes: self.map.weighted_size(),
            ..CacheStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use memory_core::{Episode, NewEpisode, TaskContext, TaskType};

    use super::*;

    #[tokio::test]
    async fn puts_gets_invalidates_and_stays_within_its_byte_budget() {
        let config = CacheConfig {
            memory_max_bytes: 64 * 1024,
            ..CacheConfig::default()
        };
        let c = MemoryCache::new(&config);
        let ns = Namespace::new("a").unwrap();
        let mut ids = Vec::new();
        for i in 0..200 {
            let mut e = Episode::start(
                NewEpisode::new(
                    format!("task {i} {}", "x".repeat(1_000)),
                    TaskType::Testing,
                    TaskContext::new("d"),
                ),
                chrono::Utc::now(),
            );
            e.id = memory_core::EpisodeId::new();
            ids.push(e.id);
            c.put(&ns, &CachedValue::Episode(Arc::new(e)))
                .await
                .unwrap();
        }
        c.map.run_pending_tasks().await;
        let st = c.stats();
        assert!(st.bytes <= 64 * 1024, "{st:?}");
        assert!(st.entries < 200, "{st:?}");
        let mut held = None;
        for id in &ids {
            if c.get(&ns, &CacheKey::Episode(*id)).await.unwrap().is_some() {
                held = Some(CacheKey::Episode(*id));
            }
        }
        let held = held.expect("some episodes are held");
        c.invalidate(&ns, &held).await.unwrap();
        assert!(c.get(&ns, &held).await.unwrap().is_none());
        let other = Namespace::new("b").unwrap();
        for id in &ids {
            assert!(
                c.get(&other, &CacheKey::Episode(*id))
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }
}
