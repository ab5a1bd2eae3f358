//! Applying what an episode teaches to what is already known.
//!
//! Backends call [`LearningUpdate::apply`] inside the transaction that completes the episode:
//! they load the existing items the update names, apply, and write back what changed. The merge
//! logic lives here, once; atomicity lives in the backend.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{
    FailureLesson, Heuristic, HeuristicId, HeuristicObservation, LearnedStatus, LessonId,
    LessonObservation, Pattern, PatternId, PatternObservation, rank_order, resolve_contradictions,
};

/// Everything one episode teaches, ready to be merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningUpdate {
    /// The episode it came from.
    pub episode_id: EpisodeId,
    /// When.
    pub observed_at: DateTime<Utc>,
    /// Pattern evidence (one per pattern id).
    pub patterns: Vec<PatternObservation>,
    /// Heuristic evidence (one per heuristic id).
    pub heuristics: Vec<HeuristicObservation>,
    /// Lesson evidence (one per lesson id).
    pub lessons: Vec<LessonObservation>,
}

/// The stored items an update touches, as loaded by a backend.
#[derive(Debug, Clone, Default)]
pub struct ExistingLearned {
    /// Patterns with ids in [`LearningUpdate::pattern_ids`] that exist.
    pub patterns: Vec<Pattern>,
    /// The heuristics of the keys in [`LearningUpdate::condition_keys`]: every one that is
    /// not pruned, or, for a key not in [`LearningUpdate::keys_needing_whole_group`], its
    /// active heuristic and the observed ones (the merge is then the same).
    pub heuristics: Vec<Heuristic>,
    /// Lessons with ids in [`LearningUpdate::lesson_ids`] that exist.
    pub lessons: Vec<FailureLesson>,
}

/// An item after an update, and whether it is new.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Changed<T> {
    /// The item as it is now.
    pub item: T,
    /// True when the update created it.
    pub created: bool,
}

/// What an update changed: backends write these rows back (upsert by id).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LearnedChanges {
    /// Patterns created or merged.
    pub patterns: Vec<Changed<Pattern>>,
    /// Heuristics created, merged, or whose status changed.
    pub heuristics: Vec<Changed<Heuristic>>,
    /// Lessons created or merged.
    pub lessons: Vec<Changed<FailureLesson>>,
    /// True when the write was journaled in the outbox because the durable layer was
    /// unreachable: the merge shown is against the locally known state, and the durable merge
    /// happens when the journal is replayed.
    #[serde(default)]
    pub provisional: bool,
}

impl LearningUpdate {
    /// Ids of the patterns to load.
    pub fn pattern_ids(&self) -> Vec<PatternId> {
        self.patterns.iter().map(|p| p.id.clone()).collect()
    }

    /// Condition keys whose heuristics to load: every one that is not pruned (a backend may
    /// load the pruned ones too; they take no part in resolving contradictions).
    pub fn condition_keys(&self) -> Vec<String> {
        let keys: BTreeSet<&String> = self.heuristics.iter().map(|h| &h.condition_key).collect();
        keys.into_iter().cloned().collect()
    }

    /// Ids of the observed heuristics, to load whatever their status.
    pub fn heuristic_ids(&self) -> Vec<HeuristicId> {
        self.heuristics.iter().map(|h| h.id.clone()).collect()
    }

