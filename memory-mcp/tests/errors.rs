//! Bad input over MCP: malformed messages, unknown methods and tools, arguments that do not
//! fit the schema or the library's limits, steps for unknown episodes, rate limits. Each
//! gets a proper error, nothing is stored, and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Server;
use serde_json::json;

const NS: &str = "test/errors";

/// The server still answers: ping, tools/list and a real write.
fn assert_serving(s: &mut Server) {
    let pong = s.request("ping", json!(null));
    assert!(pong["result"].is_object(), "ping: {pong}");
    let listed = s.request("tools/list", json!({}));
    assert_eq!(listed["result"]["tools"].as_array().unwrap().len(), 12);
    let started = s.call_ok("start_episode", json!({ "task": "still serving" }));
    assert!(started["episode_id"].is_string());
}

#[test]
fn malformed_messages_get_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);

    // Not JSON: no id to answer to, so it is dropped (as the other MCP SDKs do).
    s.send_line("this is not json {");
    s.send_line("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ");
    assert!(
        s.recv_within(Duration::from_millis(300)).is_none(),
        "garbage is not answered"
    );

    // JSON that is not a JSON-RPC message: Invalid Request.
    s.send(&json!({ "hello": "world" }));
    let r = s
        .recv_within(common::TIMEOUT)
        .expect("an answer to a non-message");
    assert_eq!(r["error"]["code"], json!(-32600), "{r}");

    // An unknown method: Method not found.
    s.send(&json!({ "jsonrpc": "2.0", "id": "m1", "method": "episodes/delete_all", "params": {} }));
    let r = s.response(&json!("m1"));
    assert_eq!(r["error"]["code"], json!(-32601), "{r}");

    // tools/call without a tool name: Invalid Request, not a crash.
    s.send(&json!({ "jsonrpc": "2.0", "id": "m2", "method": "tools/call", "params": { "arguments": {} } }));
    let r = s.recv_within(common::TIMEOUT).expect("an answer");
    assert!(r["error"]["code"].as_i64().is_some(), "{r}");

    assert_serving(&mut s);
    s.close();
}

#[test]
fn unknown_tools_and_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);

    let r = s.call_raw("run_shell", json!({ "command": "rm -rf /" }));
    assert_eq!(r["error"]["code"], json!(-32602), "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{r}"
    );

    // Arguments that do not fit the schema: a tool error the agent can read and fix.
    let e = s.call_err("start_episode", json!({ "task": 42 }));
    assert_eq!(e["kind"], json!("invalid_arguments"));
    let e = s.call_err("start_episode", json!({}));
    assert_eq!(e["kind"], json!("invalid_arguments"));
    assert!(e["message"].as_str().unwrap().contains("task"), "{e}");
    let e = s.call_err(
        "start_episode",
        json!({ "task": "x", "task_typo": "testing" }),
    );
    assert_eq!(e["kind"], json!("invalid_arguments"));
    let e = s.call_err(
        "start_episode",
        json!({ "task": "x", "task_type": "cooking" }),
    );
    assert_eq!(e["kind"], json!("invalid_arguments"));
    let e = s.call_err("start_episode", json!({ "task": "   " }));
    assert_eq!(e["kind"], json!("invalid_input"));
    let e = s.call_err("start_episode", json!({ "task": "x", "namespace": "" }));
    assert_eq!(e["kind"], json!("invalid_input"));
    let e = s.call_err("show_episode", json!({ "episode_id": "not-a-uuid" }));
    assert_eq!(e["kind"], json!("invalid_input"));
    let e = s.call_err("search_episodes", json!({ "query": "x", "limit": 0 }));
    assert_eq!(e["kind"], json!("invalid_input"));
    let e = s.call_err("list_learned", json!({ "kind": "secrets" }));
    assert_eq!(e["kind"], json!("invalid_arguments"));

    assert_eq!(
        s.call_ok("stats", json!({}))["counts"]["episodes"],
        json!(0),
        "nothing stored"
    );
    assert_serving(&mut s);
    s.close();
}

#[test]
fn oversized_arguments_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);

    let e = s.call_err("start_episode", json!({ "task": "x".repeat(20_000) }));
    assert_eq!(e["kind"], json!("limit_exceeded"));
    assert_eq!(e["field"], json!("task_description"));
    assert_eq!(e["limit"], json!(10_000));
    assert_eq!(e["actual"], json!(20_000));
    let e = s.call_err(
        "start_episode",
        json!({ "task": "x", "context": { "tags": vec!["t"; 40] } }),
    );
    assert_eq!(e["kind"], json!("limit_exceeded"));
    let e = s.call_err("recommend", json!({ "task": "y".repeat(10_001) }));
    assert_eq!(e["kind"], json!("limit_exceeded"));
    let e = s.call_err("recommend", json!({ "task": "y", "limit": 1_000 }));
    assert_eq!(e["kind"], json!("limit_exceeded"));
    assert_eq!(
        s.call_ok("stats", json!({}))["counts"]["episodes"],
        json!(0)
    );

    let id = s.call_ok("start_episode", json!({ "task": "big outputs" }))["episode_id"].clone();
    let e = s.call_err(
        "log_step",
        json!({ "episode_id": id, "tool": "cat", "action": "cat big.log", "status": "success", "output": "z".repeat(70_000) }),
    );
    assert_eq!(e["kind"], json!("limit_exceeded"));
    assert_eq!(e["field"], json!("step.output"));
    let e = s.call_err(
        "log_step",
        json!({ "episode_id": id, "tool": "t".repeat(300), "action": "a", "status": "success" }),
    );
    assert_eq!(e["field"], json!("step.tool"));
    let e = s.call_err(
        "complete_episode",
        json!({ "episode_id": id, "outcome": "success", "verdict": "v".repeat(10_001) }),
    );
    assert_eq!(e["kind"], json!("limit_exceeded"));
    let shown = s.call_ok("show_episode", json!({ "episode_id": id }));
    assert_eq!(
        shown["episode"]["steps"],
        json!([]),
        "no refused step stored"
    );
    assert!(
        shown["episode"]["outcome"].is_null(),
        "not completed by the refused call"
    );

    assert_serving(&mut s);
    s.close();
}

