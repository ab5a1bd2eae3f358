//! Step 3c of a run, generalize: a rule that every context of a language (or of a domain)
//! holding a rule for its condition agrees on becomes one general rule there, with the
//! evidence of those contexts summed. "cargo fails with "toolchain missing" -> recover with
//! rustup" learned in `web_api/rust` and in `cli/rust` is then advice in any rust context,
//! also one that has not met the failure yet.
//!
//! A general rule is recomputed from its contexts at every run (its identity, from
//! [`general_identity`], differs from any observed rule's), so running twice changes nothing,
//! and two processes running at once compute the same rule. When its contexts stop agreeing
//! (one now holds another action, or its own evidence turned against the action), the general
//! rule is pruned with that reason; it is never deleted.

use std::collections::BTreeMap;

use super::pool::{Pool, RunState};
use crate::learned::{ContextKey, Heuristic, LearnedStatus, general_identity, push_recent};

/// Contexts that must agree before a rule is generalized.
pub(crate) const MIN_CONTEXTS: usize = 2;

/// Observations (supporting and against) a context's rule needs to count, either way: one
/// episode is not yet what a context holds.
pub(crate) const MIN_EVIDENCE: u64 = 2;

/// The broader contexts a rule of `ctx` can generalize to: the task type kept, and one of
/// domain and language left open while the other stays set. Never "any context".
fn broader(ctx: &ContextKey) -> Vec<ContextKey> {
    let (Some(_), Some(_)) = (&ctx.domain, &ctx.language) else {
        return Vec::new();
    };
    vec![
        ContextKey {
            domain: None,
            ..ctx.clone()
        },
        ContextKey {
            language: None,
            ..ctx.clone()
        },
    ]
}

/// What the agreeing contexts of one broader context say about one condition.
struct Agreement<'a> {
    context: ContextKey,
    rules: Vec<&'a Heuristic>,
}

impl Agreement<'_> {
    /// The one action every counted rule holds with more support than evidence against, when
    /// at least [`MIN_CONTEXTS`] hold it.
    fn action(&self) -> Option<&str> {
        let first = self.rules.first()?;
        let agree = self
            .rules
            .iter()
            .all(|h| h.action == first.action && h.support > h.against);
        (agree && self.rules.len() >= MIN_CONTEXTS).then_some(first.action.as_str())
    }

    /// The general rule with the summed evidence, starting from its stored copy (status,
    /// votes and first sighting kept) or a new one.
    fn summed(&self, action: &str, stored: Option<&Heuristic>) -> Option<Heuristic> {
        let first = self.rules.first()?;
        let (condition_key, id) = general_identity(&first.condition, action, &self.context);
        let mut h = stored.cloned().unwrap_or_else(|| Heuristic {
            id,
            condition_key,
            condition: first.condition.clone(),
            action: action.to_owned(),
            context: self.context.clone(),
            support: 0,
            against: 0,
            votes_up: 0,
            votes_down: 0,
            first_seen: first.first_seen,
            last_seen: first.last_seen,
            recent_evidence: Vec::new(),
            status: LearnedStatus::Active,
            pinned: None,
        });
        h.support = self.rules.iter().map(|r| r.support).sum();
        h.against = self.rules.iter().map(|r| r.against).sum();
        h.first_seen = self.rules.iter().map(|r| r.first_seen).min()?;
        h.last_seen = self.rules.iter().map(|r| r.last_seen).max()?;
        h.recent_evidence.clear();
        for e in self.rules.iter().flat_map(|r| &r.recent_evidence) {
            push_recent(&mut h.recent_evidence, *e);
        }
        Some(h)
    }
}

