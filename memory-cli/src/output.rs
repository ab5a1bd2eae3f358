//! Printing: human-readable text, or one JSON document under `--json`.

use serde::Serialize;

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Shortens `s` to `max` characters on one line.
pub fn clip(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut t: String = one_line.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// A short form of a 32-hex id for tables.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `0.83` as `83%`.
pub fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}
