//! The `health` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `health`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "health",
    operation: None,
    read_only: true,
    destructive: false,
    description: "Check the memory: durable storage (with latency), cache, outbox, circuit breaker, and whether semantic retrieval is on (embedding model loaded) or lexical only.",
    output: r#"{
    "components": {
        "description": "{component, status, detail, ...} for durable, cache, journal, breaker, embedder",
        "type": "array"
    },
    "healthy": {
        "description": "the durable layer answers and its check found nothing wrong",
        "type": "boolean"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    }
}"#,
    required: &["healthy", "components"],
};

impl MemoryServer {
    pub(crate) async fn health(&self, a: NamespaceArgs) -> Result<Value, ToolFailure> {
        self.health_within(a, memory_stack::HEALTH_CHECK_DEADLINE)
            .await
    }

    /// The `health` tool's answer with the database check cut short at `check` (an
    /// unfinished check with no problem found counts as ok).
    pub(crate) async fn health_within(
        &self,
        a: NamespaceArgs,
        check: std::time::Duration,
    ) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        if let Some(stack) = self.stack() {
            let report = stack.health(check).await;
            let mut out = json!(report);
            if let Some(map) = out.as_object_mut() {
                map.insert("namespace".into(), json!(ns));
            }
            return Ok(out);
        }
        let started = Instant::now();
        let durable = self.memory().storage().ping().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let healthy = durable.is_ok();
        let retriever = self.memory().retriever();
        let embedder = match (retriever.embedder(), self.memory().retrieval_degraded()) {
            (Some(e), _) => json!({
                "component": "embedder", "status": "ok",
                "detail": format!("{} ({} dimensions): semantic + lexical retrieval", e.model_id(), e.dimensions()),
            }),
            (None, why) => json!({
                "component": "embedder", "status": "degraded",
                "detail": format!("{}; retrieval is lexical only", why.unwrap_or("no embedding model")),
            }),
        };
        let components = vec![
            json!({
                "component": "durable",
                "status": if healthy { "ok" } else { "down" },
                "latency_ms": latency_ms,
                "error": durable.as_ref().err().map(ToString::to_string),
            }),
            embedder,
        ];
        Ok(json!({ "healthy": healthy, "namespace": ns, "components": components }))
    }
}
