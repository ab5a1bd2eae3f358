//! Rolling upgrades: two schema versions at work on one data directory, and on one sqld.
//!
//! - A running `memory mcp` of the previous schema (this build pinned at `SCHEMA_VERSION - 1`
//!   with `MEMORY_SCHEMA_VERSION`, as DEPLOYMENT.md's fleet upgrade runs the new release
//!   before the migration) keeps working while a CLI process of the full schema migrates the
//!   same database: its next start, steps, completion and advice succeed, and the new process
//!   reads what the old one wrote.
//! - A running process that meets a schema newer than its build (a later release migrated, and
//!   its migration renamed a table this build writes) fails its next call with an error that
//!   names the newer schema, and nothing is journaled for it. Before, the same call failed with
//!   "no such table" for as long as the process ran.
//!
//! The remote variants skip without sqld outside CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use memory_core::{NewEpisode, TaskContext, TaskType};
use memory_stack::{DataDir, StackBuilder, StorageMode};
use memory_storage_turso::SCHEMA_VERSION;
use serde_json::{Value, json};
use tests::procs::{CallEnd, McpProcess, PidSlot, run_cli};
use tests::sqld::{SqldServer, require_sqld};

const NS: &str = "upgrade";

/// `memory.toml` for the data directory: remote on `url`, or local.
fn configure(dir: &Path, url: Option<&str>) {
    let text = match url {
        Some(url) => format!("mode = \"remote\"\ndatabase_url = \"{url}\"\n"),
        None => String::new(),
    };
    std::fs::write(dir.join("memory.toml"), text).unwrap();
}

async fn call(server: &mut McpProcess, tool: &str, args: Value) -> Value {
    match server.call(tool, args).await {
        CallEnd::Ok(v) => v,
        other => panic!("{tool}: {other:?}"),
    }
}

/// The schema version the database is at, as `memory health` reports it (run pinned at the
/// previous schema, so that asking does not migrate).
async fn schema_version(dir: &Path) -> u64 {
    let args = ["--namespace", NS, "--json", "health"];
    let previous = (SCHEMA_VERSION - 1).to_string();
    let envs = [("MEMORY_SCHEMA_VERSION", previous.as_str())];
    let run = run_cli(dir, &args, &envs, &PidSlot::default())
        .await
        .unwrap();
    let health = run.json().unwrap();
    let durable = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "durable")
        .unwrap_or_else(|| panic!("{health}"));
    durable["schema_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("{health}"))
}

async fn previous_schema_keeps_working_while_the_new_one_migrates(url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    configure(dir.path(), url);
    let previous = (SCHEMA_VERSION - 1).to_string();
    let slot = PidSlot::default();
    let envs = [("MEMORY_SCHEMA_VERSION", previous.as_str())];
    let mut old = McpProcess::start(dir.path(), NS, &[], &envs, &slot)
        .await
        .unwrap();
    let context = json!({ "domain": "billing", "language": "rust" });
    let started =
        json!({ "task": "fix the invoice export", "task_type": "debugging", "context": context });
    let first = call(&mut old, "start_episode", started.clone()).await;
    assert_eq!(
        schema_version(dir.path()).await,
        u64::from(SCHEMA_VERSION - 1)
    );

    // The new release opens the same database and migrates it.
    let args = [
        "--namespace",
        NS,
        "--json",
        "episode",
        "start",
        "--task",
        "new release",
    ];
    let new = run_cli(dir.path(), &args, &[], &slot).await.unwrap();
    assert_eq!(new.code, Some(0), "{new:?}");
    assert_eq!(schema_version(dir.path()).await, u64::from(SCHEMA_VERSION));

    // The running process of the previous schema goes on as before.
    let id = first["episode_id"].as_str().unwrap().to_owned();
    for (tool, status) in [("cargo", "error"), ("edit_file", "success")] {
        let step = json!({ "episode_id": id, "tool": tool, "action": format!("{tool} run"),
            "status": status, "output": "invoice output" });
        call(&mut old, "log_step", step).await;
    }
    let done = json!({ "episode_id": id, "outcome": "success", "verdict": "fixed" });
    call(&mut old, "complete_episode", done).await;
    let second = call(&mut old, "start_episode", started).await;
    assert!(second["episode_id"].is_string(), "{second}");
    let advice = call(
        &mut old,
        "recommend",
        json!({ "task": "fix the invoice export", "context": context }),
    )
    .await;
    assert!(advice.is_object(), "{advice}");

    // And the new release reads what it wrote.
    let args = ["--namespace", NS, "--json", "episode", "show", &id];
    let shown = run_cli(dir.path(), &args, &[], &slot).await.unwrap();
    assert_eq!(shown.code, Some(0), "{shown:?}");
    let shown = shown.json().unwrap();
    assert_eq!(shown["steps"].as_array().unwrap().len(), 2, "{shown}");
    assert!(shown["completed_at"].is_string(), "{shown}");
    let status = old.close().await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_schema_keeps_working_on_a_local_file_while_the_new_one_migrates() {
    previous_schema_keeps_working_while_the_new_one_migrates(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_schema_keeps_working_on_sqld_while_the_new_one_migrates() {
    if require_sqld().is_none() {
        return;
    }
    let sqld = SqldServer::start().await.unwrap();
    previous_schema_keeps_working_while_the_new_one_migrates(Some(&sqld.url())).await;
}

/// What a later release's migration would do to this build: a version past this build's, and
/// a table this build writes renamed.
async fn migrate_past_this_build(conn: &libsql::Connection) {
    conn.execute(
        "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, 'a later release', 'later')",
        [i64::from(SCHEMA_VERSION) + 1],
    )
    .await
    .unwrap();
    conn.execute("ALTER TABLE episodes RENAME TO episodes_next", ())
        .await
        .unwrap();
}

/// A running process (remote on `url`, or on the data directory's file) meets a schema a later
/// release migrated to.
async fn a_running_process_refuses_a_newer_schema(url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let mode = match url {
        Some(url) => StorageMode::Remote {
            url: url.to_owned(),
            auth_token: None,
        },
        None => StorageMode::Local,
    };
    let stack = StackBuilder::new(dir.path())
        .mode(mode)
        .open()
        .await
        .unwrap();
    let ns = memory_core::Namespace::new(NS).unwrap();
    let new = || NewEpisode::new("task", TaskType::Debugging, TaskContext::new("ops"));
    stack.memory().start_episode(&ns, new()).await.unwrap();

    // The later release is another connection to the same database.
    let db = match url {
        Some(url) => libsql::Builder::new_remote(url.to_owned(), String::new())
            .build()
            .await
            .unwrap(),
        None => libsql::Builder::new_local(DataDir::new(dir.path()).database())
            .build()
            .await
            .unwrap(),
    };
    migrate_past_this_build(&db.connect().unwrap()).await;
    let err = stack.memory().start_episode(&ns, new()).await.unwrap_err();
    let newer = format!(
        "database schema version {} is newer than this build supports ({SCHEMA_VERSION})",
        SCHEMA_VERSION + 1
    );
    assert!(err.to_string().contains(&newer), "{err}");
    assert!(!err.is_transient(), "{err:?}");
    assert_eq!(stack.tiered().status().outbox_len, 0, "nothing journaled");
    stack.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_refuses_a_newer_schema_on_a_local_file() {
    a_running_process_refuses_a_newer_schema(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_process_refuses_a_newer_schema_on_sqld() {
    if require_sqld().is_none() {
        return;
    }
    let sqld = SqldServer::start().await.unwrap();
    a_running_process_refuses_a_newer_schema(Some(&sqld.url())).await;
}
