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
//! - a key the map does not know, which the file does not hold and no queued put carries
//!   (both checked under the lock, where the invalidation also drops the pending value of
//!   a queued put), is gone at once: nothing to queue. An episode created over a
//!   local file is never cached, and its first step batch finds it so.
//!
//! Only a *gone* key skips the transaction; a *going* one waits for a new invalidation, so a
//! caller never returns before the file lost the entry. Forgetting a gone key is always safe
//! (it only costs a transaction), so the gone keys are dropped when the map grows past
//! [`MAX_KEYS`]; the going ones stay (forgotten, their key would look unknown while a put
//! queued before their invalidation has not committed). Entries that leave the file otherwise
//! (evicted, expired, cleared) are not tracked.

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
    ///
    /// `absent` is called once under the lock with every distinct key and whether the map
    /// knows nothing of it (no invalidation of it queued since its last put), and returns one
    /// answer per key, in order; an unknown key for which it answers `true` is recorded gone
    /// without a write. It must answer `true` only when the file holds no entry for the key
    /// and no put of it waits to commit. Asking for all the keys at once lets it check every
    /// pending put first and then read the file once, after all those checks.
    pub(crate) fn queue_invalidations<R>(
        &self,
        keys: Vec<Vec<u8>>,
        absent: impl FnOnce(&[(&[u8], bool)]) -> Vec<bool>,
        enqueue: impl FnOnce(Vec<Vec<u8>>) -> R,
    ) -> Option<(Going, R)> {
        let mut state = self.lock();
        if state.keys.len() + keys.len() > MAX_KEYS {
            // Only the gone keys are forgotten: an invalidation still queued must stay known,
            // or its key would look unknown while a put queued before it has not committed.
            state.keys.retain(|_, generation| *generation != GONE);
        }
        let mut distinct: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for key in keys {
            if !distinct.contains(&key) {
                distinct.push(key);
            }
        }
        let known: Vec<Option<u64>> = distinct
            .iter()
            .map(|key| state.keys.get(key).copied())
            .collect();
        let asked: Vec<(&[u8], bool)> = distinct
            .iter()
            .zip(&known)
            .map(|(key, known)| (key.as_slice(), known.is_none()))
            .collect();
        let answers = absent(&asked);
        drop(asked);
        let mut fresh: Vec<Vec<u8>> = Vec::with_capacity(distinct.len());
        for (i, (key, known)) in distinct.into_iter().zip(known).enumerate() {
            if known == Some(GONE) {
                continue;
            }
            if known.is_none() && answers.get(i).copied().unwrap_or(false) {
                state.keys.insert(key, GONE);
            } else {
                fresh.push(key);
            }
        }
        if fresh.is_empty() {
            return None;
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

    fn none_absent(keys: &[(&[u8], bool)]) -> Vec<bool> {
        vec![false; keys.len()]
    }

    fn invalidate(g: &GoneKeys, key: &str) -> Option<u64> {
        let (going, queued) =
            g.queue_invalidations(vec![k(key)], none_absent, |fresh| fresh.len())?;
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
            .queue_invalidations(vec![k("a"), k("b"), k("b"), k("c")], none_absent, |fresh| {
                fresh
            })
            .unwrap();
        assert_eq!(queued, vec![k("b"), k("c")]);
        assert_eq!(going.len(), 2);
    }

    #[test]
    fn an_unknown_key_found_absent_is_gone_without_a_write() {
        let g = GoneKeys::default();
        let mut asked = Vec::new();
        let queued = g.queue_invalidations(
            vec![k("new"), k("held")],
            |keys| {
                asked.extend(keys.iter().map(|(key, unknown)| (key.to_vec(), *unknown)));
                keys.iter().map(|(key, _)| *key == b"new").collect()
            },
            |fresh| fresh,
        );
        assert_eq!(queued.unwrap().1, vec![k("held")]);
        assert!(g.is_gone(b"new"));
        assert_eq!(asked, vec![(k("new"), true), (k("held"), true)]);
        // A key with an invalidation queued is not unknown: it waits for its own write, even
        // where the file no longer holds it.
        let (going, queued) = g
            .queue_invalidations(
                vec![k("held")],
                |keys| keys.iter().map(|(_, unknown)| !unknown).collect(),
                |fresh| fresh,
            )
            .unwrap();
        assert_eq!((going.len(), queued), (1, vec![k("held")]));
        // A put makes it unknown again; then absence decides once more.
        g.queue_puts([b"new".as_slice()], || ());
        assert!(!g.is_gone(b"new"));
        assert!(
            g.queue_invalidations(vec![k("new")], |keys| vec![true; keys.len()], |f| f)
                .is_none()
        );
        assert!(g.is_gone(b"new"));
    }

    #[test]
    fn queued_invalidations_outlive_the_bound() {
        let g = GoneKeys::default();
        let pending = invalidate(&g, "queued").unwrap();
        for i in 0..MAX_KEYS {
            let key = format!("{i}");
            let generation = invalidate(&g, &key).unwrap();
            g.finished(key.as_bytes(), generation, true);
        }
        assert!(!g.is_gone(b"0"), "past the bound the gone keys are dropped");
        // Still known as going: never taken for unknown (and so never judged by absence).
        let again = g
            .queue_invalidations(
                vec![k("queued")],
                |keys| keys.iter().map(|(_, unknown)| *unknown).collect(),
                |f| f,
            )
            .unwrap();
        assert_eq!(again.1, vec![k("queued")]);
        g.finished(b"queued", pending, true);
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
