//! `serve-soak`: `memory serve` under hostile clients while honest ones work.
//!
//! Starts `memory serve` (with a token) on a fresh data directory, then:
//! 1. **unloaded**: `--honest` clients each record `--episodes` episodes over MCP (start, three
//!    steps, complete, recommend: six tool calls an episode, each on a connection of its own,
//!    from 127.0.0.1), and the latency of every call is kept;
//! 2. **loaded**: the same work while `--slow` connections from 127.0.0.2 send half a request
//!    header and nothing more (each reconnects 5 s after the server closes it) and a flood of
//!    `--sessions` initialize-only MCP sessions comes from 127.0.0.3, 16 at a time.
//!
//! It reports each phase's p50, p95 and largest call latency, the ratio of the loaded p95 to
//! the unloaded one (both measured in this run), the server's peak resident memory in each
//! phase (`/proc/<pid>/status`), what the hostile clients got (connections held and refused,
//! sessions opened), and whether every episode the honest clients were told was stored is in
//! the namespace afterwards (`memory stats`, a second process). Linux only (the memory figure).
//!
//! ```text
//! cargo build --release -p memory-cli && cargo run --release -p memory-benches --bin serve-soak
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const TOKEN: &str = "soak-token-5d1e";
const HONEST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SLOW: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const FLOOD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[derive(Debug, Parser)]
#[command(
    about = "memory serve under slow connections and a session flood while honest clients work"
)]
struct Args {
    /// The `memory` binary to serve with.
    #[arg(long, default_value = "target/release/memory")]
    memory: PathBuf,
    /// Slow connections (half a header, then silence) held open by one client.
    #[arg(long, default_value_t = 4000)]
    slow: usize,
    /// Initialize-only MCP sessions opened by one client.
    #[arg(long, default_value_t = 20_000)]
    sessions: usize,
    /// Honest clients working at once.
    #[arg(long, default_value_t = 8)]
    honest: usize,
    /// Episodes each honest client records per phase.
    #[arg(long, default_value_t = 25)]
    episodes: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// One HTTP exchange on a connection of its own from `from`; the status, the headers
/// (lowercased) and the body.
async fn exchange(
    from: Ipv4Addr,
    port: u16,
    head: &str,
    body: &str,
) -> Result<(u16, String, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let mut s = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?;
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, headers.to_lowercase(), body.to_owned()))
}

/// A JSON-RPC POST to `/mcp`, in `session` when given.
async fn mcp_post(
    from: Ipv4Addr,
    port: u16,
    session: Option<&str>,
    body: &Value,
) -> Result<(u16, String, String)> {
    let session = session.map_or(String::new(), |s| format!("\r\nMcp-Session-Id: {s}"));
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Mcp-Protocol-Version: 2025-06-18{session}"
    );
    exchange(from, port, &head, &body.to_string()).await
}

/// The JSON-RPC message in an answer's body (plain JSON, or the data of an event stream).
fn message(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(body.trim()) {
        return Some(v);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
}

/// Opens an MCP session from `from`; its id.
async fn initialize(from: Ipv4Addr, port: u16) -> Result<String> {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "serve-soak", "version": "1"}}});
    let (status, headers, body) = mcp_post(from, port, None, &init).await?;
    if status != 200 {
        bail!("initialize: {status} {body}");
    }
    let id = headers
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id:"))
        .map(|v| v.trim().to_owned())
        .context("no session id")?;
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    mcp_post(from, port, Some(&id), &done).await?;
    Ok(id)
}

/// One honest client: a session, then `episodes` episodes; the latency of every call, and
/// the episodes the server said it stored.
async fn honest(
    port: u16,
    client: usize,
    phase: &str,
    episodes: usize,
) -> Result<(Vec<(bool, Duration)>, u64)> {
    let mut session = initialize(HONEST, port).await?;
    let mut took = Vec::new();
    let mut stored = 0;
    let context = json!({"domain": "billing", "language": "rust"});
    for e in 0..episodes {
        let task = format!("{phase} client {client} fixes invoice export {e}");
        let mut calls = vec![(
            "start_episode",
            json!({"task": task, "task_type": "debugging", "context": context}),
        )];
        calls.extend((0..3).map(|k| ("log_step", json!({"tool": "cargo", "action": format!("cargo test {k}"), "status": if k == 0 { "error" } else { "success" }, "output": "test output"}))));
        calls.push((
            "complete_episode",
            json!({"outcome": "success", "verdict": "fixed"}),
        ));
        calls.push(("recommend", json!({"task": task, "context": context})));
        let mut episode_id = None;
        for (n, (tool, mut args)) in calls.into_iter().enumerate() {
            if let (Some(id), Some(obj)) = (&episode_id, args.as_object_mut())
                && tool != "recommend"
            {
                obj.insert("episode_id".into(), Value::String(String::clone(id)));
            }
            let call = json!({"jsonrpc": "2.0", "id": n + 2, "method": "tools/call",
                "params": {"name": tool, "arguments": args}});
            let started = Instant::now();
            let (mut status, mut _h, mut body) =
                mcp_post(HONEST, port, Some(&session), &call).await?;
            if status == 404 {
                // The session was closed (a cap evicted it): a real client starts another.
                session = initialize(HONEST, port).await?;
                (status, _h, body) = mcp_post(HONEST, port, Some(&session), &call).await?;
            }
            took.push((tool == "recommend", started.elapsed()));
            let msg = message(&body).with_context(|| format!("{tool}: {status} {body}"))?;
            let result = &msg["result"];
            if status != 200 || result.is_null() || result["isError"] == json!(true) {
                bail!("{tool}: {status} {body}");
            }
            if tool == "start_episode" {
                episode_id = result["structuredContent"]["episode_id"]
                    .as_str()
                    .map(str::to_owned);
            }
            if tool == "complete_episode" {
                stored += 1;
            }
        }
    }
    Ok((took, stored))
}

