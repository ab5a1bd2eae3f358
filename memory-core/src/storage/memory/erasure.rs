//! Forgetting episodes in the in-memory backend: the semantics the durable one matches.

use super::NsData;
use crate::episode::EpisodeId;
use crate::error::{Error, Result};
use crate::learned::FeedbackTarget;
use crate::learning::{ExistingLearned, LearningUpdate};
use crate::storage::{Erasure, ErasureReport, ForgetEpisode, ForgetRecord};

impl NsData {
    /// The items `update` took evidence into, for [`LearningUpdate::unapply`]: the observed
    /// ones, the survivors their merge chains lead to, and every heuristic of its condition
    /// keys.
    fn existing_for_unlearning(&self, update: &LearningUpdate) -> ExistingLearned {
        let mut existing = self.existing_for(update);
        loop {
            let (patterns, heuristics) = existing.survivors_to_load();
            if patterns.is_empty() && heuristics.is_empty() {
                return existing;
            }
            let before = existing.patterns.len() + existing.heuristics.len();
            let found = |id| self.patterns.get(id).cloned();
            existing.patterns.extend(patterns.iter().filter_map(found));
            let found = |id| self.heuristics.get(id).cloned();
            existing
                .heuristics
                .extend(heuristics.iter().filter_map(found));
            if existing.patterns.len() + existing.heuristics.len() == before {
                // A survivor that is gone: the chain ends there.
                return existing;
            }
        }
    }

    /// Checks every episode of `erasure` is as the caller read it, before anything changes.
    fn check_erasure(&self, erasure: &Erasure) -> Result<()> {
        for f in &erasure.episodes {
            let Some(e) = self.episodes.get(&f.episode_id) else {
                continue;
            };
            let stored = e.steps.len() as u64;
            if stored != f.expected_steps || (e.is_completed() && f.learning.is_none()) {
                return Err(Error::steps_changed(f.episode_id, f.expected_steps, stored));
            }
        }
        Ok(())
    }

    /// Forgets one episode the namespace holds.
    fn forget_one(&mut self, f: &ForgetEpisode, report: &mut ErasureReport) {
        let id = f.episode_id;
        let Some(episode) = self.episodes.remove(&id) else {
            if !report.forgotten.contains(&id) {
                report.missing.push(id);
            }
            return;
        };
        let rows = &mut report.rows;
        rows.episodes += 1;
        rows.steps += episode.steps.len() as u64;
        let before = self.embeddings.len();
        self.embeddings.retain(|(e, _), _| *e != id);
        rows.embeddings += (before - self.embeddings.len()) as u64;
        if self.estimates.remove(&id).is_some() {
            rows.estimates += 1;
        }
        self.log_index_change(id);
        let mut targets: Vec<FeedbackTarget> = (self.feedback.iter())
            .filter(|fb| fb.episode_id == id)
            .map(|fb| fb.target.clone())
            .collect();
        targets.dedup();
        let before = self.feedback.len();
        self.feedback.retain(|fb| fb.episode_id != id);
        rows.feedback_events += (before - self.feedback.len()) as u64;
        if let Some(update) = &f.learning {
            let out = update.unapply(self.existing_for_unlearning(update));
            let (p, h, l) = &mut report.learned_changed;
            *p += out.changes.patterns.len() as u64;
            *h += out.changes.heuristics.len() as u64;
            *l += out.changes.lessons.len() as u64;
            self.write_changes(&out.changes);
            for gone in &out.removed.patterns {
                self.patterns.remove(gone);
                self.feedback
                    .retain(|fb| fb.target != FeedbackTarget::Pattern(gone.clone()));
            }
            for gone in &out.removed.heuristics {
                self.heuristics.remove(gone);
                self.feedback
                    .retain(|fb| fb.target != FeedbackTarget::Heuristic(gone.clone()));
            }
            for gone in &out.removed.lessons {
                self.lessons.remove(gone);
            }
            let removed = &mut report.learned_removed;
            removed.patterns.extend(out.removed.patterns);
            removed.heuristics.extend(out.removed.heuristics);
            removed.lessons.extend(out.removed.lessons);
        }
        for target in targets {
            self.refresh_feedback(&target);
        }
        report.forgotten.push(id);
    }

    /// Forgets the episodes of `erasure`: checked first, so a refusal changes nothing.
    pub(super) fn forget(&mut self, erasure: &Erasure) -> Result<ErasureReport> {
        self.check_erasure(erasure)?;
        let mut report = ErasureReport::default();
        for f in &erasure.episodes {
            self.forget_one(f, &mut report);
        }
        for id in &report.forgotten {
            self.forgotten.insert(
                *id,
                ForgetRecord {
                    episode_id: *id,
                    at: erasure.at,
                    reason: erasure.reason.clone(),
                },
            );
        }
        if !report.forgotten.is_empty() {
            report.rows.index_snapshots = self.index_snapshots.len() as u64;
            self.index_snapshots.clear();
        }
        Ok(report)
    }

    /// Whether `id` was forgotten here.
    pub(super) fn was_forgotten(&self, id: EpisodeId) -> bool {
        self.forgotten.contains_key(&id)
    }

    /// The audit records, newest first.
    pub(super) fn forget_records(&self, limit: u32) -> Vec<ForgetRecord> {
        let mut records: Vec<ForgetRecord> = self.forgotten.values().cloned().collect();
        records.sort_by(|a, b| b.at.cmp(&a.at).then(b.episode_id.cmp(&a.episode_id)));
        records.truncate(limit as usize);
        records
    }
}
