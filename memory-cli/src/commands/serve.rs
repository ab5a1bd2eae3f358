//! `memory serve`: the memory as an MCP server on streamable HTTP, for many agents at once.

use std::sync::Arc;

use anyhow::{Context, Result};
use memory_mcp::{HttpConfig, MemoryServer, Metrics};
use tracing::info;

use crate::backend;
use crate::cli::ServeArgs;
use crate::commands::mcp::server_config;
use crate::settings::Settings;
use crate::signals;

/// The environment variable holding the bearer token.
pub const TOKEN_ENV: &str = "MEMORY_SERVE_TOKEN";

/// Opens the stack once (with the embedding model) and serves every agent from it until
/// SIGTERM, SIGINT or SIGHUP; then lets the calls in flight finish, flushes and closes.
pub async fn run(a: &ServeArgs, s: &Settings) -> Result<()> {
    let config = HttpConfig {
        token: std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()),
        allowed_hosts: a.allow_hosts.clone(),
        health_details: a.health_details,
        max_connections: a.max_connections,
        max_connections_per_client: a.max_connections_per_client,
        header_timeout: std::time::Duration::from_secs(a.header_timeout.max(1)),
        body_timeout: std::time::Duration::from_secs(a.body_timeout.max(1)),
        max_sessions: a.max_sessions,
        max_sessions_per_client: a.max_sessions_per_client,
    };
    // Refused before anything is opened.
    memory_mcp::check_listen(a.listen, &config)?;
    let server_config = server_config(&a.rate)?;
    let stack = Arc::new(backend::open(s, true).await?);
    let server = MemoryServer::new(stack.memory_arc(), s.namespace.clone(), server_config)?
        .with_stack(Arc::clone(&stack))
        .with_metrics(Arc::new(Metrics::new()?));
    // Bound here, so that the address printed is the one served (the port chosen for port 0).
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let local = listener.local_addr()?;
    info!(namespace = %s.namespace, data_dir = %s.data_dir.display(), listen = %local, "memory serve");
    errln!(
        "memory serve: MCP at http://{local}/mcp, health at /health, metrics at /metrics{}",
        if config.token.is_some() {
            " (bearer token required)"
        } else {
            ""
        }
    );
    errln!(
        "memory serve: web view at http://{local}/{}",
        if config.token.is_some() {
            format!(" (open http://{local}/?token=<{TOKEN_ENV}> once in a browser)")
        } else {
            String::new()
        }
    );
    let stop = async {
        let (name, _) = signals::terminated().await;
        info!(signal = name, "stopping the server");
    };
    let served = memory_mcp::serve_http_on(server, listener, config, stop).await;
    let closed = stack.shutdown().await.map_err(backend::stack_error);
    served?;
    closed?;
    Ok(())
}
