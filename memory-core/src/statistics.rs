//! Small statistics: the Wilson lower bound, half-life decay, the Beta mean, the median.

use chrono::{DateTime, Utc};

/// z for a 95% one-sided-ish interval; the usual choice for ranking by the Wilson bound.
const Z: f64 = 1.96;

/// Lower bound of the Wilson score interval for `successes` out of `trials`, in [0, 1].
///
/// Few observations give a low bound even at a 100% rate, so evidence, not luck, earns
/// confidence.
pub(crate) fn wilson_lower_bound(successes: u64, trials: u64) -> f64 {
    if trials == 0 {
        return 0.0;
    }
    let n = trials as f64;
    let p = (successes.min(trials) as f64) / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let margin = Z * ((p * (1.0 - p) + z2 / (4.0 * n)) / n).sqrt();
    ((centre - margin) / (1.0 + z2 / n)).clamp(0.0, 1.0)
}

/// Multiplier in (0, 1] for evidence last seen at `last_seen`: halves every `half_life_days`.
///
/// Times in the future count as age zero; a non-positive half-life disables decay.
pub(crate) fn decay_factor(
    last_seen: DateTime<Utc>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> f64 {
    if half_life_days <= 0.0 || !half_life_days.is_finite() {
        return 1.0;
    }
    let age_days = (now - last_seen).num_milliseconds().max(0) as f64 / 86_400_000.0;
    0.5f64.powf(age_days / half_life_days).clamp(0.0, 1.0)
}

/// Posterior mean of a Beta(1, 1) prior updated with `up` and `down` votes, in (0, 1).
pub(crate) fn beta_mean(up: u64, down: u64) -> f64 {
    (up as f64 + 1.0) / (up as f64 + down as f64 + 2.0)
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    #[allow(clippy::float_cmp, reason = "exact values: 1 and 0")]
    fn wilson_bound_needs_evidence() {
        assert_eq!(wilson_lower_bound(0, 0), 0.0);
        assert!(wilson_lower_bound(3, 3) < wilson_lower_bound(30, 30));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    proptest! {
        #[test]
        fn bounded(s in 0u64..10_000, extra in 0u64..10_000, days in 0i64..100_000, hl in -10.0f64..1000.0) {
            let w = wilson_lower_bound(s, s + extra);
            prop_assert!((0.0..=1.0).contains(&w));
            let now = Utc::now();
            let d = decay_factor(now - chrono::Duration::days(days), now, hl);
            prop_assert!((0.0..=1.0).contains(&d));
        }
    }

    #[test]
    fn decay_halves_per_half_life() {
        let now = Utc::now();
        let d = decay_factor(now - chrono::Duration::days(30), now, 30.0);
        assert!((d - 0.5).abs() < 1e-9);
        assert!((decay_factor(now, now, 30.0) - 1.0).abs() < 1e-12);
    }
}
