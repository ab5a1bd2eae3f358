//! The in-memory reference backend: the semantics every other backend must match.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use super::{
    EmbeddingCoverage, EmbeddingStore, EpisodeCompletion, EpisodeQuery, EpisodeStore, GuardedItems,
    IndexChanges, IndexSnapshot, LearnedItems, LearnedQuery, LearningStore, MaintenanceStore,
    NamespaceStats, Storage, StoredEmbedding, TextHit, TextQuery, TextSearch,
    check_index_snapshot_size,
};
use crate::episode::{Episode, EpisodeId, EpisodeSummary, ExecutionStep, OutcomeKind, StepResult};
use crate::error::{Error, ObjectKind, Result};
use crate::learned::{
    Effectiveness, FailureLesson, Feedback, FeedbackTarget, Heuristic, HeuristicId, Learned,
    LearnedId, LearnedItem, LearnedKind, LearnedStatus, LessonId, Pattern, PatternId,
    keys_to_resolve, resolve_contradictions,
};
use crate::learning::{ExistingLearned, LearnedChanges, LearningUpdate};
use crate::namespace::Namespace;
use crate::records::{
    ConsolidationRun, EstimateRecord, MetricsSnapshot, RestoreRecord, StepCompaction,
};
use crate::search_text::episode_search_text;
use crate::text::{bm25_weight, tokenize};

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

