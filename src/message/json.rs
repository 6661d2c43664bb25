//! A history as the API shows it, written by hand: byte for byte what serde writes for
//! `[Message]`, with the texts written by [`json_text`]. Every full answer carries its
//! session's whole history, so this runs on every turn over all of it.

use super::{Message, Role, ToolCall};
use crate::json_text;

/// Room for what a message or a tool call writes around its texts.
const FRAME: usize = 80;

impl Message {
    /// Appends the message as JSON, as serde would write it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(match self.role {
            Role::System => br#"{"role":"system","#,
            Role::User => br#"{"role":"user","#,
            Role::Assistant => br#"{"role":"assistant","#,
        });
        json_text::write_member(out, "content", &self.content);
        if !self.tool_calls.is_empty() {
            out.extend_from_slice(br#","toolCalls":"#);
            json_text::write_array(out, &self.tool_calls, |out, call| call.write_json(out));
        }
        if let Some(id) = &self.tool_call_id {
            out.push(b',');
            json_text::write_member(out, "toolCallId", id);
        }
        if self.interrupted {
            out.extend_from_slice(br#","interrupted":true"#);
        }
        out.extend_from_slice(br#","createdAt":"#);
        self.created_at.write_json(out);
        out.push(b'}');
    }

    /// Roughly the bytes [`write_json`](Self::write_json) writes: its texts, plus room
    /// for the rest.
    fn json_size_hint(&self) -> usize {
        FRAME
            + self.content.len()
            + self.tool_call_id.as_ref().map_or(0, String::len)
            + self
                .tool_calls
                .iter()
                .map(|call| FRAME + call.id.len() + call.name.len() + call.arguments.len())
                .sum::<usize>()
    }
}

impl ToolCall {
    /// Appends the call as JSON, as serde would write it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json_text::write_member(out, "id", &self.id);
        out.push(b',');
        json_text::write_member(out, "name", &self.name);
        out.push(b',');
        json_text::write_member(out, "arguments", &self.arguments);
        out.push(b'}');
    }
}

/// Roughly the bytes [`write_history`] writes for `messages`, found in a walk that reads
/// their texts ahead too ([`warm_texts`]): one walk costs less than two, and room made
/// with it spares [`write_history`] its own.
pub fn history_size_hint(messages: &[Message]) -> usize {
    2 + read_ahead(messages, Message::json_size_hint)
}

/// Reads the first byte of every text of `messages`, ahead of writing them out. Each
/// text lies on the heap where its request or reply put it, apart from the others and
/// from the history's list: a cache miss apiece once the session has been out of the
/// cache. Written one after the other, the texts' misses are waited for one at a
/// time; these reads, independent of each other, have their misses overlap, and the
/// writing that follows finds the texts in the cache.
pub fn warm_texts<'a>(messages: impl IntoIterator<Item = &'a Message>) {
    read_ahead(messages, |_| 0);
}

/// Reads the first byte of every text of `messages` (`warm_texts`), and sums `size` of
/// each on the way.
fn read_ahead<'a>(
    messages: impl IntoIterator<Item = &'a Message>,
    size: impl Fn(&Message) -> usize,
) -> usize {
    let (mut any, mut sum) = (0u8, 0);
    for message in messages {
        any ^= message.content.as_bytes().first().copied().unwrap_or(0);
        sum += size(message);
    }
    std::hint::black_box(any);
    sum
}

/// Appends `messages` as a JSON array, as serde would write it. Room for it all is made
/// first, in the walk that reads the texts ahead ([`history_size_hint`]), unless the
/// caller made it already (at least the least each message takes): with that same walk,
/// which has read them.
pub fn write_history(out: &mut Vec<u8>, messages: &[Message]) {
    if out.capacity() - out.len() < messages.len() * FRAME {
        out.reserve(history_size_hint(messages));
    }
    json_text::write_array(out, messages, |out, message| message.write_json(out));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Timestamp, ToolCall};
    use proptest::prelude::*;

    fn written(messages: &[Message]) -> String {
        let mut out = Vec::new();
        write_history(&mut out, messages);
        String::from_utf8(out).unwrap()
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof!["(?s).{0,40}", "[a-z \"\\\\\n\u{1}é🦀]{0,20}"]
    }

    fn any_message() -> impl Strategy<Value = Message> {
        (
            prop_oneof![Just(Role::System), Just(Role::User), Just(Role::Assistant)],
            any_text(),
            prop::collection::vec((any_text(), any_text(), any_text()), 0..3),
            prop::option::of(any_text()),
            any::<bool>(),
            // Year -300 to 12000: the fixed-width years and chrono's alike.
            -71_600_000_000_000i64..316_000_000_000_000,
        )
            .prop_map(|(role, content, calls, id, interrupted, millis)| Message {
                role,
                content: content.into(),
                tool_calls: calls
                    .into_iter()
                    .map(|(id, name, arguments)| ToolCall {
                        id,
                        name,
                        arguments,
                    })
                    .collect(),
                tool_call_id: id,
                interrupted,
                created_at: Timestamp::from_unix_millis(millis).unwrap(),
            })
    }

    #[test]
    fn an_empty_history_and_a_plain_message_are_what_serde_writes() {
        assert_eq!(written(&[]), "[]");
        let message = Message::text(
            Role::User,
            "hi \"there\"",
            Timestamp::from_unix_millis(1_795_000_000_123).unwrap(),
        );
        assert_eq!(
            written(std::slice::from_ref(&message)),
            serde_json::to_string(&[message]).unwrap()
        );
    }

    proptest! {
        #[test]
        fn any_history_is_written_as_serde_writes_it(
            messages in prop::collection::vec(any_message(), 0..6),
        ) {
            prop_assert_eq!(written(&messages), serde_json::to_string(&messages).unwrap());
        }
    }
}
