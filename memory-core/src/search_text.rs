//! The texts lexical search indexes: a task with its context words, and a whole episode.

use crate::episode::{Episode, ExecutionStep, TaskContext};

/// The indexed text of a task: its description, then its context words (domain, language,
/// framework, tags), so a query naming the stack matches the task itself rather than step
/// output that happens to mention it.
///
/// ```
/// use memory_core::{task_search_text, TaskContext};
/// let ctx = TaskContext::new("web_api").with_language("python").with_tag("auth");
/// assert_eq!(task_search_text("add login", &ctx), "add login web api python auth");
/// ```
pub fn task_search_text(task_description: &str, context: &TaskContext) -> String {
    let mut s = String::with_capacity(task_description.len() + 64);
    s.push_str(task_description);
    let words = [
        Some(&context.domain),
        context.language.as_ref(),
        context.framework.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain(context.descriptive_tags());
    for w in words {
        if !w.is_empty() {
            s.push(' ');
            s.push_str(&w.replace('_', " "));
        }
    }
    s
}

/// Most characters of an [`indexed_work_text`] (whole tools, actions and messages only).
pub const INDEXED_WORK_CHARS: usize = 4_096;

/// The text of an episode's steps that the full-text index holds for it, written once, when
/// the episode is completed: each distinct tool, action and error message, in step order, up
/// to [`INDEXED_WORK_CHARS`]. What a successful step printed is left out: test counts, file
/// sizes and command output are noise to a search for similar work, and indexing them with
/// every logged step batch cost the step writer about half its time.
///
/// ```
/// use chrono::Utc;
/// use memory_core::{indexed_work_text, ExecutionStep, StepInput};
/// let steps: Vec<ExecutionStep> = [
///     StepInput::error("pytest", "run the tests", "assertion failed at midnight"),
///     StepInput::ok("edit_file", "inject a fake clock", "12 lines changed"),
///     StepInput::ok("pytest", "run the tests", "14 passed"),
/// ]
/// .into_iter()
/// .enumerate()
/// .map(|(n, input)| ExecutionStep {
///     step_number: n as u32 + 1,
///     key: ExecutionStep::new_key(),
///     timestamp: Utc::now(),
///     input,
/// })
/// .collect();
/// assert_eq!(
///     indexed_work_text(&steps),
///     "pytest\nrun the tests\nassertion failed at midnight\nedit_file\ninject a fake clock"
/// );
/// ```
pub fn indexed_work_text(steps: &[ExecutionStep]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut text = String::new();
    let mut chars = 0;
    for step in steps {
        let input = &step.input;
        let error = (!input.result.is_success()).then(|| input.result.text());
        for part in [
            Some(input.tool.as_str()),
            Some(input.action.as_str()),
            error,
        ] {
            let Some(part) = part.map(str::trim).filter(|p| !p.is_empty()) else {
                continue;
            };
            if seen.contains(&part) {
                continue;
            }
            let n = part.chars().count() + 1;
            if chars + n > INDEXED_WORK_CHARS {
                return text;
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(part);
            chars += n;
            seen.push(part);
        }
    }
    text
}

/// The text of an episode that lexical search indexes: task with its context words,
/// reflection, and, once it is completed, its work ([`indexed_work_text`]).
pub fn episode_search_text(e: &Episode) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(&task_search_text(&e.task_description, &e.context));
    if let Some(r) = &e.reflection {
        s.push('\n');
        s.push_str(&r.text());
    }
    if e.outcome.is_some() {
        s.push('\n');
        s.push_str(&indexed_work_text(&e.steps));
    }
    s
}
