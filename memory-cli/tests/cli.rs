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
    // No step says "rate limiting": none is named.
    assert!(found["results"][0]["matched_step"].is_null(), "{found}");
    let found = json(&dir, &["episode", "search", "trait bound"]);
    assert_eq!(found["results"][0]["episode"]["id"], id.as_str());
    assert_eq!(found["results"][0]["matched_step"]["step_number"], 1);
    assert_eq!(
        found["results"][0]["matched_step"]["excerpt"],
        "cargo test -> error[E0277]: trait bound"
    );

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
    // Advice for the next task, each item with a reason.
    let rec = json(
        &dir,
        &[
            "recommend",
            "--task",
            "add rate limiting to the API",
            "--domain",
            "web_api",
            "--language",
            "rust",
            "--type",
            "code_generation",
        ],
    );
    for key in ["episodes", "patterns", "heuristics", "pitfalls", "playbook"] {
        let items = rec[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} missing: {rec}"));
        assert!(
            items
                .iter()
                .all(|i| i["why"].as_str().is_some_and(|w| !w.is_empty())),
            "{key} without why: {rec}"
        );
    }
    assert_eq!(rec["episodes"][0]["episode"]["id"], id.as_str());
    assert!(!rec["patterns"].as_array().unwrap().is_empty());
    assert!(!rec["pitfalls"].as_array().unwrap().is_empty());
    assert_eq!(rec["estimate"]["sample_size"], 1);
    assert!(rec["estimate"]["why"].as_str().is_some());
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
        .stdout(predicate::str::contains(
            "before any episode: nothing similar in memory yet",
        ))
        .stdout(predicate::str::contains("advice after round 2:"))
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

#[test]
fn without_the_model_retrieval_is_lexical_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-model-here");
    let run = |args: &[&str]| -> Value {
        let out = memory(&dir)
            .env("MEMORY_MODEL_DIR", &missing)
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let id = run(&["episode", "start", "--task", "tune the slow report query"])["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&[
        "episode", "step", &id, "--tool", "psql", "--action", "explain", "--ok", "seq scan",
    ]);
    run(&["episode", "complete", &id, "--success", "index added"]);
    let health = run(&["health"]);
    let embedder = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "embedder")
        .unwrap()
        .clone();
    assert_eq!(embedder["status"], "degraded");
    assert!(
        embedder["detail"]
            .as_str()
            .unwrap()
            .contains("lexical only")
    );
    let rec = run(&["recommend", "--task", "slow report query"]);
    assert!(rec["degraded"].as_str().unwrap().contains("lexical only"));
    assert_eq!(rec["episodes"][0]["episode"]["id"], id.as_str());
    memory(&dir)
        .env("MEMORY_MODEL_DIR", &missing)
        .args(["recommend", "--task", "slow report query"])
        .assert()
        .success()
        .stdout(predicate::str::contains("lexical only"));
}

