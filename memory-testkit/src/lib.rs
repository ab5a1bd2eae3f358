//! The test kit of the self-learning episodic memory, for the tests of every storage backend
//! and of the tiered composition:
//!
//! - [`conformance`]: the suite every [`Storage`](memory_core::Storage) backend must pass, and
//!   the fixtures its checks are built from (episodes, steps, completions);
//! - [`FaultInjecting`]: a storage wrapper that fails calls (after N calls, at a seeded ratio,
//!   or always), transiently or permanently;
//! - [`InMemoryCache`] and [`InMemoryOutbox`]: stand-ins for the redb cache and journal.
//!
//! ```
//! use std::sync::Arc;
//! use memory_core::{EpisodeStore, InMemoryStorage, Storage};
//! use memory_testkit::{FaultInjecting, FaultMode};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let flaky = FaultInjecting::new(Arc::new(InMemoryStorage::new()), FaultMode::Always);
//! assert!(flaky.ping().await.unwrap_err().is_transient());
//! memory_testkit::conformance::run_all(|| async { Arc::new(InMemoryStorage::new()) as Arc<dyn Storage> }).await;
//! # });
//! ```

pub mod conformance;
mod doubles;
mod fault;

pub use doubles::{InMemoryCache, InMemoryOutbox};
pub use fault::{FaultInjecting, FaultMode};
