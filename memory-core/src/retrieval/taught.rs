//! The learned items the similar episodes taught, each with the share of the evidence behind
//! it: how a recommendation finds advice by shared evidence rather than by popularity.
//!
//! Item ids are content-addressed (a pattern's id is a hash of its kind and context, a lesson's
//! of its context, tool and error class), so extracting what a stored episode teaches names the
//! very rows its completion wrote. Those rows are read by id; an item merged into another or
//! superseded by another is followed one hop to the item now in effect, and a pruned one is left
//! out. The cost depends on the number of similar episodes (at most [`MAX_TEACHERS`]), never on
//! the size of the store.

use std::collections::HashMap;
use std::sync::Arc;

use crate::episode::{Episode, EpisodeId};
use crate::error::Result;
use crate::learned::{FailureLesson, Heuristic, Learned, LearnedStatus, Pattern};
use crate::learning::extract_learning;
use crate::namespace::Namespace;
use crate::storage::{Storage, get_typed};

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
    for &(id, weight) in similar.iter().take(MAX_TEACHERS) {
        let share = weight.max(0.0) / total;
        let Some(episode) = storage.get_episode(ns, id).await? else {
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
    Ok(Taught {
        patterns: in_effect(storage, ns, patterns).await?,
        heuristics: in_effect(storage, ns, heuristics).await?,
        lessons: in_effect(storage, ns, lessons).await?,
        read,
    })
}

/// How many merges and lost contradictions are followed from an item to the one in effect.
const SURVIVOR_HOPS: usize = 16;

/// The items now in effect for `shares`: each read by id, merged and superseded ones replaced
/// by their survivor (followed for up to [`SURVIVOR_HOPS`]; shares summed), pruned ones and
/// missing ones left out. Sorted by id.
async fn in_effect<T: Learned>(
    storage: &dyn Storage,
    ns: &Namespace,
    shares: HashMap<T::Id, f64>,
) -> Result<Vec<(T, f64)>> {
    let mut out: HashMap<T::Id, (T, f64)> = HashMap::new();
    for (id, share) in shares {
        let Some(mut item) = get_typed::<T, _>(storage, ns, &id).await? else {
            continue;
        };
        // A heuristic names the one it lost to, which may have lost in turn since.
        for _ in 0..SURVIVOR_HOPS {
            let next = match item.status() {
                LearnedStatus::Merged { into, .. } => into.clone(),
                LearnedStatus::Superseded { by, .. } => by.clone(),
                LearnedStatus::Pruned { .. } | LearnedStatus::Active => break,
            };
            match get_typed::<T, _>(storage, ns, &T::id_from(&next)).await? {
                Some(s) => item = s,
                None => break,
            }
        }
        if !item.status().is_active() {
            continue;
        }
        out.entry(item.id().clone())
            .and_modify(|(_, s)| *s += share)
            .or_insert((item, share));
    }
    let mut items: Vec<(T, f64)> = out.into_values().collect();
    items.sort_by(|a, b| a.0.id().cmp(b.0.id()));
    Ok(items)
}
