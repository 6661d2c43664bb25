//! A session's history as the API shows it, written as JSON once and kept (see
//! [`KeptJson`]): every full answer, every read of the session and every replay of an
//! answer carries the whole history, so instead of writing it out on each one, they
//! copy what was written and only the messages appended since are written.

use crate::memory::Account;
use crate::message::{self, Message};
use crate::session::kept::KeptJson;

/// A history's messages as the API writes them, kept between answers.
#[derive(Debug)]
pub struct EncodedHistory(KeptJson);

impl EncodedHistory {
    /// Nothing written yet; kept on `caches` (`None`: never kept).
    pub fn new(caches: Option<Account>) -> Self {
        Self(KeptJson::new(caches))
    }

    /// The members of the JSON array of `messages`, byte for byte what
    /// [`message::write_history`] writes between its brackets: what was written,
    /// after writing the messages that were not. `messages` must be the history this
    /// is kept for, or the part of it up to some point. `None` when the history is not
    /// kept (it did not fit the budget, or caches are off).
    pub fn members(&mut self, messages: &[Message]) -> Option<&[u8]> {
        // Separated by commas: the members up to any message are one run of bytes.
        let size_hint = |new: &[Message]| message::history_size_hint(new) + new.len();
        let write = |message: &Message, out: &mut Vec<u8>| {
            if !out.is_empty() {
                out.push(b',');
            }
            message.write_json(out);
        };
        if !self.0.extend(messages, size_hint, write) {
            return None;
        }
        let end = match messages.len().checked_sub(1) {
            Some(last) => usize::try_from(self.0.ends()[last]).ok()?,
            None => 0,
        };
        Some(&self.0.bytes()[..end])
    }

    /// Bytes held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.0.held()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::memory::MemoryBudget;
    use crate::message::{Role, Timestamp, ToolCall};

    fn history(n: usize) -> Vec<Message> {
        let at = Timestamp::from_unix_millis(1_795_000_000_123).unwrap();
        (0..n)
            .map(|i| {
                let mut message = Message::text(
                    [Role::System, Role::User, Role::Assistant][i % 3],
                    format!("message {i}: \"quoted\"\n{}", "x".repeat(i * 7)),
                    at,
                );
                if i % 5 == 4 {
                    message.tool_calls = vec![ToolCall {
                        id: format!("call_{i}"),
                        name: "lookup".into(),
                        arguments: "{\"q\":1}".into(),
                    }];
                }
                message
            })
            .collect()
    }

    /// A history kept on a caches' budget of `caches` bytes (0: caches off).
    fn kept_on(caches: usize) -> (Arc<MemoryBudget>, EncodedHistory) {
        let budget = MemoryBudget::with_caches(usize::MAX, usize::MAX, caches);
        let encoded = EncodedHistory::new(budget.account(None).caches());
        (budget, encoded)
    }

    fn written(messages: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        message::write_history(&mut out, messages);
        out
    }

    fn bracketed(members: &[u8]) -> Vec<u8> {
        [b"[", members, b"]"].concat()
    }

    #[test]
    fn what_it_keeps_is_what_the_history_writes_at_every_length_asked_in_any_order() {
        let messages = history(40);
        let (budget, mut encoded) = kept_on(usize::MAX);
        for len in [0, 1, 2, 5, 3, 17, 40, 0, 39, 12, 40] {
            let members = encoded.members(&messages[..len]).unwrap();
            assert_eq!(bracketed(members), written(&messages[..len]), "at {len}");
        }
        assert!(encoded.held() >= written(&messages).len());
        assert_eq!(budget.held_by_caches(), encoded.held());
        drop(encoded);
        assert_eq!(budget.held_by_caches(), 0);
    }

    #[test]
    fn a_history_past_the_budget_lets_go_of_what_it_kept_and_is_not_kept_again() {
        let messages = history(30);
        let (budget, mut encoded) = kept_on(2_000);
        assert!(encoded.members(&messages[..3]).is_some());
        assert!(budget.held_by_caches() > 0);
        assert_eq!(encoded.members(&messages), None);
        assert_eq!(budget.held_by_caches(), 0);
        assert_eq!(encoded.members(&messages[..3]), None);
        assert_eq!(budget.held_by_caches(), 0);
    }

    #[test]
    fn what_it_holds_stays_within_the_budget_as_the_history_grows() {
        let messages = history(200);
        let (budget, mut encoded) = kept_on(10_000);
        let mut kept = 0;
        for len in 1..=messages.len() {
            if encoded.members(&messages[..len]).is_none() {
                break;
            }
            kept = len;
            assert!(
                budget.held_by_caches() <= 10_000,
                "{}",
                budget.held_by_caches()
            );
        }
        assert!(kept > 10, "kept {kept}");
        assert_eq!(budget.held_by_caches(), 0);
    }

    #[test]
    fn with_caches_off_nothing_is_kept() {
        let (budget, mut encoded) = kept_on(0);
        assert_eq!(encoded.members(&history(3)), None);
        assert_eq!(budget.held_by_caches(), 0);
    }
}
