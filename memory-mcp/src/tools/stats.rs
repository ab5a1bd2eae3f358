//! The `stats` tool: its arguments (the input schema), what `tools/list` says of it, and
//! its handler, in one place.

use super::prelude::*;

/// What `tools/list` shows of `stats`.
pub(crate) const TOOL: ToolText = ToolText {
    name: "stats",
    operation: None,
    read_only: true,
    destructive: false,
    description: "Counts of the namespace: episodes (completed, successful), steps, patterns, heuristics, lessons, feedback; cache and outbox state.",
    output: r#"{
    "counts": {
        "description": "episodes, completed, successes, steps, patterns, heuristics, lessons, feedback",
        "type": "object"
    },
    "namespace": {
        "description": "the namespace the call worked in",
        "type": "string"
    },
    "success_rate": {
        "description": "successes / completed",
        "type": "number"
    }
}"#,
    required: &["namespace", "counts", "success_rate"],
};

impl MemoryServer {
    pub(crate) async fn stats(&self, a: NamespaceArgs) -> Result<Value, ToolFailure> {
        let ns = self.namespace(a.namespace.as_deref())?;
        let st = self.memory().stats(&ns).await?;
        let success_rate = if st.completed == 0 {
            0.0
        } else {
            st.successes as f64 / st.completed as f64
        };
        let mut out = json!({ "namespace": ns, "counts": st, "success_rate": success_rate });
        if let (Some(t), Some(map)) = (self.tiered(), out.as_object_mut()) {
            let s = t.status();
            map.insert("cache".into(), json!(s.cache));
            map.insert("outbox_len".into(), json!(s.outbox_len));
            map.insert("breaker".into(), json!(s.breaker));
        }
        Ok(out)
    }
}
