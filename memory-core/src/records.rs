//! What consolidation, retention, learning metrics and estimate calibration store: run records,
//! metrics snapshots, estimates and their records, restore records and step compaction counts.
//!
//! The logic that produces them lives in `consolidation`; backends store them through
//! [`MaintenanceStore`](crate::storage::MaintenanceStore).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::FeedbackTarget;

/// One consolidation run, as recorded in the `consolidation_runs` table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsolidationRun {
    /// Unique id of the run (UUID v7, time-ordered).
    pub id: String,
    /// `manual` (`consolidate()` / `memory consolidate`) or `scheduled`.
    pub trigger: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// Patterns marked merged into a near-duplicate.
    pub merged_patterns: u64,
    /// Heuristics marked merged into a near-duplicate.
    pub merged_heuristics: u64,
    /// General rules made or brought back into use: rules that agree across the contexts of
    /// a language or a domain, summed into one rule there.
    pub generalized_heuristics: u64,
    /// Patterns and heuristics that stay active but whose confidence is decayed by at least
    /// one half-life (decay is applied whenever confidence is read; this counts how many
    /// items it holds back without pruning them).
    pub decayed: u64,
    /// Patterns tombstoned (status `pruned`) for low confidence and use.
    pub pruned_patterns: u64,
    /// Heuristics tombstoned for low confidence and use.
    pub pruned_heuristics: u64,
    /// Pruned items made active again because new evidence arrived after they were pruned.
    pub revived: u64,
    /// Merged items whose newly arrived evidence was forwarded to their survivor.
    pub forwarded: u64,
    /// Patterns and heuristics whose effectiveness or votes were recomputed to a new value
    /// from the feedback (usage) events.
    pub effectiveness_updated: u64,
    /// Rows of patterns merged into another that held no evidence (their counts live on in
    /// the survivor), no feedback and no merge pointer of another row, deleted.
    pub compacted_merged: u64,
    /// Rows of patterns pruned more than `pruned_rows_kept_days` before the run and not seen
    /// since, with no feedback and no merge pointer of another row, deleted.
    pub compacted_pruned: u64,
    /// Retention: episodes whose step outputs were compacted.
    pub compacted_episodes: u64,
    /// Retention: step outputs emptied.
    pub compacted_steps: u64,
    /// Retention: bytes of step output removed.
    pub compacted_bytes: u64,
    /// Items the run changed but did not write, because another writer (a completion, in
    /// this or another process) changed one of them, or one merged with it, after the run
    /// read them: left as that writer left them, for the next run. The counts above are
    /// what the run decided, these included.
    pub left_to_next_run: u64,
}

impl ConsolidationRun {
    /// True when the run changed stored learned items or step outputs.
    pub fn changed_anything(&self) -> bool {
        self.merged_patterns
            + self.merged_heuristics
            + self.generalized_heuristics
            + self.pruned_patterns
            + self.pruned_heuristics
            + self.revived
            + self.forwarded
            + self.effectiveness_updated
            + self.compacted_steps
            + self.compacted_merged
            + self.compacted_pruned
            > 0
    }
}

/// A snapshot of how well a namespace is learning, taken by each consolidation run.
///
/// Rates are over the last `metrics_window` completed episodes (see `ConsolidationConfig`)
/// unless said otherwise; `None` where there is nothing to measure yet.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsSnapshot {
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
    /// Episodes recorded (all time).
    pub episodes: u64,
    /// Completed episodes (all time).
    pub completed: u64,
    /// Completed episodes in the window.
    pub window: u64,
    /// Share of the window's episodes that succeeded.
    pub success_rate: Option<f64>,
    /// Mean reward of the window's episodes.
    pub mean_reward: Option<f64>,
    /// Active patterns.
    pub patterns_active: u64,
    /// Pruned patterns.
    pub patterns_pruned: u64,
    /// Active heuristics.
    pub heuristics_active: u64,
    /// Pruned heuristics.
    pub heuristics_pruned: u64,
    /// Share of tool-sequence observations that repeated a sequence already learned in the
    /// same context (every occurrence of a tool-sequence pattern after its first), all time.
    pub pattern_reuse_rate: Option<f64>,
    /// Share of failure occurrences that repeated a failure already recorded as a lesson
    /// (every occurrence of a lesson after its first), all time.
    pub repeated_failure_rate: Option<f64>,
    /// Mean relative error of the step estimates shown before the window's episodes,
    /// `|actual - estimated| / actual`, over estimate records with actuals.
    pub estimate_error: Option<f64>,
    /// How many estimate records `estimate_error` is computed from.
    pub estimates_compared: u64,
}

