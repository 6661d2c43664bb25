//! The request body sent to Anthropic Messages: its wire structs and the settings that go
//! with the mapped history (module doc, "Settings" and "Streaming"). How the history
//! becomes `system` and `messages` lives in `history`; sending it does not belong here.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::DEFAULT_MAX_TOKENS;
use super::history::{is_blank, map_history};
use crate::message::Tool;
use crate::provider::ChatRequest;

/// Anthropic's `temperature` range ends at 1; sessions may ask up to 2, as OpenAI allows.
const MAX_TEMPERATURE: f64 = 1.0;

/// The request body; borrows from the history wherever the text is sent unchanged.
#[derive(Debug, Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    /// Asks for server-sent events; left out when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

impl<'a> WireRequest<'a> {
    pub(super) fn new(request: &ChatRequest<'a>) -> Self {
        let params = request.params;
        let (system, messages) = map_history(request.messages());
        let temperature = params.temperature.map(|t| t.clamp(0.0, MAX_TEMPERATURE));
        Self {
            model: request.model,
            max_tokens: params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            system,
            messages,
            tools: request.tools.iter().map(WireTool::new).collect(),
            temperature,
            // Current models (Claude Sonnet 4.5 on) reject both together.
            top_p: params.top_p.filter(|_| temperature.is_none()),
            stop_sequences: params
                .stop
                .iter()
                .flatten()
                .map(String::as_str)
                .filter(|s| !is_blank(s))
                .collect(),
            stream: request.stream,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum WireRole {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
pub(super) struct WireMessage<'a> {
    pub(super) role: WireRole,
    pub(super) content: Vec<Block<'a>>,
}

/// A content block of a message.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'a> {
    Text {
        text: Cow<'a, str>,
    },
    ToolUse {
        /// The call's id, or the new one it is sent under (rule 10).
        id: Cow<'a, str>,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Cow<'a, Value>,
}

impl<'a> WireTool<'a> {
    fn new(tool: &'a Tool) -> Self {
        let input_schema = match &tool.parameters {
            Value::Object(schema) if schema.contains_key("type") => Cow::Borrowed(&tool.parameters),
            Value::Object(schema) => {
                let mut schema = schema.clone();
                schema.insert("type".to_owned(), Value::from("object"));
                Cow::Owned(Value::Object(schema))
            }
            _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
        };
        Self {
            name: &tool.name,
            description: tool.description.as_deref().filter(|d| !is_blank(d)),
            input_schema,
        }
    }
}
