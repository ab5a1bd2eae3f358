//! The playbook's procedure chosen by the newest evidence of its own context: a procedure that
//! changed is unlearned from what agents did, without waiting for their feedback.
//!
//! A tool-sequence pattern keeps its counts for as long as the store lives: eleven successes
//! of `a → b → c` outrank one success of `a → d → c` long after `b` stopped working, and an
//! agent that follows its playbook to the letter and says nothing would be sent to `b` again
//! and again. Every successful episode records the steps that gave way there
//! ([`StepReplaced`]: `b` failed right after `a` and no retry or repair got it to work). Evidence
//! is weighed by recency, step by step: a sequence with a step that such a record, newer than
//! the sequence's own latest evidence, says gave way is contradicted (no episode has done the
//! whole sequence since). The playbook then follows the newest sequence of the same context
//! that did succeed after it, shares most of its steps and is not contradicted itself (the
//! procedure as it is now); where there is none, the next one in rank. When an episode does the
//! old sequence successfully again, it is newer than the record and stands again: a procedure
//! that changes back is followed back.
//!
//! What does not count against a step: a failure that a retry or a repair fixed within a few
//! steps (a flaky runner, a trap its setup tool removes), a timeout, and the failures of an
//! episode that did not succeed. A record from an episode that did the whole sequence (a step
//! that failed once and worked later) never contradicts it: the sequence is as new as the
//! record. Only sequences of the record's own context (kind of task, domain, language) are
//! contradicted.

use std::collections::HashMap;

use crate::consolidation::sequence_similarity;
use crate::learned::{ContextKey, Pattern, PatternKind, StepReplaced};

/// A newer sequence replaces a contradicted one only when it shares at least this share of
/// its steps with it (twice the longest common subsequence over both lengths): a changed
/// procedure changes a step or two; another kind of task of the same context has another
/// procedure and says nothing about this one.
const REVISION_SIMILARITY: f64 = 0.5;

/// The tools of a tool-sequence pattern.
pub(crate) fn tools_of(p: &Pattern) -> Option<&[String]> {
    match &p.kind {
        PatternKind::ToolSequence { tools } => Some(tools),
        _ => None,
    }
}

/// The steps-that-gave-way records among a list of candidates, each parsed once: per context
/// and step, the newest active record (on equal times the smallest id), with its next tool.
pub(crate) struct GaveWay<'a> {
    newest: HashMap<(&'a ContextKey, StepReplaced), (&'a Pattern, &'a str)>,
}

impl<'a> GaveWay<'a> {
    /// The records among `candidates` that `holds` accepts (those of the task's variant).
    pub(crate) fn of(candidates: &[&'a Pattern], holds: impl Fn(&'a Pattern) -> bool) -> Self {
        let mut newest: HashMap<(&ContextKey, StepReplaced), (&Pattern, &str)> = HashMap::new();
        for &p in candidates {
            let PatternKind::DecisionPoint { condition, choice } = &p.kind else {
                continue;
            };
            if !p.status.is_active() || p.successes == 0 {
                continue;
            }
            let Some(step) = StepReplaced::parse(condition) else {
                continue;
            };
            if !holds(p) {
                continue;
            }
            let entry = newest.entry((&p.context, step)).or_insert((p, choice));
            if newer(p, entry.0) {
                *entry = (p, choice);
            }
        }
        GaveWay { newest }
    }

    /// The newest record that a step of `sequence` gave way after the sequence's latest
    /// evidence, with the step and the tool that worked next.
    pub(crate) fn contradiction(
        &self,
        sequence: &Pattern,
    ) -> Option<(&'a Pattern, StepReplaced, &'a str)> {
        let tools = tools_of(sequence)?;
        (0..tools.len())
            .map(|i| StepReplaced {
                failed: tools[i].clone(),
                after: i.checked_sub(1).map(|p| tools[p].clone()),
            })
            .filter_map(|step| {
                let &(record, next) = self.newest.get(&(&sequence.context, step.clone()))?;
                (record.last_seen > sequence.last_seen).then_some((record, step, next))
            })
            .reduce(|best, other| if newer(other.0, best.0) { other } else { best })
    }
}

/// Whether record `a` is newer than `b` (on equal times, the one with the smaller id counts
/// as newer, so the choice does not depend on the order of the candidates).
pub(crate) fn newer(a: &Pattern, b: &Pattern) -> bool {
    a.last_seen > b.last_seen || (a.last_seen == b.last_seen && a.id < b.id)
}