/// Makes, re-sums, revives or prunes the general rules of the active heuristics in `pool`.
pub(crate) fn generalize_rules(pool: &mut Pool<Heuristic>, st: &mut RunState) {
    let mut agreements: BTreeMap<(String, String), Agreement<'_>> = BTreeMap::new();
    let counted = pool.items.values().filter(|h| {
        h.status.is_active() && !h.is_general() && h.support + h.against >= MIN_EVIDENCE
    });
    for h in counted {
        for context in broader(&h.context) {
            let key = (context.signature(), h.condition.clone());
            agreements
                .entry(key)
                .or_insert_with(|| Agreement {
                    context,
                    rules: Vec::new(),
                })
                .rules
                .push(h);
        }
    }
    let mut wanted: BTreeMap<_, (Heuristic, usize)> = BTreeMap::new();
    for a in agreements.values() {
        let Some(action) = a.action() else { continue };
        let (_, id) = general_identity(&a.rules[0].condition, action, &a.context);
        if let Some(h) = a.summed(action, pool.items.get(&id)) {
            wanted.insert(id, (h, a.rules.len()));
        }
    }
    // General rules in use that no agreement backs any more.
    let lapsed: Vec<_> = (pool.items.values())
        .filter(|h| h.status.is_active() && h.is_general() && !wanted.contains_key(&h.id))
        .map(|h| h.id.clone())
        .collect();
    for id in lapsed {
        if let Some(h) = pool.items.get_mut(&id) {
            let reason = format!(
                "fewer than {MIN_CONTEXTS} contexts of {} agree on it any more, or one holds another action",
                h.context.label()
            );
            st.change::<Heuristic>(&id, "pruned", reason.clone());
            h.status = LearnedStatus::Pruned { reason, at: st.now };
            st.run.pruned_heuristics += 1;
        }
    }
    for (id, (mut h, contexts)) in wanted {
        h.status = LearnedStatus::Active;
        if pool.items.get(&id) == Some(&h) {
            continue;
        }
        let detail = format!(
            "general rule for {} from {contexts} contexts that agree: {} supporting / {} against",
            h.context.label(),
            h.support,
            h.against
        );
        st.change::<Heuristic>(&id, "generalized", detail);
        st.run.generalized_heuristics += 1;
        pool.items.insert(id, h);
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::episode::EpisodeId;
    use crate::learned::HeuristicObservation;
    use crate::records::ConsolidationRun;

    const CONDITION: &str = "cargo fails with \"toolchain missing\"";

    fn rule(domain: &str, language: &str, action: &str, support: u64, against: u64) -> Heuristic {
        let ctx = ContextKey {
            task_type: None,
            domain: Some(domain.into()),
            language: Some(language.into()),
        };
        let at = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(support as i64);
        let obs = HeuristicObservation::new(CONDITION, action, ctx, EpisodeId::new(), true, at);
        let mut h = Heuristic::from_observation(&obs);
        (h.support, h.against) = (support, against);
        h
    }

    fn run(pool: &mut Pool<Heuristic>) -> RunState {
        let mut st = RunState {
            run: ConsolidationRun::default(),
            changes: Vec::new(),
            now: DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1),
        };
        generalize_rules(pool, &mut st);
        st
    }

    fn general<'a>(pool: &'a Pool<Heuristic>, ctx: &str) -> Vec<&'a Heuristic> {
        (pool.items.values())
            .filter(|h| h.is_general() && h.context.label() == ctx)
            .collect()
    }

    #[test]
    fn agreeing_contexts_sum_into_a_general_rule_once() {
        let mut pool = Pool::new(vec![
            rule("web_api", "rust", "recover with rustup", 5, 1),
            rule("cli", "rust", "recover with rustup", 3, 0),
            // One episode is not what a context holds: it neither counts nor disagrees.
            rule("embedded", "rust", "recover with reboot", 1, 0),
            rule("web_api", "go", "recover with rustup", 4, 0),
        ]);
        let st = run(&mut pool);
        let rust = general(&pool, "rust");
        assert_eq!(rust.len(), 1, "{:?}", st.changes);
        let h = rust[0];
        assert_eq!((h.support, h.against), (8, 1));
        assert_eq!(h.action, "recover with rustup");
        assert_eq!(h.context.domain, None);
        // web_api holds the rule in rust and in go: a general rule for the domain as well.
        assert_eq!(general(&pool, "web_api").len(), 1);
        assert_eq!(general(&pool, "cli").len(), 0, "one context only");
        assert_eq!(st.run.generalized_heuristics, 2);
        // A second run changes nothing.
        let again = run(&mut pool);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    }

    #[test]
    fn a_disagreeing_context_blocks_the_rule_and_prunes_it_later() {
        let agreeing = vec![
            rule("web_api", "rust", "recover with rustup", 5, 1),
            rule("cli", "rust", "recover with rustup", 3, 0),
        ];
        let mut pool = Pool::new(agreeing.clone());
        run(&mut pool);
        let id = general(&pool, "rust")[0].id.clone();
        // A third context holds another action: the rule depends on the context after all.
        let other = rule("embedded", "rust", "recover with reboot", 2, 0);
        pool.items.insert(other.id.clone(), other);
        let st = run(&mut pool);
        assert!(
            matches!(&pool.items[&id].status, LearnedStatus::Pruned { reason, .. } if reason.contains("agree")),
            "{:?}",
            pool.items[&id].status
        );
        assert_eq!(st.run.pruned_heuristics, 1);
        // A context whose own rule fails more than it holds disagrees too.
        let mut pool = Pool::new(agreeing);
        let failing = rule("embedded", "rust", "recover with rustup", 1, 3);
        pool.items.insert(failing.id.clone(), failing);
        run(&mut pool);
        assert!(general(&pool, "rust").is_empty());
    }

    #[test]
    fn a_pruned_general_rule_comes_back_when_its_contexts_agree_again() {
        let mut pool = Pool::new(vec![
            rule("web_api", "rust", "recover with rustup", 5, 1),
            rule("cli", "rust", "recover with rustup", 3, 0),
        ]);
        run(&mut pool);
        let id = general(&pool, "rust")[0].id.clone();
        if let Some(h) = pool.items.get_mut(&id) {
            h.status = LearnedStatus::Pruned {
                reason: "test".into(),
                at: DateTime::<Utc>::UNIX_EPOCH,
            };
        }
        let st = run(&mut pool);
        assert!(pool.items[&id].status.is_active());
        assert_eq!(st.run.generalized_heuristics, 1);
        assert_eq!(
            pool.changed().len(),
            1,
            "the rule is added, nothing else changed"
        );
    }
}
