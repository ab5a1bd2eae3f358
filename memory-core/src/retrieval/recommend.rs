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

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::revise::{self, GaveWay, choose_procedure};
use super::taught::{MAX_TEACHERS, taught_by};
use super::variants::{LessonStanding, Variants};
use super::{RetrievalQuery, RetrievedEpisode, Retriever, matched_step};
use crate::consolidation::{ConsolidationConfig, calibrated};
use crate::episode::{Episode, EpisodeId, Outcome, OutcomeKind, TaskContext, TaskType};
use crate::error::Result;
use crate::learned::{
    ContextKey, FailureLesson, HINDERED_STREAK_DISCOUNT, Heuristic, Learned, LessonId, Pattern,
    PatternId, PatternKind, context_marks,
};
use crate::learning::follow_action;
use crate::namespace::Namespace;
pub use crate::records::{Estimate, EstimateCorrection};
use crate::statistics::median;
use crate::storage::{EpisodeFilter, EpisodeStatus, LearnedQuery, Storage};
use crate::text::{error_class, normalize_label};

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

/// How much a learned item bears on the task: its share of the evidence of the similar
/// episodes (`0..=1`, see [`taught_by`]) and whether it holds in the task's context.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Relevance {
    pub share: f64,
    pub in_context: bool,
}

/// What holding in the task's context is worth next to having been taught by every similar
/// episode (share 1.0): context alone is weak evidence, so a context's most-seen items never
/// outrank what the matched episodes actually did unless they are far more certain.
const CONTEXT_WEIGHT: f64 = 0.25;

impl Relevance {
    fn weight(self) -> f64 {
        self.share + if self.in_context { CONTEXT_WEIGHT } else { 0.0 }
    }

    fn note(self, why: &mut String) {
        if self.share > 0.0 {
            let _ = write!(
                why,
                "; taught by the similar episodes ({:.0}% of their weight)",
                self.share * 100.0
            );
        }
    }
}

/// The candidates of one kind with their relevance: the items the similar episodes taught
/// (left out when they do not hold in `scope`, the request's explicit context) and the items of
/// the task's context (`in_context`, matched by `context`).
pub(crate) fn candidates<T: Learned>(
    taught: Vec<(T, f64)>,
    of_context: Vec<T>,
    context: Option<&LearnedQuery>,
    scope: Option<&LearnedQuery>,
) -> Vec<(T, Relevance)> {
    let mut out: HashMap<T::Id, (T, Relevance)> = of_context
        .into_iter()
        .map(|item| {
            let rel = Relevance {
                share: 0.0,
                in_context: true,
            };
            (item.id().clone(), (item, rel))
        })
        .collect();
    for (item, share) in taught {
        if scope.is_some_and(|q| !q.matches(&item)) {
            continue;
        }
        let in_context = context.is_some_and(|q| q.matches(&item));
        out.entry(item.id().clone())
            .or_insert((item, Relevance::default()))
            .1 = Relevance { share, in_context };
    }
    out.into_values().collect()
}

