//! [`LearningStore`] of the in-memory backend: learned items and feedback.

use async_trait::async_trait;

use super::{InMemoryStorage, query_items, resolve_keys};
use crate::error::{Error, ObjectKind, Result};
use crate::learned::{Feedback, FeedbackTarget, LearnedId, LearnedItem, LearnedKind};
use crate::learning::{LearnedChanges, LearningUpdate};
use crate::namespace::Namespace;
use crate::storage::{GuardedItems, LearnedItems, LearnedQuery, LearningStore};

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
        d.refresh_feedback(&fb.target);
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
