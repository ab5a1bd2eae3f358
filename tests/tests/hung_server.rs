//! The memory in remote mode while its sqld hangs (SIGSTOP: connections are taken, nothing is
//! answered), as it is while sqld refuses:
//! - `memory serve`'s `/health` and `/metrics` still answer within their deadline (`/health`
//!   says `degraded` with 503), and once sqld runs again `/health` says `ok`. Before the
//!   deadline each took the whole call timeout (30 s): probes and scrapes failed all along.
//! - a command opens within the open probe's deadline and journals its write; it failed after
//!   30 s at open before.
//! - a running process (the library, as under `memory serve`) has its calls cut short by the
//!   hang watchdog within seconds and journals its writes; before, each of its first five calls
//!   waited out the 30 s call timeout before the breaker opened.
//!
//! Skips without sqld outside CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use memory_core::{NewEpisode, TaskContext, TaskType};
use memory_stack::{BreakerState, StackBuilder, StorageMode};
use serde_json::{Value, json};
use tests::http::get;
use tests::procs::{PidSlot, run_cli, serve_on_any_port, terminate};
use tests::sqld::{SqldServer, require_sqld};

const TOKEN: &str = "probe-token-3f1a";

/// Generous against the 800 ms deadline (a loaded CI machine), and far below the call
/// timeout the probes waited for before it.
const ANSWERED_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_while_the_database_hangs() {
    if require_sqld().is_none() {
        return;
    }
    let sqld = SqldServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = sqld.url();
    let served = serve_on_any_port(
        dir.path(),
        &["--mode", "remote"],
        &[],
        &[("TURSO_DATABASE_URL", &url), ("MEMORY_SERVE_TOKEN", TOKEN)],
    )
    .await
    .unwrap();
    let port = served.port;
    let host = format!("127.0.0.1:{port}");
    let answer = get(port, "/health", None, &host).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        serde_json::from_str::<Value>(&answer.body).unwrap(),
        json!({ "status": "ok" })
    );

    sqld.freeze().unwrap();
    for (path, token, status) in [
        ("/health", None, 503),
        ("/health", Some(TOKEN), 503),
        ("/metrics", Some(TOKEN), 200),
    ] {
        let started = Instant::now();
        let answer = get(port, path, token, &host).await.unwrap();
        let took = started.elapsed();
        eprintln!("{path} answered in {took:?} while sqld hung");
        assert!(
            took < ANSWERED_WITHIN,
            "{path} took {took:?} while sqld hung"
        );
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        if path == "/health" {
            let health: Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(health["status"], "degraded", "{health}");
            if token.is_some() {
                assert_eq!(health["components"][0]["status"], "down", "{health}");
            }
        } else {
            assert!(
                answer.body.contains("memory_breaker_state"),
                "{}",
                answer.body
            );
        }
    }

    sqld.thaw().unwrap();
    let started = Instant::now();
    loop {
        let answer = get(port, "/health", None, &host).await.unwrap();
        if answer.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still {} a minute after sqld resumed: {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = terminate(served.child).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_opens_and_journals_while_the_database_hangs() {
    if require_sqld().is_none() {
        return;
    }
    let sqld = SqldServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = sqld.url();
    let envs = [("TURSO_DATABASE_URL", url.as_str())];
    let slot = PidSlot::default();
    let start = |task: &'static str| {
        let (dir, slot) = (dir.path().to_owned(), slot.clone());
        async move {
            let args = [
                "--mode", "remote", "--json", "episode", "start", "--task", task,
            ];
            run_cli(&dir, &args, &envs, &slot).await.unwrap()
        }
    };
    let first = start("before the hang").await;
    assert_eq!(first.code, Some(0), "{first:?}");

    sqld.freeze().unwrap();
    let during = start("during the hang").await;
    assert_eq!(during.code, Some(0), "{during:?}");
    let id = during.json().unwrap()["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eprintln!("a start while sqld hung took {:?}", during.elapsed);
    assert!(
        during.elapsed < Duration::from_secs(20),
        "took {:?} while sqld hung",
        during.elapsed
    );

    // Once sqld answers again, the journaled start reaches it.
    sqld.thaw().unwrap();
    let args = ["--mode", "remote", "--json", "sync", "now"];
    let synced = run_cli(dir.path(), &args, &envs, &slot).await.unwrap();
    assert_eq!(synced.code, Some(0), "{synced:?}");
    let args = ["--mode", "remote", "--json", "episode", "show", &id];
    let shown = run_cli(dir.path(), &args, &envs, &slot).await.unwrap();
    assert_eq!(shown.code, Some(0), "{shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_journals_within_seconds_while_the_database_hangs() {
    if require_sqld().is_none() {
        return;
    }
    let sqld = SqldServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The defaults: a 30 s call timeout, the breaker and its hang watchdog as shipped.
    let stack = StackBuilder::new(dir.path())
        .mode(StorageMode::Remote {
            url: sqld.url(),
            auth_token: None,
        })
        .open()
        .await
        .unwrap();
    let m = stack.memory();
    let ns = memory_core::Namespace::new("hang/running").unwrap();
    let start = |i: usize| {
        m.start_episode(
            &ns,
            NewEpisode::new(
                format!("task {i}"),
                TaskType::Debugging,
                TaskContext::new("ops"),
            ),
        )
    };
    start(0).await.unwrap();

    sqld.freeze().unwrap();
    let hung_at = Instant::now();
    for i in 1..=5 {
        let started = Instant::now();
        start(i).await.unwrap();
        eprintln!("start {i} while sqld hung took {:?}", started.elapsed());
    }
    let took = hung_at.elapsed();
    eprintln!("five starts while sqld hung took {took:?}");
    // About 4 s for the first (2 s running, then 2 s for the probe's answer), then at once;
    // five call timeouts (150 s) before.
    assert!(took < Duration::from_secs(20), "five starts took {took:?}");
    let status = stack.tiered().status();
    assert!(status.outbox_len >= 5, "{status:?}");
    assert_ne!(status.breaker, BreakerState::Closed, "{status:?}");

    sqld.thaw().unwrap();
    let started = Instant::now();
    while stack.tiered().status().outbox_len > 0 {
        let _ = stack.tiered().sync_now().await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "journal not drained a minute after sqld resumed: {:?}",
            stack.tiered().status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = m.stats(&ns).await.unwrap();
    assert_eq!(stats.episodes, 6, "{stats:?}");
    stack.shutdown().await.unwrap();
}
