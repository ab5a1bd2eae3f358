//! Patterns: recurring structure in episodes, merged across episodes by a deterministic id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{
    ContextKey, Evidence, LearnedStatus, Marks, Pin, forget_recent, push_recent, stable_id,
};
use crate::statistics::{beta_mean, decay_factor, wilson_lower_bound};

/// Deterministic identity of a pattern: a digest of its kind signature and context.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PatternId(pub String);

impl std::fmt::Display for PatternId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a pattern describes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PatternKind {
    /// The tools of an episode's successful steps, consecutive repeats collapsed.
    ToolSequence {
        /// The tools, in order.
        tools: Vec<String>,
    },
    /// A choice made at a decision point, e.g. the opening move of a kind of task.
    DecisionPoint {
        /// When the choice is made.
        condition: String,
        /// What was chosen.
        choice: String,
    },
    /// A failing tool call followed by the steps that recovered from it.
    ErrorRecovery {
        /// The tool that failed.
        failed_tool: String,
        /// The normalized error.
        error_class: String,
        /// The tools that recovered, in order.
        recovery: Vec<String>,
    },
    /// Outcome statistics of a kind of task in a context.
    ContextPattern {
        /// Context features beyond the key (framework, complexity).
        features: Vec<String>,
    },
}

impl PatternKind {
    /// `tool_sequence`, `decision_point`, `error_recovery` or `context_pattern`.
    pub fn name(&self) -> &'static str {
        match self {
            PatternKind::ToolSequence { .. } => "tool_sequence",
            PatternKind::DecisionPoint { .. } => "decision_point",
            PatternKind::ErrorRecovery { .. } => "error_recovery",
            PatternKind::ContextPattern { .. } => "context_pattern",
        }
    }

    fn signature(&self) -> String {
        match self {
            PatternKind::ToolSequence { tools } => format!("seq:{}", tools.join(">")),
            PatternKind::DecisionPoint { condition, choice } => {
                format!("dec:{condition}=>{choice}")
            }
            PatternKind::ErrorRecovery {
                failed_tool,
                error_class,
                recovery,
            } => format!("rec:{failed_tool}!{error_class}=>{}", recovery.join(">")),
            PatternKind::ContextPattern { features } => format!("ctx:{}", features.join(",")),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            PatternKind::ToolSequence { tools } => format!("tool sequence {}", tools.join(" → ")),
            PatternKind::DecisionPoint { condition, choice } => {
                format!("{condition}: choose {choice}")
            }
            PatternKind::ErrorRecovery {
                failed_tool,
                error_class,
                recovery,
            } => format!(
                "when {failed_tool} fails with \"{error_class}\", recover with {}",
                recovery.join(" → ")
            ),
            PatternKind::ContextPattern { features } => {
                if features.is_empty() {
                    "context statistics".to_owned()
                } else {
                    format!("context statistics for {}", features.join(", "))
                }
            }
        }
    }
}

/// A step that gave way: in a successful episode, `failed` failed with an error right after
/// `after` (the tool of the step that last worked before it; `None` at the start) and did not
/// work within the next few steps (no retry or repair fixed it there). Stored as a
/// [`PatternKind::DecisionPoint`] whose condition names the failed step and where
/// ([`StepReplaced::condition`]) and whose choice is the tool of the next step that worked,
/// so stores and older readers need nothing new. A tool sequence that goes `after → failed`
/// is contradicted by such evidence when it is newer than the sequence's own.
///
/// ```
/// use memory_core::StepReplaced;
/// let s = StepReplaced { failed: "migrate_schema".into(), after: Some("snapshot_state".into()) };
/// assert_eq!(s.condition(), "migrate_schema failed after snapshot_state");
/// assert_eq!(StepReplaced::parse(&s.condition()), Some(s));
/// assert_eq!(StepReplaced::parse("opening move of a testing task"), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepReplaced {
    /// The tool that failed and was not tried again.
    pub failed: String,
    /// The tool of the last step that worked before it (`None`: it was the first).
    pub after: Option<String>,
}

/// How a [`StepReplaced`] condition joins its parts. Few words, so that two conditions naming
/// other tools are never near-duplicates in wording.
const FAILED_AFTER: &str = " failed after ";
const FAILED_FIRST: &str = " failed first";

impl StepReplaced {
    /// The decision point's condition.
    pub fn condition(&self) -> String {
        match &self.after {
            Some(after) => format!("{}{FAILED_AFTER}{after}", self.failed),
            None => format!("{}{FAILED_FIRST}", self.failed),
        }
    }

