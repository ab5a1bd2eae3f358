//! The `record_feedback` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `record_feedback`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "record_feedback",
    operation: Some(UPSERT_MEMORY),
    read_only: false,
    destructive: false,
    description: "Report whether a pattern or heuristic from recommend helped in an episode (helped, no_effect, hindered). Good advice then ranks higher and bad advice sinks. Recording again for the same item and episode replaces the verdict.",
    output: r#"{
    "episode_id": {
        "description": "the episode",
        "type": "string"
    },
    "outcome": {
        "description": "helped, no_effect or hindered",
        "type": "string"
    },
    "recorded": {
        "description": "the verdict is stored",
        "type": "boolean"
    },
    "target": {
        "description": "kind (pattern or heuristic) and id",
        "type": "object"
    }
}"#,
    required: &["recorded", "target", "episode_id", "outcome"],
};

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

impl MemoryServer {
    pub(crate) async fn record_feedback(&self, a: FeedbackArgs) -> Result<Value, ToolFailure> {
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
}
