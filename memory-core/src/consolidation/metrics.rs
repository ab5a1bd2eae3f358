//! Learning metrics: the snapshot a consolidation run takes, and their trend over runs.

use chrono::{DateTime, Utc};

use super::config::ConsolidationConfig;
use super::estimates::estimate_error;
use crate::episode::OutcomeKind;
use crate::error::Result;
use crate::learned::{FailureLesson, Heuristic, LearnedStatus, Pattern, PatternKind};
use crate::namespace::Namespace;
use crate::records::MetricsSnapshot;
use crate::storage::{
    EpisodeFilter, EpisodeQuery, EpisodeStatus, LearnedQuery, Storage, StorageExt,
};

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

/// Share of repeats among `counts` (each an item's occurrences): `sum(c - 1) / sum(c)`.
fn repeat_rate(counts: impl Iterator<Item = u64>) -> Option<f64> {
    let (mut repeats, mut total) = (0u64, 0u64);
    for c in counts {
        repeats += c.saturating_sub(1);
        total += c;
    }
    (total > 0).then(|| repeats as f64 / total as f64)
}

/// Active and pruned items among `statuses`.
fn active_and_pruned<'a>(statuses: impl Iterator<Item = &'a LearnedStatus>) -> (u64, u64) {
    statuses.fold((0, 0), |(a, p), s| match s {
        LearnedStatus::Active => (a + 1, p),
        LearnedStatus::Pruned { .. } => (a, p + 1),
        _ => (a, p),
    })
}

/// The learning-metrics snapshot of a run: rates over the latest completed episodes, counts
/// of the learned items as the run leaves them, the reuse of tool sequences, how often
/// failures repeat, and the estimate error.
pub(crate) async fn snapshot<'a>(
    storage: &dyn Storage,
    ns: &Namespace,
    cfg: &ConsolidationConfig,
    now: DateTime<Utc>,
    patterns: impl Iterator<Item = &'a Pattern> + Clone,
    heuristics: impl Iterator<Item = &'a Heuristic> + Clone,
) -> Result<MetricsSnapshot> {
    let stats = storage.namespace_stats(ns).await?;
    let completed = EpisodeQuery {
        filter: EpisodeFilter {
            status: Some(EpisodeStatus::AnyCompleted),
            ..EpisodeFilter::default()
        },
        limit: cfg.metrics_window,
        offset: 0,
    };
    let window = storage.query_episodes(ns, &completed).await?;
    let n = window.len() as f64;
    let successes = window
        .iter()
        .filter(|e| e.outcome == Some(OutcomeKind::Success))
        .count() as f64;
    let rewards: Vec<f64> = window.iter().filter_map(|e| e.reward).collect();
    let mut lessons: Vec<FailureLesson> = Vec::new();
    while (lessons.len() as u32) < cfg.max_items {
        let q = LearnedQuery {
            include_inactive: true,
            limit: 500.min(cfg.max_items - lessons.len() as u32),
            offset: lessons.len() as u32,
            ..LearnedQuery::default()
        };
        let page = storage.query_lessons(ns, &q).await?;
        let done = (page.len() as u32) < q.limit;
        lessons.extend(page);
        if done {
            break;
        }
    }
    let estimates = storage
        .query_estimates(ns, None, cfg.metrics_window)
        .await?;
    let (estimate_error, estimates_compared) = estimate_error(&estimates);
    let (patterns_active, patterns_pruned) = active_and_pruned(patterns.clone().map(|p| &p.status));
    let (heuristics_active, heuristics_pruned) = active_and_pruned(heuristics.map(|h| &h.status));
    Ok(MetricsSnapshot {
        taken_at: now,
        episodes: stats.episodes,
        completed: stats.completed,
        window: window.len() as u64,
        success_rate: (n > 0.0).then(|| successes / n),
        mean_reward: (!rewards.is_empty())
            .then(|| rewards.iter().sum::<f64>() / rewards.len() as f64),
        patterns_active,
        patterns_pruned,
        heuristics_active,
        heuristics_pruned,
        pattern_reuse_rate: repeat_rate(
            patterns
                .filter(|p| matches!(p.kind, PatternKind::ToolSequence { .. }))
                .map(|p| p.occurrences),
        ),
        repeated_failure_rate: repeat_rate(lessons.iter().map(|l| l.occurrences)),
        estimate_error,
        estimates_compared,
    })
}
