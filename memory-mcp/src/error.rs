//! The crate's error, and how library errors are reported to a client.

use memory_core::Error as MemoryError;
use serde_json::{Value, json};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of setting up or running an MCP session. Errors of single tool calls are not
/// errors of the session: they are answered to the client (see [`crate`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tool's argument schema could not be generated.
    #[error("cannot build the input schema of tool {tool}: {reason}")]
    Schema {
        /// The tool.
        tool: &'static str,
        /// Why.
        reason: String,
    },
    /// The session could not start (the client went away or did not initialize).
    #[error("mcp session failed to initialize: {0}")]
    Initialize(String),
    /// The session's task ended abnormally.
    #[error("mcp session ended abnormally: {0}")]
    Session(String),
    /// The memory failed outside a tool call.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The metrics could not be set up.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The HTTP server could not listen or serve.
    #[error("http server: {0}")]
    Http(String),
    /// The HTTP server's settings are unsafe or invalid.
    #[error("{0}")]
    Config(String),
}

/// A failed tool call, answered as a tool result with `isError: true` so the agent reads
/// it and can correct its call.
#[derive(Debug)]
pub(crate) struct ToolFailure {
    /// Machine-readable kind: `invalid_arguments`, `invalid_input`, `limit_exceeded`, ...
    pub kind: &'static str,
    /// What went wrong, naming the field or object.
    pub message: String,
    /// What to do about it.
    pub hint: Option<&'static str>,
    /// Extra fields (limit, actual, `retry_after_ms`, ...).
    pub details: Value,
}

impl ToolFailure {
    /// Arguments that do not fit the tool's schema. The reason (serde's message, which
    /// repeats a bad field name or value) quotes at most a short prefix of each value.
    pub fn arguments(tool: &str, reason: impl std::fmt::Display) -> Self {
        ToolFailure {
            kind: "invalid_arguments",
            message: format!(
                "invalid arguments for {tool}: {}",
                short_quotes(&reason.to_string())
            ),
            hint: Some("check the argument names and types against the tool's input schema"),
            details: Value::Null,
        }
    }

    /// A namespace this server does not serve (see [`crate::NamespaceAccess`]).
    pub fn namespace_not_allowed(ns: &memory_core::Namespace) -> Self {
        ToolFailure {
            kind: "namespace_not_allowed",
            message: format!(
                "this server does not serve namespace {}",
                memory_core::quote_value(ns.as_str())
            ),
            hint: Some(
                "leave `namespace` out to use the server's own; the operator can allow more with --allow-namespace",
            ),
            details: json!({ "namespace": memory_core::cut_value(ns.as_str()) }),
        }
    }

    /// The JSON the client receives as `structuredContent`.
    pub fn to_json(&self) -> Value {
        let mut error = json!({ "kind": self.kind, "message": self.message, "hint": self.hint });
        if let (Some(map), Value::Object(extra)) = (error.as_object_mut(), &self.details) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        json!({ "error": error })
    }
}

impl From<MemoryError> for ToolFailure {
    fn from(e: MemoryError) -> Self {
        let message = e.to_string();
        let (kind, hint, details) = match &e {
            MemoryError::NotFound { kind, id } => (
                "not_found",
                Some("check the id: use the id a previous call returned, in the same namespace"),
                json!({ "object": kind.to_string(), "id": id }),
            ),
            MemoryError::InvalidInput { field, .. } => (
                "invalid_input",
                Some("fix the named field and call again"),
                json!({ "field": field }),
            ),
            MemoryError::LimitExceeded {
                field,
                limit,
                actual,
            } => (
                "limit_exceeded",
                Some("shorten the named field below the limit; nothing was stored"),
                json!({ "field": field, "limit": limit, "actual": actual }),
            ),
            MemoryError::QuotaExceeded {
                namespace,
                resource,
                limit,
            } => (
                "quota_exceeded",
                Some("the namespace is full; ask the operator to raise the quota"),
                json!({ "namespace": namespace, "resource": resource, "limit": limit }),
            ),
            MemoryError::RateLimited { retry_after } => (
                "rate_limited",
                Some("too many calls; wait retry_after_ms and call again"),
                json!({ "retry_after_ms": duration_ms(*retry_after) }),
            ),
            MemoryError::CircuitOpen { retry_after } => (
                "unavailable",
                Some("storage is unreachable; retry later"),
                json!({ "retry_after_ms": duration_ms(*retry_after) }),
            ),
            MemoryError::Conflict { .. } => (
                "conflict",
                Some("the episode is completed (or completing): start a new episode"),
                Value::Null,
            ),
            MemoryError::Storage {
                transient: true, ..
            } => (
                "unavailable",
                Some("storage is busy or unreachable; retry"),
                Value::Null,
            ),
            MemoryError::Shutdown => (
                "shutdown",
                Some("the server is stopping; call again once it is back"),
                Value::Null,
            ),
            _ => ("internal", None, Value::Null),
        };
        ToolFailure {
            kind,
            message,
            hint,
            details,
        }
    }
}

/// Longest argument error, in characters, after each quoted value was cut.
const MAX_REASON_CHARS: usize = 400;

/// `reason` with every value it quotes between backticks (serde names unknown fields and
/// variants that way) cut to a short prefix, and the whole cut to [`MAX_REASON_CHARS`]
/// (values serde quotes otherwise, such as `invalid type: string "..."`).
fn short_quotes(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_CHARS + 32));
    // Odd pieces lie between a pair of backticks.
    for (i, piece) in reason.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&memory_core::cut_value(piece));
        } else {
            out.push_str(piece);
        }
    }
    memory_core::cut_to(&out, MAX_REASON_CHARS).into_owned()
}

fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        outcome: Choice,
        limit: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Choice {
        Success,
        Failure,
    }

    fn cut_to_test(s: &str) -> String {
        memory_core::cut_to(s, 700).into_owned()
    }

    fn failure_for(args: &Value) -> ToolFailure {
        let e = serde_json::from_value::<Args>(args.clone()).unwrap_err();
        ToolFailure::arguments("complete_episode", e)
    }

    #[test]
    fn a_megabyte_bad_argument_is_quoted_short() {
        let big = "v".repeat(1 << 20);
        for args in [
            json!({ "outcome": big }),
            json!({ "outcome": "success", (big.clone()): 1 }),
            json!({ "outcome": "success", "limit": big }),
        ] {
            let f = failure_for(&args);
            assert!(f.message.len() < 600, "{} bytes", f.message.len());
            assert!(f.message.contains(" bytes)"), "{}", cut_to_test(&f.message));
            assert!(f.to_json().to_string().len() < 1_000);
        }
        // A short bad value is named whole, with what was expected.
        let f = failure_for(&json!({ "outcome": "cooking" }));
        assert!(
            f.message.contains("`cooking`") && f.message.contains("`failure`"),
            "{}",
            f.message
        );
    }

    #[test]
    fn a_megabyte_unknown_id_is_quoted_short() {
        let big = "0".repeat(1 << 20);
        let f = ToolFailure::from(MemoryError::not_found(
            memory_core::ObjectKind::Pattern,
            &big,
        ));
        assert!(f.message.len() < 300, "{} bytes", f.message.len());
        assert!(f.message.contains("(1048576 bytes)"), "{}", f.message);
        // The id is in the message and in the details: both short.
        let answer = f.to_json().to_string();
        assert!(answer.len() < 600, "{} bytes", answer.len());
        assert_eq!(f.kind, "not_found");
    }
}