#[test]
fn steps_for_unknown_or_completed_episodes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);

    let unknown = "01936f0e-1b2c-7d3e-8f40-123456789abc";
    let e = s.call_err(
        "log_step",
        json!({ "episode_id": unknown, "tool": "cargo", "action": "cargo test", "status": "success" }),
    );
    assert_eq!(e["kind"], json!("not_found"));
    assert_eq!(e["id"], json!(unknown));
    let e = s.call_err(
        "complete_episode",
        json!({ "episode_id": unknown, "outcome": "failure", "verdict": "gave up" }),
    );
    assert_eq!(e["kind"], json!("not_found"));

    let id = s.call_ok("start_episode", json!({ "task": "one step" }))["episode_id"].clone();
    s.call_ok(
        "log_step",
        json!({ "episode_id": id, "tool": "cargo", "action": "build", "status": "success" }),
    );
    let e = s.call_err(
        "complete_episode",
        json!({ "episode_id": id, "outcome": "failure", "verdict": "no", "artifacts": ["a"] }),
    );
    assert_eq!(
        e["kind"],
        json!("invalid_input"),
        "artifacts belong to success"
    );
    s.call_ok(
        "complete_episode",
        json!({ "episode_id": id, "outcome": "success", "verdict": "built" }),
    );
    let e = s.call_err(
        "log_step",
        json!({ "episode_id": id, "tool": "cargo", "action": "late", "status": "success" }),
    );
    assert_eq!(e["kind"], json!("conflict"));
    let e = s.call_err(
        "complete_episode",
        json!({ "episode_id": id, "outcome": "success", "verdict": "again" }),
    );
    assert_eq!(e["kind"], json!("conflict"));

    // Feedback must name a pattern that exists.
    let e = s.call_err(
        "record_feedback",
        json!({ "target_kind": "pattern", "target_id": "0123456789abcdef0123456789abcdef", "episode_id": id, "outcome": "helped" }),
    );
    assert_eq!(e["kind"], json!("not_found"));
    assert_eq!(
        s.call_ok("stats", json!({}))["counts"]["feedback"],
        json!(0)
    );

    let shown = s.call_ok("show_episode", json!({ "episode_id": id }));
    assert_eq!(shown["episode"]["steps"].as_array().unwrap().len(), 1);
    assert_serving(&mut s);
    s.close();
}

#[test]
fn a_megabyte_bad_id_is_quoted_short() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), NS, &[]);
    let big = "f".repeat(1 << 20);

    let r = s.call_raw("show_episode", json!({ "episode_id": big }));
    let result = &r["result"];
    assert_eq!(result["isError"], json!(true));
    let message = result["structuredContent"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(message.len() < 300, "{} bytes", message.len());
    assert!(message.contains("(1048576 bytes)"), "{message}");
    // The whole answer (structured content and its text copy) stays small too.
    assert!(r.to_string().len() < 2_000, "{} bytes", r.to_string().len());

    let id = s.call_ok("start_episode", json!({ "task": "feedback target" }))["episode_id"].clone();
    let e = s.call_err(
        "record_feedback",
        json!({ "target_kind": "heuristic", "target_id": big, "episode_id": id, "outcome": "helped" }),
    );
    assert_eq!(e["kind"], json!("not_found"));
    assert!(e.to_string().len() < 600, "{} bytes", e.to_string().len());
    assert_serving(&mut s);
    s.close();
}

#[test]
fn each_client_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(
        dir.path(),
        NS,
        &["--rate-burst", "3", "--rate-per-second", "0.5"],
    );
    for _ in 0..3 {
        s.call_ok("stats", json!({}));
    }
    let e = s.call_err("start_episode", json!({ "task": "one too many" }));
    assert_eq!(e["kind"], json!("rate_limited"));
    assert!(e["retry_after_ms"].as_u64().unwrap() > 0, "{e}");
    // Protocol requests are not tool calls and still answer.
    assert!(s.request("ping", json!(null))["result"].is_object());
    // The bucket refills: one call per two seconds.
    std::thread::sleep(Duration::from_millis(2_100));
    assert_eq!(
        s.call_ok("stats", json!({}))["counts"]["episodes"],
        json!(0),
        "the refused start stored nothing"
    );
    s.close();
}
