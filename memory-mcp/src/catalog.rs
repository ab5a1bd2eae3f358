//! The tool catalogue as `tools/list` shows it: each tool's name, description, whether it
//! writes, and its output schema (what `structuredContent` holds on success; top-level fields
//! typed and required, nested objects the library's types). The text is data, `tools.json`,
//! embedded at build time; input schemas come from the argument types of `params.rs`.

use std::sync::Arc;

use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The catalogue's text.
const TOOLS_JSON: &str = include_str!("tools.json");

/// The server's instructions and its tools, in the order `tools/list` gives them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Catalog<'a> {
    /// What the server tells a client when a session starts.
    pub(crate) instructions: String,
    #[serde(borrow)]
    tools: Vec<ToolSpec<'a>>,
}

/// One tool of `tools.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSpec<'a> {
    name: &'a str,
    read_only: bool,
    description: String,
    /// The output's top-level properties.
    output: JsonObject,
    /// Which of them every answer has.
    required: Vec<String>,
}

impl Catalog<'static> {
    /// Reads the embedded catalogue.
    pub(crate) fn load() -> Result<Self> {
        serde_json::from_str(TOOLS_JSON).map_err(|e| Error::Schema {
            tool: "tools.json",
            reason: e.to_string(),
        })
    }

    /// The tools, each with the input schema `input_schema` gives for its name.
    pub(crate) fn tools(
        &self,
        input_schema: impl Fn(&'static str) -> Result<Arc<JsonObject>>,
    ) -> Result<Vec<Tool>> {
        self.tools
            .iter()
            .map(|spec| {
                let annotations = ToolAnnotations::new()
                    .read_only(spec.read_only)
                    .destructive(false)
                    .open_world(false);
                let mut output = JsonObject::new();
                output.insert("type".into(), json!("object"));
                output.insert("properties".into(), Value::Object(spec.output.clone()));
                output.insert("required".into(), json!(spec.required));
                Ok(Tool::new(
                    spec.name,
                    spec.description.clone(),
                    input_schema(spec.name)?,
                )
                .with_raw_output_schema(Arc::new(output))
                .annotate(annotations))
            })
            .collect()
    }
}
