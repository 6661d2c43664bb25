//! Everything that talks to an LLM provider, behind neutral request and reply types.
//!
//! One module per wire protocol (`echo`, `openai`, `anthropic`); `Provider` is a closed
//! enum dispatched by `match`. A call has two steps so that no lock is held across an
//! `.await` and no history is copied: [`Provider::prepare`] borrows the committed
//! history and encodes the request (synchronously, under the history's read lock),
//! then [`Provider::send`] performs it. Sessions, turns and HTTP routes do not belong here.

pub mod anthropic;
mod call_ids;
pub mod echo;
mod http;
mod kept;
pub mod openai;
mod registry;
mod wire_json;

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use crate::message::{Defaults, Message, Tool, ToolCall};
use crate::secret::Secret;

pub use http::EndpointError;
pub use kept::KeptWire;
pub use registry::{ProviderRegistry, UnknownProvider};

/// What a provider is asked: the whole history (committed, then this turn's new
/// messages), the session's tools and generation settings.
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    pub model: &'a str,
    /// The session's committed history.
    pub history: &'a [Message],
    /// The messages this turn adds before the reply (instructions, user message).
    pub staged: &'a [Message],
    pub tools: &'a [Tool],
    pub params: &'a Defaults,
    /// Ask the provider for its streaming mode (deltas as they are generated).
    pub stream: bool,
    /// Messages (indices into `history` then `staged`) not to send: the context window.
    pub left_out: std::ops::Range<usize>,
}

impl<'a> ChatRequest<'a> {
    /// Every message to send, oldest first (all but those `left_out`).
    pub fn messages(&self) -> impl DoubleEndedIterator<Item = &'a Message> + Clone + 'a {
        self.numbered_from(0).map(|(_, message)| message)
    }

    /// Every message to send from index `from` on, with its index (into `history` then
    /// `staged`), oldest first.
    pub fn numbered_from(
        &self,
        from: usize,
    ) -> impl DoubleEndedIterator<Item = (usize, &'a Message)> + Clone + 'a {
        let sent = |slice: &'a [Message], offset: usize| {
            let clamp = |i: usize| i.saturating_sub(offset).min(slice.len());
            let (start, end) = (clamp(self.left_out.start), clamp(self.left_out.end));
            let end = end.max(start);
            let from = clamp(from);
            let (before, after) = (from.min(start), from.max(end));
            let before = slice[before..start]
                .iter()
                .enumerate()
                .map(move |(i, m)| (before + i, m));
            let after = slice[after..]
                .iter()
                .enumerate()
                .map(move |(i, m)| (after + i, m));
            before.chain(after).map(move |(i, m)| (offset + i, m))
        };
        sent(self.history, 0).chain(sent(self.staged, self.history.len()))
    }

    /// How many of the messages sent first are all kept in `kept`, one run of it.
    pub fn kept_lead(&self, kept: KeptWire<'_>) -> usize {
        let window = match self.left_out.is_empty() {
            true => usize::MAX,
            false => self.left_out.start,
        };
        kept.leading().min(window).min(self.history.len())
    }

    /// How many messages are sent.
    pub fn sent(&self) -> usize {
        self.history.len() + self.staged.len() - self.left_out.len()
    }
}

/// What a provider answered, in neutral form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// A piece of a reply as it streams in.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// More reply text.
    Text(String),
    /// A tool call, once its id, name and arguments are complete.
    ToolCall(ToolCall),
}

/// Receives the pieces of a streamed reply as they arrive.
pub type StreamSink<'a> = &'a mut (dyn FnMut(StreamEvent) + Send);

/// Why the generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    Cancelled,
    Other,
}

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Why a provider call failed. None of these ever carries a key.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with a non-success status.
    #[error("the provider answered {status} ({kind}): {message}")]
    Upstream {
        status: u16,
        /// The provider's own error type, e.g. `invalid_request_error`.
        kind: String,
        /// The provider's message, or the start of its body.
        message: String,
        /// How long the provider asked us to wait before trying again (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The provider could not be reached or the connection broke.
    #[error("could not reach the provider: {0}")]
    Transport(String),
    /// The provider did not answer within the configured timeout.
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
    /// The provider answered 2xx with something we cannot read.
    #[error("the provider's reply could not be read: {0}")]
    InvalidReply(String),
    /// The reply passed a bound (`MAX_REPLY_BYTES`, `MAX_TOOL_CALLS_PER_REPLY`); what had
    /// arrived was dropped.
    #[error("the provider's reply is too large: {0}")]
    TooLarge(String),
}

