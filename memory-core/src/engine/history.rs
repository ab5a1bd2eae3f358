//! The reward's efficiency baseline, kept per process.
//!
//! `complete_episode` compares an episode's step count with the median of the last successful
//! episodes of the same kind (task type, domain, language). Querying them on every completion
//! cost a read of up to `history_window` rows that grows with the store; this cache keeps the
//! step counts per kind, adds each success this process completes, and reloads from storage
//! after [`HISTORY_TTL`], so completions by other processes on the same database are picked up
//! within that time. The baseline is a heuristic input to the reward, so that bounded
//! staleness is acceptable; nothing stored depends on it being exact.

use std::sync::Arc;
use std::time::Duration;

use crate::episode::{Episode, OutcomeKind, TaskType};
use crate::error::Result;
use crate::learning::RewardHistory;
use crate::namespace::Namespace;
use crate::statistics::median;
use crate::storage::{EpisodeFilter, EpisodeQuery, EpisodeStatus, Storage};

/// How long loaded step counts are trusted before they are read again.
pub(crate) const HISTORY_TTL: Duration = Duration::from_secs(60);

/// Kinds of episode cached at most (each holds at most `history_window` counts).
const MAX_KINDS: u64 = 10_000;

/// The kind of episode a baseline is for. `language: None` matches every language, as the
/// storage filter does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HistoryKey {
    pub(crate) ns: Namespace,
    pub(crate) task_type: TaskType,
    pub(crate) domain: String,
    pub(crate) language: Option<String>,
}

/// Step counts of the latest successful episodes per kind, newest first.
#[derive(Debug)]
pub(crate) struct HistoryCache {
    counts: moka::sync::Cache<HistoryKey, Arc<Vec<u32>>>,
    window: usize,
}

impl HistoryKey {
    /// The kind of `episode`.
    pub(crate) fn of(ns: &Namespace, episode: &Episode) -> Self {
        HistoryKey {
            ns: ns.clone(),
            task_type: episode.task_type,
            domain: episode.context.domain.clone(),
            language: episode.context.language.clone(),
        }
    }
}

impl HistoryCache {
    /// The reward's efficiency baseline for `key`: the cached counts, else the latest
    /// successes of the kind read from `storage` (and cached).
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn reward_history(
        &self,
        storage: &dyn Storage,
        key: HistoryKey,
    ) -> Result<RewardHistory> {
        let counts = if let Some(counts) = self.get(&key) {
            counts
        } else {
            let query = EpisodeQuery {
                filter: EpisodeFilter {
                    task_type: Some(key.task_type),
                    domain: Some(key.domain.clone()),
                    language: key.language.clone(),
                    status: Some(EpisodeStatus::Completed(OutcomeKind::Success)),
                    ..EpisodeFilter::default()
                },
                limit: self.window as u32,
                offset: 0,
            };
            let similar = storage.query_episodes(&key.ns, &query).await?;
            let counts: Vec<u32> = similar.iter().map(|s| s.step_count).collect();
            self.fill(key, counts.clone());
            Arc::new(counts)
        };
        Ok(RewardHistory {
            median_success_steps: median(counts.iter().map(|&c| f64::from(c)).collect()),
            similar_episodes: counts.len(),
        })
    }

    /// A cache that keeps at most `window` counts per kind.
    pub(crate) fn new(window: u32) -> Self {
        HistoryCache {
            counts: moka::sync::Cache::builder()
                .max_capacity(MAX_KINDS)
                .time_to_live(HISTORY_TTL)
                .build(),
            window: window as usize,
        }
    }

    /// The cached counts for `key`, if loaded and fresh.
    pub(crate) fn get(&self, key: &HistoryKey) -> Option<Arc<Vec<u32>>> {
        self.counts.get(key)
    }

    /// Stores counts read from storage (newest first).
    pub(crate) fn fill(&self, key: HistoryKey, counts: Vec<u32>) {
        self.counts.insert(key, Arc::new(counts));
    }

    /// Adds a success of `steps` steps to every loaded kind it belongs to: its own language
    /// and the any-language kind.
    pub(crate) fn record_success(&self, mut key: HistoryKey, steps: u32) {
        if key.language.is_some() {
            self.push(&key, steps);
            key.language = None;
        }
        self.push(&key, steps);
    }

    fn push(&self, key: &HistoryKey, steps: u32) {
        // Only kinds already loaded: an absent kind is read in full on its first use.
        if let Some(old) = self.counts.get(key) {
            let mut counts = Vec::with_capacity(self.window);
            counts.push(steps);
            counts.extend(old.iter().copied().take(self.window.saturating_sub(1)));
            self.counts.insert(key.clone(), Arc::new(counts));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(language: Option<&str>) -> HistoryKey {
        HistoryKey {
            ns: Namespace::default(),
            task_type: TaskType::Testing,
            domain: "web".into(),
            language: language.map(str::to_owned),
        }
    }

    #[test]
    fn a_success_updates_its_language_and_the_any_language_kind_within_the_window() {
        let cache = HistoryCache::new(3);
        cache.fill(key(Some("rust")), vec![5, 6, 7]);
        cache.fill(key(None), vec![9]);
        cache.record_success(key(Some("rust")), 4);
        assert_eq!(*cache.get(&key(Some("rust"))).unwrap(), vec![4, 5, 6]);
        assert_eq!(*cache.get(&key(None)).unwrap(), vec![4, 9]);
    }

    #[test]
    fn an_unloaded_kind_stays_unloaded() {
        let cache = HistoryCache::new(3);
        cache.record_success(key(Some("go")), 4);
        assert!(cache.get(&key(Some("go"))).is_none());
        assert!(cache.get(&key(None)).is_none());
    }
}
