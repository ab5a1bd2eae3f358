//! Printing: human-readable text, or one JSON document under `--json`.
//!
//! Human output shows stored text through [`crate::display_safe`]: [`clip`] and [`short_id`]
//! already do; other stored text is passed through `display_safe::line` where it is printed.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use crate::display_safe;

/// Prints to stdout like `print!`, without panicking when stdout is gone (see [`write_out`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_out(format_args!($($arg)*)) };
}

/// Prints a line to stdout like `println!`, without panicking when stdout is gone (see
/// [`write_out`]).
macro_rules! outln {
    () => { $crate::output::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Prints a line to stderr like `eprintln!`; a closed stderr is ignored.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Set once a write to stdout failed: later output is dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// The first stdout failure that was not a closed pipe, reported when the command ends.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes to stdout. `println!` panics when stdout cannot be written, as when a reader such as
/// `memory episode list | head` stops reading: the command would die with a backtrace in the
/// middle of its work and skip the flush and close of the stack. Here the first failure only
/// stops the output; the command finishes its work and shuts down as usual, and
/// [`stdout_failure`] tells `main` what happened.
pub fn write_out(args: fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            let mut first = STDOUT_ERROR.lock().unwrap_or_else(PoisonError::into_inner);
            first.get_or_insert(e);
        }
    }
}

/// Writes to stderr; a failure is dropped (there is nowhere left to report it).
pub fn write_err(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// The first failure to write stdout other than a closed pipe (a reader that stopped reading
/// is an ordinary way to end a listing), after flushing what is buffered.
pub fn stdout_failure() -> Option<io::Error> {
    if !STDOUT_GONE.load(Ordering::Relaxed)
        && let Err(e) = io::stdout().lock().flush()
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Some(e);
    }
    STDOUT_ERROR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
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
