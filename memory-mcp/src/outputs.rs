//! The output schema of every tool (what `structuredContent` holds on success), as
//! `tools/list` shows it. Top-level fields are typed and required; nested objects are the
//! library's types (their fields are documented in the tool descriptions and the crate docs).

use std::sync::Arc;

use rmcp::model::JsonObject;
use serde_json::{Value, json};

fn object(properties: &Value, required: &[&str]) -> Arc<JsonObject> {
    let schema = json!({
        "type": "object",
        "properties": properties,
        "required": required,
    });
    match schema {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(JsonObject::new()),
    }
}

const STRING: &str = "string";

fn t(kind: &str, description: &str) -> Value {
    json!({ "type": kind, "description": description })
}

/// The output schema of `tool`.
pub(crate) fn output_schema(tool: &str) -> Arc<JsonObject> {
    let ns = t(STRING, "the namespace the call worked in");
    match tool {
        "recommend" => object(
            &json!({
                "namespace": ns,
                "recommendation": t("object", "episodes, patterns, heuristics, pitfalls, playbook, estimate, confidence, strong_match, degraded, advice_basis, playbook_pattern (the id to rate with record_feedback after using the playbook)"),
                "truncated": t("boolean", "true when items were left out to fit max_tokens"),
                "approx_tokens": t("integer", "the answer's size in tokens (about 4 characters each)"),
            }),
            &["namespace", "recommendation", "truncated", "approx_tokens"],
        ),
        "start_episode" => object(
            &json!({ "episode_id": t(STRING, "pass it to log_step and complete_episode"), "namespace": ns }),
            &["episode_id", "namespace"],
        ),
        "log_step" => object(
            &json!({
                "logged": t("boolean", "the step is stored"),
                "episode_id": t(STRING, "the episode"),
                "status": t(STRING, "success, error or timeout"),
            }),
            &["logged", "episode_id", "status"],
        ),
        "complete_episode" => object(
            &json!({
                "episode_id": t(STRING, "the episode"),
                "namespace": ns,
                "report": t("object", "reward (with components), reflection, patterns, heuristics and lessons learned"),
            }),
            &["episode_id", "namespace", "report"],
        ),
        "record_feedback" => object(
            &json!({
                "recorded": t("boolean", "the verdict is stored"),
                "target": t("object", "kind (pattern or heuristic) and id"),
                "episode_id": t(STRING, "the episode"),
                "outcome": t(STRING, "helped, no_effect or hindered"),
            }),
            &["recorded", "target", "episode_id", "outcome"],
        ),
        "search_episodes" => object(
            &json!({ "namespace": ns, "results": t("array", "{score, episode} best first") }),
            &["namespace", "results"],
        ),
        "show_episode" => object(
            &json!({ "namespace": ns, "episode": t("object", "the episode with its steps, outcome, reward and reflection") }),
            &["namespace", "episode"],
        ),
        "list_learned" => object(
            &json!({
                "namespace": ns,
                "kind": t(STRING, "patterns, heuristics or lessons"),
                "items": t("array", "most evidence first"),
            }),
            &["namespace", "kind", "items"],
        ),
        "stats" => object(
            &json!({
                "namespace": ns,
                "counts": t("object", "episodes, completed, successes, steps, patterns, heuristics, lessons, feedback"),
                "success_rate": t("number", "successes / completed"),
            }),
            &["namespace", "counts", "success_rate"],
        ),
        _ => object(
            &json!({
                "healthy": t("boolean", "the durable layer answers and its check found nothing wrong"),
                "components": t("array", "{component, status, detail, ...} for durable, cache, journal, breaker, embedder"),
                "namespace": ns,
            }),
            &["healthy", "components"],
        ),
    }
}
