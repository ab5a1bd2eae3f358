//! Writes journaled in the outbox but not yet in the durable layer, kept in process so that
//! reads during an outage see them (read-your-writes). Rebuilt from the outbox at start-up.

use std::collections::HashMap;

use memory_core::Namespace;
use memory_core::{CacheKey, EpisodeCompletion, WriteOp};
use memory_core::{Episode, EpisodeId, ExecutionStep};
use memory_core::{ExistingLearned, LearnedChanges};
use memory_core::{Heuristic, HeuristicId, Learned, LearnedId, LearnedItem, Pattern, PatternId};

#[derive(Debug, Default, Clone)]
pub(crate) struct EpisodeDelta {
    created: Option<Episode>,
    /// Journaled steps in journal order (numbered when folded, as the store will number them).
    steps: Vec<ExecutionStep>,
    completion: Option<EpisodeCompletion>,
    last_seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Overlay {
    episodes: HashMap<(Namespace, EpisodeId), EpisodeDelta>,
    patterns: HashMap<(Namespace, PatternId), (Pattern, u64)>,
    heuristics: HashMap<(Namespace, HeuristicId), (Heuristic, u64)>,
}

impl Overlay {
    pub(crate) fn has_episode(&self, ns: &Namespace, id: EpisodeId) -> bool {
        self.episodes.contains_key(&(ns.clone(), id))
    }

    /// True when the overlay alone can produce the episode (it was created during the outage).
    pub(crate) fn created_here(&self, ns: &Namespace, id: EpisodeId) -> bool {
        self.episodes
            .get(&(ns.clone(), id))
            .is_some_and(|d| d.created.is_some())
    }

    /// The episode as the durable layer will hold it once the journal is replayed: `base` (the
    /// durable or cached copy) with the journaled writes applied.
    pub(crate) fn episode(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        base: Option<Episode>,
    ) -> Option<Episode> {
        match self.episodes.get(&(ns.clone(), id)) {
            Some(delta) => delta.fold(base),
            None => base,
        }
    }

    /// A pattern or heuristic journaled here (lessons are not kept).
    pub(crate) fn learned(&self, ns: &Namespace, id: &LearnedId) -> Option<LearnedItem> {
        let ns = ns.clone();
        match id {
            LearnedId::Pattern(id) => self
                .patterns
                .get(&(ns, id.clone()))
                .map(|(p, _)| p.clone().into_item()),
            LearnedId::Heuristic(id) => self
                .heuristics
                .get(&(ns, id.clone()))
                .map(|(h, _)| h.clone().into_item()),
            LearnedId::Lesson(_) => None,
        }
    }

    /// Learned items the overlay knows, for a provisional merge.
    pub(crate) fn existing_for(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
        mut known: ExistingLearned,
    ) -> ExistingLearned {
        for id in c.learning.pattern_ids() {
            if let Some((p, _)) = self.patterns.get(&(ns.clone(), id)) {
                let p = p.clone();
                known.patterns.retain(|x| x.id != p.id);
                known.patterns.push(p);
            }
        }
        let keys = c.learning.condition_keys();
        for ((n, _), (h, _)) in &self.heuristics {
            if n == ns && keys.contains(&h.condition_key) {
                known.heuristics.retain(|x| x.id != h.id);
                known.heuristics.push(h.clone());
            }
        }
        known
    }