#[async_trait]
impl EpisodeStore for InMemoryStorage {
    fn reads_need_a_server(&self) -> bool {
        false
    }

    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        self.write(ns, |d| {
            d.episodes.entry(episode.id).or_insert_with(|| {
                let mut stored = episode.clone();
                stored.steps = crate::episode::steps_to_append(&[], &episode.steps);
                stored.steps.sort_by_key(|s| s.step_number);
                stored
            });
        });
        Ok(())
    }

    async fn append_steps(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()> {
        let mut data = self.lock();
        let episode = data
            .get_mut(ns)
            .and_then(|d| d.episodes.get_mut(&episode_id))
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, episode_id))?;
        if episode.is_completed() {
            return Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: episode_id.to_string(),
                reason: "is already completed; steps can no longer be added".into(),
            });
        }
        episode.add_steps(steps);
        if let Some(d) = data.get_mut(ns) {
            d.log_summary_change(episode_id);
        }
        Ok(())
    }

    async fn complete_episode(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>> {
        let mut data = self.lock();
        let d = data
            .get_mut(ns)
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, c.episode_id))?;
        let episode = d
            .episodes
            .get_mut(&c.episode_id)
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, c.episode_id))?;
        if episode.is_completed() {
            return Ok(None);
        }
        let added = crate::episode::steps_to_append(&episode.steps, &c.steps);
        let stored = episode.steps.len() + added.len();
        if let Some(expected) = c.expected_steps
            && stored != expected as usize
        {
            return Err(Error::steps_changed(
                c.episode_id,
                u64::from(expected),
                stored as u64,
            ));
        }
        episode.steps.extend(added);
        episode.steps.sort_by_key(|s| s.step_number);
        episode.outcome = Some(c.outcome.clone());
        episode.reward = Some(c.reward.clone());
        episode.reflection = Some(c.reflection.clone());
        episode.completed_at = Some(c.completed_at);
        let changes = c.learning.apply(d.existing_for(&c.learning));
        d.write_changes(&changes);
        d.log_summary_change(c.episode_id);
        if let Some(actual) = &c.estimate_actual
            && let Some(record) = d.estimates.get_mut(&c.episode_id)
            && record.actual.is_none()
        {
            record.actual = Some(actual.clone());
        }
        Ok(Some(changes))
    }

    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Arc<Episode>>> {
        Ok(self.read(ns, |d| d.episodes.get(&id).cloned().map(Arc::new)))
    }

    async fn query_episodes(
        &self,
        ns: &Namespace,
        q: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>> {
        Ok(self.read(ns, |d| {
            let mut items: Vec<&Episode> = d
                .episodes
                .values()
                .filter(|e| q.filter.matches(e))
                .collect();
            items.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
            page(items.into_iter().map(Episode::summary), q.offset, q.limit)
        }))
    }

    async fn search_text(&self, ns: &Namespace, q: &TextQuery) -> Result<TextSearch> {
        let mut terms = tokenize(&q.text);
        terms.sort_unstable();
        terms.dedup();
        let mut found = TextSearch {
            hits: Vec::new(),
            terms: u32::try_from(terms.len()).unwrap_or(u32::MAX),
            known_terms: 0,
        };
        let data = self.lock();
        let Some(d) = data.get(ns) else {
            return Ok(found);
        };
        if terms.is_empty() {
            return Ok(found);
        }
        // Every episode tokenized once: which terms the namespace knows counts them all,
        // whatever the filter; BM25 scores the filtered ones.
        let tokenized: Vec<(&Episode, Vec<String>)> = d
            .episodes
            .values()
            .map(|e| (e, tokenize(&episode_search_text(e))))
            .collect();
        let mut known = vec![false; terms.len()];
        for t in tokenized.iter().flat_map(|(_, toks)| toks) {
            if let Ok(i) = terms.binary_search(t) {
                known[i] = true;
            }
        }
        found.known_terms = u32::try_from(known.iter().filter(|k| **k).count()).unwrap_or(u32::MAX);
        let docs: Vec<(&Episode, Vec<String>)> = tokenized
            .into_iter()
            .filter(|(e, _)| q.filter.matches(e))
            .collect();
        let n = docs.len() as f64;
        let avg_len = docs.iter().map(|(_, t)| t.len()).sum::<usize>() as f64 / n.max(1.0);
        let mut hits = Vec::new();
        for (e, toks) in &docs {
            let mut score = 0.0;
            for term in &terms {
                let tf = toks.iter().filter(|t| *t == term).count() as f64;
                if tf == 0.0 {
                    continue;
                }
                let df = docs.iter().filter(|(_, t)| t.contains(term)).count() as f64;
                score += bm25_weight(n, df, tf, toks.len() as f64, avg_len);
            }
            if score > 0.0 {
                hits.push(TextHit {
                    episode_id: e.id,
                    score,
                    summary: e.summary(),
                });
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.episode_id.cmp(&b.episode_id))
        });
        hits.truncate(q.limit as usize);
        found.hits = hits;
        Ok(found)
    }

    async fn namespace_stats(&self, ns: &Namespace) -> Result<NamespaceStats> {
        Ok(self.read(ns, |d| {
            let episodes = || d.episodes.values();
            let active = |s: &crate::learned::LearnedStatus| s.is_active();
            NamespaceStats {
                episodes: d.episodes.len() as u64,
                completed: episodes().filter(|e| e.is_completed()).count() as u64,
                successes: episodes()
                    .filter(|e| e.outcome.as_ref().is_some_and(crate::Outcome::is_success))
                    .count() as u64,
                steps: episodes().map(|e| e.steps.len() as u64).sum(),
                patterns: d.patterns.len() as u64,
                active_patterns: d.patterns.values().filter(|p| active(&p.status)).count() as u64,
                heuristics: d.heuristics.len() as u64,
                active_heuristics: d.heuristics.values().filter(|h| active(&h.status)).count()
                    as u64,
                lessons: d.lessons.len() as u64,
                feedback: d.feedback.len() as u64,
            }
        }))
    }

    async fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        let mut v: Vec<Namespace> = self
            .lock()
            .iter()
            .filter(|(_, d)| !d.episodes.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        Ok(v)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl LearningStore for InMemoryStorage {
    async fn apply_learning(
        &self,
        ns: &Namespace,
        update: &LearningUpdate,
    ) -> Result<LearnedChanges> {
        Ok(self.write(ns, |d| {
            let changes = update.apply(d.existing_for(update));
            d.write_changes(&changes);
            changes
        }))
    }

    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        self.write(ns, |d| d.put_items(items));
        Ok(())
    }

    async fn put_learned_unless_changed(
        &self,
        ns: &Namespace,
        groups: &[GuardedItems],
    ) -> Result<Vec<usize>> {
        Ok(self.write(ns, |d| {
            let mut refused = Vec::new();
            for (i, g) in groups.iter().enumerate() {
                let stored: Vec<Option<LearnedItem>> =
                    g.read.iter().map(|(id, _)| d.learned(id)).collect();
                if g.unchanged(&stored) {
                    d.put_items(&g.write);
                    // Merges, forwarded evidence and recomputed votes move ranks.
                    resolve_keys(&mut d.heuristics, g.write.heuristics.iter());
                } else {
                    refused.push(i);
                }
            }
            refused
        }))
    }

    async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>> {
        Ok(self.read(ns, |d| d.learned(id)))
    }

    async fn query_learned(
        &self,
        ns: &Namespace,
        kind: LearnedKind,
        q: &LearnedQuery,
    ) -> Result<Vec<LearnedItem>> {
        Ok(self.read(ns, |d| match kind {
            LearnedKind::Pattern => query_items(&d.patterns, q),
            LearnedKind::Heuristic => query_items(&d.heuristics, q),
            LearnedKind::Lesson => query_items(&d.lessons, q),
        }))
    }

    async fn record_feedback(&self, ns: &Namespace, fb: &Feedback) -> Result<()> {
        let mut data = self.lock();
        let d = data.entry(ns.clone()).or_default();
        let exists = match &fb.target {
            FeedbackTarget::Pattern(id) => d.patterns.contains_key(id),
            FeedbackTarget::Heuristic(id) => d.heuristics.contains_key(id),
        };
        if !exists {
            let kind = match fb.target {
                FeedbackTarget::Pattern(_) => ObjectKind::Pattern,
                FeedbackTarget::Heuristic(_) => ObjectKind::Heuristic,
            };
            return Err(Error::not_found(kind, fb.target.id()));
        }
        d.feedback
            .retain(|f| !(f.target == fb.target && f.episode_id == fb.episode_id));
        d.feedback.push(fb.clone());
        let seen = match &fb.target {
            FeedbackTarget::Pattern(id) => d.patterns.get(id).map(|p| p.last_seen),
            FeedbackTarget::Heuristic(id) => d.heuristics.get(id).map(|h| h.last_seen),
        };
        let events = d.feedback.iter().filter(|f| f.target == fb.target);
        let eff = Effectiveness::of(events, seen.unwrap_or(DateTime::<Utc>::MIN_UTC));
        match &fb.target {
            FeedbackTarget::Pattern(id) => {
                if let Some(p) = d.patterns.get_mut(id) {
                    p.effectiveness = eff;
                }
            }
            FeedbackTarget::Heuristic(id) => {
                if let Some(h) = d.heuristics.get_mut(id) {
                    h.votes_up = eff.helped;
                    h.votes_down = eff.hindered;
                    // Votes move its rank.
                    let h = h.clone();
                    resolve_keys(&mut d.heuristics, std::iter::once(&h));
                }
            }
        }
        Ok(())
    }

    async fn list_feedback(
        &self,
        ns: &Namespace,
        target: &FeedbackTarget,
    ) -> Result<Vec<Feedback>> {
        Ok(self.read(ns, |d| {
            d.feedback
                .iter()
                .filter(|f| &f.target == target)
                .cloned()
                .collect()
        }))
    }
}

