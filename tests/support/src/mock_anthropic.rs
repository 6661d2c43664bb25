//! What a mock Anthropic Messages API needs: the checks the real API makes on a request
//! body (so that a test fails where the real API would answer 400), its error body,
//! reply bodies and streamed replies (the server-sent events, as event name and data).
//! Serving them (routes, framing, call counting) belongs to `mock_provider.rs`.
//!
//! The checks follow the real API's answers as seen in the wild, messages included:
//! e.g. ``messages.3: `tool_use` ids were found without `tool_result` blocks immediately
//! after: toolu_1``, ``messages: text content blocks must contain non-whitespace text``,
//! ``messages: first message must use the "user" role``. Where models differ, the mock
//! follows the current ones: no trailing assistant message (no prefill, Claude 4.6 on)
//! and not both `temperature` and `top_p` (Claude Sonnet 4.5 on).

use serde_json::{Value, json};

/// Why the real Anthropic Messages API would reject this body (400), or None.
pub fn reject_reason(body: &Value) -> Option<String> {
    check_request(body).err()
}

/// An Anthropic-shaped 400 error body: {"type":"error","error":{"type":"invalid_request_error","message":...}}
pub fn error_body(reason: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": "invalid_request_error", "message": reason}
    })
}

/// A message reply with this text (stop_reason end_turn, usage).
///
/// Usage: 12 input tokens, and one output token per word of `text` (at least one).
pub fn text_reply(model: &str, text: &str) -> Value {
    let words = text.split_whitespace().count().max(1);
    reply(
        model,
        vec![json!({"type": "text", "text": text})],
        "end_turn",
        words,
    )
}

/// A reply calling these tools: (id, name, input JSON object text); stop_reason tool_use.
///
/// An input that is not a JSON object is sent as `{}`.
pub fn tool_call_reply(model: &str, calls: &[(&str, &str, &str)]) -> Value {
    let content = calls
        .iter()
        .map(|(id, name, input)| {
            let input = serde_json::from_str::<Value>(input)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        })
        .collect();
    reply(model, content, "tool_use", 10 * calls.len().max(1))
}

/// A streamed text reply, as (event name, data): `message_start`, a text block with one
/// `text_delta` per piece, `message_delta` (stop_reason end_turn, the same usage as
/// [`text_reply`]) and `message_stop`.
pub fn stream_text_events(model: &str, text_pieces: &[&str]) -> Vec<(String, Value)> {
    let words = text_pieces.concat().split_whitespace().count().max(1);
    let mut events = vec![message_start(model), text_block_start(0)];
    events.extend(text_pieces.iter().map(|piece| {
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": piece}})
    }));
    events.push(block_stop(0));
    events.extend(message_end("end_turn", words));
    named(events)
}

