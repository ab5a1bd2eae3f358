//! The in-memory reference backend: the semantics every other backend must match.

mod embeddings;
mod episodes;
mod erasure;
mod learning;
mod maintenance;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use super::{ForgetRecord, IndexSnapshot, LearnedItems, LearnedQuery, Storage};
use crate::episode::{Episode, EpisodeId};
use crate::learned::{
    Effectiveness, FailureLesson, Feedback, FeedbackTarget, Heuristic, HeuristicId, Learned,
    LearnedId, LearnedItem, LearnedStatus, LessonId, Pattern, PatternId, keys_to_resolve,
    resolve_contradictions,
};
use crate::learning::{ExistingLearned, LearnedChanges, LearningUpdate};
use crate::namespace::Namespace;
use crate::records::{ConsolidationRun, EstimateRecord, MetricsSnapshot, RestoreRecord};

#[derive(Debug, Default)]
struct NsData {
    episodes: BTreeMap<EpisodeId, Episode>,
    patterns: BTreeMap<PatternId, Pattern>,
    heuristics: BTreeMap<HeuristicId, Heuristic>,
    lessons: BTreeMap<LessonId, FailureLesson>,
    /// Keyed by (target, episode); the Vec keeps insertion order for listing.
    feedback: Vec<Feedback>,
    embeddings: HashMap<(EpisodeId, String), Vec<f32>>,
    runs: BTreeMap<String, ConsolidationRun>,
    snapshots: BTreeMap<DateTime<Utc>, MetricsSnapshot>,
    estimates: BTreeMap<EpisodeId, EstimateRecord>,
    restores: HashMap<FeedbackTarget, RestoreRecord>,
    /// The index change log: (position, episode), positions increasing from 1.
    index_log: Vec<(u64, EpisodeId)>,
    index_snapshots: HashMap<String, IndexSnapshot>,
    /// The audit records of forgotten episodes; their ids are never stored again.
    forgotten: BTreeMap<EpisodeId, ForgetRecord>,
}

impl NsData {
    /// The item stored under `id`, as an item of any kind.
    fn learned(&self, id: &LearnedId) -> Option<LearnedItem> {
        match id {
            LearnedId::Pattern(id) => self.patterns.get(id).cloned().map(Learned::into_item),
            LearnedId::Heuristic(id) => self.heuristics.get(id).cloned().map(Learned::into_item),
            LearnedId::Lesson(id) => self.lessons.get(id).cloned().map(Learned::into_item),
        }
    }

    /// Stores `items` verbatim (by id).
    fn put_items(&mut self, items: &LearnedItems) {
        put(&mut self.patterns, items.patterns.iter());
        put(&mut self.heuristics, items.heuristics.iter());
        put(&mut self.lessons, items.lessons.iter());
    }

    fn existing_for(&self, update: &LearningUpdate) -> ExistingLearned {
        let keys = update.condition_keys();
        ExistingLearned {
            patterns: update
                .pattern_ids()
                .iter()
                .filter_map(|id| self.patterns.get(id).cloned())
                .collect(),
            heuristics: self
                .heuristics
                .values()
                .filter(|h| keys.contains(&h.condition_key))
                .cloned()
                .collect(),
            lessons: update
                .lesson_ids()
                .iter()
                .filter_map(|id| self.lessons.get(id).cloned())
                .collect(),
        }
    }

    /// Logs a change of the episode's embedding.
    fn log_index_change(&mut self, id: EpisodeId) {
        let seq = self.index_log.last().map_or(1, |(s, _)| s + 1);
        self.index_log.push((seq, id));
    }

    /// Logs a change of the episode's summary if it has an embedding (of any model), as the
    /// durable backend's triggers do.
    fn log_summary_change(&mut self, id: EpisodeId) {
        if self.embeddings.keys().any(|(e, _)| *e == id) {
            self.log_index_change(id);
        }
    }

