//! The MCP server: tool definitions and the handlers that call the memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    EpisodeFilter, EpisodeId, Error as MemoryError, FeedbackTarget, HeuristicId, LearnedQuery,
    Limits, Namespace, NewEpisode, Outcome, PatternId, RateLimitConfig, RateLimiter,
    SelfLearningMemory, StepInput, StepResult, TextQuery,
};
use memory_tiered::TieredStorage;
use rmcp::handler::server::common::schema_for_input;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::catalog::Catalog;
use crate::error::{Error, Result, ToolFailure};
use crate::params::{
    CompleteEpisodeArgs, FeedbackArgs, LearnedKind, ListLearnedArgs, LogStepArgs, NamespaceArgs,
    OutcomeArg, RecommendArgs, SearchArgs, ShowEpisodeArgs, StartEpisodeArgs, StepStatus,
    TargetKind,
};

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
    /// Token bucket applied to every tool call of one client (each connection gets its own
    /// bucket), on top of the memory's per-namespace limit on writes.
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

/// Smallest and largest `max_tokens` of `recommend`.
const MIN_TOKENS: u32 = 100;
const MAX_TOKENS: u32 = 100_000;

/// Tokens of a JSON value, estimated as one per four bytes (what English text and JSON
/// average with common tokenizers).
fn approx_tokens(v: &impl Serialize) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len().div_ceil(4))
}

/// Leaves out the least relevant items (the tail of whichever list is largest) until the
/// recommendation fits `budget` tokens; the playbook, estimate and flags always stay.
/// Returns whether anything was left out and the size in tokens.
fn fit_to_budget(
    rec: &mut memory_core::retrieval::recommend::Recommendation,
    budget: Option<usize>,
) -> (bool, usize) {
    let mut size = approx_tokens(rec);
    let Some(budget) = budget else {
        return (false, size);
    };
    let mut truncated = false;
    while size > budget {
        let tails = [
            rec.episodes.last().map_or(0, approx_tokens),
            rec.patterns.last().map_or(0, approx_tokens),
            rec.heuristics.last().map_or(0, approx_tokens),
            rec.pitfalls.last().map_or(0, approx_tokens),
        ];
        let (largest, cut) = tails
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .map_or((0, 0), |(i, n)| (i, *n));
        if cut == 0 {
            break;
        }
        match largest {
            0 => drop(rec.episodes.pop()),
            1 => drop(rec.patterns.pop()),
            2 => drop(rec.heuristics.pop()),
            _ => drop(rec.pitfalls.pop()),
        }
        truncated = true;
        size = approx_tokens(rec);
    }
    (truncated, size)
}

fn input_schema(tool: &'static str) -> Result<Arc<JsonObject>> {
    fn of<T: JsonSchema + 'static>(tool: &'static str) -> Result<Arc<JsonObject>> {
        schema_for_input::<T>().map_err(|reason| Error::Schema { tool, reason })
    }
    match tool {
        "recommend" => of::<RecommendArgs>(tool),
        "start_episode" => of::<StartEpisodeArgs>(tool),
        "log_step" => of::<LogStepArgs>(tool),
        "complete_episode" => of::<CompleteEpisodeArgs>(tool),
        "record_feedback" => of::<FeedbackArgs>(tool),
        "search_episodes" => of::<SearchArgs>(tool),
        "show_episode" => of::<ShowEpisodeArgs>(tool),
        "list_learned" => of::<ListLearnedArgs>(tool),
        "stats" | "health" => of::<NamespaceArgs>(tool),
        _ => Err(Error::Schema {
            tool,
            reason: "tools.json names a tool the server has no handler for".into(),
        }),
    }
}

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