/// A streamed reply calling these tools: (id, name, input JSON object text), each a
/// `tool_use` block whose input comes in two or more `input_json_delta` fragments, as the
/// real API splits it; stop_reason tool_use, the same usage as [`tool_call_reply`].
///
/// An input that is not a JSON object is sent as `{}`.
pub fn stream_tool_call_events(model: &str, calls: &[(&str, &str, &str)]) -> Vec<(String, Value)> {
    let mut events = vec![message_start(model)];
    for (index, (id, name, input)) in calls.iter().enumerate() {
        let input = serde_json::from_str::<Value>(input)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        events.push(json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
        for fragment in fragments(&input.to_string()) {
            events.push(json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": fragment}}));
        }
        events.push(block_stop(index));
    }
    events.extend(message_end("tool_use", 10 * calls.len().max(1)));
    named(events)
}

/// `message_start`: the message without content; 12 input tokens, and the placeholder
/// output count the real API sends before the total comes with `message_delta`.
fn message_start(model: &str) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_mock_01", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 1}}})
}

fn text_block_start(index: usize) -> Value {
    json!({"type": "content_block_start", "index": index,
           "content_block": {"type": "text", "text": ""}})
}

fn block_stop(index: usize) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

/// `message_delta` with the stop reason and the output total, then `message_stop`.
fn message_end(stop_reason: &str, output_tokens: usize) -> [Value; 2] {
    [
        json!({"type": "message_delta",
               "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}}),
        json!({"type": "message_stop"}),
    ]
}

/// The JSON text in two or three fragments, cut at character boundaries.
fn fragments(json_text: &str) -> Vec<String> {
    let chars: Vec<char> = json_text.chars().collect();
    let third = chars.len().div_ceil(3).max(1);
    chars.chunks(third).map(|c| c.iter().collect()).collect()
}

/// Each event with its name, which the real API always sets to the data's `type`.
fn named(events: Vec<Value>) -> Vec<(String, Value)> {
    events
        .into_iter()
        .map(|event| (event["type"].as_str().unwrap_or_default().to_owned(), event))
        .collect()
}

fn reply(model: &str, content: Vec<Value>, stop_reason: &str, output_tokens: usize) -> Value {
    json!({
        "id": "msg_mock_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": output_tokens}
    })
}

type Checked = Result<(), String>;

const REQUEST_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "thinking",
    "service_tier",
];

fn check_request(body: &Value) -> Checked {
    let Some(fields) = body.as_object() else {
        return Err("the request body must be a JSON object".into());
    };
    only_known_fields(body, REQUEST_FIELDS, "")?;
    match fields.get("model") {
        Some(Value::String(model)) if !model.is_empty() => {}
        Some(_) => return Err("model: String should have at least 1 character".into()),
        None => return Err("model: Field required".into()),
    }
    match fields.get("max_tokens") {
        Some(max) if max.as_u64().is_some_and(|m| m >= 1) => {}
        Some(_) => return Err("max_tokens: Input should be an integer of at least 1".into()),
        None => return Err("max_tokens: Field required".into()),
    }
    if let Some(system) = fields.get("system") {
        check_system(system)?;
    }
    check_sampling(fields)?;
    if fields
        .get("stream")
        .is_some_and(|stream| !stream.is_boolean())
    {
        return Err("stream: Input should be a valid boolean".into());
    }
    if let Some(tools) = fields.get("tools") {
        check_tools(tools)?;
    }
    let Some(messages) = fields.get("messages") else {
        return Err("messages: Field required".into());
    };
    check_messages(messages)
}

fn check_system(system: &Value) -> Checked {
    match system {
        Value::String(_) => Ok(()),
        Value::Array(blocks) => blocks.iter().enumerate().try_for_each(|(i, block)| {
            if block["type"] != "text" {
                return Err(format!("system.{i}: system blocks must be text blocks"));
            }
            check_text_block(block, &format!("system.{i}"))
        }),
        _ => Err("system: Input should be a valid string or a list of text blocks".into()),
    }
}

fn check_sampling(fields: &serde_json::Map<String, Value>) -> Checked {
    for name in ["temperature", "top_p"] {
        if let Some(value) = fields.get(name) {
            let in_range = value.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v));
            if !in_range {
                return Err(format!("{name}: Input should be between 0 and 1"));
            }
        }
    }
    if fields.contains_key("temperature") && fields.contains_key("top_p") {
        return Err(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
                .into(),
        );
    }
    if let Some(stops) = fields.get("stop_sequences") {
        let Some(stops) = stops.as_array() else {
            return Err("stop_sequences: Input should be a valid list".into());
        };
        for stop in stops {
            match stop.as_str() {
                Some(s) if !s.trim().is_empty() => {}
                _ => {
                    return Err(
                        "stop_sequences: each stop sequence must contain non-whitespace".into(),
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_tools(tools: &Value) -> Checked {
    let Some(tools) = tools.as_array() else {
        return Err("tools: Input should be a valid list".into());
    };
    let mut names = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools.{i}");
        only_known_fields(
            tool,
            &[
                "name",
                "description",
                "input_schema",
                "type",
                "cache_control",
            ],
            &path,
        )?;
        let name = tool["name"].as_str().unwrap_or_default();
        if !is_valid_name(name) {
            return Err(format!(
                "{path}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            ));
        }
        if names.contains(&name) {
            return Err("tools: Tool names must be unique.".into());
        }
        names.push(name);
        if tool.get("description").is_some_and(|d| !d.is_string()) {
            return Err(format!(
                "{path}.description: Input should be a valid string"
            ));
        }
        let schema = &tool["input_schema"];
        if !schema.is_object() {
            return Err(format!(
                "{path}.input_schema: Input should be a valid dictionary"
            ));
        }
        if schema["type"] != "object" {
            return Err(format!(
                "{path}.input_schema.type: Input should be 'object'"
            ));
        }
    }
    Ok(())
}

fn check_messages(messages: &Value) -> Checked {
    let Some(messages) = messages.as_array() else {
        return Err("messages: Input should be a valid list".into());
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut all_tool_use_ids: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages.{i}");
        only_known_fields(message, &["role", "content"], &path)?;
        let role = message["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(format!(
                "{path}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if i == 0 && role != "user" {
            return Err("messages: first message must use the \"user\" role".into());
        }
        let blocks = content_blocks(&message["content"], &path)?;
        for (j, block) in blocks.iter().enumerate() {
            check_block(block, role, &format!("{path}.content.{j}"))?;
        }
        let tool_use_ids = ids_of(&blocks, "tool_use", "id");
        for id in &tool_use_ids {
            if all_tool_use_ids.contains(id) {
                return Err(format!("{path}: `tool_use` ids must be unique: {id}"));
            }
            all_tool_use_ids.push(id.clone());
        }
        if role == "user" {
            let previous = i.checked_sub(1).map(|p| &messages[p]);
            check_tool_results(&blocks, previous, &path)?;
        }
        if !tool_use_ids.is_empty() {
            let next = messages.get(i + 1).map(|m| &m["content"]);
            let answered = match next {
                Some(content) => ids_of(
                    &content_blocks(content, &path)?,
                    "tool_result",
                    "tool_use_id",
                ),
                None => Vec::new(),
            };
            let missing: Vec<&str> = tool_use_ids
                .iter()
                .filter(|id| !answered.contains(id))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{path}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. \
                     Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    missing.join(", ")
                ));
            }
        }
    }
    if messages.last().is_some_and(|m| m["role"] == "assistant") {
        return Err(
            "This model does not support assistant message prefill. The conversation must end with a user message."
                .into(),
        );
    }
    Ok(())
}

/// The content as blocks: a string is one text block.
fn content_blocks(content: &Value, path: &str) -> Result<Vec<Value>, String> {
    match content {
        Value::String(text) => Ok(vec![json!({"type": "text", "text": text})]),
        Value::Array(blocks) if blocks.is_empty() => Err(format!(
            "{path}: all messages must have non-empty content except for the optional final assistant message"
        )),
        Value::Array(blocks) => Ok(blocks.clone()),
        _ => Err(format!(
            "{path}.content: Input should be a valid string or list"
        )),
    }
}

fn check_block(block: &Value, role: &str, path: &str) -> Checked {
    match block["type"].as_str().unwrap_or_default() {
        "text" => {
            only_known_fields(block, &["type", "text", "cache_control", "citations"], path)?;
            check_text_block(block, path)
        }
        "tool_use" => {
            only_known_fields(
                block,
                &["type", "id", "name", "input", "cache_control"],
                path,
            )?;
            if role != "assistant" {
                return Err(format!(
                    "{path}: tool_use blocks are only allowed in assistant messages"
                ));
            }
            let id = block["id"].as_str().unwrap_or_default();
            if id.is_empty() || !id.chars().all(is_name_char) {
                return Err(format!(
                    "{path}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            if block["name"].as_str().is_none_or(str::is_empty) {
                return Err(format!("{path}.tool_use.name: Field required"));
            }
            if !block["input"].is_object() {
                return Err(format!(
                    "{path}.tool_use.input: Input should be a valid dictionary"
                ));
            }
            Ok(())
        }
        "tool_result" => {
            only_known_fields(
                block,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
                path,
            )?;
            if role != "user" {
                return Err(format!(
                    "{path}: tool_result blocks are only allowed in user messages"
                ));
            }
            if !block["tool_use_id"].is_string() {
                return Err(format!("{path}.tool_result.tool_use_id: Field required"));
            }
            if block.get("is_error").is_some_and(|e| !e.is_boolean()) {
                return Err(format!(
                    "{path}.tool_result.is_error: Input should be a valid boolean"
                ));
            }
            match block.get("content") {
                None => Ok(()),
                Some(Value::String(text)) if text.is_empty() => Err(format!(
                    "{path}: the content field of a tool_result is empty. Add text and try again."
                )),
                Some(Value::String(_)) => Ok(()),
                Some(Value::Array(parts)) => parts.iter().enumerate().try_for_each(|(k, part)| {
                    if part["type"] != "text" {
                        return Err(format!(
                            "{path}.content.{k}: only text blocks are checked by this mock"
                        ));
                    }
                    check_text_block(part, &format!("{path}.content.{k}"))
                }),
                Some(_) => Err(format!(
                    "{path}.tool_result.content: Input should be a valid string or list"
                )),
            }
        }
        other => Err(format!(
            "{path}: Input tag '{other}' found using 'type' does not match any of the expected tags"
        )),
    }
}

fn check_text_block(block: &Value, path: &str) -> Checked {
    match block["text"].as_str() {
        None => Err(format!("{path}.text: Field required")),
        Some("") => Err("messages: text content blocks must be non-empty".into()),
        Some(text) if text.trim().is_empty() => {
            Err("messages: text content blocks must contain non-whitespace text".into())
        }
        Some(_) => Ok(()),
    }
}

/// A user message's `tool_result` blocks: first in the message, once per id, each
/// answering a `tool_use` of the message right before it.
fn check_tool_results(blocks: &[Value], previous: Option<&Value>, path: &str) -> Checked {
    let results = ids_of(blocks, "tool_result", "tool_use_id");
    if results.is_empty() {
        return Ok(());
    }
    let leading = blocks
        .iter()
        .take_while(|b| b["type"] == "tool_result")
        .count();
    if leading != results.len() {
        return Err(format!(
            "{path}: `tool_result` blocks must come first in the content, before any other block"
        ));
    }
    let called = match previous {
        Some(message) if message["role"] == "assistant" => ids_of(
            &content_blocks(&message["content"], path)?,
            "tool_use",
            "id",
        ),
        _ => Vec::new(),
    };
    for (k, id) in results.iter().enumerate() {
        if results[..k].contains(id) {
            return Err(format!(
                "{path}: each `tool_use` must have a single result. Found multiple `tool_result` blocks with id: {id}"
            ));
        }
        if !called.contains(id) {
            return Err(format!(
                "{path}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                 Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            ));
        }
    }
    Ok(())
}

/// The `field` of every block of `kind`.
fn ids_of(blocks: &[Value], kind: &str, field: &str) -> Vec<String> {
    blocks
        .iter()
        .filter(|b| b["type"] == kind)
        .map(|b| b[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn only_known_fields(value: &Value, known: &[&str], path: &str) -> Checked {
    let Some(fields) = value.as_object() else {
        return Err(format!("{path}: Input should be a valid dictionary"));
    };
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(extra) if path.is_empty() => Err(format!("{extra}: Extra inputs are not permitted")),
        Some(extra) => Err(format!("{path}.{extra}: Extra inputs are not permitted")),
        None => Ok(()),
    }
}

fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(is_name_char)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}
