//! `memory episode forget`: an episode recorded by mistake is gone from every file of the data
//! directory, from search and from what was learned; an audit record remains.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{json, memory};
use serde_json::Value;

/// A word that appears nowhere else: in the task, a tag, a step's action and output, and the
/// outcome of the episode to forget.
const MARKER: &str = "zebraquartzmarker";

fn record(dir: &Path, task: &str, tag: &str, words: &str) -> String {
    let start = json(
        dir,
        &[
            "episode",
            "start",
            "--task",
            task,
            "--domain",
            "billing",
            "--language",
            "rust",
            "--type",
            "debugging",
            "--tag",
            tag,
        ],
    );
    let id = start["episode_id"].as_str().unwrap().to_owned();
    let steps = [
        (
            "cargo",
            format!("cargo test {words}"),
            "--error",
            format!("FAILED {words}"),
        ),
        (
            "edit_file",
            format!("fix {words}"),
            "--ok",
            format!("edited {words}"),
        ),
        ("cargo", "cargo test".to_owned(), "--ok", "ok".to_owned()),
    ];
    for (tool, action, result, text) in &steps {
        let step = [
            "episode", "step", &id, "--tool", tool, "--action", action, result, text,
        ];
        json(dir, &step);
    }
    json(
        dir,
        &[
            "episode",
            "complete",
            &id,
            "--success",
            &format!("fixed {words}"),
        ],
    );
    id
}

/// Every file under `dir` that holds `needle`, as UTF-8 or UTF-16 (little or big endian).
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let forms: Vec<Vec<u8>> = vec![
        needle.as_bytes().to_vec(),
        needle.to_uppercase().into_bytes(),
        needle.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        needle.encode_utf16().flat_map(u16::to_be_bytes).collect(),
    ];
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if forms
                .iter()
                .any(|f| bytes.windows(f.len()).any(|w| w == f.as_slice()))
            {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

fn learned_total(dir: &Path) -> u64 {
    let stats = json(dir, &["stats"]);
    let n = |k: &str| stats["counts"][k].as_u64().unwrap();
    n("patterns") + n("heuristics") + n("lessons")
}

#[test]
fn a_forgotten_episode_leaves_no_byte_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kept = record(d, "fix the invoice rounding", "invoices", "rounding");
    let learned_alone = learned_total(d);
    let gone = record(d, &format!("fix the {MARKER} export"), MARKER, MARKER);
    // Read back as a user would first: the episode is in the caches too.
    let shown = json(d, &["episode", "show", &gone]);
    assert!(shown.to_string().contains(MARKER));
    let hits = json(d, &["episode", "search", MARKER]);
    assert_eq!(hits["results"].as_array().unwrap().len(), 1);
    assert!(
        !files_holding(d, MARKER).is_empty(),
        "the marker is stored before"
    );

    let report = json(
        d,
        &["episode", "forget", &gone, "--reason", "customer data"],
    );
    let r = &report["report"];
    assert_eq!(r["forgotten"], Value::from(vec![gone.clone()]), "{report}");
    assert_eq!(r["rows"]["episodes"], 1);
    assert_eq!(r["rows"]["steps"], 3);
    assert_eq!(r["files_scrubbed"], true, "{report}");

    assert_eq!(
        files_holding(d, MARKER),
        Vec::<String>::new(),
        "no file holds the marker"
    );
    let hits = json(d, &["episode", "search", MARKER]);
    assert!(hits["results"].as_array().unwrap().is_empty());
    memory(d)
        .args(["episode", "show", &gone])
        .assert()
        .failure();
    assert_eq!(
        learned_total(d),
        learned_alone,
        "what only it taught is gone"
    );
    json(d, &["episode", "show", &kept]);

    let records = json(d, &["episode", "forgotten"]);
    let records = records["forgotten"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["episode_id"], Value::from(gone.clone()));
    assert_eq!(records[0]["reason"], "customer data");
}

