//! Extraction: from one completed episode to pattern, heuristic and lesson observations.
//!
//! Pure and deterministic: the same episode always yields the same observations.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use crate::episode::{Episode, ExecutionStep, Outcome, StepResult};
use crate::learned::{
    ContextKey, HeuristicObservation, LessonObservation, PatternKind, PatternObservation,
    StepReplaced, context_marks, lesson_id,
};
use crate::learning::LearningUpdate;
use crate::text::{collapse_tools, error_class, normalize_label, normalize_tool};

/// Longest tool sequence kept in a pattern; longer runs are cut (their head is what repeats).
pub const MAX_SEQUENCE_TOOLS: usize = 12;
/// How far ahead (in steps) a recovery is looked for after a failure.
const RECOVERY_WINDOW: usize = 8;
/// Longest recovery kept.
const MAX_RECOVERY_TOOLS: usize = 4;

/// A failed step and the steps that recovered from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Index of the (last) failing step of the run.
    pub failed_index: usize,
    /// Index of the step that confirmed the recovery.
    pub recovered_index: usize,
    /// Normalized error of the failure.
    pub error_class: String,
    /// Tools of the steps that worked from the step after the failure to the confirming step,
    /// repeats collapsed.
    pub tools: Vec<String>,
}

/// Finds recoveries: a failing step, then within a few steps a success of the same tool (the
/// fix was verified), or failing that the first later success.
///
/// Consecutive failures of the same tool with the same error count once (the last of the run).
/// A failure the agent walked away from ([`is_mistake`]) is not recovered from: the tool was
/// the wrong choice, and what came next is the right one, not a fix.
pub fn find_recoveries(steps: &[ExecutionStep]) -> Vec<Recovery> {
    let mistake = mistakes(steps);
    let mut out = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let s = &steps[i];
        if s.result().is_success() || mistake[i] {
            i += 1;
            continue;
        }
        let class = error_class(s.result().text());
        // Skip to the last failure of a run of identical failures.
        let mut last = i;
        while last + 1 < steps.len()
            && !steps[last + 1].result().is_success()
            && steps[last + 1].tool() == s.tool()
            && error_class(steps[last + 1].result().text()) == class
        {
            last += 1;
        }
        let window_end = (last + 1 + RECOVERY_WINDOW).min(steps.len());
        let same_tool_ok = (last + 1..window_end)
            .find(|&k| steps[k].result().is_success() && steps[k].tool() == s.tool());
        let first_ok = (last + 1..window_end).find(|&k| steps[k].result().is_success());
        if let Some(k) = same_tool_ok.or(first_ok) {
            // What worked on the way: a step that failed there fixed nothing (an agent that
            // goes on with its plan after a failure leaves a trail of them).
            let worked = steps[last + 1..=k]
                .iter()
                .filter(|s| s.result().is_success());
            let mut tools = collapse_tools(worked.map(ExecutionStep::tool));
            tools.truncate(MAX_RECOVERY_TOOLS);
            out.push(Recovery {
                failed_index: last,
                recovered_index: k,
                error_class: class,
                tools,
            });
        }
        i = last + 1;
    }
    out
}

/// True when step `i` failed, its tool is never called again, and a later step succeeded: the
/// agent tried the wrong tool and moved on (exploration). Such a failure says nothing about the
/// tool where it is the right step, so it teaches no lesson, no recovery and no opening move.
/// A failure that is retried, or that nothing after it got past, is a real pitfall.
///
/// ```
/// use memory_core::is_mistake;
/// use memory_core::{ExecutionStep, StepInput};
/// let steps: Vec<ExecutionStep> = [
///     StepInput::error("grep", "look", "grep does not apply here"),
///     StepInput::ok("read_file", "look", "ok"),
///     StepInput::error("cargo", "build", "toolchain missing"),
///     StepInput::ok("rustup", "install", "ok"),
///     StepInput::ok("cargo", "build", "ok"),
/// ]
/// .into_iter()
/// .enumerate()
/// .map(|(i, input)| ExecutionStep {
///     step_number: i as u32 + 1,
///     key: i as u64 + 1,
///     timestamp: chrono::Utc::now(),
///     input,
/// })
/// .collect();
/// assert!(is_mistake(&steps, 0));
/// assert!(!is_mistake(&steps, 1) && !is_mistake(&steps, 2));
/// ```
pub fn is_mistake(steps: &[ExecutionStep], i: usize) -> bool {
    mistakes(steps).get(i).copied().unwrap_or(false)
}

