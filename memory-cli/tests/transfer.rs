//! End-to-end tests of `memory export` / `import` and `memory backup` / `restore` on the
//! embedded default: what goes out comes back with equal counts, the memory learns from
//! imported episodes, bad files import nothing, and a restore never deletes what it replaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use predicates::prelude::*;
use serde_json::Value;

mod common;

use common::{json, memory};

/// Records `n` episodes: completed ones with a failing and a recovering step, and one left
/// in progress.
fn record(dir: &Path, n: usize) {
    for i in 0..n {
        let id = json(
            dir,
            &[
                "episode",
                "start",
                "--task",
                &format!("fix the flaky billing test {i}"),
                "--domain",
                "testing",
                "--language",
                "python",
                "--tag",
                "billing",
            ],
        )["episode_id"]
            .as_str()
            .unwrap()
            .to_owned();
        json(
            dir,
            &[
                "episode",
                "step",
                &id,
                "--tool",
                "pytest",
                "--action",
                "run",
                "--error",
                "AssertionError: due date",
            ],
        );
        json(
            dir,
            &[
                "episode",
                "step",
                &id,
                "--tool",
                "edit_file",
                "--action",
                "pin the clock",
                "--ok",
                "edited",
            ],
        );
        json(
            dir,
            &[
                "episode", "step", &id, "--tool", "pytest", "--action", "run", "--ok", "3 passed",
            ],
        );
        json(
            dir,
            &["episode", "complete", &id, "--success", "tests pass"],
        );
    }
    let open = json(dir, &["episode", "start", "--task", "still going"])["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(
        dir,
        &[
            "episode", "step", &open, "--tool", "grep", "--action", "look", "--ok", "found",
        ],
    );
}

#[test]
fn export_then_import_into_an_empty_data_dir_gives_equal_counts() {
    let source = tempfile::tempdir().unwrap();
    record(source.path(), 3);
    let file = source.path().join("episodes.jsonl");
    let exported = json(source.path(), &["export", file.to_str().unwrap()]);
    assert_eq!(exported["episodes"], 4);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 4);
    // Export never overwrites.
    memory(source.path())
        .args(["export", file.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("must not exist"));

    let target = tempfile::tempdir().unwrap();
    let imported = json(target.path(), &["import", file.to_str().unwrap()]);
    assert_eq!(imported["episodes"], 4);
    assert_eq!(imported["completed"], 3);
    assert_eq!(imported["in_progress"], 1);
    assert_eq!(imported["steps"], 10);

    let a = json(source.path(), &["stats"])["counts"].clone();
    let b = json(target.path(), &["stats"])["counts"].clone();
    for field in ["episodes", "completed", "successes", "steps", "lessons"] {
        assert_eq!(a[field], b[field], "{field}: {a} vs {b}");
    }
    // The import learned: the recovery pattern exists there too.
    assert!(b["patterns"].as_u64().unwrap() > 0);
    assert_eq!(a["patterns"], b["patterns"]);

    // Episodes keep their start and completion times (so their durations) and step latencies.
    let again = target.path().join("again.jsonl");
    json(target.path(), &["export", again.to_str().unwrap()]);
    let times = |file: &Path| {
        let mut v: Vec<(String, Value, Value, Vec<Value>)> = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| {
                let e: Value = serde_json::from_str(l).unwrap();
                let latencies = e["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["latency_ms"].clone())
                    .collect();
                let task = e["task_description"].as_str().unwrap().to_owned();
                (
                    task,
                    e["started_at"].clone(),
                    e["completed_at"].clone(),
                    latencies,
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (before, after) = (times(&file), times(&again));
    assert_eq!(before, after);
    assert!(before.iter().filter(|t| !t.2.is_null()).count() == 3);
}

#[test]
fn a_bad_line_imports_nothing() {
    let source = tempfile::tempdir().unwrap();
    record(source.path(), 2);
    let file = source.path().join("episodes.jsonl");
    json(source.path(), &["export", file.to_str().unwrap()]);
    let good = std::fs::read_to_string(&file).unwrap();

    let target = tempfile::tempdir().unwrap();
    // A malformed line in the middle.
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(1, "{not json");
    let broken = target.path().join("broken.jsonl");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    memory(target.path())
        .args(["import", broken.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("broken.jsonl:2")
                .and(predicate::str::contains("nothing was imported")),
        );
    // An episode over the task-size limit.
    let mut episode: Value = serde_json::from_str(good.lines().next().unwrap()).unwrap();
    episode["task_description"] = Value::String("x".repeat(10_001));
    let oversized = target.path().join("oversized.jsonl");
    std::fs::write(&oversized, format!("{good}{episode}\n")).unwrap();
    memory(target.path())
        .args(["import", oversized.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("oversized.jsonl:4"));
    assert_eq!(json(target.path(), &["stats"])["counts"]["episodes"], 0);
}

#[test]
fn backup_then_restore_gives_equal_counts_and_moves_old_files_aside() {
    let source = tempfile::tempdir().unwrap();
    record(source.path(), 2);
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().join("b1");
    let made = json(source.path(), &["backup", dir.to_str().unwrap()]);
    assert_eq!(made["manifest"]["namespaces"][0][1], 3);
    assert!(dir.join("memory.db").is_file() && dir.join("manifest.json").is_file());
    // A second backup into the same directory is refused.
    memory(source.path())
        .args(["backup", dir.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("already holds a backup"));

    // Into an empty data dir.
    let fresh = tempfile::tempdir().unwrap();
    json(fresh.path(), &["restore", dir.to_str().unwrap()]);
    let a = json(source.path(), &["stats"])["counts"].clone();
    let b = json(fresh.path(), &["stats"])["counts"].clone();
    assert_eq!(a, b);

    // Over an existing memory: refused without --force, moved aside with it.
    let used = tempfile::tempdir().unwrap();
    record(used.path(), 1);
    memory(used.path())
        .args(["restore", dir.to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--force"));
    assert_eq!(json(used.path(), &["stats"])["counts"]["episodes"], 2);
    let restored = json(used.path(), &["restore", "--force", dir.to_str().unwrap()]);
    let aside = Path::new(restored["moved_aside"].as_str().unwrap());
    assert!(aside.join("memory.db").is_file());
    assert_eq!(json(used.path(), &["stats"])["counts"], a);

    // Not a backup.
    memory(fresh.path())
        .args(["restore", backups.path().to_str().unwrap()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not a backup"));
}
