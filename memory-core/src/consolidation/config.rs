//! The settings of consolidation and retention, validated at construction.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Upper bound of `ConsolidationConfig::interval`: 30 days.
pub const MAX_CONSOLIDATION_INTERVAL: Duration = Duration::from_secs(30 * 86_400);
/// Lower bound of `ConsolidationConfig::interval`: 1 second.
pub const MIN_CONSOLIDATION_INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound of the item, window and sample settings.
pub const MAX_CONSOLIDATION_ITEMS: u32 = 100_000;
/// Upper bound of `RetentionConfig::compact_step_outputs_after_days` (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// Consolidation: merging near-duplicates, decay, pruning, effectiveness, metrics, and the
/// background schedule.
///
/// # Default
/// `schedule` on, `interval` 1 h; `prune_confidence_floor` 0.05; `prune_use_floor` 1.0
/// (decayed episodes of evidence); `restore_grace_days` 30; `merged_rows_kept_days` 7;
/// `pruned_rows_kept_days` 90; `lexical_similarity` 0.8
/// (Jaccard of words); `semantic_similarity` 0.92 (cosine); `sequence_similarity` 0.75; `max_items` 10,000 per kind and
/// run; `metrics_window` 200 episodes; `calibration_window` 50 estimates;
/// `calibration_min_samples` 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsolidationConfig {
    /// Run consolidation in the background: each namespace whose last run (by any process
    /// on the store) started more than `interval` ago, claimed by one process at a time.
    pub schedule: bool,
    /// Time between runs of a namespace (1 s ..= 30 days). A process looks 10 s after it
    /// starts (or after `interval`, if shorter), so a namespace overdue since a restart is
    /// caught up, then every `interval`.
    #[serde(with = "crate::serde_adapters::duration_ms")]
    pub interval: Duration,
    /// An active item is pruned when its decayed confidence is below this (0 ..= 1) ...
    pub prune_confidence_floor: f64,
    /// ... and its decayed use (episodes of evidence plus feedback events, times the decay
    /// factor) is below this (>= 0).
    pub prune_use_floor: f64,
    /// Days after a `restore` during which consolidation does not prune the item again (>= 0).
    pub restore_grace_days: f64,
    /// Days a pattern row merged into another is kept once its evidence has moved (>= 0): it
    /// shows where the pattern went. After that a run deletes it, unless it holds evidence
    /// or feedback or another merged row points into it; 0 lets the next run delete it.
    pub merged_rows_kept_days: f64,
    /// Days a pruned pattern row is kept (and `restore` can bring it back) while no new
    /// evidence revives it (>= 0). After that a run deletes it, unless it has feedback or a
    /// merged row points into it: the episodes it was learned from stay, and if the pattern
    /// is observed again it comes back as a new one. 0 lets the next run delete what this
    /// one pruned.
    pub pruned_rows_kept_days: f64,
    /// Word-set (Jaccard) similarity at or above which two texts are near-duplicates, used
    /// without an embedder (0 < x <= 1).
    pub lexical_similarity: f64,
    /// Cosine similarity of embeddings at or above which two texts are near-duplicates, used
    /// with an embedder (0 < x <= 1).
    pub semantic_similarity: f64,
    /// Similarity of two tool sequences (twice their longest common subsequence over their
    /// total length) at or above which a variant that stopped recurring is folded into a
    /// sequence of its context with as much evidence (0 < x <= 1).
    pub sequence_similarity: f64,
    /// Most patterns and most heuristics (the most seen; pruned ones without new evidence left
    /// out) one run merges and rates by feedback as one group (1 ..= 100,000); the rest are
    /// revived, decayed and pruned a page at a time, so every item is examined.
    pub max_items: u32,
    /// Completed episodes the metrics snapshot's rates look at (1 ..= 100,000).
    pub metrics_window: u32,
    /// Estimate records per domain the calibration looks at (1 ..= 100,000).
    pub calibration_window: u32,
    /// Estimate records with actuals a domain needs before its correction applies
    /// (1 ..= 100,000).
    pub calibration_min_samples: u32,
}

