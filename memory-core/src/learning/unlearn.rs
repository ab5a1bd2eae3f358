//! Unlearning a forgotten episode: its observations taken back out of the learned items, so
//! their counts are those of a memory that never recorded it.
//!
//! Extraction is deterministic ([`crate::extract_learning`]), so running it again on the stored
//! episode names every item the episode's completion fed and what it added to each; this takes
//! exactly that back out ([`Pattern::release`], [`Heuristic::release`],
//! [`FailureLesson::release`]). An item left without evidence is removed (only the forgotten
//! episode taught it). Evidence that consolidation moved to a survivor is taken from the
//! survivor: an observation whose item was merged before it was observed, or whose merged item
//! holds no evidence now, is followed along the merge chain.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::update::{Changed, ExistingLearned, LearnedChanges, LearningUpdate};
use crate::learned::{
    FailureLesson, Heuristic, HeuristicId, Learned, LearnedStatus, LessonId, Pattern, PatternId,
    resolve_contradictions,
};

/// The longest merge chain followed from an observed item to its survivor (consolidation keeps
/// chains shorter).
const MAX_MERGE_HOPS: usize = 16;

/// The ids of the learned items an unlearning removed: no evidence was left in them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RemovedItems {
    /// Patterns only the forgotten episodes showed.
    pub patterns: Vec<PatternId>,
    /// Heuristics only the forgotten episodes observed.
    pub heuristics: Vec<HeuristicId>,
    /// Lessons only the forgotten episodes taught.
    pub lessons: Vec<LessonId>,
}

impl RemovedItems {
    /// How many items were removed, of all kinds.
    pub fn len(&self) -> usize {
        self.patterns.len() + self.heuristics.len() + self.lessons.len()
    }

    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What [`LearningUpdate::unapply`] changed: the items that keep evidence, as they are now
/// (to write back), and the ones to delete.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Unlearned {
    /// Items whose counts went down (or whose status changed as their key was resolved again).
    pub changes: LearnedChanges,
    /// Items left without evidence.
    pub removed: RemovedItems,
}

/// The id that holds `id`'s evidence of an observation made at `at`: `id` itself, or, when
/// it was merged before `at` or holds no evidence now, its survivor (followed along the chain).
/// `None` when the item (or a survivor on the way) is not in `items`.
fn holder<T: Learned>(
    items: &BTreeMap<T::Id, T>,
    id: &T::Id,
    at: chrono::DateTime<chrono::Utc>,
) -> Option<T::Id> {
    let mut current = id.clone();
    for _ in 0..MAX_MERGE_HOPS {
        let item = items.get(&current)?;
        match item.status() {
            LearnedStatus::Merged { into, at: merged }
                if item.evidence_count() == 0 || *merged >= at =>
            {
                current = T::id_from(into);
            }
            _ => return Some(current),
        }
    }
    None
}

/// The survivors a merge chain from `items` leads to that are not loaded yet.
fn missing_survivors<T: Learned>(items: &[T]) -> Vec<T::Id> {
    let known: BTreeSet<&T::Id> = items.iter().map(Learned::id).collect();
    let mut out = BTreeSet::new();
    for item in items {
        if let LearnedStatus::Merged { into, .. } = item.status() {
            let into = T::id_from(into);
            if !known.contains(&into) {
                out.insert(into);
            }
        }
    }
    out.into_iter().collect()
}

impl ExistingLearned {
    /// The survivors of loaded merged items that are not loaded yet (patterns, heuristics): a
    /// backend loads them too before [`LearningUpdate::unapply`], and asks again until both
    /// are empty (a chain is at most 16 long).
    pub fn survivors_to_load(&self) -> (Vec<PatternId>, Vec<HeuristicId>) {
        (
            missing_survivors(&self.patterns),
            missing_survivors(&self.heuristics),
        )
    }
}

/// Releases each observation from the item holding it, and sorts the touched items into the
/// ones that keep evidence and the ones left without any.
fn release_all<T: Learned, O>(
    items: &mut BTreeMap<T::Id, T>,
    observations: &[O],
    observed: impl Fn(&O) -> (&T::Id, chrono::DateTime<chrono::Utc>),
    release: impl Fn(&mut T, &O),
) -> BTreeSet<T::Id> {
    let mut touched = BTreeSet::new();
    for obs in observations {
        let (id, at) = observed(obs);
        let Some(at_id) = holder(items, id, at) else {
            continue;
        };
        if let Some(item) = items.get_mut(&at_id) {
            release(item, obs);
            touched.insert(at_id);
        }
    }
    touched
}

/// Whether an item released down to no evidence is to be removed: every item is, but a merged
/// one, which holds no evidence by design (it points to its survivor).
fn emptied<T: Learned>(item: &T) -> bool {
    item.evidence_count() == 0 && !matches!(item.status(), LearnedStatus::Merged { .. })
}

