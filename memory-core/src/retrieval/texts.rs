//! What is embedded: an episode's task with its context words and its work (the distinct step
//! actions and errors), windows over its steps, a query's texts, and the key their vectors are
//! stored under; and which step of an episode a query matched.

use std::fmt::Write as _;
use std::sync::Arc;

use super::query::RetrievalConfig;
use crate::embedding::Embedder;
use crate::episode::{Episode, TaskContext, TaskType};
use crate::error::{Error, Result};

/// The text embedded for an episode or a query: the task, then its context in words. Only
/// this short text is embedded (not the steps): it is what a new task is compared by, and it
/// keeps the embedder at ~40-70 texts/s on two cores instead of ~8 for step-length texts.
///
/// ```
/// use memory_core::{retrieval::embedding_text, TaskContext, TaskType};
/// let ctx = TaskContext::new("web_api").with_language("python").with_framework("fastapi");
/// assert_eq!(
///     embedding_text("add rate limiting", Some(TaskType::CodeGeneration), Some(&ctx)),
///     "add rate limiting (code generation; web api; python; fastapi)"
/// );
/// assert_eq!(embedding_text("add rate limiting", None, None), "add rate limiting");
/// ```
pub fn embedding_text(
    task: &str,
    task_type: Option<TaskType>,
    context: Option<&TaskContext>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(t) = task_type {
        parts.push(t.as_str().replace('_', " "));
    }
    if let Some(c) = context {
        if !c.domain.is_empty() {
            parts.push(c.domain.replace('_', " "));
        }
        parts.extend(c.language.iter().cloned());
        parts.extend(c.framework.iter().cloned());
        parts.extend(c.descriptive_tags().cloned());
    }
    let mut text = task.trim().to_owned();
    if !parts.is_empty() {
        let _ = write!(text, " ({})", parts.join("; "));
    }
    text
}

/// The key episode vectors made with `model` under `config` are stored under (see
/// [`Retriever::vector_key`](super::Retriever::vector_key)).
///
/// ```
/// use memory_core::retrieval::{RetrievalConfig, vector_key};
/// let default = RetrievalConfig::default();
/// assert_eq!(vector_key("all-MiniLM-L6-v2", &default), "all-MiniLM-L6-v2;ctx;work=0.50;win=16x480");
/// let config = RetrievalConfig { work_weight: 0.0, step_windows: 0, ..RetrievalConfig::default() };
/// assert_eq!(vector_key("all-MiniLM-L6-v2", &config), "all-MiniLM-L6-v2;ctx");
/// ```
pub fn vector_key(model: &str, config: &RetrievalConfig) -> String {
    let mut key = model.to_owned();
    if config.embed_context {
        key.push_str(";ctx");
    }
    if config.work_weight > 0.0 {
        let _ = write!(key, ";work={:.2}", config.work_weight);
    }
    if config.step_windows > 0 {
        let _ = write!(key, ";win={}x{WINDOW_CHARS}", config.step_windows);
    }
    key
}

/// Longest step window in characters (about 110 word pieces: the length MiniLM was trained
/// on is 128). A window ends before the step that would take it past this; a single longer
/// step is cut here.
pub const WINDOW_CHARS: usize = 480;

/// Longest step result (output or error) kept in a window line, in characters.
pub const WINDOW_RESULT_CHARS: usize = 160;

/// Consecutive steps of an episode embedded as one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepWindow {
    /// Number of its first step.
    pub first_step: u32,
    /// Number of its last step.
    pub last_step: u32,
    /// What is embedded: one line per step, its action then (after ` -> `) the start of its
    /// result.
    pub text: String,
}

/// One step as a window line: its action and the start of its result.
fn step_line(step: &crate::episode::ExecutionStep) -> String {
    let mut line = step.input.action.trim().to_owned();
    let result: String = step
        .input
        .result
        .text()
        .trim()
        .chars()
        .take(WINDOW_RESULT_CHARS)
        .collect();
    if !result.is_empty() {
        if !line.is_empty() {
            line.push_str(" -> ");
        }
        line.push_str(&result);
    }
    line.chars().take(WINDOW_CHARS).collect()
}