    /// The step a condition names, when it is one [`StepReplaced::condition`] wrote (and only
    /// then: the parts must write it back exactly).
    pub fn parse(condition: &str) -> Option<Self> {
        let parsed = match condition.split_once(FAILED_AFTER) {
            Some((failed, after)) => StepReplaced {
                failed: failed.to_owned(),
                after: Some(after.to_owned()),
            },
            None => StepReplaced {
                failed: condition.strip_suffix(FAILED_FIRST)?.to_owned(),
                after: None,
            },
        };
        (!parsed.failed.is_empty() && parsed.condition() == condition).then_some(parsed)
    }
}

/// The id a pattern of this kind and context has.
pub fn pattern_id(kind: &PatternKind, context: &ContextKey) -> PatternId {
    PatternId(stable_id(&[
        "pattern",
        &kind.signature(),
        &context.signature(),
    ]))
}

/// Feedback counts from agents that applied a recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Effectiveness {
    /// Times it helped.
    pub helped: u64,
    /// Times it made no difference.
    pub no_effect: u64,
    /// Times it hindered.
    pub hindered: u64,
    /// Hindered events recorded after the latest helped one and after the item was last seen
    /// in an episode: a run of contrary feedback that says the world has moved on (see
    /// [`Effectiveness::score`]).
    #[serde(default)]
    pub hindered_streak: u64,
}

/// What each hindered event of a streak after the first multiplies the score by: one run of
/// contrary feedback outweighs any amount of older praise, so advice whose procedure changed is
/// demoted within two or three uses (and restored when it helps or is seen in an episode
/// again). The first hindered use is forgiven: advice misapplied once to another kind of task
/// says little about the advice.
pub const HINDERED_STREAK_DISCOUNT: f64 = 0.25;

impl Effectiveness {
    /// Total feedback events.
    pub fn uses(&self) -> u64 {
        self.helped + self.no_effect + self.hindered
    }

    /// Posterior mean helpfulness in (0, 1); 0.5 with no feedback. `no_effect` counts half.
    /// Each hindered event of the streak after the first multiplies it by
    /// [`HINDERED_STREAK_DISCOUNT`].
    pub fn score(&self) -> f64 {
        let up = 2 * self.helped + self.no_effect;
        let down = 2 * self.hindered + self.no_effect;
        let streak = self.hindered_streak.saturating_sub(1);
        let streak = i32::try_from(streak).unwrap_or(i32::MAX);
        beta_mean(up, down) * HINDERED_STREAK_DISCOUNT.powi(streak)
    }
}

/// A learned pattern with its merged evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    /// Deterministic id.
    pub id: PatternId,
    /// What it describes.
    pub kind: PatternKind,
    /// The context it holds in.
    pub context: ContextKey,
    /// Episodes it was seen in.
    pub occurrences: u64,
    /// Of those, successful episodes.
    pub successes: u64,
    /// Sum of step counts of those episodes (for averages).
    pub total_steps: u64,
    /// Sum of latencies of those episodes in ms (for averages).
    pub total_latency_ms: u64,
    /// First observation.
    pub first_seen: DateTime<Utc>,
    /// Latest observation.
    pub last_seen: DateTime<Utc>,
    /// The most recent evidence, newest first.
    pub recent_evidence: Vec<Evidence>,
    /// Feedback from agents that applied it.
    pub effectiveness: Effectiveness,
    /// Whether it is in use.
    pub status: LearnedStatus,
    /// An operator's pin: shown first, labelled, never merged or pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pin>,
    /// The framework and tags of its episodes, counted ([`Marks`]); kept for tool sequences
    /// (every mark) and steps that gave way (the shared ones only).
    #[serde(default, skip_serializing_if = "Marks::is_empty")]
    pub marks: Marks,
}

/// One episode's evidence for a pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternObservation {
    /// The pattern's id (derived from kind and context).
    pub id: PatternId,
    /// What was seen.
    pub kind: PatternKind,
    /// Where.
    pub context: ContextKey,
    /// In which episode.
    pub episode_id: EpisodeId,
    /// Whether the episode succeeded.
    pub success: bool,
    /// The episode's step count.
    pub steps: u32,
    /// The episode's summed step latency.
    pub latency_ms: u64,
    /// When.
    pub observed_at: DateTime<Utc>,
    /// The episode's [`context_marks`](crate::context_marks), for the kinds that keep them.
    #[serde(default)]
    pub marks: Option<Vec<String>>,
}

impl PatternObservation {
    /// An observation; the id is derived.
    pub fn new(
        kind: PatternKind,
        context: ContextKey,
        episode_id: EpisodeId,
        success: bool,
        observed_at: DateTime<Utc>,
    ) -> Self {
        PatternObservation {
            id: pattern_id(&kind, &context),
            kind,
            context,
            episode_id,
            success,
            steps: 0,
            latency_ms: 0,
            observed_at,
            marks: None,
        }
    }
}

