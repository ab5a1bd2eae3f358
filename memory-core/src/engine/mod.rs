//! The engine: [`SelfLearningMemory`], the facade that validates, redacts and rate-limits each
//! call at the boundary and runs the pipeline (record, learn, retrieve, consolidate) over the
//! storage it is given, with the components it is made of (the step buffer, quota counts, the
//! reward's history cache, the background tasks).

mod config;
mod counts;
mod curate;
mod forget;
mod history;
mod maintain;
mod memory;
mod pending_estimates;
mod read;
mod record;
mod report;
mod steps;
mod tasks;

pub use config::{LearningConfig, MemoryConfig, StepBatchConfig};
pub use curate::MAX_CURATE_REASON_BYTES;
pub use forget::MAX_FORGET_RECORDS;
pub use memory::SelfLearningMemory;
pub use report::{CompletionReport, LearnedSummary};