/// The memory as an MCP server: ten tools over a [`SelfLearningMemory`].
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
    /// A server over `memory`; tool calls without a `namespace` argument use
    /// `default_namespace`.
    pub fn new(
        memory: Arc<SelfLearningMemory>,
        default_namespace: Namespace,
        config: McpConfig,
    ) -> Result<Self> {
        let limiter = Arc::new(RateLimiter::new(config.rate_limit.clone()));
        let catalog = Catalog::load()?;
        Ok(MemoryServer {
            shared: Arc::new(Shared {
                memory,
                default_namespace,
                stack: None,
                metrics: None,
                tools: catalog.tools(input_schema)?,
                instructions: catalog.instructions,
                config,
                inflight: AtomicUsize::new(0),
                call_ended: tokio::sync::Notify::new(),
                closing: AtomicBool::new(false),
            }),
            limiter,
        })
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
            g.cache = st.cache.map(|c| (c.hit_rate(), c.entries));
        }
        g.embedding_backlog = self
            .memory()
            .embedding_backlog(&self.shared.default_namespace)
            .await
            .ok();
        m.render(&g)
    }

    /// The memory's health, as the `health` tool answers it (without a namespace).
    pub async fn health_report(&self) -> Value {
        match self.health(&NamespaceArgs::default()).await {
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
    fn tiered(&self) -> Option<&Arc<TieredStorage>> {
        self.shared.stack.as_ref().map(|s| s.tiered())
    }

    fn memory(&self) -> &SelfLearningMemory {
        &self.shared.memory
    }

    fn limits(&self) -> &Limits {
        &self.memory().config().limits
    }

    fn namespace(&self, given: Option<&str>) -> Result<Namespace, ToolFailure> {
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
    async fn call(&self, name: &str, args: Option<JsonObject>) -> Result<CallToolResult, McpError> {
        if !self.shared.tools.iter().any(|t| t.name == name) {
            let shown = memory_core::cut_value(name);
            let available: Vec<&str> = self.shared.tools.iter().map(|t| &*t.name).collect();
            return Err(McpError::invalid_params(
                format!("unknown tool: {shown}"),
                Some(json!({ "tool": shown, "available": available })),
            ));
        }
        let started = Instant::now();
        let _counted = InFlight::enter(&self.shared);
        let result = if self.shared.closing.load(Ordering::SeqCst) {
            Err(ToolFailure::from(MemoryError::Shutdown))
        } else {
            match self.limiter.acquire(&client_key(), 1) {
                Ok(()) => self.dispatch(name, args).await,
                Err(e) => Err(ToolFailure::from(e)),
            }
        };
        let elapsed = started.elapsed();
        if let Some(m) = &self.shared.metrics {
            m.observe(name, result.is_ok(), elapsed);
        }
        let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
        Ok(match result {
            Ok(value) => {
                debug!(tool = name, elapsed_ms, "tool call ok");
                CallToolResult::structured(value)
            }
            Err(failure) => {
                debug!(tool = name, elapsed_ms, kind = failure.kind, message = %failure.message, "tool call failed");
                CallToolResult::structured_error(failure.to_json())
            }
        })
    }

    async fn dispatch(&self, name: &str, args: Option<JsonObject>) -> Result<Value, ToolFailure> {
        match name {
            "recommend" => self.recommend(parse(name, args)?).await,
            "start_episode" => self.start_episode(parse(name, args)?).await,
            "log_step" => self.log_step(parse(name, args)?).await,
            "complete_episode" => self.complete_episode(parse(name, args)?).await,
            "record_feedback" => self.record_feedback(&parse(name, args)?).await,
            "search_episodes" => self.search_episodes(parse(name, args)?).await,
            "show_episode" => self.show_episode(&parse(name, args)?).await,
            "list_learned" => self.list_learned(parse(name, args)?).await,
            "stats" => self.stats(&parse(name, args)?).await,
            _ => self.health(&parse(name, args)?).await, // the catalogue's names are checked
        }
    }

    async fn recommend(&self, a: RecommendArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let limit = self.limit("limit", a.limit, 5)?;
        let mut req = RecommendRequest::new(a.task).with_limit(limit);
        if a.context.is_given() || a.task_type.is_some() {
            req = req.with_context(a.task_type, a.context.to_context());
        }
        // Check before draining the embedding queue, so a bad call costs nothing.
        self.limits()
            .check_retrieval(&memory_core::RetrievalQuery {
                task: req.task.clone(),
                task_type: req.task_type,
                context: req.context.clone(),
                filter: EpisodeFilter::default(),
                limit,
                method: memory_core::RetrievalMethod::Hybrid,
            })?;
        // Completed episodes are embedded in the background; catch up so they count now.
        if self.memory().retriever().embedder().is_some() {
            self.memory().embed_pending(&ns).await?;
        }
        let budget = match a.max_tokens {
            None => None,
            Some(n) if (MIN_TOKENS..=MAX_TOKENS).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(MemoryError::invalid(
                    "max_tokens",
                    format!("must be between {MIN_TOKENS} and {MAX_TOKENS}, got {n}"),
                )
                .into());
            }
        };
        let mut rec = self.memory().recommend(&ns, &req).await?;
        let (truncated, approx_tokens) = fit_to_budget(&mut rec, budget);
        Ok(json!({
            "namespace": ns,
            "recommendation": rec,
            "truncated": truncated,
            "approx_tokens": approx_tokens,
        }))
    }

    async fn start_episode(&self, a: StartEpisodeArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let new = NewEpisode::new(
            a.task,
            a.task_type.unwrap_or_default(),
            a.context.to_context(),
        );
        let id = self.memory().start_episode(&ns, new).await?;
        Ok(json!({ "episode_id": id, "namespace": ns }))
    }

    async fn log_step(&self, a: LogStepArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let id = episode_id(&a.episode_id)?;
        let status = a.status;
        let result = match a.status {
            StepStatus::Success => StepResult::Success { output: a.output },
            StepStatus::Error => StepResult::Error { message: a.output },
            StepStatus::Timeout => StepResult::Timeout { message: a.output },
        };
        let step = StepInput {
            tool: a.tool,
            action: a.action,
            parameters: a.parameters.unwrap_or(Value::Null),
            result,
            latency_ms: a.latency_ms,
            tokens: a.tokens,
        };
        self.memory().log_step(&ns, id, step).await?;
        // Acknowledged means stored: the client may be killed, or this server stopped, right
        // after it reads the answer.
        self.memory().flush_episode(&ns, id).await?;
        Ok(json!({ "logged": true, "episode_id": id, "status": status }))
    }

    async fn complete_episode(&self, a: CompleteEpisodeArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let id = episode_id(&a.episode_id)?;
        let misplaced = match a.outcome {
            OutcomeArg::Success => (!a.completed.is_empty() || !a.failed.is_empty())
                .then_some("completed and failed are only for partial_success"),
            OutcomeArg::PartialSuccess => {
                (!a.artifacts.is_empty()).then_some("artifacts are only for success")
            }
            OutcomeArg::Failure | OutcomeArg::Abstained => {
                (!a.artifacts.is_empty() || !a.completed.is_empty() || !a.failed.is_empty())
                    .then_some("artifacts, completed and failed are not for this outcome")
            }
        };
        if let Some(reason) = misplaced {
            return Err(MemoryError::invalid("outcome", reason).into());
        }
        let outcome = match a.outcome {
            OutcomeArg::Success => Outcome::Success {
                verdict: a.verdict,
                artifacts: a.artifacts,
            },
            OutcomeArg::PartialSuccess => Outcome::PartialSuccess {
                verdict: a.verdict,
                completed: a.completed,
                failed: a.failed,
            },
            OutcomeArg::Failure => Outcome::Failure { reason: a.verdict },
            OutcomeArg::Abstained => Outcome::Abstained { reason: a.verdict },
        };
        let report = self.memory().complete_episode(&ns, id, outcome).await?;
        Ok(json!({ "episode_id": id, "namespace": ns, "report": report }))
    }

    async fn record_feedback(&self, a: &FeedbackArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let episode = episode_id(&a.episode_id)?;
        let id = a.target_id.trim().to_owned();
        if id.is_empty() {
            return Err(MemoryError::invalid("target_id", "must not be empty").into());
        }
        // The target must exist: feedback on a misspelled id would be stored and never used.
        let target = match a.target_kind {
            TargetKind::Pattern => {
                let p = self.memory().pattern(&ns, &PatternId(id)).await?;
                FeedbackTarget::Pattern(p.id)
            }
            TargetKind::Heuristic => {
                let h = self.memory().heuristic(&ns, &HeuristicId(id)).await?;
                FeedbackTarget::Heuristic(h.id)
            }
        };
        let outcome = a.outcome;
        self.memory()
            .record_feedback(&ns, target.clone(), episode, outcome)
            .await?;
        Ok(json!({ "recorded": true, "target": target, "episode_id": episode, "outcome": outcome }))
    }

    async fn search_episodes(&self, a: SearchArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let limits = self.limits();
        if a.query.trim().is_empty() {
            return Err(MemoryError::invalid("query", "must not be empty").into());
        }
        check_len("query", &a.query, limits.max_description_bytes)?;
        check_label("domain", a.domain.as_deref(), limits)?;
        check_label("language", a.language.as_deref(), limits)?;
        let limit = self.limit("limit", a.limit, 10)?;
        let query = TextQuery {
            text: a.query,
            filter: EpisodeFilter {
                task_type: a.task_type,
                domain: a.domain.map(|d| d.trim().to_lowercase()),
                language: a.language.map(|l| l.trim().to_lowercase()),
                status: a.status.map(Into::into),
                ..EpisodeFilter::default()
            },
            limit,
        };
        let hits = self.memory().search_episodes(&ns, &query).await?;
        let mut results: Vec<Value> = Vec::with_capacity(hits.len());
        for h in &hits {
            // The step the query matched (one read per hit with steps; one deleted since the
            // search has none).
            let step = if h.summary.step_count == 0 {
                None
            } else {
                match self
                    .memory()
                    .matched_step(&ns, h.summary.id, &query.text)
                    .await
                {
                    Ok(step) => step,
                    Err(MemoryError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            results.push(json!({ "score": h.score, "episode": h.summary, "matched_step": step }));
        }
        Ok(json!({ "namespace": ns, "results": results }))
    }

    async fn show_episode(&self, a: &ShowEpisodeArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let id = episode_id(&a.episode_id)?;
        let episode = self.memory().get_episode(&ns, id).await?;
        Ok(json!({ "namespace": ns, "episode": episode }))
    }

    async fn list_learned(&self, a: ListLearnedArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let limits = self.limits();
        check_label("domain", a.domain.as_deref(), limits)?;
        check_label("language", a.language.as_deref(), limits)?;
        let kind = a.kind;
        let query = LearnedQuery {
            task_type: a.task_type,
            domain: a.domain.map(|d| d.trim().to_lowercase()),
            language: a.language.map(|l| l.trim().to_lowercase()),
            kind: None,
            include_inactive: a.include_inactive,
            limit: self.limit("limit", a.limit, 20)?,
            offset: 0,
        };
        let m = self.memory();
        let now = m.clock().now();
        let half_life = m.config().learning.half_life_days;
        let items: Vec<Value> = match a.kind {
            LearnedKind::Patterns => m
                .patterns(&ns, &query)
                .await?
                .iter()
                .map(|p| {
                    json!({
                        "description": p.describe(),
                        "confidence": p.confidence(now, half_life),
                        "success_rate": p.success_rate(),
                        "pattern": p,
                    })
                })
                .collect(),
            LearnedKind::Heuristics => m
                .heuristics(&ns, &query)
                .await?
                .iter()
                .map(|h| {
                    json!({
                        "description": h.describe(),
                        "confidence": h.confidence(now, half_life),
                        "heuristic": h,
                    })
                })
                .collect(),
            LearnedKind::Lessons => m
                .lessons(&ns, &query)
                .await?
                .iter()
                .map(|l| json!({ "text": l.text(), "lesson": l }))
                .collect(),
        };
        Ok(json!({ "namespace": ns, "kind": kind, "items": items }))
    }

    async fn stats(&self, a: &NamespaceArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let st = self.memory().stats(&ns).await?;
        let success_rate = if st.completed == 0 {
            0.0
        } else {
            st.successes as f64 / st.completed as f64
        };
        let mut out = json!({ "namespace": ns, "counts": st, "success_rate": success_rate });
        if let (Some(t), Some(map)) = (self.tiered(), out.as_object_mut()) {
            let s = t.status();
            map.insert("cache".into(), json!(s.cache));
            map.insert("outbox_len".into(), json!(s.outbox_len));
            map.insert("breaker".into(), json!(s.breaker));
        }
        Ok(out)
    }

    async fn health(&self, a: &NamespaceArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        if let Some(stack) = &self.shared.stack {
            let report = stack.health(memory_stack::HEALTH_CHECK_DEADLINE).await;
            let mut out = json!(report);
            if let Some(map) = out.as_object_mut() {
                map.insert("namespace".into(), json!(ns));
            }
            return Ok(out);
        }
        let started = Instant::now();
        let durable = self.memory().storage().ping().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let healthy = durable.is_ok();
        let retriever = self.memory().retriever();
        let embedder = match (retriever.embedder(), self.memory().retrieval_degraded()) {
            (Some(e), _) => json!({
                "component": "embedder", "status": "ok",
                "detail": format!("{} ({} dimensions): semantic + lexical retrieval", e.model_id(), e.dimensions()),
            }),
            (None, why) => json!({
                "component": "embedder", "status": "degraded",
                "detail": format!("{}; retrieval is lexical only", why.unwrap_or("no embedding model")),
            }),
        };
        let components = vec![
            json!({
                "component": "durable",
                "status": if healthy { "ok" } else { "down" },
                "latency_ms": latency_ms,
                "error": durable.as_ref().err().map(ToString::to_string),
            }),
            embedder,
        ];
        Ok(json!({ "healthy": healthy, "namespace": ns, "components": components }))
    }

    /// A list size: `default` when absent, else 1..=`max_results`.
    fn limit(
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

fn parse<T: DeserializeOwned>(tool: &str, args: Option<JsonObject>) -> Result<T, ToolFailure> {
    serde_json::from_value(Value::Object(args.unwrap_or_default()))
        .map_err(|e| ToolFailure::arguments(tool, e))
}

/// An episode id argument; the error quotes at most a short prefix of a bad one.
fn episode_id(s: &str) -> Result<EpisodeId, ToolFailure> {
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

fn check_len(field: &'static str, s: &str, limit: usize) -> Result<(), ToolFailure> {
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

fn check_label(field: &'static str, s: Option<&str>, limits: &Limits) -> Result<(), ToolFailure> {
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
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let span = info_span!("mcp_tool", tool = %name);
        self.call(&name, request.arguments)
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
