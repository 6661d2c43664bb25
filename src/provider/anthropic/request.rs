//! The request body sent to Anthropic Messages: its wire structs and the settings that go
//! with the mapped history (module doc, "Settings" and "Streaming"). How the history
//! becomes `system` and `messages` lives in `history`; sending it does not belong here.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::DEFAULT_MAX_TOKENS;
use super::history::{is_blank, map_history};
use crate::json_text;
use crate::json_text::WriteJson;
use crate::message::Tool;
use crate::provider::wire_json;
use crate::provider::{ChatRequest, KeptWire};

/// Anthropic's `temperature` range ends at 1; sessions may ask up to 2, as OpenAI allows.
const MAX_TEMPERATURE: f64 = 1.0;

/// The request body; borrows from the history wherever the text is sent unchanged.
#[derive(Debug, Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    /// Written by hand, first (see [`WireRequest::to_json`]).
    #[serde(skip)]
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
    pub(super) fn new(request: &ChatRequest<'a>, kept: KeptWire<'a>) -> Self {
        let params = request.params;
        let (system, messages) = map_history(request.numbered_from(0), kept);
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

    /// The body as JSON (`wire_json::body`).
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        wire_json::body(&self.messages, self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WireRole {
    User,
    Assistant,
}

/// An Anthropic message, written out by [`WireMessage::write_json`].
#[derive(Debug)]
pub(super) struct WireMessage<'a> {
    pub(super) role: WireRole,
    pub(super) content: Vec<Block<'a>>,
}

impl WriteJson for WireMessage<'_> {
    /// Appends the message as JSON: what serde would write, with the texts written by
    /// [`json_text`] (they are nearly all of a request, and written on every turn).
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self.role {
            WireRole::User => br#"{"role":"user","content":"#,
            WireRole::Assistant => br#"{"role":"assistant","content":"#,
        });
        json_text::write_array(out, &self.content, |out, block| block.write_json(out));
        out.push(b'}');
    }

    /// Its texts, plus room for the rest.
    fn size_hint(&self) -> usize {
        const FRAME: usize = 48;
        let blocks = self.content.iter().map(|block| {
            FRAME
                + match block {
                    Block::Text { text } => text.len(),
                    Block::ToolUse { id, name, .. } => id.len() + name.len() + FRAME,
                    Block::ToolResult {
                        tool_use_id,
                        content,
                        ..
                    } => tool_use_id.len() + content.len(),
                    Block::Kept(json) => json.len(),
                }
        });
        FRAME + blocks.sum::<usize>()
    }
}

/// A content block of a message (`type` first, as serde writes an internally tagged
/// enum).
#[derive(Debug)]
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
        /// Left out when false.
        is_error: bool,
    },
    /// A block written by [`write_json`](Block::write_json) before, kept by the session.
    Kept(&'a [u8]),
}

impl Block<'_> {
    pub(super) fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Self::Kept(json) => return out.extend_from_slice(json),
            Self::Text { text } => {
                out.extend_from_slice(br#"{"type":"text","#);
                json_text::write_member(out, "text", text);
            }
            Self::ToolUse { id, name, input } => {
                out.extend_from_slice(br#"{"type":"tool_use","#);
                json_text::write_member(out, "id", id);
                out.push(b',');
                json_text::write_member(out, "name", name);
                out.extend_from_slice(br#","input":"#);
                // Cannot fail: a `Value` always serialises (its keys are strings, its
                // numbers finite), and a `Vec` takes every byte.
                let _ = serde_json::to_writer(&mut *out, input);
            }
            Self::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                out.extend_from_slice(br#"{"type":"tool_result","#);
                json_text::write_member(out, "tool_use_id", tool_use_id);
                out.push(b',');
                json_text::write_member(out, "content", content);
                if *is_error {
                    out.extend_from_slice(br#","is_error":true"#);
                }
            }
        }
        out.push(b'}');
    }
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