#[test]
fn eval_retrieval_reports_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dataset");
    std::fs::create_dir_all(&data).unwrap();
    let step = r#"{"tool": "shell", "action": "run tests", "parameters": {}, "result": {"status": "success", "output": "ok", "error": null}, "latency_ms": 5}"#;
    let episode = |id: &str, task: &str, lang: &str| {
        format!(
            r#"{{"id": "{id}", "task_description": "{task}", "task_type": "debugging", "context": {{"domain": "databases", "language": "{lang}", "framework": null, "complexity": "simple", "tags": []}}, "steps": [{step}], "outcome": {{"type": "success", "verdict": "fixed", "reason": null}}}}"#
        )
    };
    let episodes = [
        episode("e1", "Fix a Postgres deadlock between two workers", "rust"),
        episode(
            "e2",
            "Add a dark mode toggle to the settings page",
            "typescript",
        ),
        episode("e3", "Speed up the slow product search query", "python"),
    ]
    .join("\n");
    std::fs::write(data.join("episodes.jsonl"), episodes).unwrap();
    let queries = [
        r#"{"id": "q1", "task_description": "two jobs block each other in the database", "context": {"domain": "databases", "language": "rust", "framework": null, "complexity": "simple", "tags": []}, "task_type": "debugging", "relevant": {"e1": 3}}"#,
        r#"{"id": "q2", "task_description": "translate the invoice emails to German", "context": {"domain": "email", "language": "go", "framework": null, "complexity": "simple", "tags": []}, "task_type": "other", "relevant": {}}"#,
    ]
    .join("\n");
    std::fs::write(data.join("queries.jsonl"), queries).unwrap();
    let report = json(
        &dir,
        &[
            "eval",
            "retrieval",
            "--dataset",
            data.to_str().unwrap(),
            "--both",
        ],
    );
    assert_eq!(report["episodes"], 3);
    assert_eq!(report["modes"].as_array().unwrap().len(), 2);
    let methods = report["modes"][0]["methods"].as_array().unwrap();
    let with_model = report["embedder"].is_string();
    assert_eq!(methods.len(), if with_model { 3 } else { 1 });
    for m in methods {
        assert!(m["ndcg_at_10"].as_f64().unwrap() >= 0.0);
        assert!(m["latency"]["p95_ms"].as_f64().is_some());
    }
    // The data directory was not touched: the eval runs in its own in-memory store.
    assert!(!dir.path().join("memory.db").exists());
    memory(&dir)
        .args(["eval", "retrieval", "--dataset", "/no/such/dir"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot load the dataset"));
}

/// Records one episode through the binary: start, a failing and a passing test run around an
/// edit, then completion.
fn record(dir: &tempfile::TempDir, task: &str, success: bool) -> String {
    let start = json(
        dir,
        &[
            "episode",
            "start",
            "--task",
            task,
            "--domain",
            "payments",
            "--language",
            "rust",
            "--type",
            "testing",
        ],
    );
    let id = start["episode_id"].as_str().unwrap().to_owned();
    for (tool, action, result, text) in [
        (
            "cargo",
            "cargo test",
            "--error",
            "test invoice::rounding ... FAILED",
        ),
        ("edit_file", "round half to even", "--ok", "edit applied"),
        ("cargo", "cargo test", "--ok", "test result: ok. 41 passed"),
    ] {
        let step = [
            "episode", "step", &id, "--tool", tool, "--action", action, result, text,
        ];
        json(dir, &step);
    }
    let outcome = if success { "--success" } else { "--failure" };
    json(dir, &["episode", "complete", &id, outcome, "tests pass"]);
    id
}

#[test]
fn consolidate_reports_its_run_and_stats_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    for task in [
        "fix the flaky invoice rounding test",
        "fix the flaky invoice rounding test again",
        "fix the invoice rounding test that fails on CI",
    ] {
        record(&dir, task, true);
    }
    let before = json(&dir, &["stats"]);
    let report = json(&dir, &["consolidate"]);
    assert_eq!(report["namespace"], "default");
    let run = &report["run"];
    let id = run["id"].as_str().unwrap();
    assert!(!id.is_empty(), "{report}");
    for field in [
        "merged_patterns",
        "merged_heuristics",
        "decayed",
        "pruned_patterns",
        "pruned_heuristics",
        "compacted_steps",
    ] {
        assert!(run[field].is_u64(), "{field} missing: {report}");
    }
    assert!(report["changes"].is_array(), "{report}");
    assert!(report["snapshot"].is_object(), "{report}");
    // Nothing was old enough to decay or prune, and consolidation never loses an episode.
    assert_eq!(run["pruned_patterns"], 0, "{report}");
    let after = json(&dir, &["stats"]);
    assert_eq!(after["counts"]["episodes"], before["counts"]["episodes"]);
    assert_eq!(after["counts"]["episodes"], 3);
    let runs = after["learning"]["consolidation_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{after}");
    assert_eq!(runs[0]["id"], id);

    // A second run right after finds nothing left to merge.
    let again = json(&dir, &["consolidate"]);
    assert_eq!(again["run"]["merged_patterns"], 0, "{again}");
    assert_eq!(again["run"]["merged_heuristics"], 0, "{again}");
    memory(&dir)
        .arg("consolidate")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "merged       0 patterns, 0 heuristics",
        ));
}

