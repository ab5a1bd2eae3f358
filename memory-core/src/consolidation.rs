//! Consolidation, retention and calibration: the settings and the pure decisions (which items
//! are near-duplicates, how evidence moves in a merge, what to prune, how estimates are
//! corrected). The facade (`SelfLearningMemory::consolidate`) loads, decides here, and writes.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::confidence::decay_factor;
use crate::error::{Error, Result};
use crate::heuristic::Heuristic;
use crate::learned::{LearnedStatus, push_recent};
use crate::maintenance::{EstimateRecord, MetricsSnapshot, RestoreRecord};
use crate::pattern::{Effectiveness, Pattern, PatternKind};
use crate::retrieval::recommend::{Estimate, EstimateCorrection};
use crate::text::tokenize;

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
/// (decayed episodes of evidence); `restore_grace_days` 30; `lexical_similarity` 0.8
/// (Jaccard of words); `semantic_similarity` 0.92 (cosine); `max_items` 10,000 per kind and
/// run; `metrics_window` 200 episodes; `calibration_window` 50 estimates;
/// `calibration_min_samples` 3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsolidationConfig {
    /// Run consolidation in the background every `interval` (every namespace in storage).
    pub schedule: bool,
    /// Time between scheduled runs (1 s ..= 30 days); the first runs one interval after start.
    #[serde(with = "crate::memory::config::duration_ms")]
    pub interval: Duration,
    /// An active item is pruned when its decayed confidence is below this (0 ..= 1) ...
    pub prune_confidence_floor: f64,
    /// ... and its decayed use (episodes of evidence plus feedback events, times the decay
    /// factor) is below this (>= 0).
    pub prune_use_floor: f64,
    /// Days after a `restore` during which consolidation does not prune the item again (>= 0).
    pub restore_grace_days: f64,
    /// Word-set (Jaccard) similarity at or above which two texts are near-duplicates, used
    /// without an embedder (0 < x <= 1).
    pub lexical_similarity: f64,
    /// Cosine similarity of embeddings at or above which two texts are near-duplicates, used
    /// with an embedder (0 < x <= 1).
    pub semantic_similarity: f64,
    /// Most patterns and most heuristics one run examines (1 ..= 100,000).
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
            lexical_similarity: 0.8,
            semantic_similarity: 0.92,
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

/// Jaccard similarity of the word sets of two texts (words as [`tokenize`] finds them), in
/// [0, 1]; 1 for two texts without words.
///
/// ```
/// use memory_core::lexical_similarity;
/// assert_eq!(lexical_similarity("cargo build fails", "the cargo build fails"), 1.0);
/// assert!(lexical_similarity("cargo build fails", "pytest times out") < 0.2);
/// ```
pub fn lexical_similarity(a: &str, b: &str) -> f64 {
    let mut x = tokenize(a);
    let mut y = tokenize(b);
    x.sort();
    x.dedup();
    y.sort();
    y.dedup();
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    let common = x.iter().filter(|w| y.binary_search(w).is_ok()).count();
    let union = x.len() + y.len() - common;
    common as f64 / union as f64
}

/// The part of a pattern two near-duplicates must share exactly (kind, context and tools), and
/// the wording that may differ. `None` for kinds whose identity already covers everything
/// (tool sequences and context statistics: equal ones have equal ids).
pub fn pattern_merge_key(p: &Pattern) -> Option<(String, String)> {
    let ctx = p.context.signature();
    match &p.kind {
        PatternKind::DecisionPoint { condition, choice } => {
            Some((format!("dec|{ctx}|{choice}"), condition.clone()))
        }
        PatternKind::ErrorRecovery {
            failed_tool,
            error_class,
            recovery,
        } => Some((
            format!("rec|{ctx}|{failed_tool}|{}", recovery.join(">")),
            error_class.clone(),
        )),
        PatternKind::ToolSequence { .. } | PatternKind::ContextPattern { .. } => None,
    }
}

/// The part of a heuristic two near-duplicates must share exactly (context and action), and
/// the condition wording that may differ.
pub fn heuristic_merge_key(h: &Heuristic) -> (String, String) {
    (
        format!("{}|{}", h.context.signature(), h.action),
        h.condition.clone(),
    )
}

