//! Reward: how good an episode was, as a sum of named, explainable components.
//!
//! ```text
//! total = clamp01( 0.60 · outcome_base
//!                + 0.15 · efficiency · outcome_base
//!                + 0.15 · quality · (1 if outcome_base > 0 else 0.5)
//!                + complexity_bonus · outcome_base          (0 / 0.025 / 0.05)
//!                + learning_bonus )                          (0 to 0.05)
//! ```
//! * `outcome_base`: success 1.0; partial success 0.3 + 0.4 · share of completed items (0.5 when
//!   no items were listed); abstained 0.1; failure 0.
//! * `efficiency` in [0, 1]: `min(1, baseline / steps)` where the baseline is the median step
//!   count of similar successful past episodes, or the typical count for the task's complexity
//!   when there is no history.
//! * `quality` in [0, 1]: the share of steps that succeeded (a clean run is 1).
//! * `complexity_bonus`: harder tasks done well earn a little more.
//! * `learning_bonus`: 0.025 for recovering from an error within the episode, 0.025 for a
//!   success in a context with no similar past episode (new ground).
//!
//! The weights sum to at most 1, and the total is clamped, so it always lies in [0, 1].

use crate::assessment::RewardScore;
use crate::episode::{Complexity, ExecutionStep, Outcome};

/// Weight of the outcome component.
pub const W_OUTCOME: f64 = 0.60;
/// Weight of the efficiency component.
pub const W_EFFICIENCY: f64 = 0.15;
/// Weight of the quality component.
pub const W_QUALITY: f64 = 0.15;

/// What the reward needs to know about the past.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RewardHistory {
    /// Median step count of similar successful past episodes, if any.
    pub median_success_steps: Option<f64>,
    /// How many similar past episodes exist.
    pub similar_episodes: usize,
}

fn outcome_base(outcome: &Outcome) -> f64 {
    match outcome {
        Outcome::Success { .. } => 1.0,
        Outcome::PartialSuccess {
            completed, failed, ..
        } => {
            let total = completed.len() + failed.len();
            if total == 0 {
                0.5
            } else {
                0.3 + 0.4 * completed.len() as f64 / total as f64
            }
        }
        Outcome::Abstained { .. } => 0.1,
        Outcome::Failure { .. } => 0.0,
    }
}

/// True when some failed step is followed later by a successful one.
pub(crate) fn recovered_from_error(steps: &[ExecutionStep]) -> bool {
    steps
        .iter()
        .position(|s| !s.result().is_success())
        .is_some_and(|first_err| steps[first_err..].iter().any(|s| s.result().is_success()))
}

