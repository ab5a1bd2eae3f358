//! The MCP server: tool definitions and the handlers that call the memory.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memory_core::{
    EpisodeId, Error as MemoryError, Limits, Namespace, RateLimitConfig, RateLimiter,
    SelfLearningMemory, telemetry,
};
use memory_tiered::TieredStorage;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::{Result, ToolFailure};
use crate::params::NamespaceArgs;

/// Settings of the server.
///
/// # Default
/// | field | default |
/// |---|---|
/// | `rate_limit` | enabled, bursts of 200 calls, refilled at 50 calls per second |
/// | `namespaces` | [`NamespaceAccess::DefaultOnly`]: the server's own namespace and no other |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct McpConfig {
    /// Token bucket applied to every tool call of one client, on top of the memory's
    /// per-namespace limit on writes: over stdio the one client's; over HTTP (`memory serve`)
    /// one bucket per client address, shared by all its sessions.
    pub rate_limit: RateLimitConfig,
    /// Which namespaces a tool call may name.
    pub namespaces: NamespaceAccess,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            rate_limit: RateLimitConfig {
                enabled: true,
                burst: 200,
                per_second: 50.0,
            },
            namespaces: NamespaceAccess::DefaultOnly,
        }
    }
}

impl McpConfig {
    /// With this per-client rate limit.
    #[must_use]
    pub fn with_rate_limit(mut self, rate_limit: RateLimitConfig) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// With this namespace access.
    #[must_use]
    pub fn with_namespaces(mut self, namespaces: NamespaceAccess) -> Self {
        self.namespaces = namespaces;
        self
    }
}

/// Which namespaces the clients of a server may use through a tool's `namespace` argument.
///
/// The server's default namespace is always allowed. A call naming any other is refused with
/// the tool error `namespace_not_allowed`, which says nothing of whether that namespace
/// exists or holds anything.
///
/// ```
/// use memory_core::Namespace;
/// use memory_mcp::NamespaceAccess;
/// let own = Namespace::new("team/a").unwrap();
/// let other = Namespace::new("team/b").unwrap();
/// assert!(!NamespaceAccess::DefaultOnly.allows(&own, &other));
/// assert!(NamespaceAccess::Listed(vec![other.clone()]).allows(&own, &other));
/// assert!(NamespaceAccess::Any.allows(&own, &other));
/// assert!(NamespaceAccess::DefaultOnly.allows(&own, &own));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceAccess {
    /// Only the server's default namespace (the default).
    #[default]
    DefaultOnly,
    /// The default namespace and these.
    Listed(Vec<Namespace>),
    /// Every namespace of the data directory (`--allow-namespace '*'`).
    Any,
}

impl NamespaceAccess {
    /// Whether a server whose default namespace is `default` may serve `ns`.
    #[must_use]
    pub fn allows(&self, default: &Namespace, ns: &Namespace) -> bool {
        ns == default
            || match self {
                NamespaceAccess::DefaultOnly => false,
                NamespaceAccess::Listed(list) => list.contains(ns),
                NamespaceAccess::Any => true,
            }
    }
}

/// How long `/health` and `/metrics` wait for the database before they answer without it.
pub(crate) const PROBE_DEADLINE: Duration = Duration::from_millis(800);

/// How long `/health`'s database check runs: well within [`PROBE_DEADLINE`], after the ping.
pub(crate) const PROBE_CHECK_DEADLINE: Duration = Duration::from_millis(300);

/// State shared by every client of one server.
struct Shared {
    memory: Arc<SelfLearningMemory>,
    default_namespace: Namespace,
    stack: Option<Arc<memory_stack::Stack>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    tools: Vec<Tool>,
    /// What a client is told when a session starts.
    instructions: String,
    config: McpConfig,
    /// Tool calls running now.
    inflight: AtomicUsize,
    /// Signalled whenever a call ends.
    call_ended: tokio::sync::Notify,
    /// Set when the server stops taking calls (see [`MemoryServer::drain`]).
    closing: AtomicBool,
}

/// Counts a call in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.inflight.fetch_add(1, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
        self.0.call_ended.notify_waiters();
    }
}

/// The memory as an MCP server: twelve tools over a [`SelfLearningMemory`].
///
/// Cloning shares the memory and the client's rate-limit bucket; [`MemoryServer::for_client`]
/// gives a new client its own bucket.
#[derive(Clone)]
pub struct MemoryServer {
    shared: Arc<Shared>,
    limiter: Arc<RateLimiter>,
}

