//! A session's history written as JSON once and kept: every full answer, every read of
//! the session and every replay of an answer carries the whole history, so instead of
//! writing it out on each one, they copy what was written and only the messages
//! appended since are written. Histories only grow, and
//! a committed message never changes, so what was written stays true.
//!
//! What is kept is bounded by a budget of its own (`HISTORY_CACHE_BYTES`, see
//! [`Account::caches`]): a history that no longer fits lets go of what it kept and is
//! written out on each answer, as without it.

use crate::memory::{Account, Charge};
use crate::message::{self, Message};

/// A history's messages as the API writes them, kept between answers.
#[derive(Debug)]
pub struct EncodedHistory {
    /// The messages written so far, separated by commas, without the brackets.
    bytes: Vec<u8>,
    /// Where each written message's JSON ends in `bytes`.
    ends: Vec<u32>,
    /// What this holds, on the caches' budget; `None` once it did not fit (or when
    /// caches are off): the history is then written out on each answer.
    charge: Option<Charge>,
}

impl EncodedHistory {
    /// Nothing written yet; kept on `caches` (`None`: never kept).
    pub fn new(caches: Option<Account>) -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
            charge: caches.map(|account| account.charge(0)),
        }
    }

    /// The members of the JSON array of `messages`, byte for byte what
    /// [`message::write_history`] writes between its brackets: what was written,
    /// after writing the messages that were not. `messages` must be the history this
    /// is kept for, or the part of it up to some point. `None` when the history is not
    /// kept (it did not fit the budget, or caches are off).
    pub fn members(&mut self, messages: &[Message]) -> Option<&[u8]> {
        // Not kept: nothing to size or write.
        self.charge.as_ref()?;
        if let Some(new) = messages
            .get(self.ends.len()..)
            .filter(|new| !new.is_empty())
        {
            // Room is made here, doubling as a `Vec` would, so that what the budget
            // admits is what the bytes will take (the commas included).
            let needed = self.bytes.len() + message::history_size_hint(new) + new.len();
            let capacity = self.bytes.capacity();
            let room = if needed > capacity {
                needed.max(capacity * 2)
            } else {
                capacity
            };
            let growth = room - capacity + new.len() * size_of::<u32>();
            let fits = self.charge.as_ref()?.account().admit(growth).is_ok();
            if fits {
                self.bytes.reserve_exact(room - self.bytes.len());
            }
            // The size is an estimate: what was written is checked against the budget
            // too once charged.
            if !fits || !self.write(new) || self.charge.as_ref()?.account().admit(0).is_err() {
                // For good: trying again on every answer would cost more than it saves.
                *self = Self::new(None);
                return None;
            }
        }
        let end = match messages.len().checked_sub(1) {
            Some(last) => usize::try_from(self.ends[last]).ok()?,
            None => 0,
        };
        Some(&self.bytes[..end])
    }

    /// Writes `new` after what was written; `false` if the bytes grew past what the
    /// ends can mark (4 GiB).
    fn write(&mut self, new: &[Message]) -> bool {
        for message in new {
            if !self.bytes.is_empty() {
                self.bytes.push(b',');
            }
            message.write_json(&mut self.bytes);
            let Ok(end) = u32::try_from(self.bytes.len()) else {
                return false;
            };
            self.ends.push(end);
        }
        if let Some(charge) = &mut self.charge {
            let held = self.bytes.capacity() + self.ends.capacity() * size_of::<u32>();
            charge.add(held.saturating_sub(charge.bytes()));
        }
        true
    }

    /// Bytes held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.charge.as_ref().map_or(0, Charge::bytes)
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
