//! The context window: which messages of the history are sent to the provider when a
//! session bounds it (`maxContextMessages`, `maxContextTokens`). The stored history
//! stays whole; the leading system messages are always sent; the oldest of the others
//! are left out first; a tool output is never sent without the call it answers.
//!
//! Tokens are estimated, cheaply and provider-independently, as one per four
//! characters of content (rounded up) plus four per message for its framing.

use std::ops::Range;

use crate::message::{Defaults, Message, Role};

/// The estimated tokens of one message.
pub fn estimate_tokens(message: &Message) -> u64 {
    let chars = message.content.chars().count() as u64;
    let calls: u64 = message
        .tool_calls
        .iter()
        .map(|c| (c.name.len() + c.arguments.len()) as u64)
        .sum();
    (chars + calls).div_ceil(4) + 4
}

/// Whether a session with these defaults bounds its context window (else every message
/// is sent).
pub fn is_bounded(defaults: &Defaults) -> bool {
    defaults.max_context_messages.is_some() || defaults.max_context_tokens.is_some()
}

/// The messages (indices into `history` then `staged`) to leave out; empty when the
/// session sets no bound or everything fits.
pub fn left_out(history: &[Message], staged: &[Message], defaults: &Defaults) -> Range<usize> {
    if !is_bounded(defaults) {
        return 0..0;
    }
    let (max_messages, max_tokens) = (defaults.max_context_messages, defaults.max_context_tokens);
    let all = || history.iter().chain(staged);
    let total = history.len() + staged.len();
    let leading = all()
        .take_while(|m| m.role == Role::System && m.tool_call_id.is_none())
        .count();
    let mut start = leading;
    if let Some(max) = max_messages {
        let room = (max as usize).saturating_sub(leading);
        start = start.max(total.saturating_sub(room));
    }
    if let Some(max) = max_tokens {
        let leading_tokens: u64 = all().take(leading).map(estimate_tokens).sum();
        let mut budget = u64::from(max).saturating_sub(leading_tokens);
        let mut fits = total;
        for (i, message) in all()
            .enumerate()
            .skip(leading)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            let cost = estimate_tokens(message);
            if cost > budget {
                break;
            }
            budget -= cost;
            fits = i;
        }
        start = start.max(fits);
    }
    // The newest message is always sent, so that the provider has something to answer.
    start = start.min(total.saturating_sub(1)).max(leading);
    // A tool output whose call was left out goes too.
    while start < total
        && all()
            .nth(start)
            .is_some_and(|m| m.tool_call_id.is_some() && m.role == Role::System)
    {
        start += 1;
    }
    leading..start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Timestamp;
    use crate::message::ToolCall;

    fn msg(role: Role, text: &str) -> Message {
        Message::text(role, text, Timestamp::now())
    }

    fn with_limit(messages: Option<u32>, tokens: Option<u32>) -> Defaults {
        Defaults {
            max_context_messages: messages,
            max_context_tokens: tokens,
            ..Default::default()
        }
    }

    fn history() -> Vec<Message> {
        let mut call = msg(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments: "{}".into(),
        }];
        vec![
            msg(Role::System, "rules"),
            msg(Role::User, "u1"),
            msg(Role::Assistant, "a1"),
            msg(Role::User, "u2"),
            call,
            Message::tool_output("c1", "out", Timestamp::now()),
            msg(Role::User, "u3"),
            msg(Role::Assistant, "a3"),
        ]
    }

    #[test]
    fn no_bound_sends_everything() {
        assert_eq!(left_out(&history(), &[], &Defaults::default()), 0..0);
    }

    #[test]
    fn a_message_bound_keeps_the_leading_system_message_and_the_newest_others() {
        let staged = [msg(Role::User, "u4")];
        assert_eq!(
            left_out(&history(), &staged, &with_limit(Some(4), None)),
            1..6
        );
    }

    #[test]
    fn a_tool_output_never_goes_without_its_call() {
        // Four messages would start at the tool output; it is left out with its call.
        let staged = [msg(Role::User, "u4"), msg(Role::System, "late rule")];
        let range = left_out(&history(), &staged, &with_limit(Some(5), None));
        assert_eq!(range, 1..6);
    }

    #[test]
    fn a_token_bound_leaves_out_the_oldest_first() {
        let staged = [msg(Role::User, "u4")];
        // Each short message costs 5 tokens; "rules" 6; 6 + 3 · 5 = 21.
        assert_eq!(
            left_out(&history(), &staged, &with_limit(None, Some(21))),
            1..6
        );
    }

    #[test]
    fn the_newest_message_is_sent_however_small_the_bound() {
        let staged = [msg(Role::User, "u4")];
        assert_eq!(
            left_out(&history(), &staged, &with_limit(Some(1), Some(1))),
            1..8
        );
    }
}