/// [`is_mistake`] for every step, in one pass from the end (the tools called later and
/// whether anything later succeeded).
fn mistakes(steps: &[ExecutionStep]) -> Vec<bool> {
    let mut out = vec![false; steps.len()];
    let mut later_tools: HashSet<&str> = HashSet::new();
    let mut later_success = false;
    for (i, s) in steps.iter().enumerate().rev() {
        let ok = s.result().is_success();
        out[i] = !ok && later_success && !later_tools.contains(s.tool());
        later_tools.insert(s.tool());
        later_success |= ok;
    }
    out
}

/// The steps that gave way: a step that failed with an error (not a timeout) and did not work
/// within [`RECOVERY_WINDOW`] steps after (so no retry or repair fixed it there), with the tool
/// of the next step that worked, when something did. See [`StepReplaced`].
fn replaced_steps(steps: &[ExecutionStep]) -> Vec<(StepReplaced, String)> {
    let mut out: Vec<(StepReplaced, String)> = Vec::new();
    let mut after: Option<&str> = None;
    for (i, s) in steps.iter().enumerate() {
        if s.result().is_success() {
            after = Some(s.tool());
            continue;
        }
        if !matches!(s.result(), StepResult::Error { .. }) {
            continue;
        }
        let window = &steps[i + 1..(i + 1 + RECOVERY_WINDOW).min(steps.len())];
        if window
            .iter()
            .any(|n| n.tool() == s.tool() && n.result().is_success())
        {
            continue; // fixed by a retry or a repair: it did not give way
        }
        let next = steps[i + 1..].iter().find(|n| n.result().is_success());
        if let Some(next) = next {
            let replaced = StepReplaced {
                failed: s.tool().to_owned(),
                after: after.map(str::to_owned),
            };
            if !out.iter().any(|(r, _)| *r == replaced) {
                out.push((replaced, next.tool().to_owned()));
            }
        }
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn sum_latency(steps: &[ExecutionStep]) -> u64 {
    steps.iter().map(|s| s.input.latency_ms).sum()
}

/// Tools an opening rule names, at most.
const OPENING_RULE_TOOLS: usize = 6;

/// The action of the opening rule for a tool sequence: "follow a → b → c", its first
/// [`OPENING_RULE_TOOLS`] tools.
pub(crate) fn follow_action(tools: &[String]) -> String {
    let named: Vec<&str> = tools
        .iter()
        .take(OPENING_RULE_TOOLS)
        .map(String::as_str)
        .collect();
    format!("follow {}", named.join(" → "))
}

/// Extracts what one completed episode teaches.
#[tracing::instrument(level = "debug", skip_all)]
pub fn extract_learning(
    episode: &Episode,
    outcome: &Outcome,
    observed_at: DateTime<Utc>,
) -> LearningUpdate {
    let steps = &episode.steps;
    let mut x = Extraction::new(episode, outcome, observed_at);
    // Context statistics: one per episode, the basis of estimates.
    x.context_pattern();
    let mistake = mistakes(steps);
    x.procedure(&mistake);
    // Steps that gave way (successful episodes only: the replacement got the task done).
    if x.success {
        x.replaced_steps();
    }
    let recoveries = find_recoveries(steps);
    x.recoveries(&recoveries);
    x.lessons(&mistake, &recoveries);
    x.into_update()
}

/// What [`extract_learning`] collects from one episode: the observations by id (the first of
/// an id is kept, but a lesson with a remedy replaces one without), and what each is built
/// from.
struct Extraction<'e> {
    episode: &'e Episode,
    success: bool,
    /// The episode ended in failure (not a partial success or an abstention).
    failed: bool,
    observed_at: DateTime<Utc>,
    /// The kind of task, domain and language: the context of procedures.
    task_ctx: ContextKey,
    /// Domain and language only: the context of what a tool does.
    tool_ctx: ContextKey,
    /// What the context key leaves out, for the kinds whose variants it must tell apart: the
    /// tool sequences, the steps that gave way and the lessons.
    marks: Vec<String>,
    /// The episode's step count and summed latency, which every pattern records.
    step_count: u32,
    latency_ms: u64,
    patterns: BTreeMap<String, PatternObservation>,
    heuristics: BTreeMap<String, HeuristicObservation>,
    lessons: BTreeMap<String, LessonObservation>,
}

impl<'e> Extraction<'e> {
    fn new(episode: &'e Episode, outcome: &Outcome, observed_at: DateTime<Utc>) -> Self {
        let domain = normalize_label(Some(&episode.context.domain));
        let language = normalize_label(episode.context.language.as_deref());
        Extraction {
            episode,
            success: outcome.is_success(),
            failed: matches!(outcome, Outcome::Failure { .. }),
            observed_at,
            task_ctx: ContextKey {
                task_type: Some(episode.task_type),
                domain: domain.clone(),
                language: language.clone(),
            },
            tool_ctx: ContextKey {
                task_type: None,
                domain,
                language,
            },
            marks: context_marks(&episode.context),
            step_count: episode.steps.len() as u32,
            latency_ms: sum_latency(&episode.steps),
            patterns: BTreeMap::new(),
            heuristics: BTreeMap::new(),
            lessons: BTreeMap::new(),
        }
    }

    fn add_pattern(&mut self, kind: PatternKind, ctx: ContextKey) {
        let mut o =
            PatternObservation::new(kind, ctx, self.episode.id, self.success, self.observed_at);
        o.steps = self.step_count;
        o.latency_ms = self.latency_ms;
        let variant = match &o.kind {
            PatternKind::ToolSequence { .. } => true,
            PatternKind::DecisionPoint { condition, .. } => {
                StepReplaced::parse(condition).is_some()
            }
            _ => false,
        };
        if variant {
            o.marks = Some(self.marks.clone());
        }
        self.patterns.entry(o.id.0.clone()).or_insert(o);
    }

    fn add_heuristic(&mut self, condition: String, action: String, ctx: ContextKey, ok: bool) {
        let h = HeuristicObservation::new(
            condition,
            action,
            ctx,
            self.episode.id,
            ok,
            self.observed_at,
        );
        self.heuristics.entry(h.id.0.clone()).or_insert(h);
    }

    /// The context's statistics: its framework and complexity.
    fn context_pattern(&mut self) {
        let context = &self.episode.context;
        let mut features = Vec::new();
        if let Some(fw) = normalize_label(context.framework.as_deref()) {
            features.push(format!("framework={fw}"));
        }
        features.push(format!("complexity={}", context.complexity));
        self.add_pattern(
            PatternKind::ContextPattern { features },
            self.task_ctx.clone(),
        );
    }

    /// The procedure: the tools that worked (a sequence and its opening rule) and the opening
    /// move, the first step that was not a `mistake`.
    fn procedure(&mut self, mistake: &[bool]) {
        let episode = self.episode;
        let mut ok_tools = episode.worked_tools();
        ok_tools.truncate(MAX_SEQUENCE_TOOLS);
        if !ok_tools.is_empty() {
            let action = follow_action(&ok_tools);
            let kind = PatternKind::ToolSequence { tools: ok_tools };
            self.add_pattern(kind, self.task_ctx.clone());
            let condition = format!("starting a {} task", episode.task_type);
            self.add_heuristic(condition, action, self.task_ctx.clone(), self.success);
        }
        let steps = &episode.steps;
        let opening = (0..steps.len()).find(|&i| !mistake[i]);
        if let Some(first) = opening.map(|i| &steps[i]) {
            let kind = PatternKind::DecisionPoint {
                condition: format!("opening move of a {} task", episode.task_type),
                choice: normalize_tool(first.tool()),
            };
            self.add_pattern(kind, self.task_ctx.clone());
        }
    }

    /// Steps that gave way, in the tools' own names, as tool sequences have them.
    fn replaced_steps(&mut self) {
        for (replaced, choice) in replaced_steps(&self.episode.steps) {
            let condition = replaced.condition();
            let kind = PatternKind::DecisionPoint { condition, choice };
            self.add_pattern(kind, self.task_ctx.clone());
        }
    }

    /// Each recovery: a pattern and a rule of its tool's context.
    fn recoveries(&mut self, recoveries: &[Recovery]) {
        for rec in recoveries {
            let failed_step = &self.episode.steps[rec.failed_index];
            let tool = normalize_tool(failed_step.tool());
            let kind = PatternKind::ErrorRecovery {
                failed_tool: tool.clone(),
                error_class: rec.error_class.clone(),
                recovery: rec.tools.clone(),
            };
            self.add_pattern(kind, self.tool_ctx.clone());
            self.add_heuristic(
                format!("{tool} fails with \"{}\"", rec.error_class),
                format!("recover with {}", rec.tools.join(" → ")),
                self.tool_ctx.clone(),
                !self.failed,
            );
        }
    }

    /// Lessons: every distinct failure (tool + error class) of the episode that was not a
    /// `mistake`, with its remedy from `recoveries`.
    fn lessons(&mut self, mistake: &[bool], recoveries: &[Recovery]) {
        let steps = &self.episode.steps;
        for (i, s) in steps.iter().enumerate() {
            if s.result().is_success() || mistake[i] {
                continue;
            }
            let tool = normalize_tool(s.tool());
            let class = error_class(s.result().text());
            // Of this failure's recoveries, the shortest that ends with the failed tool working
            // (a fix, verified, with the least on the way), else the first.
            let mine: Vec<&Recovery> = (recoveries.iter())
                .filter(|r| {
                    r.failed_index >= i
                        && steps[r.failed_index].tool() == s.tool()
                        && r.error_class == class
                })
                .collect();
            let verified = (mine.iter())
                .filter(|r| r.tools.last().is_some_and(|t| t == s.tool()))
                .min_by_key(|r| r.tools.len());
            let remedy = verified.or(mine.first()).map(|r| r.tools.clone());
            let lid = lesson_id(&self.tool_ctx, &tool, &class);
            let obs = LessonObservation {
                id: lid.clone(),
                context: self.tool_ctx.clone(),
                failed_tool: tool,
                failed_action: truncate_chars(&s.input.action, 120),
                error_class: class,
                example_error: truncate_chars(s.result().text(), 240),
                remedy,
                episode_failed: self.failed,
                episode_id: self.episode.id,
                marks: Some(self.marks.clone()),
                observed_at: self.observed_at,
            };
            // One observation per lesson and episode; prefer the one that carries a remedy.
            match self.lessons.get_mut(&lid.0) {
                Some(existing) if existing.remedy.is_none() && obs.remedy.is_some() => {
                    *existing = obs;
                }
                Some(_) => {}
                None => {
                    self.lessons.insert(lid.0.clone(), obs);
                }
            }
        }
    }

    fn into_update(self) -> LearningUpdate {
        LearningUpdate {
            episode_id: self.episode.id,
            observed_at: self.observed_at,
            patterns: self.patterns.into_values().collect(),
            heuristics: self.heuristics.into_values().collect(),
            lessons: self.lessons.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{NewEpisode, StepInput, TaskContext, TaskType};

    /// An episode of these steps (`tool` worked, `tool!` failed, `tool~` timed out).
    fn episode(steps: &[&str]) -> Episode {
        let new = NewEpisode::new("t", TaskType::Testing, TaskContext::new("web_api"));
        let mut e = Episode::start(new, Utc::now());
        for (i, s) in steps.iter().enumerate() {
            let input = if let Some(t) = s.strip_suffix('!') {
                StepInput::error(t, "run", format!("{t}: failed"))
            } else if let Some(t) = s.strip_suffix('~') {
                StepInput {
                    result: StepResult::Timeout {
                        message: "timed out".into(),
                    },
                    ..StepInput::ok(t, "run", "")
                }
            } else {
                StepInput::ok(*s, "run", "ok")
            };
            e.steps.push(ExecutionStep {
                step_number: i as u32 + 1,
                key: ExecutionStep::new_key(),
                timestamp: e.started_at,
                input,
            });
        }
        e
    }

    #[test]
    fn a_recovery_names_only_the_steps_that_worked() {
        let e = episode(&["build!", "format!", "install_deps", "lint!", "build"]);
        let r = find_recoveries(&e.steps);
        assert_eq!(r[0].tools, ["install_deps", "build"]);
    }

    #[test]
    fn a_step_gave_way_only_when_nothing_fixed_it_and_something_else_worked() {
        let gave_way = |steps: &[&str]| {
            replaced_steps(&episode(steps).steps)
                .into_iter()
                .map(|(r, next)| (r.condition(), next))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            gave_way(&["snapshot", "migrate!", "verify!", "backfill", "verify"]),
            [(
                "migrate failed after snapshot".to_owned(),
                "backfill".to_owned()
            )]
        );
        // Fixed by a retry (flaky) or a repair (a trap), timed out, or nothing worked after.
        assert!(gave_way(&["snapshot", "migrate!", "migrate", "verify"]).is_empty());
        assert!(gave_way(&["migrate!", "install_deps", "migrate"]).is_empty());
        assert!(gave_way(&["snapshot", "migrate~", "backfill"]).is_empty());
        assert!(gave_way(&["snapshot", "migrate!"]).is_empty());
        assert_eq!(
            gave_way(&["migrate!", "backfill"]),
            [("migrate failed first".to_owned(), "backfill".to_owned())]
        );
    }

    #[test]
    fn a_lesson_prefers_the_remedy_that_got_the_failed_tool_working() {
        // A literal agent went on with its plan after `build` failed (`format` happened to work
        // there), and only later repaired it.
        let e = episode(&[
            "build!",
            "format",
            "build!",
            "lint!",
            "install_deps",
            "build",
        ]);
        let update = extract_learning(&e, &Outcome::success("done"), Utc::now());
        let lesson = update.lessons.iter().find(|l| l.failed_tool == "build");
        let remedy = lesson.and_then(|l| l.remedy.clone());
        assert_eq!(
            remedy.as_deref(),
            Some(&["install_deps".to_owned(), "build".to_owned()][..])
        );
    }
}
