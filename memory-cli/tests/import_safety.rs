//! `memory import` is safe to repeat: the whole file is validated against every limit before
//! anything is written (streaming, with a bounded line), invalid input exits 2 naming the
//! line, a second import of the same file imports nothing again, and an interrupted import
//! (a prefix imported, an episode left in progress, a process killed) ends, once re-run,
//! with exactly one copy of each episode and no episode left in progress.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::{Value, json};

mod common;

use common::{json as json_out, memory};

fn import(dir: &Path, file: &Path) -> Value {
    json_out(dir, &["import", file.to_str().unwrap()])
}

/// (episodes, completed) of the default namespace.
fn counts(dir: &Path) -> (u64, u64) {
    let c = json_out(dir, &["stats"])["counts"].clone();
    (
        c["episodes"].as_u64().unwrap(),
        c["completed"].as_u64().unwrap(),
    )
}

fn summaries(dir: &Path) -> Vec<Value> {
    json_out(dir, &["episode", "list", "--limit", "100"])["episodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// An exported episode: `steps` steps (a failure, then successes), completed unless
/// `completed` is false.
fn episode(i: usize, steps: usize, completed: bool) -> Value {
    let steps: Vec<Value> = (0..steps)
        .map(|s| {
            let result = if s == 0 {
                json!({ "status": "error", "message": "AssertionError: due date" })
            } else {
                json!({ "status": "success", "output": format!("step {s} ok") })
            };
            json!({
                "step_number": s + 1,
                "key": 1000 + s,
                "timestamp": "2026-01-02T03:04:05.000Z",
                "tool": if s % 2 == 0 { "pytest" } else { "edit_file" },
                "action": format!("action {s} of episode {i}"),
                "parameters": { "path": format!("src/file_{s}.py") },
                "result": result,
                "latency_ms": 3,
                "tokens": null,
            })
        })
        .collect();
    json!({
        "id": format!("01a209b8-cb2b-74b8-b825-{i:012x}"),
        "task_description": format!("fix the flaky billing test {i}"),
        "task_type": "debugging",
        "context": {
            "domain": "testing",
            "language": "python",
            "framework": null,
            "complexity": "moderate",
            "tags": ["billing"],
        },
        "steps": steps,
        "started_at": "2026-01-02T03:04:00.000Z",
        "completed_at": if completed { json!("2026-01-02T03:05:00.000Z") } else { Value::Null },
        "outcome": if completed {
            json!({ "type": "success", "verdict": "tests pass", "artifacts": [] })
        } else {
            Value::Null
        },
        "reward": null,
        "reflection": null,
    })
}

fn write_lines(path: &Path, episodes: &[Value]) {
    let text: String = episodes
        .iter()
        .flat_map(|e| [e.to_string(), "\n".into()])
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A data directory whose `memory.toml` sets these limits.
fn dir_with_limits(limits: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("memory.toml"),
        format!("[memory.limits]\n{limits}\n"),
    )
    .unwrap();
    dir
}

#[test]
fn a_line_over_the_step_limit_imports_nothing_and_exactly_the_limit_imports() {
    let dir = dir_with_limits("max_steps_per_episode = 5");
    let file = dir.path().join("steps.jsonl");
    // Line 3 has max + 1 steps; lines 1 and 2 are fine and must not be stored either.
    write_lines(
        &file,
        &[
            episode(1, 3, true),
            episode(2, 5, true),
            episode(3, 6, true),
            episode(4, 2, true),
        ],
    );
    memory(dir.path())
        .args(["import", file.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("steps.jsonl:3")
                .and(predicate::str::contains("steps_per_episode"))
                .and(predicate::str::contains("6 > limit 5"))
                .and(predicate::str::contains("nothing was imported")),
        );
    assert_eq!(counts(dir.path()), (0, 0));
    assert!(summaries(dir.path()).is_empty());

    // Exactly the limit imports, every step of it.
    write_lines(&file, &[episode(1, 3, true), episode(2, 5, true)]);
    let out = import(dir.path(), &file);
    assert_eq!(out["imported"], 2);
    assert_eq!(out["steps"], 8);
    let list = summaries(dir.path());
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|e| e["step_count"] == 5));
}

#[test]
fn a_line_over_the_episode_size_limit_imports_nothing() {
    // Every step is within its own limits; together they pass the episode's.
    let dir = dir_with_limits("max_episode_bytes = 2000");
    let mut big = episode(2, 3, true);
    for step in big["steps"].as_array_mut().unwrap() {
        step["result"] = json!({ "status": "success", "output": "y".repeat(900) });
    }
    let file = dir.path().join("size.jsonl");
    write_lines(&file, &[episode(1, 2, true), big]);
    memory(dir.path())
        .args(["--json", "import", file.to_str().unwrap()])
        .assert()
        .code(2)
        .stdout(
            predicate::str::contains("size.jsonl:2")
                .and(predicate::str::contains("limit_exceeded"))
                .and(predicate::str::contains("limit 2000")),
        );
    assert_eq!(counts(dir.path()), (0, 0));
}

#[test]
fn an_oversized_line_is_rejected_with_exit_2_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let mut huge = episode(2, 1, true);
    huge["task_description"] = Value::String("z".repeat(20_000));
    write_lines(&file, &[episode(1, 2, true), huge, episode(3, 2, true)]);
    memory(dir.path())
        .env("MEMORY_IMPORT_MAX_LINE_BYTES", "2000")
        .args(["import", file.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("big.jsonl:2")
                .and(predicate::str::contains("longer than 2000 bytes"))
                .and(predicate::str::contains("limit 2000")),
        );
    assert_eq!(counts(dir.path()), (0, 0));
    // A bad override is refused as input too.
    memory(dir.path())
        .env("MEMORY_IMPORT_MAX_LINE_BYTES", "lots")
        .args(["import", file.to_str().unwrap()])
        .assert()
        .code(2);
}

#[test]
fn invalid_utf8_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.jsonl");
    let mut bytes = format!("{}\n", episode(1, 2, true)).into_bytes();
    let mut second = format!("{}\n", episode(2, 2, true)).into_bytes();
    // A Latin-1 "é" (one byte, not UTF-8) inside the task.
    let at = second.windows(7).position(|w| w == b"billing").unwrap();
    second[at] = 0xE9;
    bytes.extend(second);
    std::fs::write(&file, bytes).unwrap();
    memory(dir.path())
        .args(["import", file.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("latin1.jsonl:2").and(predicate::str::contains("UTF-8")));
    assert_eq!(counts(dir.path()), (0, 0));
}

#[test]
fn importing_the_same_file_twice_gives_each_episode_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twice.jsonl");
    let episodes = [
        episode(1, 3, true),
        episode(2, 4, true),
        // Same content as episode 2 under another id: a distinct episode.
        {
            let mut e = episode(2, 4, true);
            e["id"] = json!("01a209b8-cb2b-74b8-b825-0000000000ff");
            e
        },
        episode(3, 2, false),
        episode(4, 1, true),
    ];
    write_lines(&file, &episodes);
    let first = import(dir.path(), &file);
    assert_eq!(first["imported"], 5);
    assert_eq!(first["already_present"], 0);
    assert_eq!(first["completed"], 4);
    assert_eq!(first["in_progress"], 1);
    let stats_after_first = json_out(dir.path(), &["stats"])["counts"].clone();

    let second = import(dir.path(), &file);
    assert_eq!(second["imported"], 0);
    assert_eq!(second["resumed"], 0);
    assert_eq!(second["already_present"], 5);
    assert_eq!(second["steps"], 0);
    assert_eq!(summaries(dir.path()).len(), 5);
    // Nothing was learned twice.
    let stats_after_second = json_out(dir.path(), &["stats"])["counts"].clone();
    assert_eq!(stats_after_first, stats_after_second);

    // The human summary says so too.
    memory(dir.path())
        .args(["import", file.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("5 already present"));

    // An export of the imported episodes, imported again, is recognized (origins kept).
    let exported = dir.path().join("re-export.jsonl");
    json_out(dir.path(), &["export", exported.to_str().unwrap()]);
    let again = import(dir.path(), &exported);
    assert_eq!(again["imported"], 0);
    assert_eq!(again["already_present"], 5);
    assert_eq!(summaries(dir.path()).len(), 5);
}

/// The marker tag the import gave the episode with this task.
fn marker_of(list: &[Value], task: &str) -> String {
    let e = list.iter().find(|e| e["task_description"] == task).unwrap();
    e["context"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .find(|t| t.starts_with("import:"))
        .unwrap()
}

#[test]
fn an_interrupted_import_is_resumed_with_one_copy_of_each_episode() {
    let episodes: Vec<Value> = (1..=6).map(|i| episode(i, 4, i != 6)).collect();
    // The marker of episode 3, from an import elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    let whole = elsewhere.path().join("whole.jsonl");
    write_lines(&whole, &episodes);
    import(elsewhere.path(), &whole);
    let marker = marker_of(&summaries(elsewhere.path()), "fix the flaky billing test 3");

    // The state a crash leaves: lines 1-2 imported, episode 3 started with 2 of its 4 steps.
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix.jsonl");
    write_lines(&prefix, &episodes[..2]);
    assert_eq!(import(dir.path(), &prefix)["imported"], 2);
    let orphan = json_out(
        dir.path(),
        &[
            "episode",
            "start",
            "--task",
            "fix the flaky billing test 3",
            "--type",
            "debugging",
            "--domain",
            "testing",
            "--language",
            "python",
            "--tag",
            "billing",
            "--tag",
            &marker,
        ],
    )["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for step in episodes[2]["steps"].as_array().unwrap().iter().take(2) {
        let mut args = vec![
            "episode".to_owned(),
            "step".to_owned(),
            orphan.clone(),
            "--tool".to_owned(),
            step["tool"].as_str().unwrap().to_owned(),
            "--action".to_owned(),
            step["action"].as_str().unwrap().to_owned(),
        ];
        match step["result"]["status"].as_str().unwrap() {
            "error" => args.extend(["--error".to_owned(), "AssertionError: due date".to_owned()]),
            _ => args.extend(["--ok".to_owned(), "ok".to_owned()]),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        json_out(dir.path(), &args);
    }
    assert_eq!(counts(dir.path()), (3, 2));

    let file = dir.path().join("whole.jsonl");
    write_lines(&file, &episodes);
    let out = import(dir.path(), &file);
    assert_eq!(out["already_present"], 2, "{out}");
    assert_eq!(out["resumed"], 1, "{out}");
    assert_eq!(out["imported"], 3, "{out}");
    // Exactly one copy of each; only the source's in-progress episode is in progress.
    assert_eq!(counts(dir.path()), (6, 5));
    let list = summaries(dir.path());
    for i in 1..=6 {
        let task = format!("fix the flaky billing test {i}");
        let copies: Vec<&Value> = list
            .iter()
            .filter(|e| e["task_description"] == task)
            .collect();
        assert_eq!(copies.len(), 1, "{task}");
        assert_eq!(copies[0]["step_count"], 4, "{task}");
    }
    let resumed = list.iter().find(|e| e["id"] == orphan.as_str()).unwrap();
    assert_eq!(resumed["outcome"], "success");
    // And once more: nothing left to do.
    let again = import(dir.path(), &file);
    assert_eq!(again["already_present"], 6);
    assert_eq!(counts(dir.path()), (6, 5));
}

#[test]
fn an_import_killed_midway_then_rerun_gives_one_copy_of_each_episode() {
    let n = 150;
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("large.jsonl");
    let episodes: Vec<Value> = (1..=n).map(|i| episode(i, 40, true)).collect();
    write_lines(&file, &episodes);

    let bin = assert_cmd::cargo::cargo_bin("memory");
    let mut child = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--quiet", "import", file.to_str().unwrap()])
        .env_remove("MEMORY_NAMESPACE")
        .env_remove("MEMORY_MODE")
        .env("MEMORY_MODEL_DIR", "/nonexistent-model-dir")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) once some episodes are stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break;
        }
        let out = memory(dir.path())
            .args(["--json", "stats"])
            .output()
            .unwrap();
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
            && v["counts"]["episodes"].as_u64().unwrap_or(0) >= 3
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let (before, _) = counts(dir.path());
    assert!(before <= n as u64);

    let out = import(dir.path(), &file);
    // Every episode stored before the kill is found again: completed ones skipped, the one
    // the kill interrupted (if any) resumed.
    assert_eq!(
        out["already_present"].as_u64().unwrap() + out["resumed"].as_u64().unwrap(),
        before,
        "{out}"
    );
    let done = out["imported"].as_u64().unwrap()
        + out["already_present"].as_u64().unwrap()
        + out["resumed"].as_u64().unwrap();
    assert_eq!(done, n as u64, "{out}");
    assert_eq!(counts(dir.path()), (n as u64, n as u64), "{out}");
    assert!(
        json_out(dir.path(), &["episode", "list", "--outcome", "in_progress"])["episodes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let steps = json_out(dir.path(), &["stats"])["counts"]["steps"]
        .as_u64()
        .unwrap();
    assert_eq!(steps, 40 * n as u64);
}
