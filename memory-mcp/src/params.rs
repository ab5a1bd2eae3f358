//! Tool arguments: their JSON schemas (derived with `schemars`) are what `tools/list`
//! advertises, and their doc comments are the descriptions an agent reads.
//!
//! Every struct denies unknown fields, so a misspelled argument is reported instead of
//! silently ignored.

use memory_core::Complexity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// `TaskKind`, `ComplexityArg` and `FeedbackArg` give only their schemas (with the variants'
// docs): the arguments deserialize into the library's enums, whose variants are the same.

/// The kind of task, used to match past experience.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum TaskKind {
    /// Writing new code.
    CodeGeneration,
    /// Finding and fixing a bug.
    Debugging,
    /// Restructuring code without changing behaviour.
    Refactoring,
    /// Writing or fixing tests.
    Testing,
    /// Reading and explaining code or data.
    Analysis,
    /// Writing documentation.
    Documentation,
    /// Anything else.
    Other,
}

/// How hard the task looks.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ComplexityArg {
    /// A few steps.
    Simple,
    /// The default.
    Moderate,
    /// Many steps or unknowns.
    Complex,
}

/// Where a task happens. Give what you know: the more context, the better the match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextArgs {
    /// Problem domain in `snake_case`, e.g. `web_api`, `cli`, `data_pipeline`, `testing`.
    pub domain: Option<String>,
    /// Programming language, e.g. `rust`, `python`.
    pub language: Option<String>,
    /// Framework or main library, e.g. `axum`, `pytest`.
    pub framework: Option<String>,
    /// `simple`, `moderate` (default) or `complex`.
    #[schemars(with = "Option<ComplexityArg>")]
    pub complexity: Option<Complexity>,
    /// Free tags, e.g. `flaky`, `migration`.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ContextArgs {
    /// True when any field was given.
    pub fn is_given(&self) -> bool {
        self.domain.is_some()
            || self.language.is_some()
            || self.framework.is_some()
            || self.complexity.is_some()
            || !self.tags.is_empty()
    }

    /// The library's context.
    pub fn to_context(&self) -> memory_core::TaskContext {
        memory_core::TaskContext {
            domain: self.domain.clone().unwrap_or_default(),
            language: self.language.clone(),
            framework: self.framework.clone(),
            complexity: self.complexity.unwrap_or_default(),
            tags: self.tags.clone(),
        }
    }
}

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The tool call worked; `output` is its (short) output.
    Success,
    /// The tool call failed; `output` is the error message.
    Error,
    /// The tool call timed out.
    Timeout,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeArg {
    /// The task is done.
    Success,
    /// Part of it is done.
    PartialSuccess,
    /// It failed.
    Failure,
    /// You gave up or declined on purpose.
    Abstained,
}

/// What the feedback is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A pattern (`patterns[].item.id` of `recommend`).
    Pattern,
    /// A heuristic (`heuristics[].item.id` of `recommend`).
    Heuristic,
}

/// Did applying the advice help?
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum FeedbackArg {
    /// It helped.
    Helped,
    /// It made no difference.
    NoEffect,
    /// It made things worse.
    Hindered,
}

/// An episode state to filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Not completed yet.
    InProgress,
    /// Completed, any outcome.
    Completed,
    /// Completed successfully.
    Success,
    /// Completed partly.
    PartialSuccess,
    /// Failed.
    Failure,
    /// Abstained.
    Abstained,
}

impl From<StatusFilter> for memory_core::EpisodeStatus {
    fn from(s: StatusFilter) -> Self {
        use memory_core::{EpisodeStatus as S, OutcomeKind as O};
        match s {
            StatusFilter::InProgress => S::InProgress,
            StatusFilter::Completed => S::AnyCompleted,
            StatusFilter::Success => S::Completed(O::Success),
            StatusFilter::PartialSuccess => S::Completed(O::PartialSuccess),
            StatusFilter::Failure => S::Completed(O::Failure),
            StatusFilter::Abstained => S::Completed(O::Abstained),
        }
    }
}

/// Which learned items to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LearnedKind {
    /// Tool sequences, decision points, error recoveries, context statistics.
    Patterns,
    /// Condition -> action rules with evidence.
    Heuristics,
    /// "In context C, tool T failed with E; do D instead."
    Lessons,
}

/// Arguments of `stats` and `health`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceArgs {
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}
