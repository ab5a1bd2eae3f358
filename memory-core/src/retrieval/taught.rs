//! The learned items the similar episodes taught, each with the share of the evidence behind
//! it: how a recommendation finds advice by shared evidence rather than by popularity.
//!
//! Item ids are content-addressed (a pattern's id is a hash of its kind and context, a lesson's
//! of its context, tool and error class), so extracting what a stored episode teaches names the
//! very rows its completion wrote. Those rows are read by id; an item merged into another or
//! superseded by another is followed to the item now in effect, and a pruned one is left out.
//! The episodes are read in one storage call and the items in one more (plus one per hop of
//! merges, rare); the cost depends on the number of similar episodes (at most
//! [`MAX_TEACHERS`]), never on the size of the store.

use std::collections::HashMap;
use std::sync::Arc;

use crate::episode::{Episode, EpisodeId};
use crate::error::Result;
use crate::learned::{
    FailureLesson, Heuristic, Learned, LearnedId, LearnedItem, LearnedStatus, Pattern,
};
use crate::learning::extract_learning;
use crate::namespace::Namespace;
use crate::storage::Storage;

/// The most similar episodes whose teachings are read for one recommendation.
pub(crate) const MAX_TEACHERS: usize = 8;

/// Items taught by the similar episodes, each with its evidence share in `0..=1`: the summed
/// weight of the episodes that taught it over the summed weight of all of them.
#[derive(Debug, Default)]
pub(crate) struct Taught {
    pub patterns: Vec<(Pattern, f64)>,
    pub heuristics: Vec<(Heuristic, f64)>,
    pub lessons: Vec<(FailureLesson, f64)>,
    /// The episodes read on the way, by id (a recommendation names their matched steps
    /// without reading them again).
    pub read: HashMap<EpisodeId, Arc<Episode>>,
}

/// Reads what the `similar` episodes (id, weight > 0) taught. Episodes that are gone or not
/// completed teach nothing.
#[tracing::instrument(level = "debug", skip_all, fields(episodes = similar.len()))]
pub(crate) async fn taught_by(
    storage: &dyn Storage,
    ns: &Namespace,
    similar: &[(EpisodeId, f64)],
) -> Result<Taught> {
    let total: f64 = similar.iter().map(|(_, w)| w.max(0.0)).sum();
    if total <= 0.0 {
        return Ok(Taught::default());
    }
    let mut patterns = HashMap::new();
    let mut heuristics = HashMap::new();
    let mut lessons = HashMap::new();
    let mut read = HashMap::new();
    let teachers: Vec<(EpisodeId, f64)> = similar.iter().take(MAX_TEACHERS).copied().collect();
    let ids: Vec<EpisodeId> = teachers.iter().map(|(id, _)| *id).collect();
    let episodes = storage.get_episodes(ns, &ids).await?;
    for (&(id, weight), episode) in teachers.iter().zip(episodes) {
        let share = weight.max(0.0) / total;
        // Gone since it was retrieved: it teaches nothing.
        let Some(episode) = episode else {
            continue;
        };
        read.insert(id, Arc::clone(&episode));
        let Some(outcome) = &episode.outcome else {
            continue;
        };
        let at = episode.completed_at.unwrap_or(episode.started_at);
        let update = extract_learning(&episode, outcome, at);
        for p in update.patterns {
            *patterns.entry(p.id).or_insert(0.0) += share;
        }
        for h in update.heuristics {
            *heuristics.entry(h.id).or_insert(0.0) += share;
        }
        for l in update.lessons {
            *lessons.entry(l.id).or_insert(0.0) += share;
        }
    }
    let mut shares: Vec<(LearnedId, f64)> = Vec::new();
    shares.extend(
        patterns
            .into_iter()
            .map(|(id, s)| (Pattern::learned_id(&id), s)),
    );
    shares.extend(
        heuristics
            .into_iter()
            .map(|(id, s)| (Heuristic::learned_id(&id), s)),
    );
    shares.extend(
        lessons
            .into_iter()
            .map(|(id, s)| (FailureLesson::learned_id(&id), s)),
    );
    let (mut by_pattern, mut by_heuristic, mut by_lesson) = (Vec::new(), Vec::new(), Vec::new());
    for (item, share) in in_effect(storage, ns, shares).await? {
        match item {
            LearnedItem::Pattern(p) => by_pattern.push((p, share)),
            LearnedItem::Heuristic(h) => by_heuristic.push((h, share)),
            LearnedItem::Lesson(l) => by_lesson.push((l, share)),
        }
    }
    Ok(Taught {
        patterns: active_summed(by_pattern),
        heuristics: active_summed(by_heuristic),
        lessons: active_summed(by_lesson),
        read,
    })
}

