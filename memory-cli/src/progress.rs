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
    let template = "{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})";
    styled(Some(len), template, what, s)
}

/// A bar over `len` bytes, labelled `what`.
pub fn bytes(len: u64, what: &str, s: &Settings) -> ProgressBar {
    let template = "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})";
    styled(Some(len), template, what, s)
}

/// A spinner with the elapsed time, for work of unknown size.
pub fn spinner(what: &str, s: &Settings) -> ProgressBar {
    let bar = styled(None, "{spinner} {msg} ({elapsed})", what, s);
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// A bar over `len` (a spinner without it) drawn with `template`, labelled `what`; hidden
/// unless progress is shown.
fn styled(len: Option<u64>, template: &str, what: &str, s: &Settings) -> ProgressBar {
    if !shown(s) {
        return ProgressBar::hidden();
    }
    let bar = len.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
