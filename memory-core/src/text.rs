//! Text: the one tokenizer every lexical scorer uses, BM25's term weight, and the
//! normalization of tool names, labels and error messages that learned items are keyed on.

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
    let mut terms = Vec::new();
    for_each_token(text, |t| terms.push(t.to_owned()));
    terms
}

/// Calls `f` with each term [`tokenize`] returns, in order, without allocating a string per
/// term (one buffer is reused): for indexing large texts.
///
/// ```
/// use memory_core::for_each_token;
/// let mut seen = Vec::new();
/// for_each_token("Fix the flaky CI test!", |t| seen.push(t.to_owned()));
/// assert_eq!(seen, memory_core::tokenize("Fix the flaky CI test!"));
/// ```
pub fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    let mut lower = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        let long_enough = if word.is_ascii() {
            word.len() >= 2
        } else {
            word.chars().nth(1).is_some()
        };
        if !long_enough {
            continue;
        }
        lower.clear();
        if word.is_ascii() {
            lower.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        } else {
            lower.push_str(&word.to_lowercase());
        }
        if !STOPWORDS.contains(&lower.as_str()) {
            f(&lower);
        }
    }
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

/// Normalizes a tool name: trimmed, lowercase.
pub fn normalize_tool(tool: &str) -> String {
    tool.trim().to_ascii_lowercase()
}

/// Longest error class, in characters.
const MAX_ERROR_CLASS_CHARS: usize = 80;

/// Reduces an error message to its class: the first non-empty line, lowercased, with numbers,
/// quoted text, paths and hex ids replaced by placeholders, at most 10 words.
///
/// `"error[E0308]: mismatched types at src/main.rs:10:5"` and
/// `"error[E0308]: mismatched types at src/lib.rs:99:1"` share the class
/// `"error[e#]: mismatched types at <path>"`.
///
/// ```
/// use memory_core::error_class;
/// assert_eq!(
///     error_class("Connection refused (os error 111) to 10.0.0.7:5432"),
///     error_class("connection refused (os error 61) to 192.168.1.2:6543"),
/// );
/// ```
pub fn error_class(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = mask_quoted(line);
    let mut words = Vec::new();
    for raw in line.split_whitespace() {
        if words.len() == 10 {
            break;
        }
        let w = raw.to_lowercase();
        let word = if w.contains("<q>") {
            "<q>".to_owned()
        } else if w.contains('/') || w.contains('\\') {
            "<path>".to_owned()
        } else {
            collapse_digits(&w)
        };
        if words.last() != Some(&word) {
            words.push(word);
        }
    }
    let mut class = words.join(" ");
    if class.chars().count() > MAX_ERROR_CLASS_CHARS {
        class = class.chars().take(MAX_ERROR_CLASS_CHARS).collect();
    }
    class
}

/// Replaces each quoted span (`'…'`, `"…"` or `` `…` ``, possibly several words) with `<q>`.
/// A quote opens a span only at the start of a word and only when it is closed on the line, so
/// apostrophes in words (`don't`) are left alone.
fn mask_quoted(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at_word_start = i == 0 || !chars[i - 1].is_alphanumeric();
        if matches!(c, '\'' | '"' | '`')
            && at_word_start
            && let Some(len) = chars[i + 1..].iter().position(|&d| d == c)
        {
            out.push_str("<q>");
            i += len + 2;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Replaces each run of digits (and hex runs of 8+ that contain a digit) with `#`.
fn collapse_digits(w: &str) -> String {
    let looks_hex = w.len() >= 8
        && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && w.chars().any(|c| c.is_ascii_digit());
    if looks_hex {
        return "#".to_owned();
    }
    let mut out = String::with_capacity(w.len());
    let mut in_digits = false;
    for c in w.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out
}

/// Collapses consecutive repeats: `[a, a, b, a] -> [a, b, a]`, normalizing each tool.
pub fn collapse_tools<'a>(tools: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tools {
        let t = normalize_tool(t);
        if out.last() != Some(&t) {
            out.push(t);
        }
    }
    out
}

/// Normalizes a domain, language or framework name: trimmed, lowercase; empty becomes `None`.
pub fn normalize_label(s: Option<&str>) -> Option<String> {
    s.map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The tokenizer's definition, written the plain way.
    fn reference(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 2)
            .map(str::to_lowercase)
            .filter(|w| !STOPWORDS.contains(&w.as_str()))
            .collect()
    }

    proptest! {
        #[test]
        fn the_token_visitor_follows_the_definition(text in "[ -~àéÉİßΣσ日本\\n]{0,80}") {
            prop_assert_eq!(tokenize(&text), reference(&text));
        }
    }

    #[test]
    fn the_token_visitor_handles_unicode_words() {
        for text in [
            "Über CAFÉ İstanbul ΣΟΦΊΑ",
            "a b cd É日 本x",
            "The AND of it is",
        ] {
            assert_eq!(tokenize(text), reference(text), "{text}");
        }
    }

    #[test]
    fn error_classes_group_variants() {
        assert_eq!(
            error_class("error[E0308]: mismatched types at src/main.rs:10:5"),
            error_class("error[E0308]: mismatched types at src/lib.rs:99:1")
        );
        assert_ne!(
            error_class("permission denied"),
            error_class("connection refused")
        );
        assert_eq!(
            error_class("\n\n  Timeout after 3000ms\nmore"),
            "timeout after #ms"
        );
    }
}
