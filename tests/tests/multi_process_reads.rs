//! A read never returns data older than what another process had acknowledged before the
//! read began: a `memory mcp` server that holds an episode in its cache sees a step the CLI
//! (another process) added a moment earlier, and the CLI sees the server's, on the next read.
//!
//! Before, each process kept its cached copy for up to an hour, and the CLI could not even
//! open the data directory while the server ran.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use tests::procs::{CallEnd, McpProcess, PidSlot, run_cli};

const NS: &str = "reads";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_and_the_cli_each_read_the_others_latest_writes() {
    let dir = tempfile::tempdir().unwrap();
    let slot = PidSlot::default();
    let mut server = McpProcess::start(dir.path(), NS, &[], &[], &slot)
        .await
        .unwrap();
    let CallEnd::Ok(started) = server
        .call(
            "start_episode",
            json!({ "task": "shared reads", "task_type": "testing", "context": { "domain": "ops" } }),
        )
        .await
    else {
        panic!("start failed");
    };
    let id = started["episode_id"].as_str().unwrap().to_owned();
    for round in 0..3 {
        // The server reads (and caches) the episode.
        let CallEnd::Ok(shown) = server
            .call("show_episode", json!({ "episode_id": id }))
            .await
        else {
            panic!("show failed");
        };
        assert_eq!(
            shown["episode"]["steps"].as_array().unwrap().len(),
            2 * round
        );
        // Another process adds a step.
        let cli = run_cli(
            dir.path(),
            &[
                "--namespace",
                NS,
                "--json",
                "episode",
                "step",
                &id,
                "--tool",
                "cli",
                "--action",
                &format!("cli {round}"),
                "--ok",
                "done",
            ],
            &[],
            &slot,
        )
        .await
        .unwrap();
        assert_eq!(cli.code, Some(0), "{cli:?}");
        // The server's next read has it.
        let CallEnd::Ok(shown) = server
            .call("show_episode", json!({ "episode_id": id }))
            .await
        else {
            panic!("show failed");
        };
        let steps = shown["episode"]["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 2 * round + 1, "the server sees the CLI's step");
        assert_eq!(
            steps.last().unwrap()["action"],
            json!(format!("cli {round}"))
        );
        // And the other way round.
        let CallEnd::Ok(_) = server
            .call(
                "log_step",
                json!({ "episode_id": id, "tool": "mcp", "action": format!("mcp {round}"), "status": "success", "output": "ok" }),
            )
            .await
        else {
            panic!("log_step failed");
        };
        let shown = run_cli(
            dir.path(),
            &["--namespace", NS, "--json", "episode", "show", &id],
            &[],
            &slot,
        )
        .await
        .unwrap()
        .json()
        .unwrap();
        let steps = shown["steps"].as_array().unwrap();
        assert_eq!(
            steps.len(),
            2 * round + 2,
            "the CLI sees the server's step: {shown}"
        );
    }
    let status = server.close().await.unwrap();
    assert!(status.success());
}
