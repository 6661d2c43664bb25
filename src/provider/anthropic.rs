//! Anthropic Messages (`POST {base_url}/v1/messages`): encoding a request from the
//! borrowed history, performing it and decoding the reply. Retries, streaming and HTTP
//! routes do not belong here.
//!
//! # How a history becomes a request
//!
//! The real API takes system text only in its top-level `system` field, wants the first
//! message to be `user`, rejects empty text blocks and rejects a `tool_use` that is not
//! answered by a `tool_result` at the start of the very next message. So that any
//! history gives a request it accepts, the history (committed, then staged) is mapped so:
//!
//! 1. **Leading system messages** (those before the first user or assistant message)
//!    are joined with a blank line into `system`.
//! 2. **A later system message** stays at its place, as a text block of a user-role
//!    message: `[System instruction] <text>`, so the model sees where it was given.
//! 3. **Tool outputs.** A system message with `toolCallId` that answers a call of the
//!    nearest preceding assistant message, in the run of tool outputs directly after that
//!    message, becomes a `tool_result` block whose `content` is the output without its
//!    `Tool output (<id>): ` prefix (an empty output is sent as `(empty output)`). Any
//!    other tool output (a second answer to one call, an unknown id, one that comes after
//!    other messages) is a text block with its stored text `Tool output (<id>): <output>`.
//! 4. **Calls without output** get a `tool_result` `No output was provided for this tool
//!    call.` with `is_error: true`. In the user message after an assistant message with
//!    calls, the `tool_result` blocks come first, one per call in the order of the calls,
//!    before any text block.
//! 5. **Assistant messages** are a text block (left out when the text is blank), then one
//!    `tool_use` block per call whose `input` is the arguments parsed as JSON. Arguments
//!    that are not a JSON object are wrapped so that nothing is lost: blank arguments as
//!    `{}`, anything else as `{"arguments": "<the text>"}`. An assistant message with
//!    neither text nor calls is sent as the text `(empty reply)`.
//! 6. **Consecutive messages of one role** are merged into one message with several
//!    blocks.
//! 7. **The first message is user**: if the messages would start with an assistant
//!    message or be empty, a user message `(The conversation starts here.)` goes first.
//! 8. **No blank text block** is ever sent: blank user messages and blank system messages
//!    are left out (the API rejects empty and whitespace-only text).
//! 9. **The last message is user**: if the messages would end with an assistant message,
//!    a user message `(Continue.)` follows it. Models from Claude 4.6 on reject a
//!    trailing assistant message (prefill); older ones would continue its text.
//!
//! # Settings
//!
//! `max_tokens` is required by Anthropic: the session's `maxTokens`, else
//! [`DEFAULT_MAX_TOKENS`]. `temperature` is clamped to Anthropic's range 0..=1 (sessions
//! may ask up to 2, as OpenAI allows). `top_p` is sent only when `temperature` is not:
//! current models (Claude Sonnet 4.5 on) reject both together. `stop` becomes
//! `stop_sequences` without its whitespace-only entries, which Anthropic rejects. The
//! session's tools are sent as `{name, description, input_schema}`, and only when it has
//! some; a schema without `type` gets `"type": "object"`.
//!
//! # Reply
//!
//! The text blocks, concatenated, are the text; each `tool_use` block is a tool call whose
//! arguments are the compact JSON text of its `input`; other blocks (thinking…) are
//! ignored. `stop_reason` `end_turn` and `stop_sequence` are stop, `max_tokens` is length,
//! `tool_use` is tool calls, anything else is other. Input tokens count cached input
//! tokens too.

use std::borrow::Cow;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatReply, ChatRequest, FinishReason, HttpProviderConfig, ProviderError, Usage, http};
use crate::config::Secret;
use crate::session::{Message, Role, Tool, ToolCall};

/// The API version this mapping is written against.
pub const API_VERSION: &str = "2023-06-01";
/// Sent as `max_tokens` when the session sets no `maxTokens`; Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

const MESSAGES_PATH: &str = "/v1/messages";
const API_KEY_HEADER: &str = "x-api-key";
const VERSION_HEADER: &str = "anthropic-version";
const MAX_TEMPERATURE: f64 = 1.0;

