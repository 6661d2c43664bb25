//! The history as Chat Completions messages (the rules are in the parent module's doc,
//! "How the history is sent"). Borrows from the history and copies none of it (only a
//! renamed call id is new text). The rest of the request body (model, tools, settings)
//! lives in `request.rs`.

use std::borrow::Cow;

use super::{FUNCTION, NO_OUTPUT};
use crate::json_text;
use crate::json_text::WriteJson;
use crate::message::{Message, Role};
use crate::provider::call_ids::{CallIds, SentCall};
use crate::provider::{ChatRequest, KeptWire};

/// A Chat Completions message, written out by [`WireMessage::write_json`].
#[derive(Debug, PartialEq)]
pub(super) enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `None` (sent as `null`) only when the message has tool calls and no text.
        content: Option<&'a str>,
        /// Left out when empty.
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: Cow<'a, str>,
        content: &'a str,
    },
    /// Messages of the history written as [`WireMessage::plain`] writes them, kept: one,
    /// or a run of them separated by commas.
    Kept(&'a [u8]),
}

#[derive(Debug, PartialEq)]
pub(super) struct WireToolCall<'a> {
    /// The call's id, or the new one it is sent under.
    id: Cow<'a, str>,
    /// `type`.
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, PartialEq)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> WireMessage<'a> {
    /// A message outside a run of tool outputs, as it stands; an assistant message with
    /// tool calls is [`WireMessage::calling`].
    fn plain(message: &'a Message) -> Self {
        match message.role {
            Role::System => Self::System {
                content: &message.content,
            },
            Role::User => Self::User {
                content: &message.content,
            },
            Role::Assistant => Self::Assistant {
                content: Some(&message.content),
                tool_calls: Vec::new(),
            },
        }
    }

    /// An assistant message with the calls to send (see [`CallIds::calls`]).
    fn calling(message: &'a Message, calls: &[SentCall<'a>]) -> Self {
        Self::Assistant {
            content: (!message.content.is_empty()).then_some(&*message.content),
            tool_calls: calls
                .iter()
                .map(|(call, id)| WireToolCall {
                    id: id.clone(),
                    kind: FUNCTION,
                    function: WireFunctionCall {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                })
                .collect(),
        }
    }
}

