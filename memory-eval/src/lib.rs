//! Evaluations of the self-learning episodic memory, as a client of the library:
//!
//! - [`learning`]: a simulated task world and an agent that works through a stream of tasks
//!   with and without the memory (four arms), reported per window of tasks;
//! - [`retrieval`]: retrieval quality (recall@k, MRR, nDCG@10, abstention) on a labeled
//!   dataset read from JSON lines;
//! - [`cross_validation`]: the retrieval weights and abstention thresholds chosen by k-fold
//!   cross-validation on a tuning set, and scored on a set they were not chosen on;
//! - [`convert`]: public long-term conversation benchmarks (LoCoMo, REALTALK) converted into
//!   the retrieval format, one dataset per dialogue;
//! - [`leave_one_out`]: fusion settings and abstention thresholds chosen by
//!   leave-one-dataset-out, with every labeled set reported side by side.
//!
//! `memory eval learning` and `memory eval retrieval` run them and write the reports.

pub mod convert;
pub mod cross_validation;
pub mod learning;
pub mod leave_one_out;
pub mod retrieval;

/// A timed-out step with a message (`StepInput::timeout` has none).
pub(crate) fn timed_out(
    tool: &str,
    action: impl Into<String>,
    message: impl Into<String>,
) -> memory_core::StepInput {
    memory_core::StepInput {
        result: memory_core::StepResult::Timeout {
            message: message.into(),
        },
        ..memory_core::StepInput::ok(tool, action, "")
    }
}

/// The abstention threshold that costs least: the candidates lie just below the smallest of
/// `values` (support scores), between each two neighbours and just above the largest; of
/// those tied at the least `cost`, the middle one. `None` without values.
pub(crate) fn least_cost_threshold(mut values: Vec<f32>, cost: impl Fn(f32) -> f64) -> Option<f32> {
    values.sort_by(f32::total_cmp);
    values.dedup();
    let (lo, hi) = (*values.first()?, *values.last()?);
    let mut candidates = vec![lo - 0.01];
    candidates.extend(values.windows(2).map(|w| f32::midpoint(w[0], w[1])));
    candidates.push(hi + 0.01);
    let costs: Vec<f64> = candidates.iter().map(|t| cost(*t)).collect();
    let least = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let tied: Vec<f32> = candidates
        .iter()
        .zip(&costs)
        .filter(|(_, c)| **c <= least + 1e-12)
        .map(|(t, _)| *t)
        .collect();
    tied.get(tied.len() / 2).copied()
}

/// `n / of`, or 0 when `of` is 0.
pub(crate) fn ratio(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

#[cfg(test)]
mod threshold_tests {
    use super::least_cost_threshold;

    #[test]
    fn the_middle_of_the_cheapest_candidates_or_none_without_values() {
        assert_eq!(least_cost_threshold(Vec::new(), |_| 0.0), None);
        // Candidates: 0.09, 0.15, 0.25, 0.31; the three below 0.3 cost the same.
        let t = least_cost_threshold(vec![0.3, 0.1, 0.2, 0.1], |t| f64::from(t > 0.3));
        assert_eq!(t, Some(0.15));
    }
}