/// What actually happened in an episode that followed an estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateActual {
    /// Steps taken.
    pub steps: u32,
    /// Milliseconds from start to completion.
    pub duration_ms: f64,
    /// Whether it succeeded.
    pub success: bool,
    /// When it completed.
    pub completed_at: DateTime<Utc>,
}

/// A recommendation's estimate stored with the episode that followed it, and (once the episode
/// completes) the actual values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateRecord {
    /// The episode that followed the recommendation.
    pub episode_id: EpisodeId,
    /// The episode's domain: calibration is per domain.
    pub domain: String,
    /// When the estimate was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The estimate as shown (calibrated if a correction applied; the raw figures are in
    /// its `correction`).
    pub estimate: Estimate,
    /// Set when the episode completed.
    pub actual: Option<EstimateActual>,
}

impl EstimateRecord {
    /// Steps estimated before calibration (what the correction ratio is computed against).
    pub fn raw_steps(&self) -> Option<f64> {
        self.estimate
            .correction
            .as_ref()
            .map_or(self.estimate.expected_steps, |c| c.raw_expected_steps)
    }

    /// Duration estimated before calibration.
    pub fn raw_duration_ms(&self) -> Option<f64> {
        self.estimate
            .correction
            .as_ref()
            .map_or(self.estimate.expected_duration_ms, |c| {
                c.raw_expected_duration_ms
            })
    }
}

/// What one retention pass compacted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StepCompaction {
    /// Episodes touched.
    pub episode_ids: Vec<EpisodeId>,
    /// Step outputs emptied.
    pub steps: u64,
    /// Bytes of output removed.
    pub bytes: u64,
}

/// A pruned item brought back by `restore`; consolidation leaves it alone for the restore
/// grace period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// The item.
    pub target: FeedbackTarget,
    /// When it was restored.
    pub restored_at: DateTime<Utc>,
}

/// What the task will likely take, from the similar episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Median steps of the similar episodes that succeeded (all of them if none did).
    pub expected_steps: Option<f64>,
    /// Median duration, in milliseconds.
    pub expected_duration_ms: Option<f64>,
    /// Chance of success: `(successes + 1) / (n + 2)` over the similar episodes.
    pub success_chance: Option<f64>,
    /// How many similar episodes back the figures.
    pub sample_size: usize,
    /// Where the figures come from.
    pub why: String,
    /// The per-domain calibration applied to the figures, if any (see
    /// `SelfLearningMemory::record_estimate`).
    #[serde(default)]
    pub correction: Option<EstimateCorrection>,
}

/// A per-domain correction of estimates: the mean ratio actual / estimated over the domain's
/// recent episodes that followed an estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateCorrection {
    /// The domain.
    pub domain: String,
    /// Mean of actual steps / estimated (raw) steps.
    pub steps_ratio: Option<f64>,
    /// Mean of actual duration / estimated (raw) duration.
    pub duration_ratio: Option<f64>,
    /// Episodes the ratios are computed from.
    pub sample_size: usize,
    /// The steps estimate before the correction.
    pub raw_expected_steps: Option<f64>,
    /// The duration estimate before the correction.
    pub raw_expected_duration_ms: Option<f64>,
}
