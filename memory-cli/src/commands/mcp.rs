//! `memory mcp`: the memory as an MCP server on stdin/stdout.

use std::sync::Arc;

use anyhow::Result;
use memory_core::RateLimitConfig;
use memory_mcp::{McpConfig, MemoryServer};
use tracing::info;

use crate::backend;
use crate::cli::McpArgs;
use crate::settings::Settings;
use crate::signals;

/// Opens the same stack as every other command (with the embedding model: the server is
/// long-lived), serves one client until it closes stdin or the process gets SIGTERM, SIGINT
/// or SIGHUP, lets the calls in flight finish, then flushes and closes the stack.
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

pub async fn run(a: &McpArgs, s: &Settings) -> Result<()> {
    let rate_limit = rate_limit(a);
    let stack = Arc::new(backend::open(s, true).await?);
    let server = MemoryServer::new(
        stack.memory_arc(),
        s.namespace.clone(),
        McpConfig::default().with_rate_limit(rate_limit),
    )?
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
