//! OpenAI Chat Completions (`POST {base}/chat/completions`); the same code serves every
//! configured OpenAI-compatible endpoint. Wire structs, the history mapping and the
//! reply mapping live here; retries, sessions and HTTP routes do not.
//!
//! # How the history is sent
//!
//! - A system message goes as `{"role":"system"}` at its place, also mid-history
//!   (OpenAI accepts system messages anywhere).
//! - A user message goes as `{"role":"user"}`.
//! - An assistant message goes as `{"role":"assistant"}` with its text; when it called
//!   tools it carries `tool_calls` (`{"id","type":"function","function":{"name","arguments"}}`)
//!   and its content is `null` when the text is empty.
//! - The tool outputs (system messages with a tool call id) that stand directly after an
//!   assistant message with tool calls form its *run*. In the run, the first output for
//!   each call of that assistant message goes as `{"role":"tool","tool_call_id","content"}`
//!   with the output alone ([`Message::tool_output_body`]).
//! - OpenAI rejects an assistant message whose calls are not all answered by tool messages
//!   right after it, so every call left without an output gets a synthetic tool message
//!   ([`NO_OUTPUT`]) right after the run's tool messages.
//! - Any other tool output goes as a plain system message with its stored text
//!   (`Tool output (<id>): …`): a second output for the same call, an output for a call the
//!   assistant message did not make, or one standing after a user, assistant or plain
//!   system message. Those standing inside a run follow the run's tool messages, since
//!   nothing may come between an assistant message and its tool messages.
//!
//! Settings (`temperature`, `max_tokens`, `top_p`, `stop`) are sent only when set; the
//! session's tools only when it has some (OpenAI rejects an empty `tools` array).
//! The key goes in `Authorization: Bearer` and only when one is configured (local
//! compatible servers have none).
//!
//! # How the reply is read
//!
//! The first choice's text (`null` reads as empty; a refusal's text stands in for a
//! `null` content), its tool calls, and its `finish_reason`: `stop`, `length`,
//! `tool_calls` (and the legacy `function_call`), anything else is `Other`. A reply
//! without usage counts zero tokens; a reply without choices is an invalid reply.

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatReply, ChatRequest, FinishReason, HttpProviderConfig, ProviderError, Usage, http};
use crate::session::{Message, Role, Tool, ToolCall};

/// The path of the Chat Completions endpoint below the base URL.
const CHAT_COMPLETIONS_PATH: &str = "/chat/completions";

/// The content of the tool message sent for a call left without an output.
pub const NO_OUTPUT: &str = "No output was provided for this tool call.";

/// The only tool type Chat Completions knows.
const FUNCTION: &str = "function";

/// A client for one OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAi {
    config: HttpProviderConfig,
    client: reqwest::Client,
}

impl OpenAi {
    pub fn new(config: HttpProviderConfig) -> Self {
        let client = http::client(config.timeout);
        Self { config, client }
    }

    /// The model used when a session names none.
    pub fn default_model(&self) -> Option<&str> {
        self.config.default_model.as_deref()
    }

    /// Encodes the request body; borrows the history and copies none of it.
    pub fn encode(&self, request: &ChatRequest<'_>) -> Result<Bytes, ProviderError> {
        let body = WireRequest::from_request(request);
        serde_json::to_vec(&body).map(Bytes::from).map_err(|e| {
            ProviderError::InvalidReply(format!("the request could not be encoded: {e}"))
        })
    }

    /// Sends an encoded body and reads the reply.
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
        let url = format!(
            "{}{CHAT_COMPLETIONS_PATH}",
            self.config.base_url.trim_end_matches('/')
        );
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.config.api_key {
            // `bearer_auth` marks the header sensitive, so it never shows in debug output.
            request = request.bearer_auth(key.expose());
        }
        let answer = http::send(request, self.config.timeout).await?;
        http::decode::<WireReply>(&answer)?.into_reply()
    }
}

// ---------------------------------------------------------------------------------------
// Request wire format: borrows from the request.

#[derive(Debug, Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
}

#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `None` (sent as `null`) only when the message has tool calls and no text.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, PartialEq, Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, PartialEq, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

