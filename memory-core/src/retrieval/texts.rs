//! What is embedded: an episode's task with its context words and its work (the distinct step
//! actions and errors), a query's texts, and the key their vectors are stored under.

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
/// assert_eq!(vector_key("all-MiniLM-L6-v2", &default), "all-MiniLM-L6-v2;ctx;work=0.50");
/// let config = RetrievalConfig { work_weight: 0.0, ..RetrievalConfig::default() };
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
    key
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
