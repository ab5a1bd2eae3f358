//! `memory mcp`: the memory as an MCP server on stdin/stdout.

use std::sync::Arc;

use anyhow::{Context, Result};
use memory_core::{Namespace, RateLimitConfig};
use memory_mcp::{McpConfig, MemoryServer, NamespaceAccess};
use tracing::info;

use crate::backend;
use crate::cli::McpArgs;
use crate::settings::Settings;
use crate::signals;

/// The per-client rate limit the flags ask for.
pub fn rate_limit(a: &McpArgs) -> RateLimitConfig {
    if a.rate_per_second > 0.0 {
        RateLimitConfig {
            enabled: true,
            burst: a.rate_burst.max(1),
            per_second: a.rate_per_second,
        }
    } else {
        RateLimitConfig::disabled()
    }
}

/// The server settings the flags ask for: the per-client rate limit and the namespaces a
/// call may name (`--allow-namespace`, repeatable, or `*`; by default only `--namespace`).
///
/// # Errors
///
/// An `--allow-namespace` value that is not a valid namespace.
pub fn server_config(a: &McpArgs) -> Result<McpConfig> {
    let namespaces = if a.allow_namespaces.iter().any(|n| n.trim() == "*") {
        NamespaceAccess::Any
    } else if a.allow_namespaces.is_empty() {
        NamespaceAccess::DefaultOnly
    } else {
        let listed = a
            .allow_namespaces
            .iter()
            .map(|n| Namespace::new(n).with_context(|| "--allow-namespace"))
            .collect::<Result<Vec<_>>>()?;
        NamespaceAccess::Listed(listed)
    };
    Ok(McpConfig::default()
        .with_rate_limit(rate_limit(a))
        .with_namespaces(namespaces))
}

/// Opens the same stack as every other command (with the embedding model: the server is
/// long-lived), serves one client until it closes stdin or the process gets SIGTERM, SIGINT
/// or SIGHUP, lets the calls in flight finish, then flushes and closes the stack.
pub async fn run(a: &McpArgs, s: &Settings) -> Result<()> {
    let config = server_config(a)?;
    let stack = Arc::new(backend::open(s, true).await?);
    let server = MemoryServer::new(stack.memory_arc(), s.namespace.clone(), config)?
        .with_stack(Arc::clone(&stack));
    info!(namespace = %s.namespace, data_dir = %s.data_dir.display(), mode = ?s.mode, "mcp server on stdio");
    let stop = async {
        let (name, _) = signals::terminated().await;
        info!(signal = name, "stopping the mcp server");
    };
    let served = memory_mcp::serve_stdio_until(server, stop).await;
    // Buffered steps are written and the journal closed however the session ended.
    let closed = stack.shutdown().await.map_err(backend::stack_error);
    served?;
    closed?;
    Ok(())
}