/// How many merges and lost contradictions are followed from an item to the one in effect.
const SURVIVOR_HOPS: usize = 16;

/// The items now in effect for `shares` (any kinds): each read by id, merged and superseded
/// ones replaced by their survivor (followed for up to [`SURVIVOR_HOPS`], one batched read
/// per hop), with their shares; an item whose successor is missing stays as it is (and is not
/// in effect).
async fn in_effect(
    storage: &dyn Storage,
    ns: &Namespace,
    shares: Vec<(LearnedId, f64)>,
) -> Result<Vec<(LearnedItem, f64)>> {
    if shares.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<LearnedId> = shares.iter().map(|(id, _)| id.clone()).collect();
    let read = storage.get_learned_many(ns, &ids).await?;
    // (item, share, whether following it has ended)
    let mut items: Vec<(LearnedItem, f64, bool)> = read
        .into_iter()
        .zip(&shares)
        .filter_map(|(item, (_, share))| item.map(|i| (i, *share, false)))
        .collect();
    for _ in 0..SURVIVOR_HOPS {
        let next: Vec<(usize, LearnedId)> = (items.iter().enumerate())
            .filter(|(_, (_, _, ended))| !ended)
            .filter_map(|(k, (item, _, _))| successor(item).map(|id| (k, id)))
            .collect();
        for (item, _, ended) in &mut items {
            *ended |= successor(item).is_none();
        }
        if next.is_empty() {
            break;
        }
        let ids: Vec<LearnedId> = next.iter().map(|(_, id)| id.clone()).collect();
        let read = storage.get_learned_many(ns, &ids).await?;
        for ((k, _), found) in next.into_iter().zip(read) {
            match found {
                Some(s) => items[k].0 = s,
                None => items[k].2 = true,
            }
        }
    }
    Ok(items.into_iter().map(|(i, s, _)| (i, s)).collect())
}

/// The item a merged or superseded item's evidence went to.
fn successor(item: &LearnedItem) -> Option<LearnedId> {
    fn of<T: Learned>(item: &T) -> Option<LearnedId> {
        let next = match item.status() {
            LearnedStatus::Merged { into, .. } => into,
            LearnedStatus::Superseded { by, .. } => by,
            LearnedStatus::Pruned { .. }
            | LearnedStatus::Active
            | LearnedStatus::Retracted { .. } => {
                return None;
            }
        };
        Some(T::learned_id(&T::id_from(next)))
    }
    match item {
        LearnedItem::Pattern(p) => of(p),
        LearnedItem::Heuristic(h) => of(h),
        LearnedItem::Lesson(l) => of(l),
    }
}

/// The active ones among `items`, shares of one item summed, sorted by id.
fn active_summed<T: Learned>(items: Vec<(T, f64)>) -> Vec<(T, f64)> {
    let mut out: HashMap<T::Id, (T, f64)> = HashMap::new();
    for (item, share) in items {
        if !item.status().is_active() {
            continue;
        }
        out.entry(item.id().clone())
            .and_modify(|(_, s)| *s += share)
            .or_insert((item, share));
    }
    let mut items: Vec<(T, f64)> = out.into_values().collect();
    items.sort_by(|a, b| a.0.id().cmp(b.0.id()));
    items
}
