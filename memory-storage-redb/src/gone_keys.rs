//! Which keys the cache file is known not to hold, so that invalidating one again needs no
//! write transaction.
//!
//! A step batch, a feedback vote or a completion invalidates its episode or item, often one
//! that the previous write already invalidated. Each invalidation was a redb write
//! transaction, committed on the blocking pool while the caller waited: about a quarter of a
//! small step write's cost. The cache file belongs to one process (redb locks it), so this
//! process sees every write queued to it and can tell, exactly, that the last write queued
//! for a key was an invalidation that committed.
//!
//! The rule, under one lock taken around the queueing itself (so the order of this map's
//! changes is the order of the writes in the queue):
//! - queueing an invalidation records the key as *going* (with a generation);
//! - queueing a put forgets the key;
//! - an invalidation that committed turns *going* into *gone*, but only if the key is still
//!   *going* with that generation (no put or later invalidation was queued after it);
//! - an invalidation that failed forgets the key.
//!
//! Only a *gone* key skips the transaction; a *going* one waits for a new invalidation, so a
//! caller never returns before the file lost the entry. Forgetting is always safe (it only
//! costs a transaction), so the map is simply cleared when it grows past [`MAX_KEYS`]. Entries
//! that leave the file otherwise (evicted, expired, cleared) are not tracked.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most keys remembered; past it the map starts over.
pub(crate) const MAX_KEYS: usize = 16_384;

/// The generation of a committed invalidation.
const GONE: u64 = 0;

/// Keys whose last queued write is an invalidation: `GONE` once it committed, else its
/// generation.
#[derive(Debug, Default)]
pub(crate) struct GoneKeys {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<Vec<u8>, u64>,
    next_generation: u64,
}

/// Invalidations queued by [`GoneKeys::queue_invalidations`]: each key with its generation.
pub(crate) type Going = Vec<(Vec<u8>, u64)>;

impl GoneKeys {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues (with `enqueue`, called under the lock) invalidations of the keys not known to
    /// be gone, once each; returns them with their generations and what `enqueue` returned, or
    /// `None` when every key is gone already (nothing was queued).
    pub(crate) fn queue_invalidations<R>(
        &self,
        keys: Vec<Vec<u8>>,
        enqueue: impl FnOnce(Vec<Vec<u8>>) -> R,
    ) -> Option<(Going, R)> {
        let mut state = self.lock();
        let mut fresh: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for key in keys {
            if state.keys.get(&key) != Some(&GONE) && !fresh.contains(&key) {
                fresh.push(key);
            }
        }
        if fresh.is_empty() {
            return None;
        }
        if state.keys.len() + fresh.len() > MAX_KEYS {
            state.keys.clear();
        }
        let mut going = Vec::with_capacity(fresh.len());
        for key in &fresh {
            state.next_generation += 1;
            let generation = state.next_generation;
            state.keys.insert(key.clone(), generation);
            going.push((key.clone(), generation));
        }
        let queued = enqueue(fresh);
        Some((going, queued))
    }

    /// Queues (with `enqueue`, called under the lock) puts of `keys`: they are no longer gone.
    pub(crate) fn queue_puts<'k, R>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        enqueue: impl FnOnce() -> R,
    ) -> R {
        let mut state = self.lock();
        for key in keys {
            state.keys.remove(key);
        }
        enqueue()
    }

    /// The outcome of a queued invalidation: committed (the key is gone unless another write
    /// was queued after it) or failed (the file may still hold the entry).
    pub(crate) fn finished(&self, key: &[u8], generation: u64, committed: bool) {
        let mut state = self.lock();
        if state.keys.get(key) == Some(&generation) {
            if committed {
                state.keys.insert(key.to_vec(), GONE);
            } else {
                state.keys.remove(key);
            }
        }
    }

    /// Whether an invalidation of `key` would be skipped.
    #[cfg(test)]
    fn is_gone(&self, key: &[u8]) -> bool {
        self.lock().keys.get(key) == Some(&GONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn invalidate(g: &GoneKeys, key: &str) -> Option<u64> {
        let (going, queued) = g.queue_invalidations(vec![k(key)], |fresh| fresh.len())?;
        assert_eq!(queued, 1);
        Some(going[0].1)
    }

    #[test]
    fn a_committed_invalidation_makes_the_next_one_free() {
        let g = GoneKeys::default();
        let generation = invalidate(&g, "a").unwrap();
        // Still queued: a second invalidation must queue (and wait) too.
        let second = invalidate(&g, "a").unwrap();
        g.finished(b"a", generation, true);
        assert!(
            !g.is_gone(b"a"),
            "the first commit is not the last write queued"
        );
        g.finished(b"a", second, true);
        assert!(g.is_gone(b"a"));
        assert_eq!(invalidate(&g, "a"), None);
    }

    #[test]
    fn a_put_queued_after_the_invalidation_keeps_the_key_present() {
        let g = GoneKeys::default();
        let generation = invalidate(&g, "a").unwrap();
        let order = g.queue_puts([b"a".as_slice()], || "queued");
        assert_eq!(order, "queued");
        g.finished(b"a", generation, true);
        assert!(!g.is_gone(b"a"));
        assert!(invalidate(&g, "a").is_some());
    }

    #[test]
    fn a_failed_invalidation_is_forgotten() {
        let g = GoneKeys::default();
        let generation = invalidate(&g, "a").unwrap();
        g.finished(b"a", generation, false);
        assert!(!g.is_gone(b"a"));
        assert!(invalidate(&g, "a").is_some());
    }

    #[test]
    fn only_the_keys_not_gone_are_queued_once_each() {
        let g = GoneKeys::default();
        let generation = invalidate(&g, "a").unwrap();
        g.finished(b"a", generation, true);
        let (going, queued) = g
            .queue_invalidations(vec![k("a"), k("b"), k("b"), k("c")], |fresh| fresh)
            .unwrap();
        assert_eq!(queued, vec![k("b"), k("c")]);
        assert_eq!(going.len(), 2);
    }

    #[test]
    fn the_map_starts_over_past_its_bound() {
        let g = GoneKeys::default();
        for i in 0..MAX_KEYS {
            let key = format!("{i}");
            let generation = invalidate(&g, &key).unwrap();
            g.finished(key.as_bytes(), generation, true);
        }
        assert!(g.is_gone(b"0"));
        let generation = invalidate(&g, "one more").unwrap();
        assert!(!g.is_gone(b"0"), "cleared: forgetting is always safe");
        g.finished(b"one more", generation, true);
        assert!(g.is_gone(b"one more"));
    }
}
