//! The web view of `memory serve`, in a real headless Chromium (npm `@sparticuz/chromium` driven
//! by `puppeteer-core`, installed by `scripts/install-browser.sh`): `tests/web/drive.mjs` searches,
//! opens an episode, retracts a pattern and sees it gone from the advice, pins another and sees it
//! advised first, forgets an episode and
//! sees it gone from search, advice and the counts, and draws the learning curve, failing on
//! any console error. Its screenshots are kept in `target/web-view/`.
//!
//! Also, over plain HTTP: the token, the `Host` check and the cross-site guards of the actions.
//!
//! Skips (with a note) only where Node.js is missing; under CI it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tests::procs::{CallEnd, McpProcess, PidSlot, serve_on_any_port, terminate};
use tokio::process::{Child, Command};

const TOKEN: &str = "web-view-token-7c2d";
const NS: &str = "web/view";
/// A second namespace the server may serve.
const OTHER_NS: &str = "web/other";
/// A word only the episode to forget holds.
const MARKER: &str = "zebraquartz";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Where the browser packages are, or `None` (after a note) where Node.js is missing outside CI.
fn browser() -> Option<PathBuf> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        assert!(
            !in_ci(),
            "Node.js is missing: CI may not skip the browser test"
        );
        eprintln!("skipping: Node.js is not installed, so the web view's browser test cannot run");
        return None;
    }
    let dir = std::env::var_os("MEMORY_BROWSER_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| root().join(".tools/browser"), PathBuf::from);
    assert!(
        dir.join("node_modules/puppeteer-core").is_dir(),
        "the browser is not installed in {}: run scripts/install-browser.sh (scripts/test.sh does)",
        dir.display()
    );
    Some(dir)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn call(server: &mut McpProcess, tool: &str, args: Value) -> Value {
    match server.call(tool, args).await {
        CallEnd::Ok(v) => v,
        other => panic!("{tool}: {other:?}"),
    }
}

/// Records six episodes of the same fix (so that patterns are learned) and one more that holds
/// the marker; returns the marker episode's id.
async fn seed(dir: &Path) -> String {
    let slot = PidSlot::default();
    let mut server = McpProcess::start(dir, NS, &[], &[], &slot).await.unwrap();
    let context = json!({ "domain": "billing", "language": "rust" });
    let mut marked = String::new();
    let tasks = [
        "fix the invoice rounding in the export",
        "fix the invoice totals in the export",
        "fix the invoice currency in the export",
        "fix the invoice dates in the export",
        "fix the invoice header in the export",
        "fix the invoice zebraquartz export",
    ];
    for (i, task) in tasks.iter().enumerate() {
        let args = json!({ "task": task, "task_type": "debugging", "context": context });
        let started = call(&mut server, "start_episode", args).await;
        let id = started["episode_id"].as_str().unwrap().to_owned();
        for (tool, status, output) in [
            ("cargo_test", "error", "FAILED invoice::export"),
            ("edit_file", "success", "edited src/export.rs"),
            ("cargo_test", "success", "test result: ok"),
        ] {
            let output = if task.contains(MARKER) {
                format!("{output} {MARKER}")
            } else {
                output.to_owned()
            };
            let step = json!({ "episode_id": id, "tool": tool, "action": format!("{tool} run {i}"),
                "status": status, "output": output });
            call(&mut server, "log_step", step).await;
        }
        let done =
            json!({ "episode_id": id, "outcome": "success", "verdict": "the export is right" });
        call(&mut server, "complete_episode", done).await;
        if task.contains(MARKER) {
            marked = id;
        }
    }
    let patterns = call(&mut server, "list_learned", json!({ "kind": "patterns" })).await;
    assert!(
        !patterns["items"].as_array().unwrap().is_empty(),
        "nothing was learned from the seed: {patterns}"
    );
    assert!(server.close().await.unwrap().success());
    marked
}

/// Starts `memory serve` with the token on a port the system picks; returns it with the port.
async fn serve(dir: &Path) -> (Child, u16) {
    let served = serve_on_any_port(
        dir,
        &["--namespace", NS],
        &["--allow-namespace", OTHER_NS],
        &[("MEMORY_SERVE_TOKEN", TOKEN)],
    )
    .await
    .unwrap();
    let web = served.banner.last().unwrap();
    assert!(
        web.contains(&format!("http://127.0.0.1:{}/ ", served.port))
            && web.contains("/?token=<MEMORY_SERVE_TOKEN>"),
        "the banner says where the view is and how to open it with the token: {web}"
    );
    (served.child, served.port)
}

async fn stop(child: Child) {
    let status = terminate(child).await.unwrap();
    assert!(status.success(), "{status:?}");
}

/// One HTTP/1.0 request; the answer's status, headers (lowercased) and body.
async fn request(port: u16, head: &str, body: &str) -> (u16, String, String) {
    let answer = tests::http::exchange(port, head, body).await.unwrap();
    (answer.status, answer.headers, answer.body)
}

/// The token, the `Host` check and the guards of the actions, over plain HTTP.
async fn check_access(port: u16, episode: &str) {
    let host = format!("Host: 127.0.0.1:{port}");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    // No token: refused, page and API alike; a wrong token in the query too.
    let (status, ..) = request(port, &format!("GET / HTTP/1.0\r\n{host}"), "").await;
    assert_eq!(status, 401);
    let (status, ..) = request(port, &format!("GET /api/stats HTTP/1.0\r\n{host}"), "").await;
    assert_eq!(status, 401);
    let (status, ..) = request(port, &format!("GET /?token=nope HTTP/1.0\r\n{host}"), "").await;
    assert_eq!(status, 401);
    // The token in the query opens a session: a cookie, and the token leaves the address.
    let login = format!("GET /?token={TOKEN} HTTP/1.0\r\n{host}");
    let (status, headers, _) = request(port, &login, "").await;
    assert_eq!(status, 303, "{headers}");
    assert!(headers.contains("location: /\r\n"), "{headers}");
    let cookie = headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    assert!(headers.contains("httponly") && headers.contains("samesite=strict"));
    let with_cookie = format!("Cookie: {cookie}");
    let (status, headers, page) = request(
        port,
        &format!("GET / HTTP/1.0\r\n{host}\r\n{with_cookie}"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains("content-security-policy: default-src 'none'"));
    assert!(headers.contains("x-frame-options: deny"));
    let csrf = page
        .split("name=\"memory-csrf\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 64, "{csrf}");
    // Another Host (DNS rebinding) is refused even with the token.
    let (status, ..) = request(
        port,
        &format!("GET /api/stats HTTP/1.0\r\nHost: rebound.example:{port}\r\n{bearer}"),
        "",
    )
    .await;
    assert_eq!(status, 403);
    // An action without the page's CSRF value, or from another origin, changes nothing.
    let forget = json!({ "episode_ids": [episode], "reason": "cross-site" }).to_string();
    let json_body = "Content-Type: application/json";
    for extra in [
        String::new(),
        "x-memory-csrf: guessed".to_owned(),
        format!("x-memory-csrf: {csrf}\r\nOrigin: http://evil.example"),
        format!("x-memory-csrf: {csrf}\r\nSec-Fetch-Site: cross-site"),
    ] {
        let head = format!("POST /api/forget HTTP/1.0\r\n{host}\r\n{with_cookie}\r\n{json_body}");
        let head = if extra.is_empty() {
            head
        } else {
            format!("{head}\r\n{extra}")
        };
        let (status, _, body) = request(port, &head, &forget).await;
        assert_eq!(status, 403, "{extra}: {body}");
    }
    let show = format!("GET /api/episodes/{episode} HTTP/1.0\r\n{host}\r\n{with_cookie}");
    let (status, _, body) = request(port, &show, "").await;
    assert_eq!(status, 200, "the refused actions left the episode: {body}");
    // Pages and filters.
    let page =
        |query: &str| format!("GET /api/episodes?{query} HTTP/1.0\r\n{host}\r\n{with_cookie}");
    let (status, _, body) = request(port, &page("limit=4&offset=4"), "").await;
    assert_eq!(status, 200, "{body}");
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["episodes"].as_array().unwrap().len(), 2, "{second}");
    assert_eq!(second["more"], false);
    let (_, _, body) = request(port, &page("limit=4"), "").await;
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["more"], true, "{first}");
    let (_, _, body) = request(port, &page("status=failure"), "").await;
    let failed: Value = serde_json::from_str(&body).unwrap();
    assert!(
        failed["episodes"].as_array().unwrap().is_empty(),
        "{failed}"
    );
    let (status, _, body) = request(port, &page("limit=100000"), "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("limit_exceeded"), "{body}");
    // The furthest a page may start, and one further.
    let (status, _, body) = request(port, &page("offset=1000000"), "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = request(port, &page("offset=1000001"), "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"offset\""), "{body}");
    let (status, _, body) = request(port, &page("namespace=not%2Fserved"), "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("namespace_not_allowed"), "{body}");
    // A bad argument is the tool's error, with its status.
    let head = format!(
        "POST /api/correct HTTP/1.0\r\n{host}\r\n{with_cookie}\r\n{json_body}\r\nx-memory-csrf: {csrf}"
    );
    let bad = json!({ "kind": "pattern", "id": "no-such", "action": "retract" }).to_string();
    let (status, _, body) = request(port, &head, &bad).await;
    assert!(status == 400 || status == 404, "{status}: {body}");
    assert!(body.contains("\"error\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_in_a_real_browser() {
    let Some(modules) = browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let forget = seed(dir.path()).await;
    let (server, port) = serve(dir.path()).await;
    check_access(port, &forget).await;

    let shots = root().join("target/web-view");
    let out = Command::new("node")
        .arg(root().join("tests/web/drive.mjs"))
        .args([
            &format!("http://127.0.0.1:{port}"),
            TOKEN,
            &shots.display().to_string(),
            MARKER,
            &forget,
            "fix the invoice zebraquartz export",
            "billing",
            "rust",
        ])
        .env("MEMORY_BROWSER_DIR", &modules)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the browser run ends within 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("no report from the browser run:\n{stdout}\n{stderr}"));
    assert_eq!(report["ok"], true, "{report:#}\n{stderr}");
    assert_eq!(report["screenshots"].as_array().unwrap().len(), 11);
    assert_eq!(report["steps"]["namespaces"], json!([NS, OTHER_NS]));
    eprintln!("web view: {}", report["steps"]);
    eprintln!("screenshots in {}", shots.display());
    stop(server).await;
}
