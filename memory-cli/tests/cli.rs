//! End-to-end tests of the `memory` binary on the embedded default (libsql file + redb in a
//! temporary data directory): the record -> complete -> inspect -> feedback cycle across separate
//! processes, JSON output, and clear errors with exit codes for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn memory(dir: &tempfile::TempDir) -> Command {
    let mut c = Command::cargo_bin("memory").unwrap();
    c.arg("--data-dir")
        .arg(dir.path())
        .env_remove("MEMORY_NAMESPACE")
        .env_remove("MEMORY_MODE");
    c
}

fn json(dir: &tempfile::TempDir, args: &[&str]) -> Value {
    let out = memory(dir).arg("--json").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn full_cycle_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let start = json(
        &dir,
        &[
            "episode",
            "start",
            "--task",
            "add rate limiting",
            "--domain",
            "web_api",
            "--language",
            "rust",
            "--type",
            "code_generation",
            "--tag",
            "api",
        ],
    );
    let id = start["episode_id"].as_str().unwrap().to_owned();
    json(
        &dir,
        &[
            "episode",
            "step",
            &id,
            "--tool",
            "cargo",
            "--action",
            "cargo test",
            "--error",
            "error[E0277]: trait bound",
        ],
    );
    json(
        &dir,
        &[
            "episode",
            "step",
            &id,
            "--tool",
            "edit_file",
            "--action",
            "wrap layer",
            "--ok",
            "applied",
            "--params",
            r#"{"path":"src/main.rs"}"#,
        ],
    );
    let step = json(
        &dir,
        &[
            "episode",
            "step",
            &id,
            "--tool",
            "cargo",
            "--action",
            "cargo test",
            "--ok",
            "48 passed",
            "--latency-ms",
            "5400",
        ],
    );
    assert_eq!(step["step_number"], 3);
    let done = json(
        &dir,
        &[
            "episode",
            "complete",
            &id,
            "--success",
            "rate limiting added",
        ],
    );
    assert!(done["reward"]["total"].as_f64().unwrap() > 0.5);
    assert!(done["reward"]["efficiency"].is_number());
    assert!(
        !done["reflection"]["successes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(!done["patterns"].as_array().unwrap().is_empty());

    let shown = json(&dir, &["episode", "show", &id]);
    assert_eq!(shown["steps"].as_array().unwrap().len(), 3);
    assert_eq!(shown["steps"][1]["parameters"]["path"], "src/main.rs");
    let listed = json(
        &dir,
        &[
            "episode",
            "list",
            "--domain",
            "web_api",
            "--outcome",
            "success",
        ],
    );
    assert_eq!(listed["episodes"].as_array().unwrap().len(), 1);
    let found = json(&dir, &["episode", "search", "rate limiting"]);
    assert_eq!(found["results"][0]["episode"]["id"], id.as_str());

    let patterns = json(&dir, &["pattern", "list", "--language", "rust"]);
    let pid = patterns["patterns"][0]["pattern"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(&dir, &["pattern", "show", &pid[..12]]);
    json(
        &dir,
        &[
            "feedback",
            "--pattern",
            &pid,
            "--episode",
            &id,
            "--outcome",
            "helped",
        ],
    );
    let p = json(&dir, &["pattern", "show", &pid]);
    assert_eq!(p["pattern"]["effectiveness"]["helped"], 1);
    let heur = json(&dir, &["heuristic", "list", "--all"]);
    assert!(!heur["heuristics"].as_array().unwrap().is_empty());
    let lessons = json(&dir, &["lesson", "list"]);
    assert!(
        lessons["lessons"][0]["text"]
            .as_str()
            .unwrap()
            .contains("do edit_file")
    );
    let stats = json(&dir, &["stats"]);
    assert_eq!(stats["counts"]["episodes"], 1);
    assert_eq!(stats["outbox_len"], 0);
    let health = json(&dir, &["health"]);
    assert_eq!(health["healthy"], true);
    json(&dir, &["sync", "status"]);
    json(&dir, &["sync", "now"]);
}

#[test]
fn human_output_and_demo() {
    let dir = tempfile::tempdir().unwrap();
    memory(&dir)
        .args(["demo", "--rounds", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Learned from 6 episodes"))
        .stdout(predicate::str::contains("Failure lessons"));
    memory(&dir)
        .arg("stats")
        .assert()
        .success()
        .stdout(predicate::str::contains("episodes    0"));
    memory(&dir)
        .arg("health")
        .assert()
        .success()
        .stdout(predicate::str::contains("durable   ok"));
}

#[test]
fn bad_input_is_a_clear_error_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown episode id.
    memory(&dir)
        .args(["episode", "show", "01a20425-de64-72a8-9b86-45f71d10c188"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not found").and(predicate::str::contains("hint:")));
    // Not an id at all.
    memory(&dir)
        .args(["episode", "show", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid episode_id"));
    let id = json(&dir, &["episode", "start", "--task", "t"])["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Malformed --params.
    memory(&dir)
        .args([
            "episode",
            "step",
            &id,
            "--tool",
            "t",
            "--action",
            "a",
            "--ok",
            "o",
            "--params",
            "{not json",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--params"));
    // Oversized text.
    let big = "x".repeat(10_001);
    memory(&dir)
        .args(["episode", "start", "--task", &big])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("task_description is too large"));
    // JSON errors under --json.
    let out = memory(&dir)
        .args(["--json", "episode", "start", "--task", &big])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "limit_exceeded");
    // Usage errors exit 2, as JSON under --json.
    memory(&dir)
        .args(["episode", "step", &id, "--tool", "t"])
        .assert()
        .code(2);
    let out = memory(&dir)
        .args(["--json", "episode", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["error"]["kind"],
        "usage"
    );
    // Nothing was stored by the failed calls.
    let shown = json(&dir, &["episode", "show", &id]);
    assert!(shown["steps"].as_array().unwrap().is_empty());
    assert_eq!(json(&dir, &["stats"])["counts"]["episodes"], 1);
}
