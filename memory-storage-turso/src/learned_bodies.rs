//! The bodies of learned items a remote handle last read or wrote, so a completion can merge
//! without reading them first (one request instead of two).
//!
//! A completion over a server reads the items its learning update names, merges them in
//! process and writes them back with a guard that refuses the write unless every item is
//! still stored exactly as read ([`crate::remote_batch`]). The guard does not care where
//! the bodies came from: when this handle knows them already (it read or wrote them last),
//! the completion sends the write alone, and if another writer changed any of them
//! meanwhile, the guard refuses, nothing is written, the entries are forgotten and the
//! completion reads them as before. A stale entry therefore costs one refused request, never
//! a wrong merge.
//!
//! Bounded by [`BUDGET`] bytes of bodies; past it the entries are dropped whole (they are
//! only a shortcut). Written here because the entries are a few maps with one byte budget;
//! no cache crate's eviction order would matter for them.

use std::collections::{BTreeMap, HashMap};

use memory_core::{FailureLesson, Heuristic, LearnedChanges, Pattern};
use serde::Serialize;

use crate::codec::to_json;
use crate::error::DbResult;

/// Bytes of bodies kept per handle (as much as a few thousand items).
pub(crate) const BUDGET: usize = 16 * 1024 * 1024;

/// The bodies of one namespace's items by table and id (`None`: known to be absent), and the
/// live heuristics of each condition key whose set is known (id -> body).
#[derive(Default)]
pub(crate) struct LearnedBodies {
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    bodies: HashMap<(String, &'static str, String), Option<String>>,
    keyed: HashMap<(String, String), BTreeMap<String, String>>,
    bytes: usize,
}

/// What a completion's merge starts from, as known here.
pub(crate) struct Known {
    /// `(table, id, body)` for every id asked for.
    pub(crate) bodies: Vec<(&'static str, String, Option<String>)>,
    /// The live heuristics of every key asked for: `(id, body)`.
    pub(crate) keyed: Vec<(String, String)>,
}

impl State {
    /// Keeps `body` for `key`; [`State::bytes`] counts what is held (an entry replaced is
    /// no longer counted).
    fn put(&mut self, key: (String, &'static str, String), body: Option<String>) {
        let id_len = key.2.len();
        self.bytes += body.as_ref().map_or(0, String::len) + id_len;
        if let Some(old) = self.bodies.insert(key, body) {
            self.bytes -= old.as_ref().map_or(0, String::len) + id_len;
        }
    }

    /// Keeps `live` as the live heuristics of `key` (id -> body), counted as [`State::put`].
    fn put_keyed(&mut self, key: (String, String), live: BTreeMap<String, String>) {
        self.bytes += map_bytes(&live);
        if let Some(old) = self.keyed.insert(key, live) {
            self.bytes -= map_bytes(&old);
        }
    }

    fn fit(&mut self) {
        if self.bytes > BUDGET {
            *self = State::default();
        }
    }
}

impl LearnedBodies {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Entries are only a shortcut that the guard checks: a panic while they were held
        // leaves at worst a stale one, which the guard refuses.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The bodies of `ids` (by table) and the live heuristics of `keys` as last read or
    /// written here; an id never seen is assumed absent, a key never read without live
    /// heuristics (new items are the common case; the guard checks either way).
    pub(crate) fn assumed(
        &self,
        ns: &str,
        ids: &[(&'static str, &[String])],
        keys: &[String],
    ) -> Known {
        let state = self.state();
        let mut bodies = Vec::new();
        for (table, ids) in ids {
            for id in *ids {
                let body = state
                    .bodies
                    .get(&(ns.to_owned(), *table, id.clone()))
                    .cloned()
                    .flatten();
                bodies.push((*table, id.clone(), body));
            }
        }
        let mut keyed = Vec::new();
        for key in keys {
            if let Some(live) = state.keyed.get(&(ns.to_owned(), key.clone())) {
                keyed.extend(live.iter().map(|(i, b)| (i.clone(), b.clone())));
            }
        }
        Known { bodies, keyed }
    }

    /// Remembers what a completion read: `bodies` as `(table, id, body)`, and the live
    /// heuristics of `keys` as `(id, body, condition key)`.
    pub(crate) fn read(
        &self,
        ns: &str,
        bodies: &[(&'static str, String, Option<String>)],
        keys: &[String],
        keyed: &[(String, String, String)],
    ) {
        let mut state = self.state();
        for (table, id, body) in bodies {
            state.put((ns.to_owned(), table, id.clone()), body.clone());
        }
        for key in keys {
            let live: BTreeMap<String, String> = keyed
                .iter()
                .filter(|(_, _, k)| k == key)
                .map(|(i, b, _)| (i.clone(), b.clone()))
                .collect();
            state.put_keyed((ns.to_owned(), key.clone()), live);
        }
        state.fit();
    }

    /// Remembers the items a completion wrote (their bodies as written).
    pub(crate) fn wrote(&self, ns: &str, changes: &LearnedChanges) -> DbResult<()> {
        let mut state = self.state();
        for p in &changes.patterns {
            put_item::<Pattern>(&mut state, ns, "patterns", &p.item.id.0, &p.item)?;
        }
        for l in &changes.lessons {
            put_item::<FailureLesson>(&mut state, ns, "lessons", &l.item.id.0, &l.item)?;
        }
        for h in &changes.heuristics {
            let h = &h.item;
            let body = put_item::<Heuristic>(&mut state, ns, "heuristics", &h.id.0, h)?;
            let State { keyed, bytes, .. } = &mut *state;
            if let Some(live) = keyed.get_mut(&(ns.to_owned(), h.condition_key.clone())) {
                // As the SQL that loads a key's live heuristics: `status <> 'pruned'`.
                let old = if h.status.name() == "pruned" {
                    live.remove(&h.id.0)
                } else {
                    *bytes += h.id.0.len() + body.len();
                    live.insert(h.id.0.clone(), body)
                };
                if let Some(old) = old {
                    *bytes -= h.id.0.len() + old.len();
                }
            }
        }
        state.fit();
        Ok(())
    }
}

/// The bytes of a key's live heuristics (ids and bodies).
fn map_bytes(live: &BTreeMap<String, String>) -> usize {
    live.iter().map(|(id, body)| id.len() + body.len()).sum()
}

/// Stores `item`'s body as the store writes it (the same serialization); the body.
fn put_item<T: Serialize + memory_core::Learned>(
    state: &mut State,
    ns: &str,
    table: &'static str,
    id: &str,
    item: &T,
) -> DbResult<String> {
    let body = to_json(T::KIND.name(), item)?;
    state.put((ns.to_owned(), table, id.to_owned()), Some(body.clone()));
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{BUDGET, LearnedBodies, State};

    #[test]
    fn replaced_entries_are_no_longer_counted() {
        let mut state = State::default();
        let key = || ("ns".to_owned(), "patterns", "p1".to_owned());
        state.put(key(), Some("x".repeat(100)));
        assert_eq!(state.bytes, 102);
        state.put(key(), Some("y".repeat(40)));
        assert_eq!(state.bytes, 42);
        state.put(key(), None);
        assert_eq!(state.bytes, 2);
        let live = |n: usize| BTreeMap::from([("h1".to_owned(), "z".repeat(n))]);
        state.put_keyed(("ns".to_owned(), "k".to_owned()), live(10));
        assert_eq!(state.bytes, 2 + 12);
        state.put_keyed(("ns".to_owned(), "k".to_owned()), live(20));
        assert_eq!(state.bytes, 2 + 22);
    }

    #[test]
    fn rewriting_one_item_never_reaches_the_budget() {
        let bodies = LearnedBodies::default();
        let body = "b".repeat(1024 * 1024);
        let read = [("patterns", "p1".to_owned(), Some(body))];
        // Counting every write, 16 reads of 1 MiB pass the 16-MiB budget: the 32nd would
        // drop everything, this entry included.
        assert_eq!(BUDGET, 16 * 1024 * 1024);
        for _ in 0..32 {
            bodies.read("ns", &read, &[], &[]);
        }
        let known = bodies.assumed("ns", &[("patterns", &["p1".to_owned()])], &[]);
        assert!(
            known.bodies[0].2.is_some(),
            "the entry was dropped by a reset"
        );
    }
}