const SYSTEM_PREFIX: &str = "[System instruction] ";
const CONVERSATION_START: &str = "(The conversation starts here.)";
const CONTINUE: &str = "(Continue.)";
const EMPTY_REPLY: &str = "(empty reply)";
const EMPTY_OUTPUT: &str = "(empty output)";
const MISSING_OUTPUT: &str = "No output was provided for this tool call.";

/// A client for the Anthropic Messages API.
#[derive(Debug)]
pub struct Anthropic {
    config: HttpProviderConfig,
    client: reqwest::Client,
}

impl Anthropic {
    pub fn new(config: HttpProviderConfig) -> Self {
        let client = http::client(config.timeout);
        Self { config, client }
    }

    pub fn default_model(&self) -> Option<&str> {
        self.config.default_model.as_deref()
    }

    /// Encodes the request body while the history is borrowed; see the module doc.
    pub fn encode(&self, request: &ChatRequest<'_>) -> Result<Bytes, ProviderError> {
        let body = WireRequest::new(request);
        serde_json::to_vec(&body).map(Bytes::from).map_err(|e| {
            ProviderError::InvalidReply(format!("the request could not be encoded: {e}"))
        })
    }

    /// Sends an encoded body to `{base_url}/v1/messages` and decodes the reply.
    /// Streaming: until the streaming mapping lands, the whole reply in one piece.
    pub async fn stream(
        &self,
        body: Bytes,
        sink: super::StreamSink<'_>,
    ) -> Result<ChatReply, ProviderError> {
        let reply = self.send(body).await?;
        if !reply.text.is_empty() {
            sink(super::StreamEvent::Text(reply.text.clone()));
        }
        for call in &reply.tool_calls {
            sink(super::StreamEvent::ToolCall(call.clone()));
        }
        Ok(reply)
    }

    pub async fn send(&self, body: Bytes) -> Result<ChatReply, ProviderError> {
        let url = format!("{}{MESSAGES_PATH}", self.config.base_url);
        let mut request = self
            .client
            .post(url)
            .header(VERSION_HEADER, API_VERSION)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.config.api_key {
            request = request.header(API_KEY_HEADER, key_header(key)?);
        }
        let body = http::send(request, self.config.timeout).await?;
        let reply: WireReply = http::decode(&body)?;
        Ok(reply.into_chat_reply())
    }
}

/// The key as a header value marked sensitive, so that no debug output shows it.
fn key_header(key: &Secret) -> Result<HeaderValue, ProviderError> {
    let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
        ProviderError::Transport("the configured API key is not a valid header value".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------

/// The request body; borrows from the history wherever the text is sent unchanged.
/// Streaming will add `stream: bool` here, skipped when false.
#[derive(Debug, Serialize)]
struct WireRequest<'a> {
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
}

impl<'a> WireRequest<'a> {
    fn new(request: &ChatRequest<'a>) -> Self {
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
            top_p: params.top_p.filter(|_| temperature.is_none()),
            stop_sequences: params
                .stop
                .iter()
                .flatten()
                .map(String::as_str)
                .filter(|s| !is_blank(s))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum WireRole {
    User,
    Assistant,
}

#[derive(Debug, Serialize)]
struct WireMessage<'a> {
    role: WireRole,
    content: Vec<Block<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: Cow<'a, str>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
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

/// Messages under construction: blocks of the same role as the last message join it.
#[derive(Default)]
struct Conversation<'a> {
    messages: Vec<WireMessage<'a>>,
}

impl<'a> Conversation<'a> {
    fn push(&mut self, role: WireRole, blocks: impl IntoIterator<Item = Block<'a>>) {
        let mut blocks = blocks.into_iter().peekable();
        if blocks.peek().is_none() {
            return;
        }
        match self.messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.messages.push(WireMessage {
                role,
                content: blocks.collect(),
            }),
        }
    }

    /// Rules 7 and 9: the first and the last message are user messages.
    fn finish(mut self) -> Vec<WireMessage<'a>> {
        let placeholder = |text: &'static str| WireMessage {
            role: WireRole::User,
            content: vec![Block::Text {
                text: Cow::Borrowed(text),
            }],
        };
        if self
            .messages
            .first()
            .is_none_or(|m| m.role == WireRole::Assistant)
        {
            self.messages.insert(0, placeholder(CONVERSATION_START));
        }
        if self
            .messages
            .last()
            .is_some_and(|m| m.role == WireRole::Assistant)
        {
            self.messages.push(placeholder(CONTINUE));
        }
        self.messages
    }
}

