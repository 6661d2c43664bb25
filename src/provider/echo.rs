//! The built-in offline provider: deterministic, no network, no key.
//!
//! Reply: `echo: <content of the last user message>`, or of the last system message when
//! the history has no user message. Usage: `inputTokens` counts the words of every
//! message sent, `outputTokens` the words of the reply. It never calls tools.

use super::{ChatReply, ChatRequest, FinishReason, Usage};
use crate::session::Role;

/// The model name echo reports when a session names none.
pub const DEFAULT_MODEL: &str = "echo-1";

/// The echo provider.
#[derive(Debug, Clone, Default)]
pub struct Echo;

impl Echo {
    pub fn default_model(&self) -> &str {
        DEFAULT_MODEL
    }

    /// Computes the reply from the borrowed history.
    pub fn reply(&self, request: &ChatRequest<'_>) -> ChatReply {
        let last_of = |role: Role| request.messages().rev().find(|m| m.role == role);
        let source = last_of(Role::User)
            .or_else(|| last_of(Role::System))
            .map_or("", |m| m.content.as_str());
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
    use crate::session::{Defaults, Message};
    use crate::timestamp::Timestamp;

    fn request<'a>(history: &'a [Message], staged: &'a [Message]) -> ChatRequest<'a> {
        static DEFAULTS: std::sync::LazyLock<Defaults> =
            std::sync::LazyLock::new(Defaults::default);
        ChatRequest {
            model: DEFAULT_MODEL,
            history,
            staged,
            tools: &[],
            params: &DEFAULTS,
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
        let reply = Echo.reply(&request(&history, &staged));
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
        let reply = Echo.reply(&request(&[], &staged));
        assert_eq!(reply.text, "echo: second rule");
    }
}
