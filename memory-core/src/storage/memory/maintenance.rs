//! [`MaintenanceStore`] of the in-memory backend: consolidation runs, metrics snapshots,
//! estimates, restores and compaction.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::InMemoryStorage;
use crate::episode::{Episode, EpisodeId, OutcomeKind, StepResult};
use crate::error::{Error, ObjectKind, Result};
use crate::learned::{FeedbackTarget, LearnedStatus, PatternId};
use crate::namespace::Namespace;
use crate::records::{
    ConsolidationRun, EstimateRecord, MetricsSnapshot, RestoreRecord, StepCompaction,
};
use crate::storage::MaintenanceStore;

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

    async fn purge_namespace(&self, ns: &Namespace) -> Result<BTreeMap<String, u64>> {
        let mut data = self.lock();
        let Some(d) = data.get_mut(ns) else {
            return Ok(BTreeMap::new());
        };
        if let Some(id) = d.episodes.keys().next() {
            return Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: id.to_string(),
                reason: "the namespace still holds episodes: forget them first".into(),
            });
        }
        let counts = [
            ("patterns", d.patterns.len()),
            ("heuristics", d.heuristics.len()),
            ("lessons", d.lessons.len()),
            ("feedback", d.feedback.len()),
            ("consolidation_runs", d.runs.len()),
            ("metrics_snapshots", d.snapshots.len()),
            ("estimates", d.estimates.len()),
            ("learned_restores", d.restores.len()),
            ("index_snapshots", d.index_snapshots.len()),
        ];
        let out = (counts.into_iter())
            .map(|(k, n)| (k.to_owned(), n as u64))
            .collect();
        // What remains: the audit records of forgotten episodes and the index log's positions
        // (a reader's place in it stays valid).
        let forgotten = std::mem::take(&mut d.forgotten);
        let index_log = std::mem::take(&mut d.index_log);
        *d = super::NsData::default();
        d.forgotten = forgotten;
        d.index_log = index_log;
        Ok(out)
    }
}