/// Holds one slow connection after another until `stop`: half a header, then silence.
async fn slow_connection(
    port: u16,
    stop: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let connected = async {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((SLOW, 0)))?;
            let mut s: TcpStream = socket
                .connect(SocketAddr::from(([127, 0, 0, 1], port)))
                .await?;
            s.write_all(format!("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").as_bytes())
                .await?;
            Ok::<TcpStream, std::io::Error>(s)
        }
        .await;
        if let Ok(mut s) = connected {
            let opened = Instant::now();
            let mut buf = [0u8; 512];
            // Until the server closes it (or answers: a refusal).
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n > 0 || opened.elapsed() < Duration::from_secs(1) {
                refused.fetch_add(1, Ordering::Relaxed);
            } else {
                held.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Opens `total` initialize-only sessions, 16 at a time; how many the server opened.
async fn session_flood(port: u16, total: usize) -> u64 {
    let opened = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (opened, next) = (Arc::clone(&opened), Arc::clone(&next));
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total as u64 {
                    if initialize(FLOOD, port).await.is_ok() {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    opened.load(Ordering::Relaxed)
}

/// The server's resident memory, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Samples the server's memory every 200 ms until `stop`; the peak.
async fn peak_rss(pid: u32, stop: Arc<AtomicBool>) -> f64 {
    let mut peak: f64 = 0.0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(m) = rss_mib(pid) {
            peak = peak.max(m);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The latencies of a phase's calls, sorted: all, the writes (start, steps, complete), and
/// `recommend` (a model call and a search).
#[derive(Debug, Default)]
struct Latencies {
    all: Vec<Duration>,
    writes: Vec<Duration>,
    recommend: Vec<Duration>,
}

impl Latencies {
    fn of(&self, kind: &str) -> &[Duration] {
        match kind {
            "writes" => &self.writes,
            "recommend" => &self.recommend,
            _ => &self.all,
        }
    }

    fn report(&self, peak_rss: f64) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let stats = |v: &[Duration]| {
            json!({"calls": v.len(), "p50_ms": ms(percentile(v, 0.5)), "p95_ms": ms(percentile(v, 0.95)),
                "max_ms": v.last().map_or(0.0, |d| ms(*d))})
        };
        json!({"all": stats(&self.all), "writes": stats(&self.writes),
            "recommend": stats(&self.recommend), "peak_rss_mib": peak_rss})
    }
}

/// Runs the honest clients; every call's latency and the episodes stored.
async fn honest_phase(port: u16, args: &Args, phase: &'static str) -> Result<(Latencies, u64)> {
    let clients: Vec<_> = (0..args.honest)
        .map(|c| {
            let episodes = args.episodes;
            tokio::spawn(async move { honest(port, c, phase, episodes).await })
        })
        .collect();
    let mut all = Latencies::default();
    let mut stored = 0;
    for c in clients {
        let (took, n) = c.await??;
        for (recommend, d) in took {
            all.all.push(d);
            if recommend {
                all.recommend.push(d);
            } else {
                all.writes.push(d);
            }
        }
        stored += n;
    }
    for v in [&mut all.all, &mut all.writes, &mut all.recommend] {
        v.sort();
    }
    Ok((all, stored))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_healthy(port: u16) -> Result<()> {
    let started = Instant::now();
    loop {
        let head = format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}");
        if let Ok((200, _, _)) = exchange(HONEST, port, &head, "").await {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("memory serve did not answer /health within a minute");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stored_episodes(memory: &Path, dir: &Path) -> Result<u64> {
    let out = std::process::Command::new(memory)
        .arg("--data-dir")
        .arg(dir)
        .args(["--json", "stats"])
        .output()?;
    let stats: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    stats["counts"]["episodes"]
        .as_u64()
        .context("no episode count")
}

/// What the loaded phase measured.
struct Loaded {
    latencies: Latencies,
    stored: u64,
    seconds: f64,
    peak_rss: f64,
    held: u64,
    refused: u64,
    sessions_opened: u64,
}

/// The honest clients' work beside the slow connections and the session flood.
async fn loaded_phase(port: u16, pid: u32, args: &Args) -> Result<Loaded> {
    let stop = Arc::new(AtomicBool::new(false));
    let (held, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let slow: Vec<_> = (0..args.slow)
        .map(|_| {
            tokio::spawn(slow_connection(
                port,
                Arc::clone(&stop),
                Arc::clone(&held),
                Arc::clone(&refused),
            ))
        })
        .collect();
    let flood = tokio::spawn(session_flood(port, args.sessions));
    let stop_rss = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(peak_rss(pid, Arc::clone(&stop_rss)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let (latencies, stored) = honest_phase(port, args, "loaded").await?;
    let seconds = started.elapsed().as_secs_f64();
    let sessions_opened = flood.await?;
    stop.store(true, Ordering::Relaxed);
    stop_rss.store(true, Ordering::Relaxed);
    let peak_rss = sampler.await?;
    for s in slow {
        s.abort();
    }
    Ok(Loaded {
        latencies,
        stored,
        seconds,
        peak_rss,
        held: held.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        sessions_opened,
    })
}

/// Prints the report as a table, or as JSON.
fn print_report(report: &Value, json: bool) {
    if json {
        println!("{report:#}");
        return;
    }
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    println!("phase     calls       count  p50 ms  p95 ms  max ms  peak RSS MiB");
    for phase in ["unloaded", "loaded"] {
        for kind in ["all", "writes", "recommend"] {
            let v = &report[phase][kind];
            println!(
                "{phase:<9} {kind:<10} {:>6} {:>7.2} {:>7.2} {:>7.1} {:>13.0}",
                v["calls"].as_u64().unwrap_or(0),
                f(&v["p50_ms"]),
                f(&v["p95_ms"]),
                f(&v["max_ms"]),
                f(&report[phase]["peak_rss_mib"])
            );
        }
    }
    let r = &report["p95_ratio"];
    println!(
        "p95 loaded / unloaded: {:.2}x all, {:.2}x writes, {:.2}x recommend (idle RSS {:.0} MiB; loaded phase {:.1} s)",
        f(&r["all"]),
        f(&r["writes"]),
        f(&r["recommend"]),
        f(&report["idle_rss_mib"]),
        f(&report["loaded"]["seconds"])
    );
    let slow = &report["slow_connections"];
    println!(
        "slow connections: {} clients, {} held until the server closed them, {} refused at once",
        slow["clients"], slow["held_until_closed"], slow["refused"]
    );
    let sessions = &report["sessions"];
    println!(
        "sessions: {} of {} opened",
        sessions["opened"], sessions["asked"]
    );
    let episodes = &report["episodes"];
    println!(
        "episodes: {} acknowledged, {} stored",
        episodes["acknowledged"], episodes["stored"]
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut serve = tokio::process::Command::new(&args.memory)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--rate-per-second",
            "0",
        ])
        .env("MEMORY_SERVE_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.memory.display()))?;
    let pid = serve.id().context("no pid")?;
    wait_healthy(port).await?;
    let idle_rss = rss_mib(pid).unwrap_or(0.0);

    let stop_rss = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(peak_rss(pid, Arc::clone(&stop_rss)));
    let (unloaded, stored_a) = honest_phase(port, &args, "unloaded").await?;
    stop_rss.store(true, Ordering::Relaxed);
    let unloaded_rss = sampler.await?;

    let loaded = loaded_phase(port, pid, &args).await?;

    let stored = stored_episodes(&args.memory, dir.path())?;
    let _ = serve.start_kill();
    let _ = serve.wait().await;

    let ratio = |kind: &str| {
        let p95 = |v: &Latencies| percentile(v.of(kind), 0.95).as_secs_f64();
        p95(&loaded.latencies) / p95(&unloaded).max(1e-9)
    };
    let acknowledged = stored_a + loaded.stored;
    let (held, refused, sessions_opened) = (loaded.held, loaded.refused, loaded.sessions_opened);
    let mut loaded_report = loaded.latencies.report(loaded.peak_rss);
    loaded_report["seconds"] = json!(loaded.seconds);
    let report = json!({
        "honest_clients": args.honest,
        "unloaded": unloaded.report(unloaded_rss),
        "loaded": loaded_report,
        "p95_ratio": {"all": ratio("all"), "writes": ratio("writes"), "recommend": ratio("recommend")},
        "idle_rss_mib": idle_rss,
        "slow_connections": {"clients": args.slow, "held_until_closed": held, "refused": refused},
        "sessions": {"asked": args.sessions, "opened": sessions_opened},
        "episodes": {"acknowledged": acknowledged, "stored": stored},
    });
    print_report(&report, args.json);
    if stored < acknowledged {
        bail!(
            "{} acknowledged episodes are missing",
            acknowledged - stored
        );
    }
    Ok(())
}
