//! The learning curve the web view charts: how completed episodes fared over time (success
//! rate and mean reward per hour, day or week), from the most recent ones.

use chrono::{DateTime, Duration, DurationRound, Utc};
use memory_core::{EpisodeFilter, EpisodeQuery, EpisodeStatus, OutcomeKind};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ToolFailure;
use crate::server::MemoryServer;

/// The most recent completed episodes a curve is drawn from.
pub(crate) const MAX_CURVE_EPISODES: u32 = 10_000;

/// Episodes read per page.
const PAGE: u32 = 500;

/// One completed episode, as the curve counts it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completed {
    pub at: DateTime<Utc>,
    pub outcome: OutcomeKind,
    pub reward: Option<f64>,
}

/// One point of the curve: the episodes completed in `[start, start + width)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Bucket {
    pub start: DateTime<Utc>,
    pub episodes: u32,
    pub successes: u32,
    pub partial: u32,
    pub failures: u32,
    /// Successes over the episodes with an outcome other than abstained; `None` without any.
    pub success_rate: Option<f64>,
    /// Mean reward of those that have one; `None` without any.
    pub mean_reward: Option<f64>,
}

/// The bucket width for a span of time: hours up to two days, days up to four months, then
/// weeks (at most about a hundred and twenty points for a few years).
fn width_for(span: Duration) -> (&'static str, Duration) {
    if span <= Duration::hours(48) {
        ("hour", Duration::hours(1))
    } else if span <= Duration::days(120) {
        ("day", Duration::days(1))
    } else {
        ("week", Duration::weeks(1))
    }
}

/// The curve of `episodes` (any order): its bucket width's name and the buckets, oldest
/// first, empty ones included so that the time axis is even.
pub(crate) fn buckets(episodes: &[Completed]) -> (&'static str, Vec<Bucket>) {
    let (Some(first), Some(last)) = (
        episodes.iter().map(|e| e.at).min(),
        episodes.iter().map(|e| e.at).max(),
    ) else {
        return ("day", Vec::new());
    };
    let (name, width) = width_for(last - first);
    let origin = first.duration_trunc(width).unwrap_or(first);
    let count = ((last - origin).num_seconds() / width.num_seconds()).max(0) as usize + 1;
    let mut sums: Vec<(Bucket, f64, u32)> = (0..count)
        .map(|i| {
            let bucket = Bucket {
                start: origin + width * i as i32,
                episodes: 0,
                successes: 0,
                partial: 0,
                failures: 0,
                success_rate: None,
                mean_reward: None,
            };
            (bucket, 0.0, 0)
        })
        .collect();
    for e in episodes {
        let i = ((e.at - origin).num_seconds() / width.num_seconds()) as usize;
        let Some((b, reward_sum, rewarded)) = sums.get_mut(i) else {
            continue;
        };
        b.episodes += 1;
        match e.outcome {
            OutcomeKind::Success => b.successes += 1,
            OutcomeKind::PartialSuccess => b.partial += 1,
            OutcomeKind::Failure => b.failures += 1,
            OutcomeKind::Abstained => {}
        }
        if let Some(r) = e.reward {
            *reward_sum += r;
            *rewarded += 1;
        }
    }
    let points = sums
        .into_iter()
        .map(|(mut b, reward_sum, rewarded)| {
            let decided = b.successes + b.partial + b.failures;
            b.success_rate = (decided > 0).then(|| f64::from(b.successes) / f64::from(decided));
            b.mean_reward = (rewarded > 0).then(|| reward_sum / f64::from(rewarded));
            b
        })
        .collect();
    (name, points)
}

/// The namespace's curve over its most recent [`MAX_CURVE_EPISODES`] completed episodes.
pub(super) async fn learning_curve(
    server: &MemoryServer,
    namespace: Option<&str>,
) -> Result<Value, ToolFailure> {
    let ns = server.namespace(namespace)?;
    let mut completed = Vec::new();
    let mut offset = 0u32;
    loop {
        let query = EpisodeQuery {
            filter: EpisodeFilter {
                status: Some(EpisodeStatus::AnyCompleted),
                ..EpisodeFilter::default()
            },
            limit: PAGE,
            offset,
        };
        let page = server.memory().list_episodes(&ns, &query).await?;
        let read = page.len() as u32;
        completed.extend(page.into_iter().filter_map(|e| {
            Some(Completed {
                at: e.completed_at?,
                outcome: e.outcome?,
                reward: e.reward,
            })
        }));
        offset += read;
        if read < PAGE || offset >= MAX_CURVE_EPISODES {
            break;
        }
    }
    let (width, points) = buckets(&completed);
    Ok(json!({
        "namespace": ns,
        "bucket": width,
        "points": points,
        "episodes": completed.len(),
        "capped": offset >= MAX_CURVE_EPISODES,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 - 1_790_000_000 % 3600, 0).unwrap_or_default()
            + Duration::hours(hours)
    }

    fn done(hours: i64, outcome: OutcomeKind, reward: f64) -> Completed {
        Completed {
            at: at(hours),
            outcome,
            reward: Some(reward),
        }
    }

    #[test]
    fn a_day_of_episodes_is_counted_per_hour_with_the_empty_hours_between() {
        let episodes = [
            done(0, OutcomeKind::Failure, 0.0),
            done(0, OutcomeKind::Success, 1.0),
            done(3, OutcomeKind::Success, 0.8),
            done(3, OutcomeKind::Abstained, 0.2),
        ];
        let (width, points) = buckets(&episodes);
        assert_eq!(width, "hour");
        assert_eq!(points.len(), 4);
        assert_eq!(points[0].episodes, 2);
        assert_eq!(points[0].success_rate, Some(0.5));
        assert_eq!(points[0].mean_reward, Some(0.5));
        assert_eq!(points[1].episodes, 0);
        assert_eq!(points[1].success_rate, None);
        // Abstaining is neither a success nor a failure; its reward still counts.
        assert_eq!(points[3].success_rate, Some(1.0));
        assert_eq!(points[3].mean_reward, Some(0.5));
        assert_eq!(points[3].start - points[0].start, Duration::hours(3));
    }

    #[test]
    fn longer_spans_use_days_then_weeks() {
        let days = [
            done(0, OutcomeKind::Success, 1.0),
            done(24 * 10, OutcomeKind::Failure, 0.0),
        ];
        let (width, points) = buckets(&days);
        assert_eq!((width, points.len()), ("day", 11));
        let weeks = [
            done(0, OutcomeKind::Success, 1.0),
            done(24 * 365, OutcomeKind::PartialSuccess, 0.5),
        ];
        let (width, points) = buckets(&weeks);
        assert_eq!(width, "week");
        assert!((52..=54).contains(&points.len()), "{}", points.len());
        assert_eq!(points.iter().map(|p| p.episodes).sum::<u32>(), 2);
        assert!(buckets(&[]).1.is_empty());
    }
}