    /// Records a journaled write (sequence `seq`).
    pub(crate) fn apply(
        &mut self,
        ns: &Namespace,
        seq: u64,
        op: &WriteOp,
        learned: Option<&LearnedChanges>,
    ) {
        match op {
            WriteOp::CreateEpisode(e) => {
                let d = self.episodes.entry((ns.clone(), e.id)).or_default();
                d.created.get_or_insert_with(|| e.clone());
                d.last_seq = seq;
            }
            WriteOp::AppendSteps { episode_id, steps } => {
                let d = self.episodes.entry((ns.clone(), *episode_id)).or_default();
                d.steps.extend(steps.iter().cloned());
                d.last_seq = seq;
            }
            WriteOp::CompleteEpisode(c) => {
                let d = self.episodes.entry((ns.clone(), c.episode_id)).or_default();
                if d.completion.is_none() {
                    d.steps.extend(c.steps.iter().cloned());
                    d.completion = Some(c.clone());
                }
                d.last_seq = seq;
            }
            WriteOp::PutLearned(items) => {
                for p in &items.patterns {
                    self.patterns
                        .insert((ns.clone(), p.id.clone()), (p.clone(), seq));
                }
                for h in &items.heuristics {
                    self.heuristics
                        .insert((ns.clone(), h.id.clone()), (h.clone(), seq));
                }
            }
            WriteOp::ForgetEpisodes { episode_ids, .. } => {
                // Journaled writes of the episodes before it are shown no more (their replay
                // finds the episodes gone, or is erased by this one's replay).
                for id in episode_ids {
                    self.episodes.remove(&(ns.clone(), *id));
                }
            }
            WriteOp::RecordFeedback(_) | WriteOp::PutEmbedding { .. } => {}
        }
        if let Some(changes) = learned {
            for c in &changes.patterns {
                self.patterns
                    .insert((ns.clone(), c.item.id.clone()), (c.item.clone(), seq));
            }
            for c in &changes.heuristics {
                self.heuristics
                    .insert((ns.clone(), c.item.id.clone()), (c.item.clone(), seq));
            }
        }
    }

    /// What [`Overlay::release_up_to`] would release now, without releasing it: copies of the
    /// episode deltas and the learned items' cache keys.
    pub(crate) fn settled_up_to(&self, seq: u64) -> Released {
        let episodes = self
            .episodes
            .iter()
            .filter(|(_, d)| d.last_seq <= seq)
            .map(|((ns, id), d)| (ns.clone(), *id, d.clone()))
            .collect();
        let patterns = self
            .patterns
            .iter()
            .filter(|(_, (_, s))| *s <= seq)
            .map(|((ns, id), _)| (ns.clone(), CacheKey::Pattern(id.clone())));
        let heuristics = self
            .heuristics
            .iter()
            .filter(|(_, (_, s))| *s <= seq)
            .map(|((ns, id), _)| (ns.clone(), CacheKey::Heuristic(id.clone())));
        Released {
            episodes,
            keys: patterns.chain(heuristics).collect(),
        }
    }

    /// Forgets everything the durable layer now holds (writes up to `seq`; fold the deltas
    /// into cached copies first, with [`Overlay::settled_up_to`]). Returns the learned items'
    /// cache keys (to invalidate).
    pub(crate) fn release_up_to(&mut self, seq: u64) -> Released {
        let mut released = Released::default();
        self.episodes.retain(|_, d| d.last_seq > seq);
        self.patterns.retain(|(ns, id), (_, s)| {
            let keep = *s > seq;
            if !keep {
                released
                    .keys
                    .push((ns.clone(), CacheKey::Pattern(id.clone())));
            }
            keep
        });
        self.heuristics.retain(|(ns, id), (_, s)| {
            let keep = *s > seq;
            if !keep {
                released
                    .keys
                    .push((ns.clone(), CacheKey::Heuristic(id.clone())));
            }
            keep
        });
        released
    }
}

/// What the overlay holds up to a journal position: the episode deltas (from
/// [`Overlay::settled_up_to`]) and the learned items' cache keys.
#[derive(Debug, Default)]
pub(crate) struct Released {
    pub(crate) episodes: Vec<(Namespace, EpisodeId, EpisodeDelta)>,
    pub(crate) keys: Vec<(Namespace, CacheKey)>,
}

impl EpisodeDelta {
    /// The episode once this delta is applied to `base` (or to the episode it created).
    pub(crate) fn fold(&self, base: Option<Episode>) -> Option<Episode> {
        let mut e = base.or_else(|| self.created.clone())?;
        if !e.is_completed() {
            e.add_steps(&self.steps);
        }
        if let Some(c) = &self.completion
            && !e.is_completed()
        {
            e.outcome = Some(c.outcome.clone());
            e.reward = Some(c.reward.clone());
            e.reflection = Some(c.reflection.clone());
            e.completed_at = Some(c.completed_at);
        }
        Some(e)
    }
}
