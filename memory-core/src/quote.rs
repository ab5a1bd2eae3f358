//! Short quotes of bad values in error messages.
//!
//! An error names what it rejects, but never repeats more than a short prefix of it: a
//! megabyte-long id sent by a client must not come back a megabyte long (twice, over MCP), nor
//! fill a terminal or a log. Every message that quotes an input value builds the quote here.

use std::borrow::Cow;

/// Most characters of a bad value an error message quotes.
pub const QUOTE_MAX_CHARS: usize = 64;

/// `value` cut to its first `max_chars` characters (on a character boundary), followed by
/// `… (N bytes)` with its full length, when it is longer; borrowed when it is not.
///
/// ```
/// use memory_core::cut_to;
/// assert_eq!(cut_to("short", 8), "short");
/// assert_eq!(cut_to("ééééé", 2), "éé… (10 bytes)");
/// ```
pub fn cut_to(value: &str, max_chars: usize) -> Cow<'_, str> {
    match prefix(value, max_chars) {
        None => Cow::Borrowed(value),
        Some(kept) => Cow::Owned(format!("{kept}… ({} bytes)", value.len())),
    }
}

/// The first `max_chars` characters of `value` when it has more; `None` when it has not.
fn prefix(value: &str, max_chars: usize) -> Option<&str> {
    value
        .char_indices()
        .nth(max_chars)
        .map(|(end, _)| &value[..end])
}

/// `value` as an error message shows it, unquoted: at most [`QUOTE_MAX_CHARS`] characters,
/// then `… (N bytes)` when it was cut. Ids short enough are returned unchanged.
///
/// ```
/// use memory_core::cut_value;
/// assert_eq!(cut_value("0123abcd"), "0123abcd");
/// assert!(cut_value(&"x".repeat(1_000_000)).ends_with("… (1000000 bytes)"));
/// ```
pub fn cut_value(value: &str) -> Cow<'_, str> {
    cut_to(value, QUOTE_MAX_CHARS)
}

/// `value` quoted for an error message: its first [`QUOTE_MAX_CHARS`] characters in Rust
/// string syntax (control characters escaped), then `… (N bytes)` outside the quotes when it
/// was cut.
///
/// ```
/// use memory_core::quote_value;
/// assert_eq!(quote_value("cooking"), "\"cooking\"");
/// assert_eq!(quote_value("a\u{1b}b"), "\"a\\u{1b}b\"");
/// let long = quote_value(&"y".repeat(100));
/// assert_eq!(long, format!("\"{}\"… (100 bytes)", "y".repeat(64)));
/// ```
pub fn quote_value(value: &str) -> String {
    match prefix(value, QUOTE_MAX_CHARS) {
        None => format!("{value:?}"),
        Some(kept) => format!("{kept:?}… ({} bytes)", value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_unchanged_and_borrowed() {
        let id = "01936f0e-1b2c-7d3e-8f40-123456789abc";
        assert!(matches!(cut_value(id), Cow::Borrowed(s) if s == id));
        let exactly = "z".repeat(QUOTE_MAX_CHARS);
        assert!(matches!(cut_value(&exactly), Cow::Borrowed(_)));
        assert_eq!(quote_value(&exactly), format!("{exactly:?}"));
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary_with_their_length() {
        let long = "é".repeat(QUOTE_MAX_CHARS + 1);
        let cut = cut_value(&long);
        assert_eq!(
            cut,
            format!("{}… ({} bytes)", "é".repeat(QUOTE_MAX_CHARS), long.len())
        );
        let quoted = quote_value(&long);
        assert!(quoted.starts_with('"'), "{quoted}");
        assert!(
            quoted.ends_with(&format!("\"… ({} bytes)", long.len())),
            "{quoted}"
        );
    }

    #[test]
    fn a_megabyte_value_gives_a_short_quote() {
        let big = "x".repeat(1 << 20);
        assert!(cut_value(&big).len() < 100, "{}", cut_value(&big));
        assert!(quote_value(&big).len() < 100);
        assert!(cut_value(&big).contains("(1048576 bytes)"));
    }

    #[test]
    fn errors_about_a_megabyte_bad_value_stay_short() {
        use std::str::FromStr;

        use crate::Complexity;
        use crate::episode::{EpisodeId, OutcomeKind};
        use crate::error::{Error, ObjectKind};
        use crate::learned::FeedbackOutcome;

        let big = "q".repeat(1 << 20);
        let messages = [
            EpisodeId::from_str(&big).map(|_| ()),
            crate::TaskType::from_str(&big).map(|_| ()),
            Complexity::from_str(&big).map(|_| ()),
            OutcomeKind::from_str(&big).map(|_| ()),
            FeedbackOutcome::from_str(&big).map(|_| ()),
            crate::Namespace::new(big.clone()).map(|_| ()),
            Err(Error::not_found(ObjectKind::Pattern, &big)),
        ];
        for m in messages {
            let text = m.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!text.is_empty());
            assert!(
                text.len() < 300,
                "{} bytes: {}",
                text.len(),
                cut_to(&text, 400)
            );
            assert!(!text.contains(&"q".repeat(QUOTE_MAX_CHARS + 1)));
        }
        // The beginning of the value is still named, so the caller can tell which it was.
        let e = EpisodeId::from_str(&big).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("qqqq") && m.contains("(1048576 bytes)")),
            "{e:?}"
        );
        // A short id is kept whole.
        let short = Error::not_found(ObjectKind::Episode, "abc");
        assert!(matches!(short, Error::NotFound { ref id, .. } if id == "abc"));
    }
}
