//! The `list_learned` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `list_learned`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "list_learned",
    operation: Some(SEARCH_MEMORY),
    read_only: true,
    destructive: false,
    description: "List what the memory learned, most evidence first: kind `patterns` (tool sequences, decision points, error recoveries), `heuristics` (condition -> action rules) or `lessons` (failures and their remedies), optionally for a task type, domain or language.",
    output: r#"{
    "items": {
        "description": "most evidence first",
        "type": "array"
    },
    "kind": {
        "description": "patterns, heuristics or lessons",
        "type": "string"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    }
}"#,
    required: &["namespace", "kind", "items"],
};

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

impl MemoryServer {
    pub(crate) async fn list_learned(&self, a: ListLearnedArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let limits = self.limits();
        check_label("domain", a.domain.as_deref(), limits)?;
        check_label("language", a.language.as_deref(), limits)?;
        let kind = a.kind;
        let query = LearnedQuery {
            task_type: a.task_type,
            domain: a.domain.map(|d| d.trim().to_lowercase()),
            language: a.language.map(|l| l.trim().to_lowercase()),
            kind: None,
            include_inactive: a.include_inactive,
            limit: self.limit("limit", a.limit, 20)?,
            offset: 0,
        };
        let m = self.memory();
        let now = m.clock().now();
        let half_life = m.config().learning.half_life_days;
        let items: Vec<Value> = match a.kind {
            LearnedKind::Patterns => m
                .patterns(&ns, &query)
                .await?
                .iter()
                .map(|p| {
                    json!({
                        "description": p.describe(),
                        "confidence": p.confidence(now, half_life),
                        "success_rate": p.success_rate(),
                        "pattern": p,
                    })
                })
                .collect(),
            LearnedKind::Heuristics => m
                .heuristics(&ns, &query)
                .await?
                .iter()
                .map(|h| {
                    json!({
                        "description": h.describe(),
                        "confidence": h.confidence(now, half_life),
                        "heuristic": h,
                    })
                })
                .collect(),
            LearnedKind::Lessons => m
                .lessons(&ns, &query)
                .await?
                .iter()
                .map(|l| json!({ "text": l.text(), "lesson": l }))
                .collect(),
        };
        Ok(json!({ "namespace": ns, "kind": kind, "items": items }))
    }
}