    /// Sets what the feedback events of `target` say on it (a pattern's effectiveness, a
    /// heuristic's votes, which move its rank: its key is resolved again).
    fn refresh_feedback(&mut self, target: &FeedbackTarget) {
        let seen = match target {
            FeedbackTarget::Pattern(id) => self.patterns.get(id).map(|p| p.last_seen),
            FeedbackTarget::Heuristic(id) => self.heuristics.get(id).map(|h| h.last_seen),
        };
        let events = self.feedback.iter().filter(|f| &f.target == target);
        let eff = Effectiveness::of(events, seen.unwrap_or(DateTime::<Utc>::MIN_UTC));
        match target {
            FeedbackTarget::Pattern(id) => {
                if let Some(p) = self.patterns.get_mut(id) {
                    p.effectiveness = eff;
                }
            }
            FeedbackTarget::Heuristic(id) => {
                if let Some(h) = self.heuristics.get_mut(id) {
                    h.votes_up = eff.helped;
                    h.votes_down = eff.hindered;
                    let h = h.clone();
                    resolve_keys(&mut self.heuristics, std::iter::once(&h));
                }
            }
        }
    }

    fn write_changes(&mut self, changes: &LearnedChanges) {
        put(&mut self.patterns, changes.patterns.iter().map(|c| &c.item));
        put(
            &mut self.heuristics,
            changes.heuristics.iter().map(|c| &c.item),
        );
        put(&mut self.lessons, changes.lessons.iter().map(|c| &c.item));
    }
}

/// Resolves again the condition keys of `written` ([`keys_to_resolve`]), as the durable
/// store does after a write that moves evidence or votes between heuristics.
fn resolve_keys<'a>(
    heuristics: &mut BTreeMap<HeuristicId, Heuristic>,
    written: impl Iterator<Item = &'a Heuristic>,
) {
    for key in keys_to_resolve(written) {
        let mut group: Vec<Heuristic> = (heuristics.values())
            .filter(|h| h.condition_key == key)
            .filter(|h| !matches!(h.status, LearnedStatus::Pruned { .. }))
            .cloned()
            .collect();
        resolve_contradictions(&mut group);
        put(heuristics, group.iter());
    }
}

/// Stores `items` by id, replacing what was there.
fn put<'a, T: Learned + Clone + 'a>(
    map: &mut BTreeMap<T::Id, T>,
    items: impl Iterator<Item = &'a T>,
) {
    for item in items {
        map.insert(item.id().clone(), item.clone());
    }
}

/// Everything in process memory, behind one lock. Fast, simple, and lost on exit: use it for
/// tests and as the model other backends are checked against.
///
/// ```
/// use memory_core::{InMemoryStorage, Namespace, EpisodeStore};
/// # tokio_test_block_on(async {
/// let store = InMemoryStorage::new();
/// let stats = store.namespace_stats(&Namespace::default()).await?;
/// assert_eq!(stats.episodes, 0);
/// # Ok::<(), memory_core::Error>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Default)]
pub struct InMemoryStorage {
    data: Mutex<HashMap<Namespace, NsData>>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Namespace, NsData>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `f` of the namespace's data; the default (empty) answer for a namespace never written.
    fn read<T: Default>(&self, ns: &Namespace, f: impl FnOnce(&NsData) -> T) -> T {
        self.lock().get(ns).map(f).unwrap_or_default()
    }

    /// `f` of the namespace's data, created empty if it is new.
    fn write<T>(&self, ns: &Namespace, f: impl FnOnce(&mut NsData) -> T) -> T {
        f(self.lock().entry(ns.clone()).or_default())
    }
}

/// A page of the items that pass `q`, most-ranked first, ties by id.
fn query_items<T: Learned>(items: &BTreeMap<T::Id, T>, q: &LearnedQuery) -> Vec<LearnedItem> {
    let mut v: Vec<&T> = items.values().filter(|x| q.matches(*x)).collect();
    v.sort_by(|a, b| b.rank().cmp(&a.rank()).then(a.id().cmp(b.id())));
    page(
        v.into_iter().cloned().map(Learned::into_item),
        q.offset,
        q.limit,
    )
}

fn page<T>(items: impl Iterator<Item = T>, offset: u32, limit: u32) -> Vec<T> {
    items.skip(offset as usize).take(limit as usize).collect()
}

impl Storage for InMemoryStorage {
    fn backend_name(&self) -> &'static str {
        "memory"
    }
}
