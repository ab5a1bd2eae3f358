//! A forgotten episode's evidence taken out of the learned items, inside the erasure's
//! transaction: the items loaded (with their merge survivors and the whole of each condition
//! key), [`LearningUpdate::unapply`] in core, the changed rows written back and the emptied
//! ones deleted with their feedback.

use libsql::Value;
use memory_core::{
    ExistingLearned, FeedbackTarget, Heuristic, LearningUpdate, RemovedItems, Unlearned,
};

use super::{Stored, load_filtered, load_where, refresh_feedback, stored_body};
use crate::codec::text;
use crate::connection::Inner;
use crate::error::DbResult;
use crate::prepared::Db;
use crate::sql::placeholders;

/// The items `update` took evidence into: the observed patterns and lessons, the survivors
/// their merge chains lead to, and every heuristic of its condition keys that is not pruned
/// (with the observed ones, whatever their status).
async fn existing_for_unlearning(
    tx: &Db<'_>,
    ns: &str,
    update: &LearningUpdate,
) -> DbResult<ExistingLearned> {
    let pattern_ids = update.pattern_ids().into_iter().map(|p| p.0).collect();
    let lesson_ids = update.lesson_ids().into_iter().map(|l| l.0).collect();
    let keys = update.condition_keys();
    let live = format!(
        "condition_key IN ({}) AND status <> 'pruned'",
        placeholders(2, keys.len())
    );
    let mut heuristics: Vec<Heuristic> = load_filtered(tx, ns, &live, keys).await?;
    let observed: Vec<String> = (update.heuristics.iter())
        .map(|o| o.id.0.clone())
        .filter(|id| heuristics.iter().all(|h| h.id.0 != *id))
        .collect();
    heuristics.extend(load_where::<Heuristic>(tx, ns, "id", observed).await?);
    let mut existing = ExistingLearned {
        patterns: load_where(tx, ns, "id", pattern_ids).await?,
        heuristics,
        lessons: load_where(tx, ns, "id", lesson_ids).await?,
    };
    // Along the merge chains (at most 16 long), until nothing new is found.
    for _ in 0..16 {
        let (patterns, heuristics) = existing.survivors_to_load();
        if patterns.is_empty() && heuristics.is_empty() {
            break;
        }
        let patterns = patterns.into_iter().map(|p| p.0).collect();
        let heuristics = heuristics.into_iter().map(|h| h.0).collect();
        let found_p = load_where(tx, ns, "id", patterns).await?;
        let found_h = load_where(tx, ns, "id", heuristics).await?;
        if found_p.is_empty() && found_h.is_empty() {
            break;
        }
        existing.patterns.extend(found_p);
        existing.heuristics.extend(found_h);
    }
    Ok(existing)
}

/// Deletes the rows of `T` with `ids`, stamping them first (kinds that carry the stamp) so
/// the change log tells every cache they changed.
async fn delete_items<T: Stored>(
    tx: &Db<'_>,
    ns: &str,
    ids: Vec<String>,
    position: i64,
) -> DbResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut params = vec![text(ns)];
    params.extend(ids.into_iter().map(Value::Text));
    if T::STAMPED {
        let stamp = format!(
            "UPDATE {} SET changed_seq = ?{} WHERE ns = ?1 AND id IN ({})",
            T::TABLE,
            params.len() + 1,
            placeholders(2, params.len() - 1)
        );
        let mut stamped = params.clone();
        stamped.push(Value::Integer(position));
        tx.exec(&stamp, stamped).await?;
    }
    let delete = format!(
        "DELETE FROM {} WHERE ns = ?1 AND id IN ({})",
        T::TABLE,
        placeholders(2, params.len() - 1)
    );
    tx.exec(&delete, params).await?;
    Ok(())
}

/// Deletes the feedback events on `targets` (items that are gone).
async fn delete_feedback_on(tx: &Db<'_>, ns: &str, targets: &[FeedbackTarget]) -> DbResult<()> {
    for t in targets {
        tx.exec(
            "DELETE FROM feedback WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3",
            (ns, t.kind(), t.id()),
        )
        .await?;
    }
    Ok(())
}

impl Inner {
    /// Takes `update`'s observations back out of the learned items, inside the caller's
    /// transaction: changed items written back (stamped with `position`), emptied ones deleted
    /// with the feedback on them.
    pub(crate) async fn unlearn(
        tx: &Db<'_>,
        ns: &str,
        update: &LearningUpdate,
        position: i64,
    ) -> DbResult<Unlearned> {
        let existing = existing_for_unlearning(tx, ns, update).await?;
        let out = update.unapply(existing);
        let c = &out.changes;
        Self::write_items(
            tx,
            ns,
            position,
            c.patterns.iter().map(|c| &c.item),
            c.heuristics.iter().map(|c| &c.item),
            c.lessons.iter().map(|c| &c.item),
        )
        .await?;
        let RemovedItems {
            patterns,
            heuristics,
            lessons,
        } = &out.removed;
        let mut gone: Vec<FeedbackTarget> = Vec::new();
        gone.extend(patterns.iter().cloned().map(FeedbackTarget::Pattern));
        gone.extend(heuristics.iter().cloned().map(FeedbackTarget::Heuristic));
        delete_feedback_on(tx, ns, &gone).await?;
        let p = patterns.iter().map(|p| p.0.clone()).collect();
        delete_items::<memory_core::Pattern>(tx, ns, p, position).await?;
        let h = heuristics.iter().map(|h| h.0.clone()).collect();
        delete_items::<Heuristic>(tx, ns, h, position).await?;
        let l = lessons.iter().map(|l| l.0.clone()).collect();
        delete_items::<memory_core::FailureLesson>(tx, ns, l, position).await?;
        Ok(out)
    }

    /// Sets again what the feedback events of `target` say on it, after some were removed; a
    /// target that is gone needs nothing.
    pub(crate) async fn refresh_feedback_of(
        tx: &Db<'_>,
        ns: &str,
        target: &FeedbackTarget,
        position: i64,
    ) -> DbResult<()> {
        match stored_body(tx, ns, target).await? {
            Some(body) => refresh_feedback(tx, ns, target, body, position).await,
            None => Ok(()),
        }
    }
}