#[test]
fn eval_learning_writes_the_report_and_the_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval-out");
    let report = json(
        &dir,
        &[
            "eval",
            "learning",
            "--tasks",
            "40",
            "--seed",
            "3",
            "--lexical",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(report["retrieval"], "lexical");
    assert_eq!(report["config"]["tasks"], 40);
    let arms: Vec<&str> = report["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(
        arms,
        ["no_memory", "episodes_only", "full_memory", "no_lessons"]
    );
    for arm in report["arms"].as_array().unwrap() {
        assert_eq!(arm["tasks"].as_array().unwrap().len(), 40, "{}", arm["arm"]);
    }
    assert!(report["comparison"].is_object(), "{report}");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("learning.json")).unwrap()).unwrap();
    assert_eq!(written["arms"], report["arms"]);
    let svg = std::fs::read_to_string(out.join("learning.svg")).unwrap();
    assert!(
        svg.contains("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(200)]
    );

    // Bad usage: exit code 2 and a message naming the flag.
    memory(&dir)
        .args(["eval", "learning", "--tasks", "many"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tasks"));
}

#[test]
fn settings_precedence_is_flags_then_environment_then_memory_toml_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("memory.toml"),
        "namespace = \"from-file\"\n\n[memory.limits]\nmax_description_bytes = 40\n",
    )
    .unwrap();
    let namespace_of = |cmd: &mut Command| -> String {
        let out = cmd.args(["--json", "stats"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["namespace"].as_str().unwrap().to_owned()
    };
    // Defaults, with no file: the `default` namespace.
    assert_eq!(namespace_of(&mut memory(&other)), "default");
    // The file beats the default, the environment beats the file, a flag beats both.
    assert_eq!(namespace_of(&mut memory(&dir)), "from-file");
    assert_eq!(
        namespace_of(memory(&dir).env("MEMORY_NAMESPACE", "from-env")),
        "from-env"
    );
    assert_eq!(
        namespace_of(
            memory(&dir)
                .env("MEMORY_NAMESPACE", "from-env")
                .args(["--namespace", "from-flag"])
        ),
        "from-flag"
    );

    // The file's library settings apply: a 41-byte task is over its 40-byte limit (bad input:
    // exit code 2, as for the built-in limits).
    memory(&dir)
        .args(["episode", "start", "--task", &"t".repeat(41)])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("task_description is too large"));
    json(&dir, &["episode", "start", "--task", &"t".repeat(40)]);

    // MEMORY_DATA_DIR picks the data directory when no flag does; the flag wins over it.
    let mut by_env = Command::cargo_bin("memory").unwrap();
    by_env
        .env("MEMORY_DATA_DIR", other.path())
        .env_remove("MEMORY_NAMESPACE")
        .env_remove("MEMORY_MODE");
    assert_eq!(namespace_of(&mut by_env), "default");
    assert!(other.path().join("memory.db").exists());
    let mut flag_wins = Command::cargo_bin("memory").unwrap();
    flag_wins
        .env("MEMORY_DATA_DIR", other.path())
        .env_remove("MEMORY_NAMESPACE")
        .env_remove("MEMORY_MODE")
        .arg("--data-dir")
        .arg(dir.path());
    assert_eq!(namespace_of(&mut flag_wins), "from-file");

    // A broken file is a clear error naming the file, not a silent fallback.
    std::fs::write(dir.path().join("memory.toml"), "namspace = \"typo\"\n").unwrap();
    memory(&dir)
        .arg("stats")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("memory.toml"));

    // So is a typo in any nested section, with the key's full path.
    for (file, path) in [
        (
            "[memory.quotas]\nmax_episode = 1\n",
            "memory.quotas.max_episode",
        ),
        ("[memory.steps]\nmax_bach = 1\n", "memory.steps.max_bach"),
        ("[memory.limits]\nmax_tag = 3\n", "memory.limits.max_tag"),
        (
            "[memory.retrieval]\nfusion_weight = 1\n",
            "memory.retrieval.fusion_weight",
        ),
        (
            "[memory.consolidation]\nintervall = 60\n",
            "memory.consolidation.intervall",
        ),
        ("[memory.redaction]\nextra = []\n", "memory.redaction.extra"),
    ] {
        std::fs::write(dir.path().join("memory.toml"), file).unwrap();
        memory(&dir)
            .arg("stats")
            .assert()
            .code(1)
            .stderr(predicate::str::contains(path))
            .stderr(predicate::str::contains("unknown field"));
    }
}

