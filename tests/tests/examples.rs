//! The runnable examples (`examples/examples/`) run here too, so they keep working as the
//! library changes: each example's `run` is called the way its `main` calls it, the sqld one
//! against a real `sqld` on a free loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code, reason = "main is the example's own entry point")]
#[path = "../../examples/examples/embed_local.rs"]
mod embed_local;

#[allow(dead_code, reason = "main is the example's own entry point")]
#[path = "../../examples/examples/tiered_sqld.rs"]
mod tiered_sqld;

#[allow(dead_code, reason = "main is the example's own entry point")]
#[path = "../../examples/examples/custom_backend.rs"]
mod custom_backend;

use tests::sqld::{SqldServer, require_sqld};

#[tokio::test]
async fn embed_local_records_and_recommends_a_playbook() {
    let dir = tempfile::tempdir().unwrap();
    let playbook = embed_local::run(&dir.path().join("memory.db"))
        .await
        .unwrap();
    assert_eq!(playbook, ["edit_file", "pytest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiered_sqld_shares_one_server_between_two_data_dirs() {
    if require_sqld().is_none() {
        return;
    }
    let sqld = SqldServer::start().await.unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let steps = tiered_sqld::run(&sqld.url(), a.path(), b.path())
        .await
        .unwrap();
    assert_eq!(steps, 2);
}

#[tokio::test]
async fn custom_backend_passes_the_conformance_suite() {
    assert!(custom_backend::run().await > 0);
}
