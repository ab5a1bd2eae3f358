//! Recommendations for a new task: similar episodes, patterns, heuristics, pitfalls, a
//! playbook and an estimate, each with a `why`.
//!
//! Learned items are keyed by context (task type, domain, language), not by text, so they are
//! found two ways: by the request's context, and by the evidence they share with the episodes
//! retrieved for the task (an item seen in the similar episodes is relevant even when the
//! request gave no context). Feedback moves the ranking: a pattern's effectiveness (helped /
//! hindered) multiplies its score, so advice that keeps failing sinks.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{RetrievalQuery, RetrievedEpisode, Retriever};
use crate::consolidation::{ConsolidationConfig, calibrated};
use crate::episode::{EpisodeId, OutcomeKind, TaskContext, TaskType};
use crate::error::Result;
use crate::learned::{Evidence, FailureLesson, Heuristic, Pattern, PatternKind};
use crate::namespace::Namespace;
pub use crate::records::{Estimate, EstimateCorrection};
use crate::statistics::median;
use crate::storage::{EpisodeFilter, EpisodeStatus, LearnedQuery, Storage};

/// What to recommend for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendRequest {
    /// The new task.
    pub task: String,
    /// Its kind, when known.
    #[serde(default)]
    pub task_type: Option<TaskType>,
    /// Its context, when known.
    #[serde(default)]
    pub context: Option<TaskContext>,
    /// Most items per list.
    pub limit: u32,
}

impl RecommendRequest {
    /// A request for `task` with up to 5 items per list.
    pub fn new(task: impl Into<String>) -> Self {
        RecommendRequest {
            task: task.into(),
            task_type: None,
            context: None,
            limit: 5,
        }
    }

    /// With the task's kind and context.
    #[must_use]
    pub fn with_context(mut self, task_type: Option<TaskType>, context: TaskContext) -> Self {
        self.task_type = task_type;
        self.context = Some(context);
        self
    }

    /// With this many items per list at most.
    #[must_use]
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    pub(crate) fn retrieval_query(&self, limit: u32) -> RetrievalQuery {
        RetrievalQuery {
            task: self.task.clone(),
            task_type: self.task_type,
            context: self.context.clone(),
            filter: EpisodeFilter {
                status: Some(EpisodeStatus::AnyCompleted),
                ..EpisodeFilter::default()
            },
            limit,
            method: super::RetrievalMethod::Hybrid,
        }
    }
}

/// A similar past episode, with the near-duplicates folded into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendedEpisode {
    /// The episode and its scores.
    #[serde(flatten)]
    pub retrieved: RetrievedEpisode,
    /// Earlier episodes of the same task (same normalized task text), folded into this one.
    pub near_duplicates: Vec<EpisodeId>,
}

/// A learned item with its relevance to the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advice<T> {
    /// The item.
    pub item: T,
    /// Relevance (higher first; comparable within one list).
    pub score: f64,
    /// Why it is recommended.
    pub why: String,
}

/// One step of the playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaybookStep {
    /// 1-based position.
    pub order: u32,
    /// The tool to use.
    pub tool: String,
    /// Why this step, and what to watch for.
    pub why: String,
}

/// Everything recommended for a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Similar past episodes, best first.
    pub episodes: Vec<RecommendedEpisode>,
    /// Patterns to follow.
    pub patterns: Vec<Advice<Pattern>>,
    /// Rules of thumb.
    pub heuristics: Vec<Advice<Heuristic>>,
    /// Failure lessons of similar tasks.
    pub pitfalls: Vec<Advice<FailureLesson>>,
    /// Ordered steps from the best tool-sequence pattern, with pitfalls attached.
    pub playbook: Vec<PlaybookStep>,
    /// Expected steps, duration and success chance.
    pub estimate: Estimate,
    /// Calibrated confidence that the memory holds a real match (see [`super::Retrieval`]).
    pub confidence: Option<f64>,
    /// False when nothing close was found: treat the advice as weak.
    pub strong_match: bool,
    /// Set when running degraded (e.g. lexical only).
    pub degraded: Option<String>,
}

