//! The steps of an episode: what a caller gives ([`StepInput`], [`StepResult`]), what is
//! stored ([`ExecutionStep`]), and how stores number appended steps ([`steps_to_append`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StepResult {
    /// The tool call succeeded.
    Success {
        /// What the tool returned (possibly truncated by the caller).
        output: String,
    },
    /// The tool call failed.
    Error {
        /// The error message.
        message: String,
    },
    /// The tool call timed out.
    Timeout {
        /// Optional detail.
        #[serde(default)]
        message: String,
    },
}

impl StepResult {
    /// True for [`StepResult::Success`].
    pub fn is_success(&self) -> bool {
        matches!(self, StepResult::Success { .. })
    }

    /// The output or message text.
    pub fn text(&self) -> &str {
        match self {
            StepResult::Success { output } => output,
            StepResult::Error { message } | StepResult::Timeout { message } => message,
        }
    }

    /// `success`, `error` or `timeout`.
    pub fn status(&self) -> &'static str {
        match self {
            StepResult::Success { .. } => "success",
            StepResult::Error { .. } => "error",
            StepResult::Timeout { .. } => "timeout",
        }
    }
}

/// One tool call of an episode, as given by the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInput {
    /// Tool name, e.g. `shell` or `edit_file`.
    pub tool: String,
    /// What the agent did with it, in words.
    pub action: String,
    /// Tool parameters (a JSON value; `null` when none).
    #[serde(default, with = "crate::serde_adapters::json_value")]
    pub parameters: serde_json::Value,
    /// The result.
    pub result: StepResult,
    /// Wall time of the call in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Tokens the call used, if known.
    #[serde(default)]
    pub tokens: Option<u64>,
}

impl StepInput {
    /// A successful step.
    pub fn ok(
        tool: impl Into<String>,
        action: impl Into<String>,
        output: impl Into<String>,
    ) -> Self {
        StepInput {
            tool: tool.into(),
            action: action.into(),
            parameters: serde_json::Value::Null,
            result: StepResult::Success {
                output: output.into(),
            },
            latency_ms: 0,
            tokens: None,
        }
    }

    /// A failed step.
    pub fn error(
        tool: impl Into<String>,
        action: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StepInput {
            result: StepResult::Error {
                message: message.into(),
            },
            ..StepInput::ok(tool, action, "")
        }
    }

    /// A timed-out step.
    pub fn timeout(tool: impl Into<String>, action: impl Into<String>) -> Self {
        StepInput {
            result: StepResult::Timeout {
                message: String::new(),
            },
            ..StepInput::ok(tool, action, "")
        }
    }

    /// Sets the parameters.
    #[must_use]
    pub fn with_parameters(mut self, parameters: serde_json::Value) -> Self {
        self.parameters = parameters;
        self
    }

    /// Sets the latency.
    #[must_use]
    pub fn with_latency_ms(mut self, latency_ms: u64) -> Self {
        self.latency_ms = latency_ms;
        self
    }

    /// Sets the token count.
    #[must_use]
    pub fn with_tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

/// A stored step: the agent's input plus its position, time and identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionStep {
    /// 1-based position in the episode; unique per episode. Assigned by the store when the
    /// step is written (after the highest number it holds), so two writers never collide;
    /// until then it is this process's provisional number.
    pub step_number: u32,
    /// The step's identity, drawn at random when it is logged ([`ExecutionStep::new_key`]):
    /// a write that is retried or replayed carries the same key, and the store keeps the step
    /// once. `0` marks a step journaled by an earlier version, which keeps its number.
    #[serde(default)]
    pub key: u64,
    /// When the step was logged.
    pub timestamp: DateTime<Utc>,
    /// What the agent reported.
    #[serde(flatten)]
    pub input: StepInput,
}

impl ExecutionStep {
    /// A fresh step key: 63 random bits, never 0 (stores keep them as signed integers).
    /// From the thread's generator (seeded from the OS), not a system call per step.
    pub fn new_key() -> u64 {
        (rand::random::<u64>() >> 1).max(1)
    }

    /// The tool name.
    pub fn tool(&self) -> &str {
        &self.input.tool
    }

    /// The result.
    pub fn result(&self) -> &StepResult {
        &self.input.result
    }

    /// Approximate stored size in bytes, for the whole-episode limit.
    pub fn approx_size(&self) -> usize {
        self.input.tool.len()
            + self.input.action.len()
            + json_len(&self.input.parameters)
            + self.input.result.text().len()
            + 48
    }
}

/// The steps of `incoming` that `existing` (an episode's stored steps) does not hold yet,
/// numbered the way every store numbers them:
///
/// - a step with a key gets the next number after the highest one held, in the order given;
///   a key already held (or given twice) is a replay and is skipped;
/// - a step without a key (`0`: journaled by an earlier version) keeps its number and is
///   skipped when that number is held.
pub fn steps_to_append(
    existing: &[ExecutionStep],
    incoming: &[ExecutionStep],
) -> Vec<ExecutionStep> {
    let mut keys: std::collections::HashSet<u64> =
        existing.iter().map(|s| s.key).filter(|&k| k != 0).collect();
    let mut numbers: std::collections::HashSet<u32> =
        existing.iter().map(|s| s.step_number).collect();
    let mut next = existing.iter().map(|s| s.step_number).max().unwrap_or(0);
    let mut out = Vec::new();
    for s in incoming.iter().filter(|s| s.key == 0) {
        if numbers.insert(s.step_number) {
            next = next.max(s.step_number);
            out.push(s.clone());
        }
    }
    for s in incoming.iter().filter(|s| s.key != 0) {
        if keys.insert(s.key) {
            next += 1;
            numbers.insert(next);
            let mut stored = s.clone();
            stored.step_number = next;
            out.push(stored);
        }
    }
    out
}

pub(crate) fn json_len(v: &serde_json::Value) -> usize {
    if v.is_null() {
        0
    } else {
        serde_json::to_string(v).map_or(0, |s| s.len())
    }
}
