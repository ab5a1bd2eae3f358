//! The names the memory's spans, span attributes and metrics use, after OpenTelemetry's
//! semantic conventions, so a tracing backend shows this memory the way it shows other agent
//! memories.
//!
//! Sources (all of status *Development* upstream, so they may still change):
//!
//! - Memory operations: the *memory* span of the OpenTelemetry generative-AI (`gen_ai`)
//!   semantic conventions (`docs/gen-ai/gen-ai-spans.md#memory` in
//!   `open-telemetry/semantic-conventions-genai`, merged with pull request 140 there, which
//!   took over pull request 3250 of `open-telemetry/semantic-conventions`). The span name is
//!   `{gen_ai.operation.name}` alone; the operation is one of `create_memory`, `update_memory`, `upsert_memory`, `search_memory`, `delete_memory`
//!   (and the store lifecycle operations); the attributes used here are
//!   [`OPERATION_NAME`], [`MEMORY_STORE_ID`], [`MEMORY_RECORD_ID`], [`MEMORY_RECORD_COUNT`] and
//!   [`ERROR_TYPE`]. The span kind is `INTERNAL`: the memory runs in the caller's process.
//!   `gen_ai.provider.name` is left out (required only for a named external provider), and so
//!   are the opt-in content attributes `gen_ai.memory.query.text` and `gen_ai.memory.records`
//!   (task texts and step outputs stay out of telemetry). The memory attributes proposed on
//!   top (`gen_ai.memory.scope`, `gen_ai.agent.id` and `gen_ai.conversation.id` on memory
//!   spans, `open-telemetry/semantic-conventions` pull request 3569) have no counterpart
//!   here: an episode belongs to a namespace, not to an agent or conversation id.
//! - How this memory maps onto them: the store is the namespace
//!   ([`MEMORY_STORE_ID`]); a record is an episode (its id is [`MEMORY_RECORD_ID`] when one
//!   episode is concerned), or the pattern or heuristic that feedback is about.
//! - Metrics: `gen_ai.client.operation.duration` (`docs/gen-ai/gen-ai-metrics.md`, the same
//!   repository), a histogram in seconds with [`OPERATION_NAME`] and, on failure,
//!   [`ERROR_TYPE`]; `mcp.server.operation.duration` (`docs/gen-ai/mcp.md`) for MCP tool calls.
//! - MCP tool calls: the MCP server span of `docs/gen-ai/mcp.md`: named `tools/call {tool}`,
//!   kind `SERVER`, with [`MCP_METHOD_NAME`], [`TOOL_NAME`], [`OPERATION_NAME`] `execute_tool`
//!   and [`ERROR_TYPE`] `tool_error` when the tool's result is an error.
//! - [`CODE_FUNCTION_NAME`] (`code.function.name`, stable in the general conventions) names
//!   the library call behind a span, since several calls share one operation name (a
//!   recommendation, a retrieval and a text search are all `search_memory`).
//!
//! The `otel.*` names are not attributes: `tracing-opentelemetry` reads them to set the span's
//! name, kind and status when the spans are exported.

use crate::error::Error;