/// Maps the history to `system` and `messages` (rules 1–9 of the module doc).
fn map_history<'a>(
    history: impl Iterator<Item = &'a Message>,
) -> (Option<Cow<'a, str>>, Vec<WireMessage<'a>>) {
    let mut history = history.peekable();
    let mut leading = Vec::new();
    while let Some(message) = history.next_if(|m| m.role == Role::System) {
        if !is_blank(&message.content) {
            leading.push(message.content.as_str());
        }
    }
    let system = match leading.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.join("\n\n"))),
    };

    let mut conversation = Conversation::default();
    while let Some(message) = history.next() {
        match message.role {
            Role::User => conversation.push(WireRole::User, text_block(&message.content)),
            Role::System => conversation.push(WireRole::User, system_block(message)),
            Role::Assistant => {
                conversation.push(WireRole::Assistant, assistant_blocks(message));
                if !message.tool_calls.is_empty() {
                    let mut outputs = Vec::new();
                    while let Some(output) = history.next_if(is_tool_output) {
                        outputs.push(output);
                    }
                    conversation.push(WireRole::User, answers(&message.tool_calls, &outputs));
                }
            }
        }
    }
    (system, conversation.finish())
}

fn is_tool_output(message: &&Message) -> bool {
    message.role == Role::System && message.tool_call_id.is_some()
}

/// A text block, unless the text is blank.
fn text_block(text: &str) -> Option<Block<'_>> {
    (!is_blank(text)).then_some(Block::Text {
        text: Cow::Borrowed(text),
    })
}

/// A system message after the first user or assistant message (rules 2 and 3).
fn system_block(message: &Message) -> Option<Block<'_>> {
    if message.tool_call_id.is_some() {
        return text_block(&message.content);
    }
    (!is_blank(&message.content)).then(|| Block::Text {
        text: Cow::Owned(format!("{SYSTEM_PREFIX}{}", message.content)),
    })
}

/// Rule 5: the text, if any, then the calls; a placeholder when there is neither.
fn assistant_blocks(message: &Message) -> Vec<Block<'_>> {
    let calls = &message.tool_calls;
    let mut blocks = Vec::with_capacity(1 + calls.len());
    blocks.extend(text_block(&message.content));
    for (index, call) in calls.iter().enumerate() {
        // A repeated id would make the API reject the request; its first call stands.
        if calls[..index].iter().any(|c| c.id == call.id) {
            continue;
        }
        blocks.push(Block::ToolUse {
            id: &call.id,
            name: &call.name,
            input: tool_input(&call.arguments),
        });
    }
    if blocks.is_empty() {
        blocks.push(Block::Text {
            text: Cow::Borrowed(EMPTY_REPLY),
        });
    }
    blocks
}

/// The arguments as a JSON object: parsed, `{}` when blank, else wrapped as text.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ if is_blank(arguments) => Value::Object(serde_json::Map::new()),
        _ => serde_json::json!({ "arguments": arguments }),
    }
}