impl Pattern {
    /// A pattern seen once.
    pub fn from_observation(obs: &PatternObservation) -> Self {
        let mut p = Pattern {
            id: obs.id.clone(),
            kind: obs.kind.clone(),
            context: obs.context.clone(),
            occurrences: 0,
            successes: 0,
            total_steps: 0,
            total_latency_ms: 0,
            first_seen: obs.observed_at,
            last_seen: obs.observed_at,
            recent_evidence: Vec::new(),
            effectiveness: Effectiveness::default(),
            status: LearnedStatus::Active,
            pinned: None,
            marks: Marks::default(),
        };
        p.absorb(obs);
        p
    }

    /// Merges one more observation. Commutative: the result does not depend on the order in
    /// which observations arrive.
    pub fn absorb(&mut self, obs: &PatternObservation) {
        self.occurrences += 1;
        self.successes += u64::from(obs.success);
        self.total_steps += u64::from(obs.steps);
        self.total_latency_ms += obs.latency_ms;
        self.first_seen = self.first_seen.min(obs.observed_at);
        if obs.observed_at >= self.last_seen {
            // Seen in an episode again: earlier hindered feedback is no longer a streak.
            self.effectiveness.hindered_streak = 0;
        }
        self.last_seen = self.last_seen.max(obs.observed_at);
        if let Some(marks) = &obs.marks {
            self.marks.observe(marks, obs.observed_at);
            // Only a tool sequence's other marks are read (how often each occurs in its context).
            if !matches!(self.kind, PatternKind::ToolSequence { .. }) {
                self.marks.keep_shared();
            }
        }
        push_recent(
            &mut self.recent_evidence,
            Evidence {
                at: obs.observed_at,
                episode_id: obs.episode_id,
            },
        );
    }

    /// Takes one observation back out (its episode forgotten): the counts as if it had never
    /// been absorbed, its episode gone from the recent evidence and its marks uncounted.
    pub fn release(&mut self, obs: &PatternObservation) {
        self.occurrences = self.occurrences.saturating_sub(1);
        self.successes = self.successes.saturating_sub(u64::from(obs.success));
        self.total_steps = self.total_steps.saturating_sub(u64::from(obs.steps));
        self.total_latency_ms = self.total_latency_ms.saturating_sub(obs.latency_ms);
        if let Some(marks) = &obs.marks {
            self.marks.release(marks);
        }
        forget_recent(
            &mut self.recent_evidence,
            (&mut self.first_seen, &mut self.last_seen),
            (obs.episode_id, obs.observed_at),
            self.occurrences,
        );
    }

    /// Failed or unsuccessful episodes.
    pub fn failures(&self) -> u64 {
        self.occurrences - self.successes.min(self.occurrences)
    }

    /// Raw success rate.
    pub fn success_rate(&self) -> f64 {
        if self.occurrences == 0 {
            0.0
        } else {
            self.successes as f64 / self.occurrences as f64
        }
    }

    /// Mean steps of the episodes it was seen in.
    pub fn mean_steps(&self) -> f64 {
        if self.occurrences == 0 {
            0.0
        } else {
            self.total_steps as f64 / self.occurrences as f64
        }
    }

    /// Confidence in [0, 1]: the Wilson lower bound of the success rate, decayed by the age of
    /// the latest evidence.
    pub fn confidence(&self, now: DateTime<Utc>, half_life_days: f64) -> f64 {
        wilson_lower_bound(self.successes, self.occurrences)
            * decay_factor(self.last_seen, now, half_life_days)
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.kind.describe(), self.context.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obs(seq: &[&str], success: bool, secs: i64) -> PatternObservation {
        PatternObservation::new(
            PatternKind::ToolSequence {
                tools: seq.iter().map(|s| (*s).to_owned()).collect(),
            },
            ContextKey::default(),
            EpisodeId::new(),
            success,
            DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default(),
        )
    }

    proptest! {
        #[test]
        fn merging_is_order_independent(flags in proptest::collection::vec((any::<bool>(), 0i64..1_000_000), 1..20), seed in any::<u64>()) {
            let all: Vec<_> = flags.iter().map(|(s, t)| obs(&["a", "b"], *s, *t)).collect();
            let mut shuffled = all.clone();
            // deterministic shuffle
            let n = shuffled.len();
            for i in 0..n {
                let j = ((seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i as u64)) % n as u64) as usize;
                shuffled.swap(i, j);
            }
            let fold = |v: &[PatternObservation]| {
                let mut p = Pattern::from_observation(&v[0]);
                for o in &v[1..] { p.absorb(o); }
                p
            };
            prop_assert_eq!(fold(&all), fold(&shuffled));
        }
    }

    #[test]
    fn same_kind_and_context_same_id() {
        assert_eq!(obs(&["a", "b"], true, 0).id, obs(&["a", "b"], false, 5).id);
        assert_ne!(obs(&["a", "b"], true, 0).id, obs(&["b", "a"], true, 0).id);
    }
}
