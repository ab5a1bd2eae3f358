//! Text helpers shared by the lexical search of backends.

use crate::episode::Episode;

/// Words too common in agent task text to carry meaning.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "of",
    "on", "or", "that", "the", "this", "to", "with",
];

/// Lowercase alphanumeric terms of at least two characters, stopwords removed.
///
/// ```
/// use memory_core::tokenize;
/// assert_eq!(tokenize("Fix the flaky CI test!"), vec!["fix", "flaky", "ci", "test"]);
/// ```
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// The text of an episode that lexical search indexes: task, reflection, and step actions and
/// results.
pub fn episode_search_text(e: &Episode) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(&e.task_description);
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