impl ProviderError {
    /// Whether trying the same call again may succeed: rate limits, server errors,
    /// overload or server errors reported inside a 200 stream, and broken connections.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Upstream { status, kind, .. } => {
                let in_stream = (200..300).contains(status);
                *status == 429
                    || *status >= 500
                    || in_stream
                        && matches!(
                            kind.as_str(),
                            "overloaded_error" | "rate_limit_error" | "api_error" | "server_error"
                        )
            }
            ProviderError::Transport(_) => true,
            ProviderError::Timeout(_)
            | ProviderError::InvalidReply(_)
            | ProviderError::TooLarge(_) => false,
        }
    }

    /// The provider's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short name for metrics: `rate_limited`, `upstream_4xx`, `upstream_5xx`,
    /// `stream_error`, `transport`, `timeout`, `invalid_reply` or `too_large`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Upstream { status: 429, .. } => "rate_limited",
            ProviderError::Upstream { status, .. } if (400..500).contains(status) => "upstream_4xx",
            ProviderError::Upstream { status, .. } if *status >= 500 => "upstream_5xx",
            ProviderError::Upstream { .. } => "stream_error",
            ProviderError::Transport(_) => "transport",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::InvalidReply(_) => "invalid_reply",
            ProviderError::TooLarge(_) => "too_large",
        }
    }
}

/// A request encoded for one provider, ready to send.
#[derive(Debug, Clone)]
pub enum PreparedCall {
    /// The echo provider computes its reply while it borrows the history.
    Echo(ChatReply),
    /// A JSON body for an HTTP provider.
    Http(Bytes),
}

/// How to reach one HTTP provider; built from the configuration.
#[derive(Debug, Clone)]
pub struct HttpProviderConfig {
    /// The name sessions use, e.g. `openai` or `ollama`.
    pub name: String,
    /// The base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// The model used when a session names none; `None` makes the model required.
    pub default_model: Option<String>,
    /// Bound on one whole provider request.
    pub timeout: Duration,
    /// Bounds on one reply.
    pub reply_limits: ReplyLimits,
}

impl HttpProviderConfig {
    fn read_bounds(&self) -> http::ReadBounds {
        http::ReadBounds {
            timeout: self.timeout,
            max_bytes: self.reply_limits.max_bytes,
        }
    }
}

/// Bounds on what one provider reply may make us hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Bytes read for one answer, a body or a stream (`MAX_REPLY_BYTES`).
    pub max_bytes: usize,
    /// Tool calls in one reply (`MAX_TOOL_CALLS_PER_REPLY`).
    pub max_tool_calls: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            max_bytes: 32 * 1024 * 1024,
            max_tool_calls: 256,
        }
    }
}

impl ReplyLimits {
    /// Fails a reply with more tool calls than allowed.
    fn check(&self, reply: ChatReply) -> Result<ChatReply, ProviderError> {
        if reply.tool_calls.len() > self.max_tool_calls {
            return Err(ProviderError::TooLarge(format!(
                "{} tool calls, more than MAX_TOOL_CALLS_PER_REPLY ({})",
                reply.tool_calls.len(),
                self.max_tool_calls
            )));
        }
        Ok(reply)
    }
}

/// One configured provider.
#[derive(Debug)]
pub enum Provider {
    Echo(echo::Echo),
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
}