/// Splits the touched items into the changed ones (written back) and the removed ids.
fn split<T: Learned>(
    mut items: BTreeMap<T::Id, T>,
    touched: BTreeSet<T::Id>,
) -> (Vec<Changed<T>>, Vec<T::Id>) {
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    for id in touched {
        let Some(item) = items.remove(&id) else {
            continue;
        };
        if emptied(&item) {
            removed.push(id);
        } else {
            changed.push(Changed {
                item,
                created: false,
            });
        }
    }
    (changed, removed)
}

impl LearningUpdate {
    /// Takes this update's observations back out of `existing` (the items it names, their
    /// merge survivors, and every heuristic of its condition keys that is not pruned): what an
    /// erasure of its episode writes. Each observed item (or the survivor holding its
    /// evidence) loses exactly what [`LearningUpdate::apply`] added; an item left without
    /// evidence is removed, and each condition key whose heuristics changed is resolved again.
    ///
    /// ```
    /// use memory_core::{ContextKey, EpisodeId, ExistingLearned, LearningUpdate, PatternKind, PatternObservation};
    /// let ctx = ContextKey::default();
    /// let seen = |episode| PatternObservation::new(PatternKind::ToolSequence {
    ///     tools: vec!["build".into(), "test".into()] }, ctx.clone(), episode, true, chrono::Utc::now());
    /// let update = |obs: PatternObservation| LearningUpdate { episode_id: obs.episode_id,
    ///     observed_at: obs.observed_at, patterns: vec![obs], heuristics: vec![], lessons: vec![] };
    /// let (first, second) = (update(seen(EpisodeId::new())), update(seen(EpisodeId::new())));
    /// let once = first.apply(ExistingLearned::default()).patterns[0].item.clone();
    /// let twice = second.apply(ExistingLearned { patterns: vec![once.clone()], ..Default::default() });
    /// // Forgetting the second episode gives the counts of the first alone.
    /// let back = second.unapply(ExistingLearned { patterns: vec![twice.patterns[0].item.clone()], ..Default::default() });
    /// assert_eq!(back.changes.patterns[0].item.occurrences, once.occurrences);
    /// // Forgetting the first as well leaves nothing.
    /// let gone = first.unapply(ExistingLearned { patterns: vec![back.changes.patterns[0].item.clone()], ..Default::default() });
    /// assert_eq!(gone.removed.patterns, [once.id]);
    /// ```
    pub fn unapply(&self, existing: ExistingLearned) -> Unlearned {
        let mut patterns: BTreeMap<PatternId, Pattern> = (existing.patterns.into_iter())
            .map(|p| (p.id.clone(), p))
            .collect();
        let touched = release_all(
            &mut patterns,
            &self.patterns,
            |o| (&o.id, o.observed_at),
            Pattern::release,
        );
        let (changed_patterns, removed_patterns) = split(patterns, touched);

        let mut lessons: BTreeMap<LessonId, FailureLesson> = (existing.lessons.into_iter())
            .map(|l| (l.id.clone(), l))
            .collect();
        let touched = release_all(
            &mut lessons,
            &self.lessons,
            |o| (&o.id, o.observed_at),
            FailureLesson::release,
        );
        let (changed_lessons, removed_lessons) = split(lessons, touched);

        let (changed_heuristics, removed_heuristics) = self.unapply_heuristics(existing.heuristics);
        Unlearned {
            changes: LearnedChanges {
                patterns: changed_patterns,
                heuristics: changed_heuristics,
                lessons: changed_lessons,
                provisional: false,
            },
            removed: RemovedItems {
                patterns: removed_patterns,
                heuristics: removed_heuristics,
                lessons: removed_lessons,
            },
        }
    }

    /// Heuristics: release, remove the emptied, then resolve each touched key again among the
    /// rest (the winner may change once evidence is gone).
    fn unapply_heuristics(
        &self,
        existing: Vec<Heuristic>,
    ) -> (Vec<Changed<Heuristic>>, Vec<HeuristicId>) {
        let mut items: BTreeMap<HeuristicId, Heuristic> =
            existing.into_iter().map(|h| (h.id.clone(), h)).collect();
        let touched = release_all(
            &mut items,
            &self.heuristics,
            |o| (&o.id, o.observed_at),
            Heuristic::release,
        );
        let removed: Vec<HeuristicId> = (touched.iter())
            .filter(|id| items.get(*id).is_some_and(emptied))
            .cloned()
            .collect();
        for id in &removed {
            items.remove(id);
        }
        let keys: BTreeSet<String> = (touched.iter())
            .filter_map(|id| items.get(id))
            .map(|h| h.condition_key.clone())
            .collect();
        let mut changed = Vec::new();
        for key in keys {
            let mut group: Vec<Heuristic> = (items.values())
                .filter(|h| h.condition_key == key)
                .cloned()
                .collect();
            let status_changed: BTreeSet<usize> =
                resolve_contradictions(&mut group).into_iter().collect();
            for (i, item) in group.into_iter().enumerate() {
                if touched.contains(&item.id) || status_changed.contains(&i) {
                    changed.push(Changed {
                        item,
                        created: false,
                    });
                }
            }
        }
        (changed, removed)
    }
}

#[cfg(test)]
mod tests;