/// An episode's steps in windows of consecutive steps, each up to [`WINDOW_CHARS`], in step
/// order; at most `max` windows (the steps after them are left out: BM25 still sees them).
/// Steps with neither action nor result text are passed over. The windows are a pure
/// function of the steps, so a window's number found in the index names the same steps
/// whenever it is recomputed.
///
/// ```
/// use chrono::Utc;
/// use memory_core::{
///     retrieval::step_windows, Episode, ExecutionStep, NewEpisode, StepInput, TaskContext, TaskType,
/// };
/// let new = NewEpisode::new("talk about the trip", TaskType::Other, TaskContext::new("chat"));
/// let mut e = Episode::start(new, Utc::now());
/// for (n, line) in ["we went to Lisbon", "the tram was full", &"x".repeat(500)].into_iter().enumerate() {
///     let input = StepInput::ok("message", line, "");
///     e.steps.push(ExecutionStep { step_number: n as u32 + 1, key: ExecutionStep::new_key(), timestamp: Utc::now(), input });
/// }
/// let windows = step_windows(&e, 16);
/// assert_eq!(windows.len(), 2);
/// assert_eq!((windows[0].first_step, windows[0].last_step), (1, 2));
/// assert_eq!(windows[0].text, "we went to Lisbon\nthe tram was full");
/// assert_eq!(windows[1].text.chars().count(), 480);
/// assert_eq!(step_windows(&e, 1).len(), 1);
/// ```
pub fn step_windows(episode: &Episode, max: usize) -> Vec<StepWindow> {
    let mut windows: Vec<StepWindow> = Vec::new();
    let mut open: Option<StepWindow> = None;
    for step in &episode.steps {
        let line = step_line(step);
        if line.is_empty() {
            continue;
        }
        let fits = open
            .as_ref()
            .is_some_and(|w| w.text.chars().count() + 1 + line.chars().count() <= WINDOW_CHARS);
        match open.as_mut() {
            Some(w) if fits => {
                w.text.push('\n');
                w.text.push_str(&line);
                w.last_step = step.step_number;
            }
            _ => {
                if let Some(done) = open.take() {
                    windows.push(done);
                }
                if windows.len() == max {
                    return windows;
                }
                open = Some(StepWindow {
                    first_step: step.step_number,
                    last_step: step.step_number,
                    text: line,
                });
            }
        }
    }
    windows.extend(open);
    windows
}

/// The step of an episode a query matched, as a `why` names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MatchedStep {
    /// The step's number.
    pub step_number: u32,
    /// The start of its text (action, then result), up to [`EXCERPT_CHARS`].
    pub excerpt: String,
}

/// Longest excerpt of a [`MatchedStep`], in characters.
pub const EXCERPT_CHARS: usize = 100;

/// The step of `episode` that shares the most terms with `query` (each distinct query term
/// of three or more characters, as [`tokenize`](crate::tokenize) finds them, counted once), within step window `window`
/// (as numbered by [`step_windows`] with `max_windows`) when one is given, else among all
/// steps; ties go to the earlier step. `None` when no step shares a word; within a window
/// that shares none, its first step.
///
/// ```
/// use chrono::Utc;
/// use memory_core::{
///     retrieval::matched_step, Episode, ExecutionStep, NewEpisode, StepInput, TaskContext, TaskType,
/// };
/// let new = NewEpisode::new("talk about the trip", TaskType::Other, TaskContext::new("chat"));
/// let mut e = Episode::start(new, Utc::now());
/// for (n, line) in ["we went to Lisbon", "the tram to Belem was full"].into_iter().enumerate() {
///     let input = StepInput::ok("message", line, "");
///     e.steps.push(ExecutionStep { step_number: n as u32 + 1, key: ExecutionStep::new_key(), timestamp: Utc::now(), input });
/// }
/// let m = matched_step(&e, "Which tram did they take?", None, 16).unwrap();
/// assert_eq!((m.step_number, m.excerpt.as_str()), (2, "the tram to Belem was full"));
/// assert!(matched_step(&e, "a recipe for soup", None, 16).is_none());
/// ```
pub fn matched_step(
    episode: &Episode,
    query: &str,
    window: Option<u16>,
    max_windows: usize,
) -> Option<MatchedStep> {
    let words: std::collections::HashSet<String> = crate::text::tokenize(query)
        .into_iter()
        .filter(|w| w.chars().count() >= 3)
        .collect();
    let range = match window {
        Some(w) => {
            let windows = step_windows(episode, max_windows);
            let win = windows.get(usize::from(w))?;
            Some((win.first_step, win.last_step))
        }
        None => None,
    };
    let mut best: Option<(usize, &crate::episode::ExecutionStep)> = None;
    for step in &episode.steps {
        if range.is_some_and(|(a, b)| step.step_number < a || step.step_number > b) {
            continue;
        }
        let line = step_line(step);
        if line.is_empty() {
            continue;
        }
        let shared = crate::text::tokenize(&line)
            .into_iter()
            .collect::<std::collections::HashSet<String>>()
            .intersection(&words)
            .count();
        let better = match best {
            None => range.is_some() || shared > 0,
            Some((b, _)) => shared > b,
        };
        if better {
            best = Some((shared, step));
        }
    }
    best.map(|(_, step)| MatchedStep {
        step_number: step.step_number,
        excerpt: excerpt(&step_line(step)),
    })
}

