//! The self-learning memory served to agents over the Model Context Protocol.
//!
//! [`MemoryServer`] wraps a [`memory_core::SelfLearningMemory`] and offers twelve tools:
//! `recommend`, `start_episode`, `log_step`, `complete_episode`, `record_feedback`,
//! `search_episodes`, `show_episode`, `forget_episode`, `correct_learned`, `list_learned`, `stats` and
//! `health`. The `memory mcp`
//! command of `memory-cli` opens the configured storage and serves it on stdio with
//! [`serve_stdio_until`].
//!
//! Errors, by layer:
//! - a line that is not JSON is ignored, and JSON that is not a JSON-RPC message gets an
//!   `Invalid Request` (-32600) error (both by the rmcp transport); an unknown method gets
//!   -32601 and an unknown tool -32602;
//! - everything else a tool call can get wrong (arguments that do not fit the schema, inputs
//!   over the library's limits, unknown or completed episodes, rate limits, storage
//!   trouble) is a tool result with `isError: true` and a structured
//!   `{"error": {"kind", "message", "hint", ...}}`, which the agent reads and can act on.
//!   Validation happens before anything is stored.
//!
//! No tool runs code or shell commands: they only read and write the memory.
//!
//! ```
//! use std::sync::Arc;
//! use memory_core::{InMemoryStorage, MemoryConfig, Namespace, SelfLearningMemory};
//! use memory_mcp::{McpConfig, MemoryServer};
//!
//! let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
//! let server = MemoryServer::new(Arc::new(memory), Namespace::new("acme/api")?, McpConfig::default())?;
//! assert_eq!(server.tools().len(), 12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod body_deadline;
mod catalog;
mod error;
mod guarded_listener;
mod http;
mod jsonrpc_errors;
mod metrics;
mod params;
mod server;
mod session_cap;
mod tools;
mod web;

pub use error::{Error, Result};
pub use http::{HttpConfig, check_listen, serve_http, serve_http_on};
pub use metrics::{Gauges, Metrics};
pub use server::{McpConfig, MemoryServer, NamespaceAccess};

use rmcp::ServiceExt;
use rmcp::service::QuitReason;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

/// How long a stopping server waits for the tool calls in flight.
pub const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves one client on the given byte streams until it disconnects or `stop` resolves.
///
/// Either way the server stops taking calls and lets those in flight finish and answer (at
/// most [`DRAIN_GRACE`]) before it returns, so the caller can then flush and close the memory
/// without cutting a call short.
pub async fn serve_io_until<R, W>(
    server: MemoryServer,
    read: R,
    write: W,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()>
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let running = server
        .for_client()
        .serve((read, write))
        .await
        .map_err(|e| Error::Initialize(e.to_string()))?;
    let token = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting, stop);
    let ended = tokio::select! {
        r = &mut waiting => r,
        () = &mut stop => {
            server.stop_taking_calls().await;
            token.cancel();
            waiting.await
        }
    };
    // The client may have gone while calls were still running: let them finish.
    server.finish_calls().await;
    match ended {
        Ok(QuitReason::JoinError(e)) | Err(e) => Err(Error::Session(e.to_string())),
        Ok(reason) => {
            info!(?reason, "mcp session ended");
            Ok(())
        }
    }
}

/// Serves one client on stdin/stdout until it closes stdin or `stop` resolves (`memory mcp`
/// passes SIGTERM, SIGINT and SIGHUP). Logs must go to stderr: stdout carries the protocol.
pub async fn serve_stdio_until(
    server: MemoryServer,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio();
    serve_io_until(server, stdin, stdout, stop).await
}
