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

/// `n / of`, or 0 when `of` is 0.
pub(crate) fn ratio(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}