impl Default for ConsolidationConfig {
    fn default() -> Self {
        ConsolidationConfig {
            schedule: true,
            interval: Duration::from_secs(3600),
            prune_confidence_floor: 0.05,
            prune_use_floor: 1.0,
            restore_grace_days: 30.0,
            merged_rows_kept_days: 7.0,
            pruned_rows_kept_days: 90.0,
            lexical_similarity: 0.8,
            semantic_similarity: 0.92,
            sequence_similarity: 0.75,
            max_items: 10_000,
            metrics_window: 200,
            calibration_window: 50,
            calibration_min_samples: 3,
        }
    }
}

fn check_unit(field: &str, v: f64, zero_ok: bool) -> Result<()> {
    let ok = v.is_finite() && v <= 1.0 && if zero_ok { v >= 0.0 } else { v > 0.0 };
    if ok {
        Ok(())
    } else {
        let range = if zero_ok { "0 ..= 1" } else { "0 < x <= 1" };
        Err(Error::invalid(
            field,
            format!("must be in {range}, got {v}"),
        ))
    }
}

fn check_count(field: &str, v: u32) -> Result<()> {
    if (1..=MAX_CONSOLIDATION_ITEMS).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be in 1 ..= {MAX_CONSOLIDATION_ITEMS}, got {v}"),
        ))
    }
}

impl ConsolidationConfig {
    /// Checks every setting against its documented range.
    pub fn validate(&self) -> Result<()> {
        if !(MIN_CONSOLIDATION_INTERVAL..=MAX_CONSOLIDATION_INTERVAL).contains(&self.interval) {
            return Err(Error::invalid(
                "consolidation.interval",
                format!(
                    "must be between 1 s and 30 days, got {} ms",
                    self.interval.as_millis()
                ),
            ));
        }
        check_unit(
            "consolidation.prune_confidence_floor",
            self.prune_confidence_floor,
            true,
        )?;
        for (field, v) in [
            ("consolidation.prune_use_floor", self.prune_use_floor),
            ("consolidation.restore_grace_days", self.restore_grace_days),
            (
                "consolidation.merged_rows_kept_days",
                self.merged_rows_kept_days,
            ),
            (
                "consolidation.pruned_rows_kept_days",
                self.pruned_rows_kept_days,
            ),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(
                    field,
                    format!("must be a finite number >= 0, got {v}"),
                ));
            }
        }
        check_unit(
            "consolidation.lexical_similarity",
            self.lexical_similarity,
            false,
        )?;
        check_unit(
            "consolidation.sequence_similarity",
            self.sequence_similarity,
            false,
        )?;
        check_unit(
            "consolidation.semantic_similarity",
            self.semantic_similarity,
            false,
        )?;
        check_count("consolidation.max_items", self.max_items)?;
        check_count("consolidation.metrics_window", self.metrics_window)?;
        check_count("consolidation.calibration_window", self.calibration_window)?;
        check_count(
            "consolidation.calibration_min_samples",
            self.calibration_min_samples,
        )
    }

    /// Sets whether the background schedule runs.
    #[must_use]
    pub fn with_schedule(mut self, on: bool) -> Self {
        self.schedule = on;
        self
    }

    /// Sets the schedule's interval.
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

/// Retention per kind of data.
///
/// Off by default: compaction removes data for good (the step outputs of successful
/// episodes), so it runs only when the operator chooses an age. Episodes, their steps' tools,
/// actions, parameters and errors, rewards, reflections, patterns, heuristics and failure
/// lessons are always kept; failed and partially successful episodes are never compacted.
///
/// # Default
/// `compact_step_outputs_after_days` unset (off); `max_episodes_per_run` 1,000.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Empty the raw outputs of the successful steps of successful episodes completed more than
    /// this many days ago (1 ..= 36,500).
    pub compact_step_outputs_after_days: Option<u32>,
    /// Most episodes one run compacts (1 ..= 100,000); the rest wait for the next run.
    pub max_episodes_per_run: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            compact_step_outputs_after_days: None,
            max_episodes_per_run: 1000,
        }
    }
}

