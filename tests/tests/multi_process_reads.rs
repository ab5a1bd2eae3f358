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

/// An episode the CLI forgets while a `memory mcp` server holds it in its cache (the server
/// opened the data directory first, so the cache file is its own) is gone from the server's
/// next reads: shown, searched, counted and advised (with the model loaded, the server's
/// in-process indexes held it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_the_cli_forgets_is_gone_from_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let slot = PidSlot::default();
    let mut server = McpProcess::start(dir.path(), NS, &[], &[], &slot)
        .await
        .unwrap();
    let call = async |server: &mut McpProcess, tool: &str, args: serde_json::Value| match server
        .call(tool, args)
        .await
    {
        CallEnd::Ok(v) => v,
        other => panic!("{tool}: {other:?}"),
    };
    let context = json!({ "domain": "billing", "language": "rust" });
    let mut ids = Vec::new();
    for task in [
        "fix the zebraquartz invoice export",
        "fix the invoice rounding",
    ] {
        let started = call(
            &mut server,
            "start_episode",
            json!({ "task": task, "task_type": "debugging", "context": context }),
        )
        .await;
        let id = started["episode_id"].as_str().unwrap().to_owned();
        for (tool, status) in [
            ("cargo", "error"),
            ("edit_file", "success"),
            ("cargo", "success"),
        ] {
            let step = json!({ "episode_id": id, "tool": tool, "action": format!("{tool} run"),
                "status": status, "output": "zebraquartz output" });
            call(&mut server, "log_step", step).await;
        }
        let done = json!({ "episode_id": id, "outcome": "success", "verdict": "fixed" });
        call(&mut server, "complete_episode", done).await;
        ids.push(id);
    }
    let gone = ids[0].clone();
    // The server reads (and caches) it, and finds it.
    call(&mut server, "show_episode", json!({ "episode_id": gone })).await;
    let found = call(
        &mut server,
        "search_episodes",
        json!({ "query": "zebraquartz" }),
    )
    .await;
    assert!(found.to_string().contains(&gone), "{found}");

    let cli = run_cli(
        dir.path(),
        &[
            "--namespace",
            NS,
            "--json",
            "episode",
            "forget",
            &gone,
            "--reason",
            "test",
        ],
        &[],
        &slot,
    )
    .await
    .unwrap();
    assert_eq!(cli.code, Some(0), "{cli:?}");

    let CallEnd::ToolError(e) = server
        .call("show_episode", json!({ "episode_id": gone }))
        .await
    else {
        panic!("the server still shows the forgotten episode");
    };
    assert_eq!(e["error"]["kind"], "not_found", "{e}");
    let found = call(
        &mut server,
        "search_episodes",
        json!({ "query": "zebraquartz" }),
    )
    .await;
    assert!(!found.to_string().contains(&gone), "{found}");
    let stats = call(&mut server, "stats", json!({})).await;
    assert_eq!(stats["counts"]["episodes"], 1, "{stats}");
    let advice = call(
        &mut server,
        "recommend",
        json!({ "task": "fix the zebraquartz invoice export", "context": context }),
    )
    .await;
    assert!(!advice.to_string().contains(&gone), "{advice}");
    let status = server.close().await.unwrap();
    assert!(status.success());
}
