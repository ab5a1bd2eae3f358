//! End to end: `memory mcp` as a child process, spoken to over stdio like an agent's client
//! would: initialize, tools/list, then record -> recommend -> feedback, with the results
//! checked, and a restart on the same data directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Server;
use serde_json::{Value, json};

const NS: &str = "test/e2e";

fn record(s: &mut Server, task: &str) -> (String, Value) {
    let started = s.call_ok(
        "start_episode",
        json!({
            "task": task,
            "task_type": "testing",
            "context": { "domain": "billing", "language": "python", "framework": "pytest", "tags": ["flaky"] }
        }),
    );
    assert_eq!(started["namespace"], json!(NS));
    let id = started["episode_id"]
        .as_str()
        .expect("episode id")
        .to_owned();
    let steps = [
        (
            "pytest",
            "run the invoice tests",
            "error",
            "AssertionError: due date off by one day",
        ),
        (
            "edit_file",
            "freeze time with a fake clock in conftest.py",
            "success",
            "edit applied",
        ),
        ("pytest", "run the invoice tests", "success", "14 passed"),
    ];
    for (tool, action, status, output) in steps {
        let logged = s.call_ok(
            "log_step",
            json!({ "episode_id": id, "tool": tool, "action": action, "status": status, "output": output, "latency_ms": 1200 }),
        );
        assert_eq!(logged["logged"], json!(true));
        assert_eq!(logged["status"], json!(status));
    }
    let done = s.call_ok(
        "complete_episode",
        json!({ "episode_id": id, "outcome": "success", "verdict": "invoice test stable", "artifacts": ["tests/conftest.py"] }),
    );
    (id, done["report"].clone())
}

#[test]
fn initialize_and_list_tools() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, init) = Server::start(dir.path(), NS, &[]);
    assert_eq!(init["protocolVersion"], json!("2025-06-18"));
    assert_eq!(init["serverInfo"]["name"], json!("memory"));
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(init["instructions"].as_str().unwrap().contains("recommend"));

    let listed = s.request("tools/list", json!({}));
    let tools = listed["result"]["tools"].as_array().expect("tools");
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "complete_episode",
            "correct_learned",
            "forget_episode",
            "health",
            "list_learned",
            "log_step",
            "recommend",
            "record_feedback",
            "search_episodes",
            "show_episode",
            "start_episode",
            "stats"
        ]
    );
    for t in tools {
        let name = t["name"].as_str().unwrap();
        assert!(
            t["description"].as_str().unwrap().len() > 40,
            "{name} needs a description"
        );
        assert_eq!(t["inputSchema"]["type"], json!("object"), "{name}: {t}");
        let readonly = t["annotations"]["readOnlyHint"].as_bool().unwrap();
        let writes = [
            "start_episode",
            "log_step",
            "complete_episode",
            "record_feedback",
            "forget_episode",
            "correct_learned",
        ]
        .contains(&name);
        assert_eq!(readonly, !writes, "{name} read-only hint");
        let destructive = t["annotations"]["destructiveHint"].as_bool().unwrap();
        assert_eq!(
            destructive,
            name == "forget_episode",
            "{name} destructive hint"
        );
    }
    let log_step = tools.iter().find(|t| t["name"] == "log_step").unwrap();
    let required: Vec<&str> = log_step["inputSchema"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for field in ["episode_id", "tool", "action", "status"] {
        assert!(
            required.contains(&field),
            "log_step requires {field}: {required:?}"
        );
    }
    s.close();
}

