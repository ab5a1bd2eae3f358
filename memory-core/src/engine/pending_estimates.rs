//! Estimates handed out by `recommend`, waiting for the episode that follows them, so
//! calibration runs without the caller passing anything back: `start_episode` with the same
//! task (same [`task_fingerprint`]) in the same namespace and process claims the estimate and
//! records it with the new episode, as [`SelfLearningMemory::record_estimate`] would.
//!
//! The map is per process and bounded (the most recent [`CAPACITY`] offers, each for
//! [`TIME_TO_LIVE`]); an episode started in another process is calibrated only when its caller
//! records the estimate itself.
//!
//! [`SelfLearningMemory::record_estimate`]: super::SelfLearningMemory::record_estimate

use std::time::Duration;

use crate::namespace::Namespace;
use crate::records::Estimate;
use crate::retrieval::recommend::task_fingerprint;

/// Most estimates waiting at once.
pub(super) const CAPACITY: u64 = 4_096;
/// How long an estimate waits for its episode.
pub(super) const TIME_TO_LIVE: Duration = Duration::from_secs(2 * 3_600);

#[derive(Debug)]
pub(super) struct PendingEstimates(moka::sync::Cache<(Namespace, String), Estimate>);

impl PendingEstimates {
    pub(super) fn new() -> Self {
        PendingEstimates(
            moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(TIME_TO_LIVE)
                .build(),
        )
    }

    /// Keeps `estimate` for the next episode of `task`; an estimate from no evidence is not
    /// worth calibrating against and is not kept.
    pub(super) fn offer(&self, ns: &Namespace, task: &str, estimate: &Estimate) {
        if estimate.sample_size > 0 {
            self.0
                .insert((ns.clone(), task_fingerprint(task)), estimate.clone());
        }
    }

    /// Takes the estimate waiting for an episode of `task`, if any.
    pub(super) fn claim(&self, ns: &Namespace, task: &str) -> Option<Estimate> {
        self.0.remove(&(ns.clone(), task_fingerprint(task)))
    }
}