/// `text` cut to [`EXCERPT_CHARS`] at a word boundary when one is near, with an ellipsis.
fn excerpt(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= EXCERPT_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(EXCERPT_CHARS - 1).collect();
    let at = cut
        .rfind(' ')
        .filter(|&i| i > EXCERPT_CHARS / 2)
        .unwrap_or(cut.len());
    format!("{}…", &cut[..at])
}

/// Most characters of step actions in a [`work_text`] (whole actions only).
pub const WORK_ACTION_CHARS: usize = 320;

/// Most distinct error messages in a [`work_text`], each cut to [`WORK_ERROR_CHARS`].
pub const WORK_ERRORS: usize = 3;

/// Longest error message kept in a [`work_text`], in characters.
pub const WORK_ERROR_CHARS: usize = 120;

/// What was done in an episode, as embedded with its task: the distinct step actions in
/// order (up to [`WORK_ACTION_CHARS`]), then the distinct error messages of failed steps (at
/// most [`WORK_ERRORS`], each cut to [`WORK_ERROR_CHARS`]). Tool names and outputs are left
/// out: they are shared by every kind of task and would pull all vectors together. The caps
/// bound the embedding cost of a long episode at about 170 tokens. Empty for an episode
/// without steps.
///
/// ```
/// use chrono::Utc;
/// use memory_core::{
///     retrieval::work_text, Episode, ExecutionStep, NewEpisode, StepInput, TaskContext, TaskType,
/// };
/// let new = NewEpisode::new("fix the flaky test", TaskType::Testing, TaskContext::new("testing"));
/// let mut e = Episode::start(new, Utc::now());
/// for (n, input) in [
///     StepInput::ok("shell", "run the tests", "ok"),
///     StepInput::error("shell", "run the tests", "assertion failed at midnight"),
///     StepInput::ok("edit_file", "inject a fake clock", "edit applied"),
/// ]
/// .into_iter()
/// .enumerate()
/// {
///     e.steps.push(ExecutionStep { step_number: n as u32 + 1, key: ExecutionStep::new_key(), timestamp: Utc::now(), input });
/// }
/// assert_eq!(
///     work_text(&e),
///     "run the tests; inject a fake clock. errors: assertion failed at midnight"
/// );
/// ```
pub fn work_text(episode: &Episode) -> String {
    let mut actions: Vec<&str> = Vec::new();
    let mut action_chars = 0;
    let mut errors: Vec<&str> = Vec::new();
    for step in &episode.steps {
        let action = step.input.action.trim();
        let chars = action.chars().count() + 2;
        if !action.is_empty()
            && action_chars + chars <= WORK_ACTION_CHARS
            && !actions.contains(&action)
        {
            actions.push(action);
            action_chars += chars;
        }
        let result = &step.input.result;
        let error = result.text().trim();
        if !result.is_success()
            && !error.is_empty()
            && errors.len() < WORK_ERRORS
            && !errors.contains(&error)
        {
            errors.push(error);
        }
    }
    let mut text = actions.join("; ");
    if !errors.is_empty() {
        let cut: Vec<String> = errors
            .iter()
            .map(|e| e.chars().take(WORK_ERROR_CHARS).collect())
            .collect();
        if !text.is_empty() {
            text.push_str(". ");
        }
        let _ = write!(text, "errors: {}", cut.join("; "));
    }
    text
}