#[async_trait]
impl EmbeddingStore for InMemoryStorage {
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        let mut data = self.lock();
        let d = data
            .get_mut(ns)
            .filter(|d| d.episodes.contains_key(&episode_id))
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, episode_id))?;
        d.embeddings
            .insert((episode_id, model.to_owned()), vector.to_vec());
        d.log_index_change(episode_id);
        Ok(())
    }

    async fn get_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        Ok(self.read(ns, |d| {
            d.embeddings.get(&(episode_id, model.to_owned())).cloned()
        }))
    }

    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>> {
        Ok(self.read(ns, |d| {
            d.episodes
                .keys()
                .filter(|id| after.is_none_or(|a| **id > a))
                .filter(|id| !d.embeddings.contains_key(&(**id, model.to_owned())))
                .take(limit as usize)
                .copied()
                .collect()
        }))
    }

    async fn scan_embeddings(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<StoredEmbedding>> {
        Ok(self.read(ns, |d| {
            let mut page: Vec<StoredEmbedding> = d
                .embeddings
                .iter()
                .filter(|((id, m), _)| m == model && after.is_none_or(|a| *id > a))
                .filter_map(|((id, _), v)| {
                    d.episodes.get(id).map(|e| StoredEmbedding {
                        summary: e.summary(),
                        vector: v.clone(),
                    })
                })
                .collect();
            page.sort_by_key(|s| s.summary.id);
            page.truncate(limit as usize);
            page
        }))
    }

    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage> {
        Ok(self.read(ns, |d| EmbeddingCoverage {
            episodes: d.episodes.len() as u64,
            embedded: d.embeddings.keys().filter(|(_, m)| m == model).count() as u64,
            last_episode: d.episodes.keys().next_back().copied(),
        }))
    }

    async fn index_log_head(&self, ns: &Namespace) -> Result<u64> {
        Ok(self.read(ns, |d| d.index_log.last().map_or(0, |(s, _)| *s)))
    }

    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges> {
        let data = self.lock();
        let Some(d) = data.get(ns) else {
            return Ok(IndexChanges {
                through: after,
                ..IndexChanges::default()
            });
        };
        let entries: Vec<&(u64, EpisodeId)> = d
            .index_log
            .iter()
            .filter(|(s, _)| *s > after)
            .take(limit as usize)
            .collect();
        let through = entries.last().map_or(after, |(s, _)| *s);
        let more = d.index_log.last().is_some_and(|(s, _)| *s > through);
        let mut ids: Vec<EpisodeId> = entries.iter().map(|(_, id)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut changes = IndexChanges {
            through,
            more,
            ..IndexChanges::default()
        };
        for id in ids {
            match (
                d.episodes.get(&id),
                d.embeddings.get(&(id, model.to_owned())),
            ) {
                (Some(e), Some(v)) => changes.upserts.push(StoredEmbedding {
                    summary: e.summary(),
                    vector: v.clone(),
                }),
                _ => changes.removed.push(id),
            }
        }
        Ok(changes)
    }

    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>> {
        Ok(self.read(ns, |d| d.index_snapshots.get(model).cloned()))
    }

    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()> {
        check_index_snapshot_size(snapshot.len())?;
        self.write(ns, |d| {
            d.index_snapshots.insert(model.to_owned(), snapshot.clone())
        });
        Ok(())
    }
}

#[async_trait]
impl MaintenanceStore for InMemoryStorage {
    async fn record_consolidation(&self, ns: &Namespace, run: &ConsolidationRun) -> Result<()> {
        self.write(ns, |d| d.runs.insert(run.id.clone(), run.clone()));
        Ok(())
    }

    async fn claim_consolidation(
        &self,
        ns: &Namespace,
        run: &ConsolidationRun,
        not_before: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.write(ns, |d| {
            let free = !d.runs.values().any(|r| r.started_at > not_before);
            if free {
                d.runs.insert(run.id.clone(), run.clone());
            }
            free
        }))
    }

    async fn list_consolidations(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ConsolidationRun>> {
        let mut v: Vec<ConsolidationRun> = self.read(ns, |d| d.runs.values().cloned().collect());
        v.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
        v.truncate(limit as usize);
        Ok(v)
    }

    async fn put_metrics_snapshot(&self, ns: &Namespace, snapshot: &MetricsSnapshot) -> Result<()> {
        self.write(ns, |d| {
            d.snapshots.insert(snapshot.taken_at, snapshot.clone())
        });
        Ok(())
    }

    async fn list_metrics_snapshots(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<MetricsSnapshot>> {
        Ok(self.read(ns, |d| {
            d.snapshots
                .values()
                .rev()
                .take(limit as usize)
                .cloned()
                .collect()
        }))
    }

    async fn put_estimate(&self, ns: &Namespace, record: &EstimateRecord) -> Result<()> {
        let mut data = self.lock();
        let d = data
            .get_mut(ns)
            .filter(|d| d.episodes.contains_key(&record.episode_id))
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, record.episode_id))?;
        d.estimates.insert(record.episode_id, record.clone());
        Ok(())
    }

    async fn get_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>> {
        Ok(self.read(ns, |d| d.estimates.get(&episode_id).cloned()))
    }

    async fn query_estimates(
        &self,
        ns: &Namespace,
        domain: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EstimateRecord>> {
        let mut v: Vec<EstimateRecord> = self.read(ns, |d| {
            d.estimates
                .values()
                .filter(|r| r.actual.is_some() && domain.is_none_or(|x| r.domain == x))
                .cloned()
                .collect()
        });
        v.sort_by(|a, b| {
            let at = |r: &EstimateRecord| r.actual.as_ref().map(|a| a.completed_at);
            at(b).cmp(&at(a)).then(b.episode_id.cmp(&a.episode_id))
        });
        v.truncate(limit as usize);
        Ok(v)
    }

    async fn record_restore(&self, ns: &Namespace, restore: &RestoreRecord) -> Result<()> {
        self.write(ns, |d| {
            d.restores.insert(restore.target.clone(), restore.clone())
        });
        Ok(())
    }

    async fn list_restores(
        &self,
        ns: &Namespace,
        since: DateTime<Utc>,
    ) -> Result<Vec<RestoreRecord>> {
        Ok(self.read(ns, |d| {
            d.restores
                .values()
                .filter(|r| r.restored_at >= since)
                .cloned()
                .collect()
        }))
    }

    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction> {
        fn compactable(e: &Episode) -> bool {
            e.steps.iter().any(
                |s| matches!(&s.input.result, StepResult::Success { output } if !output.is_empty()),
            )
        }
        let mut data = self.lock();
        let mut out = StepCompaction::default();
        let Some(d) = data.get_mut(ns) else {
            return Ok(out);
        };
        let mut due: Vec<(DateTime<Utc>, EpisodeId)> = d
            .episodes
            .values()
            .filter(|e| {
                e.outcome.as_ref().map(crate::Outcome::kind) == Some(OutcomeKind::Success)
                    && e.completed_at.is_some_and(|c| c < completed_before)
                    && compactable(e)
            })
            .filter_map(|e| e.completed_at.map(|c| (c, e.id)))
            .collect();
        due.sort();
        due.truncate(max_episodes as usize);
        for (_, id) in due {
            let Some(e) = d.episodes.get_mut(&id) else {
                continue;
            };
            for s in &mut e.steps {
                if let StepResult::Success { output } = &mut s.input.result
                    && !output.is_empty()
                {
                    out.steps += 1;
                    out.bytes += output.len() as u64;
                    output.clear();
                }
            }
            out.episode_ids.push(id);
        }
        Ok(out)
    }

    async fn compact_merged_patterns(&self, ns: &Namespace, ids: &[PatternId]) -> Result<u64> {
        let mut data = self.lock();
        let Some(d) = data.get_mut(ns) else {
            return Ok(0);
        };
        let mut removed = 0;
        for id in ids {
            let target = FeedbackTarget::Pattern(id.clone());
            let compactable = d.patterns.get(id).is_some_and(|p| {
                matches!(p.status, LearnedStatus::Merged { .. }) && p.occurrences == 0
            }) && !d.feedback.iter().any(|f| f.target == target);
            if compactable && d.patterns.remove(id).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn compact_pruned_patterns(
        &self,
        ns: &Namespace,
        rows: &[(PatternId, DateTime<Utc>)],
    ) -> Result<u64> {
        let mut data = self.lock();
        let Some(d) = data.get_mut(ns) else {
            return Ok(0);
        };
        let mut removed = 0;
        for (id, pruned_at) in rows {
            let target = FeedbackTarget::Pattern(id.clone());
            let compactable = d.patterns.get(id).is_some_and(|p| {
                matches!(p.status, LearnedStatus::Pruned { .. }) && p.last_seen <= *pruned_at
            }) && !d.feedback.iter().any(|f| f.target == target);
            if compactable && d.patterns.remove(id).is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Storage for InMemoryStorage {
    fn backend_name(&self) -> &'static str {
        "memory"
    }
}
