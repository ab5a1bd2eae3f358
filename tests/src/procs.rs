//! Real processes for the multi-process tests: the `memory` binary run as CLI commands and as
//! an MCP server spoken to over stdio, and killing any of them with SIGKILL.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The `memory` binary next to the running test (`target/<profile>/memory`).
///
/// # Panics
///
/// When it has not been built (run the workspace's tests, which build it).
pub fn memory_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/memory
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(format!("memory{}", std::env::consts::EXE_SUFFIX)))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: build the CLI first (`cargo build -p memory-cli`, or run the whole workspace)",
        bin.display()
    );
    bin
}

/// The process a participant is running now, for the killer.
pub type PidSlot = Arc<Mutex<Option<u32>>>;

fn set_pid(slot: &PidSlot, pid: Option<u32>) {
    if let Ok(mut g) = slot.lock() {
        *g = pid;
    }
}

/// Sends SIGKILL to the process in `slot`, if any; true if one was signalled.
pub fn kill_slot(slot: &PidSlot) -> bool {
    let pid = slot.lock().ok().and_then(|g| *g);
    match pid {
        Some(pid) => std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success()),
        None => false,
    }
}

/// How a CLI command ended.
#[derive(Debug)]
pub struct CliRun {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl CliRun {
    /// Standard output as JSON (`--json` commands).
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("not JSON: {:?} (stderr {:?})", self.stdout, self.stderr))
    }
}

/// Runs `memory --data-dir <dir> <args>` and waits for it; the running process's id is kept
/// in `slot` so another task can kill it.
pub async fn run_cli(
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    slot: &PidSlot,
) -> anyhow::Result<CliRun> {
    let started = Instant::now();
    let mut cmd = Command::new(memory_binary());
    cmd.arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().context("spawning memory")?;
    set_pid(slot, child.id());
    let out = child.wait_with_output().await;
    set_pid(slot, None);
    let out = out?;
    Ok(CliRun {
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// How a tool call ended.
#[derive(Debug)]
pub enum CallEnd {
    /// The tool's structured result.
    Ok(Value),
    /// The tool answered with `isError: true`: its structured error.
    ToolError(Value),
    /// The server went away (killed, crashed) before answering.
    Gone(String),
}

/// `memory mcp` as a child process, spoken to over stdio (newline-delimited JSON-RPC).
pub struct McpProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl McpProcess {
    /// Starts `memory --data-dir <dir> --namespace <ns> mcp <extra>` and initializes the
    /// session.
    pub async fn start(
        dir: &Path,
        ns: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
        slot: &PidSlot,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(memory_binary());
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["--namespace", ns, "mcp"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning memory mcp")?;
        set_pid(slot, child.id());
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut p = McpProcess {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            next_id: 1,
        };
        let init = p
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "memory-tests", "version": "1" }
                }),
                Duration::from_secs(60),
            )
            .await?;
        if init.get("result").is_none() {
            bail!("initialize failed: {init}");
        }
        p.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(p)
    }

    async fn send(&mut self, msg: &Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// Sends a request and waits (at most `timeout`) for the response with its id.
    pub async fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await?;
        let read = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await?
                    .ok_or_else(|| anyhow!("the server closed its stdout"))?;
                let msg: Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if msg.get("id") == Some(&json!(id)) {
                    return Ok::<Value, anyhow::Error>(msg);
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| anyhow!("no answer to {method} within {timeout:?}"))?
    }

    /// Calls a tool.
    pub async fn call(&mut self, tool: &str, args: Value) -> CallEnd {
        let sent = self
            .request(
                "tools/call",
                json!({ "name": tool, "arguments": args }),
                Duration::from_secs(60),
            )
            .await;
        match sent {
            Err(e) => CallEnd::Gone(e.to_string()),
            Ok(msg) => {
                let result = &msg["result"];
                if result.is_null() {
                    return CallEnd::ToolError(msg["error"].clone());
                }
                if result["isError"] == json!(true) {
                    CallEnd::ToolError(result["structuredContent"].clone())
                } else {
                    CallEnd::Ok(result["structuredContent"].clone())
                }
            }
        }
    }

    /// Closes stdin (the client goes away) and waits for the server to exit.
    pub async fn close(mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.stdin);
        Ok(self.child.wait().await?)
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the server to exit.
    pub async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.child.wait().await?)
    }

    /// After a call found the server gone: whether SIGKILL ended it (waits up to 10 s for it
    /// to exit; `false` if it did not, or exited otherwise).
    pub async fn was_killed(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await,
            Ok(Ok(status)) if status.signal() == Some(9)
        )
    }
}

/// Stops `child` as a service manager would (SIGTERM) and waits for it to exit, at most 30 s;
/// its exit status.
pub async fn terminate(mut child: Child) -> anyhow::Result<std::process::ExitStatus> {
    let pid = child
        .id()
        .context("the process has exited already")?
        .to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    if !sent.success() {
        bail!("kill -TERM {pid}: {sent:?}");
    }
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .map_err(|_| anyhow!("{pid} still runs 30 s after SIGTERM"))?
        .context("its exit status")
}

/// A `memory serve` started on a port the system picks.
pub struct Served {
    /// The server.
    pub child: Child,
    /// The port it printed.
    pub port: u16,
    /// The lines it printed up to its last address line (the web view's).
    pub banner: Vec<String>,
}

/// Starts `memory --data-dir dir <global> serve --listen 127.0.0.1:0 <extra>` with `envs`, and
/// reads what it prints until the web view's address: the port is the one in the MCP line.
/// Its later output is echoed to this process's stderr, so the server never blocks on a pipe.
pub async fn serve_on_any_port(
    dir: &Path,
    global: &[&str],
    extra: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<Served> {
    let mut cmd = Command::new(memory_binary());
    cmd.arg("--data-dir")
        .arg(dir)
        .args(global)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("spawning memory serve")?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut banner = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            let last = line.starts_with("memory serve: web view at http://");
            banner.push(line);
            if last {
                return Ok(());
            }
        }
        bail!("the server stopped before printing its addresses: {banner:?}")
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .map_err(|_| anyhow!("no address printed within 120 s"))??;
    let port = banner
        .iter()
        .find_map(|l| l.strip_prefix("memory serve: MCP at http://127.0.0.1:"))
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {banner:?}"))?;
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
        }
    });
    Ok(Served {
        child,
        port,
        banner,
    })
}
