//! The `log_step` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `log_step`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "log_step",
    operation: Some(UPDATE_MEMORY),
    read_only: false,
    destructive: false,
    description: "Record one step of an episode: a tool call you made and how it went (success, error or timeout, with the output or error message). Log failed steps too: they are what the memory learns pitfalls from. Fails with not_found for an unknown episode and conflict for a completed one.",
    output: r#"{
    "episode_id": {
        "description": "the episode",
        "type": "string"
    },
    "logged": {
        "description": "the step is stored",
        "type": "boolean"
    },
    "status": {
        "description": "success, error or timeout",
        "type": "string"
    }
}"#,
    required: &["logged", "episode_id", "status"],
};

/// Arguments of `log_step`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogStepArgs {
    /// The id `start_episode` returned.
    pub episode_id: String,
    /// The tool you used, e.g. `cargo`, `edit_file`, `shell`, `pytest`.
    pub tool: String,
    /// What you did with it, e.g. `cargo test -p api`.
    pub action: String,
    /// How it went.
    pub status: StepStatus,
    /// Its output on success, or the error message (keep the telling part, not pages).
    #[serde(default)]
    pub output: String,
    /// The tool's parameters as a JSON value, if useful.
    pub parameters: Option<serde_json::Value>,
    /// How long the step took, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Tokens the step used.
    pub tokens: Option<u64>,
    /// Namespace the episode lives in; default: the server's.
    pub namespace: Option<String>,
}

impl MemoryServer {
    pub(crate) async fn log_step(&self, a: LogStepArgs) -> Result<Value, ToolFailure> {
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
}
