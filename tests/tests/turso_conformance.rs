//! Pins `TursoStorage` to the storage contract: `memory_testkit::conformance::run_all` (the same
//! suite the in-memory reference backend passes) runs against real libsql in all four modes:
//! a local file, `:memory:`, a remote `sqld` over Hrana/HTTP, and an embedded replica of a
//! `sqld` primary. Each check gets a fresh, empty database (a new file, a new in-memory
//! database, or a new sqld server). The sqld modes skip without the binary (and fail under CI).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use memory_core::Storage;
use memory_storage_turso::{MEMORY_PATH, TursoConfig, TursoStorage};
use memory_testkit::conformance;
use tests::sqld::{SqldServer, require_sqld};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let counter = AtomicUsize::new(0);
    let (dir, counter) = (&dir, &counter);
    conformance::run_all(move || async move {
        let path = dir.path().join(format!(
            "conf-{}.db",
            counter.fetch_add(1, Ordering::Relaxed)
        ));
        let storage = TursoStorage::open_local(&path).await.unwrap();
        assert_eq!(storage.backend_name(), "libsql");
        Arc::new(storage) as Arc<dyn Storage>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_in_memory() {
    conformance::run_all(|| async {
        Arc::new(TursoStorage::open_local(MEMORY_PATH).await.unwrap()) as Arc<dyn Storage>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_remote_sqld() {
    if require_sqld().is_none() {
        return;
    }
    // One fresh server per check; the servers live until the suite ends.
    let servers: Mutex<Vec<SqldServer>> = Mutex::new(Vec::new());
    let servers = &servers;
    conformance::run_all(move || async move {
        let server = SqldServer::start().await.unwrap();
        let config = TursoConfig::remote(server.url(), None).build().unwrap();
        let storage = TursoStorage::open(config).await.unwrap();
        servers.lock().await.push(server);
        Arc::new(storage) as Arc<dyn Storage>
    })
    .await;
    for server in servers.lock().await.iter_mut() {
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_embedded_replica() {
    if require_sqld().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let counter = AtomicUsize::new(0);
    let servers: Mutex<Vec<SqldServer>> = Mutex::new(Vec::new());
    let (dir, counter, servers) = (&dir, &counter, &servers);
    conformance::run_all(move || async move {
        let server = SqldServer::start().await.unwrap();
        let path = dir.path().join(format!(
            "replica-{}.db",
            counter.fetch_add(1, Ordering::Relaxed)
        ));
        let config = TursoConfig::replica(path, server.url(), None)
            .build()
            .unwrap();
        let storage = TursoStorage::open(config).await.unwrap();
        servers.lock().await.push(server);
        Arc::new(storage) as Arc<dyn Storage>
    })
    .await;
    for server in servers.lock().await.iter_mut() {
        server.stop().await;
    }
}
