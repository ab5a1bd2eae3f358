//! Recommendations for a new task: similar episodes, patterns, heuristics, pitfalls, a
//! playbook and an estimate, each with a `why`.
//!
//! Learned items are chosen relevance first. The similar episodes name the items they taught
//! (re-derived by extraction and read by id), each weighted by its share of their evidence;
//! the items of the task's context come in beside them at a low fixed weight. An item's score is relevance x confidence
//! (x feedback effectiveness for patterns), so a context's most-seen items never crowd out
//! what the matched episodes did. The request's explicit context bounds everything; without
//! one, the closest episode's context is used only on a strong match. With no strong match and
//! no context, no learned advice is given, and with a context only but no similar task, the
//! playbook is labeled as that context's default. When nothing learned gives a plan and no
//! similar task has been finished, the playbook is the steps that worked in the similar
//! failed attempt that got furthest, labeled so. Feedback moves the ranking: a pattern's
//! effectiveness (helped / hindered) multiplies its score, so advice that keeps failing sinks.

mod plan;
mod rank;
mod reads;
mod scope;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::revise::{self, GaveWay, choose_procedure};
use super::taught::{Taught, taught_by};
use super::variants::{LessonStanding, Variants};
use super::{RetrievalQuery, RetrievedEpisode, Retriever, matched_step};
use crate::consolidation::{ConsolidationConfig, calibrated};
use crate::episode::{
    Episode, EpisodeId, EpisodeSummary, Outcome, OutcomeKind, TaskContext, TaskType,
};
use crate::error::Result;
use crate::learned::{
    ContextKey, FailureLesson, HINDERED_STREAK_DISCOUNT, Heuristic, Learned, LessonId, Pattern,
    PatternId, PatternKind, context_marks,
};
use crate::learning::follow_action;
use crate::namespace::Namespace;
pub use crate::records::{Estimate, EstimateCorrection};
use crate::statistics::median;
use crate::storage::{EpisodeFilter, EpisodeStatus, LearnedQuery, Storage, StorageExt};
use crate::text::{error_class, normalize_label};
use plan::{TaskVariant, mark_contradicted, plan_steps, playbook, revise_pitfalls, rule_scope};
use rank::{candidates, rank_heuristics, rank_patterns, rank_pitfalls, sort_advice};
use reads::{furthest_attempt, name_matched_steps};
use scope::{Match, advice_basis, in_given_context, learned_scopes, similar_episodes, teachers};

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
    /// The share (`0..=1`, by closeness) of the similar episodes' evidence that taught this
    /// item; 0 when it is here only because it holds in the task's context. A caller deciding
    /// how far to trust a plan can ask how much of what matched backs it.
    #[serde(default)]
    pub taught_share: f64,
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
    /// Ordered steps from the best tool-sequence pattern (or a general opening rule), with
    /// pitfalls attached; with neither and no similar success, the steps that worked in the
    /// similar attempt that got furthest ([`Recommendation::playbook_attempt`]).
    pub playbook: Vec<PlaybookStep>,
    /// The tool-sequence pattern the playbook follows: the target of feedback on the playbook
    /// (`record_feedback` with `FeedbackTarget::Pattern`), which is what demotes a playbook
    /// that no longer works. `None` with no playbook.
    #[serde(default)]
    pub playbook_pattern: Option<PatternId>,
    /// The failed episode the playbook starts from, when no similar episode succeeded and
    /// nothing learned gives a plan: the steps that worked in the similar attempt that got
    /// furthest, in order (each one a step of the task's procedure as far as it is known),
    /// for the caller to follow and then go on from where that attempt stopped. `None`
    /// otherwise.
    #[serde(default)]
    pub playbook_attempt: Option<EpisodeId>,
    /// Expected steps, duration and success chance.
    pub estimate: Estimate,
    /// Calibrated confidence that the memory holds a real match (see [`super::Retrieval`]).
    pub confidence: Option<f64>,
    /// False when nothing close was found: treat the advice as weak.
    pub strong_match: bool,
    /// Set when running degraded (e.g. lexical only).
    pub degraded: Option<String>,
    /// What the learned advice rests on: the similar episodes that taught it, the task's
    /// context, or nothing (then the lists and the playbook are empty).
    #[serde(default)]
    pub advice_basis: String,
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

/// The ranked patterns, heuristics and pitfalls of a recommendation.
type RankedAdvice = (
    Vec<Advice<Pattern>>,
    Vec<Advice<Heuristic>>,
    Vec<Advice<FailureLesson>>,
);

