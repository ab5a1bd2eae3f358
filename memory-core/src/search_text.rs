//! The texts lexical search indexes: a task with its context words, and a whole episode.

use crate::episode::{Episode, TaskContext};

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

/// The text of an episode that lexical search indexes: task with its context words,
/// reflection, and step actions and results.
pub fn episode_search_text(e: &Episode) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(&task_search_text(&e.task_description, &e.context));
    if let Some(r) = &e.reflection {
        s.push('\n');
        s.push_str(&r.text());
    }
    for step in &e.steps {
        s.push('\n');
        s.push_str(&step.input.tool);
        s.push(' ');
        s.push_str(&step.input.action);
        s.push(' ');
        s.push_str(step.input.result.text());
    }
    s
}
