//! Reflection: what went well, what to improve, and what the episode teaches, written from the
//! episode's own steps (deterministic; no LLM).

use crate::assessment::{Reflection, RewardScore};
use crate::episode::{Episode, ExecutionStep, Outcome, StepResult};
use crate::learning::{Recovery, find_recoveries};
use crate::text::error_class;

fn short(s: &str, max: usize) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let mut t: String = line.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn failure_text(step: &ExecutionStep) -> String {
    match step.result() {
        StepResult::Timeout { .. } => format!("timed out after {} ms", step.input.latency_ms),
        other => format!("failed with \"{}\"", short(other.text(), 100)),
    }
}

/// Writes the reflection of a completed episode.
#[tracing::instrument(level = "debug", skip_all)]
pub fn reflect(episode: &Episode, outcome: &Outcome, reward: &RewardScore) -> Reflection {
    let steps = &episode.steps;
    let mut r = Reflection::default();
    let recoveries = find_recoveries(steps);
    let ok_tools = episode.worked_tools();
    let place = episode.context.language.as_deref().map_or_else(
        || episode.context.domain.clone(),
        |l| format!("{}/{l}", episode.context.domain),
    );
    the_outcome(&mut r, steps, outcome, &ok_tools);
    the_recoveries(&mut r, steps, &recoveries, &place);
    the_failures(&mut r, steps, &recoveries);
    the_cost(&mut r, steps, reward);
    lessons(&mut r, episode, outcome, &ok_tools, &place);
    r
}

/// What the outcome says: the success and its tools, or what was not done.
fn the_outcome(
    r: &mut Reflection,
    steps: &[ExecutionStep],
    outcome: &Outcome,
    ok_tools: &[String],
) {
    match outcome {
        Outcome::Success { verdict, .. } => r.successes.push(format!(
            "completed in {} steps ({}): {}",
            steps.len(),
            if ok_tools.is_empty() {
                "no tools".to_owned()
            } else {
                ok_tools.join(" → ")
            },
            short(verdict, 120)
        )),
        Outcome::PartialSuccess {
            verdict,
            completed,
            failed,
        } => {
            r.successes.push(format!(
                "partly done ({} of {} items): {}",
                completed.len(),
                completed.len() + failed.len(),
                short(verdict, 120)
            ));
            for f in failed.iter().take(3) {
                r.improvements.push(format!("not done: {}", short(f, 100)));
            }
        }
        Outcome::Failure { reason } => r
            .improvements
            .push(format!("failed: {}", short(reason, 160))),
        Outcome::Abstained { reason } => r
            .improvements
            .push(format!("abstained: {}", short(reason, 160))),
    }
}

/// Each recovery: what failed, what fixed it, and the insight for the context.
fn the_recoveries(
    r: &mut Reflection,
    steps: &[ExecutionStep],
    recoveries: &[Recovery],
    place: &str,
) {
    for rec in recoveries {
        let failed = &steps[rec.failed_index];
        let fixed = &steps[rec.recovered_index];
        r.successes.push(format!(
            "recovered from {} {} at step {} with {} (step {})",
            failed.tool(),
            failure_text(failed),
            failed.step_number,
            rec.tools.join(" → "),
            fixed.step_number
        ));
        r.insights.push(format!(
            "in {place}, when {} fails with \"{}\", {} recovers it",
            failed.tool(),
            rec.error_class,
            rec.tools.join(" → ")
        ));
    }
}

/// The failures nothing recovered (the first three, then a count), and identical failures
/// repeated three times or more (a waste worth naming).
fn the_failures(r: &mut Reflection, steps: &[ExecutionStep], recoveries: &[Recovery]) {
    let recovered: Vec<usize> = recoveries.iter().map(|rec| rec.failed_index).collect();
    let mut unrecovered = 0;
    for (i, s) in steps.iter().enumerate() {
        if !s.result().is_success() && !recovered.contains(&i) {
            unrecovered += 1;
            if unrecovered <= 3 {
                r.improvements.push(format!(
                    "step {}: {} ({}) {}",
                    s.step_number,
                    s.tool(),
                    short(&s.input.action, 60),
                    failure_text(s)
                ));
            }
        }
    }
    if unrecovered > 3 {
        r.improvements
            .push(format!("{} more failed steps", unrecovered - 3));
    }
    let mut repeats: Vec<(String, String, u32)> = Vec::new();
    for s in steps.iter().filter(|s| !s.result().is_success()) {
        let class = error_class(s.result().text());
        match repeats
            .iter_mut()
            .find(|(t, c, _)| t == s.tool() && *c == class)
        {
            Some(e) => e.2 += 1,
            None => repeats.push((s.tool().to_owned(), class, 1)),
        }
    }
    for (tool, class, n) in repeats.iter().filter(|e| e.2 >= 3) {
        r.improvements.push(format!(
            "{tool} failed {n} times with \"{class}\": change approach sooner"
        ));
    }
}

/// Steps beyond the usual count, and one step that took most of the tool time.
fn the_cost(r: &mut Reflection, steps: &[ExecutionStep], reward: &RewardScore) {
    if !steps.is_empty() && reward.efficiency < 0.7 {
        r.improvements.push(format!(
            "took {} steps where similar tasks take about {:.0}",
            steps.len(),
            reward.baseline_steps
        ));
    }
    let slow = steps.iter().max_by_key(|s| s.input.latency_ms);
    if let Some(s) = slow {
        let total: u64 = steps.iter().map(|s| s.input.latency_ms).sum();
        if steps.len() >= 3 && total > 0 && s.input.latency_ms * 2 > total {
            r.improvements.push(format!(
                "step {} ({}) took {} ms, over half the episode's tool time",
                s.step_number,
                s.tool(),
                s.input.latency_ms
            ));
        }
    }
}

/// What the episode teaches for similar tasks: the tools that worked, or the approach that
/// failed.
fn lessons(
    r: &mut Reflection,
    episode: &Episode,
    outcome: &Outcome,
    ok_tools: &[String],
    place: &str,
) {
    if outcome.is_success() && !ok_tools.is_empty() {
        r.insights.push(format!(
            "for {} tasks in {place}, {} worked",
            episode.task_type,
            ok_tools
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(" → ")
        ));
    }
    if matches!(outcome, Outcome::Failure { .. })
        && let Some(last_err) = episode
            .steps
            .iter()
            .rev()
            .find(|s| !s.result().is_success())
    {
        r.insights.push(format!(
            "in {place}, {} {} and the task failed: try another approach",
            last_err.tool(),
            failure_text(last_err)
        ));
    }
}
