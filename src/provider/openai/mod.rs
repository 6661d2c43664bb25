//! OpenAI Chat Completions (`POST {base}/chat/completions`); the same code serves every
//! configured OpenAI-compatible endpoint. The client lives here; the request body in
//! `request.rs`, the history mapping in `history.rs`, the reply in `reply.rs`, the
//! streamed reply in `stream.rs` (reading) and `chunks.rs` (assembly). Retries, sessions
//! and HTTP routes do not belong here.
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
//!   with the output alone ([`Message::tool_output_body`](crate::message::Message::tool_output_body)).
//! - OpenAI rejects an assistant message whose calls are not all answered by tool messages
//!   right after it, so every call left without an output gets a synthetic tool message
//!   ([`NO_OUTPUT`]) right after the run's tool messages.
//! - Any other tool output goes as a plain system message with its stored text
//!   (`Tool output (<id>): …`): a second output for the same call, an output for a call the
//!   assistant message did not make, or one standing after a user, assistant or plain
//!   system message. Those standing inside a run follow the run's tool messages, since
//!   nothing may come between an assistant message and its tool messages.
//! - Each call id is sent once in the request. Within an assistant message only the first
//!   call with an id is sent: a later one would need a second tool message for the id,
//!   which OpenAI rejects (`Duplicate value for 'tool_call_id'`). A call whose id an
//!   earlier assistant message already used is sent as `<id>_<n>`, with the smallest `n`
//!   from 2 that no call of the request has, and the tool messages of its run (its output
//!   or the filler) name that id. OpenAI is only known to check tool messages against
//!   the assistant message right before them, but some compatible servers reject an id
//!   repeated anywhere in the request; the Anthropic mapping, whose API does too, follows
//!   the same rule. The first call with an id keeps it; outputs sent as text keep their
//!   stored text.
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
//!
//! # Streaming
//!
//! With [`ChatRequest::stream`] set, the body also carries `"stream": true` and
//! `"stream_options": {"include_usage": true}` (neither is sent otherwise). The
//! `text/event-stream` answer is read as it arrives, one `chat.completion.chunk` per
//! `data:` field, until `data: [DONE]`:
//!
//! - The first choice's `delta.content` is handed on as text at once (empty strings are
//!   skipped; a `delta.refusal` counts as text, as in a whole reply). The reply's text is
//!   all of them in order.
//! - `delta.tool_calls` come in fragments keyed by `index`: the first carries `id` and
//!   `function.name`, later ones append to `function.arguments`. A call is handed on
//!   whole when the next one starts, at the `finish_reason`, or at the end of the stream;
//!   the reply lists the calls in index order. Compatible servers bend this: a fragment
//!   with a new `id` and a `name` at an index in use starts another call (Ollama numbers
//!   every parallel call 0), a fragment without `index` continues the last call, and a
//!   call that never got an `id` is given `call_<n>` (`n` its position in the reply).
//! - With `include_usage`, the last chunk before `[DONE]` has empty `choices` and the
//!   usage of the whole request; usage found on any chunk counts (some compatible servers
//!   send it with the finish reason, or with `"choices": null`).
//! - A chunk `{"error": {…}}` or an `event: error`, which some compatible servers send
//!   mid-stream, is an upstream error with the status the stream was answered with and
//!   the error's type and message. A stream that ends with neither `[DONE]` nor a finish
//!   reason broke off: a transport error. A non-2xx answer maps as without streaming.
//! - A server that ignores `stream` and answers `application/json` is read as a whole
//!   reply and handed on in one piece.

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap};

use super::{
    ChatReply, ChatRequest, EndpointError, HttpProviderConfig, KeptWire, ProviderError,
    ReplyLimits, StreamSink, http, wire_json,
};
pub(in crate::provider) use history::write_alone;
use reply::WireReply;
use request::WireRequest;

mod chunks;
mod history;
mod reply;
mod request;
mod stream;
#[cfg(test)]
mod tests;

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
    endpoint: http::Endpoint,
}

impl OpenAi {
    /// Fails when the base URL is not a URL (the configuration checks it first) or the
    /// key cannot be a header value.
    pub fn new(config: HttpProviderConfig) -> Result<Self, EndpointError> {
        let url = format!(
            "{}{CHAT_COMPLETIONS_PATH}",
            config.base_url.trim_end_matches('/')
        );
        let key = config
            .api_key
            .as_ref()
            .map(|key| (AUTHORIZATION, format!("Bearer {}", key.expose())));
        let endpoint = http::Endpoint::new(config.timeout, &url, HeaderMap::new(), key)?;
        Ok(Self { config, endpoint })
    }

    /// The model used when a session names none.
    pub fn default_model(&self) -> Option<&str> {
        self.config.default_model.as_deref()
    }

    /// Bounds on one reply.
    pub fn reply_limits(&self) -> ReplyLimits {
        self.config.reply_limits
    }

    /// Encodes the request body; borrows the history and copies none of it.
    pub fn encode(&self, request: &ChatRequest<'_>) -> Result<Bytes, ProviderError> {
        self.encode_with(request, KeptWire::default())
    }

    /// Encodes the request body, copying the messages of the history `kept` holds
    /// (written by [`write_alone`]) and writing the others.
    pub fn encode_with(
        &self,
        request: &ChatRequest<'_>,
        kept: KeptWire<'_>,
    ) -> Result<Bytes, ProviderError> {
        wire_json::ready(WireRequest::from_request(request, kept).to_json())
    }

    /// Sends a body encoded with `stream: true` and hands each piece of the reply to
    /// `sink` as it arrives (see "Streaming" in the module doc); the whole reply is
    /// returned at the end.
    pub async fn stream(
        &self,
        body: Bytes,
        sink: StreamSink<'_>,
    ) -> Result<ChatReply, ProviderError> {
        let request = self.endpoint.post(body).header(ACCEPT, "text/event-stream");
        let response = http::send_streaming(request, self.config.read_bounds()).await?;
        stream::read(response, self.config.read_bounds(), sink).await
    }

    /// Sends an encoded body and reads the whole reply.
    pub async fn send(&self, body: Bytes) -> Result<ChatReply, ProviderError> {
        let answer = http::send(self.endpoint.post(body), self.config.read_bounds()).await?;
        http::decode::<WireReply>(&answer)?.into_reply()
    }
}
