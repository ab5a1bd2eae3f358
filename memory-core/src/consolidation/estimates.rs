//! Estimate calibration: per-domain corrections from estimate records with actuals.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::config::ConsolidationConfig;
use crate::episode::{Episode, Outcome};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::records::{Estimate, EstimateActual, EstimateCorrection, EstimateRecord};
use crate::storage::Storage;

/// `InvalidInput` for negative or non-finite figures or a chance outside 0 ..= 1,
/// `LimitExceeded` for a `why` longer than `max_why` bytes.
pub(crate) fn check_estimate(estimate: &Estimate, max_why: usize) -> Result<()> {
    let bad = |v: Option<f64>| v.is_some_and(|x| !x.is_finite() || x < 0.0);
    if bad(estimate.expected_steps) || bad(estimate.expected_duration_ms) {
        return Err(Error::invalid(
            "estimate",
            "expected steps and duration must be finite and >= 0",
        ));
    }
    if estimate
        .success_chance
        .is_some_and(|c| !(0.0..=1.0).contains(&c))
    {
        return Err(Error::invalid(
            "estimate.success_chance",
            "must be in 0 ..= 1",
        ));
    }
    if estimate.why.len() > max_why {
        return Err(Error::LimitExceeded {
            field: "estimate.why",
            limit: max_why as u64,
            actual: estimate.why.len() as u64,
        });
    }
    Ok(())
}

/// What actually happened in `episode` (its steps so far), ending with `outcome` at
/// `completed_at`: stored with its estimate record, if one is open, by the completion's
/// transaction.
pub(crate) fn estimate_actual(
    episode: &Episode,
    outcome: &Outcome,
    completed_at: DateTime<Utc>,
) -> EstimateActual {
    EstimateActual {
        steps: u32::try_from(episode.steps.len()).unwrap_or(u32::MAX),
        duration_ms: (completed_at - episode.started_at)
            .num_milliseconds()
            .max(0) as f64,
        success: outcome.is_success(),
        completed_at,
    }
}

/// The estimate corrected by the domain's mean actual / estimated ratio, when the domain has
/// enough estimate records; the raw estimate otherwise (also when they cannot be read).
pub(crate) async fn calibrated(
    storage: &dyn Storage,
    cfg: &ConsolidationConfig,
    ns: &Namespace,
    domain: Option<&str>,
    raw: Estimate,
) -> Estimate {
    let Some(domain) = domain.filter(|d| !d.is_empty()) else {
        return raw;
    };
    if raw.expected_steps.is_none() && raw.expected_duration_ms.is_none() {
        return raw;
    }
    match storage
        .query_estimates(ns, Some(domain), cfg.calibration_window)
        .await
    {
        Ok(records) => calibrate(
            raw,
            correction_from(domain, &records),
            cfg.calibration_min_samples as usize,
        ),
        Err(e) => {
            warn!(error = %e, "estimate records unavailable; estimate not calibrated");
            raw
        }
    }
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

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;
    use crate::episode::EpisodeId;

    fn t(days: i64) -> DateTime<chrono::Utc> {
        DateTime::from_timestamp(1_750_000_000 + days * 86_400, 0).unwrap_or_default()
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
}