/// Moves `loser`'s evidence into `survivor` (counts summed, time span widened, recent
/// evidence united) and marks `loser` merged into it. The loser keeps its identity, wording
/// and recent-evidence list; its counts move (are zeroed), so evidence that still arrives
/// under its id can be forwarded by a later run without counting anything twice.
pub fn merge_pattern_into(survivor: &mut Pattern, loser: &mut Pattern, at: DateTime<Utc>) {
    survivor.occurrences += loser.occurrences;
    survivor.successes += loser.successes;
    survivor.total_steps += loser.total_steps;
    survivor.total_latency_ms += loser.total_latency_ms;
    if loser.occurrences > 0 {
        survivor.first_seen = survivor.first_seen.min(loser.first_seen);
        survivor.last_seen = survivor.last_seen.max(loser.last_seen);
    }
    for e in &loser.recent_evidence {
        push_recent(&mut survivor.recent_evidence, *e);
    }
    loser.occurrences = 0;
    loser.successes = 0;
    loser.total_steps = 0;
    loser.total_latency_ms = 0;
    loser.effectiveness = Effectiveness::default();
    if !matches!(&loser.status, LearnedStatus::Merged { into, .. } if *into == survivor.id.0) {
        loser.status = LearnedStatus::Merged {
            into: survivor.id.0.clone(),
            at,
        };
    }
}

/// [`merge_pattern_into`] for heuristics: support, against and votes move.
pub fn merge_heuristic_into(survivor: &mut Heuristic, loser: &mut Heuristic, at: DateTime<Utc>) {
    let had_evidence = loser.support + loser.against > 0;
    survivor.support += loser.support;
    survivor.against += loser.against;
    survivor.votes_up += loser.votes_up;
    survivor.votes_down += loser.votes_down;
    if had_evidence {
        survivor.first_seen = survivor.first_seen.min(loser.first_seen);
        survivor.last_seen = survivor.last_seen.max(loser.last_seen);
    }
    for e in &loser.recent_evidence {
        push_recent(&mut survivor.recent_evidence, *e);
    }
    loser.support = 0;
    loser.against = 0;
    loser.votes_up = 0;
    loser.votes_down = 0;
    if !matches!(&loser.status, LearnedStatus::Merged { into, .. } if *into == survivor.id.0) {
        loser.status = LearnedStatus::Merged {
            into: survivor.id.0.clone(),
            at,
        };
    }
}

/// Decayed use of an item: its episodes of evidence plus feedback events, times the decay
/// factor of its latest evidence.
pub fn decayed_use(uses: u64, last_seen: DateTime<Utc>, now: DateTime<Utc>, half_life: f64) -> f64 {
    uses as f64 * decay_factor(last_seen, now, half_life)
}

/// Whether `target` was restored within the grace period before `now`.
pub fn recently_restored(
    restores: &[RestoreRecord],
    target: &crate::FeedbackTarget,
    now: DateTime<Utc>,
    grace_days: f64,
) -> bool {
    restores.iter().any(|r| {
        &r.target == target
            && (now - r.restored_at).num_milliseconds() as f64 / 86_400_000.0 < grace_days
    })
}

/// The per-domain correction from `records` (estimate records with actuals, any order): the
/// mean ratio actual / raw estimate for steps and for duration, over records that have both.
pub fn correction_from(domain: &str, records: &[EstimateRecord]) -> EstimateCorrection {
    let mut steps = Vec::new();
    let mut durations = Vec::new();
    for r in records {
        let Some(a) = &r.actual else { continue };
        if let Some(raw) = r.raw_steps().filter(|s| *s > 0.0) {
            steps.push(f64::from(a.steps) / raw);
        }
        if let Some(raw) = r.raw_duration_ms().filter(|d| *d > 0.0) {
            durations.push(a.duration_ms / raw);
        }
    }
    let mean = |v: &[f64]| {
        (!v.is_empty()).then(|| (v.iter().sum::<f64>() / v.len() as f64).clamp(0.1, 10.0))
    };
    EstimateCorrection {
        domain: domain.to_owned(),
        steps_ratio: mean(&steps),
        duration_ratio: mean(&durations),
        sample_size: records.iter().filter(|r| r.actual.is_some()).count(),
        raw_expected_steps: None,
        raw_expected_duration_ms: None,
    }
}

/// Applies a correction to a raw estimate when it rests on at least `min_samples` records.
/// The raw figures are kept in the estimate's `correction`.
pub fn calibrate(
    mut estimate: Estimate,
    correction: EstimateCorrection,
    min_samples: usize,
) -> Estimate {
    if correction.sample_size < min_samples
        || (correction.steps_ratio.is_none() && correction.duration_ratio.is_none())
    {
        return estimate;
    }
    let raw_steps = estimate.expected_steps;
    let raw_duration = estimate.expected_duration_ms;
    if let (Some(s), Some(r)) = (raw_steps, correction.steps_ratio) {
        estimate.expected_steps = Some(s * r);
    }
    if let (Some(d), Some(r)) = (raw_duration, correction.duration_ratio) {
        estimate.expected_duration_ms = Some(d * r);
    }
    let _ = write!(
        estimate.why,
        "; calibrated for {} by the mean actual/estimated ratio of {} episode(s) (steps x{:.2})",
        correction.domain,
        correction.sample_size,
        correction.steps_ratio.unwrap_or(1.0)
    );
    estimate.correction = Some(EstimateCorrection {
        raw_expected_steps: raw_steps,
        raw_expected_duration_ms: raw_duration,
        ..correction
    });
    estimate
}