impl WriteJson for WireMessage<'_> {
    /// Appends the message as JSON: what serde would write, with the texts written by
    /// [`json_text`] (they are nearly all of a request, and written on every turn).
    fn write_json(&self, out: &mut Vec<u8>) {
        let text = json_text::write_member;
        match self {
            Self::Kept(bytes) => return out.extend_from_slice(bytes),
            Self::System { content } => {
                out.extend_from_slice(br#"{"role":"system","#);
                text(out, "content", content);
            }
            Self::User { content } => {
                out.extend_from_slice(br#"{"role":"user","#);
                text(out, "content", content);
            }
            Self::Assistant {
                content,
                tool_calls,
            } => {
                out.extend_from_slice(br#"{"role":"assistant","#);
                match content {
                    Some(content) => text(out, "content", content),
                    None => out.extend_from_slice(br#""content":null"#),
                }
                if !tool_calls.is_empty() {
                    out.extend_from_slice(br#","tool_calls":"#);
                    json_text::write_array(out, tool_calls, |out, call| {
                        out.push(b'{');
                        text(out, "id", &call.id);
                        out.push(b',');
                        text(out, "type", call.kind);
                        out.extend_from_slice(br#","function":{"#);
                        text(out, "name", call.function.name);
                        out.push(b',');
                        text(out, "arguments", call.function.arguments);
                        out.extend_from_slice(b"}}");
                    });
                }
            }
            Self::Tool {
                tool_call_id,
                content,
            } => {
                out.extend_from_slice(br#"{"role":"tool","#);
                text(out, "tool_call_id", tool_call_id);
                out.push(b',');
                text(out, "content", content);
            }
        }
        out.push(b'}');
    }

    /// Its texts, plus room for the rest.
    fn size_hint(&self) -> usize {
        const FRAME: usize = 48;
        FRAME
            + match self {
                Self::System { content } | Self::User { content } => content.len(),
                Self::Assistant {
                    content,
                    tool_calls,
                } => {
                    content.map_or(0, str::len)
                        + tool_calls
                            .iter()
                            .map(|call| FRAME + call.id.len() + call.function.arguments.len())
                            .sum::<usize>()
                }
                Self::Tool {
                    tool_call_id,
                    content,
                } => tool_call_id.len() + content.len(),
                Self::Kept(bytes) => bytes.len(),
            }
    }
}

fn is_tool_output(message: &&Message) -> bool {
    message.role == Role::System && message.tool_call_id.is_some()
}

/// Maps the history (see the module doc): every assistant message with tool calls is
/// followed by exactly one tool message per call sent, before any other message, and no
/// call id is sent twice. The messages `kept` holds are copied: those it holds from the
/// first in one piece, any later one on its own.
pub(super) fn wire_messages<'a>(
    request: &ChatRequest<'a>,
    kept: KeptWire<'a>,
) -> Vec<WireMessage<'a>> {
    let lead = (request.kept_lead(kept).checked_sub(1))
        .and_then(|last| Some((last + 1, kept.run(0, last)?)));
    // The kept run stands alone, so it has no calls to number.
    let messages = request.numbered_from(lead.map_or(0, |(len, _)| len));
    let mut ids = CallIds::new(messages.clone().map(|(_, message)| message));
    // One wire message per message at least (fillers add to it).
    let mut wire = Vec::with_capacity(messages.size_hint().0 + 1);
    wire.extend(lead.map(|(_, run)| WireMessage::Kept(run)));
    let mut messages = messages.peekable();
    while let Some((index, message)) = messages.next() {
        if message.role != Role::Assistant || message.tool_calls.is_empty() {
            let plain = kept.get(index).map(WireMessage::Kept);
            wire.push(plain.unwrap_or_else(|| WireMessage::plain(message)));
            continue;
        }
        let calls = ids.calls(&message.tool_calls);
        wire.push(WireMessage::calling(message, &calls));
        let run = std::iter::from_fn(|| {
            let (_, output) = messages.next_if(|(_, m)| is_tool_output(m))?;
            Some(output)
        });
        answer_run(&calls, run, &mut wire);
    }
    wire
}

/// Appends `message`, after a comma, as it is sent whatever stands around it: a system
/// message that is not a tool output, a user message, or an assistant message; none
/// with tool calls. Nothing for any other message.
pub(in crate::provider) fn write_alone(message: &Message, out: &mut Vec<u8>) {
    let alone = message.tool_calls.is_empty()
        && (message.role != Role::System || message.tool_call_id.is_none());
    if alone {
        out.push(b',');
        WireMessage::plain(message).write_json(out);
    }
}

/// Appends the tool messages answering `calls` from the tool outputs of their run: the
/// first output for each call, then the filler for each call left without one, then the
/// other outputs as plain system text.
fn answer_run<'a>(
    calls: &[SentCall<'a>],
    run: impl Iterator<Item = &'a Message>,
    wire: &mut Vec<WireMessage<'a>>,
) {
    let mut answered = vec![false; calls.len()];
    let mut as_text = Vec::new();
    for output in run {
        let id = output.tool_call_id.as_deref().unwrap_or_default();
        match calls.iter().position(|(call, _)| call.id == id) {
            Some(index) if !answered[index] => {
                answered[index] = true;
                wire.push(WireMessage::Tool {
                    tool_call_id: calls[index].1.clone(),
                    content: output.tool_output_body().unwrap_or(&output.content),
                });
            }
            _ => as_text.push(WireMessage::System {
                content: &output.content,
            }),
        }
    }
    let unanswered = calls.iter().zip(answered).filter(|(_, done)| !done);
    wire.extend(unanswered.map(|((_, id), _)| WireMessage::Tool {
        tool_call_id: id.clone(),
        content: NO_OUTPUT,
    }));
    wire.extend(as_text);
}
