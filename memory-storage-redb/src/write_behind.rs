//! Cache puts off the caller's path: a put is queued for the group commit and returns; until
//! its transaction commits, reads are served from [`PendingPuts`], and [`InFlight`] lets
//! `close` and `clear` wait for every queued put first.
//!
//! The cache is a copy of durable state: the durable commit acknowledges a write, so the
//! caller need not wait for the cache file. What must hold is that nothing stale is served:
//! a read sees the newest put of its key (pending or committed), a later invalidation commits
//! after the puts queued before it, and a file whose queued puts may be lost (a runtime that
//! stopped before they committed, a failed commit) is not marked clean, so it is emptied
//! when reopened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most puts in flight at once; beyond it a put waits for its commit.
const MAX_IN_FLIGHT: u32 = 1 << 16;

/// The newest queued, not yet committed value of each key, with the sequence number of the put
/// that queued it.
pub(crate) struct PendingPuts<V> {
    map: Mutex<HashMap<Vec<u8>, (u64, V)>>,
    next: AtomicU64,
}

impl<V: Clone> PendingPuts<V> {
    pub(crate) fn new() -> Self {
        PendingPuts {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (u64, V)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `value` as the newest of `key`; returns its sequence number.
    pub(crate) fn put(&self, key: Vec<u8>, value: V) -> u64 {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, (seq, value));
        seq
    }

    /// The queued value of `key`, if a put of it has not committed yet.
    pub(crate) fn get(&self, key: &[u8]) -> Option<V> {
        self.lock().get(key).map(|(_, v)| v.clone())
    }

    /// Forgets `key`'s value once the put `seq` committed, unless a newer put replaced it.
    pub(crate) fn committed(&self, key: &[u8], seq: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|(s, _)| *s == seq) {
            map.remove(key);
        }
    }

    /// Forgets `key`'s value (it is being invalidated); whether it had one.
    pub(crate) fn remove(&self, key: &[u8]) -> bool {
        self.lock().remove(key).is_some()
    }

    /// Forgets every value (the cache is being cleared).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// Counts the puts in flight and remembers whether any may have been lost.
pub(crate) struct InFlight {
    permits: Arc<Semaphore>,
    lost: AtomicBool,
}

impl InFlight {
    pub(crate) fn new() -> Self {
        InFlight {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)),
            lost: AtomicBool::new(false),
        }
    }

    /// A permit for one more put in flight, or `None` when too many are (the caller then
    /// waits for its commit itself).
    pub(crate) fn begin(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).try_acquire_owned().ok()
    }

    /// Waits until no put is in flight.
    pub(crate) async fn drained(&self) {
        // The semaphore is never closed, so acquiring cannot fail.
        if let Ok(all) = self.permits.acquire_many(MAX_IN_FLIGHT).await {
            drop(all);
        }
    }

    /// Records that a queued put may not be in the file.
    pub(crate) fn set_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether a queued put may not be in the file (then the file must not be marked clean).
    pub(crate) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_newer_put_survives_the_commit_of_an_older_one() {
        let p = PendingPuts::new();
        let old = p.put(b"k".to_vec(), 1);
        let new = p.put(b"k".to_vec(), 2);
        p.committed(b"k", old);
        assert_eq!(p.get(b"k"), Some(2));
        p.committed(b"k", new);
        assert_eq!(p.get(b"k"), None);
    }

    #[tokio::test]
    async fn drained_waits_for_every_permit() {
        let f = Arc::new(InFlight::new());
        let permit = f.begin().unwrap();
        let waiter = tokio::spawn({
            let f = Arc::clone(&f);
            async move { f.drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(permit);
        waiter.await.unwrap();
    }
}
