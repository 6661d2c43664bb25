//! Tool-call ids as the HTTP providers send them: each id once per request. A call
//! whose id an earlier message of the request already used is sent as `<id>_<n>`, and
//! the outputs of its own run answer that new id; a second call with one id in one
//! message is left out. Both the OpenAI and the Anthropic mapping follow this rule.

use std::borrow::Cow;
use std::collections::HashSet;

use crate::message::{Message, ToolCall};

/// A call to send and the id it is sent under.
pub(crate) type SentCall<'a> = (&'a ToolCall, Cow<'a, str>);

/// Rule 10: the ids the calls of one request are sent under, so that no id is sent twice.
pub(crate) struct CallIds<'a> {
    /// Every id a call of the request has, and every id given out: a new id is none of them.
    taken: HashSet<Cow<'a, str>>,
    /// The ids whose first call has been sent.
    sent: HashSet<&'a str>,
}

impl<'a> CallIds<'a> {
    pub(crate) fn new(history: impl Iterator<Item = &'a Message>) -> Self {
        let calls = history.flat_map(|message| &message.tool_calls);
        Self {
            taken: calls.map(|call| Cow::Borrowed(call.id.as_str())).collect(),
            sent: HashSet::new(),
        }
    }

    /// The calls of one assistant message to send, in order: the first call of each id,
    /// under its own id, or under a new one when an earlier message sent that id.
    pub(crate) fn calls(&mut self, calls: &'a [ToolCall]) -> Vec<SentCall<'a>> {
        let mut sent = Vec::with_capacity(calls.len());
        for (index, call) in calls.iter().enumerate() {
            // A second call with one id in one message cannot be told apart from the
            // first by its outputs, so it is left out rather than renamed.
            if calls[..index].iter().any(|c| c.id == call.id) {
                continue;
            }
            let id = if self.sent.insert(&call.id) {
                Cow::Borrowed(call.id.as_str())
            } else {
                Cow::Owned(self.new_id(&call.id))
            };
            sent.push((call, id));
        }
        sent
    }

    /// `<id>_<n>` with the smallest `n` from 2 that is not taken; it matches
    /// `^[a-zA-Z0-9_-]+$` whenever `id` does.
    fn new_id(&mut self, id: &str) -> String {
        let mut n = 2u64;
        loop {
            let candidate = format!("{id}_{n}");
            if !self.taken.contains(candidate.as_str()) {
                self.taken.insert(Cow::Owned(candidate.clone()));
                return candidate;
            }
            n += 1;
        }
    }
}
