//! The `recommend` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `recommend`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "recommend",
    operation: Some(SEARCH_MEMORY),
    read_only: true,
    destructive: false,
    description: "Ask before you start a task: what does the memory know about a task like this? Returns `episodes` (similar past episodes with their outcome), `patterns` and `heuristics` (learned advice; pass their `item.id` to record_feedback), `pitfalls` (past failures in this context and what fixed them), `playbook` (suggested ordered steps), `estimate` (steps, duration, success chance) and `strong_match` (false: nothing close in memory, treat the advice as weak). Every item has a `why`.",
    output: r#"{
    "approx_tokens": {
        "description": "the answer's size in tokens (about 4 characters each)",
        "type": "integer"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    },
    "recommendation": {
        "description": "episodes, patterns, heuristics, pitfalls, playbook, estimate, confidence, strong_match, degraded, advice_basis, playbook_pattern (the id to rate with record_feedback after using the playbook), playbook_attempt (set when no similar task was finished yet: the failed episode whose working steps the playbook is; go on from where it stopped)",
        "type": "object"
    },
    "truncated": {
        "description": "true when items were left out to fit max_tokens",
        "type": "boolean"
    }
}"#,
    required: &["namespace", "recommendation", "truncated", "approx_tokens"],
};

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

/// Smallest and largest `max_tokens` of `recommend`.
const MIN_TOKENS: u32 = 100;
const MAX_TOKENS: u32 = 100_000;

/// Tokens of a JSON value, estimated as one per four bytes (what English text and JSON
/// average with common tokenizers).
fn approx_tokens(v: &impl Serialize) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len().div_ceil(4))
}

/// Leaves out the least relevant items (the tail of whichever list is largest) until the
/// recommendation fits `budget` tokens; the playbook, estimate and flags always stay.
/// Returns whether anything was left out and the size in tokens.
fn fit_to_budget(
    rec: &mut memory_core::retrieval::recommend::Recommendation,
    budget: Option<usize>,
) -> (bool, usize) {
    let mut size = approx_tokens(rec);
    let Some(budget) = budget else {
        return (false, size);
    };
    let mut truncated = false;
    while size > budget {
        let tails = [
            rec.episodes.last().map_or(0, approx_tokens),
            rec.patterns.last().map_or(0, approx_tokens),
            rec.heuristics.last().map_or(0, approx_tokens),
            rec.pitfalls.last().map_or(0, approx_tokens),
        ];
        let (largest, cut) = tails
            .iter()
            .enumerate()
            .max_by_key(|(_, n)| **n)
            .map_or((0, 0), |(i, n)| (i, *n));
        if cut == 0 {
            break;
        }
        match largest {
            0 => drop(rec.episodes.pop()),
            1 => drop(rec.patterns.pop()),
            2 => drop(rec.heuristics.pop()),
            _ => drop(rec.pitfalls.pop()),
        }
        truncated = true;
        size = approx_tokens(rec);
    }
    (truncated, size)
}

impl MemoryServer {
    pub(crate) async fn recommend(&self, a: RecommendArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let limit = self.limit("limit", a.limit, 5)?;
        let mut req = RecommendRequest::new(a.task).with_limit(limit);
        if a.context.is_given() || a.task_type.is_some() {
            req = req.with_context(a.task_type, a.context.to_context());
        }
        let budget = match a.max_tokens {
            None => None,
            Some(n) if (MIN_TOKENS..=MAX_TOKENS).contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(MemoryError::invalid(
                    "max_tokens",
                    format!("must be between {MIN_TOKENS} and {MAX_TOKENS}, got {n}"),
                )
                .into());
            }
        };
        // Completed episodes are embedded in the background; catch up so they count now (a
        // request over the limits is refused first, so a bad call costs nothing).
        let mut rec = self
            .memory()
            .recommend_caught_up(&ns, &req, &|_| {})
            .await?;
        let (truncated, approx_tokens) = fit_to_budget(&mut rec, budget);
        Ok(json!({
            "namespace": ns,
            "recommendation": rec,
            "truncated": truncated,
            "approx_tokens": approx_tokens,
        }))
    }
}
