//! Helpers shared by the integration tests.
//!
//! - [`sqld`]: start, restart and stop a local `sqld` (libsql-server) on a free loopback port.

pub mod sqld;
