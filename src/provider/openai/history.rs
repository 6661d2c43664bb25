//! The history as Chat Completions messages (the rules are in the parent module's doc,
//! "How the history is sent"). Borrows from the history and copies none of it. The rest
//! of the request body (model, tools, settings) lives in `request.rs`.

use serde::Serialize;

use super::{FUNCTION, NO_OUTPUT};
use crate::session::{Message, Role};

#[derive(Debug, PartialEq, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
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
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

#[derive(Debug, PartialEq, Serialize)]
pub(super) struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunctionCall<'a>,
}

#[derive(Debug, PartialEq, Serialize)]
struct WireFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl<'a> WireMessage<'a> {
    /// A message outside a run of tool outputs, as it stands.
    fn plain(message: &'a Message) -> Self {
        match message.role {
            Role::System => Self::System {
                content: &message.content,
            },
            Role::User => Self::User {
                content: &message.content,
            },
            Role::Assistant => Self::Assistant {
                content: (!message.content.is_empty() || message.tool_calls.is_empty())
                    .then_some(message.content.as_str()),
                tool_calls: message
                    .tool_calls
                    .iter()
                    .map(|call| WireToolCall {
                        id: &call.id,
                        kind: FUNCTION,
                        function: WireFunctionCall {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    })
                    .collect(),
            },
        }
    }
}

fn is_tool_output(message: &Message) -> bool {
    message.role == Role::System && message.tool_call_id.is_some()
}

/// Maps the history (see the module doc): every assistant message with tool calls is
/// followed by exactly one tool message per call, before any other message.
pub(super) fn wire_messages<'a>(
    messages: impl Iterator<Item = &'a Message>,
) -> Vec<WireMessage<'a>> {
    let mut messages = messages.peekable();
    let mut wire = Vec::new();
    while let Some(message) = messages.next() {
        wire.push(WireMessage::plain(message));
        if message.role != Role::Assistant || message.tool_calls.is_empty() {
            continue;
        }
        let calls = &message.tool_calls;
        let mut answered = vec![false; calls.len()];
        let mut as_text = Vec::new();
        while let Some(output) = messages.next_if(|next| is_tool_output(next)) {
            let id = output.tool_call_id.as_deref().unwrap_or_default();
            match calls.iter().position(|call| call.id == id) {
                Some(index) if !answered[index] => {
                    answered[index] = true;
                    wire.push(WireMessage::Tool {
                        tool_call_id: id,
                        content: output.tool_output_body().unwrap_or(&output.content),
                    });
                }
                _ => as_text.push(WireMessage::System {
                    content: &output.content,
                }),
            }
        }
        let unanswered = calls.iter().zip(answered).filter(|(_, done)| !done);
        wire.extend(unanswered.map(|(call, _)| WireMessage::Tool {
            tool_call_id: &call.id,
            content: NO_OUTPUT,
        }));
        wire.extend(as_text);
    }
    wire
}