/// The task's variant marks: its framework and tags, from the request, else (on a strong
/// match, as the context) the closest episode's.
fn task_marks(
    req: &RecommendRequest,
    closest: Option<&EpisodeSummary>,
    strong: bool,
) -> Option<Vec<String>> {
    match (&req.context, closest) {
        (Some(ctx), _) => Some(context_marks(ctx)),
        (None, Some(e)) if strong => Some(context_marks(&e.context)),
        _ => None,
    }
}

/// The playbook from the similar failed attempt that got furthest (`past`, whose steps that
/// worked were `tools`): where it stopped, in what context, labeled by the match's strength.
fn attempt_plan(
    past: &Episode,
    tools: &[String],
    strength: Match,
    (heuristics, pitfalls): (&[Advice<Heuristic>], &[Advice<FailureLesson>]),
    variant: &TaskVariant<'_>,
) -> Vec<PlaybookStep> {
    // Where it stopped: its last step that did not work, if any.
    let stop = (past.steps.iter().rev())
        .find(|s| !s.result().is_success())
        .map(|s| {
            let class = error_class(s.result().text());
            format!(", its last failure {} with \"{class}\"", s.tool())
        })
        .unwrap_or_default();
    let place = ContextKey {
        task_type: Some(past.task_type),
        domain: normalize_label(Some(&past.context.domain)),
        language: normalize_label(past.context.language.as_deref()),
    }
    .label();
    let basis = format!(
        "(no similar task finished yet: the steps that worked in the similar attempt that got furthest, episode {} ({place}), which failed after {} step(s){stop}; go on from there)",
        past.id,
        past.steps.len()
    );
    let label = match strength {
        Match::Strong => None,
        Match::Weak => Some("no strong match, only a near miss tried this"),
        Match::Lexical => Some("lexical match only"),
    };
    plan_steps(tools, &basis, None, heuristics, pitfalls, label, variant)
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
    /// The learned items of the task, ranked: those the similar episodes `taught`, with the
    /// items of `context` (the learned query of the task's context, and the request's own
    /// `scope`) beside them.
    async fn ranked(
        &self,
        ns: &Namespace,
        taught: Taught,
        (context, scope): (Option<&LearnedQuery>, Option<&LearnedQuery>),
        now: DateTime<Utc>,
    ) -> Result<RankedAdvice> {
        let storage = self.storage;
        let (patterns, heuristics, lessons) = match context {
            Some(q) => (
                storage.query_patterns(ns, q).await?,
                storage.query_heuristics(ns, q).await?,
                storage.query_lessons(ns, q).await?,
            ),
            None => Default::default(),
        };
        let (c, s, half_life) = (context, scope, self.half_life_days);
        let patterns = rank_patterns(candidates(taught.patterns, patterns, c, s), now, half_life);
        let heuristics = rank_heuristics(
            candidates(taught.heuristics, heuristics, c, s),
            now,
            half_life,
        );
        let pitfalls = rank_pitfalls(candidates(taught.lessons, lessons, c, s), now, half_life);
        Ok((patterns, heuristics, pitfalls))
    }

    /// The similar failed attempt that got furthest and the tools that worked in it, when no
    /// similar task (of `similar`, folded into `episodes`) finished.
    ///
    /// On a strong match from any similar failure; on a weak one only when the request gives a
    /// context (without one no advice is given), and labeled as weak; from lexical hits only
    /// within the request's own context (kind of task, domain, language).
    async fn furthest_usable_attempt(
        &self,
        ns: &Namespace,
        req: &RecommendRequest,
        strength: Match,
        (similar, episodes): (&[&RetrievedEpisode], &[RecommendedEpisode]),
        read: &HashMap<EpisodeId, Arc<Episode>>,
    ) -> Result<Option<(Arc<Episode>, Vec<String>)>> {
        let none_succeeded = similar
            .iter()
            .all(|r| r.episode.outcome != Some(OutcomeKind::Success));
        if !none_succeeded || (strength != Match::Strong && req.context.is_none()) {
            return Ok(None);
        }
        let usable = |t: TaskType, c: &TaskContext| match strength {
            Match::Strong | Match::Weak => true,
            Match::Lexical => in_given_context(t, c, req),
        };
        furthest_attempt(self.storage, ns, episodes, usable, read).await
    }

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
        let similar = similar_episodes(&retrieval, req, rc);
        let strong = retrieval.strong_match;
        let closest = similar.first().map(|r| &r.episode);
        let (scope, context) = learned_scopes(req, closest, strong);
        let strength = Match::of(strong, retrieval.confidence);
        let basis = advice_basis(&similar, strength, req, context.is_some());
        let teachers = teachers(&similar, strength, scope.is_some());
        let storage = self.storage;
        let mut taught = taught_by(storage, ns, &teachers).await?;
        let read = std::mem::take(&mut taught.read);
        let (mut patterns, mut heuristics, mut pitfalls) = self
            .ranked(ns, taught, (context.as_ref(), scope.as_ref()), now)
            .await?;
        let marks = task_marks(req, closest, strong);
        let variant = TaskVariant {
            marks: marks.as_deref(),
            held_back: revise_pitfalls(&mut pitfalls, &patterns, marks.as_deref()),
        };
        let (mut playbook, playbook_pattern) = playbook(
            &patterns,
            &heuristics,
            &pitfalls,
            strength.label(),
            &variant,
        );
        mark_contradicted(&mut patterns, variant.marks);
        let mut episodes = fold_duplicates(similar.iter().map(|r| (*r).clone()).collect());
        // No plan from anything learned: start where the similar attempt that got furthest
        // stopped, if no similar task finished.
        let mut playbook_attempt = None;
        if playbook.is_empty()
            && let Some((past, tools)) = self
                .furthest_usable_attempt(ns, req, strength, (&similar, &episodes), &read)
                .await?
        {
            playbook = attempt_plan(&past, &tools, strength, (&heuristics, &pitfalls), &variant);
            playbook_attempt = Some(past.id);
        }
        let domain = context.as_ref().and_then(|q| q.domain.as_deref());
        let estimate = calibrated(storage, self.calibration, ns, domain, estimate(&similar)).await;
        patterns.truncate(limit);
        heuristics.truncate(limit);
        pitfalls.truncate(limit);
        // Only the similar episodes are shown: a weak lexical or semantic hit is not advice.
        episodes.truncate(limit);
        let windows = rc.step_windows as usize;
        name_matched_steps(storage, ns, &mut episodes, (&req.task, windows), &read).await?;
        Ok(Recommendation {
            episodes,
            patterns,
            heuristics,
            pitfalls,
            playbook,
            playbook_pattern,
            playbook_attempt,
            estimate,
            confidence: retrieval.confidence,
            strong_match: retrieval.strong_match,
            degraded: retrieval.degraded,
            advice_basis: basis,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::plan::OUTDATED_STREAK;
    use super::rank::Relevance;
    use super::*;
    use crate::learned::{Effectiveness, PatternObservation};

    #[test]
    fn fingerprint_folds_case_punctuation_and_numbers() {
        assert_eq!(
            task_fingerprint("Add rate-limiting to API v2"),
            "add rate limiting to api v2"
        );
        assert_eq!(task_fingerprint("issue 42"), task_fingerprint("Issue #7"));
    }

    /// A tool sequence seen `n` times, all successes, with this feedback.
    fn sequence(tools: &[&str], n: u64, helped: u64, streak: u64) -> Pattern {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let kind = PatternKind::ToolSequence {
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        };
        let obs = PatternObservation::new(kind, ContextKey::default(), EpisodeId::new(), true, at);
        let mut p = Pattern::from_observation(&obs);
        (p.occurrences, p.successes) = (n, n);
        p.effectiveness = Effectiveness {
            helped,
            hindered: streak,
            hindered_streak: streak,
            ..Effectiveness::default()
        };
        p
    }

    #[test]
    fn a_run_of_hindered_feedback_demotes_a_pattern_and_then_drops_it_from_the_playbook() {
        let now = DateTime::from_timestamp(1_700_000_100, 0).unwrap_or_default();
        let rel = Relevance {
            share: 1.0,
            in_context: true,
        };
        let rank = |streak| {
            let old = sequence(&["a", "b"], 30, 20, streak);
            let new = sequence(&["a", "c"], 3, 0, 0);
            rank_patterns(vec![(old, rel), (new, rel)], now, 30.0)
        };
        let first = |r: &[Advice<Pattern>]| r[0].item.kind.describe();
        // One hindered use is forgiven; two in a row demote the old sequence below the new.
        assert_eq!(first(&rank(1)), "tool sequence a → b");
        let demoted = rank(2);
        assert_eq!(first(&demoted), "tool sequence a → c");
        assert!(demoted[1].why.contains("2 in a row since it last helped"));
        // Still ranked, and still the playbook while it is the only sequence, until outdated.
        let only = |streak| {
            let old = sequence(&["a", "b"], 30, 20, streak);
            let ranked = rank_patterns(vec![(old, rel)], now, 30.0);
            playbook(&ranked, &[], &[], None, &TaskVariant::default())
                .1
                .is_some()
        };
        assert!(only(OUTDATED_STREAK - 1));
        assert!(!only(OUTDATED_STREAK));
    }

    #[test]
    fn estimate_without_episodes_says_so() {
        let e = estimate(&[]);
        assert_eq!(e.sample_size, 0);
        assert!(e.success_chance.is_none());
    }
}