/// The fusion settings are read from `memory.toml`; an unknown fusion method is refused with
/// the key and the methods there are.
#[test]
fn fusion_settings_come_from_memory_toml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("memory.toml"),
        "[memory.retrieval]\nfusion = \"z_score\"\nsemantic_trust_from = 0.2\nsemantic_trust_full = 0.4\n",
    )
    .unwrap();
    memory(&dir).arg("stats").assert().success();
    std::fs::write(
        dir.path().join("memory.toml"),
        "[memory.retrieval]\nfusion = \"average\"\n",
    )
    .unwrap();
    memory(&dir)
        .arg("stats")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("memory.retrieval.fusion"))
        .stderr(predicate::str::contains("min_max"));
}

/// Stored text holding terminal control sequences (an OSC 52 clipboard write, screen
/// clearing, a bidi override) is printed escaped by the human output, and exact under --json.
#[test]
fn terminal_control_characters_are_escaped_in_human_output() {
    let dir = tempfile::tempdir().unwrap();
    let task = "deploy \u{1b}]52;c;aGk=\u{7} then \u{1b}[2J now";
    let output = "ok \u{1b}[2J\u{1b}]52;c;aGk=\u{7}";
    let action = "run \u{202e}txt.exe";
    let id = json(&dir, &["episode", "start", "--task", task])["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    json(
        &dir,
        &[
            "episode", "step", &id, "--tool", "sh", "--action", action, "--ok", output,
        ],
    );
    json(
        &dir,
        &[
            "episode",
            "complete",
            &id,
            "--success",
            "done \u{1b}[31mred",
        ],
    );

    let raw_controls = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        text.chars()
            .filter(|c| {
                (c.is_control() && *c != '\n' && *c != '\t')
                    || ('\u{202a}'..='\u{202e}').contains(c)
                    || ('\u{2066}'..='\u{2069}').contains(c)
            })
            .collect::<Vec<_>>()
    };
    for args in [
        vec!["episode", "show", id.as_str()],
        vec!["episode", "list"],
        vec!["episode", "search", "deploy"],
    ] {
        let out = memory(&dir).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            !out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07),
            "{args:?}: raw ESC or BEL in {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(raw_controls(&out.stdout), Vec::<char>::new(), "{args:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.contains("deploy \\x1b]52;c;aGk=\\x07 then \\x1b[2J now"),
            "{args:?}: {stdout}"
        );
    }
    let shown = memory(&dir)
        .args(["episode", "show", &id])
        .output()
        .unwrap();
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.contains("ok \\x1b[2J\\x1b]52;c;aGk=\\x07"), "{shown}");
    assert!(shown.contains("run \\u{202e}txt.exe"), "{shown}");
    assert!(shown.contains("done \\x1b[31mred"), "{shown}");

    // JSON output stays exact.
    let exact = json(&dir, &["episode", "show", &id]);
    assert_eq!(exact["task_description"], task);
    assert_eq!(exact["steps"][0]["action"], action);
    assert_eq!(exact["steps"][0]["result"]["output"], output);
    let listed = json(&dir, &["episode", "list"]);
    assert_eq!(listed["episodes"][0]["task_description"], task);

    // Input echoed in an error is escaped too.
    let out = memory(&dir)
        .args(["episode", "list", "--outcome", "\u{1b}]52;c;aGk=\u{7}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And in clap's usage errors, which repeat the bad value.
    let out = memory(&dir)
        .args(["episode", "list", "--limit", "\u{1b}[2J"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.stderr.contains(&0x1b), "{stderr:?}");
    assert!(stderr.contains("\\x1b[2J"), "{stderr}");
}

/// An argument that is not UTF-8 is a usage error naming its position (exit code 2), not a
/// panic.
#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_usage_errors() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let dir = tempfile::tempdir().unwrap();
    let bad = OsStr::from_bytes(b"\xff\xfe");

    // A positional argument: `memory --data-dir DIR episode show <bad>` (argument 5).
    let out = memory(&dir)
        .args([OsStr::new("episode"), OsStr::new("show"), bad])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("argument 5 is not valid UTF-8"), "{stderr}");

    // An option's value: `memory --data-dir <bad> stats` (argument 2).
    let out = Command::cargo_bin("memory")
        .unwrap()
        .arg("--data-dir")
        .arg(bad)
        .arg("stats")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("argument 2 (after \"--data-dir\") is not valid UTF-8"),
        "{stderr}"
    );

    // Under --json the usage error is JSON on stdout.
    let out = memory(&dir)
        .args([
            OsStr::new("--json"),
            OsStr::new("episode"),
            OsStr::new("start"),
            OsStr::new("--task"),
            bad,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "usage");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("argument 7 (after \"--task\")"),
        "{v}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(!dir.path().join("memory.db").exists(), "nothing was opened");
}