/// Normalized task text: lowercase words, digits folded, so "Fix bug #12" and "fix bug #7"
/// are the same task.
///
/// ```
/// use memory_core::retrieval::recommend::task_fingerprint;
/// assert_eq!(task_fingerprint("Fix  the bug #12!"), task_fingerprint("fix the bug #7"));
/// assert_ne!(task_fingerprint("fix the bug"), task_fingerprint("fix the test"));
/// ```
pub fn task_fingerprint(task: &str) -> String {
    let mut out = String::with_capacity(task.len());
    for word in task
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.chars().all(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.extend(word.chars().flat_map(char::to_lowercase));
        }
    }
    out
}

/// Folds near-duplicates (same fingerprint, or plain cosine-to-query within 0.005 of each
/// other and both at least 0.95) into the best-ranked one.
pub(crate) fn fold_duplicates(results: Vec<RetrievedEpisode>) -> Vec<RecommendedEpisode> {
    let mut out: Vec<RecommendedEpisode> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in results {
        let fp = task_fingerprint(&r.episode.task_description);
        let twin = seen.get(&fp).copied().or_else(|| {
            let c = r.breakdown.similarity?;
            out.iter().position(|o| {
                o.retrieved
                    .breakdown
                    .similarity
                    .is_some_and(|oc| c >= 0.95 && oc >= 0.95 && (oc - c).abs() < 0.005)
            })
        });
        if let Some(i) = twin {
            out[i].near_duplicates.push(r.episode.id);
        } else {
            seen.insert(fp, out.len());
            out.push(RecommendedEpisode {
                retrieved: r,
                near_duplicates: Vec::new(),
            });
        }
    }
    for o in &mut out {
        if !o.near_duplicates.is_empty() {
            let _ = write!(
                o.retrieved.why,
                "; same task seen {} more time(s)",
                o.near_duplicates.len()
            );
        }
    }
    out
}

/// Share of `similar` found in `evidence`.
fn overlap(evidence: &[Evidence], similar: &HashSet<EpisodeId>) -> f64 {
    if similar.is_empty() {
        return 0.0;
    }
    let hits = evidence
        .iter()
        .filter(|e| similar.contains(&e.episode_id))
        .count();
    hits as f64 / similar.len().min(evidence.len().max(1)) as f64
}