/// `gen_ai.operation.name`: the operation, one of the operation constants below.
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.memory.store.id`: the memory store, here the namespace.
pub const MEMORY_STORE_ID: &str = "gen_ai.memory.store.id";
/// `gen_ai.memory.record.id`: the record the operation applies to, when it is one record.
pub const MEMORY_RECORD_ID: &str = "gen_ai.memory.record.id";
/// `gen_ai.memory.record.count`: records returned by a search, or written by a write.
pub const MEMORY_RECORD_COUNT: &str = "gen_ai.memory.record.count";
/// `error.type`: the class of error an operation ended with (see [`error_type`]).
pub const ERROR_TYPE: &str = "error.type";
/// `code.function.name`: the fully-qualified library call behind the span.
pub const CODE_FUNCTION_NAME: &str = "code.function.name";
/// `gen_ai.tool.name`: the MCP tool called.
pub const TOOL_NAME: &str = "gen_ai.tool.name";
/// `mcp.method.name`: the MCP request method.
pub const MCP_METHOD_NAME: &str = "mcp.method.name";

/// Operation `create_memory`: new records (an episode started). Also the span's name.
pub const CREATE_MEMORY: &str = "create_memory";
/// Operation `update_memory`: known records changed (a step logged, an episode completed).
pub const UPDATE_MEMORY: &str = "update_memory";
/// Operation `upsert_memory`: a record written whether or not it existed (feedback, which
/// replaces an earlier verdict on the same item and episode).
pub const UPSERT_MEMORY: &str = "upsert_memory";
/// Operation `delete_memory`: records removed (episodes forgotten).
pub const DELETE_MEMORY: &str = "delete_memory";
/// Operation `search_memory`: records queried (retrieval, recommendation, text search).
pub const SEARCH_MEMORY: &str = "search_memory";
/// Operation `execute_tool`: an MCP tool call.
pub const EXECUTE_TOOL: &str = "execute_tool";
/// The MCP method of a tool call, `tools/call`: the MCP span's name starts with it.
pub const TOOLS_CALL: &str = "tools/call";
/// The [`ERROR_TYPE`] of an MCP tool call whose result is an error.
pub const TOOL_ERROR: &str = "tool_error";

/// `tracing-opentelemetry`'s field for an exported span's name (when it is not static).
pub const OTEL_NAME: &str = "otel.name";
/// `tracing-opentelemetry`'s field for the span kind (`server`, `client`, `internal`).
pub const OTEL_KIND: &str = "otel.kind";
/// `tracing-opentelemetry`'s field for the span status (`ok` or `error`).
pub const OTEL_STATUS_CODE: &str = "otel.status_code";

/// Metric `gen_ai.client.operation.duration`: seconds per memory operation.
pub const CLIENT_OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// The bucket boundaries (seconds) the convention gives `gen_ai.client.operation.duration`.
pub const CLIENT_OPERATION_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Metric `mcp.server.operation.duration`: seconds per MCP request, as the server saw it.
pub const MCP_SERVER_OPERATION_DURATION: &str = "mcp.server.operation.duration";
/// The bucket boundaries (seconds) the convention gives `mcp.server.operation.duration`.
pub const MCP_SERVER_OPERATION_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The Prometheus name of an OpenTelemetry metric or attribute: dots become underscores
/// (`gen_ai.operation.name` is the label `gen_ai_operation_name`). A unit suffix (`_seconds`)
/// is the caller's to add.
pub fn prometheus_name(name: &str) -> String {
    name.replace('.', "_")
}

/// The low-cardinality [`ERROR_TYPE`] of an error: the variant's name in snake case (`not_found`,
/// `invalid_input`, `storage`, ...), as most `error.kind`s of the CLI and the MCP tools.
pub fn error_type(e: &Error) -> &'static str {
    match e {
        Error::NotFound { .. } => "not_found",
        Error::InvalidInput { .. } => "invalid_input",
        Error::LimitExceeded { .. } => "limit_exceeded",
        Error::QuotaExceeded { .. } => "quota_exceeded",
        Error::RateLimited { .. } => "rate_limited",
        Error::CircuitOpen { .. } => "circuit_open",
        Error::Conflict { .. } => "conflict",
        Error::Decode { .. } => "decode",
        Error::Storage { .. } => "storage",
        Error::Shutdown => "shutdown",
    }
}

/// The span of a public memory operation of [`SelfLearningMemory`](crate::SelfLearningMemory):
/// INFO, named after the operation (`memory_span!(SEARCH_MEMORY, "recommend", ns, limit = 5)`),
/// with [`OPERATION_NAME`], [`MEMORY_STORE_ID`] (the namespace), [`CODE_FUNCTION_NAME`] (the
/// method) and, empty until [`ended`] records them, [`MEMORY_RECORD_ID`],
/// [`MEMORY_RECORD_COUNT`], [`ERROR_TYPE`] and the status. Extra fields follow the namespace.
macro_rules! memory_span {
    ($operation:expr, $method:literal, $ns:expr $(, $($field:tt)+)?) => {
        ::tracing::info_span!(
            $operation,
            { $crate::telemetry::OPERATION_NAME } = $operation,
            { $crate::telemetry::MEMORY_STORE_ID } = %$ns,
            { $crate::telemetry::MEMORY_RECORD_ID } = ::tracing::field::Empty,
            { $crate::telemetry::MEMORY_RECORD_COUNT } = ::tracing::field::Empty,
            { $crate::telemetry::CODE_FUNCTION_NAME } =
                concat!("memory_core::SelfLearningMemory::", $method),
            { $crate::telemetry::ERROR_TYPE } = ::tracing::field::Empty,
            { $crate::telemetry::OTEL_STATUS_CODE } = ::tracing::field::Empty
            $(, $($field)+)?
        )
    };
}
pub(crate) use memory_span;

/// Ends a memory operation on its `span`: on success, `count(value)` as
/// [`MEMORY_RECORD_COUNT`]; on failure, [`ERROR_TYPE`] and an error status. Returns `result`.
pub(crate) fn ended<T>(
    span: &tracing::Span,
    result: crate::error::Result<T>,
    count: impl FnOnce(&T) -> usize,
) -> crate::error::Result<T> {
    match &result {
        Ok(value) => {
            span.record(MEMORY_RECORD_COUNT, count(value) as u64);
        }
        Err(e) => {
            span.record(ERROR_TYPE, error_type(e));
            span.record(OTEL_STATUS_CODE, "error");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_replace_dots() {
        assert_eq!(
            prometheus_name(CLIENT_OPERATION_DURATION),
            "gen_ai_client_operation_duration"
        );
        assert_eq!(prometheus_name(OPERATION_NAME), "gen_ai_operation_name");
    }

    #[test]
    fn error_types_are_the_reported_kinds() {
        assert_eq!(
            error_type(&Error::not_found(crate::error::ObjectKind::Episode, "e")),
            "not_found"
        );
        assert_eq!(
            error_type(&Error::invalid("task", "empty")),
            "invalid_input"
        );
        assert_eq!(error_type(&Error::Shutdown), "shutdown");
    }
}
