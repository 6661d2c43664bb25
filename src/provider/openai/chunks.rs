//! A streamed reply put back together from its `chat.completion.chunk`s (the rules are in
//! the parent module's doc, "Streaming"): text deltas handed on at once, tool-call
//! fragments assembled by index, finish reason and usage kept. Pure: it is fed the `data`
//! of one server-sent event at a time and knows nothing of HTTP; reading the stream
//! lives in `stream.rs`.

use serde::{Deserialize, Deserializer};

use super::reply::{WireUsage, finish_reason};
use crate::message::ToolCall;
use crate::provider::{ChatReply, ProviderError, StreamEvent, StreamSink, http};

/// The `data` that ends a stream.
const DONE: &str = "[DONE]";

/// Whether to read on after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    More,
    /// `[DONE]` came: nothing more will.
    Done,
}

/// What has arrived of one streamed reply.
#[derive(Debug)]
pub(super) struct Assembler {
    /// The status the stream was answered with, for errors sent inside it.
    status: u16,
    text: String,
    /// In the order their first fragment came; only the last one may still grow.
    calls: Vec<PartialCall>,
    finish_reason: Option<String>,
    usage: Option<WireUsage>,
    done: bool,
}

#[derive(Debug)]
struct PartialCall {
    /// The `index` its fragments carry.
    index: usize,
    id: String,
    name: String,
    arguments: String,
    /// Already given to the sink.
    handed_on: bool,
}

impl Assembler {
    pub(super) fn new(status: u16) -> Self {
        Self {
            status,
            text: String::new(),
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Reads the `data` of one event and hands what it completes to `sink`.
    pub(super) fn push(&mut self, data: &str, sink: StreamSink<'_>) -> Result<Step, ProviderError> {
        let data = data.trim();
        if data == DONE {
            self.done = true;
            return Ok(Step::Done);
        }
        if data.is_empty() {
            return Ok(Step::More);
        }
        let chunk: WireChunk = serde_json::from_str(data).map_err(|e| {
            ProviderError::InvalidReply(format!("a chunk of the stream could not be read: {e}"))
        })?;
        if chunk.error.as_ref().is_some_and(|error| !error.is_null()) {
            return Err(http::upstream_error(self.status, data.as_bytes()));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        // Only the first choice is read, as in a whole reply (we never ask for `n` > 1).
        for choice in chunk.choices.into_iter().filter(|choice| choice.index == 0) {
            let WireDelta {
                content,
                refusal,
                tool_calls,
            } = choice.delta;
            for text in [content, refusal].into_iter().flatten() {
                if !text.is_empty() {
                    self.text.push_str(&text);
                    sink(StreamEvent::Text(text));
                }
            }
            for fragment in tool_calls {
                self.add_fragment(fragment, sink);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
                self.hand_on_calls(sink);
            }
        }
        Ok(Step::More)
    }

    /// The whole reply, once the stream has ended; a stream that ended with neither
    /// `[DONE]` nor a finish reason broke off.
    pub(super) fn finish(mut self, sink: StreamSink<'_>) -> Result<ChatReply, ProviderError> {
        if !self.done && self.finish_reason.is_none() {
            return Err(ProviderError::Transport("stream ended early".to_owned()));
        }
        self.hand_on_calls(sink);
        // Stable: calls sharing an index (see `starts_another`) keep their order.
        self.calls.sort_by_key(|call| call.index);
        Ok(ChatReply {
            text: self.text,
            tool_calls: self
                .calls
                .into_iter()
                .map(PartialCall::into_tool_call)
                .collect(),
            finish_reason: finish_reason(self.finish_reason.as_deref()),
            usage: self.usage.unwrap_or_default().into(),
        })
    }

    fn add_fragment(&mut self, fragment: WireToolCallDelta, sink: StreamSink<'_>) {
        let WireToolCallDelta {
            index,
            id,
            function,
        } = fragment;
        let id = id.filter(|id| !id.is_empty());
        let name = function.name.filter(|name| !name.is_empty());
        let index = index
            .or_else(|| self.calls.last().map(|call| call.index))
            .unwrap_or_default();
        let existing = self
            .calls
            .iter()
            .rposition(|call| call.index == index)
            .filter(|&at| !self.calls[at].starts_another(id.as_deref(), name.is_some()));
        let at = existing.unwrap_or_else(|| {
            self.hand_on_calls(sink);
            self.calls.push(PartialCall::new(index));
            self.calls.len() - 1
        });
        let call = &mut self.calls[at];
        if call.handed_on {
            tracing::warn!(
                index,
                "a tool call fragment came after its call was handed on"
            );
        }
        if let Some(id) = id.filter(|_| call.id.is_empty()) {
            call.id = id;
        }
        if let Some(name) = name.filter(|_| call.name.is_empty()) {
            call.name = name;
        }
        if let Some(arguments) = function.arguments {
            call.arguments.push_str(&arguments);
        }
    }

    /// Hands every call not yet handed on to `sink`, giving an id to those without one.
    fn hand_on_calls(&mut self, sink: StreamSink<'_>) {
        for (position, call) in self.calls.iter_mut().enumerate() {
            if call.handed_on {
                continue;
            }
            call.handed_on = true;
            if call.id.is_empty() {
                call.id = format!("call_{position}");
            }
            sink(StreamEvent::ToolCall(call.to_tool_call()));
        }
    }
}

impl PartialCall {
    fn new(index: usize) -> Self {
        Self {
            index,
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
            handed_on: false,
        }
    }

    /// A fragment with an id of its own and a name is the start of another call even at
    /// this call's index: Ollama numbers every parallel call 0. Servers that repeat the
    /// id (or send a fresh one) on every argument fragment send no name with them.
    fn starts_another(&self, id: Option<&str>, has_name: bool) -> bool {
        has_name && id.is_some_and(|id| !self.id.is_empty() && self.id != id)
    }

    fn to_tool_call(&self) -> ToolCall {
        ToolCall {
            id: self.id.clone(),
            name: self.name.clone(),
            arguments: self.arguments.clone(),
        }
    }

    fn into_tool_call(self) -> ToolCall {
        ToolCall {
            id: self.id,
            name: self.name,
            arguments: self.arguments,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Chunk wire format: only the fields we read. Compatible servers send `null` where
// OpenAI leaves a field out, so lists and objects read `null` as empty.

#[derive(Debug, Deserialize)]
struct WireChunk {
    #[serde(default, deserialize_with = "null_as_default")]
    choices: Vec<WireChunkChoice>,
    /// Set (with empty `choices`) on the last chunk when `include_usage` was asked for.
    #[serde(default)]
    usage: Option<WireUsage>,
    /// Some compatible servers report a failure inside the stream this way.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    delta: WireDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    tool_calls: Vec<WireToolCallDelta>,
}

#[derive(Debug, Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    function: WireFunctionDelta,
}

#[derive(Debug, Default, Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
