//! The non-streaming reply (`chat.completion`) read into a [`ChatReply`], and what the
//! streamed reply shares with it (usage, finish reasons). Only the fields we read; the
//! chunks of a streamed reply live in `stream.rs`.

use serde::Deserialize;

use crate::message::ToolCall;
use crate::provider::{ChatReply, FinishReason, ProviderError, Usage};

#[derive(Debug, Deserialize)]
pub(super) struct WireReply {
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

/// Token counts, in a reply or in the last chunk of a streamed one.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Usage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        }
    }
}

impl WireReply {
    pub(super) fn into_reply(self) -> Result<ChatReply, ProviderError> {
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
        Ok(ChatReply {
            text: message.content.or(message.refusal).unwrap_or_default(),
            tool_calls,
            finish_reason: finish_reason(choice.finish_reason.as_deref()),
            usage: self.usage.unwrap_or_default().into(),
        })
    }
}

pub(super) fn finish_reason(reason: Option<&str>) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}
