//! Applying what an episode teaches to what is already known.
//!
//! Backends call [`LearningUpdate::apply`] inside the transaction that completes the episode:
//! they load the existing items the update names, apply, and write back what changed. The merge
//! logic lives here, once; atomicity lives in the backend.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{
    FailureLesson, Heuristic, HeuristicId, HeuristicObservation, LessonId, LessonObservation,
    Pattern, PatternId, PatternObservation, resolve_contradictions,
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
    /// Every heuristic whose condition key is in [`LearningUpdate::condition_keys`].
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
