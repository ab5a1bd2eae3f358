//! Printing: human-readable text, or one JSON document under `--json`.
//!
//! Human output shows stored text through [`crate::display_safe`]: [`clip`] and [`short_id`]
//! already do; other stored text is passed through `display_safe::line` where it is printed.

use std::borrow::Cow;

use serde::Serialize;

use crate::display_safe;

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Shortens `s` to `max` characters on one line, control characters shown escaped.
pub fn clip(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let clipped = if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    };
    display_safe::line(&clipped).into_owned()
}

/// A short form of a 32-hex id for tables (control characters of a stored id shown escaped).
pub fn short_id(id: &str) -> Cow<'_, str> {
    display_safe::line(id.get(..12).unwrap_or(id))
}

/// `0.83` as `83%`.
pub fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}
