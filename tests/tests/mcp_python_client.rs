//! The memory's MCP server driven by the official MCP Python SDK client (`PyPI` `mcp`, installed
//! by `scripts/install-mcp-client.sh`), over both transports: `memory mcp` on stdio and
//! `memory serve` on streamable HTTP. The client initializes, lists the tools and checks their
//! input and output schemas (the SDK validates every structured result against its tool's
//! output schema), runs record -> recommend -> feedback, recommends within a token budget,
//! gets bad calls back as tool errors, and after a restart finds what it recorded. Over HTTP a
//! client without the bearer token is refused, `/health` and `/metrics` answer, and a
//! non-loopback address without a token is refused before anything listens.
//!
//! Skips (with a note) without the client; fails under CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::procs::{memory_binary, serve_on_any_port, terminate};
use tokio::process::{Child, Command};

const TOKEN: &str = "test-token-5b1e";

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MEMORY_MCP_PYTHON").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let p = root.join(".tools/mcp-client/bin/python");
    if p.is_file() {
        return Some(p);
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(
        !in_ci,
        "the MCP Python client is missing (run scripts/install-mcp-client.sh); CI may not skip"
    );
    eprintln!(
        "skipping: the MCP Python client is not installed; run scripts/install-mcp-client.sh"
    );
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client_check.py")
}

async fn client(python: &Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "no report from the client: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(report["ok"], Value::Bool(true), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_over_stdio() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let bin = memory_binary();
    let bin = bin.to_str().unwrap();
    let first = client(&python, &["stdio", bin, data, "record"]).await;
    assert_eq!(first["tools"], 12);
    // A new server process on the same data directory.
    client(&python, &["stdio", bin, data, "again"]).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` with an optional bearer token: (status, body).
async fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    get_as(port, path, token, &format!("127.0.0.1:{port}")).await
}

/// `POST /mcp` of `body` as an MCP client sends it.
async fn post_mcp(port: u16, token: &str, body: &str) -> (u16, String) {
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream"
    );
    let answer = tests::http::exchange(port, &head, body).await.unwrap();
    (answer.status, answer.body)
}

async fn get_as(port: u16, path: &str, token: Option<&str>, host: &str) -> (u16, String) {
    let answer = tests::http::get(port, path, token, host).await.unwrap();
    (answer.status, answer.body)
}

async fn serve(data: &Path, port: u16) -> Child {
    let child = Command::new(memory_binary())
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        // The client names its own namespace in every call.
        .args(["--allow-namespace", "python/client"])
        .env("MEMORY_SERVE_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(child: Child) {
    let status = terminate(child).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_over_streamable_http() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let server = serve(dir.path(), port).await;
    let first = client(&python, &["http", &url, TOKEN, "record"]).await;
    assert_eq!(first["tools"], 12);
    client(&python, &["http", &url, "-", "unauthorized"]).await;
    client(&python, &["http", &url, "wrong-token", "unauthorized"]).await;

    let (status, body) = get(port, "/health", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["healthy"], true);
    assert_eq!(health["status"], "ok");
    // Without the token, a probe learns only whether the server is up.
    let (status, body) = get(port, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "status": "ok" })
    );
    assert_eq!(get(port, "/metrics", None).await.0, 401);
    // Every route checks the Host header (DNS rebinding), the token notwithstanding.
    for path in ["/health", "/metrics", "/mcp", "/"] {
        let (status, body) = get_as(port, path, Some(TOKEN), "evil.example").await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // What JSON-RPC cannot take gets JSON-RPC's own error codes.
    for (body, code, id) in [
        ("{not json", -32700, Value::Null),
        ("[]", -32600, Value::Null),
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"stats","arguments":"x"}}"#,
            -32602,
            json!(9),
        ),
    ] {
        let (status, answer) = post_mcp(port, TOKEN, body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert_eq!(answer["id"], id, "{body}: {answer}");
    }
    let (status, metrics) = get(port, "/metrics", Some(TOKEN)).await;
    assert_eq!(status, 200);
    for line in [
        "memory_tool_calls_total{outcome=\"ok\",tool=\"recommend\"} 2",
        "memory_tool_calls_total{outcome=\"error\",tool=\"log_step\"} 2",
        "memory_tool_call_seconds_bucket{tool=\"complete_episode\"",
        // The same calls under OpenTelemetry's names (docs/TELEMETRY.md).
        "gen_ai_client_operation_duration_seconds_count{error_type=\"\",gen_ai_operation_name=\"search_memory\"}",
        "mcp_server_operation_duration_seconds_count{error_type=\"tool_error\",gen_ai_operation_name=\"execute_tool\",gen_ai_tool_name=\"log_step\",mcp_method_name=\"tools/call\"} 2",
        "memory_breaker_state 0",
        "memory_journal_pending 0",
        "memory_cache_hit_ratio",
        "memory_embedding_backlog",
        // 0, or 1 when the run took over 10 s: the background schedule looks then.
        "memory_consolidation_runs_total ",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    stop(server).await;

    // Restarted on the same data directory: what was recorded is there.
    let server = serve(dir.path(), port).await;
    client(&python, &["http", &url, TOKEN, "again"]).await;
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_without_a_token_is_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(memory_binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("MEMORY_SERVE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("MEMORY_SERVE_TOKEN"), "{err}");
    assert!(!dir.path().join("memory.db").exists(), "nothing was opened");
}

/// `--listen 127.0.0.1:0` lets the system pick a free port, and the address the server prints
/// is the one it serves on (not port 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_zero_prints_the_port_it_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve_on_any_port(dir.path(), &[], &[], &[]).await.unwrap();
    let (child, port) = (served.child, served.port);
    assert_ne!(port, 0, "{:?}", served.banner);
    let (status, body) = get(port, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    stop(child).await;
}