/// Embeds `texts`; an embedder that answers with a different number of vectors is an error
/// (pairing vectors with texts by position would then mislabel them).
pub(crate) async fn embed_all(
    embedder: &Arc<dyn Embedder>,
    texts: &[String],
) -> Result<Vec<Vec<f32>>> {
    let vectors = embedder.embed(texts).await?;
    if vectors.len() != texts.len() {
        return Err(Error::storage(
            "embedder",
            "embed",
            false,
            format!(
                "returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            ),
        ));
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::episode::{ExecutionStep, NewEpisode, StepInput};

    fn episode(steps: Vec<StepInput>) -> Episode {
        let new = NewEpisode::new("task", TaskType::Other, TaskContext::new("general"));
        let mut e = Episode::start(new, Utc::now());
        for (n, input) in steps.into_iter().enumerate() {
            e.steps.push(ExecutionStep {
                step_number: n as u32 + 1,
                key: ExecutionStep::new_key(),
                timestamp: Utc::now(),
                input,
            });
        }
        e
    }

    #[test]
    fn windows_cover_the_steps_in_order_and_name_the_matched_one() {
        let mut steps = Vec::new();
        for i in 0..60 {
            steps.push(StepInput::ok(
                "message",
                format!("turn {i}: we talked about the weather and the garden again"),
                "",
            ));
        }
        steps[41] = StepInput::error(
            "shell",
            "deploy the billing service",
            format!(
                "connection refused by the payments gateway {}",
                "z".repeat(300)
            ),
        );
        let e = episode(steps);
        let windows = step_windows(&e, 64);
        // Consecutive, in order, each within its length, every step in one window.
        let mut next = 1;
        for w in &windows {
            assert_eq!(w.first_step, next);
            assert!(w.last_step >= w.first_step);
            assert!(w.text.chars().count() <= WINDOW_CHARS);
            next = w.last_step + 1;
        }
        assert_eq!(next, 61);
        // A cap keeps the first windows.
        assert_eq!(step_windows(&e, 2), windows[..2].to_vec());
        // Within the window that matched: the step sharing most terms; its result is cut.
        let at = windows
            .iter()
            .position(|w| w.first_step <= 42 && 42 <= w.last_step);
        let at = u16::try_from(at.unwrap()).unwrap();
        let m = matched_step(&e, "why was the payments gateway refusing?", Some(at), 64).unwrap();
        assert_eq!(m.step_number, 42);
        assert!(
            m.excerpt
                .starts_with("deploy the billing service -> connection refused")
        );
        assert!(m.excerpt.chars().count() <= EXCERPT_CHARS && m.excerpt.ends_with('…'));
        // A window that shares no term names its first step; one past the end, none.
        let m = matched_step(&e, "payments", Some(0), 64).unwrap();
        assert_eq!(m.step_number, 1);
        assert!(matched_step(&e, "payments", Some(500), 64).is_none());
        // Over all steps, the one sharing a term.
        assert_eq!(
            matched_step(&e, "payments", None, 64).unwrap().step_number,
            42
        );
    }

    #[test]
    fn work_text_of_a_long_episode_stays_within_its_caps() {
        let mut steps = Vec::new();
        for i in 0..200 {
            steps.push(StepInput::ok(
                "shell",
                format!("run step number {i} of the plan"),
                "ok",
            ));
            steps.push(StepInput::error(
                "shell",
                format!("retry step {i}"),
                format!("error {i}: {}", "x".repeat(500)),
            ));
        }
        let text = work_text(&episode(steps));
        let bound = WORK_ACTION_CHARS + ". errors: ".len() + WORK_ERRORS * (WORK_ERROR_CHARS + 2);
        assert!(text.chars().count() <= bound, "{} > {bound}", text.len());
        assert!(text.starts_with("run step number 0 of the plan; retry step 0"));
        assert_eq!(text.matches("error ").count(), WORK_ERRORS, "{text}");
        // Repeated actions and errors count once.
        let same = vec![StepInput::error("shell", "build", "boom"); 5];
        assert_eq!(work_text(&episode(same)), "build. errors: boom");
        assert_eq!(work_text(&episode(Vec::new())), "");
    }
}