/// Mean relative step error `|actual - shown| / max(actual, 1)` of the records with actuals,
/// and how many there were.
pub fn estimate_error(records: &[EstimateRecord]) -> (Option<f64>, u64) {
    let errors: Vec<f64> = records
        .iter()
        .filter_map(|r| {
            let a = r.actual.as_ref()?;
            let shown = r.estimate.expected_steps?;
            let actual = f64::from(a.steps);
            Some((actual - shown).abs() / actual.max(1.0))
        })
        .collect();
    let n = errors.len() as u64;
    let mean = (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64);
    (mean, n)
}

/// The direction of a metric between the oldest and newest of `series` (newest first), for
/// `memory stats`: `up`, `down`, `flat` or `n/a`.
pub fn trend(
    series: &[MetricsSnapshot],
    metric: impl Fn(&MetricsSnapshot) -> Option<f64>,
) -> &'static str {
    let newest = series.first().and_then(&metric);
    let oldest = series.last().and_then(&metric);
    match (newest, oldest) {
        (Some(n), Some(o)) if series.len() > 1 => {
            if (n - o).abs() < 1e-9 {
                "flat"
            } else if n > o {
                "up"
            } else {
                "down"
            }
        }
        _ => "n/a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::EpisodeId;
    use crate::maintenance::EstimateActual;
    use crate::pattern::PatternObservation;
    use crate::signature::ContextKey;

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + days * 86_400, 0).unwrap_or_default()
    }

    fn decision(condition: &str, n: u64) -> Pattern {
        let kind = PatternKind::DecisionPoint {
            condition: condition.to_owned(),
            choice: "cargo".to_owned(),
        };
        let mut p = Pattern::from_observation(&PatternObservation::new(
            kind.clone(),
            ContextKey::default(),
            EpisodeId::new(),
            true,
            t(0),
        ));
        for i in 1..n {
            p.absorb(&PatternObservation::new(
                kind.clone(),
                ContextKey::default(),
                EpisodeId::new(),
                i % 2 == 0,
                t(i as i64),
            ));
        }
        p
    }

    #[test]
    fn merging_sums_evidence_and_is_not_repeated() {
        let mut a = decision("opening move of a testing task", 3);
        let mut b = decision("the opening move of a testing task", 2);
        assert_eq!(
            pattern_merge_key(&a).map(|k| k.0),
            pattern_merge_key(&b).map(|k| k.0)
        );
        assert!(
            lexical_similarity(
                &pattern_merge_key(&a).unwrap_or_default().1,
                &pattern_merge_key(&b).unwrap_or_default().1
            ) >= 0.8
        );
        let (occ, succ) = (a.occurrences + b.occurrences, a.successes + b.successes);
        merge_pattern_into(&mut a, &mut b, t(10));
        assert_eq!((a.occurrences, a.successes), (occ, succ));
        assert_eq!(b.occurrences, 0);
        assert!(matches!(&b.status, LearnedStatus::Merged { into, .. } if *into == a.id.0));
        let before = a.clone();
        let status = b.status.clone();
        merge_pattern_into(&mut a, &mut b, t(11));
        assert_eq!(a, before, "forwarding an emptied loser adds nothing");
        assert_eq!(
            b.status, status,
            "the merge time of the first merge is kept"
        );
    }

    #[test]
    fn calibration_moves_toward_actuals() {
        let raw = Estimate {
            expected_steps: Some(3.0),
            expected_duration_ms: Some(1000.0),
            success_chance: Some(0.8),
            sample_size: 4,
            why: "x".into(),
            correction: None,
        };
        let records: Vec<EstimateRecord> = (0..3)
            .map(|i| EstimateRecord {
                episode_id: EpisodeId::new(),
                domain: "d".into(),
                recorded_at: t(i),
                estimate: raw.clone(),
                actual: Some(EstimateActual {
                    steps: 6,
                    duration_ms: 2000.0,
                    success: true,
                    completed_at: t(i),
                }),
            })
            .collect();
        let c = correction_from("d", &records);
        assert_eq!(c.steps_ratio, Some(2.0));
        assert_eq!(calibrate(raw.clone(), c.clone(), 4), raw, "too few samples");
        let cal = calibrate(raw, c, 3);
        assert_eq!(cal.expected_steps, Some(6.0));
        assert_eq!(cal.expected_duration_ms, Some(2000.0));
        assert_eq!(
            cal.correction.as_ref().and_then(|c| c.raw_expected_steps),
            Some(3.0)
        );
        let (err, n) = estimate_error(&records);
        assert_eq!((err, n), (Some(0.5), 3));
    }

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
        assert!(at(|c| c.semantic_similarity = f64::NAN).is_err());
        assert!(at(|c| c.prune_use_floor = -0.1).is_err());
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