/// Rules 3 and 4: the user blocks answering `calls`, from the tool outputs directly after
/// them; one `tool_result` per call, in call order, then the outputs that answer nothing.
fn answers<'a>(calls: &'a [ToolCall], outputs: &[&'a Message]) -> Vec<Block<'a>> {
    let mut answered: Vec<(&str, &str)> = Vec::with_capacity(outputs.len());
    let mut unmatched = Vec::new();
    for output in outputs {
        let id = output.tool_call_id.as_deref().unwrap_or_default();
        let first_answer =
            calls.iter().any(|c| c.id == id) && answered.iter().all(|(a, _)| *a != id);
        if first_answer {
            let body = output.tool_output_body().unwrap_or(&output.content);
            answered.push((id, if is_blank(body) { EMPTY_OUTPUT } else { body }));
        } else {
            unmatched.extend(text_block(&output.content));
        }
    }
    let mut blocks = Vec::with_capacity(calls.len() + unmatched.len());
    for (index, call) in calls.iter().enumerate() {
        if calls[..index].iter().any(|c| c.id == call.id) {
            continue;
        }
        let answer = answered.iter().find(|(id, _)| *id == call.id);
        blocks.push(Block::ToolResult {
            tool_use_id: &call.id,
            content: answer.map_or(MISSING_OUTPUT, |(_, body)| body),
            is_error: answer.is_none(),
        });
    }
    blocks.extend(unmatched);
    blocks
}

fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

// ---------------------------------------------------------------------------------------
// Reply
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct WireReply {
    #[serde(default)]
    content: Vec<ReplyBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ReplyBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireReply {
    fn into_chat_reply(self) -> ChatReply {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in self.content {
            match block {
                ReplyBlock::Text { text: part } => text.push_str(&part),
                ReplyBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                }),
                ReplyBlock::Other => {}
            }
        }
        let finish_reason = match self.stop_reason.as_deref() {
            Some("end_turn" | "stop_sequence") => FinishReason::Stop,
            Some("max_tokens") => FinishReason::Length,
            Some("tool_use") => FinishReason::ToolCalls,
            _ => FinishReason::Other,
        };
        let usage = &self.usage;
        let cached = usage.cache_creation_input_tokens.unwrap_or(0)
            + usage.cache_read_input_tokens.unwrap_or(0);
        ChatReply {
            text,
            tool_calls,
            finish_reason,
            usage: Usage {
                input_tokens: usage.input_tokens + cached,
                output_tokens: usage.output_tokens,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::session::{Defaults, ToolKind};
    use crate::timestamp::Timestamp;

    fn client() -> Anthropic {
        client_at("http://127.0.0.1:9", Some("sk-ant-secret"))
    }

    fn client_at(base_url: &str, key: Option<&str>) -> Anthropic {
        Anthropic::new(HttpProviderConfig {
            name: "anthropic".into(),
            base_url: base_url.into(),
            api_key: key.map(Secret::new),
            default_model: Some("claude-sonnet-4-5".into()),
            timeout: Duration::from_secs(5),
        })
    }

    fn encode_with(history: &[Message], tools: &[Tool], params: &Defaults) -> Value {
        let request = ChatRequest {
            model: "claude-sonnet-4-5",
            history,
            staged: &[],
            tools,
            params,
            stream: false,
        };
        serde_json::from_slice(&client().encode(&request).unwrap()).unwrap()
    }

    fn encode(history: &[Message]) -> Value {
        encode_with(history, &[], &Defaults::default())
    }

    fn system(text: &str) -> Message {
        Message::text(Role::System, text, Timestamp::now())
    }

    fn user(text: &str) -> Message {
        Message::text(Role::User, text, Timestamp::now())
    }

    fn assistant(text: &str) -> Message {
        Message::text(Role::Assistant, text, Timestamp::now())
    }

    fn calling(text: &str, calls: &[(&str, &str)]) -> Message {
        let mut message = assistant(text);
        message.tool_calls = calls
            .iter()
            .map(|(id, arguments)| ToolCall {
                id: (*id).into(),
                name: "get_weather".into(),
                arguments: (*arguments).into(),
            })
            .collect();
        message
    }

    fn output(id: &str, text: &str) -> Message {
        Message::tool_output(id, text, Timestamp::now())
    }

    fn weather_tool() -> Tool {
        Tool {
            kind: ToolKind::Function,
            name: "get_weather".into(),
            description: Some("Current weather".into()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        }
    }

    fn text(text: &str) -> Value {
        json!({"type": "text", "text": text})
    }

    fn result(id: &str, content: &str) -> Value {
        json!({"type": "tool_result", "tool_use_id": id, "content": content})
    }

    fn missing(id: &str) -> Value {
        json!({"type": "tool_result", "tool_use_id": id, "content": MISSING_OUTPUT, "is_error": true})
    }

    fn tool_use(id: &str, input: Value) -> Value {
        json!({"type": "tool_use", "id": id, "name": "get_weather", "input": input})
    }

    #[test]
    fn leading_system_messages_are_joined_into_the_system_field() {
        let body = encode(&[system("be brief"), system("answer in French"), user("hi")]);
        assert_eq!(body["system"], "be brief\n\nanswer in French");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [text("hi")]}])
        );
    }

    #[test]
    fn a_history_without_system_messages_sends_no_system_field() {
        let body = encode(&[user("hi")]);
        assert!(body.get("system").is_none());
    }

    #[test]
    fn a_later_system_message_stays_in_place_as_a_user_text_block() {
        let body = encode(&[
            user("hi"),
            assistant("hello"),
            system("now be formal"),
            user("and now?"),
        ]);
        assert!(body.get("system").is_none());
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("hi")]},
                {"role": "assistant", "content": [text("hello")]},
                {"role": "user", "content": [text("[System instruction] now be formal"), text("and now?")]},
            ])
        );
    }

    #[test]
    fn a_tool_output_answering_the_previous_assistant_message_becomes_a_tool_result() {
        let body = encode(&[
            user("weather in Oslo?"),
            calling("", &[("toolu_1", r#"{"city":"Oslo"}"#)]),
            output("toolu_1", "sunny, 21 °C"),
        ]);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("weather in Oslo?")]},
                {"role": "assistant", "content": [tool_use("toolu_1", json!({"city": "Oslo"}))]},
                {"role": "user", "content": [result("toolu_1", "sunny, 21 °C")]},
            ])
        );
    }

    #[test]
    fn an_empty_tool_output_is_sent_as_a_placeholder() {
        let body = encode(&[
            user("go"),
            calling("", &[("toolu_1", "{}")]),
            output("toolu_1", ""),
        ]);
        assert_eq!(
            body["messages"][2]["content"],
            json!([result("toolu_1", EMPTY_OUTPUT)])
        );
    }

    #[test]
    fn a_duplicate_or_unknown_tool_output_goes_as_text_after_the_results() {
        let body = encode(&[
            user("go"),
            calling("", &[("toolu_1", "{}")]),
            output("toolu_9", "stray"),
            output("toolu_1", "first"),
            output("toolu_1", "second"),
        ]);
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [
                result("toolu_1", "first"),
                text("Tool output (toolu_9): stray"),
                text("Tool output (toolu_1): second"),
            ]})
        );
    }

    #[test]
    fn a_tool_output_after_other_messages_goes_as_text() {
        let body = encode(&[
            user("go"),
            calling("", &[("toolu_1", "{}")]),
            user("never mind"),
            output("toolu_1", "late"),
        ]);
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [
                missing("toolu_1"),
                text("never mind"),
                text("Tool output (toolu_1): late"),
            ]})
        );
    }

    #[test]
    fn a_tool_output_at_the_start_of_the_history_goes_into_the_system_field() {
        let body = encode(&[output("toolu_1", "orphan"), user("hi")]);
        assert_eq!(body["system"], "Tool output (toolu_1): orphan");
    }

    #[test]
    fn every_call_without_output_gets_an_error_result_in_call_order() {
        let body = encode(&[
            user("go"),
            calling(
                "",
                &[("toolu_1", "{}"), ("toolu_2", "{}"), ("toolu_3", "{}")],
            ),
            output("toolu_2", "two"),
        ]);
        assert_eq!(
            body["messages"][2]["content"],
            json!([
                missing("toolu_1"),
                result("toolu_2", "two"),
                missing("toolu_3")
            ])
        );
    }

    #[test]
    fn calls_left_unanswered_before_the_next_assistant_message_still_get_results() {
        let body = encode(&[
            user("go"),
            calling("", &[("toolu_1", "{}")]),
            assistant("done"),
        ]);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("go")]},
                {"role": "assistant", "content": [tool_use("toolu_1", json!({}))]},
                {"role": "user", "content": [missing("toolu_1")]},
                {"role": "assistant", "content": [text("done")]},
                {"role": "user", "content": [text(CONTINUE)]},
            ])
        );
    }

    #[test]
    fn tool_results_come_before_instructions_and_user_text() {
        let body = encode(&[
            user("go"),
            calling("", &[("toolu_1", "{}")]),
            output("toolu_1", "ok"),
            system("summarise"),
            user("thanks"),
        ]);
        assert_eq!(
            body["messages"][2]["content"],
            json!([
                result("toolu_1", "ok"),
                text("[System instruction] summarise"),
                text("thanks")
            ])
        );
    }

    #[test]
    fn an_assistant_message_sends_its_text_then_its_calls_with_parsed_input() {
        let body = encode(&[
            user("go"),
            calling(
                "Let me check.",
                &[("toolu_1", r#"{"city":"Oslo","days":2}"#)],
            ),
            output("toolu_1", "ok"),
        ]);
        assert_eq!(
            body["messages"][1]["content"],
            json!([
                text("Let me check."),
                tool_use("toolu_1", json!({"city": "Oslo", "days": 2}))
            ])
        );
    }

    #[test]
    fn blank_assistant_text_is_left_out_and_an_empty_assistant_message_gets_a_placeholder() {
        let body = encode(&[
            user("a"),
            calling("  \n", &[("toolu_1", "{}")]),
            output("toolu_1", "x"),
        ]);
        assert_eq!(
            body["messages"][1]["content"],
            json!([tool_use("toolu_1", json!({}))])
        );
        let body = encode(&[user("a"), assistant(""), user("b")]);
        assert_eq!(body["messages"][1]["content"], json!([text(EMPTY_REPLY)]));
    }

    #[test]
    fn arguments_that_are_not_a_json_object_are_wrapped() {
        assert_eq!(tool_input(""), json!({}));
        assert_eq!(tool_input("  "), json!({}));
        assert_eq!(tool_input("[1,2]"), json!({"arguments": "[1,2]"}));
        assert_eq!(tool_input("{not json"), json!({"arguments": "{not json"}));
        assert_eq!(tool_input(r#"{"a":1}"#), json!({"a": 1}));
    }

    #[test]
    fn a_repeated_call_id_is_sent_once() {
        let body = encode(&[
            user("go"),
            calling("", &[("toolu_1", "{}"), ("toolu_1", "{}")]),
        ]);
        assert_eq!(
            body["messages"][1]["content"],
            json!([tool_use("toolu_1", json!({}))])
        );
        assert_eq!(body["messages"][2]["content"], json!([missing("toolu_1")]));
    }

    #[test]
    fn consecutive_messages_of_one_role_are_merged() {
        let body = encode(&[
            user("one"),
            user("two"),
            assistant("three"),
            assistant("four"),
            user("five"),
        ]);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("one"), text("two")]},
                {"role": "assistant", "content": [text("three"), text("four")]},
                {"role": "user", "content": [text("five")]},
            ])
        );
    }

    #[test]
    fn a_history_starting_with_an_assistant_message_gets_a_user_placeholder_first() {
        let body = encode(&[system("rules"), assistant("Welcome!"), user("hi")]);
        assert_eq!(
            body["messages"][0],
            json!({"role": "user", "content": [text(CONVERSATION_START)]})
        );
        assert_eq!(body["messages"][1]["role"], "assistant");
    }

    #[test]
    fn a_history_of_system_messages_only_gets_a_user_placeholder() {
        let body = encode(&[system("be brief")]);
        assert_eq!(body["system"], "be brief");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [text(CONVERSATION_START)]}])
        );
        let body = encode(&[]);
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [text(CONVERSATION_START)]}])
        );
    }

    #[test]
    fn blank_user_and_system_text_is_never_sent() {
        let body = encode(&[
            system(" "),
            user("hi"),
            assistant("yes"),
            system("\n"),
            user("  "),
        ]);
        assert!(body.get("system").is_none());
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [text("hi")]},
                {"role": "assistant", "content": [text("yes")]},
                {"role": "user", "content": [text(CONTINUE)]},
            ])
        );
    }

    #[test]
    fn a_history_ending_with_an_assistant_message_gets_a_user_message_after_it() {
        let body = encode(&[user("hi"), assistant("hello ")]);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[2],
            json!({"role": "user", "content": [text(CONTINUE)]})
        );
    }

    #[test]
    fn staged_messages_follow_the_committed_history() {
        let history = [user("hi"), assistant("hello")];
        let staged = [system("be brief"), user("again")];
        let params = Defaults::default();
        let request = ChatRequest {
            model: "claude-sonnet-4-5",
            history: &history,
            staged: &staged,
            tools: &[],
            params: &params,
            stream: false,
        };
        let body: Value = serde_json::from_slice(&client().encode(&request).unwrap()).unwrap();
        assert_eq!(
            body["messages"][2]["content"],
            json!([text("[System instruction] be brief"), text("again")])
        );
    }

    #[test]
    fn max_tokens_is_the_sessions_or_the_default() {
        let body = encode(&[user("hi")]);
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        let params = Defaults {
            max_tokens: Some(300),
            ..Defaults::default()
        };
        assert_eq!(encode_with(&[user("hi")], &[], &params)["max_tokens"], 300);
    }

    #[test]
    fn temperature_above_one_is_clamped_to_one() {
        let params = Defaults {
            temperature: Some(1.7),
            ..Defaults::default()
        };
        assert_eq!(encode_with(&[user("hi")], &[], &params)["temperature"], 1.0);
        let params = Defaults {
            temperature: Some(0.2),
            ..Defaults::default()
        };
        assert_eq!(encode_with(&[user("hi")], &[], &params)["temperature"], 0.2);
    }

    #[test]
    fn top_p_is_sent_only_without_temperature() {
        let params = Defaults {
            top_p: Some(0.9),
            ..Defaults::default()
        };
        assert_eq!(encode_with(&[user("hi")], &[], &params)["top_p"], 0.9);
        let params = Defaults {
            top_p: Some(0.9),
            temperature: Some(0.5),
            ..Defaults::default()
        };
        let body = encode_with(&[user("hi")], &[], &params);
        assert_eq!(body["temperature"], 0.5);
        assert!(body.get("top_p").is_none());
    }

    #[test]
    fn stop_becomes_stop_sequences_without_whitespace_only_entries() {
        let params = Defaults {
            stop: Some(vec!["END".into(), "\n".into(), "###".into()]),
            ..Defaults::default()
        };
        assert_eq!(
            encode_with(&[user("hi")], &[], &params)["stop_sequences"],
            json!(["END", "###"])
        );
        let params = Defaults {
            stop: Some(vec!["\n\n".into()]),
            ..Defaults::default()
        };
        assert!(
            encode_with(&[user("hi")], &[], &params)
                .get("stop_sequences")
                .is_none()
        );
    }

    #[test]
    fn unset_settings_and_absent_tools_are_left_out() {
        let body = encode(&[user("hi")]);
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["max_tokens", "messages", "model"]);
    }

    #[test]
    fn tools_are_sent_with_their_schema_as_input_schema() {
        let mut bare = weather_tool();
        bare.name = "ping".into();
        bare.description = None;
        bare.parameters = json!({"properties": {}});
        let body = encode_with(&[user("hi")], &[weather_tool(), bare], &Defaults::default());
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "Current weather",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
    }

    #[test]
    fn a_reply_with_text_blocks_concatenates_them() {
        let reply: WireReply = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Hello, "},
                {"type": "text", "text": "world."}
            ],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 3,
                      "cache_creation_input_tokens": null}
        }))
        .unwrap();
        assert_eq!(
            reply.into_chat_reply(),
            ChatReply {
                text: "Hello, world.".into(),
                tool_calls: vec![],
                finish_reason: FinishReason::Stop,
                usage: Usage {
                    input_tokens: 15,
                    output_tokens: 5
                },
            }
        );
    }

    #[test]
    fn a_reply_with_tool_use_blocks_gives_tool_calls_with_compact_arguments() {
        let reply: WireReply = serde_json::from_value(json!({
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 2}
        }))
        .unwrap();
        let reply = reply.into_chat_reply();
        assert_eq!(reply.text, "Checking.");
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            reply.tool_calls,
            vec![
                ToolCall {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into()
                },
                ToolCall {
                    id: "toolu_2".into(),
                    name: "get_time".into(),
                    arguments: "{}".into()
                },
            ]
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        let cases = [
            (json!("end_turn"), FinishReason::Stop),
            (json!("stop_sequence"), FinishReason::Stop),
            (json!("max_tokens"), FinishReason::Length),
            (json!("tool_use"), FinishReason::ToolCalls),
            (json!("refusal"), FinishReason::Other),
            (json!("pause_turn"), FinishReason::Other),
            (Value::Null, FinishReason::Other),
        ];
        for (stop_reason, expected) in cases {
            let reply: WireReply =
                serde_json::from_value(json!({"content": [], "stop_reason": stop_reason})).unwrap();
            assert_eq!(
                reply.into_chat_reply().finish_reason,
                expected,
                "{stop_reason}"
            );
        }
    }

    /// A one-route server on port 0 that answers `status` and `body` and hands back
    /// the path and headers of the request it received.
    async fn serve_once(
        status: u16,
        body: Value,
    ) -> (
        String,
        tokio::sync::oneshot::Receiver<(String, axum::http::HeaderMap, Value)>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  payload: axum::body::Bytes| {
                let tx = tx.clone();
                let body = body.clone();
                async move {
                    let payload = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send((uri.path().to_owned(), headers, payload));
                    }
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(body),
                    )
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    #[tokio::test]
    async fn send_posts_to_v1_messages_with_the_key_and_version_headers() {
        let reply = json!({
            "content": [{"type": "text", "text": "hi there"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 2}
        });
        let (url, received) = serve_once(200, reply).await;
        let provider = client_at(&url, Some("sk-ant-secret"));
        let params = Defaults::default();
        let history = [user("hi")];
        let request = ChatRequest {
            model: "claude-sonnet-4-5",
            history: &history,
            staged: &[],
            tools: &[],
            params: &params,
            stream: false,
        };
        let body = provider.encode(&request).unwrap();

        let reply = provider.send(body).await.unwrap();

        assert_eq!(reply.text, "hi there");
        assert_eq!(
            reply.usage,
            Usage {
                input_tokens: 3,
                output_tokens: 2
            }
        );
        let (path, headers, payload) = received.await.unwrap();
        assert_eq!(path, "/v1/messages");
        assert_eq!(headers["x-api-key"], "sk-ant-secret");
        assert_eq!(headers["anthropic-version"], API_VERSION);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(payload["messages"][0]["content"][0]["text"], "hi");
    }

    #[tokio::test]
    async fn send_without_a_key_sends_no_key_header() {
        let reply = json!({"content": [], "stop_reason": "end_turn", "usage": {}});
        let (url, received) = serve_once(200, reply).await;
        let provider = client_at(&url, None);

        provider.send(Bytes::from_static(b"{}")).await.unwrap();

        let (_, headers, _) = received.await.unwrap();
        assert!(headers.get("x-api-key").is_none());
    }

    #[tokio::test]
    async fn an_error_answer_keeps_its_status_type_and_message_but_never_the_key() {
        let error = json!({"type": "error", "error": {"type": "invalid_request_error",
                          "message": "messages: text content blocks must be non-empty"}});
        let (url, _received) = serve_once(400, error).await;
        let provider = client_at(&url, Some("sk-ant-secret"));

        let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

        assert_eq!(
            error,
            ProviderError::Upstream {
                status: 400,
                kind: "invalid_request_error".into(),
                message: "messages: text content blocks must be non-empty".into(),
            }
        );
        assert!(!format!("{error} {error:?}").contains("sk-ant-secret"));
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_a_transport_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let provider = client_at(&url, Some("sk-ant-secret"));

        let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

        assert!(matches!(&error, ProviderError::Transport(_)), "{error:?}");
        assert!(!format!("{error:?}").contains("sk-ant-secret"));
    }

    #[tokio::test]
    async fn a_provider_that_does_not_answer_in_time_is_a_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Accepts the connection and never answers.
        tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await
        });
        let timeout = Duration::from_millis(200);
        let mut provider = client_at(&url, None);
        provider.config.timeout = timeout;
        provider.client = http::client(timeout);

        let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

        assert_eq!(error, ProviderError::Timeout(timeout));
    }

    #[tokio::test]
    async fn an_unreadable_success_body_is_an_invalid_reply() {
        let (url, _received) = serve_once(200, json!("not a message")).await;
        let provider = client_at(&url, None);

        let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

        assert!(matches!(error, ProviderError::InvalidReply(_)), "{error:?}");
    }
}
