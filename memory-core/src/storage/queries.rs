//! What the storage traits take and give back about episodes: filters, pages, lexical
//! queries and their hits, learned-item queries, namespace counts and a completion.

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::assessment::{Reflection, RewardScore};
use crate::episode::{
    Episode, EpisodeId, EpisodeSummary, ExecutionStep, Outcome, OutcomeKind, TaskContext, TaskType,
};
use crate::learned::{ContextKey, Learned};
use crate::learning::LearningUpdate;
use crate::records::EstimateActual;

/// Filters over episodes, applied by the backend inside its query (never by post-filtering).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EpisodeFilter {
    /// Only this task type.
    pub task_type: Option<TaskType>,
    /// Only this domain (exact).
    pub domain: Option<String>,
    /// Only this language (exact).
    pub language: Option<String>,
    /// Only this framework (exact).
    pub framework: Option<String>,
    /// Only episodes carrying this tag.
    pub tag: Option<String>,
    /// Only episodes with this status.
    pub status: Option<EpisodeStatus>,
    /// Only episodes started at or after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Only episodes started before this time.
    pub started_before: Option<DateTime<Utc>>,
}

/// An episode's state, for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeStatus {
    /// Not completed yet.
    InProgress,
    /// Completed with this outcome.
    Completed(OutcomeKind),
    /// Completed with any outcome.
    AnyCompleted,
}

impl EpisodeFilter {
    /// True when the episode passes every set filter. Backends that filter in code (the
    /// in-memory one) use this; SQL backends translate the same rules to `WHERE` clauses.
    pub fn matches(&self, e: &Episode) -> bool {
        self.matches_parts(
            e.task_type,
            &e.context,
            e.outcome.as_ref().map(Outcome::kind),
            e.started_at,
        )
    }

    /// [`matches`](Self::matches) for a summary (the in-process vector index filters these).
    pub fn matches_summary(&self, e: &EpisodeSummary) -> bool {
        self.matches_parts(e.task_type, &e.context, e.outcome, e.started_at)
    }

    fn matches_parts(
        &self,
        task_type: TaskType,
        context: &TaskContext,
        outcome: Option<OutcomeKind>,
        started_at: DateTime<Utc>,
    ) -> bool {
        self.task_type.is_none_or(|t| task_type == t)
            && self.domain.as_ref().is_none_or(|d| &context.domain == d)
            && self
                .language
                .as_ref()
                .is_none_or(|l| context.language.as_ref() == Some(l))
            && self
                .framework
                .as_ref()
                .is_none_or(|f| context.framework.as_ref() == Some(f))
            && self.tag.as_ref().is_none_or(|t| context.tags.contains(t))
            && self.status.is_none_or(|s| match s {
                EpisodeStatus::InProgress => outcome.is_none(),
                EpisodeStatus::AnyCompleted => outcome.is_some(),
                EpisodeStatus::Completed(k) => outcome == Some(k),
            })
            && self.started_after.is_none_or(|t| started_at >= t)
            && self.started_before.is_none_or(|t| started_at < t)
    }
}

/// A page of episodes, newest first (by start time, then id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeQuery {
    /// Filters.
    pub filter: EpisodeFilter,
    /// Page size.
    pub limit: u32,
    /// Items to skip.
    pub offset: u32,
}

impl Default for EpisodeQuery {
    fn default() -> Self {
        EpisodeQuery {
            filter: EpisodeFilter::default(),
            limit: 50,
            offset: 0,
        }
    }
}

/// A lexical (full-text) query over task descriptions, reflections and step text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextQuery {
    /// Free text; backends tokenize it and match any term.
    pub text: String,
    /// Filters, applied inside the query.
    pub filter: EpisodeFilter,
    /// Most hits.
    pub limit: u32,
}

/// One lexical hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextHit {
    /// The episode.
    pub episode_id: EpisodeId,
    /// Relevance; higher is better (BM25-like, not comparable across backends).
    pub score: f64,
    /// The episode's summary (read in the same query, so ranking needs no second read).
    pub summary: EpisodeSummary,
}

/// The result of a lexical search: its hits, best first, and how much of the query the
/// namespace's index knows at all.
///
/// `known_terms` of the query's `terms` (distinct, as [`tokenize`](crate::tokenize) gives
/// them) occur in at least one indexed episode of the namespace, whatever the filter. The
/// share tells a query worded like the memory (most words known: the lexical list is
/// informative) from a paraphrase (many words the memory never used: it is blind to them),
/// and the fusion leans on the semantic list by that much
/// ([`RetrievalConfig::unknown_term_shift`](crate::RetrievalConfig::unknown_term_shift)).
///
/// ```
/// use memory_core::TextSearch;
/// let found = TextSearch { hits: Vec::new(), terms: 4, known_terms: 3 };
/// assert_eq!(found.known_share(), Some(0.75));
/// assert_eq!(TextSearch::default().known_share(), None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextSearch {
    /// The hits, best first, at most the query's limit.
    pub hits: Vec<TextHit>,
    /// Distinct terms of the query text.
    pub terms: u32,
    /// How many of them occur in the namespace's index.
    pub known_terms: u32,
}

