//! The built-in offline provider: deterministic, no network, no key.
//!
//! Reply: `echo: <content of the last user message>`, or of the last system message when
//! the history has no user message. Usage: `inputTokens` counts the words of every
//! message sent, `outputTokens` the words of the reply. It never calls tools. Streamed,
//! the reply comes word by word, with a configurable pause between words so that
//! streaming can be watched with curl.

use std::time::Duration;

use super::{ChatReply, ChatRequest, FinishReason, StreamEvent, StreamSink, Usage};
use crate::message::Role;

/// The model name echo reports when a session names none.
pub const DEFAULT_MODEL: &str = "echo-1";

/// The echo provider.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    /// Pause before each streamed word.
    stream_delay: Duration,
}

impl Echo {
    /// An echo provider that pauses `stream_delay` before each streamed word.
    pub fn new(stream_delay: Duration) -> Self {
        Self { stream_delay }
    }

    pub fn default_model(&self) -> &str {
        DEFAULT_MODEL
    }

    /// Hands the reply to `sink` word by word (each word with the spaces before it).
    pub async fn stream(&self, reply: ChatReply, sink: StreamSink<'_>) -> ChatReply {
        let mut start = 0;
        let text = reply.text.as_str();
        while start < text.len() {
            let rest = &text[start..];
            let word_start = rest.len() - rest.trim_start().len();
            let word_len = rest[word_start..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - word_start);
            let piece = &rest[..word_start + word_len];
            if !self.stream_delay.is_zero() {
                tokio::time::sleep(self.stream_delay).await;
            }
            sink(StreamEvent::Text(piece.to_owned()));
            start += piece.len();
        }
        reply
    }

    /// Computes the reply from the borrowed history.
    pub fn reply(request: &ChatRequest<'_>) -> ChatReply {
        let last_of = |role: Role| request.messages().rev().find(|m| m.role == role);
        let source = last_of(Role::User)
            .or_else(|| last_of(Role::System))
            .map_or("", |m| &*m.content);
        let text = format!("echo: {source}");
        let input_tokens = request.messages().map(|m| words(&m.content)).sum();
        let output_tokens = words(&text);
        ChatReply {
            text,
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                input_tokens,
                output_tokens,
            },
        }
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Timestamp;
    use crate::message::{Defaults, Message};

    fn request<'a>(history: &'a [Message], staged: &'a [Message]) -> ChatRequest<'a> {
        static DEFAULTS: std::sync::LazyLock<Defaults> =
            std::sync::LazyLock::new(Defaults::default);
        ChatRequest {
            model: DEFAULT_MODEL,
            history,
            staged,
            tools: &[],
            params: &DEFAULTS,
            stream: false,
            left_out: 0..0,
        }
    }

    #[test]
    fn echoes_the_last_user_message_and_counts_words() {
        let now = Timestamp::now();
        let history = [
            Message::text(Role::System, "be brief", now),
            Message::text(Role::User, "first one", now),
            Message::text(Role::Assistant, "echo: first one", now),
        ];
        let staged = [Message::text(Role::User, "hello there world", now)];
        let reply = Echo::reply(&request(&history, &staged));
        assert_eq!(reply.text, "echo: hello there world");
        assert_eq!(reply.usage.input_tokens, 2 + 2 + 3 + 3);
        assert_eq!(reply.usage.output_tokens, 4);
        assert_eq!(reply.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn falls_back_to_the_last_system_message_without_a_user_message() {
        let now = Timestamp::now();
        let staged = [
            Message::text(Role::System, "first rule", now),
            Message::text(Role::System, "second rule", now),
        ];
        let reply = Echo::reply(&request(&[], &staged));
        assert_eq!(reply.text, "echo: second rule");
    }

    #[tokio::test]
    async fn streams_word_by_word_and_the_pieces_make_the_whole_reply() {
        let now = Timestamp::now();
        let staged = [Message::text(Role::User, "one  two three", now)];
        let reply = Echo::reply(&request(&[], &staged));
        let mut pieces = Vec::new();
        let streamed = Echo::default()
            .stream(reply.clone(), &mut |event| pieces.push(event))
            .await;
        assert_eq!(streamed, reply);
        let texts: Vec<_> = pieces
            .iter()
            .map(|p| match p {
                StreamEvent::Text(text) => text.as_str(),
                StreamEvent::ToolCall(_) => "",
            })
            .collect();
        assert_eq!(texts, ["echo:", " one", "  two", " three"]);
    }
}