/// The data directory is created 0700 and every file the memory writes 0600, even under
/// umask 000; so are `export` files and `backup` directories.
#[cfg(unix)]
#[test]
fn files_and_directories_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }
    /// `root` and every directory under it 0700, every regular file 0600; the files seen.
    fn assert_private(root: &Path, files: &mut Vec<String>) {
        assert_eq!(mode(root), 0o700, "{}", root.display());
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                assert_private(&path, files);
            } else if meta.is_file() {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("nested/data");
    let bin = env!("CARGO_BIN_EXE_memory");
    // `sh` sets the umask, then becomes `memory` with the arguments.
    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(bin)
            .arg("--data-dir")
            .arg(&data)
            .arg("--json")
            .args(args)
            .env_remove("MEMORY_NAMESPACE")
            .env_remove("MEMORY_MODE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Without the memory's own modes, umask 000 would leave 0777 / 0666 (a control).
    let control = tmp.path().join("control");
    std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; : > \"$0\"")
        .arg(&control)
        .status()
        .unwrap();
    assert_eq!(mode(&control), 0o666);

    let id = run(&["episode", "start", "--task", "private files"])["episode_id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&[
        "episode", "step", &id, "--tool", "cargo", "--action", "build", "--ok", "ok",
    ]);
    run(&["episode", "complete", &id, "--success", "built"]);
    let export = tmp.path().join("export.jsonl");
    run(&["export", export.to_str().unwrap()]);
    let backup = tmp.path().join("backups/first");
    run(&["backup", backup.to_str().unwrap()]);

    let mut files = Vec::new();
    assert_private(&data, &mut files);
    for expected in ["memory.db", "cache.redb", "memory.lock"] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} in {files:?}"
        );
    }
    assert_eq!(mode(data.parent().unwrap()), 0o700, "created parents too");
    assert_eq!(mode(&export), 0o600);
    let mut backup_files = Vec::new();
    assert_private(&backup, &mut backup_files);
    assert!(
        backup_files.iter().any(|f| f == "manifest.json"),
        "{backup_files:?}"
    );
    assert_eq!(mode(&tmp.path().join("backups")), 0o700);
}

/// A reader that stops reading (`memory episode list | head -1`) ends the output, not the
/// command: no panic, the command's own exit code, its work done and the stack closed.
#[test]
fn a_closed_stdout_ends_the_output_not_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let closed_stdout = || {
        // Closed before the process starts, so its very first write fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    // `std`'s command: the test chooses where stdout goes.
    let memory = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_memory"));
        c.arg("--data-dir")
            .arg(dir.path())
            .env_remove("MEMORY_NAMESPACE")
            .env_remove("MEMORY_MODE");
        c
    };
    for json_flag in [false, true] {
        let mut cmd = memory();
        if json_flag {
            cmd.arg("--json");
        }
        let out = cmd
            .args(["episode", "start", "--task", "add rate limiting"])
            .args(["--domain", "web_api", "--type", "code_generation"])
            .stdout(closed_stdout())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "json {json_flag}: {stderr}");
        assert!(!stderr.contains("panicked"), "json {json_flag}: {stderr}");
    }
    // Both episodes were started, and the store was closed cleanly enough to reopen.
    let listed = json(&dir, &["episode", "list"]);
    assert_eq!(listed["episodes"].as_array().unwrap().len(), 2, "{listed}");

    // A failure that is not a closed pipe (here a full device) is reported once the work is
    // done.
    #[cfg(target_os = "linux")]
    {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full");
        let out = memory()
            .arg("stats")
            .stdout(full.unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cannot write the output"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