impl std::fmt::Debug for MemoryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryServer")
            .field("default_namespace", &self.shared.default_namespace)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// The per-client bucket is keyed by this; one limiter belongs to one client.
fn client_key() -> Namespace {
    Namespace::default()
}

impl MemoryServer {
    /// A server over `memory` serving `tools`, which tells each client `instructions` when
    /// its session starts ([`MemoryServer::new`] passes the catalogue's).
    pub(crate) fn serving(
        memory: Arc<SelfLearningMemory>,
        default_namespace: Namespace,
        config: McpConfig,
        (tools, instructions): (Vec<Tool>, String),
    ) -> Self {
        let limiter = Arc::new(RateLimiter::new(config.rate_limit.clone()));
        MemoryServer {
            shared: Arc::new(Shared {
                memory,
                default_namespace,
                stack: None,
                metrics: None,
                tools,
                instructions,
                config,
                inflight: AtomicUsize::new(0),
                call_ended: tokio::sync::Notify::new(),
                closing: AtomicBool::new(false),
            }),
            limiter,
        }
    }

    /// With the whole stack the memory runs on (as `memory mcp` opens it), so `stats` and
    /// `health` report every component as `memory health` does: the database check, the
    /// cache, this process's journal and those of other processes, the breaker, the model.
    ///
    /// Call before the server is cloned or served.
    #[must_use]
    pub fn with_stack(mut self, stack: Arc<memory_stack::Stack>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.stack = Some(stack);
        }
        self
    }

    /// Counts every tool call (by tool and outcome) and its latency in `metrics`, which
    /// [`MemoryServer::metrics_text`] renders with the stack's gauges.
    ///
    /// Call before the server is cloned or served.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = Some(metrics);
        }
        self
    }

    /// The metrics in the Prometheus text format (empty without [`MemoryServer::with_metrics`]).
    pub async fn metrics_text(&self) -> String {
        let Some(m) = &self.shared.metrics else {
            return String::new();
        };
        let mut g = crate::metrics::Gauges {
            consolidations: self.memory().consolidations_run(),
            in_flight: self.calls_in_flight(),
            ..crate::metrics::Gauges::default()
        };
        if let Some(t) = self.tiered() {
            let st = t.status();
            g.breaker = Some(st.breaker);
            g.journal_pending = st.outbox_len;
            g.journal_rejected = st.dead_letters;
            g.journal_refused_over_quota = st.refused_over_quota;
            g.cache = st.cache.map(|c| (c.hit_rate(), c.entries));
        }
        // A count from the database: left out when it does not answer in time (a scrape
        // must not wait for a hung server).
        let backlog = self
            .memory()
            .embedding_backlog(&self.shared.default_namespace);
        g.embedding_backlog = tokio::time::timeout(PROBE_DEADLINE, backlog)
            .await
            .ok()
            .and_then(Result::ok);
        m.render(&g)
    }

    /// The memory's health, as the `health` tool answers it (without a namespace), with the
    /// database check cut short at 300 ms so that `/health` answers within its own deadline
    /// (0.8 s) on a large healthy store (an unfinished check with no problem counts as ok).
    pub async fn health_report(&self) -> Value {
        match self
            .health_within(NamespaceArgs::default(), PROBE_CHECK_DEADLINE)
            .await
        {
            Ok(v) => v,
            Err(f) => f.to_json(),
        }
    }

    /// Stops taking tool calls (later ones get a `shutdown` tool error) and waits, at most
    /// `grace`, for the calls in flight to finish. True when none is left.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.shared.closing.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.shared.call_ended.notified();
            if self.shared.inflight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.shared.inflight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// [`MemoryServer::drain`] with [`crate::DRAIN_GRACE`], warning of calls still running after it.
    pub(crate) async fn finish_calls(&self) {
        if !self.drain(crate::DRAIN_GRACE).await {
            warn!("calls still running after the grace period");
        }
    }

    /// Logs the calls in flight, then [`MemoryServer::finish_calls`]: a stopping server's first
    /// step.
    pub(crate) async fn stop_taking_calls(&self) {
        info!(
            in_flight = self.calls_in_flight(),
            "stopping: finishing the calls in flight"
        );
        self.finish_calls().await;
    }

    /// Tool calls running now.
    pub fn calls_in_flight(&self) -> usize {
        self.shared.inflight.load(Ordering::SeqCst)
    }

    /// The same server with a fresh rate-limit bucket, for a new client connection.
    #[must_use]
    pub fn for_client(&self) -> Self {
        MemoryServer {
            shared: Arc::clone(&self.shared),
            limiter: Arc::new(RateLimiter::new(self.shared.config.rate_limit.clone())),
        }
    }

    /// The tools this server offers.
    pub fn tools(&self) -> &[Tool] {
        &self.shared.tools
    }

    /// The tiered storage under the stack, when the server has one.
    pub(crate) fn tiered(&self) -> Option<&Arc<TieredStorage>> {
        self.shared.stack.as_ref().map(|s| s.tiered())
    }

    /// The stack the memory runs on, when the server was given it.
    pub(crate) fn stack(&self) -> Option<&Arc<memory_stack::Stack>> {
        self.shared.stack.as_ref()
    }

    pub(crate) fn memory(&self) -> &SelfLearningMemory {
        &self.shared.memory
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.memory().config().limits
    }

    pub(crate) fn namespace(&self, given: Option<&str>) -> Result<Namespace, ToolFailure> {
        let default = &self.shared.default_namespace;
        let Some(n) = given else {
            return Ok(default.clone());
        };
        let ns = Namespace::new(n)?;
        if self.shared.config.namespaces.allows(default, &ns) {
            Ok(ns)
        } else {
            Err(ToolFailure::namespace_not_allowed(&ns))
        }
    }

    /// Runs one tool call. `Err` only for an unknown tool (a protocol error); everything
    /// else, including invalid arguments, is a tool result.
    async fn call(
        &self,
        name: &str,
        args: Option<JsonObject>,
        client: &Namespace,
    ) -> Result<CallToolResult, McpError> {
        if !self.shared.tools.iter().any(|t| t.name == name) {
            let shown = memory_core::cut_value(name);
            let available: Vec<&str> = self.shared.tools.iter().map(|t| &*t.name).collect();
            return Err(McpError::invalid_params(
                format!("unknown tool: {shown}"),
                Some(json!({ "tool": shown, "available": available })),
            ));
        }
        let result = self
            .run_guarded_as(client, name, self.dispatch(name, args))
            .await;
        if result.is_err() {
            // The MCP convention's error type for a tool result with `isError`.
            let span = tracing::Span::current();
            span.record(telemetry::ERROR_TYPE, telemetry::TOOL_ERROR);
            span.record(telemetry::OTEL_STATUS_CODE, "error");
        }
        Ok(match result {
            Ok(value) => CallToolResult::structured(value),
            Err(failure) => CallToolResult::structured_error(failure.to_json()),
        })
    }

    /// Runs the tool `name` (one of the server's) as a call of this client.
    pub(crate) async fn run_tool(
        &self,
        name: &str,
        args: Option<JsonObject>,
    ) -> Result<Value, ToolFailure> {
        self.run_guarded(name, self.dispatch(name, args)).await
    }

    /// Runs `work`, the operation `name` of this client (a tool, or a read of the web view):
    /// counted in flight, refused once the server stops taking calls, rate-limited with the
    /// client's bucket, and measured under `name`.
    pub(crate) async fn run_guarded(
        &self,
        name: &str,
        work: impl Future<Output = Result<Value, ToolFailure>>,
    ) -> Result<Value, ToolFailure> {
        self.run_guarded_as(&client_key(), name, work).await
    }

    /// [`MemoryServer::run_guarded`] with the rate limiter's bucket of `client`.
    async fn run_guarded_as(
        &self,
        client: &Namespace,
        name: &str,
        work: impl Future<Output = Result<Value, ToolFailure>>,
    ) -> Result<Value, ToolFailure> {
        let started = Instant::now();
        let _counted = InFlight::enter(&self.shared);
        let result = if self.shared.closing.load(Ordering::SeqCst) {
            Err(ToolFailure::from(MemoryError::Shutdown))
        } else {
            match self.limiter.acquire(client, 1) {
                Ok(()) => work.await,
                Err(e) => Err(ToolFailure::from(e)),
            }
        };
        let elapsed = started.elapsed();
        if let Some(m) = &self.shared.metrics {
            m.observe(
                name,
                Self::tool_operation(name),
                result.as_ref().err().map(|f| f.kind),
                elapsed,
            );
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => debug!(tool = name, elapsed_ms, "call ok"),
            Err(failure) => {
                debug!(tool = name, elapsed_ms, kind = failure.kind, message = %failure.message, "call failed");
            }
        }
        result
    }

    /// The namespaces this server may serve, its default first: the listed ones, or every
    /// namespace of the data directory when any may be named.
    pub(crate) async fn namespaces_served(&self) -> Result<Vec<Namespace>, ToolFailure> {
        let default = &self.shared.default_namespace;
        let mut all = vec![default.clone()];
        match &self.shared.config.namespaces {
            NamespaceAccess::DefaultOnly => {}
            NamespaceAccess::Listed(list) => all.extend(list.iter().cloned()),
            NamespaceAccess::Any => all.extend(self.memory().namespaces().await?),
        }
        let mut seen = std::collections::HashSet::new();
        all.retain(|ns| seen.insert(ns.clone()));
        Ok(all)
    }

    /// A list size: `default` when absent, else 1..=`max_results`.
    pub(crate) fn limit(
        &self,
        field: &'static str,
        given: Option<u32>,
        default: u32,
    ) -> Result<u32, ToolFailure> {
        let max = self.limits().max_results;
        match given {
            None => Ok(default.min(max as u32)),
            Some(0) => Err(MemoryError::invalid(field, "must be at least 1").into()),
            Some(n) if n as usize > max => Err(MemoryError::LimitExceeded {
                field,
                limit: max as u64,
                actual: u64::from(n),
            }
            .into()),
            Some(n) => Ok(n),
        }
    }
}

