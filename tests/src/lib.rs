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

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
