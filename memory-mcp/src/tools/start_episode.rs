//! The `start_episode` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `start_episode`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "start_episode",
    operation: Some(CREATE_MEMORY),
    read_only: false,
    destructive: false,
    description: "Start recording a task you are about to do. Returns `episode_id`; pass it to log_step and complete_episode. Give the context (domain, language, framework) so later tasks can find this one.",
    output: r#"{
    "episode_id": {
        "description": "pass it to log_step and complete_episode",
        "type": "string"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    }
}"#,
    required: &["episode_id", "namespace"],
};

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

impl MemoryServer {
    pub(crate) async fn start_episode(&self, a: StartEpisodeArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let new = NewEpisode::new(
            a.task,
            a.task_type.unwrap_or_default(),
            a.context.to_context(),
        );
        let id = self.memory().start_episode(&ns, new).await?;
        Ok(json!({ "episode_id": id, "namespace": ns }))
    }
}
