//! `memory mcp`: the memory as an MCP server on stdin/stdout.

use std::sync::Arc;

use anyhow::Result;
use memory_core::RateLimitConfig;
use memory_mcp::{McpConfig, MemoryServer};
use tracing::info;

use crate::backend::{self, Stack};
use crate::cli::McpArgs;
use crate::settings::Settings;

/// Opens the same stack as every other command (with the embedding model: the server is
/// long-lived), serves one client until it closes stdin, then flushes and closes the stack.
pub async fn run(a: &McpArgs, s: &Settings) -> Result<()> {
    let rate_limit = if a.rate_per_second > 0.0 {
        RateLimitConfig {
            enabled: true,
            burst: a.rate_burst.max(1),
            per_second: a.rate_per_second,
        }
    } else {
        RateLimitConfig::disabled()
    };
    let Stack {
        memory,
        tiered,
        cache_problem,
        ..
    } = backend::open(s, true).await?;
    let memory = Arc::new(memory);
    let server = MemoryServer::new(
        Arc::clone(&memory),
        s.namespace.clone(),
        McpConfig::default().with_rate_limit(rate_limit),
    )?
    .with_tiered(Arc::clone(&tiered), cache_problem);
    info!(namespace = %s.namespace, data_dir = %s.data_dir.display(), mode = ?s.mode, "mcp server on stdio");
    let served = memory_mcp::serve_stdio(server).await;
    // Buffered steps are written before the process exits, however the session ended.
    let closed = memory.shutdown().await;
    tiered.shutdown().await?;
    served?;
    closed?;
    Ok(())
}
