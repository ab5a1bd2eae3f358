//! Consolidation: keeping the memory in shape. Merging near-duplicates, generalizing rules that
//! agree across contexts, decay and pruning, effectiveness from feedback, retention, learning
//! metrics, and the calibration of estimates.

mod config;
mod estimates;
mod generalize;
mod merge;
mod metrics;
mod pool;
mod run;

pub use config::{ConsolidationConfig, RetentionConfig};
pub(crate) use estimates::{calibrated, check_estimate, estimate_actual};
pub(crate) use merge::sequence_similarity;
pub use metrics::trend;
pub use pool::LearnedChange;
pub use run::ConsolidationReport;
pub(crate) use run::Consolidator;