impl RetentionConfig {
    /// Checks every setting against its documented range.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.compact_step_outputs_after_days
            && !(1..=MAX_RETENTION_DAYS).contains(&d)
        {
            return Err(Error::invalid(
                "retention.compact_step_outputs_after_days",
                format!("must be in 1 ..= {MAX_RETENTION_DAYS}, got {d}"),
            ));
        }
        check_count("retention.max_episodes_per_run", self.max_episodes_per_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_limits_are_enforced_at_the_limit_and_one_past_it() {
        let ok = ConsolidationConfig::default();
        assert!(ok.validate().is_ok());
        let at = |f: fn(&mut ConsolidationConfig)| {
            let mut c = ConsolidationConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(at(|c| c.max_items = MAX_CONSOLIDATION_ITEMS).is_ok());
        assert!(at(|c| c.max_items = MAX_CONSOLIDATION_ITEMS + 1).is_err());
        assert!(at(|c| c.max_items = 0).is_err());
        assert!(at(|c| c.metrics_window = MAX_CONSOLIDATION_ITEMS).is_ok());
        assert!(at(|c| c.metrics_window = MAX_CONSOLIDATION_ITEMS + 1).is_err());
        assert!(at(|c| c.calibration_window = MAX_CONSOLIDATION_ITEMS + 1).is_err());
        assert!(at(|c| c.calibration_min_samples = MAX_CONSOLIDATION_ITEMS + 1).is_err());
        assert!(at(|c| c.interval = MAX_CONSOLIDATION_INTERVAL).is_ok());
        assert!(
            at(|c| c.interval = MAX_CONSOLIDATION_INTERVAL + Duration::from_millis(1)).is_err()
        );
        assert!(at(|c| c.interval = MIN_CONSOLIDATION_INTERVAL).is_ok());
        assert!(
            at(|c| c.interval =
                MIN_CONSOLIDATION_INTERVAL.saturating_sub(Duration::from_millis(1)))
            .is_err()
        );
        assert!(at(|c| c.prune_confidence_floor = 1.0).is_ok());
        assert!(at(|c| c.prune_confidence_floor = 1.000_001).is_err());
        assert!(at(|c| c.lexical_similarity = 0.0).is_err());
        assert!(at(|c| c.sequence_similarity = 0.0).is_err());
        assert!(at(|c| c.sequence_similarity = 1.0).is_ok());
        assert!(at(|c| c.sequence_similarity = 1.0 + f64::EPSILON).is_err());
        assert!(at(|c| c.semantic_similarity = f64::NAN).is_err());
        assert!(at(|c| c.prune_use_floor = -0.1).is_err());
        assert!(at(|c| c.merged_rows_kept_days = 0.0).is_ok());
        assert!(at(|c| c.merged_rows_kept_days = -f64::MIN_POSITIVE).is_err());
        assert!(at(|c| c.merged_rows_kept_days = f64::INFINITY).is_err());
        assert!(at(|c| c.merged_rows_kept_days = f64::MAX).is_ok());
        assert!(at(|c| c.pruned_rows_kept_days = 0.0).is_ok());
        assert!(at(|c| c.pruned_rows_kept_days = -f64::MIN_POSITIVE).is_err());
        assert!(at(|c| c.pruned_rows_kept_days = f64::NAN).is_err());
        assert!(at(|c| c.pruned_rows_kept_days = f64::MAX).is_ok());
        let r = |d: Option<u32>, n: u32| {
            RetentionConfig {
                compact_step_outputs_after_days: d,
                max_episodes_per_run: n,
            }
            .validate()
        };
        assert!(r(None, 1000).is_ok());
        assert!(r(Some(MAX_RETENTION_DAYS), 1).is_ok());
        assert!(r(Some(MAX_RETENTION_DAYS + 1), 1).is_err());
        assert!(r(Some(0), 1).is_err());
        assert!(r(None, MAX_CONSOLIDATION_ITEMS).is_ok());
        assert!(r(None, MAX_CONSOLIDATION_ITEMS + 1).is_err());
    }
}
