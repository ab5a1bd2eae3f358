//! The tool catalogue as `tools/list` shows it: each tool's name, description, whether it
//! writes, and its output schema (what `structuredContent` holds on success; top-level fields
//! typed and required, nested objects the library's types), from the tool modules
//! ([`crate::tools`]); input schemas come from their argument types. A server is built here,
//! with the catalogue.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use memory_core::{Namespace, SelfLearningMemory};

use crate::error::{Error, Result};
use crate::server::{McpConfig, MemoryServer};
use crate::tools::{ALL, INSTRUCTIONS, input_schema};

impl MemoryServer {
    /// A server over `memory`; tool calls without a `namespace` argument use
    /// `default_namespace`.
    pub fn new(
        memory: Arc<SelfLearningMemory>,
        default_namespace: Namespace,
        config: McpConfig,
    ) -> Result<Self> {
        let catalogue = (tools()?, INSTRUCTIONS.to_owned());
        Ok(MemoryServer::serving(
            memory,
            default_namespace,
            config,
            catalogue,
        ))
    }
}

/// The tools, in the order `tools/list` gives them.
pub(crate) fn tools() -> Result<Vec<Tool>> {
    ALL.iter()
        .map(|spec| {
            let annotations = ToolAnnotations::new()
                .read_only(spec.read_only)
                .destructive(spec.destructive)
                .open_world(false);
            let properties: JsonObject =
                serde_json::from_str(spec.output).map_err(|e| Error::Schema {
                    tool: spec.name,
                    reason: format!("output schema: {e}"),
                })?;
            let mut output = JsonObject::new();
            output.insert("type".into(), json!("object"));
            output.insert("properties".into(), Value::Object(properties));
            output.insert("required".into(), json!(spec.required));
            Ok(
                Tool::new(spec.name, spec.description, input_schema(spec.name)?)
                    .with_raw_output_schema(Arc::new(output))
                    .annotate(annotations),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_its_schemas_and_a_unique_name() {
        let tools = tools().unwrap_or_default();
        assert_eq!(tools.len(), ALL.len());
        let names: std::collections::BTreeSet<&str> = tools.iter().map(|t| &*t.name).collect();
        assert_eq!(names.len(), tools.len(), "names are unique");
        for t in &tools {
            let output = t.output_schema.as_ref().map_or(0, |o| o.len());
            assert!(output > 0, "{} has an output schema", t.name);
        }
    }
}
