//! The `show_episode` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `show_episode`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "show_episode",
    operation: Some(SEARCH_MEMORY),
    read_only: true,
    destructive: false,
    description: "One episode with all its steps, outcome, reward and reflection.",
    output: r#"{
    "episode": {
        "description": "the episode with its steps, outcome, reward and reflection",
        "type": "object"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    }
}"#,
    required: &["namespace", "episode"],
};

/// Arguments of `show_episode`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowEpisodeArgs {
    /// The episode's id.
    pub episode_id: String,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}

impl MemoryServer {
    pub(crate) async fn show_episode(&self, a: ShowEpisodeArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let id = episode_id(&a.episode_id)?;
        let episode = self.memory().get_episode(&ns, id).await?;
        Ok(json!({ "namespace": ns, "episode": episode }))
    }
}
