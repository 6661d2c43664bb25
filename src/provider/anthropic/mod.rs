//! Anthropic Messages (`POST {base_url}/v1/messages`): encoding a request from the
//! borrowed history, performing it and decoding the reply, whole or streamed. Retries and
//! HTTP routes do not belong here.
//!
//! Submodules: `history` maps the history (rules below), `request` builds the body,
//! `reply` reads a whole reply, `stream` reads a streamed one.
//!
//! # How a history becomes a request
//!
//! The real API takes system text only in its top-level `system` field, wants the first
//! message to be `user`, and rejects empty text blocks, a `tool_use` that is not answered
//! by a `tool_result` at the start of the very next message, and a `tool_use` id used
//! twice in one request. So that any history gives a request it accepts, the history
//! (committed, then staged) is mapped so:
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
//! 10. **Each `tool_use` id is sent once** in the request (the API rejects a repeated one,
//!     also across messages). Within an assistant message only the first call with an id
//!     is sent; a later call with that id is left out and gets no `tool_result`. A call
//!     whose id an earlier assistant message already used is sent under a new id,
//!     `<id>_<n>` with the smallest `n` from 2 that no call of the request has (so it
//!     matches `^[a-zA-Z0-9_-]+$` whenever the id does), and its `tool_result` (rules 3
//!     and 4: from the outputs in that message's run, else the error result) names the
//!     new id. The first call with an id keeps it; outputs sent as text keep their stored
//!     text and id.
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
//!
//! # Streaming
//!
//! A request encoded with `stream: true` carries `"stream": true` (the field is left out
//! otherwise) and the answer, `text/event-stream`, is read event by event as it arrives,
//! never buffered whole. The events and what they give:
//!
//! - `message_start`: the input tokens (cached ones included) from `message.usage`.
//! - `content_block_start`: a text block, or a `tool_use` block with its id and name.
//! - `content_block_delta`: a `text_delta` goes to the sink at once (an empty one is
//!   skipped); an `input_json_delta`'s `partial_json` is appended to its block's input.
//! - `content_block_stop`: a `tool_use` block is complete; its input (`{}` when no
//!   fragment came) goes to the sink as one tool call with compact JSON arguments. Input
//!   that does not parse (cut by `max_tokens`) is kept as received.
//! - `message_delta`: the stop reason and the usage. Its counts are totals so far, not
//!   increments, so they replace the earlier ones (`message_start`'s `output_tokens` is a
//!   placeholder).
//! - `message_stop`: the reply is complete; reading stops there.
//! - `error` (`{"type":"error","error":{"type":"overloaded_error","message":…}}`): an
//!   upstream error with the stream's HTTP status (200 — the real API reports
//!   overload mid-stream this way, so the error type, not the status, says what failed)
//!   and the event's type and message.
//! - `ping` and unknown events (thinking blocks…) are ignored.
//!
//! A stream that ends before `message_stop` is a transport error (`stream ended early`);
//! a non-2xx answer, a broken connection or a timeout fail as without streaming. The
//! reply returned at the end follows the rules of "Reply".

mod history;
mod reply;
mod request;
mod stream;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{
    ChatReply, ChatRequest, EndpointError, HttpProviderConfig, KeptWire, ProviderError,
    ReplyLimits, StreamSink, http, wire_json,
};
pub(in crate::provider) use history::write_alone;
use reply::WireReply;
use request::WireRequest;

/// The API version this mapping is written against.
pub const API_VERSION: &str = "2023-06-01";
/// Sent as `max_tokens` when the session sets no `maxTokens`; Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

const MESSAGES_PATH: &str = "/v1/messages";
const API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
const VERSION_HEADER: HeaderName = HeaderName::from_static("anthropic-version");

/// A client for the Anthropic Messages API.
#[derive(Debug)]
pub struct Anthropic {
    config: HttpProviderConfig,
    endpoint: http::Endpoint,
}

impl Anthropic {
    /// Fails on a base URL that is not a URL or a key that cannot be a header value.
    pub fn new(config: HttpProviderConfig) -> Result<Self, EndpointError> {
        let url = format!("{}{MESSAGES_PATH}", config.base_url);
        let mut headers = HeaderMap::new();
        headers.insert(VERSION_HEADER, HeaderValue::from_static(API_VERSION));
        let key = config
            .api_key
            .as_ref()
            .map(|key| (API_KEY_HEADER, key.expose().to_owned()));
        let endpoint = http::Endpoint::new(config.timeout, &url, headers, key)?;
        Ok(Self { config, endpoint })
    }

    pub fn default_model(&self) -> Option<&str> {
        self.config.default_model.as_deref()
    }

    /// Bounds on one reply.
    pub fn reply_limits(&self) -> ReplyLimits {
        self.config.reply_limits
    }

    /// Encodes the request body while the history is borrowed; see the module doc.
    pub fn encode(&self, request: &ChatRequest<'_>) -> Result<Bytes, ProviderError> {
        self.encode_with(request, KeptWire::default())
    }

    /// Encodes the request body, copying the blocks of the messages `kept` holds
    /// (written by [`write_alone`]) and writing the others.
    pub fn encode_with(
        &self,
        request: &ChatRequest<'_>,
        kept: KeptWire<'_>,
    ) -> Result<Bytes, ProviderError> {
        wire_json::ready(WireRequest::new(request, kept).to_json())
    }

    /// Sends an encoded body to `{base_url}/v1/messages` and decodes the whole reply.
    pub async fn send(&self, body: Bytes) -> Result<ChatReply, ProviderError> {
        let body = http::send(self.endpoint.post(body), self.config.read_bounds()).await?;
        let reply: WireReply = http::decode(&body)?;
        Ok(reply.into_chat_reply())
    }

    /// Sends a body encoded with `stream: true` and reads the events as they arrive,
    /// handing text and complete tool calls to `sink`; returns the whole reply at the
    /// end. See "Streaming" in the module doc.
    pub async fn stream(
        &self,
        body: Bytes,
        sink: StreamSink<'_>,
    ) -> Result<ChatReply, ProviderError> {
        let response =
            http::send_streaming(self.endpoint.post(body), self.config.read_bounds()).await?;
        stream::read(response, self.config.read_bounds(), sink).await
    }
}
