//! The `search_episodes` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `search_episodes`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "search_episodes",
    operation: Some(SEARCH_MEMORY),
    read_only: true,
    destructive: false,
    description: "Full-text search over past episodes (task descriptions, reflections, step text), with optional filters. Returns summaries with scores and the step each one matched; use show_episode for all steps.",
    output: r#"{
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    },
    "results": {
        "description": "{score, episode, matched_step: {step_number, excerpt} or null} best first",
        "type": "array"
    }
}"#,
    required: &["namespace", "results"],
};

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

impl MemoryServer {
    pub(crate) async fn search_episodes(&self, a: SearchArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let limits = self.limits();
        if a.query.trim().is_empty() {
            return Err(MemoryError::invalid("query", "must not be empty").into());
        }
        check_len("query", &a.query, limits.max_description_bytes)?;
        check_label("domain", a.domain.as_deref(), limits)?;
        check_label("language", a.language.as_deref(), limits)?;
        let limit = self.limit("limit", a.limit, 10)?;
        let query = TextQuery {
            text: a.query,
            filter: EpisodeFilter {
                task_type: a.task_type,
                domain: a.domain.map(|d| d.trim().to_lowercase()),
                language: a.language.map(|l| l.trim().to_lowercase()),
                status: a.status.map(Into::into),
                ..EpisodeFilter::default()
            },
            limit,
        };
        let hits = self.memory().search_episodes(&ns, &query).await?;
        let mut results: Vec<Value> = Vec::with_capacity(hits.len());
        for h in &hits {
            // The step the query matched (one read per hit with steps; one deleted since the
            // search has none).
            let step = if h.summary.step_count == 0 {
                None
            } else {
                match self
                    .memory()
                    .matched_step(&ns, h.summary.id, &query.text)
                    .await
                {
                    Ok(step) => step,
                    Err(MemoryError::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            results.push(json!({ "score": h.score, "episode": h.summary, "matched_step": step }));
        }
        Ok(json!({ "namespace": ns, "results": results }))
    }
}