/// Computes the reward of a completed episode.
///
/// ```
/// use memory_core::{compute_reward, Complexity, Outcome, RewardHistory};
/// let r = compute_reward(&[], Complexity::Simple, &Outcome::success("done"), RewardHistory::default());
/// assert!(r.total > 0.6 && r.total <= 1.0);
/// ```
pub fn compute_reward(
    steps: &[ExecutionStep],
    complexity: Complexity,
    outcome: &Outcome,
    history: RewardHistory,
) -> RewardScore {
    let base = outcome_base(outcome);
    let baseline = history
        .median_success_steps
        .filter(|m| m.is_finite() && *m >= 1.0)
        .unwrap_or_else(|| f64::from(complexity.typical_steps()));
    let efficiency = if steps.is_empty() {
        1.0
    } else {
        (baseline / steps.len() as f64).clamp(0.0, 1.0)
    };
    let quality = if steps.is_empty() {
        1.0
    } else {
        steps.iter().filter(|s| s.result().is_success()).count() as f64 / steps.len() as f64
    };
    let complexity_bonus = base
        * match complexity {
            Complexity::Simple => 0.0,
            Complexity::Moderate => 0.025,
            Complexity::Complex => 0.05,
        };
    let mut learning_bonus = 0.0;
    if base > 0.0 && recovered_from_error(steps) {
        learning_bonus += 0.025;
    }
    if outcome.is_success() && history.similar_episodes == 0 {
        learning_bonus += 0.025;
    }
    let quality_gate = if base > 0.0 { 1.0 } else { 0.5 };
    let total = (W_OUTCOME * base
        + W_EFFICIENCY * efficiency * base
        + W_QUALITY * quality * quality_gate
        + complexity_bonus
        + learning_bonus)
        .clamp(0.0, 1.0);
    RewardScore {
        total,
        outcome_base: base,
        efficiency,
        quality,
        complexity_bonus,
        learning_bonus,
        baseline_steps: baseline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::StepInput;
    use chrono::Utc;
    use proptest::prelude::*;

    fn steps(inputs: Vec<StepInput>) -> Vec<ExecutionStep> {
        inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| ExecutionStep {
                step_number: i as u32 + 1,
                key: ExecutionStep::new_key(),
                timestamp: Utc::now(),
                input,
            })
            .collect()
    }

    #[test]
    fn clean_success_beats_success_with_three_failed_steps() {
        let clean = steps(vec![
            StepInput::ok("read_file", "read", "ok"),
            StepInput::ok("edit_file", "edit", "ok"),
            StepInput::ok("shell", "cargo test", "ok"),
        ]);
        let messy = steps(vec![
            StepInput::ok("read_file", "read", "ok"),
            StepInput::error("shell", "cargo test", "E0308 mismatched types"),
            StepInput::error("shell", "cargo test", "E0308 mismatched types"),
            StepInput::error("shell", "cargo test", "E0308 mismatched types"),
            StepInput::ok("edit_file", "edit", "ok"),
            StepInput::ok("shell", "cargo test", "ok"),
        ]);
        let h = RewardHistory {
            median_success_steps: Some(4.0),
            similar_episodes: 3,
        };
        let outcome = Outcome::success("done");
        let a = compute_reward(&clean, Complexity::Moderate, &outcome, h);
        let b = compute_reward(&messy, Complexity::Moderate, &outcome, h);
        assert!(a.total > b.total, "{a:?} vs {b:?}");
        assert!(a.quality > b.quality && a.efficiency > b.efficiency);
        let failed = compute_reward(&clean, Complexity::Moderate, &Outcome::failure("no"), h);
        assert!(failed.total < b.total);
        assert!(failed.total >= 0.0);
    }

    #[test]
    fn components_are_named_and_bounded() {
        let r = compute_reward(
            &[],
            Complexity::Complex,
            &Outcome::success("x"),
            RewardHistory::default(),
        );
        assert!((r.total - 1.0).abs() < 1e-9 || r.total < 1.0);
        assert!(r.complexity_bonus > 0.0 && r.learning_bonus > 0.0);
    }

    fn arb_step() -> impl Strategy<Value = StepInput> {
        prop_oneof![
            Just(StepInput::ok("t", "a", "o")),
            Just(StepInput::error("t", "a", "e")),
            Just(StepInput::timeout("t", "a")),
        ]
    }

    fn arb_outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::success("ok")),
            Just(Outcome::failure("no")),
            Just(Outcome::Abstained { reason: "x".into() }),
            (0usize..5, 0usize..5).prop_map(|(c, f)| Outcome::PartialSuccess {
                verdict: "p".into(),
                completed: vec!["c".into(); c],
                failed: vec!["f".into(); f],
            }),
        ]
    }

    proptest! {
        #[test]
        fn total_always_in_unit_interval(
            inputs in proptest::collection::vec(arb_step(), 0..60),
            outcome in arb_outcome(),
            median in proptest::option::of(-5.0f64..500.0),
            similar in 0usize..10,
            cx in prop_oneof![Just(Complexity::Simple), Just(Complexity::Moderate), Just(Complexity::Complex)],
        ) {
            let r = compute_reward(&steps(inputs), cx, &outcome, RewardHistory { median_success_steps: median, similar_episodes: similar });
            prop_assert!((0.0..=1.0).contains(&r.total), "{r:?}");
            prop_assert!((0.0..=1.0).contains(&r.efficiency));
            prop_assert!((0.0..=1.0).contains(&r.quality));
        }
    }
}
