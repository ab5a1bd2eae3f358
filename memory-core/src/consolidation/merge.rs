//! The pure decisions of consolidation: which items are near-duplicates, how evidence moves in
//! a merge, and what has decayed enough to prune.

use chrono::{DateTime, Utc};

use crate::learned::{
    Effectiveness, Evidence, Feedback, FeedbackTarget, Heuristic, Learned, LearnedStatus, Pattern,
    PatternKind, StepReplaced, push_recent,
};
use crate::records::RestoreRecord;
use crate::statistics::decay_factor;
use crate::text::tokenize;

/// Jaccard similarity of the word sets of two texts (words as [`tokenize`] finds them), in
/// [0, 1]; 1 for two texts without words.
pub(crate) fn lexical_similarity(a: &str, b: &str) -> f64 {
    let mut x = tokenize(a);
    let mut y = tokenize(b);
    x.sort();
    x.dedup();
    y.sort();
    y.dedup();
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    let common = x.iter().filter(|w| y.binary_search(w).is_ok()).count();
    let union = x.len() + y.len() - common;
    common as f64 / union as f64
}

/// Similarity of two tool sequences in [0, 1]: twice the length of their longest common
/// subsequence over their total length (1 for two empty sequences).
pub(crate) fn sequence_similarity(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    // One row of the classic dynamic programme; `diag` is the previous row's cell to the left.
    let mut row = vec![0_usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    2.0 * row[b.len()] as f64 / (a.len() + b.len()) as f64
}

/// The kinds consolidation merges, decays and prunes (patterns and heuristics), through one
/// generic run.
pub(crate) trait Consolidate: Learned {
    /// What one unit of evidence is called in a run's report.
    const EVIDENCE_UNIT: &'static str;
    /// The part two near-duplicates must share exactly, and the wording that may differ.
    /// `None` for items whose identity already covers everything (tool sequences and context
    /// statistics: equal ones have equal ids).
    fn merge_key(&self) -> Option<(String, String)>;
    /// Adds `loser`'s counts to this item's and zeroes them, so evidence moves and is never
    /// counted twice.
    fn take_counts(&mut self, loser: &mut Self);
    /// The first and latest observation and the recent evidence, for a merge to widen.
    fn timeline_mut(&mut self) -> (&mut DateTime<Utc>, &mut DateTime<Utc>, &mut Vec<Evidence>);
    /// Who receives feedback about this item.
    fn feedback_target(id: &Self::Id) -> FeedbackTarget;
    /// Sets what the feedback events say (effectiveness, or votes); the report's detail when
    /// that changed anything.
    fn set_feedback(&mut self, events: &[Feedback]) -> Option<String>;
    /// Confidence in [0, 1], decayed by the age of the latest evidence.
    fn decayed_confidence(&self, now: DateTime<Utc>, half_life_days: f64) -> f64;
    /// Episodes of evidence plus feedback events, for decay.
    fn uses(&self) -> u64;
}

/// Moves `loser`'s evidence into `survivor` (counts summed, time span widened, recent
/// evidence united) and marks `loser` merged into it. The loser keeps its identity, wording
/// and recent-evidence list; its counts move (are zeroed), so evidence that still arrives
/// under its id can be forwarded by a later run without counting anything twice.
pub(crate) fn merge_into<T: Consolidate>(survivor: &mut T, loser: &mut T, at: DateTime<Utc>) {
    let had_evidence = loser.evidence_count() > 0;
    survivor.take_counts(loser);
    let (first, last, recent) = loser.timeline_mut();
    let (first, last, recent) = (*first, *last, recent.clone());
    let (s_first, s_last, s_recent) = survivor.timeline_mut();
    if had_evidence {
        *s_first = (*s_first).min(first);
        *s_last = (*s_last).max(last);
    }
    for e in recent {
        push_recent(s_recent, e);
    }
    let into = survivor.id().to_string();
    if !matches!(loser.status(), LearnedStatus::Merged { into: i, .. } if *i == into) {
        loser.set_status(LearnedStatus::Merged { into, at });
    }
}

impl Consolidate for Pattern {
    const EVIDENCE_UNIT: &'static str = "occurrence(s)";

    fn merge_key(&self) -> Option<(String, String)> {
        let ctx = self.context.signature();
        match &self.kind {
            // A step that gave way names its tools: conditions naming other tools are other
            // evidence, however alike their wording (only equal ones group, and they share an id).
            PatternKind::DecisionPoint { condition, choice }
                if StepReplaced::parse(condition).is_some() =>
            {
                Some((format!("dec|{ctx}|{choice}|{condition}"), condition.clone()))
            }
            PatternKind::DecisionPoint { condition, choice } => {
                Some((format!("dec|{ctx}|{choice}"), condition.clone()))
            }
            PatternKind::ErrorRecovery {
                failed_tool,
                error_class,
                recovery,
            } => Some((
                format!("rec|{ctx}|{failed_tool}|{}", recovery.join(">")),
                error_class.clone(),
            )),
            PatternKind::ToolSequence { .. } | PatternKind::ContextPattern { .. } => None,
        }
    }

    fn take_counts(&mut self, loser: &mut Self) {
        self.occurrences += std::mem::take(&mut loser.occurrences);
        self.successes += std::mem::take(&mut loser.successes);
        self.total_steps += std::mem::take(&mut loser.total_steps);
        self.total_latency_ms += std::mem::take(&mut loser.total_latency_ms);
        let marks = std::mem::take(&mut loser.marks);
        self.marks.merge(&marks);
        if !matches!(self.kind, PatternKind::ToolSequence { .. }) {
            self.marks.keep_shared();
        }
        loser.effectiveness = Effectiveness::default();
    }

    fn timeline_mut(&mut self) -> (&mut DateTime<Utc>, &mut DateTime<Utc>, &mut Vec<Evidence>) {
        (
            &mut self.first_seen,
            &mut self.last_seen,
            &mut self.recent_evidence,
        )
    }

    fn feedback_target(id: &Self::Id) -> FeedbackTarget {
        FeedbackTarget::Pattern(id.clone())
    }

    fn set_feedback(&mut self, events: &[Feedback]) -> Option<String> {
        let e = Effectiveness::of(events, self.last_seen);
        if self.effectiveness == e {
            return None;
        }
        self.effectiveness = e;
        Some(format!(
            "{} helped / {} no effect / {} hindered ({} in a row) from {} event(s)",
            e.helped,
            e.no_effect,
            e.hindered,
            e.hindered_streak,
            events.len()
        ))
    }

    fn decayed_confidence(&self, now: DateTime<Utc>, half_life_days: f64) -> f64 {
        self.confidence(now, half_life_days)
    }

    fn uses(&self) -> u64 {
        self.occurrences + self.effectiveness.uses()
    }
}

impl Consolidate for Heuristic {
    const EVIDENCE_UNIT: &'static str = "observation(s)";

    /// Context and action must match; the condition's wording may differ. General rules are
    /// recomputed from their contexts at every run and never merge.
    fn merge_key(&self) -> Option<(String, String)> {
        if self.is_general() {
            return None;
        }
        Some((
            format!("{}|{}", self.context.signature(), self.action),
            self.condition.clone(),
        ))
    }

    fn take_counts(&mut self, loser: &mut Self) {
        self.support += std::mem::take(&mut loser.support);
        self.against += std::mem::take(&mut loser.against);
        self.votes_up += std::mem::take(&mut loser.votes_up);
        self.votes_down += std::mem::take(&mut loser.votes_down);
    }

    fn timeline_mut(&mut self) -> (&mut DateTime<Utc>, &mut DateTime<Utc>, &mut Vec<Evidence>) {
        (
            &mut self.first_seen,
            &mut self.last_seen,
            &mut self.recent_evidence,
        )
    }

    fn feedback_target(id: &Self::Id) -> FeedbackTarget {
        FeedbackTarget::Heuristic(id.clone())
    }

    fn set_feedback(&mut self, events: &[Feedback]) -> Option<String> {
        let e = Effectiveness::of(events, self.last_seen);
        if (self.votes_up, self.votes_down) == (e.helped, e.hindered) {
            return None;
        }
        self.votes_up = e.helped;
        self.votes_down = e.hindered;
        Some(format!(
            "{} up / {} down from {} event(s)",
            e.helped,
            e.hindered,
            events.len()
        ))
    }

    fn decayed_confidence(&self, now: DateTime<Utc>, half_life_days: f64) -> f64 {
        self.confidence(now, half_life_days)
    }

    fn uses(&self) -> u64 {
        self.support + self.against + self.votes_up + self.votes_down
    }
}

/// Decayed use of an item: its episodes of evidence plus feedback events, times the decay
/// factor of its latest evidence.
pub fn decayed_use(uses: u64, last_seen: DateTime<Utc>, now: DateTime<Utc>, half_life: f64) -> f64 {
    uses as f64 * decay_factor(last_seen, now, half_life)
}

/// Whether `target` was restored within the grace period before `now`.
pub fn recently_restored(
    restores: &[RestoreRecord],
    target: &FeedbackTarget,
    now: DateTime<Utc>,
    grace_days: f64,
) -> bool {
    restores.iter().any(|r| {
        &r.target == target
            && (now - r.restored_at).num_milliseconds() as f64 / 86_400_000.0 < grace_days
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::EpisodeId;
    use crate::learned::{ContextKey, PatternObservation};

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + days * 86_400, 0).unwrap_or_default()
    }

    fn decision(condition: &str, n: u64) -> Pattern {
        let kind = PatternKind::DecisionPoint {
            condition: condition.to_owned(),
            choice: "cargo".to_owned(),
        };
        let mut p = Pattern::from_observation(&PatternObservation::new(
            kind.clone(),
            ContextKey::default(),
            EpisodeId::new(),
            true,
            t(0),
        ));
        for i in 1..n {
            p.absorb(&PatternObservation::new(
                kind.clone(),
                ContextKey::default(),
                EpisodeId::new(),
                i % 2 == 0,
                t(i as i64),
            ));
        }
        p
    }

    #[test]
    #[allow(clippy::float_cmp, reason = "exact values")]
    fn sequences_are_alike_by_their_longest_common_subsequence() {
        let seq = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<String>>();
        let sim = |a: &str, b: &str| sequence_similarity(&seq(a), &seq(b));
        assert_eq!(sim("a b c d", "a b c d"), 1.0);
        assert_eq!(sim("a b c d", "a x c d"), 0.75);
        assert_eq!(sim("a b c d", "a b c d e f"), 0.8);
        assert_eq!(sim("a b", "c d"), 0.0);
        assert_eq!(sequence_similarity(&[], &[]), 1.0);
        assert_eq!(sim("a b c", "c b a"), sim("c b a", "a b c"));
    }

    #[test]
    #[allow(clippy::float_cmp, reason = "exact values: 1 and 0")]
    fn word_sets_decide_lexical_similarity() {
        assert_eq!(
            lexical_similarity("cargo build fails", "the cargo build fails"),
            1.0
        );
        assert!(lexical_similarity("cargo build fails", "pytest times out") < 0.2);
    }

    #[test]
    fn merging_sums_evidence_and_is_not_repeated() {
        let mut a = decision("opening move of a testing task", 3);
        let mut b = decision("the opening move of a testing task", 2);
        assert_eq!(a.merge_key().map(|k| k.0), b.merge_key().map(|k| k.0));
        assert!(
            lexical_similarity(
                &a.merge_key().unwrap_or_default().1,
                &b.merge_key().unwrap_or_default().1
            ) >= 0.8
        );
        let (occ, succ) = (a.occurrences + b.occurrences, a.successes + b.successes);
        merge_into(&mut a, &mut b, t(10));
        assert_eq!((a.occurrences, a.successes), (occ, succ));
        assert_eq!(b.occurrences, 0);
        assert!(matches!(&b.status, LearnedStatus::Merged { into, .. } if *into == a.id.0));
        let before = a.clone();
        let status = b.status.clone();
        merge_into(&mut a, &mut b, t(11));
        assert_eq!(a, before, "forwarding an emptied loser adds nothing");
        assert_eq!(
            b.status, status,
            "the merge time of the first merge is kept"
        );
    }
}
