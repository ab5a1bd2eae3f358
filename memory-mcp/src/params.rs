//! Tool arguments: their JSON schemas (derived with `schemars`) are what `tools/list`
//! advertises, and their doc comments are the descriptions an agent reads.
//!
//! Every struct denies unknown fields, so a misspelled argument is reported instead of
//! silently ignored.

use memory_core::{Complexity, FeedbackOutcome, TaskType};
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

/// Arguments of `recommend`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendArgs {
    /// The task you are about to do, in your own words (one or two sentences).
    pub task: String,
    /// The kind of task, if known.
    #[schemars(with = "Option<TaskKind>")]
    pub task_type: Option<TaskType>,
    /// The task's context, if known.
    #[serde(default)]
    pub context: ContextArgs,
    /// Most items per list (episodes, patterns, heuristics, pitfalls); default 5.
    pub limit: Option<u32>,
    /// Most tokens the answer may take (about 4 characters each), 100 to 100000: the least
    /// relevant items are left out first, and `truncated` says so. Default: no budget.
    pub max_tokens: Option<u32>,
    /// Namespace (tenant/project/agent); default: the server's.
    pub namespace: Option<String>,
}

/// Arguments of `start_episode`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartEpisodeArgs {
    /// What the task is, in your own words.
    pub task: String,
    /// The kind of task; default `other`.
    #[schemars(with = "Option<TaskKind>")]
    pub task_type: Option<TaskType>,
    /// The task's context.
    #[serde(default)]
    pub context: ContextArgs,
    /// Namespace (tenant/project/agent); default: the server's.
    pub namespace: Option<String>,
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

/// Arguments of `complete_episode`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteEpisodeArgs {
    /// The id `start_episode` returned.
    pub episode_id: String,
    /// How the task ended.
    pub outcome: OutcomeArg,
    /// A short verdict (success, `partial_success`) or the reason (failure, abstained).
    pub verdict: String,
    /// Produced artifacts, e.g. file paths (only with `success`).
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Items done (only with `partial_success`).
    #[serde(default)]
    pub completed: Vec<String>,
    /// Items not done (only with `partial_success`).
    #[serde(default)]
    pub failed: Vec<String>,
    /// Namespace the episode lives in; default: the server's.
    pub namespace: Option<String>,
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

/// Arguments of `record_feedback`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackArgs {
    /// Whether `target_id` names a pattern or a heuristic.
    pub target_kind: TargetKind,
    /// The full id of the pattern or heuristic, as `recommend` returned it.
    pub target_id: String,
    /// The episode in which you applied it.
    pub episode_id: String,
    /// How it went.
    #[schemars(with = "FeedbackArg")]
    pub outcome: FeedbackOutcome,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
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

/// Arguments of `search_episodes`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// Words to look for in task descriptions, reflections and step text.
    pub query: String,
    /// Only this domain.
    pub domain: Option<String>,
    /// Only this language.
    pub language: Option<String>,
    /// Only this kind of task.
    #[schemars(with = "Option<TaskKind>")]
    pub task_type: Option<TaskType>,
    /// Only episodes in this state.
    pub status: Option<StatusFilter>,
    /// Most results; default 10.
    pub limit: Option<u32>,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}

/// Arguments of `show_episode`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowEpisodeArgs {
    /// The episode's id.
    pub episode_id: String,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
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

/// Arguments of `list_learned`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListLearnedArgs {
    /// Which items.
    pub kind: LearnedKind,
    /// Only items that apply to this kind of task.
    #[schemars(with = "Option<TaskKind>")]
    pub task_type: Option<TaskType>,
    /// Only items that apply to this domain.
    pub domain: Option<String>,
    /// Only items that apply to this language.
    pub language: Option<String>,
    /// Also superseded, pruned and merged items.
    #[serde(default)]
    pub include_inactive: bool,
    /// Most results; default 20.
    pub limit: Option<u32>,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}

/// Arguments of `stats` and `health`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceArgs {
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}
