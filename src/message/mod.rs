//! The entries of a session's history and the settings a session is created with:
//! messages, roles, tool calls, tools and generation defaults. Plain data; how they are
//! sent to a provider lives in `provider/`, how they are validated on input in `session/create.rs`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

mod json;
mod raw_json;
mod timestamp;

/// A message's text: immutable, cheap to clone, and able to share the buffer of the
/// request body it arrived in (see [`RawJson::texts`]), so a stored message
/// and the turn record that keeps its request hold the text once.
pub use bytestring::ByteString as Text;
pub use json::{history_size_hint, warm_texts, write_history};
pub use raw_json::{NotJson, RawJson};
pub use timestamp::Timestamp;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions and tool outputs.
    System,
    /// What the person typed.
    User,
    /// What the provider replied.
    Assistant,
}

/// One entry of a session's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"role": "user", "content": "What is the weather in Oslo?", "createdAt": "2026-11-23T08:00:00.123Z"}))]
pub struct Message {
    pub role: Role,
    #[schema(value_type = String)]
    pub content: Text,
    /// Only on assistant messages that called tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Only on system messages made by `/tool-output`: the call this output answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Only on an assistant message whose turn was cancelled mid-reply: the text is
    /// what had arrived by then. Providers receive it as ordinary assistant text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// What a size estimate adds for each item that holds text (the struct, its strings'
/// headers, the allocator's slack), on top of the text itself.
pub const ITEM_OVERHEAD: usize = 128;

/// The prefix of a tool output's stored text; the rest is the output itself.
const TOOL_OUTPUT_PREFIX: &str = "Tool output (";

impl Message {
    /// Roughly the bytes this message holds in memory: its texts plus a fixed overhead.
    pub fn size_estimate(&self) -> usize {
        let calls: usize = self.tool_calls.iter().map(ToolCall::size_estimate).sum();
        ITEM_OVERHEAD
            + self.content.len()
            + calls
            + self.tool_call_id.as_ref().map_or(0, String::len)
    }

    /// A message with no tool calls and no tool call id.
    pub fn text(role: Role, content: impl Into<Text>, created_at: Timestamp) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            interrupted: false,
            created_at,
        }
    }

    /// The system message `/tool-output` appends: `Tool output (<callId>): <output>`.
    pub fn tool_output(call_id: &str, output: &str, created_at: Timestamp) -> Self {
        Self {
            role: Role::System,
            content: format!("{TOOL_OUTPUT_PREFIX}{call_id}): {output}").into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.to_owned()),
            interrupted: false,
            created_at,
        }
    }

    /// For a tool output, the output alone (without the `Tool output (<id>): ` prefix),
    /// which is what providers receive in their native tool-result form.
    pub fn tool_output_body(&self) -> Option<&str> {
        let id = self.tool_call_id.as_deref()?;
        self.content
            .strip_prefix(TOOL_OUTPUT_PREFIX)
            .and_then(|rest| rest.strip_prefix(id))
            .and_then(|rest| rest.strip_prefix("): "))
            .or(Some(&self.content))
    }
}

/// Where a forked session came from: its source, the source's version when it was
/// forked, and how many of the source's messages it starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkedFrom {
    #[schema(value_type = String, format = Uuid)]
    pub session_id: uuid::Uuid,
    pub version: u64,
    pub up_to: usize,
}

/// A tool call made by the provider in an assistant message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}))]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text, exactly as the provider produced them.
    pub arguments: String,
}

impl ToolCall {
    /// Roughly the bytes this call holds in memory.
    pub fn size_estimate(&self) -> usize {
        ITEM_OVERHEAD + self.id.len() + self.name.len() + self.arguments.len()
    }
}

/// The kind of a tool; only functions exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    #[default]
    Function,
}

/// A tool the provider may call, as given at session creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"type": "function", "name": "get_weather", "description": "Current weather for a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}))]
pub struct Tool {
    #[serde(rename = "type", default)]
    pub kind: ToolKind,
    /// 1–64 characters of `a-z A-Z 0-9 _ -`, unique within the session.
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object for the arguments; `{"type":"object","properties":{}}` when left out.
    #[serde(default = "empty_parameters")]
    #[schema(schema_with = json_schema_object)]
    pub parameters: Value,
}

/// An object with any members (a JSON Schema), said so in a way code generators read as
/// an open map rather than an empty object.
fn json_schema_object() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .build()
}

fn empty_parameters() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Generation settings of a session; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"temperature": 0.2, "maxTokens": 512}))]
pub struct Defaults {
    /// 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    /// 1 to 1 000 000.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_tokens: Option<u32>,
    /// Greater than 0, at most 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    /// Up to 4 stop sequences, none empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = stop_schema)]
    pub stop: Option<Vec<String>>,
    /// Send at most this many messages (at least 1): the leading system messages, then
    /// the newest others. The stored history stays whole.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub max_context_messages: Option<u32>,
    /// Send at most about this many tokens (estimated as characters / 4 + 4 per
    /// message), the oldest messages left out first.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub max_context_tokens: Option<u32>,
}

/// Up to 4 non-empty strings.
fn stop_schema() -> utoipa::openapi::schema::ArrayBuilder {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .max_items(Some(4))
}

/// A count that JSON may write as `512` or `512.0` (both are the integer 512).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    match Option::<f64>::deserialize(d)? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => {
            Ok(Some(n as u32))
        }
        Some(n) => Err(D::Error::custom(format!(
            "expected a whole number, got {n}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_output_body_strips_the_stored_prefix() {
        let message = Message::tool_output("call_1", "sunny, 21 °C", Timestamp::now());
        assert_eq!(message.content, "Tool output (call_1): sunny, 21 °C");
        assert_eq!(message.tool_output_body(), Some("sunny, 21 °C"));
    }

    #[test]
    fn a_plain_message_has_no_tool_output_body() {
        let message = Message::text(Role::System, "be brief", Timestamp::now());
        assert_eq!(message.tool_output_body(), None);
    }

    #[test]
    fn empty_lists_and_absent_ids_are_left_out_of_the_json() {
        let message = Message::text(Role::User, "hi", Timestamp::now());
        let json = serde_json::to_value(&message).unwrap();
        assert!(json.get("toolCalls").is_none());
        assert!(json.get("toolCallId").is_none());
    }
}