/// Ranks patterns: relevance times confidence (Wilson lower bound of success, decayed) times
/// feedback effectiveness.
pub(crate) fn rank_patterns(
    patterns: Vec<(Pattern, Relevance)>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<Pattern>> {
    let mut out: Vec<Advice<Pattern>> = patterns
        .into_iter()
        .map(|(p, rel)| {
            let confidence = p.confidence(now, half_life_days);
            let effectiveness = p.effectiveness.score();
            let score = rel.weight() * confidence * (2.0 * effectiveness);
            let mut why = format!(
                "seen {}x in {}, {:.0}% success (confidence {:.0}%)",
                p.occurrences,
                p.context.label(),
                p.success_rate() * 100.0,
                confidence * 100.0
            );
            rel.note(&mut why);
            let e = &p.effectiveness;
            if e.uses() > 0 {
                let _ = write!(
                    why,
                    "; feedback {} helped / {} hindered",
                    e.helped, e.hindered
                );
            }
            if e.hindered_streak > 0 {
                let _ = write!(
                    why,
                    " ({} in a row since it last helped: demoted)",
                    e.hindered_streak
                );
            }
            Advice {
                item: p,
                score,
                why,
                taught_share: rel.share,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |p| p.id.to_string());
    out
}

/// Ranks heuristics: relevance times decayed confidence. A general rule is left out where an
/// observed rule of the same condition and action is among the candidates (it says the same,
/// with the evidence of this very context).
pub(crate) fn rank_heuristics(
    heuristics: Vec<(Heuristic, Relevance)>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<Heuristic>> {
    let heuristics: Vec<_> = (heuristics.into_iter())
        .map(|(h, rel)| (h.is_general(), h, rel))
        .collect();
    let observed: HashSet<(&str, &str)> = (heuristics.iter())
        .filter(|(general, ..)| !general)
        .map(|(_, h, _)| (h.condition.as_str(), h.action.as_str()))
        .collect();
    let said = |h: &Heuristic| observed.contains(&(h.condition.as_str(), h.action.as_str()));
    let general: Vec<bool> = heuristics.iter().map(|(g, h, _)| *g && said(h)).collect();
    let mut out: Vec<Advice<Heuristic>> = (heuristics.into_iter().zip(general))
        .filter(|(_, repeated)| !repeated)
        .map(|((general, h, rel), _)| {
            let confidence = h.confidence(now, half_life_days);
            let mut why = format!(
                "held {} of {} times {} (confidence {:.0}%)",
                h.support,
                h.support + h.against,
                rule_scope(&h, general),
                confidence * 100.0
            );
            rel.note(&mut why);
            Advice {
                score: rel.weight() * confidence,
                item: h,
                why,
                taught_share: rel.share,
            }
        })
        .filter(|a| a.score > 0.0)
        .collect();
    sort_advice(&mut out, |h| h.id.to_string());
    out
}

/// Ranks failure lessons: relevance times how often they struck (log-scaled) times recency.
pub(crate) fn rank_pitfalls(
    lessons: Vec<(FailureLesson, Relevance)>,
    now: DateTime<Utc>,
    half_life_days: f64,
) -> Vec<Advice<FailureLesson>> {
    let mut out: Vec<Advice<FailureLesson>> = lessons
        .into_iter()
        .map(|(l, rel)| {
            let decay = crate::statistics::decay_factor(l.last_seen, now, half_life_days);
            let score = rel.weight() * (1.0 + l.occurrences as f64).ln() * decay;
            let mut why = format!("struck {} time(s) in {}", l.occurrences, l.context.label());
            rel.note(&mut why);
            Advice {
                score,
                why: format!("{}: {why}", l.text()),
                item: l,
                taught_share: rel.share,
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

/// A tool sequence hindered this many times in a row (since it last helped or was seen in an
/// episode) is outdated: it still ranks, demoted, but no playbook follows it.
const OUTDATED_STREAK: u64 = 3;

/// A fix seen to work at least this often goes into the plan before the step it prepares.
const RELIABLE_FIX: u64 = 2;

/// The preparation a lesson says its tool needs: the tools of its best remedy before the retry
/// of the failed tool, when that remedy worked at least [`RELIABLE_FIX`] times.
fn preparation(lesson: &FailureLesson) -> Option<(&[String], u64)> {
    let r = lesson.best_remedy()?;
    let fix = fix_tools(lesson);
    (!fix.is_empty() && r.count >= RELIABLE_FIX).then_some((fix, r.count))
}

/// The tools a lesson's best remedy runs before the retry of its failed tool (empty when the
/// remedy is not a fix followed by that retry).
fn fix_tools(lesson: &FailureLesson) -> &[String] {
    match lesson.best_remedy().and_then(|r| r.tools.split_last()) {
        Some((retry, fix)) if *retry == lesson.failed_tool => fix,
        _ => &[],
    }
}

/// The marks of a list, for a `why`: `tag=openssl, framework=axum`.
fn marks_text(marks: &[impl AsRef<str>]) -> String {
    let marks: Vec<&str> = marks.iter().map(AsRef::as_ref).collect();
    marks.join(", ")
}

/// Notes how each failure lesson stands for the task ([`Variants::lesson`]): a lesson that
/// newer evidence contradicts is demoted as a run of hindered feedback would demote it; one
/// that holds for another variant of the context says so. Neither prepares the plan: returns
/// their ids.
fn revise_pitfalls(
    pitfalls: &mut [Advice<FailureLesson>],
    patterns: &[Advice<Pattern>],
    task: Option<&[String]>,
) -> HashSet<LessonId> {
    let ranked: Vec<&Pattern> = patterns.iter().map(|a| &a.item).collect();
    let variants = Variants::of(task, &ranked);
    let mut held_back = HashSet::new();
    let mut demoted = false;
    for a in pitfalls.iter_mut() {
        let fix = fix_tools(&a.item);
        match variants.lesson(&a.item, fix) {
            LessonStanding::Holds => continue,
            LessonStanding::Contradicted(p) => {
                let without = if fix.is_empty() {
                    String::new()
                } else {
                    format!(" without {}", fix.join(" → "))
                };
                let _ = write!(
                    a.why,
                    "; contradicted by newer evidence: {}{without} worked in {} since, in episodes like these (last {}), demoted",
                    a.item.failed_tool,
                    p.context.label(),
                    p.last_seen.format("%Y-%m-%d %H:%M")
                );
                a.score *= HINDERED_STREAK_DISCOUNT;
                demoted = true;
            }
            LessonStanding::Elsewhere(missing) => {
                let _ = write!(
                    a.why,
                    "; struck only with {} (this task has not), and {} worked without it",
                    marks_text(&missing),
                    a.item.failed_tool
                );
            }
        }
        held_back.insert(a.item.id.clone());
    }
    if demoted {
        sort_advice(pitfalls, |l| l.id.to_string());
    }
    held_back
}

/// Where a rule's record comes from, for its `why`.
fn rule_scope(h: &Heuristic, general: bool) -> String {
    if general {
        format!(
            "in {} contexts that agree, a general rule",
            h.context.label()
        )
    } else {
        format!("in {}", h.context.label())
    }
}

/// The best-ranked active rule that `fits`, an observed one (of a context the task is in)
/// before a general one.
fn best_rule(
    heuristics: &[Advice<Heuristic>],
    fits: impl Fn(&Heuristic) -> bool,
) -> Option<(&Heuristic, bool)> {
    let fitting: Vec<&Heuristic> = (heuristics.iter())
        .map(|a| &a.item)
        .filter(|h| h.status.is_active() && fits(h))
        .collect();
    let general: Vec<bool> = fitting.iter().map(|h| h.is_general()).collect();
    let observed = (fitting.iter().zip(&general)).find(|(_, g)| !**g);
    observed
        .or_else(|| fitting.iter().zip(&general).next())
        .map(|(h, g)| (*h, *g))
}

/// The plan a general opening rule gives ("follow a → b → c"), when one applies and holds more
/// often than not: for a context with no tool sequence of its own yet.
fn general_plan(heuristics: &[Advice<Heuristic>]) -> Option<(Vec<String>, &Heuristic)> {
    let (h, _) = best_rule(heuristics, |h| {
        h.condition.starts_with("starting a ") && h.support > h.against && h.is_general()
    })?;
    let tools: Vec<String> = h
        .action
        .strip_prefix("follow ")?
        .split(" → ")
        .map(str::to_owned)
        .collect();
    // Only a plan the action states exactly (a tool name holding the separator would not be).
    (follow_action(&tools) == h.action).then_some((tools, h))
}

/// The tool-sequence pattern a playbook follows, and why when it stands in for a contradicted
/// one: the best-ranked one that mostly succeeds, is not outdated by a run of hindered
/// feedback, and is not contradicted by newer evidence of its context ([`choose_procedure`]).
/// Of the task's variant of its context ([`Variants::fits`]) when one is; only the records of
/// that variant revise it.
pub(crate) fn procedure<'a>(
    patterns: &'a [Advice<Pattern>],
    task: Option<&[String]>,
) -> Option<(&'a Pattern, Option<String>)> {
    let ranked: Vec<&Pattern> = patterns.iter().map(|a| &a.item).collect();
    let variants = Variants::of(task, &ranked);
    let usable =
        |p: &Pattern| p.success_rate() >= 0.5 && p.effectiveness.hindered_streak < OUTDATED_STREAK;
    choose_procedure(
        &ranked,
        |p| usable(p) && variants.fits(p),
        |p| variants.fits(p),
    )
    .or_else(|| choose_procedure(&ranked, usable, |p| variants.fits(p)))
}

/// Notes on each tool sequence that newer evidence of the task's variant of its context
/// contradicts (a step of it gave way since it was last done), and on each that holds for
/// another variant ([`Variants::fits`]), and demotes them as a run of hindered feedback would.
fn mark_contradicted(patterns: &mut [Advice<Pattern>], task: Option<&[String]>) {
    let notes: Vec<(usize, String)> = {
        let ranked: Vec<&Pattern> = patterns.iter().map(|a| &a.item).collect();
        let variants = Variants::of(task, &ranked);
        let records = GaveWay::of(&ranked, |p| variants.fits(p));
        (patterns.iter().enumerate())
            .filter_map(|(i, a)| {
                let missing = variants.missing(&a.item);
                if !missing.is_empty() && revise::tools_of(&a.item).is_some() {
                    let note = format!(
                        "; another variant of its context: its episodes all had {} (this task has not), demoted",
                        marks_text(&missing)
                    );
                    return Some((i, note));
                }
                let (record, step, next) = records.contradiction(&a.item)?;
                let place = (step.after.as_deref())
                    .map_or_else(|| "as the first step".to_owned(), |a| format!("after {a}"));
                let note = format!(
                    "; contradicted by newer evidence: {} gave way {place} on {} ({next} worked next), demoted",
                    step.failed,
                    record.last_seen.format("%Y-%m-%d %H:%M")
                );
                Some((i, note))
            })
            .collect()
    };
    if notes.is_empty() {
        return;
    }
    for (i, note) in notes {
        patterns[i].why.push_str(&note);
        patterns[i].score *= HINDERED_STREAK_DISCOUNT;
    }
    sort_advice(patterns, |p| p.id.to_string());
}

/// The playbook: the tools of the best tool-sequence pattern that mostly succeeds (or, where
/// the context has none, of the general opening rule that applies), each step carrying the
/// pitfalls of its tool and the best-ranked active rule about its failures. A step whose tool
/// a lesson says reliably fails in this context until a preparation runs gets that
/// preparation before it (unless the plan already ran it). `generic` labels every step when
/// the match is not strong (the plan is then the context's default, or rests on shared words
/// only).
pub(crate) fn playbook(
    patterns: &[Advice<Pattern>],
    heuristics: &[Advice<Heuristic>],
    pitfalls: &[Advice<FailureLesson>],
    generic: Option<&str>,
    variant: &TaskVariant<'_>,
) -> (Vec<PlaybookStep>, Option<PatternId>) {
    let best = procedure(patterns, variant.marks).and_then(|(pattern, revised)| {
        let PatternKind::ToolSequence { tools } = &pattern.kind else {
            return None;
        };
        let mut basis = format!(
            "({:.0}% success over {} episodes",
            pattern.success_rate() * 100.0,
            pattern.occurrences
        );
        if let Some(why) = revised {
            let _ = write!(basis, "; {why}");
        }
        basis.push(')');
        Some((tools.clone(), basis, Some(pattern.id.clone())))
    });
    let (tools, basis, pattern_id, rule) = match best {
        Some((tools, basis, pattern_id)) => {
            // The active opening rule that says to follow this very plan, if one does.
            let follow = follow_action(&tools);
            let rule = best_rule(heuristics, |h| {
                h.condition.starts_with("starting a ") && h.action == follow
            });
            (tools, basis, pattern_id, rule)
        }
        None => match general_plan(heuristics) {
            Some((tools, h)) => {
                let basis = format!(
                    "(no procedure of this context yet; the rule \"{}, {}\" held {} of {} times {})",
                    h.condition,
                    h.action,
                    h.support,
                    h.support + h.against,
                    rule_scope(h, true)
                );
                (tools, basis, None, None)
            }
            None => return (Vec::new(), None),
        },
    };
    let steps = plan_steps(&tools, &basis, rule, heuristics, pitfalls, generic, variant);
    (steps, pattern_id)
}

/// The playbook's steps for the plan `tools`: each step says where it comes from (`basis`),
/// carries the pitfalls of its tool and the best-ranked active rule about its failures, and
/// a tool a lesson says reliably fails in this context until a preparation runs gets that
/// preparation before it (unless the plan already ran it). `rule` is an opening rule that
/// agrees with the whole plan (noted on the first step); `generic` labels every step.
fn plan_steps(
    tools: &[String],
    basis: &str,
    rule: Option<(&Heuristic, bool)>,
    heuristics: &[Advice<Heuristic>],
    pitfalls: &[Advice<FailureLesson>],
    generic: Option<&str>,
    variant: &TaskVariant<'_>,
) -> Vec<PlaybookStep> {
    let head = generic.map(|g| format!("{g}: ")).unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        // Only what the matched episodes taught changes the plan: a lesson there by context
        // alone may come from another kind of task of the same language, where its "fix" was
        // that task's own previous step.
        // Nor does a lesson of another variant of the context, or one newer evidence contradicts.
        let prepares = |p: &&Advice<FailureLesson>| {
            p.taught_share > 0.0 && !variant.held_back.contains(&p.item.id)
        };
        let prep = (pitfalls.iter().filter(prepares)).find_map(|p| {
            (&p.item.failed_tool == tool)
                .then(|| preparation(&p.item))
                .flatten()
                .map(|(fix, n)| (fix, n, &p.item))
        });
        if let Some((fix, n, lesson)) = prep
            && !fix.iter().any(|f| out.iter().any(|(t, _)| t == f))
        {
            for f in fix {
                let why = format!(
                    "{head}prepare for {tool}: in {} it failed with \"{}\" in {} episode(s), and {} then {tool} fixed it {n} time(s)",
                    lesson.context.label(),
                    lesson.error_class,
                    lesson.occurrences,
                    fix.join(" → "),
                );
                out.push((f.clone(), why));
            }
        }
        let mut why = format!("{head}step {} of {} {basis}", i + 1, tools.join(" → "));
        if let Some((h, general)) = rule.filter(|_| i == 0) {
            let _ = write!(
                why,
                "; agrees with the rule: {}, {} (held {} of {} times {})",
                h.condition,
                h.action,
                h.support,
                h.support + h.against,
                rule_scope(h, general)
            );
        }
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
        // The best-ranked active rule about this tool's failures, with its record.
        let prefix = format!("{tool} fails with ");
        if let Some((h, general)) = best_rule(heuristics, |h| h.condition.starts_with(&prefix)) {
            let _ = write!(
                why,
                "; rule: when {}, {} (held {} of {} times {})",
                h.condition,
                h.action,
                h.support,
                h.support + h.against,
                rule_scope(h, general)
            );
        }
        out.push((tool.clone(), why));
    }
    let steps = out.into_iter().enumerate();
    let steps = steps.map(|(i, (tool, why))| PlaybookStep {
        order: i as u32 + 1,
        tool,
        why,
    });
    steps.collect()
}

/// The task's variant of its context, for the plan: its marks ([`context_marks`]; `None`: not
/// known) and the lessons whose preparation stays out of it ([`revise_pitfalls`]).
#[derive(Debug, Default)]
pub(crate) struct TaskVariant<'a> {
    marks: Option<&'a [String]>,
    held_back: HashSet<LessonId>,
}

/// Whether an episode of `task_type` in `context` is of the request's own context: its kind
/// of task (when given), domain and language.
fn in_given_context(task_type: TaskType, context: &TaskContext, req: &RecommendRequest) -> bool {
    let Some(ctx) = &req.context else {
        return false;
    };
    req.task_type.is_none_or(|t| t == task_type)
        && normalize_label(Some(&ctx.domain)) == normalize_label(Some(&context.domain))
        && normalize_label(ctx.language.as_deref()) == normalize_label(context.language.as_deref())
}

/// Failed similar episodes read for the one that got furthest, when none succeeded.
const ATTEMPTS_READ: usize = 5;

/// With no similar episode that succeeded: the one of the [`ATTEMPTS_READ`] most similar
/// failures (earlier tries of the same task folded into them included) whose steps that
/// worked go furthest, with those steps. `None` when none of them has a step that worked.
async fn furthest_attempt(
    storage: &dyn Storage,
    ns: &Namespace,
    episodes: &[RecommendedEpisode],
    usable: impl Fn(TaskType, &TaskContext) -> bool,
    read: &HashMap<EpisodeId, Arc<Episode>>,
) -> Result<Option<(Arc<Episode>, Vec<String>)>> {
    let failed = episodes
        .iter()
        .filter(|e| {
            let e = &e.retrieved.episode;
            e.outcome == Some(OutcomeKind::Failure) && usable(e.task_type, &e.context)
        })
        .flat_map(|e| {
            std::iter::once(e.retrieved.episode.id).chain(e.near_duplicates.iter().copied())
        })
        .take(ATTEMPTS_READ)
        .collect::<Vec<EpisodeId>>();
    let mut best: Option<(Arc<Episode>, Vec<String>)> = None;
    for past in read_all(storage, ns, &failed, read).await? {
        // Gone since it was retrieved (deleted by another process): nothing to learn from.
        let Some(past) = past else {
            continue;
        };
        if past.outcome.as_ref().map(Outcome::kind) != Some(OutcomeKind::Failure)
            || !usable(past.task_type, &past.context)
        {
            continue;
        }
        let worked = past.worked_tools();
        if !worked.is_empty() && best.as_ref().is_none_or(|(_, b)| worked.len() > b.len()) {
            best = Some((past, worked));
        }
    }
    Ok(best)
}

/// Names the step each shown episode matched (in the step window that matched, when one did)
/// and adds it to its `why`: the episodes in `read` (already read for what they taught) as
/// they are, the other episodes with steps in one read.
async fn name_matched_steps(
    storage: &dyn Storage,
    ns: &Namespace,
    episodes: &mut [RecommendedEpisode],
    (task, max_windows): (&str, usize),
    read: &HashMap<EpisodeId, Arc<Episode>>,
) -> Result<()> {
    let with_steps: Vec<EpisodeId> = (episodes.iter())
        .filter(|e| e.retrieved.episode.step_count > 0)
        .map(|e| e.retrieved.episode.id)
        .collect();
    let pasts = read_all(storage, ns, &with_steps, read).await?;
    let mut pasts: HashMap<EpisodeId, Arc<Episode>> = (with_steps.into_iter().zip(pasts))
        .filter_map(|(id, past)| past.map(|p| (id, p)))
        .collect();
    for e in episodes {
        let r = &mut e.retrieved;
        // Gone since it was retrieved (or without steps): nothing to name.
        let Some(past) = pasts.remove(&r.episode.id) else {
            continue;
        };
        if let Some(m) = matched_step(&past, task, r.breakdown.window, max_windows) {
            let _ = write!(r.why, "; matched step {}: \"{}\"", m.step_number, m.excerpt);
            r.matched_step = Some(m);
        }
    }
    Ok(())
}

/// The episodes `ids` in their order: those in `read` as they are, the others in one
/// storage call (`None` for one that is gone).
async fn read_all(
    storage: &dyn Storage,
    ns: &Namespace,
    ids: &[EpisodeId],
    read: &HashMap<EpisodeId, Arc<Episode>>,
) -> Result<Vec<Option<Arc<Episode>>>> {
    let missing: Vec<EpisodeId> = (ids.iter())
        .filter(|id| !read.contains_key(id))
        .copied()
        .collect();
    let fetched: HashMap<EpisodeId, Arc<Episode>> = if missing.is_empty() {
        HashMap::new()
    } else {
        (missing.iter().copied())
            .zip(storage.get_episodes(ns, &missing).await?)
            .filter_map(|(id, e)| e.map(|e| (id, e)))
            .collect()
    };
    Ok(ids
        .iter()
        .map(|id| read.get(id).or_else(|| fetched.get(id)).cloned())
        .collect())
}

/// Items of the task's context read per kind, most-seen first: a floor under the items the
/// similar episodes taught (which are read whatever their rank), not the selection itself.
const CONTEXT_ITEMS: u32 = 200;

/// How sure the match behind a recommendation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Calibrated and strong.
    Strong,
    /// Calibrated: nothing close.
    Weak,
    /// Lexical only: nothing calibrated says how close.
    Lexical,
}

impl Match {
    /// The label every playbook step carries when the match is not strong.
    fn label(self) -> Option<&'static str> {
        match self {
            Match::Strong => None,
            Match::Weak => Some("context default, nothing similar"),
            Match::Lexical => Some("lexical match only"),
        }
    }
}

/// One line on what the learned advice rests on.
fn advice_basis(
    similar: &[&RetrievedEpisode],
    strength: Match,
    req: &RecommendRequest,
    has_context: bool,
) -> String {
    let given = ContextKey {
        task_type: req.task_type,
        domain: normalize_label(req.context.as_ref().map(|c| c.domain.as_str())),
        language: normalize_label(req.context.as_ref().and_then(|c| c.language.as_deref())),
    }
    .label();
    let n = similar.len().min(MAX_TEACHERS);
    match (strength, has_context) {
        (Match::Strong, _) => {
            format!("what the {n} similar episode(s) taught, and the items of their context")
        }
        (Match::Lexical, true) => format!(
            "lexical matches only (no calibrated confidence): what the {n} episode(s) sharing the most words taught within the given context ({given}), and that context's items"
        ),
        (Match::Weak, true) => {
            format!("no similar past task: only items of the given context ({given}), as a default")
        }
        (Match::Lexical, false) => {
            "lexical matches only and no context given: no learned advice".to_owned()
        }
        (Match::Weak, false) => {
            "no similar past task and no context given: no learned advice".to_owned()
        }
    }
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
        let explicit = req.context.is_some() || req.task_type.is_some();
        let strong = retrieval.strong_match;
        let learned_query =
            |task_type: Option<TaskType>, context: Option<&TaskContext>| LearnedQuery {
                task_type,
                domain: context.map(|c| c.domain.clone()).filter(|d| !d.is_empty()),
                language: context.and_then(|c| c.language.clone()),
                limit: CONTEXT_ITEMS,
                ..LearnedQuery::default()
            };
        // The request's own context bounds everything; without one, the context of the closest
        // episode is used, but only when it is a strong match: a weak hit's context is another
        // task's, and its advice would be dressed up as specific.
        let scope = explicit.then(|| learned_query(req.task_type, req.context.as_ref()));
        let closest = similar.first().map(|r| &r.episode);
        let context = match (&scope, closest) {
            (Some(q), _) => Some(q.clone()),
            (None, Some(e)) if strong => Some(learned_query(Some(e.task_type), Some(&e.context))),
            _ => None,
        };
        let strength = match (strong, retrieval.confidence) {
            (true, _) => Match::Strong,
            (false, Some(_)) => Match::Weak,
            (false, None) => Match::Lexical,
        };
        let basis = advice_basis(&similar, strength, req, context.is_some());
        // On a calibrated weak match the near misses teach nothing; lexically, what shares the
        // most words is all there is to go on, within the given context.
        let teachers: Vec<(EpisodeId, f64)> =
            if strength == Match::Strong || (strength == Match::Lexical && explicit) {
                // Weighted by closeness in meaning, else by the normalized lexical score.
                similar
                    .iter()
                    .map(|r| {
                        let w = r.breakdown.cosine.map_or(r.breakdown.lexical, f64::from);
                        (r.episode.id, w.max(0.0))
                    })
                    .collect()
            } else {
                Vec::new()
            };
        let storage = self.storage;
        let mut taught = taught_by(storage, ns, &teachers).await?;
        let read = std::mem::take(&mut taught.read);
        let (patterns, heuristics, lessons) = match &context {
            Some(q) => (
                storage.query_patterns(ns, q).await?,
                storage.query_heuristics(ns, q).await?,
                storage.query_lessons(ns, q).await?,
            ),
            None => Default::default(),
        };
        let (c, s, half_life) = (context.as_ref(), scope.as_ref(), self.half_life_days);
        let mut patterns =
            rank_patterns(candidates(taught.patterns, patterns, c, s), now, half_life);
        let mut heuristics = rank_heuristics(
            candidates(taught.heuristics, heuristics, c, s),
            now,
            half_life,
        );
        let mut pitfalls = rank_pitfalls(candidates(taught.lessons, lessons, c, s), now, half_life);
        // The task's variant: its framework and tags, from the request, else (on a strong
        // match, as the context) the closest episode's.
        let marks = match (&req.context, closest) {
            (Some(ctx), _) => Some(context_marks(ctx)),
            (None, Some(e)) if strong => Some(context_marks(&e.context)),
            _ => None,
        };
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
        // No plan from anything learned, and no similar task finished: start where the similar
        // attempt that got furthest stopped. On a strong match from any similar failure; on a
        // weak one only when the request gives a context (without one no advice is given), and
        // labeled as weak; from lexical hits only within the request's own context (kind of
        // task, domain, language). The plan names the attempt and its context.
        let mut playbook_attempt = None;
        let none_succeeded = similar
            .iter()
            .all(|r| r.episode.outcome != Some(OutcomeKind::Success));
        let usable = |t: TaskType, c: &TaskContext| match strength {
            Match::Strong | Match::Weak => true,
            Match::Lexical => in_given_context(t, c, req),
        };
        if playbook.is_empty()
            && none_succeeded
            && (strength == Match::Strong || req.context.is_some())
            && let Some((past, tools)) =
                furthest_attempt(storage, ns, &episodes, usable, &read).await?
        {
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
            playbook = plan_steps(
                &tools,
                &basis,
                None,
                &heuristics,
                &pitfalls,
                label,
                &variant,
            );
            playbook_attempt = Some(past.id);
        }
        let domain = context.as_ref().and_then(|q| q.domain.clone());
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