/// Ranks patterns: confidence (Wilson lower bound of success, decayed) times feedback
/// effectiveness, boosted by the evidence shared with the similar episodes.
pub(crate) fn rank_patterns(
    patterns: Vec<Pattern>,
    similar: &HashSet<EpisodeId>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<Pattern>> {
    let mut out: Vec<Advice<Pattern>> = patterns
        .into_iter()
        .map(|p| {
            let confidence = p.confidence(now, half_life_days);
            let effectiveness = p.effectiveness.score();
            let shared = overlap(&p.recent_evidence, similar);
            let score = confidence * (2.0 * effectiveness) * (1.0 + shared);
            let mut why = format!(
                "seen {}x in {}, {:.0}% success (confidence {:.0}%)",
                p.occurrences,
                p.context.label(),
                p.success_rate() * 100.0,
                confidence * 100.0
            );
            if shared > 0.0 {
                why.push_str("; used in the similar episodes");
            }
            let e = &p.effectiveness;
            if e.uses() > 0 {
                let _ = write!(
                    why,
                    "; feedback {} helped / {} hindered",
                    e.helped, e.hindered
                );
            }
            Advice {
                item: p,
                score,
                why,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |p| p.id.to_string());
    out
}

/// Ranks heuristics by decayed evidence, boosted by shared evidence.
pub(crate) fn rank_heuristics(
    heuristics: Vec<Heuristic>,
    similar: &HashSet<EpisodeId>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<Heuristic>> {
    let mut out: Vec<Advice<Heuristic>> = heuristics
        .into_iter()
        .map(|h| {
            let confidence = h.confidence(now, half_life_days);
            let shared = overlap(&h.recent_evidence, similar);
            let mut why = format!(
                "held {} of {} times in {} (confidence {:.0}%)",
                h.support,
                h.support + h.against,
                h.context.label(),
                confidence * 100.0
            );
            if shared > 0.0 {
                why.push_str("; seen in the similar episodes");
            }
            Advice {
                score: confidence * (1.0 + shared),
                item: h,
                why,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |h| h.id.to_string());
    out
}

/// Ranks failure lessons: how often they struck (log-scaled), recency, shared evidence.
pub(crate) fn rank_pitfalls(
    lessons: Vec<FailureLesson>,
    similar: &HashSet<EpisodeId>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<FailureLesson>> {
    let mut out: Vec<Advice<FailureLesson>> = lessons
        .into_iter()
        .map(|l| {
            let decay = crate::statistics::decay_factor(l.last_seen, now, half_life_days);
            let shared = overlap(&l.recent_evidence, similar);
            let score = (1.0 + l.occurrences as f64).ln() * decay * (1.0 + shared);
            let mut why = format!("struck {} time(s) in {}", l.occurrences, l.context.label());
            if shared > 0.0 {
                why.push_str("; hit in the similar episodes");
            }
            Advice {
                score,
                why: format!("{}: {why}", l.text()),
                item: l,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |l| l.id.to_string());
    out
}

fn sort_advice<T>(items: &mut [Advice<T>], id: impl Fn(&T) -> String) {
    items.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| id(&a.item).cmp(&id(&b.item)))
    });
}

/// The playbook: the tools of the best tool-sequence pattern that mostly succeeds, each step
/// carrying the pitfalls of its tool.
pub(crate) fn playbook(
    patterns: &[Advice<Pattern>],
    pitfalls: &[Advice<FailureLesson>],
) -> Vec<PlaybookStep> {
    let best = patterns.iter().find_map(|a| match &a.item.kind {
        PatternKind::ToolSequence { tools } if a.item.success_rate() >= 0.5 => {
            Some((tools, &a.item))
        }
        _ => None,
    });
    let Some((tools, pattern)) = best else {
        return Vec::new();
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let mut why = format!(
                "step {} of {} ({:.0}% success over {} episodes)",
                i + 1,
                tools.join(" → "),
                pattern.success_rate() * 100.0,
                pattern.occurrences
            );
            if let Some(p) = pitfalls.iter().find(|p| &p.item.failed_tool == tool) {
                let _ = write!(
                    why,
                    "; watch out: {} failed with \"{}\"",
                    p.item.failed_tool, p.item.error_class
                );
                if let Some(r) = p.item.best_remedy() {
                    let _ = write!(why, ", recover with {}", r.tools.join(" → "));
                }
            }
            PlaybookStep {
                order: i as u32 + 1,
                tool: tool.clone(),
                why,
            }
        })
        .collect()
}

/// The estimate from the similar episodes.
pub(crate) fn estimate(similar: &[&RetrievedEpisode]) -> Estimate {
    let n = similar.len();
    if n == 0 {
        return Estimate {
            expected_steps: None,
            expected_duration_ms: None,
            success_chance: None,
            sample_size: 0,
            why: "no similar completed episodes yet".to_owned(),
            correction: None,
        };
    }
    let successes: Vec<&&RetrievedEpisode> = similar
        .iter()
        .filter(|r| r.episode.outcome == Some(OutcomeKind::Success))
        .collect();
    let basis: Vec<&RetrievedEpisode> = if successes.is_empty() {
        similar.to_vec()
    } else {
        successes.iter().map(|r| **r).collect()
    };
    let steps = median(
        basis
            .iter()
            .map(|r| f64::from(r.episode.step_count))
            .collect(),
    );
    let duration = median(
        basis
            .iter()
            .filter_map(|r| {
                r.episode
                    .completed_at
                    .map(|c| (c - r.episode.started_at).num_milliseconds().max(0) as f64)
            })
            .collect(),
    );
    let chance = (successes.len() as f64 + 1.0) / (n as f64 + 2.0);
    Estimate {
        expected_steps: steps,
        expected_duration_ms: duration,
        success_chance: Some(chance),
        sample_size: n,
        why: format!(
            "from {n} similar past episode(s), {} succeeded; steps and duration are medians of {}",
            successes.len(),
            if successes.is_empty() {
                "all of them"
            } else {
                "the successful ones"
            }
        ),
        correction: None,
    }
}

/// What a recommendation is assembled from: the retriever, the learned items in storage, and
/// the estimate records that calibrate it.
pub(crate) struct Advisor<'a> {
    pub retriever: &'a Retriever,
    pub storage: &'a dyn Storage,
    pub half_life_days: f64,
    pub calibration: &'a ConsolidationConfig,
    /// The most results one retrieval may return.
    pub max_results: u32,
}

impl Advisor<'_> {
    /// Similar episodes (near-duplicates folded), learned items by context and by shared
    /// evidence, a playbook and a calibrated estimate.
    pub(crate) async fn recommend(
        &self,
        ns: &Namespace,
        req: &RecommendRequest,
        now: DateTime<Utc>,
    ) -> Result<Recommendation> {
        let limit = req.limit as usize;
        // Retrieve more than shown: near-duplicates fold, and the estimate wants a sample.
        let wide = (req.limit.max(10) * 2).min(self.max_results);
        let retrieval = self
            .retriever
            .retrieve(ns, &req.retrieval_query(wide))
            .await?;
        let rc = self.retriever.config();
        let threshold = f64::from(if req.context.is_some() || req.task_type.is_some() {
            rc.strong_match_cosine
        } else {
            rc.strong_match_cosine_bare
        });
        // Similar = close in meaning when that is measurable, else the top lexical hits.
        let similar: Vec<&RetrievedEpisode> = if retrieval.confidence.is_some() {
            retrieval
                .results
                .iter()
                .filter(|r| r.breakdown.cosine.is_some_and(|c| c >= threshold - 0.1))
                .collect()
        } else {
            retrieval.results.iter().take(5).collect()
        };
        let similar_ids: HashSet<EpisodeId> = similar.iter().map(|r| r.episode.id).collect();
        // Learned items by context: the request's, else that of the closest episode.
        let closest = similar.first().map(|r| &r.episode);
        let (task_type, context) = match (&req.context, closest) {
            (Some(c), _) => (req.task_type, Some(c.clone())),
            (None, Some(e)) => (Some(e.task_type), Some(e.context.clone())),
            (None, None) => (req.task_type, None),
        };
        let learned = LearnedQuery {
            task_type,
            domain: context
                .as_ref()
                .map(|c| c.domain.clone())
                .filter(|d| !d.is_empty()),
            language: context.as_ref().and_then(|c| c.language.clone()),
            limit: 200,
            ..LearnedQuery::default()
        };
        let (storage, half_life) = (self.storage, self.half_life_days);
        let mut patterns = rank_patterns(
            storage.query_patterns(ns, &learned).await?,
            &similar_ids,
            now,
            half_life,
        );
        let mut heuristics = rank_heuristics(
            storage.query_heuristics(ns, &learned).await?,
            &similar_ids,
            now,
            half_life,
        );
        let mut pitfalls = rank_pitfalls(
            storage.query_lessons(ns, &learned).await?,
            &similar_ids,
            now,
            half_life,
        );
        let playbook = playbook(&patterns, &pitfalls);
        let domain = context.as_ref().map(|c| c.domain.clone());
        let estimate = calibrated(
            storage,
            self.calibration,
            ns,
            domain.as_deref(),
            estimate(&similar),
        )
        .await;
        patterns.truncate(limit);
        heuristics.truncate(limit);
        pitfalls.truncate(limit);
        // Only the similar episodes are shown: a weak lexical or semantic hit is not advice.
        let mut episodes = fold_duplicates(similar.iter().map(|r| (*r).clone()).collect());
        episodes.truncate(limit);
        Ok(Recommendation {
            episodes,
            patterns,
            heuristics,
            pitfalls,
            playbook,
            estimate,
            confidence: retrieval.confidence,
            strong_match: retrieval.strong_match,
            degraded: retrieval.degraded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_folds_case_punctuation_and_numbers() {
        assert_eq!(
            task_fingerprint("Add rate-limiting to API v2"),
            "add rate limiting to api v2"
        );
        assert_eq!(task_fingerprint("issue 42"), task_fingerprint("Issue #7"));
    }

    #[test]
    fn estimate_without_episodes_says_so() {
        let e = estimate(&[]);
        assert_eq!(e.sample_size, 0);
        assert!(e.success_chance.is_none());
    }
}
