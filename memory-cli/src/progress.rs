//! Progress on stderr for long commands: bars where the amount of work is known, a spinner
//! where it is not. Hidden under `--quiet` and `--json`, and when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::settings::Settings;

fn shown(s: &Settings) -> bool {
    !s.quiet && !s.json && std::io::stderr().is_terminal()
}

/// A bar over `len` items, labelled `what`.
pub fn bar(len: u64, what: &str, s: &Settings) -> ProgressBar {
    if !shown(s) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A bar over `len` bytes, labelled `what`.
pub fn bytes(len: u64, what: &str, s: &Settings) -> ProgressBar {
    if !shown(s) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

/// A spinner with the elapsed time, for work of unknown size.
pub fn spinner(what: &str, s: &Settings) -> ProgressBar {
    if !shown(s) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
