//! The MCP tools, one module each: its arguments (the input schema), what `tools/list` says
//! of it (name, description, whether it writes, the output's schema) and its handler. This
//! file lists them once: the catalogue's order, the input schemas and the dispatch of a call
//! all come from that list.

use std::sync::Arc;

use rmcp::handler::server::common::schema_for_input;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde_json::Value;

use crate::error::{Error, Result, ToolFailure};
use crate::server::{MemoryServer, parse};

mod complete_episode;
mod correct_learned;
mod forget_episode;
mod health;
mod list_learned;
mod log_step;
mod recommend;
mod record_feedback;
mod search_episodes;
mod show_episode;
mod start_episode;
mod stats;

use complete_episode::CompleteEpisodeArgs;
use correct_learned::CorrectArgs;
use forget_episode::ForgetEpisodeArgs;
use list_learned::ListLearnedArgs;
use log_step::LogStepArgs;
use recommend::RecommendArgs;
use record_feedback::FeedbackArgs;
use search_episodes::SearchArgs;
use show_episode::ShowEpisodeArgs;
use start_episode::StartEpisodeArgs;

/// What every tool module uses.
mod prelude {
    pub(crate) use memory_core::retrieval::recommend::RecommendRequest;
    pub(crate) use std::time::Instant;

    pub(crate) use memory_core::telemetry::{
        CREATE_MEMORY, DELETE_MEMORY, SEARCH_MEMORY, UPDATE_MEMORY, UPSERT_MEMORY,
    };
    pub(crate) use memory_core::{
        EpisodeFilter, Error as MemoryError, FeedbackOutcome, FeedbackTarget, HeuristicId,
        LearnedId, LearnedQuery, NewEpisode, Outcome, PatternId, StepInput, StepResult, TaskType,
        TextQuery,
    };
    pub(crate) use schemars::JsonSchema;
    pub(crate) use serde::{Deserialize, Serialize};
    pub(crate) use serde_json::{Value, json};

    pub(crate) use super::ToolText;
    pub(crate) use crate::error::ToolFailure;
    pub(crate) use crate::params::*;
    pub(crate) use crate::server::{MemoryServer, check_label, check_len, episode_id};
}

/// What the server tells a client when a session starts.
pub(crate) const INSTRUCTIONS: &str = "An episodic memory that learns from your past tasks. When: call `recommend` once before each new task, with the task in a sentence and its context (domain, language, framework); it returns similar past episodes, patterns, heuristics, pitfalls, a playbook and an estimate, each with `why` (pass `max_tokens` to keep the answer short; `strong_match: false` means nothing close is known). Then `start_episode`, and call `log_step` after every tool call you make, failed ones included (status error, with the error message): failures are what pitfalls are learned from. Finish with `complete_episode` and the outcome; the memory scores the episode and learns from it. If you followed a pattern or heuristic from `recommend`, call `record_feedback` with its id and your episode id. Errors: a failed call is a tool result with `isError` and `error.kind`: `invalid_arguments`, `invalid_input` and `limit_exceeded` mean fix the named field and call again; `not_found` means check the id; `conflict` means the episode is completed (start a new one); `rate_limited` means wait `error.retry_after_ms` milliseconds before the next call; `unavailable` means storage is busy or down (the memory keeps what it acknowledged: retry after a few seconds); `shutdown` means the server is stopping; `namespace_not_allowed` means leave `namespace` out (the server serves its own).";

/// What `tools/list` shows of one tool, besides its input schema.
#[derive(Debug)]
pub(crate) struct ToolText {
    /// The tool's name.
    pub name: &'static str,
    /// The memory operation it performs, in OpenTelemetry's `gen_ai` terms
    /// ([`memory_core::telemetry`]); `None` for a tool that reads no memory records.
    pub operation: Option<&'static str>,
    /// Whether it only reads.
    pub read_only: bool,
    /// Whether it removes what cannot be had back (MCP's `destructiveHint`).
    pub destructive: bool,
    /// What it does and when to call it.
    pub description: &'static str,
    /// The output's top-level properties, as a JSON object of JSON schemas.
    pub output: &'static str,
    /// Which of them every answer has.
    pub required: &'static [&'static str],
}

/// The memory operation of an MCP tool, in the terms of [`memory_core::telemetry`]; `None` for
/// the tools that read no memory records (`stats`, `health`).
pub(crate) fn memory_operation(tool: &str) -> Option<&'static str> {
    ALL.iter()
        .find(|t| t.name == tool)
        .and_then(|t| t.operation)
}

impl MemoryServer {
    /// The memory operation the tool `name` performs ([`memory_operation`]), for its metrics.
    pub(crate) fn tool_operation(name: &str) -> Option<&'static str> {
        memory_operation(name)
    }
}

/// The tools: each module's text and argument type, and the handler a call runs, once.
macro_rules! tools {
    ($($module:ident: $Args:ty => $handler:ident),* $(,)?) => {
        /// Every tool's text, in the order `tools/list` shows them.
        pub(crate) const ALL: &[&ToolText] = &[$(&$module::TOOL),*];

        /// The input schema of the tool `name`.
        pub(crate) fn input_schema(name: &'static str) -> Result<Arc<JsonObject>> {
            fn of<T: JsonSchema + 'static>(tool: &'static str) -> Result<Arc<JsonObject>> {
                schema_for_input::<T>().map_err(|reason| Error::Schema { tool, reason })
            }
            $(if name == $module::TOOL.name {
                return of::<$Args>(name);
            })*
            Err(Error::Schema {
                tool: name,
                reason: "no tool of that name".into(),
            })
        }

        impl MemoryServer {
            /// Runs the tool `name` (one of [`ALL`], which the caller checked).
            pub(crate) async fn dispatch(
                &self,
                name: &str,
                args: Option<JsonObject>,
            ) -> std::result::Result<Value, ToolFailure> {
                $(if name == $module::TOOL.name {
                    return self.$handler(parse(name, args)?).await;
                })*
                Err(ToolFailure::from(memory_core::Error::invalid(
                    "name",
                    "no tool of that name",
                )))
            }
        }
    };
}

tools! {
    recommend: RecommendArgs => recommend,
    start_episode: StartEpisodeArgs => start_episode,
    log_step: LogStepArgs => log_step,
    complete_episode: CompleteEpisodeArgs => complete_episode,
    record_feedback: FeedbackArgs => record_feedback,
    search_episodes: SearchArgs => search_episodes,
    show_episode: ShowEpisodeArgs => show_episode,
    forget_episode: ForgetEpisodeArgs => forget_episode,
    list_learned: ListLearnedArgs => list_learned,
    correct_learned: CorrectArgs => correct_learned,
    stats: crate::params::NamespaceArgs => stats,
    health: crate::params::NamespaceArgs => health,
}
