//! How a history becomes Anthropic's `system` field and `messages` list: rules 1–10 of
//! the module doc, so that any history gives a request the real API accepts. The rest of
//! the body (settings, tools) lives in `request`; replies do not belong here.

use std::borrow::Cow;

use serde_json::Value;

use super::request::{Block, WireMessage, WireRole};
use crate::message::{Message, Role};
use crate::provider::KeptWire;
use crate::provider::call_ids::{CallIds, SentCall};

/// Marks a system message that stands mid-history (rule 2).
pub(super) const SYSTEM_PREFIX: &str = "[System instruction] ";
/// The user message put first when the messages would not start with one (rule 7).
pub(super) const CONVERSATION_START: &str = "(The conversation starts here.)";
/// The user message put last when the messages would end with an assistant one (rule 9).
pub(super) const CONTINUE: &str = "(Continue.)";
/// Stands for an assistant message with neither text nor calls (rule 5).
pub(super) const EMPTY_REPLY: &str = "(empty reply)";
/// Stands for an empty tool output (rule 3).
pub(super) const EMPTY_OUTPUT: &str = "(empty output)";
/// The error result of a call left without output (rule 4).
pub(super) const MISSING_OUTPUT: &str = "No output was provided for this tool call.";

/// Messages under construction: blocks of the same role as the last message join it.
#[derive(Default)]
struct Conversation<'a> {
    messages: Vec<WireMessage<'a>>,
}

impl<'a> Conversation<'a> {
    fn push(&mut self, role: WireRole, blocks: impl IntoIterator<Item = Block<'a>>) {
        let mut blocks = blocks.into_iter().peekable();
        if blocks.peek().is_none() {
            return;
        }
        match self.messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.messages.push(WireMessage {
                role,
                content: blocks.collect(),
            }),
        }
    }

    /// Rules 7 and 9: the first and the last message are user messages.
    fn finish(mut self) -> Vec<WireMessage<'a>> {
        let placeholder = |text: &'static str| WireMessage {
            role: WireRole::User,
            content: vec![Block::Text {
                text: Cow::Borrowed(text),
            }],
        };
        if self
            .messages
            .first()
            .is_none_or(|m| m.role == WireRole::Assistant)
        {
            self.messages.insert(0, placeholder(CONVERSATION_START));
        }
        if self
            .messages
            .last()
            .is_some_and(|m| m.role == WireRole::Assistant)
        {
            self.messages.push(placeholder(CONTINUE));
        }
        self.messages
    }
}

/// Maps the history to `system` and `messages` (rules 1–10 of the module doc).
/// `history` comes with each message's index in the session's history, by which the
/// blocks `kept` holds are copied.
pub(super) fn map_history<'a>(
    history: impl Iterator<Item = (usize, &'a Message)> + Clone,
    kept: KeptWire<'a>,
) -> (Option<Cow<'a, str>>, Vec<WireMessage<'a>>) {
    let mut ids = CallIds::new(history.clone().map(|(_, message)| message));
    let mut history = history.peekable();
    let mut leading = Vec::new();
    while let Some((_, message)) = history.next_if(|(_, m)| m.role == Role::System) {
        if !is_blank(&message.content) {
            leading.push(&*message.content);
        }
    }
    let system = match leading.as_slice() {
        [] => None,
        [one] => Some(Cow::Borrowed(*one)),
        many => Some(Cow::Owned(many.join("\n\n"))),
    };

    let mut conversation = Conversation::default();
    while let Some((index, message)) = history.next() {
        // A message kept is its one block (`write_alone`), whatever its role.
        if let Some(json) = kept.get(index) {
            let role = match message.role {
                Role::Assistant => WireRole::Assistant,
                Role::User | Role::System => WireRole::User,
            };
            conversation.push(role, [Block::Kept(json)]);
            continue;
        }
        match message.role {
            Role::User => conversation.push(WireRole::User, text_block(&message.content)),
            Role::System => conversation.push(WireRole::User, system_block(message)),
            Role::Assistant => {
                let calls = ids.calls(&message.tool_calls);
                conversation.push(WireRole::Assistant, assistant_blocks(message, &calls));
                if !calls.is_empty() {
                    let mut outputs = Vec::new();
                    while let Some((_, output)) = history.next_if(|(_, m)| is_tool_output(m)) {
                        outputs.push(output);
                    }
                    conversation.push(WireRole::User, answers(&calls, &outputs));
                }
            }
        }
    }
    (system, conversation.finish())
}

