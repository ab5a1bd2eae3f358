//! The episodes a recommendation reads beyond what the similar ones taught: the failed
//! attempt that got furthest when none succeeded, and the episodes whose matched step it
//! names, in one batched read.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Failed similar episodes read for the one that got furthest, when none succeeded.
pub(super) const ATTEMPTS_READ: usize = 5;

/// With no similar episode that succeeded: the one of the [`ATTEMPTS_READ`] most similar
/// failures (earlier tries of the same task folded into them included) whose steps that
/// worked go furthest, with those steps. `None` when none of them has a step that worked.
pub(super) async fn furthest_attempt(
    storage: &dyn Storage,
    ns: &Namespace,
    episodes: &[RecommendedEpisode],
    usable: impl Fn(TaskType, &TaskContext) -> bool,
    read: &HashMap<EpisodeId, Arc<Episode>>,
) -> Result<Option<(Arc<Episode>, Vec<String>)>> {
    let failed = episodes
        .iter()
        .filter(|e| {
            let e = &e.retrieved.episode;
            e.outcome == Some(OutcomeKind::Failure) && usable(e.task_type, &e.context)
        })
        .flat_map(|e| {
            std::iter::once(e.retrieved.episode.id).chain(e.near_duplicates.iter().copied())
        })
        .take(ATTEMPTS_READ)
        .collect::<Vec<EpisodeId>>();
    let mut best: Option<(Arc<Episode>, Vec<String>)> = None;
    for past in read_all(storage, ns, &failed, read).await? {
        // Gone since it was retrieved (deleted by another process): nothing to learn from.
        let Some(past) = past else {
            continue;
        };
        if past.outcome.as_ref().map(Outcome::kind) != Some(OutcomeKind::Failure)
            || !usable(past.task_type, &past.context)
        {
            continue;
        }
        let worked = past.worked_tools();
        if !worked.is_empty() && best.as_ref().is_none_or(|(_, b)| worked.len() > b.len()) {
            best = Some((past, worked));
        }
    }
    Ok(best)
}

/// Names the step each shown episode matched (in the step window that matched, when one did)
/// and adds it to its `why`: the episodes in `read` (already read for what they taught) as
/// they are, the other episodes with steps in one read.
pub(super) async fn name_matched_steps(
    storage: &dyn Storage,
    ns: &Namespace,
    episodes: &mut [RecommendedEpisode],
    (task, max_windows): (&str, usize),
    read: &HashMap<EpisodeId, Arc<Episode>>,
) -> Result<()> {
    let with_steps: Vec<EpisodeId> = (episodes.iter())
        .filter(|e| e.retrieved.episode.step_count > 0)
        .map(|e| e.retrieved.episode.id)
        .collect();
    let pasts = read_all(storage, ns, &with_steps, read).await?;
    let mut pasts: HashMap<EpisodeId, Arc<Episode>> = (with_steps.into_iter().zip(pasts))
        .filter_map(|(id, past)| past.map(|p| (id, p)))
        .collect();
    for e in episodes {
        let r = &mut e.retrieved;
        // Gone since it was retrieved (or without steps): nothing to name.
        let Some(past) = pasts.remove(&r.episode.id) else {
            continue;
        };
        if let Some(m) = matched_step(&past, task, r.breakdown.window, max_windows) {
            let _ = write!(r.why, "; matched step {}: \"{}\"", m.step_number, m.excerpt);
            r.matched_step = Some(m);
        }
    }
    Ok(())
}

/// The episodes `ids` in their order: those in `read` as they are, the others in one
/// storage call (`None` for one that is gone).
pub(super) async fn read_all(
    storage: &dyn Storage,
    ns: &Namespace,
    ids: &[EpisodeId],
    read: &HashMap<EpisodeId, Arc<Episode>>,
) -> Result<Vec<Option<Arc<Episode>>>> {
    let missing: Vec<EpisodeId> = (ids.iter())
        .filter(|id| !read.contains_key(id))
        .copied()
        .collect();
    let fetched: HashMap<EpisodeId, Arc<Episode>> = if missing.is_empty() {
        HashMap::new()
    } else {
        (missing.iter().copied())
            .zip(storage.get_episodes(ns, &missing).await?)
            .filter_map(|(id, e)| e.map(|e| (id, e)))
            .collect()
    };
    Ok(ids
        .iter()
        .map(|id| read.get(id).or_else(|| fetched.get(id)).cloned())
        .collect())
}