    /// The condition keys for which merging needs every heuristic that is not pruned, given
    /// `known`: the active heuristics of the update's keys and the ones it observes. For the
    /// other keys `known` is enough: the key has one active heuristic and it ranks no lower
    /// ([`rank_order`]) once the observations are absorbed. Every write that moves a rank
    /// leaves its key resolved (its active heuristic outranks every other candidate), so the
    /// heuristics not known rank below the best of what is known, and keep their status
    /// whichever of it wins ([`resolve_contradictions`] rewrites only active ones): the result
    /// is the one the whole key gives, and a completion reads what its episode touches
    /// instead of every competitor a key ever had.
    ///
    /// ```
    /// use memory_core::{ContextKey, EpisodeId, Heuristic, HeuristicObservation, LearningUpdate};
    /// let seen = |supports| HeuristicObservation::new("build fails", "clean",
    ///     ContextKey::default(), EpisodeId::new(), supports, chrono::Utc::now());
    /// let update = |obs: &HeuristicObservation| LearningUpdate { episode_id: obs.episode_id,
    ///     observed_at: obs.observed_at, patterns: vec![], heuristics: vec![obs.clone()],
    ///     lessons: vec![] };
    /// let (good, bad) = (seen(true), seen(false));
    /// let known = [Heuristic::from_observation(&good)];
    /// // Nothing known of the key: every heuristic it has is needed.
    /// assert!(update(&good).keys_needing_whole_group(std::iter::empty()).contains(&good.condition_key));
    /// // Its one active heuristic gains support: what is known is enough.
    /// assert!(update(&good).keys_needing_whole_group(&known).is_empty());
    /// // It meets evidence against it: one not known may outrank it now.
    /// assert!(update(&bad).keys_needing_whole_group(&known).contains(&bad.condition_key));
    /// ```
    pub fn keys_needing_whole_group<'a>(
        &self,
        known: impl IntoIterator<Item = &'a Heuristic>,
    ) -> BTreeSet<String> {
        let known: Vec<&Heuristic> = known.into_iter().collect();
        let mut needed = BTreeSet::new();
        for key in self.condition_keys() {
            let mut group: BTreeMap<&HeuristicId, Heuristic> = (known.iter())
                .filter(|h| h.condition_key == key)
                .map(|&h| (&h.id, h.clone()))
                .collect();
            let mut active = group.values().filter(|h| h.status.is_active());
            let (Some(before), None) = (active.next().cloned(), active.next()) else {
                needed.insert(key);
                continue;
            };
            for obs in self.heuristics.iter().filter(|o| o.condition_key == key) {
                match group.get_mut(&obs.id) {
                    Some(h) => h.absorb(obs),
                    None => {
                        group.insert(&obs.id, Heuristic::from_observation(obs));
                    }
                }
            }
            let lower = group
                .get(&before.id)
                .is_none_or(|after| rank_order(after, &before) == Ordering::Less);
            if lower {
                needed.insert(key);
            }
        }
        needed
    }

    /// Ids of the lessons to load.
    pub fn lesson_ids(&self) -> Vec<LessonId> {
        self.lessons.iter().map(|l| l.id.clone()).collect()
    }

    /// Merges the update into the existing items and returns every row to write back.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn apply(&self, existing: ExistingLearned) -> LearnedChanges {
        let mut changes = LearnedChanges::default();

        let mut patterns: BTreeMap<PatternId, Pattern> = existing
            .patterns
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        for obs in &self.patterns {
            match patterns.remove(&obs.id) {
                Some(mut p) => {
                    p.absorb(obs);
                    changes.patterns.push(Changed {
                        item: p,
                        created: false,
                    });
                }
                None => changes.patterns.push(Changed {
                    item: Pattern::from_observation(obs),
                    created: true,
                }),
            }
        }

        let mut lessons: BTreeMap<LessonId, FailureLesson> = existing
            .lessons
            .into_iter()
            .map(|l| (l.id.clone(), l))
            .collect();
        for obs in &self.lessons {
            match lessons.remove(&obs.id) {
                Some(mut l) => {
                    l.absorb(obs);
                    changes.lessons.push(Changed {
                        item: l,
                        created: false,
                    });
                }
                None => changes.lessons.push(Changed {
                    item: FailureLesson::from_observation(obs),
                    created: true,
                }),
            }
        }

        // Heuristics: merge, then resolve contradictions per condition key.
        let mut groups: BTreeMap<String, Vec<(Heuristic, bool, bool)>> = BTreeMap::new(); // (item, created, touched)
        for h in existing.heuristics {
            groups
                .entry(h.condition_key.clone())
                .or_default()
                .push((h, false, false));
        }
        for obs in &self.heuristics {
            let group = groups.entry(obs.condition_key.clone()).or_default();
            match group.iter_mut().find(|(h, _, _)| h.id == obs.id) {
                Some((h, _, touched)) => {
                    h.absorb(obs);
                    *touched = true;
                    // New evidence puts one set aside back in the running: if it still
                    // loses, it is set aside again naming today's winner (so the names a
                    // loser follows to the one in use stay short where evidence arrives).
                    if matches!(h.status, LearnedStatus::Superseded { .. }) {
                        h.status = LearnedStatus::Active;
                    }
                }
                None => group.push((Heuristic::from_observation(obs), true, true)),
            }
        }
        for (_, group) in groups {
            let mut items: Vec<Heuristic> = group.iter().map(|(h, _, _)| h.clone()).collect();
            let status_changed = resolve_contradictions(&mut items);
            for (i, (item, (_, created, touched))) in items.into_iter().zip(group).enumerate() {
                if touched || status_changed.contains(&i) {
                    changes.heuristics.push(Changed { item, created });
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    use super::*;
    use crate::learned::ContextKey;

    /// One event of a key's history: an episode observing `action` (supporting or not), or
    /// feedback voting on it (which resolves the key again, as the stores do).
    #[derive(Debug, Clone)]
    enum Event {
        Seen(usize, bool),
        Voted(usize, bool),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (0..4usize, any::<bool>()).prop_map(|(a, s)| Event::Seen(a, s)),
            1 => (0..4usize, any::<bool>()).prop_map(|(a, up)| Event::Voted(a, up)),
        ]
    }

    fn observe(condition: &str, action: usize, supports: bool, at: i64) -> HeuristicObservation {
        let t = Utc.timestamp_opt(1_700_000_000, 0).unwrap() + Duration::seconds(at);
        let ctx = ContextKey::default();
        HeuristicObservation::new(
            condition,
            format!("a{action}"),
            ctx,
            EpisodeId::new(),
            supports,
            t,
        )
    }

    fn update(heuristics: Vec<HeuristicObservation>) -> LearningUpdate {
        LearningUpdate {
            episode_id: EpisodeId::new(),
            observed_at: heuristics[0].observed_at,
            patterns: Vec::new(),
            heuristics,
            lessons: Vec::new(),
        }
    }

    fn by_id(changes: &LearnedChanges) -> BTreeMap<HeuristicId, Changed<Heuristic>> {
        changes
            .heuristics
            .iter()
            .map(|c| (c.item.id.clone(), c.clone()))
            .collect()
    }

    proptest! {
        /// Whenever the active heuristic and the observed ones are enough, the merge gives
        /// exactly what the whole group gives.
        #[test]
        fn what_is_known_merges_as_the_whole_group_does(
            history in proptest::collection::vec(event(), 0..40),
            last in proptest::collection::vec((0..2usize, 0..4usize, any::<bool>()), 1..3),
        ) {
            let mut stored: BTreeMap<HeuristicId, Heuristic> = BTreeMap::new();
            let mut at = 0;
            for e in history {
                at += 1;
                match e {
                    Event::Seen(action, supports) => {
                        let u = update(vec![observe("c0", action, supports, at)]);
                        let group = stored.values().cloned().collect();
                        let existing = ExistingLearned { heuristics: group, ..Default::default() };
                        for c in u.apply(existing).heuristics {
                            stored.insert(c.item.id.clone(), c.item);
                        }
                    }
                    Event::Voted(action, up) => {
                        let id = observe("c0", action, true, 0).id;
                        let Some(h) = stored.get_mut(&id) else { continue };
                        if up { h.votes_up += 1 } else { h.votes_down += 1 }
                        let mut group: Vec<Heuristic> = stored.values().cloned().collect();
                        resolve_contradictions(&mut group);
                        stored = group.into_iter().map(|h| (h.id.clone(), h)).collect();
                    }
                }
            }
            at += 1;
            let mut seen = BTreeSet::new();
            let obs: Vec<HeuristicObservation> = last
                .into_iter()
                .map(|(key, action, supports)| observe(&format!("c{key}"), action, supports, at))
                .filter(|o| seen.insert(o.id.clone()))
                .collect();
            let u = update(obs);
            let observed: BTreeSet<&HeuristicId> = u.heuristics.iter().map(|o| &o.id).collect();
            let known: Vec<Heuristic> = stored
                .values()
                .filter(|h| h.status.is_active() || observed.contains(&h.id))
                .cloned()
                .collect();
            let needed = u.keys_needing_whole_group(&known);
            let whole = ExistingLearned {
                heuristics: stored.values().cloned().collect(),
                ..Default::default()
            };
            let partial = ExistingLearned {
                heuristics: stored
                    .values()
                    .filter(|h| {
                        needed.contains(&h.condition_key)
                            || h.status.is_active()
                            || observed.contains(&h.id)
                    })
                    .cloned()
                    .collect(),
                ..Default::default()
            };
            prop_assert_eq!(by_id(&u.apply(partial)), by_id(&u.apply(whole)));
        }
    }

    #[test]
    fn a_key_is_read_whole_only_when_its_winner_loses_ground_or_it_has_no_single_winner() {
        let at = |n| observe("c", 0, true, n);
        let mut winner = Heuristic::from_observation(&at(0));
        winner.absorb(&at(1));
        let rival = |supports| observe("c", 1, supports, 2);
        let mut loser = Heuristic::from_observation(&rival(true));
        loser.status = LearnedStatus::Superseded {
            by: winner.id.0.clone(),
            reason: "fewer".into(),
        };
        let known = [winner.clone(), loser.clone()];
        // The winner gains: enough.
        assert!(
            update(vec![observe("c", 0, true, 3)])
                .keys_needing_whole_group(&known)
                .is_empty()
        );
        // The winner loses ground: a heuristic not known may now outrank it.
        let weaker = update(vec![observe("c", 0, false, 3)]);
        assert_eq!(weaker.keys_needing_whole_group(&known).len(), 1);
        // A rival overtakes a winner that lost nothing: it outranks what is not known too,
        // and only the two change.
        loser.support = 5;
        let known = [winner.clone(), loser];
        let overtaken = update(vec![rival(true)]);
        assert!(overtaken.keys_needing_whole_group(&known).is_empty());
        let existing = ExistingLearned {
            heuristics: known.to_vec(),
            ..Default::default()
        };
        assert_eq!(overtaken.apply(existing).heuristics.len(), 2);
        // Two active heuristics (one restored, say): unresolved, read it whole.
        let mut second = Heuristic::from_observation(&rival(true));
        second.status = LearnedStatus::Active;
        let seen = update(vec![observe("c", 0, true, 3)]);
        assert_eq!(seen.keys_needing_whole_group(&[winner, second]).len(), 1);
    }

    #[test]
    fn a_loser_that_gets_evidence_names_the_winner_of_today() {
        // "a1" lost to "a0", which lost to "a2" since; "a1" is seen again and still loses.
        let mut stored: Vec<Heuristic> = Vec::new();
        for (action, support) in [(0, 3), (1, 1), (2, 5)] {
            let mut h = Heuristic::from_observation(&observe("c", action, true, 0));
            h.support = support;
            stored.push(h);
        }
        stored[0].status = LearnedStatus::Superseded {
            by: stored[2].id.0.clone(),
            reason: "fewer".into(),
        };
        stored[1].status = LearnedStatus::Superseded {
            by: stored[0].id.0.clone(),
            reason: "fewer".into(),
        };
        let seen = update(vec![observe("c", 1, true, 1)]);
        let existing = ExistingLearned {
            heuristics: stored.clone(),
            ..Default::default()
        };
        let changes = seen.apply(existing);
        let [one] = changes.heuristics.as_slice() else {
            panic!("only the one seen changes: {changes:?}");
        };
        let LearnedStatus::Superseded { by, reason } = &one.item.status else {
            panic!("still set aside: {:?}", one.item.status);
        };
        assert_eq!(by, &stored[2].id.0);
        assert!(
            reason.contains("(5 supporting / 0 against vs 2 / 0)"),
            "{reason}"
        );
    }
}