impl Provider {
    /// The wire protocol's name: `echo`, `openai` or `anthropic`.
    pub fn protocol(&self) -> &'static str {
        match self {
            Provider::Echo(_) => "echo",
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
        }
    }

    /// The model used when a session names none.
    pub fn default_model(&self) -> Option<&str> {
        match self {
            Provider::Echo(p) => Some(p.default_model()),
            Provider::OpenAi(p) => p.default_model(),
            Provider::Anthropic(p) => p.default_model(),
        }
    }

    /// Encodes the request, copying the messages of the history `kept` holds; runs
    /// synchronously while the history is borrowed.
    pub fn prepare(
        &self,
        request: &ChatRequest<'_>,
        kept: KeptWire<'_>,
    ) -> Result<PreparedCall, ProviderError> {
        // The HTTP providers write every text sent but those kept; the echo provider
        // reads the last.
        if !matches!(self, Provider::Echo(_)) {
            let rest = request.numbered_from(request.kept_lead(kept));
            let written = rest.filter(|(i, _)| kept.get(*i).is_none());
            crate::message::warm_texts(written.map(|(_, message)| message));
        }
        match self {
            Provider::Echo(_) => Ok(PreparedCall::Echo(echo::Echo::reply(request))),
            Provider::OpenAi(p) => p.encode_with(request, kept).map(PreparedCall::Http),
            Provider::Anthropic(p) => p.encode_with(request, kept).map(PreparedCall::Http),
        }
    }

    /// Whether this provider's requests copy kept messages ([`write_alone`](Self::write_alone)).
    pub fn keeps_messages(&self) -> bool {
        !matches!(self, Provider::Echo(_))
    }

    /// Appends `message`, after a comma, as this provider sends it where that depends on
    /// the message alone (OpenAI: the message; Anthropic: its one content block), for a
    /// session to keep (the form [`KeptWire`] reads); nothing for any other message, or
    /// on the echo provider.
    pub fn write_alone(&self, message: &Message, out: &mut Vec<u8>) {
        match self {
            Provider::Echo(_) => {}
            Provider::OpenAi(_) => openai::write_alone(message, out),
            Provider::Anthropic(_) => anthropic::write_alone(message, out),
        }
    }

    /// Bounds on one reply of this provider (the echo provider's replies are bounded
    /// by what they echo).
    fn reply_limits(&self) -> ReplyLimits {
        match self {
            Provider::Echo(_) => ReplyLimits {
                max_bytes: usize::MAX,
                max_tool_calls: usize::MAX,
            },
            Provider::OpenAi(p) => p.reply_limits(),
            Provider::Anthropic(p) => p.reply_limits(),
        }
    }

    /// Performs a call prepared with `stream: true`, handing each piece of the reply to
    /// `sink` as it arrives; the whole reply is returned at the end. Tool calls past
    /// `MAX_TOOL_CALLS_PER_REPLY` are not handed on, and the reply fails.
    pub async fn stream(
        &self,
        call: PreparedCall,
        sink: StreamSink<'_>,
    ) -> Result<ChatReply, ProviderError> {
        let limits = self.reply_limits();
        let mut tool_calls = 0;
        let sink = &mut |event: StreamEvent| {
            if let StreamEvent::ToolCall(_) = event {
                tool_calls += 1;
                if tool_calls > limits.max_tool_calls {
                    return;
                }
            }
            sink(event)
        };
        let reply = match (self, call) {
            (Provider::Echo(p), PreparedCall::Echo(reply)) => Ok(p.stream(reply, sink).await),
            (Provider::OpenAi(p), PreparedCall::Http(body)) => p.stream(body, sink).await,
            (Provider::Anthropic(p), PreparedCall::Http(body)) => p.stream(body, sink).await,
            (_, call) => Err(mismatched(&call)),
        };
        limits.check(reply?)
    }

    /// Performs a prepared call.
    pub async fn send(&self, call: PreparedCall) -> Result<ChatReply, ProviderError> {
        let reply = match (self, call) {
            (_, PreparedCall::Echo(reply)) => Ok(reply),
            (Provider::OpenAi(p), PreparedCall::Http(body)) => p.send(body).await,
            (Provider::Anthropic(p), PreparedCall::Http(body)) => p.send(body).await,
            (Provider::Echo(_), call) => Err(mismatched(&call)),
        };
        self.reply_limits().check(reply?)
    }
}

/// A call prepared by one provider and sent by another: a bug, reported, never a panic.
fn mismatched(call: &PreparedCall) -> ProviderError {
    let kind = match call {
        PreparedCall::Echo(_) => "an echo",
        PreparedCall::Http(_) => "an HTTP",
    };
    ProviderError::InvalidReply(format!("{kind} call was sent to another provider"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16, kind: &str) -> ProviderError {
        ProviderError::Upstream {
            status,
            kind: kind.into(),
            message: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn rate_limits_server_errors_stream_overloads_and_broken_connections_are_retryable() {
        assert!(upstream(429, "rate_limit_error").is_retryable());
        assert!(upstream(503, "http_error").is_retryable());
        assert!(upstream(529, "overloaded_error").is_retryable());
        assert!(upstream(200, "overloaded_error").is_retryable());
        assert!(ProviderError::Transport("reset".into()).is_retryable());
    }

    #[test]
    fn client_errors_timeouts_and_unreadable_replies_are_not_retried() {
        assert!(!upstream(400, "server_error").is_retryable());
        assert!(!upstream(401, "authentication_error").is_retryable());
        assert!(!upstream(200, "invalid_request_error").is_retryable());
        assert!(!ProviderError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!ProviderError::InvalidReply("?".into()).is_retryable());
    }
}
