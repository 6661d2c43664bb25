//! A request body as both wire protocols are sent: the messages (nearly all of it, and
//! written on every turn) written by hand with `json_text`, first; the other fields
//! (model, tools, settings) as serde writes them.

use bytes::Bytes;
use serde::Serialize;

use super::ProviderError;
use crate::json_text::{self, WriteJson};

/// `{"messages":[…], …fields}`: `messages` written by hand (room for them made from
/// their size hints), then the fields of `fields` (serialised with its messages left
/// out).
pub(super) fn body(
    messages: &[impl WriteJson],
    fields: &impl Serialize,
) -> serde_json::Result<Vec<u8>> {
    let rest = serde_json::to_vec(fields)?;
    let hint = messages.iter().map(WriteJson::size_hint).sum();
    let write = |out: &mut Vec<u8>| {
        json_text::write_array(out, messages, |out, message| message.write_json(out));
    };
    Ok(json_text::object_led_by("messages", hint, write, &rest))
}

/// A body as written, ready to send, or why it could not be written.
pub(super) fn ready(body: serde_json::Result<Vec<u8>>) -> Result<Bytes, ProviderError> {
    body.map(Bytes::from)
        .map_err(|e| ProviderError::InvalidReply(format!("the request could not be encoded: {e}")))
}