#[test]
fn record_recommend_feedback_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);

    // Nothing in memory yet: no similar episodes, and the answer says the match is weak.
    let empty = s.call_ok("recommend", json!({ "task": "fix the flaky invoice test" }));
    let rec = &empty["recommendation"];
    assert_eq!(rec["episodes"], json!([]));
    assert_eq!(rec["strong_match"], json!(false));

    let mut ids = Vec::new();
    for task in [
        "fix the flaky invoice test",
        "fix the flaky invoice due date test",
        "stabilise the flaky invoice test in CI",
    ] {
        let (id, report) = record(&mut s, task);
        let reward = report["reward"]["total"].as_f64().unwrap();
        assert!(reward > 0.0 && reward <= 1.0, "reward {reward}");
        assert!(
            !report["patterns"].as_array().unwrap().is_empty(),
            "nothing learned: {report}"
        );
        ids.push(id);
    }

    let shown = s.call_ok("show_episode", json!({ "episode_id": ids[0] }));
    let ep = &shown["episode"];
    assert_eq!(ep["steps"].as_array().unwrap().len(), 3);
    assert_eq!(ep["steps"][0]["tool"], json!("pytest"));
    assert!(
        ep["outcome"].is_object(),
        "completed episode has an outcome: {ep}"
    );

    // Before the next task like these: the memory hands back what it learned.
    let advice = s.call_ok(
        "recommend",
        json!({
            "task": "fix the flaky invoice test again",
            "task_type": "testing",
            "context": { "domain": "billing", "language": "python" }
        }),
    );
    let rec = &advice["recommendation"];
    assert!(
        rec["degraded"].is_string(),
        "no model in the tests: lexical and says so: {rec}"
    );
    let similar: Vec<&str> = rec["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            std::iter::once(e["episode"]["id"].as_str().unwrap()).chain(
                e["near_duplicates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap()),
            )
        })
        .collect();
    for id in &ids {
        assert!(
            similar.contains(&id.as_str()),
            "episode {id} missing from {similar:?}"
        );
    }
    let playbook: Vec<&str> = rec["playbook"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tool"].as_str().unwrap())
        .collect();
    assert!(playbook.contains(&"edit_file"), "playbook {playbook:?}");
    assert_eq!(rec["estimate"]["sample_size"], json!(3));
    let patterns = rec["patterns"].as_array().unwrap();
    assert!(!patterns.is_empty(), "no patterns recommended: {rec}");
    for p in patterns {
        assert!(!p["why"].as_str().unwrap().is_empty());
    }
    let pattern_id = patterns[0]["item"]["id"].as_str().unwrap().to_owned();

    // Apply it in a new episode and say it helped.
    let (new_id, _) = record(&mut s, "fix the flaky invoice test after the refactor");
    let fb = s.call_ok(
        "record_feedback",
        json!({ "target_kind": "pattern", "target_id": pattern_id, "episode_id": new_id, "outcome": "helped" }),
    );
    assert_eq!(fb["recorded"], json!(true));

    let learned = s.call_ok("list_learned", json!({ "kind": "patterns", "limit": 100 }));
    let item = learned["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["pattern"]["id"] == json!(pattern_id))
        .expect("the pattern is listed");
    assert_eq!(
        item["pattern"]["effectiveness"]["helped"],
        json!(1),
        "{item}"
    );

    let hits = s.call_ok(
        "search_episodes",
        json!({ "query": "invoice", "status": "success" }),
    );
    assert_eq!(hits["results"].as_array().unwrap().len(), 4);
    // Each hit names the step the query matched: the first to share its word.
    for hit in hits["results"].as_array().unwrap() {
        assert_eq!(hit["matched_step"]["step_number"], json!(1), "{hit}");
        assert_eq!(
            hit["matched_step"]["excerpt"],
            json!("run the invoice tests -> AssertionError: due date off by one day"),
            "{hit}"
        );
    }

    let stats = s.call_ok("stats", json!({}));
    assert_eq!(stats["counts"]["episodes"], json!(4));
    assert_eq!(stats["counts"]["completed"], json!(4));
    assert_eq!(stats["counts"]["steps"], json!(12));
    assert_eq!(stats["counts"]["feedback"], json!(1));
    assert_eq!(stats["success_rate"], json!(1.0));

    let health = s.call_ok("health", json!({}));
    assert_eq!(health["healthy"], json!(true), "{health}");
    let embedder = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "embedder")
        .unwrap();
    assert_eq!(embedder["status"], json!("degraded"));

    // A step buffered at the end of a session is written on shutdown, and a new server on
    // the same data directory continues the episode.
    let open = s.call_ok(
        "start_episode",
        json!({ "task": "left open", "context": { "domain": "billing" } }),
    );
    let open_id = open["episode_id"].as_str().unwrap().to_owned();
    s.call_ok(
        "log_step",
        json!({ "episode_id": open_id, "tool": "shell", "action": "ls", "status": "success", "output": "ok" }),
    );
    s.close();

    let (mut s, _) = Server::start(dir.path(), NS, &[]);
    let stats = s.call_ok("stats", json!({}));
    assert_eq!(stats["counts"]["episodes"], json!(5));
    assert_eq!(stats["counts"]["steps"], json!(13));
    s.call_ok(
        "log_step",
        json!({ "episode_id": open_id, "tool": "shell", "action": "ls -la", "status": "success", "output": "ok" }),
    );
    let shown = s.call_ok("show_episode", json!({ "episode_id": open_id }));
    assert_eq!(shown["episode"]["steps"].as_array().unwrap().len(), 2);
    s.close();
}

