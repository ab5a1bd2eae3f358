//! Deterministic normalization and identities for learned items.
//!
//! Everything here is a pure function of its input, so the same tool sequence, error or
//! condition always yields the same id, on every machine and in every process.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::episode::TaskType;

/// A 128-bit hex digest of `parts`, separated so that `["ab","c"]` and `["a","bc"]` differ.
pub(crate) fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    digest[..16]
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
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

/// The part of a task's context a learned item is conditioned on. `None` fields match any value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ContextKey {
    /// Task type, if the item depends on it.
    pub task_type: Option<TaskType>,
    /// Domain, if the item depends on it.
    pub domain: Option<String>,
    /// Language, if the item depends on it.
    pub language: Option<String>,
}

impl ContextKey {
    /// Text used inside identities.
    pub(crate) fn signature(&self) -> String {
        format!(
            "{}|{}|{}",
            self.task_type.map_or("*", TaskType::as_str),
            self.domain.as_deref().unwrap_or("*"),
            self.language.as_deref().unwrap_or("*"),
        )
    }

    /// True when every set field equals the given value (unset fields match anything; an
    /// unset query value matches anything too).
    pub fn matches(
        &self,
        task_type: Option<TaskType>,
        domain: Option<&str>,
        language: Option<&str>,
    ) -> bool {
        fn ok<T: PartialEq + ?Sized>(mine: Option<&T>, want: Option<&T>) -> bool {
            match (mine, want) {
                (Some(m), Some(w)) => m == w,
                _ => true,
            }
        }
        ok(self.task_type.as_ref(), task_type.as_ref())
            && ok(self.domain.as_deref(), domain)
            && ok(self.language.as_deref(), language)
    }

    /// A human-readable label such as `debugging in web_api/rust`.
    pub fn label(&self) -> String {
        let place = match (&self.domain, &self.language) {
            (Some(d), Some(l)) => format!("{d}/{l}"),
            (Some(d), None) => d.clone(),
            (None, Some(l)) => l.clone(),
            (None, None) => "any context".to_owned(),
        };
        match self.task_type {
            Some(t) => format!("{t} in {place}"),
            None => place,
        }
    }
}

/// Normalizes a domain, language or framework name: trimmed, lowercase; empty becomes `None`.
pub fn normalize_label(s: Option<&str>) -> Option<String> {
    s.map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stable_ids_are_stable_and_separated() {
        assert_eq!(stable_id(&["a", "b"]), stable_id(&["a", "b"]));
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
        assert_eq!(stable_id(&["x"]).len(), 32);
    }
}
