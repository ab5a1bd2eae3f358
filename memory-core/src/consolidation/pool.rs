//! What the steps of a consolidation run share: the items of one kind as loaded and as the run
//! leaves them (`Pool`), and what the run accumulates (`RunState`, its `LearnedChange`s).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::merge::{Consolidate, merge_into};
use crate::learned::{Learned, LearnedStatus};
use crate::records::ConsolidationRun;
use crate::storage::GuardedItems;

/// One learned item a consolidation run changed, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedChange {
    /// `pattern` or `heuristic`.
    pub kind: String,
    /// The item's id.
    pub id: String,
    /// `merged`, `pruned`, `revived`, `forwarded` or `effectiveness`.
    pub action: String,
    /// What happened, for people (the survivor of a merge, the reason of a prune, ...).
    pub detail: String,
}

/// The items of one kind during a run: as loaded, and as the run leaves them (which may hold
/// items the run added).
pub(crate) struct Pool<T: Learned> {
    pub(super) loaded: Vec<T>,
    pub(crate) items: BTreeMap<T::Id, T>,
    /// Items whose evidence the run moved between them (loser, survivor): written together
    /// or not at all, so counts are neither lost nor counted twice.
    linked: Vec<(T::Id, T::Id)>,
}

impl<T: Consolidate> Pool<T> {
    pub(crate) fn new(loaded: Vec<T>) -> Self {
        let items = loaded.iter().map(|x| (x.id().clone(), x.clone())).collect();
        Pool {
            loaded,
            items,
            linked: Vec::new(),
        }
    }

    /// Follows merge pointers to the item that finally holds the evidence (at most 16 hops,
    /// so a corrupt cycle cannot loop).
    pub(super) fn final_survivor(&self, start: &T::Id) -> Option<T::Id> {
        let mut id = start.clone();
        for _ in 0..16 {
            match self.items.get(&id)?.status() {
                LearnedStatus::Merged { into, .. } => id = T::id_from(into),
                _ => return Some(id),
            }
        }
        None
    }

    /// Merges `loser` into `survivor` (both present); false when either is missing.
    pub(super) fn merge(&mut self, loser: &T::Id, survivor: &T::Id, at: DateTime<Utc>) -> bool {
        let (Some(mut l), Some(mut s)) = (self.items.remove(loser), self.items.remove(survivor))
        else {
            return false;
        };
        merge_into(&mut s, &mut l, at);
        self.items.insert(loser.clone(), l);
        self.items.insert(survivor.clone(), s);
        self.linked.push((loser.clone(), survivor.clone()));
        true
    }

    /// The items the run changed or added, in groups to write each as a whole (the items
    /// linked by a merge, directly or through others), with each item as it was read.
    pub(crate) fn changed_groups(&self) -> Vec<GuardedItems> {
        let changed = self.changed();
        let index: BTreeMap<&T::Id, usize> = changed
            .iter()
            .enumerate()
            .map(|(i, x)| (x.id(), i))
            .collect();
        // Union-find over the changed items.
        let mut parent: Vec<usize> = (0..changed.len()).collect();
        for (a, b) in &self.linked {
            if let (Some(&a), Some(&b)) = (index.get(a), index.get(b)) {
                let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                parent[ra] = rb;
            }
        }
        let loaded: BTreeMap<&T::Id, &T> = self.loaded.iter().map(|x| (x.id(), x)).collect();
        let roots: Vec<usize> = (0..changed.len()).map(|i| root(&mut parent, i)).collect();
        let mut groups: BTreeMap<usize, GuardedItems> = BTreeMap::new();
        for (item, r) in changed.into_iter().zip(roots) {
            let g = groups.entry(r).or_default();
            let was = loaded.get(item.id()).map(|x| (*x).clone().into_item());
            g.read.push((T::learned_id(item.id()), was));
            g.write.push(item.into_item());
        }
        groups.into_values().collect()
    }

    /// The items the run changed or added.
    pub(crate) fn changed(&self) -> Vec<T> {
        let loaded: BTreeMap<&T::Id, &T> = self.loaded.iter().map(|x| (x.id(), x)).collect();
        (self.items.values())
            .filter(|new| loaded.get(new.id()) != Some(new))
            .cloned()
            .collect()
    }
}

/// The root of `i` in a union-find forest (`parent` holds indexes into itself), halving the
/// path on the way.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// What a run accumulates while its steps run.
pub(crate) struct RunState {
    pub(crate) run: ConsolidationRun,
    pub(crate) changes: Vec<LearnedChange>,
    pub(crate) now: DateTime<Utc>,
}

impl RunState {
    pub(crate) fn change<T: Learned>(&mut self, id: &T::Id, action: &str, detail: String) {
        self.changes.push(LearnedChange {
            kind: T::KIND.name().to_owned(),
            id: id.to_string(),
            action: action.to_owned(),
            detail,
        });
    }
}
