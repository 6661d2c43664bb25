//! A session and a turn's result as the API shows them, written by hand: byte for byte
//! what serde writes for them (a unit test holds the two together), with the texts
//! written by `json_text` and the keys as constants. Every write answers with one, so
//! this runs on every turn; serde's `flatten` of the head went through its map path,
//! a key and a value at a time. The open-ended parts (defaults, tools, metadata) are
//! small and still go through serde.

use serde::Serialize;

use super::{SessionHead, SessionStatus, SessionView, WrittenSession};
use crate::json_text;
use crate::message::{self, Message};
use crate::provider::FinishReason;
use crate::session::turn::TurnResult;

impl SessionHead<'_> {
    /// Appends the head's members, without braces: what every view of a session starts
    /// with.
    fn write_members(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#""id":"#);
        json_text::write_uuid(out, self.id);
        out.push(b',');
        json_text::write_member(out, "provider", self.provider);
        out.push(b',');
        json_text::write_member(out, "model", self.model);
        out.extend_from_slice(br#","defaults":"#);
        write_by_serde(out, self.defaults);
        out.extend_from_slice(br#","tools":"#);
        write_by_serde(out, self.tools);
        out.extend_from_slice(br#","metadata":"#);
        write_by_serde(out, self.metadata);
        out.extend_from_slice(br#","createdAt":"#);
        self.created_at.write_json(out);
        out.extend_from_slice(br#","updatedAt":"#);
        self.updated_at.write_json(out);
        out.extend_from_slice(br#","version":"#);
        json_text::write_u64(out, self.version);
        out.extend_from_slice(br#","status":"#);
        self.status.write_json(out);
        if let Some(fork) = &self.forked_from {
            out.extend_from_slice(br#","forkedFrom":"#);
            write_by_serde(out, fork);
        }
    }
}

impl SessionStatus {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.busy {
            br#"{"busy":true,"waiting":"#
        } else {
            br#"{"busy":false,"waiting":"#
        });
        json_text::write_u64(out, self.waiting as u64);
        if let Some(id) = self.running_turn_id {
            out.extend_from_slice(br#","runningTurnId":"#);
            json_text::write_uuid(out, id);
        }
        if let Some(at) = self.started_at {
            out.extend_from_slice(br#","startedAt":"#);
            at.write_json(out);
        }
        out.push(b'}');
    }
}

/// Room for a head: its ids, names, times and small settings (large tool schemas or
/// metadata may need more).
const HEAD_SIZE_HINT: usize = 640;

impl SessionView<'_> {
    /// Roughly the bytes [`write_json`](Self::write_json) writes (its walk over the
    /// history reads the texts ahead of their writing: [`message::history_size_hint`]).
    pub fn json_size_hint(&self) -> usize {
        HEAD_SIZE_HINT + history_size_hint(Some(self.messages), self.messages_json)
    }

    /// Appends the session as JSON, its history included.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.head.write_members(out);
        write_history_member(out, "messages", Some(self.messages), self.messages_json);
        out.push(b'}');
    }
}

impl WrittenSession<'_> {
    /// Roughly the bytes [`write_json`](Self::write_json) writes (as
    /// [`SessionView::json_size_hint`]).
    pub fn json_size_hint(&self) -> usize {
        HEAD_SIZE_HINT
            + message::history_size_hint(self.new_messages)
            + history_size_hint(self.messages, self.messages_json)
    }

    /// Appends the session as JSON: what the write appended, and the history unless
    /// the write asked for the delta.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.head.write_members(out);
        write_history_member(out, "newMessages", Some(self.new_messages), None);
        write_history_member(out, "messages", self.messages, self.messages_json);
        out.push(b'}');
    }
}

impl TurnResult {
    /// Roughly the bytes [`write_json`](Self::write_json) writes.
    pub fn json_size_hint(&self) -> usize {
        const FRAME: usize = 200;
        FRAME + self.size_estimate()
    }

    /// Appends the result as JSON, as serde would write it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        json_text::write_member(out, "text", &self.text);
        out.extend_from_slice(br#","toolCalls":"#);
        json_text::write_array(out, &self.tool_calls, |out, call| call.write_json(out));
        out.extend_from_slice(br#","finishReason":"#);
        out.extend_from_slice(match self.finish_reason {
            FinishReason::Stop => br#""stop""#,
            FinishReason::Length => br#""length""#,
            FinishReason::ToolCalls => br#""tool_calls""#,
            FinishReason::Cancelled => br#""cancelled""#,
            FinishReason::Other => br#""other""#,
        });
        out.extend_from_slice(br#","usage":{"inputTokens":"#);
        json_text::write_u64(out, self.usage.input_tokens);
        out.extend_from_slice(br#","outputTokens":"#);
        json_text::write_u64(out, self.usage.output_tokens);
        out.extend_from_slice(b"},");
        json_text::write_member(out, "provider", &self.provider);
        out.push(b',');
        json_text::write_member(out, "model", &self.model);
        if let Some(sent) = self.messages_sent {
            out.extend_from_slice(br#","messagesSent":"#);
            json_text::write_u64(out, sent as u64);
        }
        if let Some(joined) = &self.joined {
            out.extend_from_slice(br#","joined":"#);
            json_text::write_array(out, joined, |out, id| json_text::write_uuid(out, *id));
        }
        out.push(b'}');
    }
}

/// Roughly the bytes of a history, from its kept JSON where there is one.
fn history_size_hint(messages: Option<&[Message]>, json: Option<&[u8]>) -> usize {
    match (json, messages) {
        (Some(json), _) => json.len() + 2,
        (None, messages) => messages.map_or(0, message::history_size_hint),
    }
}

/// `,"name":[…]` when there are messages to show, copied from their kept JSON (the
/// members of the array) where there is one.
fn write_history_member(
    out: &mut Vec<u8>,
    name: &str,
    messages: Option<&[Message]>,
    json: Option<&[u8]>,
) {
    let Some(messages) = messages else {
        return;
    };
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write_history(out, messages, json);
}

/// Appends `messages` as a JSON array, copied from their kept JSON (the members of the
/// array) where there is one.
pub(super) fn write_history(out: &mut Vec<u8>, messages: &[Message], json: Option<&[u8]>) {
    match json {
        Some(members) => {
            out.reserve(members.len() + 2);
            out.push(b'[');
            out.extend_from_slice(members);
            out.push(b']');
        }
        None => message::write_history(out, messages),
    }
}

/// The parts whose shape is open (a JSON Schema, metadata) or rarely there, as serde
/// writes them. Writing into a `Vec` cannot fail, and none of these types refuses to
/// be written (no map keys that are not strings), so there is no error to hand on.
fn write_by_serde(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    let _ = serde_json::to_writer(out, value);
}
