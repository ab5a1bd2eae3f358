//! TODO module docs

mod config;
mod estimates;
mod merge;
mod metrics;
mod run;

pub use config::{
    ConsolidationConfig, MAX_CONSOLIDATION_INTERVAL, MAX_CONSOLIDATION_ITEMS, MAX_RETENTION_DAYS,
    MIN_CONSOLIDATION_INTERVAL, RetentionConfig,
};
pub use estimates::{calibrate, correction_from, estimate_error};
pub(crate) use estimates::{calibrated, check_estimate, close_estimate};
pub use merge::lexical_similarity;
pub use metrics::trend;
pub(crate) use run::Consolidator;
pub use run::{ConsolidationReport, LearnedChange};
