//! The `complete_episode` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `complete_episode`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "complete_episode",
    operation: Some(UPDATE_MEMORY),
    read_only: false,
    destructive: false,
    description: "Finish an episode with its outcome (success, partial_success, failure, abstained) and a short verdict. Returns the reward (0..1, with its components), a reflection (what worked, what to improve) and the patterns, heuristics and lessons learned.",
    output: r#"{
    "episode_id": {
        "description": "the episode",
        "type": "string"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    },
    "report": {
        "description": "reward (with components), reflection, patterns, heuristics and lessons learned",
        "type": "object"
    }
}"#,
    required: &["episode_id", "namespace", "report"],
};

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

impl MemoryServer {
    pub(crate) async fn complete_episode(
        &self,
        a: CompleteEpisodeArgs,
    ) -> Result<Value, ToolFailure> {
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
}
