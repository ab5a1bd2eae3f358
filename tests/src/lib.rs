//! Helpers shared by the integration tests.
//!
//! - [`sqld`]: start, restart and stop a local `sqld` (libsql-server) on a free loopback port.
//! - [`model`]: the real embedding model, or a skip outside CI.
//! - [`procs`]: the `memory` binary as CLI commands and as an MCP server over stdio.
//! - [`http`]: plain HTTP requests to `memory serve`, malformed ones included.

pub mod http;
pub mod model;
pub mod procs;
pub mod sqld;

/// Every file under `dir`, recursively (directories are entered, not listed), appended to
/// `out`: what the leak scans read.
pub fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
