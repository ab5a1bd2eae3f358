//! Runnable examples for users of the library; each lives in `examples/examples/` and is also
//! run by the test suite (`tests/tests/examples.rs`):
//!
//! - `embed_local`: the memory embedded in an application on a local libsql file: record
//!   episodes, then ask for a recommendation.
//!   `cargo run -p memory-examples --example embed_local`
//! - `tiered_sqld`: the default stack (redb cache, journal, tiered storage) over a local `sqld`
//!   server, as several machines would share one.
//!   `TURSO_DATABASE_URL=http://127.0.0.1:8080 cargo run -p memory-examples --example tiered_sqld`
//! - `custom_backend`: a storage backend of your own (here a decorator that counts writes,
//!   written with `forward_storage!`), checked with the conformance suite every backend passes.
//!   `cargo run -p memory-examples --example custom_backend`
