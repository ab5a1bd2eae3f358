//! Stopping `memory mcp` with a signal loses nothing it acknowledged.
//!
//! Before, `kill -TERM` within 250 ms of five acknowledged `log_step` calls stored none of
//! them: steps were buffered and SIGTERM and SIGHUP were not handled (the process died at
//! once). Now a step is stored before `log_step` answers, and SIGTERM, SIGINT and SIGHUP stop
//! the server the way closing stdin does: no new calls, the calls in flight finish and
//! answer, then buffered writes are flushed and the journal closed (exit code 0).
//!
//! In remote mode with the server down, what the stopped process journaled stays in its
//! journal file and the next process adopts and replays it once the server is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use memory_core::{EpisodeId, EpisodeStore, Namespace};
use memory_stack::{JOURNAL_DIR, StackBuilder, StorageMode};
use memory_storage_turso::{TursoConfig, TursoStorage};
use serde_json::{Value, json};
use tests::procs::{CallEnd, McpProcess, PidSlot};
use tests::sqld::{SqldServer, require_sqld};

const NS: &str = "signals";

fn ok(end: CallEnd) -> Value {
    match end {
        CallEnd::Ok(v) => v,
        other => panic!("call failed: {other:?}"),
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts a server, starts an episode and logs five steps (each acknowledged), then sends
/// `sig` at once and returns the episode id and how the server exited.
async fn five_steps_then(dir: &Path, sig: &str, envs: &[(&str, &str)]) -> (EpisodeId, i32) {
    let slot = PidSlot::default();
    let mut server = McpProcess::start(dir, NS, &[], envs, &slot).await.unwrap();
    let started = ok(server
        .call(
            "start_episode",
            json!({ "task": "signal drill", "task_type": "testing", "context": { "domain": "ops" } }),
        )
        .await);
    let id: EpisodeId = started["episode_id"].as_str().unwrap().parse().unwrap();
    for k in 0..5 {
        let logged = ok(server
            .call(
                "log_step",
                json!({ "episode_id": id.to_string(), "tool": "shell", "action": format!("step {k}"), "status": "success", "output": "ok" }),
            )
            .await);
        assert_eq!(logged["logged"], json!(true));
    }
    let acknowledged = Instant::now();
    signal(server.pid().unwrap(), sig);
    assert!(acknowledged.elapsed() < Duration::from_millis(250));
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait())
        .await
        .expect("the server stops within 30 s")
        .unwrap();
    (id, status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sigint_and_sighup_keep_every_acknowledged_step() {
    for sig in ["TERM", "INT", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let (id, code) = five_steps_then(dir.path(), sig, &[]).await;
        assert_eq!(code, 0, "SIG{sig}: a clean stop");
        let store = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let e = store
            .get_episode(&Namespace::new(NS).unwrap(), id)
            .await
            .unwrap()
            .unwrap();
        let actions: Vec<&str> = e.steps.iter().map(|s| s.input.action.as_str()).collect();
        assert_eq!(
            actions,
            ["step 0", "step 1", "step 2", "step 3", "step 4"],
            "SIG{sig}: every acknowledged step is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_sigterm_arrives_finishes_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let slot = PidSlot::default();
    let mut server = McpProcess::start(dir.path(), NS, &[], &[], &slot)
        .await
        .unwrap();
    let started = ok(server
        .call(
            "start_episode",
            json!({ "task": "in flight", "task_type": "testing", "context": { "domain": "ops" } }),
        )
        .await);
    let id = started["episode_id"].as_str().unwrap().to_owned();
    // The signal lands while the completion (the slowest call) runs.
    let pid = server.pid().unwrap();
    let signaller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        signal(pid, "TERM");
    });
    let done = server
        .call(
            "complete_episode",
            json!({ "episode_id": id, "outcome": "success", "verdict": "ok" }),
        )
        .await;
    signaller.await.unwrap();
    let status = server.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
    let store = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
    let e = store
        .get_episode(&Namespace::new(NS).unwrap(), id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    match done {
        CallEnd::Ok(_) => assert!(e.is_completed(), "acknowledged, so stored"),
        // Refused before it began (the server was already stopping): nothing was done.
        CallEnd::ToolError(err) => {
            assert_eq!(err["error"]["kind"], json!("shutdown"), "{err}");
            assert!(!e.is_completed());
        }
        CallEnd::Gone(why) => panic!("the server went away mid-call: {why}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_left_by_sigterm_during_an_outage_reaches_the_server() {
    if require_sqld().is_none() {
        return;
    }
    let mut sqld = SqldServer::start().await.unwrap();
    let url = sqld.url();
    sqld.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        ("MEMORY_MODE", "remote"),
        ("TURSO_DATABASE_URL", url.as_str()),
    ];
    let (id, code) = five_steps_then(dir.path(), "TERM", &envs).await;
    assert_eq!(code, 0);
    let journals: Vec<_> = std::fs::read_dir(dir.path().join(JOURNAL_DIR))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "redb"))
        .collect();
    assert_eq!(journals.len(), 1, "the stopped server's journal is kept");

    sqld.resume().await.unwrap();
    let stack = StackBuilder::new(dir.path())
        .mode(StorageMode::Remote {
            url: url.clone(),
            auth_token: None,
        })
        .open()
        .await
        .unwrap();
    let from = Instant::now();
    while stack.tiered().status().outbox_len > 0 {
        assert!(
            from.elapsed() < Duration::from_secs(10),
            "drained within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.shutdown().await.unwrap();
    let bare = TursoStorage::open(TursoConfig::remote(&url, None).build().unwrap())
        .await
        .unwrap();
    let e = bare
        .get_episode(&Namespace::new(NS).unwrap(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.steps.len(), 5);
}
