//! Text helpers shared by the lexical search of backends.

use crate::episode::{Episode, TaskContext};

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

/// Okapi BM25's term-frequency saturation, shared by every lexical scorer.
pub const BM25_K1: f64 = 1.2;
/// Okapi BM25's length normalisation, shared by every lexical scorer.
pub const BM25_B: f64 = 0.75;

/// The Okapi BM25 weight of one term in one document: `docs` documents in the collection,
/// `df` of them hold the term, `tf` times in this one, which is `len` terms long against an
/// average of `avg_len`. The idf is the always-positive `ln(1 + (N - n + 0.5) / (n + 0.5))`,
/// so a term held by most documents still counts a little.
///
/// ```
/// use memory_core::bm25_weight;
/// let rare = bm25_weight(100.0, 2.0, 1.0, 10.0, 10.0);
/// let common = bm25_weight(100.0, 90.0, 1.0, 10.0, 10.0);
/// assert!(rare > common && common > 0.0);
/// // A longer document weighs the same occurrence less.
/// assert!(bm25_weight(100.0, 2.0, 1.0, 30.0, 10.0) < rare);
/// ```
pub fn bm25_weight(docs: f64, df: f64, tf: f64, len: f64, avg_len: f64) -> f64 {
    if tf <= 0.0 {
        return 0.0;
    }
    let idf = (1.0 + (docs - df + 0.5) / (df + 0.5)).ln();
    let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len / avg_len.max(1.0));
    idf * tf * (BM25_K1 + 1.0) / (tf + norm)
}
