//! Text made safe for a terminal before the human output prints it.
//!
//! Stored text (task descriptions, step actions and outputs, verdicts, lessons, tool names)
//! and text typed on the command line can hold terminal control sequences: an OSC 52
//! clipboard write (`ESC ] 52 ; c ; ... BEL`), cursor movement or screen clearing (`ESC [ 2J`),
//! a carriage return that overwrites the line, or a bidi override (U+202E) that reorders what
//! is shown. Printed as they are, the terminal obeys them. Every human print site of such text
//! goes through [`line()`] or [`text`], which show those characters as escapes (`\x1b`,
//! `\u{202e}`) instead. `--json` output never goes through here: serde's escapes keep it exact.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is shown escaped: C0 controls (tab excepted, newline unless `keep_newlines`),
/// DEL, C1 controls, and the bidi embedding, override and isolate controls.
fn escaped(c: char, keep_newlines: bool) -> bool {
    match c {
        '\t' => false,
        '\n' => !keep_newlines,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| escaped(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !escaped(c, keep_newlines) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c)),
            c => write!(out, "\\u{{{:x}}}", u32::from(c)),
        };
    }
    Cow::Owned(out)
}

/// `s` for one line of output: every control character, newlines included, shown escaped
/// (tabs stay). Borrowed when there is nothing to escape.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// `s` for multi-line output (error messages, reports): as [`line()`], but newlines stay.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// Whether [`line()`] would change `s`.
pub fn needs_escape(s: &str) -> bool {
    s.chars().any(|c| escaped(c, false))
}

/// A path for one line of output.
pub fn path(p: &std::path::Path) -> String {
    line(&p.display().to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "add rate limiting",
            "tab\tstays",
            "naïve café → ok 日本語 🦀",
        ] {
            assert!(matches!(line(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
        assert!(matches!(text("two\nlines"), Cow::Borrowed("two\nlines")));
    }

    #[test]
    fn terminal_sequences_are_shown_escaped() {
        let osc52 = "copy \u{1b}]52;c;aGk=\u{7} done";
        assert_eq!(line(osc52), "copy \\x1b]52;c;aGk=\\x07 done");
        assert_eq!(line("\u{1b}[2J\u{1b}[H"), "\\x1b[2J\\x1b[H");
        assert_eq!(line("ok\rFAKE"), "ok\\rFAKE");
        assert_eq!(line("a\nb"), "a\\nb");
        assert_eq!(text("a\nb\u{1b}"), "a\nb\\x1b");
        assert_eq!(line("\u{0}\u{7f}"), "\\x00\\x7f");
        assert_eq!(line("c1 \u{9b}2J \u{85}"), "c1 \\u{9b}2J \\u{85}");
        assert_eq!(
            line("file\u{202e}gpj.exe"),
            "file\\u{202e}gpj.exe",
            "right-to-left override"
        );
        for c in [
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2066}', '\u{2069}',
        ] {
            assert!(line(&c.to_string()).starts_with("\\u{20"), "{c:?}");
        }
    }

    #[test]
    fn no_control_character_survives() {
        let all: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        for (out, keep) in [(line(&all), false), (text(&all), true)] {
            for c in out.chars() {
                let allowed = c == '\t' || (keep && c == '\n');
                assert!(
                    allowed
                        || !(c.is_control()
                            || ('\u{202a}'..='\u{202e}').contains(&c)
                            || ('\u{2066}'..='\u{2069}').contains(&c)),
                    "{c:?} left in the output"
                );
            }
        }
    }
}
