//! Reading Anthropic's reply (module doc, "Reply"): the reply body, its content blocks
//! and usage, and the rules the streamed reply shares with it (stop reason, token
//! counts). Reading the event stream lives in `stream`; requests do not belong here.

use serde::Deserialize;
use serde_json::Value;

use crate::message::ToolCall;
use crate::provider::{ChatReply, FinishReason, Usage};

/// A whole (not streamed) reply.
#[derive(Debug, Deserialize)]
pub(super) struct WireReply {
    #[serde(default)]
    content: Vec<ReplyBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

/// A content block of a reply; a streamed `content_block_start` carries one too.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ReplyBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, server tool blocks and whatever comes next: not part of the reply.
    #[serde(other)]
    Other,
}

/// Token counts; any of them may be missing or `null`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Takes the counts `newer` reports. Streamed counts are totals so far, not
    /// increments, so a count replaces the one before it; a missing one keeps it.
    pub(super) fn update(&mut self, newer: WireUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// Input tokens count the cached input tokens (read or written) too.
    pub(super) fn total(&self) -> Usage {
        let count = |n: Option<u64>| n.unwrap_or(0);
        Usage {
            input_tokens: count(self.input_tokens)
                + count(self.cache_creation_input_tokens)
                + count(self.cache_read_input_tokens),
            output_tokens: count(self.output_tokens),
        }
    }
}

/// `end_turn` and `stop_sequence` are stop, `max_tokens` length, `tool_use` tool calls,
/// anything else (`refusal`, `pause_turn`, none…) other.
pub(super) fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}

impl WireReply {
    pub(super) fn into_chat_reply(self) -> ChatReply {
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
        ChatReply {
            text,
            tool_calls,
            finish_reason: finish_reason(self.stop_reason.as_deref()),
            usage: self.usage.total(),
        }
    }
}
