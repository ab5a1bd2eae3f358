//! In-memory stand-ins for the cache and the outbox, for tests of the tiered composition
//!. The outbox here is not durable; use the redb outbox in production.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use memory_core::Namespace;
use memory_core::{Cache, CacheKey, CacheStats, CachedValue};
use memory_core::{Error, Result};
use memory_core::{Outbox, OutboxEntry};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An unbounded map cache that can be told to fail every call.
#[derive(Debug, Default)]
pub struct InMemoryCache {
    map: Mutex<HashMap<(Namespace, CacheKey), CachedValue>>,
    failing: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
}

impl InMemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail (true) or work (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::storage(
                "test-cache",
                "cache",
                false,
                "injected cache failure",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get(&self, ns: &Namespace, key: &CacheKey) -> Result<Option<CachedValue>> {
        self.check()?;
        let v = lock(&self.map).get(&(ns.clone(), key.clone())).cloned();
        if v.is_some() {
            &self.hits
        } else {
            &self.misses
        }
        .fetch_add(1, Ordering::Relaxed);
        Ok(v)
    }
    async fn put(&self, ns: &Namespace, value: &CachedValue) -> Result<()> {
        self.check()?;
        self.inserts.fetch_add(1, Ordering::Relaxed);
        lock(&self.map).insert((ns.clone(), value.key()), value.clone());
        Ok(())
    }
    async fn invalidate(&self, ns: &Namespace, key: &CacheKey) -> Result<()> {
        self.check()?;
        lock(&self.map).remove(&(ns.clone(), key.clone()));
        Ok(())
    }
    async fn clear(&self) -> Result<()> {
        self.check()?;
        lock(&self.map).clear();
        Ok(())
    }
    fn stats(&self) -> CacheStats {
        CacheStats {
            memory_hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            entries: lock(&self.map).len() as u64,
            ..CacheStats::default()
        }
    }
}

/// An ordered in-memory journal.
#[derive(Debug, Default)]
pub struct InMemoryOutbox {
    entries: Mutex<(u64, BTreeMap<u64, OutboxEntry>)>,
}

impl InMemoryOutbox {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Outbox for InMemoryOutbox {
    async fn append(&self, entry: &OutboxEntry) -> Result<u64> {
        let mut g = lock(&self.entries);
        g.0 += 1;
        let seq = g.0;
        g.1.insert(seq, entry.clone());
        Ok(seq)
    }
    async fn peek(&self, max: usize) -> Result<Vec<(u64, OutboxEntry)>> {
        Ok(lock(&self.entries)
            .1
            .iter()
            .take(max)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
    async fn ack(&self, up_to: u64) -> Result<()> {
        lock(&self.entries).1.retain(|k, _| *k > up_to);
        Ok(())
    }
    async fn len(&self) -> Result<u64> {
        Ok(lock(&self.entries).1.len() as u64)
    }
}