/// Appends, after a comma, the one block `message` is sent as whatever stands around it
/// (once past the leading system messages, which go to `system`): a user message's
/// text, a system message's marked text (not a tool output's), an assistant message's
/// text or placeholder (without tool calls). Nothing for any other message, or one sent
/// as no block (blank text).
pub(in crate::provider) fn write_alone(message: &Message, out: &mut Vec<u8>) {
    if let Some(block) = alone_block(message) {
        out.push(b',');
        block.write_json(out);
    }
}

/// The block of [`write_alone`].
fn alone_block(message: &Message) -> Option<Block<'_>> {
    if !message.tool_calls.is_empty() {
        return None;
    }
    match message.role {
        Role::User => text_block(&message.content),
        Role::System if message.tool_call_id.is_none() => system_block(message),
        Role::System => None,
        Role::Assistant => assistant_blocks(message, &[]).pop(),
    }
}

fn is_tool_output(message: &Message) -> bool {
    message.role == Role::System && message.tool_call_id.is_some()
}

/// A text block, unless the text is blank.
fn text_block(text: &str) -> Option<Block<'_>> {
    (!is_blank(text)).then_some(Block::Text {
        text: Cow::Borrowed(text),
    })
}

/// A system message after the first user or assistant message (rules 2 and 3).
fn system_block(message: &Message) -> Option<Block<'_>> {
    if message.tool_call_id.is_some() {
        return text_block(&message.content);
    }
    (!is_blank(&message.content)).then(|| Block::Text {
        text: Cow::Owned(format!("{SYSTEM_PREFIX}{}", message.content)),
    })
}

/// Rule 5: the text, if any, then the calls (as [`CallIds::calls`] gives them); a
/// placeholder when there is neither.
fn assistant_blocks<'a>(message: &'a Message, calls: &[SentCall<'a>]) -> Vec<Block<'a>> {
    let mut blocks = Vec::with_capacity(1 + calls.len());
    blocks.extend(text_block(&message.content));
    blocks.extend(calls.iter().map(|(call, id)| Block::ToolUse {
        id: id.clone(),
        name: &call.name,
        input: tool_input(&call.arguments),
    }));
    if blocks.is_empty() {
        blocks.push(Block::Text {
            text: Cow::Borrowed(EMPTY_REPLY),
        });
    }
    blocks
}

/// The arguments as a JSON object: parsed, `{}` when blank, else wrapped as text.
pub(super) fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ if is_blank(arguments) => Value::Object(serde_json::Map::new()),
        _ => serde_json::json!({ "arguments": arguments }),
    }
}

/// Rules 3, 4 and 10: the user blocks answering `calls`, from the tool outputs directly
/// after them; one `tool_result` per call, in call order and under the id the call was
/// sent under, then the outputs that answer nothing.
fn answers<'a>(calls: &[SentCall<'a>], outputs: &[&'a Message]) -> Vec<Block<'a>> {
    let mut answered: Vec<(&str, &str)> = Vec::with_capacity(outputs.len());
    let mut unmatched = Vec::new();
    for output in outputs {
        let id = output.tool_call_id.as_deref().unwrap_or_default();
        let first_answer =
            calls.iter().any(|(c, _)| c.id == id) && answered.iter().all(|(a, _)| *a != id);
        if first_answer {
            let body = output.tool_output_body().unwrap_or(&output.content);
            answered.push((id, if is_blank(body) { EMPTY_OUTPUT } else { body }));
        } else {
            unmatched.extend(text_block(&output.content));
        }
    }
    let mut blocks = Vec::with_capacity(calls.len() + unmatched.len());
    for (call, sent_id) in calls {
        let answer = answered.iter().find(|(id, _)| *id == call.id);
        blocks.push(Block::ToolResult {
            tool_use_id: sent_id.clone(),
            content: answer.map_or(MISSING_OUTPUT, |(_, body)| body),
            is_error: answer.is_none(),
        });
    }
    blocks.extend(unmatched);
    blocks
}

pub(super) fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}