#[test]
fn forgetting_by_a_filter_needs_yes_and_takes_every_match() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..3 {
        record(d, &format!("fix invoice {i}"), "invoices", "rounding");
    }
    let refused = memory(d)
        .args(["episode", "forget", "--before", "2999-01-01"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let bad = memory(d)
        .args(["episode", "forget", "--before", "yesterday", "--yes"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2026-01-31"));
    let report = json(d, &["episode", "forget", "--before", "2999-01-01", "--yes"]);
    assert_eq!(report["report"]["forgotten"].as_array().unwrap().len(), 3);
    let listed = json(d, &["episode", "list"]);
    assert!(listed["episodes"].as_array().unwrap().is_empty());
    assert_eq!(learned_total(d), 0, "nothing learned remains");
    let reason = "x".repeat(501);
    let long = memory(d)
        .args([
            "episode",
            "forget",
            "--before",
            "2999-01-01",
            "--yes",
            "--reason",
            &reason,
        ])
        .output()
        .unwrap();
    assert!(!long.status.success(), "a reason over 500 bytes is refused");
    let reason = "x".repeat(500);
    json(
        d,
        &[
            "episode",
            "forget",
            "--before",
            "2999-01-01",
            "--yes",
            "--reason",
            &reason,
        ],
    );
}

#[test]
fn an_operator_retracts_and_pins_what_was_learned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..2 {
        record(d, &format!("fix invoice {i}"), "invoices", "rounding");
    }
    let listed = json(d, &["pattern", "list", "--kind", "tool_sequence"]);
    let id = listed["patterns"][0]["pattern"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let short = &id[..12];
    let pinned = json(
        d,
        &["pattern", "pin", short, "--reason", "agreed in review"],
    );
    assert_eq!(
        pinned["item"]["item"]["pinned"]["reason"],
        "agreed in review"
    );
    let retracted = json(
        d,
        &["pattern", "retract", &id, "--reason", "skips the tests"],
    );
    assert_eq!(retracted["item"]["item"]["status"]["state"], "retracted");
    assert!(
        retracted["item"]["item"].get("pinned").is_none(),
        "a retraction unpins"
    );
    let active = json(d, &["pattern", "list", "--kind", "tool_sequence"]);
    assert!(
        active["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["pattern"]["id"] != id.as_str())
    );
    let all = json(d, &["pattern", "list", "--kind", "tool_sequence", "--all"]);
    assert!(
        all["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pattern"]["id"] == id.as_str())
    );
    let refused = memory(d)
        .args(["pattern", "pin", &id, "--reason", "x"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a retracted item cannot be pinned"
    );
    let lessons = json(d, &["lesson", "list"]);
    let lesson = lessons["lessons"][0]["lesson"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(
        d,
        &["lesson", "retract", &lesson, "--reason", "wrong remedy"],
    );
    assert!(
        json(d, &["lesson", "list"])["lessons"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn purging_a_namespace_empties_it_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let with_ns = |ns: &str, args: &[&str]| {
        let mut all = vec!["--namespace", ns];
        all.extend_from_slice(args);
        json(d, &all)
    };
    for i in 0..3 {
        let id = with_ns(
            "team/a",
            &["episode", "start", "--task", &format!("fix invoice {i}")],
        );
        let id = id["episode_id"].as_str().unwrap().to_owned();
        with_ns(
            "team/a",
            &[
                "episode", "step", &id, "--tool", "cargo", "--action", "test", "--ok", "ok",
            ],
        );
        with_ns("team/a", &["episode", "complete", &id, "--success", "done"]);
    }
    with_ns("team/a", &["consolidate"]);
    record(d, "fix the other team's invoice", "invoices", "rounding");
    let before = json(d, &["stats"]);
    let refused = memory(d)
        .args(["namespace", "purge", "team/a"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    let purged = json(d, &["namespace", "purge", "team/a", "--yes"]);
    assert_eq!(
        purged["report"]["forgotten"].as_array().unwrap().len(),
        3,
        "{purged}"
    );
    assert!(
        purged["rows"]["consolidation_runs"].as_u64().unwrap() >= 1,
        "{purged}"
    );
    let counts = &with_ns("team/a", &["stats"])["counts"];
    for k in ["episodes", "steps", "patterns", "heuristics", "lessons"] {
        assert_eq!(counts[k], 0, "{k}: {counts}");
    }
    assert_eq!(
        json(d, &["stats"])["counts"],
        before["counts"],
        "the other namespace is untouched"
    );
    let records = with_ns("team/a", &["episode", "forgotten"]);
    assert_eq!(
        records["forgotten"].as_array().unwrap().len(),
        3,
        "the audit records stay"
    );
}