impl TextSearch {
    /// The share of the query's terms the index knows; `None` for a query with no terms.
    pub fn known_share(&self) -> Option<f64> {
        (self.terms > 0)
            .then(|| f64::from(self.known_terms.min(self.terms)) / f64::from(self.terms))
    }
}

/// Which learned items to list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearnedQuery {
    /// Only items whose context is compatible with this task type (unset item fields match).
    pub task_type: Option<TaskType>,
    /// Only items compatible with this domain.
    pub domain: Option<String>,
    /// Only items compatible with this language.
    pub language: Option<String>,
    /// Only patterns of this kind (`tool_sequence`, ...); ignored for heuristics and lessons.
    pub kind: Option<String>,
    /// Include superseded, pruned and merged items.
    pub include_inactive: bool,
    /// Page size.
    pub limit: u32,
    /// Items to skip.
    pub offset: u32,
}

impl Default for LearnedQuery {
    fn default() -> Self {
        LearnedQuery {
            task_type: None,
            domain: None,
            language: None,
            kind: None,
            include_inactive: false,
            limit: 50,
            offset: 0,
        }
    }
}

impl LearnedQuery {
    /// True when the item passes the query: its context, status and (patterns) kind.
    pub fn matches<T: Learned>(&self, item: &T) -> bool {
        self.matches_context(item.context(), item.status().is_active())
            && self
                .kind
                .as_deref()
                .is_none_or(|k| item.subkind().is_none_or(|s| s == k))
    }

    /// True when an item with this context and status passes the query (kind aside).
    pub fn matches_context(&self, ctx: &ContextKey, active: bool) -> bool {
        (self.include_inactive || active)
            && ctx.matches(
                self.task_type,
                self.domain.as_deref(),
                self.language.as_deref(),
            )
    }
}

/// Counts of what a namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStats {
    /// Episodes, completed or not.
    pub episodes: u64,
    /// Completed episodes.
    pub completed: u64,
    /// Successful episodes.
    pub successes: u64,
    /// Stored steps.
    pub steps: u64,
    /// Patterns (all statuses).
    pub patterns: u64,
    /// Active patterns.
    pub active_patterns: u64,
    /// Heuristics (all statuses).
    pub heuristics: u64,
    /// Active heuristics.
    pub active_heuristics: u64,
    /// Failure lessons.
    pub lessons: u64,
    /// Feedback events.
    pub feedback: u64,
}

/// A namespace's episode and step counts, for its quotas ([`crate::EpisodeStore::quota_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUsage {
    /// Episodes, completed or not.
    pub episodes: u64,
    /// Stored steps.
    pub steps: u64,
    /// True when the counts could not be read and stand for them: the last counts read, plus
    /// the writes journaled since (while the durable layer is unreachable).
    pub estimated: bool,
}

/// Completing an episode: its outcome, scores, and what it teaches, applied atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeCompletion {
    /// The episode.
    pub episode_id: EpisodeId,
    /// How it ended.
    pub outcome: Outcome,
    /// Its reward.
    pub reward: RewardScore,
    /// Its reflection.
    pub reflection: Reflection,
    /// When it was completed.
    pub completed_at: DateTime<Utc>,
    /// What it teaches.
    pub learning: LearningUpdate,
    /// Steps logged since the episode's steps were last appended, written in the same
    /// transaction, as [`EpisodeStore::append_steps`](super::EpisodeStore::append_steps)
    /// writes them (keys already stored are skipped), so a completion is one transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<ExecutionStep>,
    /// What actually happened (steps, duration, success), stored with the episode's estimate
    /// record by the same transaction when one was recorded and is still open; no estimate
    /// record is touched otherwise, or when this is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_actual: Option<EstimateActual>,
    /// How many steps the episode has once `steps` are stored, as the completing process knows
    /// it (the episode it started or read, plus the steps it logged since): the learning above
    /// was computed from those steps, without reading the episode back. When set and the
    /// store then holds another count (another writer added steps meanwhile), nothing is
    /// written and the call fails with [`Error::steps_changed`](crate::Error::steps_changed);
    /// the caller reads the episode and completes it again. `None` checks nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_steps: Option<u32>,
    /// The text of the episode's steps (all of them, `steps` included) that the store's
    /// full-text index holds for it: [`indexed_work_text`](crate::indexed_work_text).
    /// Step batches are not indexed as they are logged; this is written once, with the
    /// completion. Empty indexes nothing (a completion journaled by an earlier version).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub indexed_work: String,
}
