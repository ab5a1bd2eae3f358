//! Fuzz-style: a seeded stream of random JSON-RPC traffic (garbage lines, random JSON,
//! requests with random methods, tools and arguments, notifications, stray responses) never
//! crashes the server; it still answers afterwards and exits cleanly when stdin closes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

const MESSAGES: usize = 400;

const METHODS: &[&str] = &[
    "tools/call",
    "tools/call",
    "tools/call",
    "tools/list",
    "ping",
    "initialize",
    "resources/list",
    "prompts/list",
    "logging/setLevel",
    "completion/complete",
    "notifications/cancelled",
    "notifications/initialized",
    "notifications/progress",
    "tasks/get",
    "",
    "tools/",
    "x/y",
];

const TOOLS: &[&str] = &[
    "recommend",
    "start_episode",
    "log_step",
    "complete_episode",
    "record_feedback",
    "search_episodes",
    "show_episode",
    "forget_episode",
    "correct_learned",
    "list_learned",
    "stats",
    "health",
    "exec",
    "",
];

const KEYS: &[&str] = &[
    "task",
    "episode_id",
    "tool",
    "action",
    "status",
    "output",
    "outcome",
    "verdict",
    "namespace",
    "limit",
    "kind",
    "query",
    "context",
    "target_kind",
    "target_id",
    "parameters",
];

fn random_string(rng: &mut StdRng) -> String {
    let words = [
        "success",
        "error",
        "patterns",
        "testing",
        "fix",
        "\u{0}",
        "ü",
        "../..",
        "01936f0e-1b2c-7d3e-8f40-123456789abc",
        "",
        " ",
    ];
    match rng.random_range(0..4) {
        0 => words[rng.random_range(0..words.len())].to_owned(),
        1 => (0..rng.random_range(0..40))
            .map(|_| char::from(rng.random_range(32u8..127)))
            .collect(),
        2 => "w".repeat(rng.random_range(0..12_000)),
        _ => (0..rng.random_range(0..8))
            .map(|_| char::from_u32(rng.random_range(0..0x2_0000)).unwrap_or('?'))
            .collect(),
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(rng.random_range(-1_000_000i64..1_000_000)),
        3 => json!(rng.random::<f64>() * 1e6),
        4 => json!(random_string(rng)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(random_object(rng, depth + 1)),
    }
}

fn random_object(rng: &mut StdRng, depth: u32) -> Map<String, Value> {
    (0..rng.random_range(0..6))
        .map(|_| {
            let key = if rng.random_bool(0.8) {
                KEYS[rng.random_range(0..KEYS.len())].to_owned()
            } else {
                random_string(rng)
            };
            (key, random_value(rng, depth))
        })
        .collect()
}

fn random_message(rng: &mut StdRng, n: usize) -> String {
    match rng.random_range(0..10) {
        0 => random_string(rng),
        1 => random_value(rng, 0).to_string(),
        2 => json!({ "jsonrpc": "2.0", "id": n, "result": random_value(rng, 1) }).to_string(),
        _ => {
            let method = METHODS[rng.random_range(0..METHODS.len())];
            let params = if method == "tools/call" && rng.random_bool(0.8) {
                json!({
                    "name": TOOLS[rng.random_range(0..TOOLS.len())],
                    "arguments": Value::Object(random_object(rng, 0)),
                })
            } else {
                random_value(rng, 0)
            };
            let mut msg = json!({ "jsonrpc": "2.0", "method": method, "params": params });
            if !method.starts_with("notifications/") || rng.random_bool(0.2) {
                msg["id"] = if rng.random_bool(0.8) {
                    json!(n)
                } else {
                    random_value(rng, 2)
                };
            }
            msg.to_string()
        }
    }
}

#[test]
fn random_jsonrpc_traffic_never_crashes_the_server() {
    let seed = std::env::var("MCP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    println!("seed {seed} ({MESSAGES} messages); rerun with MCP_FUZZ_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let (mut s, _) = Server::start(dir.path(), "test/fuzz", &["--rate-per-second", "0"]);

    for n in 0..MESSAGES {
        let line = random_message(&mut rng, n);
        s.send_line(&line.replace('\n', " "));
        // Drain answers now and then, and check the server is alive with a ping of our own.
        if n % 50 == 49 {
            let id = json!(format!("alive-{n}"));
            s.send(&json!({ "jsonrpc": "2.0", "id": id, "method": "ping" }));
            let pong = s.response(&id);
            assert!(pong["result"].is_object(), "after message {n}: {pong}");
            assert!(s.is_running(), "server died after message {n}");
        }
    }
    while s.recv_within(Duration::from_millis(200)).is_some() {}

    let listed = s.request("tools/list", json!({}));
    assert_eq!(listed["result"]["tools"].as_array().unwrap().len(), 12);
    let health = s.call_ok("health", json!({}));
    assert_eq!(health["healthy"], json!(true));
    let id = s.call_ok("start_episode", json!({ "task": "after the storm" }))["episode_id"].clone();
    s.call_ok(
        "log_step",
        json!({ "episode_id": id, "tool": "t", "action": "a", "status": "success" }),
    );
    s.call_ok(
        "complete_episode",
        json!({ "episode_id": id, "outcome": "success", "verdict": "ok" }),
    );
    assert!(s.is_running());
    s.close();
}