impl<'a> WireRequest<'a> {
    fn from_request(request: &ChatRequest<'a>) -> Self {
        let params = request.params;
        Self {
            model: request.model,
            messages: wire_messages(request.messages()),
            tools: request.tools.iter().map(WireTool::from_tool).collect(),
            temperature: params.temperature,
            max_tokens: params.max_tokens,
            top_p: params.top_p,
            stop: params.stop.as_deref().filter(|stop| !stop.is_empty()),
        }
    }
}

impl<'a> WireTool<'a> {
    fn from_tool(tool: &'a Tool) -> Self {
        Self {
            kind: FUNCTION,
            function: WireFunction {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: &tool.parameters,
            },
        }
    }
}

impl<'a> WireMessage<'a> {
    /// A message outside a run of tool outputs, as it stands.
    fn plain(message: &'a Message) -> Self {
        match message.role {
            Role::System => Self::System {
                content: &message.content,
            },
            Role::User => Self::User {
                content: &message.content,
            },
            Role::Assistant => Self::Assistant {
                content: (!message.content.is_empty() || message.tool_calls.is_empty())
                    .then_some(message.content.as_str()),
                tool_calls: message
                    .tool_calls
                    .iter()
                    .map(|call| WireToolCall {
                        id: &call.id,
                        kind: FUNCTION,
                        function: WireFunctionCall {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    })
                    .collect(),
            },
        }
    }
}

fn is_tool_output(message: &Message) -> bool {
    message.role == Role::System && message.tool_call_id.is_some()
}

/// Maps the history (see the module doc): every assistant message with tool calls is
/// followed by exactly one tool message per call, before any other message.
fn wire_messages<'a>(messages: impl Iterator<Item = &'a Message>) -> Vec<WireMessage<'a>> {
    let mut messages = messages.peekable();
    let mut wire = Vec::new();
    while let Some(message) = messages.next() {
        wire.push(WireMessage::plain(message));
        if message.role != Role::Assistant || message.tool_calls.is_empty() {
            continue;
        }
        let calls = &message.tool_calls;
        let mut answered = vec![false; calls.len()];
        let mut as_text = Vec::new();
        while let Some(output) = messages.next_if(|next| is_tool_output(next)) {
            let id = output.tool_call_id.as_deref().unwrap_or_default();
            match calls.iter().position(|call| call.id == id) {
                Some(index) if !answered[index] => {
                    answered[index] = true;
                    wire.push(WireMessage::Tool {
                        tool_call_id: id,
                        content: output.tool_output_body().unwrap_or(&output.content),
                    });
                }
                _ => as_text.push(WireMessage::System {
                    content: &output.content,
                }),
            }
        }
        let unanswered = calls.iter().zip(answered).filter(|(_, done)| !done);
        wire.extend(unanswered.map(|(call, _)| WireMessage::Tool {
            tool_call_id: &call.id,
            content: NO_OUTPUT,
        }));
        wire.extend(as_text);
    }
    wire
}

// ---------------------------------------------------------------------------------------
// Reply wire format: only the fields we read.

#[derive(Debug, Deserialize)]
struct WireReply {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct WireChoice {
    message: WireReplyMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireReplyMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireReplyToolCall>>,
}

#[derive(Debug, Deserialize)]
struct WireReplyToolCall {
    id: String,
    function: WireReplyFunction,
}

#[derive(Debug, Deserialize)]
struct WireReplyFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl WireReply {
    fn into_reply(self) -> Result<ChatReply, ProviderError> {
        let choice =
            self.choices.into_iter().next().ok_or_else(|| {
                ProviderError::InvalidReply("the reply has no choices".to_owned())
            })?;
        let message = choice.message;
        let tool_calls = message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|call| ToolCall {
                id: call.id,
                name: call.function.name,
                arguments: call.function.arguments,
            })
            .collect();
        let usage = self.usage.unwrap_or_default();
        Ok(ChatReply {
            text: message.content.or(message.refusal).unwrap_or_default(),
            tool_calls,
            finish_reason: finish_reason(choice.finish_reason.as_deref()),
            usage: Usage {
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
            },
        })
    }
}

fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::session::{Defaults, ToolKind};
    use crate::timestamp::Timestamp;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.to_owned(),
            name: "get_weather".to_owned(),
            arguments: r#"{"city":"Oslo"}"#.to_owned(),
        }
    }

    fn calling(content: &str, ids: &[&str]) -> Message {
        let mut message = Message::text(Role::Assistant, content, Timestamp::now());
        message.tool_calls = ids.iter().map(|id| call(id)).collect();
        message
    }

    fn text(role: Role, content: &str) -> Message {
        Message::text(role, content, Timestamp::now())
    }

    fn output(id: &str, body: &str) -> Message {
        Message::tool_output(id, body, Timestamp::now())
    }

    fn encode_with(history: &[Message], tools: &[Tool], params: &Defaults) -> Value {
        let provider = OpenAi::new(HttpProviderConfig {
            name: "openai".to_owned(),
            base_url: "http://127.0.0.1:9".to_owned(),
            api_key: None,
            default_model: None,
            timeout: std::time::Duration::from_secs(1),
        });
        let request = ChatRequest {
            model: "gpt-test",
            history,
            staged: &[],
            tools,
            params,
            stream: false,
        };
        serde_json::from_slice(&provider.encode(&request).unwrap()).unwrap()
    }

    fn messages_of(history: &[Message]) -> Value {
        encode_with(history, &[], &Defaults::default())["messages"].clone()
    }

    fn decode(body: Value) -> Result<ChatReply, ProviderError> {
        http::decode::<WireReply>(&serde_json::to_vec(&body).unwrap())?.into_reply()
    }

    #[test]
    fn system_messages_stay_system_messages_at_their_place() {
        let history = [
            text(Role::System, "be brief"),
            text(Role::User, "hi"),
            text(Role::Assistant, "hello"),
            text(Role::System, "now answer in French"),
            text(Role::User, "again"),
        ];
        assert_eq!(
            messages_of(&history),
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": "now answer in French"},
                {"role": "user", "content": "again"},
            ])
        );
    }

    #[test]
    fn a_tool_call_followed_by_its_output_becomes_a_tool_message() {
        let history = [
            text(Role::User, "weather?"),
            calling("", &["call_1"]),
            output("call_1", "sunny"),
        ];
        assert_eq!(
            messages_of(&history),
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}
                }]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ])
        );
    }

    #[test]
    fn an_assistant_text_is_kept_next_to_its_tool_calls() {
        let messages = messages_of(&[calling("let me look", &["call_1"]), output("call_1", "x")]);
        assert_eq!(messages[0]["content"], "let me look");
        assert_eq!(messages[0]["tool_calls"][0]["id"], "call_1");
    }

    #[test]
    fn a_call_without_output_gets_a_synthetic_tool_message_before_the_next_message() {
        let history = [
            calling("", &["call_1", "call_2"]),
            output("call_2", "done"),
            text(Role::User, "never mind"),
        ];
        assert_eq!(
            messages_of(&history),
            json!([
                history_assistant_json(&["call_1", "call_2"]),
                {"role": "tool", "tool_call_id": "call_2", "content": "done"},
                {"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT},
                {"role": "user", "content": "never mind"},
            ])
        );
    }

    fn history_assistant_json(ids: &[&str]) -> Value {
        let calls: Vec<Value> = ids
            .iter()
            .map(|id| {
                json!({"id": id, "type": "function",
                       "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}})
            })
            .collect();
        json!({"role": "assistant", "content": null, "tool_calls": calls})
    }

    #[test]
    fn a_call_at_the_end_of_the_history_gets_a_synthetic_tool_message() {
        let messages = messages_of(&[text(Role::User, "hi"), calling("", &["call_1"])]);
        assert_eq!(
            messages[2],
            json!({"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT})
        );
    }

    #[test]
    fn an_output_after_a_user_message_goes_as_plain_system_text() {
        let history = [
            calling("", &["call_1"]),
            text(Role::User, "still there?"),
            output("call_1", "late"),
        ];
        assert_eq!(
            messages_of(&history),
            json!([
                history_assistant_json(&["call_1"]),
                {"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT},
                {"role": "user", "content": "still there?"},
                {"role": "system", "content": "Tool output (call_1): late"},
            ])
        );
    }

    #[test]
    fn a_second_output_or_an_unknown_call_goes_as_text_after_the_tool_messages() {
        let history = [
            calling("", &["call_1", "call_2"]),
            output("call_1", "first"),
            output("call_1", "again"),
            output("call_9", "stray"),
            output("call_2", "second"),
        ];
        assert_eq!(
            messages_of(&history),
            json!([
                history_assistant_json(&["call_1", "call_2"]),
                {"role": "tool", "tool_call_id": "call_1", "content": "first"},
                {"role": "tool", "tool_call_id": "call_2", "content": "second"},
                {"role": "system", "content": "Tool output (call_1): again"},
                {"role": "system", "content": "Tool output (call_9): stray"},
            ])
        );
    }

    #[test]
    fn a_plain_system_message_ends_the_run_of_tool_outputs() {
        let history = [
            calling("", &["call_1"]),
            text(Role::System, "hurry up"),
            output("call_1", "late"),
        ];
        assert_eq!(
            messages_of(&history),
            json!([
                history_assistant_json(&["call_1"]),
                {"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT},
                {"role": "system", "content": "hurry up"},
                {"role": "system", "content": "Tool output (call_1): late"},
            ])
        );
    }

    #[test]
    fn staged_messages_follow_the_committed_history() {
        let history = [calling("", &["call_1"])];
        let staged = [output("call_1", "sunny")];
        let provider = OpenAi::new(HttpProviderConfig {
            name: "openai".to_owned(),
            base_url: String::new(),
            api_key: None,
            default_model: Some("gpt-test".to_owned()),
            timeout: std::time::Duration::from_secs(1),
        });
        let request = ChatRequest {
            model: "gpt-test",
            history: &history,
            staged: &staged,
            tools: &[],
            params: &Defaults::default(),
            stream: false,
        };
        let body: Value = serde_json::from_slice(&provider.encode(&request).unwrap()).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(provider.default_model(), Some("gpt-test"));
    }

    #[test]
    fn tools_are_sent_as_functions_only_when_the_session_has_some() {
        let tools = [
            Tool {
                kind: ToolKind::Function,
                name: "get_weather".to_owned(),
                description: Some("Current weather".to_owned()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            },
            Tool {
                kind: ToolKind::Function,
                name: "now".to_owned(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
            },
        ];
        let history = [text(Role::User, "hi")];
        let body = encode_with(&history, &tools, &Defaults::default());
        assert_eq!(
            body["tools"],
            json!([
                {"type": "function", "function": {
                    "name": "get_weather", "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {
                    "name": "now", "parameters": {"type": "object", "properties": {}}}},
            ])
        );
        let without = encode_with(&history, &[], &Defaults::default());
        assert!(without.get("tools").is_none());
    }

    #[test]
    fn settings_are_sent_only_when_set() {
        let history = [text(Role::User, "hi")];
        let body = encode_with(&history, &[], &Defaults::default());
        assert_eq!(
            body,
            json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
        );
        let params = Defaults {
            temperature: Some(0.5),
            max_tokens: Some(64),
            top_p: Some(0.9),
            stop: Some(vec!["END".to_owned()]),
        };
        let body = encode_with(&history, &[], &params);
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["top_p"], 0.9);
        assert_eq!(body["stop"], json!(["END"]));
        let empty_stop = Defaults {
            stop: Some(Vec::new()),
            ..Defaults::default()
        };
        assert!(
            encode_with(&history, &[], &empty_stop)
                .get("stop")
                .is_none()
        );
    }

    #[test]
    fn a_text_reply_is_read_with_its_usage() {
        let reply = decode(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello!", "refusal": null}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        }))
        .unwrap();
        assert_eq!(
            reply,
            ChatReply {
                text: "Hello!".to_owned(),
                tool_calls: Vec::new(),
                finish_reason: FinishReason::Stop,
                usage: Usage {
                    input_tokens: 12,
                    output_tokens: 3
                },
            }
        );
    }

    #[test]
    fn a_tool_call_reply_is_read_with_null_content_as_empty_text() {
        let reply = decode(json!({
            "choices": [{"finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7}
        }))
        .unwrap();
        assert_eq!(reply.text, "");
        assert_eq!(reply.tool_calls, vec![call("call_1")]);
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    }

    #[test]
    fn finish_reasons_map_to_the_neutral_ones() {
        for (wire, neutral) in [
            (json!("stop"), FinishReason::Stop),
            (json!("length"), FinishReason::Length),
            (json!("tool_calls"), FinishReason::ToolCalls),
            (json!("function_call"), FinishReason::ToolCalls),
            (json!("content_filter"), FinishReason::Other),
            (Value::Null, FinishReason::Other),
        ] {
            let reply = decode(json!({
                "choices": [{"finish_reason": wire, "message": {"content": "x"}}]
            }))
            .unwrap();
            assert_eq!(reply.finish_reason, neutral, "{wire}");
        }
    }

    #[test]
    fn a_reply_without_usage_counts_zero_tokens() {
        let reply = decode(json!({"choices": [{"message": {"content": "x"}}]})).unwrap();
        assert_eq!(reply.usage, Usage::default());
    }

    #[test]
    fn a_refusal_stands_in_for_null_content() {
        let reply = decode(json!({"choices": [{"finish_reason": "stop",
            "message": {"content": null, "refusal": "I can't help with that."}}]}))
        .unwrap();
        assert_eq!(reply.text, "I can't help with that.");
    }

    /// Serves `router` on a free port; returns its base URL.
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{address}/v1")
    }

    fn provider_at(base_url: String, key: Option<&str>) -> OpenAi {
        OpenAi::new(HttpProviderConfig {
            name: "openai".to_owned(),
            base_url,
            api_key: key.map(crate::config::Secret::new),
            default_model: None,
            timeout: std::time::Duration::from_secs(5),
        })
    }

    #[tokio::test]
    async fn sends_the_body_as_json_with_a_bearer_key_only_when_one_is_configured() {
        use axum::http::{HeaderMap, header::AUTHORIZATION};
        let router = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|headers: HeaderMap, body: Bytes| async move {
                let header = |name| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned()
                };
                let sent: Value = serde_json::from_slice(&body).unwrap();
                let text = format!(
                    "{} {} {}",
                    header(AUTHORIZATION),
                    header(CONTENT_TYPE),
                    sent["model"]
                );
                axum::Json(json!({"choices": [{"finish_reason": "stop",
                    "message": {"content": text}}]}))
            }),
        );
        let base_url = serve(router).await;
        let body = Bytes::from_static(br#"{"model":"gpt-test","messages":[]}"#);

        let with_key = provider_at(base_url.clone(), Some("sk-test"));
        let reply = with_key.send(body.clone()).await.unwrap();
        assert_eq!(reply.text, r#"Bearer sk-test application/json "gpt-test""#);

        let without_key = provider_at(base_url, None);
        let reply = without_key.send(body).await.unwrap();
        assert_eq!(reply.text, r#"none application/json "gpt-test""#);
    }

    #[tokio::test]
    async fn a_rejected_request_becomes_an_upstream_error_without_the_key() {
        let router = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {"message": "bad messages",
                        "type": "invalid_request_error", "param": null, "code": null}})),
                )
            }),
        );
        let provider = provider_at(serve(router).await, Some("sk-secret"));
        let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();
        assert_eq!(
            error,
            ProviderError::Upstream {
                status: 400,
                kind: "invalid_request_error".to_owned(),
                message: "bad messages".to_owned(),
            }
        );
        assert!(!format!("{error} {error:?}").contains("sk-secret"));
    }

    #[test]
    fn a_reply_without_choices_is_invalid() {
        assert!(matches!(
            decode(json!({"choices": []})),
            Err(ProviderError::InvalidReply(_))
        ));
        assert!(matches!(
            decode(json!({"object": "chat.completion"})),
            Err(ProviderError::InvalidReply(_))
        ));
    }
}
