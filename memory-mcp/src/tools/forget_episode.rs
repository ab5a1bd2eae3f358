//! The `forget_episode` tool: its arguments (the input schema), what `tools/list` says of it,
//! and its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `forget_episode`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "forget_episode",
    operation: Some(DELETE_MEMORY),
    read_only: false,
    destructive: true,
    description: "Forget episodes for good: each one, its steps and whatever it taught (pattern, heuristic and lesson counts as if it had never been recorded) are removed; only an audit record of id, time and reason remains. Use it for an episode recorded by mistake or holding data that must not be kept. It cannot be undone.",
    output: r#"{
    "forgotten": {
        "description": "the episodes forgotten (when journaled: the ones asked for)",
        "type": "array"
    },
    "journaled": {
        "description": "the store was unreachable: the erasure runs once it answers",
        "type": "boolean"
    },
    "missing": {
        "description": "ids the namespace does not hold",
        "type": "array"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    },
    "report": {
        "description": "rows removed per kind, and the learned items changed and removed",
        "type": "object"
    }
}"#,
    required: &["namespace", "forgotten", "missing", "journaled", "report"],
};

/// Arguments of `forget_episode`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetEpisodeArgs {
    /// The episodes' ids (1 to 256).
    pub episode_ids: Vec<String>,
    /// Why they are forgotten, kept in the audit record (at most 500 bytes; no content of
    /// the episodes).
    pub reason: Option<String>,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}

impl MemoryServer {
    pub(crate) async fn forget_episode(&self, a: ForgetEpisodeArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        if a.episode_ids.is_empty() {
            return Err(
                MemoryError::invalid("episode_ids", "must name at least one episode").into(),
            );
        }
        if a.episode_ids.len() > memory_core::MAX_FORGET_EPISODES {
            let reason = format!(
                "names {} episodes; at most {} at once",
                a.episode_ids.len(),
                memory_core::MAX_FORGET_EPISODES
            );
            return Err(MemoryError::invalid("episode_ids", reason).into());
        }
        let ids = (a.episode_ids.iter())
            .map(|id| episode_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        let reason = a.reason.as_deref().unwrap_or("forgotten by an agent");
        let report = self.memory().forget_episodes(&ns, &ids, reason).await?;
        Ok(json!({
            "namespace": ns,
            "forgotten": report.forgotten,
            "missing": report.missing,
            "journaled": report.journaled,
            "report": report,
        }))
    }
}
