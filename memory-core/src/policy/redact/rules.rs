//! The rule table: the built-in rules (parsed from `redaction_rules.txt`) and the custom
//! patterns, compiled together, and the redaction passes that apply them.

use std::borrow::Cow;
use std::ops::Range;

use regex::{Regex, RegexSet};

use super::checks::{Check, secret_range};
use super::{EXTRA_PATTERNS_FIELD, MARKER_PREFIX};
use crate::error::Error;

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    /// The `<kind>` of its replacement.
    kind: &'static str,
    /// The rule's own regex (also part of the shared set).
    regex: Regex,
    /// How matches are validated.
    check: Check,
}

/// Compiled state shared by clones of a [`Redactor`](super::Redactor).
#[derive(Debug)]
pub(super) struct Inner {
    /// All rule patterns; one scan tells which rules can match at all.
    set: RegexSet,
    /// Rules in priority order: where matches overlap, the first rule names the kind.
    rules: Vec<Rule>,
    /// Finds existing `[REDACTED:<kind>]` markers, which are never redacted again.
    marker: Regex,
}

/// `key`, optional closing quote, separator (`=`, `:`, `:=`, `=>`, or a type annotation
/// `: Type =`), spaces. Never crosses a line. Written `{sep}` in the rules.
const SEP: &str = r#"(?P<kq>\\?["'])?[ \t]*(?P<op>:=|=>|=|:(?:[ \t]*(?P<ty>&?[A-Za-z_][A-Za-z0-9_:<>]*)[ \t]+=[ \t])?)[ \t]*"#;

/// A double-quoted, single-quoted or bare value. Written `{value}` in the rules.
const VALUE: &str =
    r#"(?:\\?"(?P<dq>[^"\\\r\n]+)|\\?'(?P<sq>[^'\\\r\n]+)|(?P<bare>[^\s"',;\\`]+))"#;

/// The built-in rules in priority order, as data: a `<kind> <check>` line, then the pattern.
const BUILTIN: &str = include_str!("../redaction_rules.txt");

/// The built-in rules, parsed: `(kind, pattern, check)` with `{sep}` and `{value}` expanded.
fn builtin_rules() -> crate::error::Result<Vec<(&'static str, String, Check)>> {
    let invalid = |what: String| Error::invalid("redaction.builtin", what);
    let mut lines = BUILTIN
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let mut rules = Vec::new();
    while let Some(head) = lines.next() {
        let (kind, check) = head
            .split_once(' ')
            .and_then(|(kind, check)| Some((kind, Check::from_name(check)?)))
            .ok_or_else(|| invalid(format!("{head:?} is not `<kind> <check>`")))?;
        let pattern = lines
            .next()
            .ok_or_else(|| invalid(format!("rule {kind} has no pattern")))?;
        let pattern = pattern.replace("{sep}", SEP).replace("{value}", VALUE);
        rules.push((kind, pattern, check));
    }
    Ok(rules)
}

impl Inner {
    /// Compiles the built-in rules followed by the (already compiled) custom ones.
    pub(super) fn new(custom: Vec<Regex>) -> crate::error::Result<Self> {
        let builtin_error =
            |e: regex::Error| Error::invalid("redaction.builtin", format!("does not compile: {e}"));
        let builtin = builtin_rules()?;
        let mut rules = Vec::with_capacity(builtin.len() + custom.len());
        for (kind, pattern, check) in builtin {
            rules.push(Rule {
                kind,
                regex: Regex::new(&pattern).map_err(builtin_error)?,
                check,
            });
        }
        rules.extend(custom.into_iter().map(|regex| Rule {
            kind: "custom",
            regex,
            check: Check::Always,
        }));
        let set = RegexSet::new(rules.iter().map(|r| r.regex.as_str())).map_err(|e| {
            Error::invalid(
                EXTRA_PATTERNS_FIELD,
                format!("patterns do not compile together: {e}"),
            )
        })?;
        let marker = Regex::new(r"\[REDACTED:[a-z_]+\]").map_err(builtin_error)?;
        Ok(Self { set, rules, marker })
    }

    /// Renames the keys of `map` that hold a secret (a token used as a key).
    pub(super) fn redact_keys(&self, map: &mut serde_json::Map<String, serde_json::Value>) {
        let renamed: Vec<(String, String)> = map
            .keys()
            .filter_map(|k| match self.redact(k) {
                Cow::Owned(new) => Some((k.clone(), new)),
                Cow::Borrowed(_) => None,
            })
            .collect();
        for (old, new) in renamed {
            let Some(value) = map.remove(&old) else {
                continue;
            };
            let mut key = new.clone();
            let mut n = 2;
            while map.contains_key(&key) {
                key = format!("{new}#{n}");
                n += 1;
            }
            map.insert(key, value);
        }
    }

    pub(super) fn redact_in_place(&self, text: &mut String) {
        let redacted = match self.redact(text) {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        };
        if let Some(s) = redacted {
            *text = s;
        }
    }

    pub(super) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        /// Bound on extra passes; real text settles after one.
        const MAX_EXTRA_PASSES: usize = 8;
        let Some(mut out) = self.redact_once(text) else {
            return Cow::Borrowed(text);
        };
        // Some checks look at context (a `let` before the key, a quote after the value) that a
        // redaction can change, so repeat until nothing changes: that makes redaction
        // idempotent. Each pass only turns unredacted text into markers, so this ends.
        for _ in 0..MAX_EXTRA_PASSES {
            match self.redact_once(&out) {
                Some(next) => out = next,
                None => break,
            }
        }
        Cow::Owned(out)
    }

    /// One redaction pass; `None` when nothing was redacted.
    fn redact_once(&self, text: &str) -> Option<String> {
        // Most text holds no secret: a plain search that may stop at the first match is
        // cheaper than finding every rule that matches (no overlapping search, no set of
        // rules to allocate), so that comes first.
        if !self.set.is_match(text) {
            return None;
        }
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return None;
        }
        // (range, rule index) of every accepted match.
        let mut spans: Vec<(Range<usize>, usize)> = Vec::new();
        for index in &matched {
            let Some(rule) = self.rules.get(index) else {
                continue;
            };
            for caps in rule.regex.captures_iter(text) {
                if let Some(range) = secret_range(rule.check, text, &caps)
                    && !range.is_empty()
                {
                    spans.push((range, index));
                }
            }
        }
        // Existing markers are never redacted again: that keeps redaction idempotent even for
        // custom patterns that happen to match a marker.
        if !spans.is_empty() && text.contains(MARKER_PREFIX) {
            let markers: Vec<Range<usize>> =
                self.marker.find_iter(text).map(|m| m.range()).collect();
            spans.retain(|(range, _)| {
                let first = markers.partition_point(|m| m.end <= range.start);
                markers.get(first).is_none_or(|m| m.start >= range.end)
            });
        }
        if spans.is_empty() {
            return None;
        }
        // Overlapping matches are merged; the highest-priority rule names the kind.
        spans.sort_unstable_by_key(|(range, _)| (range.start, range.end));
        let mut merged: Vec<(Range<usize>, usize)> = Vec::with_capacity(spans.len());
        for (range, index) in spans {
            match merged.last_mut() {
                Some((last, last_index)) if range.start < last.end => {
                    last.end = last.end.max(range.end);
                    *last_index = (*last_index).min(index);
                }
                _ => merged.push((range, index)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, index) in merged {
            let kind = self.rules.get(index).map_or("custom", |r| r.kind);
            out.push_str(&text[at..range.start]);
            out.push_str(MARKER_PREFIX);
            out.push_str(kind);
            out.push(']');
            at = range.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}
