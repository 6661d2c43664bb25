//! Reading Anthropic's streamed reply (module doc, "Streaming"): the server-sent events
//! as they arrive, assembled into pieces for the sink and, at the end, the whole reply.
//! [`Assembly`] is the pure part, fed one event's data at a time; [`read`] drives it
//! from the response. Sending the request and the whole-reply mapping do not belong here.

use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::reply::{ReplyBlock, WireUsage, finish_reason};
use crate::message::ToolCall;
use crate::provider::http::{self, ReadBounds};
use crate::provider::{ChatReply, ProviderError, StreamEvent, StreamSink};

/// Reads the events of a 2xx streamed answer as they arrive, handing text and complete
/// tool calls to `sink`; stops at `message_stop` without waiting for the connection to close.
pub(super) async fn read(
    response: reqwest::Response,
    bounds: ReadBounds,
    sink: StreamSink<'_>,
) -> Result<ChatReply, ProviderError> {
    let mut assembly = Assembly::new(response.status().as_u16());
    let mut events = std::pin::pin!(http::sse_events(response, bounds));
    while let Some(event) = events.next().await {
        if assembly.feed(&event?.data, sink)? == Flow::Done {
            break;
        }
    }
    assembly.finish()
}

/// Whether more events are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    More,
    /// `message_stop` arrived: the reply is complete.
    Done,
}

/// The reply so far, built from the events fed to it in order.
#[derive(Debug)]
pub(super) struct Assembly {
    /// The stream's HTTP status, reported with an `error` event.
    status: u16,
    text: String,
    tool_calls: Vec<ToolCall>,
    /// `tool_use` blocks started and not yet stopped.
    open_calls: Vec<OpenCall>,
    stop_reason: Option<String>,
    usage: WireUsage,
    stopped: bool,
}

/// A `tool_use` block whose input is still arriving.
#[derive(Debug)]
struct OpenCall {
    index: u64,
    id: String,
    name: String,
    /// The input given at `content_block_start` (`{}` from the real API).
    start_input: Value,
    /// The `partial_json` fragments so far.
    json: String,
}

impl Assembly {
    pub(super) fn new(status: u16) -> Self {
        Self {
            status,
            text: String::new(),
            tool_calls: Vec::new(),
            open_calls: Vec::new(),
            stop_reason: None,
            usage: WireUsage::default(),
            stopped: false,
        }
    }

    /// Takes one event's `data` (its `type` names the event), handing what completes to `sink`.
    pub(super) fn feed(&mut self, data: &str, sink: StreamSink<'_>) -> Result<Flow, ProviderError> {
        let event: WireEvent = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidReply(format!("a stream event could not be read: {e}"))
        })?;
        match event {
            WireEvent::MessageStart { message } => self.usage.update(message.usage),
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ReplyBlock::Text { text } => self.push_text(text, sink),
                ReplyBlock::ToolUse { id, name, input } => self.open_calls.push(OpenCall {
                    index,
                    id,
                    name,
                    start_input: input,
                    json: String::new(),
                }),
                ReplyBlock::Other => {}
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.push_text(text, sink),
                BlockDelta::InputJsonDelta { partial_json } => {
                    if let Some(call) = self.open_calls.iter_mut().find(|c| c.index == index) {
                        call.json.push_str(&partial_json);
                    }
                }
                BlockDelta::Other => {}
            },
            WireEvent::ContentBlockStop { index } => {
                if let Some(at) = self.open_calls.iter().position(|c| c.index == index) {
                    let call = self.open_calls.remove(at).finish();
                    sink(StreamEvent::ToolCall(call.clone()));
                    self.tool_calls.push(call);
                }
            }
            WireEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.usage.update(usage);
            }
            WireEvent::MessageStop => {
                self.stopped = true;
                return Ok(Flow::Done);
            }
            // The same `{"type":"error","error":{…}}` envelope as an error answer.
            WireEvent::Error => return Err(http::upstream_error(self.status, data.as_bytes())),
            WireEvent::Other => {}
        }
        Ok(Flow::More)
    }

    /// The whole reply, once `message_stop` has arrived.
    pub(super) fn finish(self) -> Result<ChatReply, ProviderError> {
        if !self.stopped {
            return Err(ProviderError::Transport("stream ended early".into()));
        }
        Ok(ChatReply {
            text: self.text,
            tool_calls: self.tool_calls,
            finish_reason: finish_reason(self.stop_reason.as_deref()),
            usage: self.usage.total(),
        })
    }

    fn push_text(&mut self, text: String, sink: StreamSink<'_>) {
        if !text.is_empty() {
            self.text.push_str(&text);
            sink(StreamEvent::Text(text));
        }
    }
}

impl OpenCall {
    /// The call with its arguments as compact JSON text. No fragment at all means the
    /// input given at the start (`{}` when that is not an object); fragments that do not
    /// parse (an input cut by `max_tokens`) are kept as received rather than lost.
    fn finish(self) -> ToolCall {
        let arguments = if self.json.trim().is_empty() {
            match self.start_input {
                input @ Value::Object(_) => input.to_string(),
                _ => "{}".to_owned(),
            }
        } else {
            match serde_json::from_str::<Value>(&self.json) {
                Ok(input) => input.to_string(),
                Err(_) => self.json,
            }
        };
        ToolCall {
            id: self.id,
            name: self.name,
            arguments,
        }
    }
}

/// One event's data. The SSE `event:` name always equals `type`, so `type` is read.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: ReplyBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop,
    Error,
    /// `ping`, and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Default, Deserialize)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, `citations_delta`…
    #[serde(other)]
    Other,
}