pub(crate) fn parse<T: DeserializeOwned>(
    tool: &str,
    args: Option<JsonObject>,
) -> Result<T, ToolFailure> {
    serde_json::from_value(Value::Object(args.unwrap_or_default()))
        .map_err(|e| ToolFailure::arguments(tool, e))
}

/// An episode id argument; the error quotes at most a short prefix of a bad one.
pub(crate) fn episode_id(s: &str) -> Result<EpisodeId, ToolFailure> {
    s.parse::<EpisodeId>().map_err(|_| {
        MemoryError::invalid(
            "episode_id",
            format!(
                "{} is not an episode id (a UUID)",
                memory_core::quote_value(s)
            ),
        )
        .into()
    })
}

pub(crate) fn check_len(field: &'static str, s: &str, limit: usize) -> Result<(), ToolFailure> {
    if s.len() > limit {
        return Err(MemoryError::LimitExceeded {
            field,
            limit: limit as u64,
            actual: s.len() as u64,
        }
        .into());
    }
    Ok(())
}

pub(crate) fn check_label(
    field: &'static str,
    s: Option<&str>,
    limits: &Limits,
) -> Result<(), ToolFailure> {
    s.map_or(Ok(()), |s| check_len(field, s, limits.max_label_bytes))
}

impl ServerHandler for MemoryServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("memory", env!("CARGO_PKG_VERSION")))
            .with_instructions(self.shared.instructions.clone())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.shared.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        // The MCP server span of OpenTelemetry's conventions: `tools/call {tool}`, kind SERVER
        // (see `memory_core::telemetry`).
        let span = info_span!(
            "tools/call",
            { telemetry::OTEL_NAME } = %format_args!("{} {name}", telemetry::TOOLS_CALL),
            { telemetry::OTEL_KIND } = "server",
            { telemetry::MCP_METHOD_NAME } = telemetry::TOOLS_CALL,
            { telemetry::TOOL_NAME } = %name,
            { telemetry::OPERATION_NAME } = telemetry::EXECUTE_TOOL,
            { telemetry::ERROR_TYPE } = tracing::field::Empty,
            { telemetry::OTEL_STATUS_CODE } = tracing::field::Empty,
        );
        // Over HTTP, the bucket of the client's address (every session of one client shares
        // it); over stdio, the one client's.
        let client = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|p| {
                p.extensions
                    .get::<axum::extract::ConnectInfo<crate::guarded_listener::PeerAddr>>()
            })
            .and_then(|peer| Namespace::new(format!("peer/{}", peer.0.0.ip())).ok())
            .unwrap_or_else(client_key);
        self.call(&name, request.arguments, &client)
            .instrument(span)
            .await
            .map(CallToolResponse::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_megabyte_episode_id_is_quoted_short() {
        let big = "e".repeat(1 << 20);
        let failure = episode_id(&big).err().map(|f| f.to_json().to_string());
        let answer = failure.unwrap_or_default();
        assert!(
            answer.contains("(1048576 bytes)"),
            "{}",
            memory_core::cut_to(&answer, 500)
        );
        assert!(answer.len() < 300, "{} bytes", answer.len());
    }
}
