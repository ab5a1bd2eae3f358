//! The `memory` binary end to end in remote mode against a real `sqld` on loopback: a full
//! record -> complete -> recommend -> feedback cycle across separate processes, with the data
//! on the server (a second, empty data directory sees it), then an export from the server.
//!
//! Runs the `memory` binary built beside this test (`cargo nextest run --workspace` builds
//! it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tests::sqld::{SqldServer, require_sqld};

fn memory_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/memory
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(format!("memory{}", std::env::consts::EXE_SUFFIX)))
        .unwrap();
    assert!(
        bin.is_file(),
        "{} is missing: build the CLI first (`cargo build -p memory-cli`, or run the whole workspace)",
        bin.display()
    );
    bin
}

fn run(data_dir: &Path, url: &str, args: &[&str]) -> Value {
    let out = Command::new(memory_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--mode", "remote", "--namespace", "remote/e2e", "--json"])
        .args(args)
        .env("TURSO_DATABASE_URL", url)
        .env_remove("TURSO_AUTH_TOKEN")
        .env("MEMORY_MODEL_DIR", "/nonexistent-model-dir")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cycle_in_remote_mode_against_sqld() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let url = server.url();
    let a = tempfile::tempdir().unwrap();
    let dir = a.path();

    let mut last = String::new();
    for i in 0..2 {
        let id = run(
            dir,
            &url,
            &[
                "episode",
                "start",
                "--task",
                &format!("add rate limiting to the orders api {i}"),
                "--domain",
                "web_api",
                "--language",
                "rust",
                "--type",
                "code_generation",
            ],
        )["episode_id"]
            .as_str()
            .unwrap()
            .to_owned();
        run(
            dir,
            &url,
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
        run(
            dir,
            &url,
            &[
                "episode",
                "step",
                &id,
                "--tool",
                "edit_file",
                "--action",
                "wrap the layer",
                "--ok",
                "edit applied",
            ],
        );
        run(
            dir,
            &url,
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
            ],
        );
        let done = run(
            dir,
            &url,
            &[
                "episode",
                "complete",
                &id,
                "--success",
                "rate limiting added",
            ],
        );
        assert!(done["reward"]["total"].as_f64().unwrap() > 0.0);
        last = id;
    }

    let advice = run(
        dir,
        &url,
        &[
            "recommend",
            "--task",
            "add rate limiting to the billing api",
            "--domain",
            "web_api",
            "--language",
            "rust",
        ],
    );
    let episodes = advice["episodes"].as_array().unwrap();
    assert!(!episodes.is_empty(), "{advice}");
    let patterns = advice["patterns"].as_array().unwrap();
    assert!(!patterns.is_empty(), "{advice}");
    let pattern_id = patterns[0]["item"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no pattern id in {advice}"))
        .to_owned();
    run(
        dir,
        &url,
        &[
            "feedback",
            "--pattern",
            &pattern_id,
            "--episode",
            &last,
            "--outcome",
            "helped",
        ],
    );

    // The data lives on the server: another data directory sees all of it.
    let b = tempfile::tempdir().unwrap();
    let counts = run(b.path(), &url, &["stats"])["counts"].clone();
    assert_eq!(counts["episodes"], 2);
    assert_eq!(counts["completed"], 2);
    assert_eq!(counts["steps"], 6);
    assert_eq!(counts["feedback"], 1);
    let health = run(b.path(), &url, &["health"]);
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["components"][0]["mode"], "remote", "{health}");

    // A logical copy out of the server.
    let file = b.path().join("episodes.jsonl");
    let exported = run(b.path(), &url, &["export", file.to_str().unwrap()]);
    assert_eq!(exported["episodes"], 2);
    server.stop().await;
}
