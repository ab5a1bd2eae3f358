//! The `correct_learned` tool: its arguments (the input schema), what `tools/list` says of it,
//! and its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `correct_learned`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "correct_learned",
    operation: Some(UPSERT_MEMORY),
    read_only: false,
    destructive: false,
    description: "Correct what the memory learned, as an operator: retract a pattern, heuristic or lesson that is wrong (never recommended again; kept for the record, and the same evidence cannot teach it again), pin the one a team agreed on (shown first in recommendations, labelled pinned, never merged or pruned), or unpin it. Give the reason.",
    output: r#"{
    "action": {
        "description": "retract, pin or unpin",
        "type": "string"
    },
    "item": {
        "description": "the item as stored now, with its status and pin",
        "type": "object"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    }
}"#,
    required: &["namespace", "action", "item"],
};

/// Which kind of learned item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A pattern.
    Pattern,
    /// A heuristic.
    Heuristic,
    /// A failure lesson.
    Lesson,
}

/// What to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// Never recommend it again.
    Retract,
    /// Show it first, labelled pinned.
    Pin,
    /// Remove its pin.
    Unpin,
}

/// Arguments of `correct_learned`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectArgs {
    /// The kind of the item.
    pub kind: ItemKind,
    /// Its full id, as `recommend` or `list_learned` returned it.
    pub id: String,
    /// What to do.
    pub action: Correction,
    /// Why (required to retract or pin; at most 500 bytes).
    pub reason: Option<String>,
    /// Namespace; default: the server's.
    pub namespace: Option<String>,
}

impl MemoryServer {
    pub(crate) async fn correct_learned(&self, a: CorrectArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let id = a.id.trim().to_owned();
        if id.is_empty() {
            return Err(MemoryError::invalid("id", "must not be empty").into());
        }
        let id = match a.kind {
            ItemKind::Pattern => LearnedId::Pattern(PatternId(id)),
            ItemKind::Heuristic => LearnedId::Heuristic(HeuristicId(id)),
            ItemKind::Lesson => LearnedId::Lesson(memory_core::LessonId(id)),
        };
        let reason = || match a.reason.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() => Ok(r),
            _ => Err(MemoryError::invalid(
                "reason",
                "say why (it is kept with the item)",
            )),
        };
        let m = self.memory();
        let (item, action) = match a.action {
            Correction::Retract => (m.retract(&ns, &id, reason()?).await?, "retract"),
            Correction::Pin => (m.pin(&ns, &id, reason()?).await?, "pin"),
            Correction::Unpin => (m.unpin(&ns, &id).await?, "unpin"),
        };
        Ok(json!({ "namespace": ns, "action": action, "item": item }))
    }
}
