//! [`EpisodeStore`] of the in-memory backend: episodes, their steps and completion, listing
//! and BM25 text search.

use std::sync::Arc;

use async_trait::async_trait;

use super::{InMemoryStorage, page};
use crate::episode::{Episode, EpisodeId, EpisodeSummary, ExecutionStep};
use crate::error::{Error, ObjectKind, Result};
use crate::learning::LearnedChanges;
use crate::namespace::Namespace;
use crate::search_text::episode_search_text;
use crate::storage::{
    EpisodeCompletion, EpisodeQuery, EpisodeStore, Erasure, ErasureReport, ForgetRecord,
    NamespaceStats, TextHit, TextQuery, TextSearch,
};
use crate::text::{bm25_weight, tokenize};

#[async_trait]
impl EpisodeStore for InMemoryStorage {
    fn reads_need_a_server(&self) -> bool {
        false
    }

    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        self.write(ns, |d| {
            if d.was_forgotten(episode.id) {
                return Err(Error::forgotten(episode.id));
            }
            d.episodes.entry(episode.id).or_insert_with(|| {
                let mut stored = episode.clone();
                stored.steps = crate::episode::steps_to_append(&[], &episode.steps);
                stored.steps.sort_by_key(|s| s.step_number);
                stored
            });
            Ok(())
        })
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

    async fn forget_episodes(&self, ns: &Namespace, erasure: &Erasure) -> Result<ErasureReport> {
        self.write(ns, |d| d.forget(erasure))
    }

    async fn forgotten_episodes(&self, ns: &Namespace, limit: u32) -> Result<Vec<ForgetRecord>> {
        Ok(self.read(ns, |d| d.forget_records(limit)))
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