#[test]
fn only_the_servers_own_namespace_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);
    // Another namespace is refused for reads and writes alike, whether it holds anything or
    // not: the answer is the same, so it tells nothing of the other namespace.
    for (tool, args) in [
        (
            "start_episode",
            json!({ "task": "peek", "namespace": "team/other" }),
        ),
        ("stats", json!({ "namespace": "team/other" })),
        (
            "search_episodes",
            json!({ "query": "anything", "namespace": "team/other" }),
        ),
        (
            "recommend",
            json!({ "task": "anything", "namespace": "team/other" }),
        ),
    ] {
        let err = s.call_err(tool, args);
        assert_eq!(err["kind"], json!("namespace_not_allowed"), "{tool}: {err}");
        assert_eq!(err["namespace"], json!("team/other"));
    }
    // Naming its own namespace is fine.
    s.call_ok("stats", json!({ "namespace": NS }));
    s.close();

    // `*` allows every namespace; a list allows those listed.
    let (mut s, _) = Server::start(dir.path(), NS, &["--allow-namespace", "*"]);
    s.call_ok("stats", json!({ "namespace": "anyone/at-all" }));
    s.close();
    let (mut s, _) = Server::start(dir.path(), NS, &["--allow-namespace", "team/b"]);
    s.call_ok("stats", json!({ "namespace": "team/b" }));
    let err = s.call_err("stats", json!({ "namespace": "team/c" }));
    assert_eq!(err["kind"], json!("namespace_not_allowed"));
    s.close();
}

#[test]
fn namespaces_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &["--allow-namespace", "team/other"]);
    let other = s.call_ok(
        "start_episode",
        json!({ "task": "write the release notes", "namespace": "team/other" }),
    );
    assert_eq!(other["namespace"], json!("team/other"));
    let id = other["episode_id"].as_str().unwrap().to_owned();

    // Invisible from the server's namespace, for reads and writes alike.
    let err = s.call_err("show_episode", json!({ "episode_id": id }));
    assert_eq!(err["kind"], json!("not_found"));
    let err = s.call_err(
        "log_step",
        json!({ "episode_id": id, "tool": "editor", "action": "write", "status": "success" }),
    );
    assert_eq!(err["kind"], json!("not_found"));

    s.call_ok(
        "log_step",
        json!({ "episode_id": id, "tool": "editor", "action": "write", "status": "success", "namespace": "team/other" }),
    );
    let shown = s.call_ok(
        "show_episode",
        json!({ "episode_id": id, "namespace": "team/other" }),
    );
    assert_eq!(
        shown["episode"]["task_description"],
        json!("write the release notes")
    );

    assert_eq!(
        s.call_ok("stats", json!({}))["counts"]["episodes"],
        json!(0)
    );
    assert_eq!(
        s.call_ok("stats", json!({ "namespace": "team/other" }))["counts"]["episodes"],
        json!(1)
    );
    s.close();
}
