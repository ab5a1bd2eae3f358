//! The command line as the operating system hands it over, checked before clap parses it.
//!
//! Every argument must be UTF-8 text (paths included: the memory stores and prints them as
//! text). An argument that is not is a usage error naming its position, never a panic
//! (`std::env::args` panics on one).

use std::ffi::{OsStr, OsString};

/// An argument that is not valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "argument {position}{after} is not valid UTF-8: {shown} (invalid bytes shown as U+FFFD); every argument must be UTF-8 text"
)]
pub struct NonUtf8Argument {
    /// Its position on the command line, counted from 1 after the program name.
    pub position: usize,
    /// ` (after --option)` when the argument before it is an option, else empty.
    after: String,
    /// The argument with its invalid bytes replaced, quoted short and escaped.
    shown: String,
}

/// Checks that every argument after the program name is UTF-8; the first that is not is
/// the error.
pub fn check_utf8(args: &[OsString]) -> Result<(), NonUtf8Argument> {
    let Some((i, bad)) = args
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, a)| a.to_str().is_none())
    else {
        return Ok(());
    };
    let before = args
        .get(i - 1)
        .filter(|_| i > 1)
        .and_then(|a| a.to_str())
        .filter(|a| a.starts_with('-') && !a.contains('='));
    Err(NonUtf8Argument {
        position: i,
        after: before.map_or_else(String::new, |o| {
            format!(" (after {})", memory_core::quote_value(o))
        }),
        shown: memory_core::quote_value(&lossy(bad)),
    })
}

fn lossy(a: &OsStr) -> String {
    a.to_string_lossy().into_owned()
}

/// Whether `--json` is among the arguments (it decides how a usage error is printed).
pub fn json_requested(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|a| a == "--json")
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn args(list: &[&[u8]]) -> Vec<OsString> {
        list.iter()
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    }

    #[test]
    fn utf8_arguments_pass() {
        let a = args(&[
            b"memory",
            b"episode",
            b"start",
            b"--task",
            "café ✓".as_bytes(),
        ]);
        assert_eq!(check_utf8(&a), Ok(()));
        // The program name is not checked: it is not an argument the user typed.
        assert_eq!(check_utf8(&args(&[b"mem\xff", b"stats"])), Ok(()));
    }

    #[test]
    fn a_non_utf8_argument_names_its_position() {
        let e = check_utf8(&args(&[b"memory", b"episode", b"show", b"\xff\xfe"])).unwrap_err();
        assert_eq!(e.position, 3);
        let text = e.to_string();
        assert!(text.starts_with("argument 3 is not valid UTF-8"), "{text}");
        assert!(text.contains("\"\u{fffd}\u{fffd}\""), "{text}");

        let e = check_utf8(&args(&[b"memory", b"--data-dir", b"/tmp/\xff", b"stats"])).unwrap_err();
        assert_eq!(e.position, 2);
        assert!(e.to_string().contains("(after \"--data-dir\")"), "{e}");
    }

    #[test]
    fn a_long_bad_argument_is_quoted_short() {
        let mut long = vec![b'a'; 1 << 20];
        long.push(0xff);
        let e = check_utf8(&args(&[b"memory", &long])).unwrap_err();
        assert!(e.to_string().len() < 300, "{}", e.to_string().len());
    }
}
