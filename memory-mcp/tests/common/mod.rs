//! A minimal MCP client for the tests: spawns `memory mcp` as a child process and speaks
//! JSON-RPC over its stdin/stdout, one message per line.
#![allow(
    dead_code,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long any single answer may take (debug build, 2 busy cores).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The `memory` binary: `$MEMORY_BIN`; else the one beside this test executable, which a
/// workspace run (`cargo nextest run --workspace`, the README's test command) builds with the
/// same features; else built (or found up to date) by cargo. The server lives in the
/// `memory-cli` package, which cargo does not build for this package's tests alone: after
/// changing the CLI, run the workspace or set `MEMORY_BIN`.
pub fn memory_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MEMORY_BIN") {
            return PathBuf::from(p);
        }
        // target/<profile>/deps/<test> -> target/<profile>/memory
        let sibling = std::env::current_exe().ok().and_then(|exe| {
            let dir = exe.parent()?.parent()?;
            let bin = dir.join(format!("memory{}", std::env::consts::EXE_SUFFIX));
            bin.is_file().then_some(bin)
        });
        if let Some(bin) = sibling {
            return bin;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "-p",
                "memory-cli",
                "--bin",
                "memory",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build for the memory binary");
        assert!(out.status.success(), "cargo build -p memory-cli failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "memory")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no executable for the memory binary")
    })
}

/// A running server and the client end of its pipes.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
}

impl Server {
    /// `memory --data-dir DIR --namespace NS mcp EXTRA...`, with no embedding model (the tests
    /// run on the lexical path whatever is installed) and no inherited memory settings.
    pub fn spawn(data_dir: &Path, namespace: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new(memory_bin());
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--namespace", namespace, "mcp"])
            .args(extra)
            .env("MEMORY_MODEL_DIR", data_dir.join("no-model-here"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for v in [
            "MEMORY_DATA_DIR",
            "MEMORY_NAMESPACE",
            "MEMORY_MODE",
            "TURSO_DATABASE_URL",
            "TURSO_AUTH_TOKEN",
        ] {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().expect("spawn memory mcp");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            stdin,
            lines,
            next_id: 1,
        }
    }

    /// Spawns and completes the initialize handshake; returns the server and its answer.
    pub fn start(data_dir: &Path, namespace: &str, extra: &[&str]) -> (Server, Value) {
        let mut s = Server::spawn(data_dir, namespace, extra);
        let init = s.initialize();
        (s, init)
    }

    /// Writes one raw line.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).expect("write to server");
        stdin.write_all(b"\n").expect("write to server");
        stdin.flush().expect("flush to server");
    }

    /// Writes one message.
    pub fn send(&mut self, msg: &Value) {
        self.send_line(&msg.to_string());
    }

    /// The next message from the server, or `None` after `wait`.
    pub fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        match self.lines.recv_timeout(wait) {
            Ok(line) => match serde_json::from_str(&line) {
                Ok(v) => Some(v),
                Err(e) => panic!("server wrote a line that is not JSON ({e}): {line}"),
            },
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "server closed stdout (exit status {:?})",
                    self.child.try_wait()
                )
            }
        }
    }

    /// Waits for the response with this id, skipping notifications and other responses.
    pub fn response(&mut self, id: &Value) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.recv_within(left) else {
                panic!("no response to request {id} within {TIMEOUT:?}");
            };
            if &msg["id"] == id && (msg.get("result").is_some() || msg.get("error").is_some()) {
                return msg;
            }
        }
    }

    /// Sends a request and returns the whole response message.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        let mut msg = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            msg["params"] = params;
        }
        self.send(&msg);
        self.response(&id)
    }

    /// The initialize handshake (request + initialized notification).
    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": { "name": "memory-mcp-tests", "version": "0" }
            }),
        );
        assert!(r.get("result").is_some(), "initialize failed: {r}");
        self.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        r["result"].clone()
    }

    /// `tools/call`; returns the whole response message.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "callers build the arguments inline"
    )]
    pub fn call_raw(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({ "name": tool, "arguments": args }))
    }

    /// A tool call that must succeed; returns its structured content.
    pub fn call_ok(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call_raw(tool, args);
        let result = &r["result"];
        assert_eq!(result["isError"], json!(false), "{tool} failed: {r}");
        result["structuredContent"].clone()
    }

    /// A tool call that must fail as a tool error; returns `structuredContent.error`.
    pub fn call_err(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call_raw(tool, args);
        let result = &r["result"];
        assert_eq!(result["isError"], json!(true), "{tool} should fail: {r}");
        let err = result["structuredContent"]["error"].clone();
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without message: {r}"
        );
        err
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes stdin (end of session) and waits for a clean exit.
    pub fn close(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after stdin closed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
