//! The in-memory reference backend passes the conformance suite it defines the semantics of.

use std::sync::Arc;

use memory_core::{InMemoryStorage, Storage};
use memory_testkit::conformance;

#[tokio::test]
async fn in_memory_backend_passes_conformance() {
    conformance::run_all(|| async { Arc::new(InMemoryStorage::new()) as Arc<dyn Storage> }).await;
}

#[tokio::test]
async fn isolation_holds_for_many_seeds() {
    for seed in 0..20 {
        conformance::namespace_isolation(&InMemoryStorage::new(), seed).await;
    }
}