/// The procedure a playbook follows: the first of `ranked` (best first) that `usable` accepts
/// and no newer record contradicts; a contradicted one gives way to the newest usable sequence
/// of its context that succeeded after it, shares most of its steps and is not contradicted.
/// Only the records `holds` accepts count. Returns the pattern and, when it stands in for a
/// contradicted one, why.
pub(crate) fn choose_procedure<'a>(
    ranked: &[&'a Pattern],
    usable: impl Fn(&Pattern) -> bool,
    holds: impl Fn(&'a Pattern) -> bool,
) -> Option<(&'a Pattern, Option<String>)> {
    let records = GaveWay::of(ranked, holds);
    let sequences: Vec<&Pattern> = (ranked.iter().copied())
        .filter(|p| tools_of(p).is_some() && usable(p))
        .collect();
    for &chosen in &sequences {
        let Some((record, step, next)) = records.contradiction(chosen) else {
            return Some((chosen, None));
        };
        let Some(tools) = tools_of(chosen) else {
            continue;
        };
        let newer = (sequences.iter().copied())
            .filter(|p| p.context == chosen.context && p.last_seen > chosen.last_seen)
            .filter(|p| {
                tools_of(p).is_some_and(|t| sequence_similarity(tools, t) >= REVISION_SIMILARITY)
            })
            .filter(|p| records.contradiction(p).is_none())
            .max_by(|a, b| a.last_seen.cmp(&b.last_seen).then(b.id.cmp(&a.id)));
        if let Some(now) = newer {
            let place = step
                .after
                .as_deref()
                .map_or_else(|| "as the first step".to_owned(), |a| format!("after {a}"));
            let why = format!(
                "the procedure as done since {}: {} gave way {place} there ({next} worked next), \
                 so {} ({:.0}% success over {} episodes, last done {}) is set aside",
                record.last_seen.format("%Y-%m-%d %H:%M"),
                step.failed,
                tools.join(" → "),
                chosen.success_rate() * 100.0,
                chosen.occurrences,
                chosen.last_seen.format("%Y-%m-%d %H:%M"),
            );
            return Some((now, Some(why)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};

    use super::*;
    use crate::episode::{EpisodeId, TaskType};
    use crate::learned::{ContextKey, PatternObservation};

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default() + Duration::minutes(minutes)
    }

    fn context() -> ContextKey {
        ContextKey {
            task_type: Some(TaskType::Debugging),
            domain: Some("services".into()),
            language: Some("java".into()),
        }
    }

    /// A pattern of `kind` seen (successfully) at each of `times`.
    fn seen(kind: &PatternKind, ctx: &ContextKey, times: &[i64]) -> Pattern {
        let obs = |t: i64| {
            PatternObservation::new(kind.clone(), ctx.clone(), EpisodeId::new(), true, at(t))
        };
        let mut p = Pattern::from_observation(&obs(times[0]));
        for &t in &times[1..] {
            p.absorb(&obs(t));
        }
        p
    }

    fn sequence(tools: &[&str], times: &[i64]) -> Pattern {
        let tools = tools.iter().map(|t| (*t).to_owned()).collect();
        seen(&PatternKind::ToolSequence { tools }, &context(), times)
    }

    fn gave_way_in(ctx: &ContextKey, failed: &str, after: Option<&str>, time: i64) -> Pattern {
        let step = StepReplaced {
            failed: failed.into(),
            after: after.map(str::to_owned),
        };
        let kind = PatternKind::DecisionPoint {
            condition: step.condition(),
            choice: "next".into(),
        };
        seen(&kind, ctx, &[time])
    }

    fn gave_way(failed: &str, after: Option<&str>, time: i64) -> Pattern {
        gave_way_in(&context(), failed, after, time)
    }

    fn choose<'a>(ranked: &[&'a Pattern]) -> Option<(&'a Pattern, Option<String>)> {
        choose_procedure(ranked, |_| true, |_| true)
    }

    #[test]
    fn a_sequence_whose_step_gave_way_since_yields_to_the_newer_procedure() {
        let old = sequence(
            &["snapshot", "migrate", "verify"],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        );
        let record = gave_way("migrate", Some("snapshot"), 20);
        let now = sequence(&["snapshot", "backfill", "verify"], &[20]);
        let (chosen, why) = choose(&[&old, &record, &now]).unwrap();
        assert_eq!(chosen.id, now.id);
        let why = why.unwrap();
        assert!(why.contains("migrate gave way after snapshot"), "{why}");
        assert!(why.contains("100% success over 11 episodes"), "{why}");
    }

    #[test]
    fn a_sequence_done_again_since_the_record_stands() {
        // The procedure changed back (or the step failed once and worked later in that very
        // episode): an episode did the whole sequence after the record.
        let old = sequence(&["snapshot", "migrate", "verify"], &[1, 2, 30]);
        let record = gave_way("migrate", Some("snapshot"), 20);
        let other = sequence(&["snapshot", "backfill", "verify"], &[20]);
        let (chosen, why) = choose(&[&old, &record, &other]).unwrap();
        assert_eq!((chosen.id.clone(), why), (old.id, None));
    }

    #[test]
    fn a_record_of_another_place_or_context_contradicts_nothing() {
        let old = sequence(&["snapshot", "migrate", "verify"], &[1, 2]);
        let elsewhere = gave_way("migrate", Some("deploy"), 20);
        let first = gave_way("migrate", None, 20);
        let go = ContextKey {
            language: Some("go".into()),
            ..context()
        };
        let other_context = gave_way_in(&go, "migrate", Some("snapshot"), 20);
        let ranked = [&old, &elsewhere, &first, &other_context];
        assert_eq!(
            choose(&ranked).map(|(p, _)| p.id.clone()),
            Some(old.id.clone())
        );
    }

    #[test]
    fn without_a_newer_like_procedure_the_next_in_rank_is_followed() {
        let old = sequence(&["snapshot", "migrate", "verify"], &[1, 2]);
        let record = gave_way("migrate", Some("snapshot"), 20);
        // Another kind of task of the context: newer, but not a revision of it.
        let unlike = sequence(&["profile", "read_logs", "patch", "deploy"], &[25]);
        let older_rival = sequence(&["snapshot", "verify"], &[0]);
        let (chosen, why) = choose(&[&old, &record, &unlike, &older_rival]).unwrap();
        assert_eq!(chosen.id, unlike.id, "the next in rank");
        assert_eq!(why, None);
        // A replacement contradicted in turn is no replacement.
        let now = sequence(&["snapshot", "backfill", "verify"], &[21]);
        let again = gave_way("backfill", Some("snapshot"), 22);
        assert_eq!(choose(&[&old, &record, &now, &again]), None);
    }
}
