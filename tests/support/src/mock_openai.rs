//! What the mock OpenAI server needs: the checks the real Chat Completions API makes
//! before it answers 400, its error body, and the replies it sends, whole or as the
//! chunks of a stream. Serving them (the mock server, SSE framing, call counts) lives in
//! `mock_provider.rs`.
//!
//! The error messages follow the real API's wording where it is known, so a failing test
//! reads like the production failure it stands for.

use serde_json::{Value, json};

/// The roles the real API accepts (`function` is deprecated and never sent by us).
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// The `prompt_tokens` every mock reply reports.
const PROMPT_TOKENS: u64 = 10;

/// Why the real OpenAI Chat Completions API would reject this body (400), or None.
pub fn reject_reason(body: &Value) -> Option<String> {
    let Some(body) = body.as_object() else {
        return Some("We could not parse the JSON body of your request.".to_owned());
    };
    match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => {}
        _ => return Some("you must provide a model parameter".to_owned()),
    }
    let messages = match body.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(Value::Array(_)) => return Some("[] is too short - 'messages'".to_owned()),
        _ => return Some("Missing required parameter: 'messages'.".to_owned()),
    };
    messages_reject_reason(messages)
        .or_else(|| body.get("tools").and_then(tools_reject_reason))
        .or_else(|| params_reject_reason(body))
        .or_else(|| stream_reject_reason(body))
}

/// An OpenAI-shaped 400 error body for that reason.
pub fn error_body(reason: &str) -> Value {
    json!({
        "error": {
            "message": reason,
            "type": "invalid_request_error",
            "param": null,
            "code": null
        }
    })
}

/// A chat.completion reply with this text (finish_reason stop). Usage: 10
/// prompt tokens, one completion token per word of the text.
pub fn text_reply(model: &str, text: &str) -> Value {
    let words = text.split_whitespace().count() as u64;
    completion(
        model,
        json!({"role": "assistant", "content": text, "refusal": null}),
        "stop",
        words,
    )
}

/// A chat.completion reply calling these tools: (id, name, arguments JSON text);
/// finish_reason tool_calls, content null. Usage: 10 prompt tokens, five
/// completion tokens per call.
pub fn tool_call_reply(model: &str, calls: &[(&str, &str, &str)]) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    completion(
        model,
        json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": tool_calls}),
        "tool_calls",
        5 * calls.len() as u64,
    )
}

fn completion(model: &str, message: Value, finish_reason: &str, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens
        },
        "system_fingerprint": null
    })
}

/// The chunks of a streamed text reply, as OpenAI sends them with
/// `stream_options.include_usage`: a first chunk with the role and empty content, one
/// chunk per piece, a chunk with finish_reason stop and an empty delta, then the usage
/// chunk with empty `choices`. Usage as in [`text_reply`].
pub fn stream_text_chunks(model: &str, text_pieces: &[&str]) -> Vec<Value> {
    let words = text_pieces.concat().split_whitespace().count() as u64;
    let mut chunks = vec![chunk(
        model,
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )];
    chunks.extend(
        text_pieces
            .iter()
            .map(|piece| chunk(model, json!({"content": piece}), None)),
    );
    chunks.push(chunk(model, json!({}), Some("stop")));
    chunks.push(usage_chunk(model, words));
    chunks
}

/// The chunks of a streamed reply calling these tools: (id, name, arguments JSON
/// text). Each call comes as a fragment with its index, id and name (arguments empty),
/// then its arguments in two or more fragments carrying only the index; then a chunk
/// with finish_reason tool_calls, then the usage chunk. Usage as in [`tool_call_reply`].
pub fn stream_tool_call_chunks(model: &str, calls: &[(&str, &str, &str)]) -> Vec<Value> {
    let mut chunks = vec![chunk(
        model,
        json!({"role": "assistant", "content": null, "refusal": null}),
        None,
    )];
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        let first = json!({"index": index, "id": id, "type": "function",
                           "function": {"name": name, "arguments": ""}});
        chunks.push(chunk(model, json!({"tool_calls": [first]}), None));
        for part in halves(arguments) {
            let fragment = json!({"index": index, "function": {"arguments": part}});
            chunks.push(chunk(model, json!({"tool_calls": [fragment]}), None));
        }
    }
    chunks.push(chunk(model, json!({}), Some("tool_calls")));
    chunks.push(usage_chunk(model, 5 * calls.len() as u64));
    chunks
}

/// A text cut in two at a character boundary near its middle (either half may be empty).
fn halves(text: &str) -> [&str; 2] {
    let middle = (0..=text.len() / 2)
        .rev()
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(0);
    let (first, second) = text.split_at(middle);
    [first, second]
}

/// One `chat.completion.chunk` with one choice; `usage` is null on every chunk but the
/// last when usage was asked for.
fn chunk(model: &str, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": null
    })
}

/// The last chunk of a stream with `include_usage`: no choices, the whole request's usage.
fn usage_chunk(model: &str, completion_tokens: u64) -> Value {
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": null,
        "choices": [],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens
        }
    })
}

/// The calls of the last assistant message with tool calls, while only tool messages
/// have followed it: (id, answered).
type OpenCalls = Vec<(String, bool)>;

fn messages_reject_reason(messages: &[Value]) -> Option<String> {
    let mut open: Option<OpenCalls> = None;
    for (index, message) in messages.iter().enumerate() {
        let at = format!("messages.[{index}]");
        let Some(message) = message.as_object() else {
            return Some(format!("Invalid type for '{at}': expected an object."));
        };
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        if !ROLES.contains(&role) {
            return Some(format!(
                "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool', 'function', and 'developer'. ('{at}.role')"
            ));
        }
        // Any other message closes the run of tool messages.
        if role != "tool"
            && let Some(reason) = open.take().and_then(|calls| unanswered_reason(&calls, &at))
        {
            return Some(reason);
        }
        let calls = match message.get("tool_calls") {
            None | Some(Value::Null) => Vec::new(),
            Some(calls) if role == "assistant" => match tool_call_ids(calls, &at) {
                Ok(ids) => ids,
                Err(reason) => return Some(reason),
            },
            Some(_) => {
                return Some(format!(
                    "Unrecognized request argument supplied: '{at}.tool_calls' (role {role})"
                ));
            }
        };
        match message.get("content") {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) if !calls.is_empty() => {}
            Some(Value::Null) => {
                return Some(format!(
                    "Invalid value for 'content': expected a string, got null. ('{at}.content')"
                ));
            }
            None => return Some(format!("Missing required parameter: '{at}.content'.")),
            Some(other) => {
                return Some(format!(
                    "Invalid type for '{at}.content': expected a string, but got {other} instead."
                ));
            }
        }
        if role == "tool"
            && let Some(reason) = answer(open.as_mut(), message.get("tool_call_id"), &at)
        {
            return Some(reason);
        }
        if !calls.is_empty() {
            open = Some(calls.into_iter().map(|id| (id, false)).collect());
        }
    }
    open.and_then(|calls| unanswered_reason(&calls, "the end of 'messages'"))
}

/// The ids of an assistant message's `tool_calls`, or why they are invalid.
fn tool_call_ids(calls: &Value, at: &str) -> Result<Vec<String>, String> {
    let Some(calls) = calls.as_array() else {
        return Err(format!(
            "Invalid type for '{at}.tool_calls': expected an array."
        ));
    };
    if calls.is_empty() {
        return Err(format!(
            "Invalid '{at}.tool_calls': empty array. Expected an array with minimum length 1, but got an empty array instead."
        ));
    }
    let mut ids = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        let at = format!("{at}.tool_calls.[{index}]");
        let id = call.get("id").and_then(Value::as_str);
        let function = &call["function"];
        let well_formed = call.get("type").and_then(Value::as_str) == Some("function")
            && function.get("name").and_then(Value::as_str).is_some()
            && function.get("arguments").and_then(Value::as_str).is_some();
        match id {
            Some(id) if well_formed => ids.push(id.to_owned()),
            _ => {
                return Err(format!(
                    "Invalid '{at}': expected {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}} with string values."
                ));
            }
        }
    }
    Ok(ids)
}

/// Marks the call a tool message answers, or says why it answers none.
fn answer(open: Option<&mut OpenCalls>, id: Option<&Value>, at: &str) -> Option<String> {
    let Some(id) = id.and_then(Value::as_str) else {
        return Some(format!("Missing required parameter: '{at}.tool_call_id'."));
    };
    let Some(calls) = open else {
        return Some(format!(
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'. ('{at}.role')"
        ));
    };
    match calls.iter_mut().find(|(call, _)| call == id) {
        Some((_, answered)) if *answered => Some(format!(
            "Invalid parameter: 'tool_call_id' of '{id}' was already answered by an earlier tool message. ('{at}')"
        )),
        Some((_, answered)) => {
            *answered = true;
            None
        }
        None => Some(format!(
            "Invalid parameter: 'tool_call_id' of '{id}' not found in 'tool_calls' of previous message. ('{at}')"
        )),
    }
}

fn unanswered_reason(calls: &OpenCalls, at: &str) -> Option<String> {
    let missing: Vec<&str> = calls
        .iter()
        .filter(|(_, answered)| !answered)
        .map(|(id, _)| id.as_str())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {} (before {at})",
            missing.join(", ")
        )
    })
}

fn tools_reject_reason(tools: &Value) -> Option<String> {
    let Some(tools) = tools.as_array() else {
        return Some("Invalid type for 'tools': expected an array.".to_owned());
    };
    if tools.is_empty() {
        return Some("[] is too short - 'tools'".to_owned());
    }
    for (index, tool) in tools.iter().enumerate() {
        let at = format!("tools.[{index}]");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Some(format!(
                "Invalid value for '{at}.type': expected 'function'."
            ));
        }
        let Some(function) = tool.get("function").and_then(Value::as_object) else {
            return Some(format!("Missing required parameter: '{at}.function'."));
        };
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        if !is_function_name(name) {
            return Some(format!(
                "Invalid '{at}.function.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'."
            ));
        }
        if function.get("description").is_some_and(|d| !d.is_string()) {
            return Some(format!(
                "Invalid type for '{at}.function.description': expected a string."
            ));
        }
        if function.get("parameters").is_some_and(|p| !p.is_object()) {
            return Some(format!(
                "Invalid type for '{at}.function.parameters': expected an object."
            ));
        }
    }
    None
}

/// `^[a-zA-Z0-9_-]{1,64}$`
fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn params_reject_reason(body: &serde_json::Map<String, Value>) -> Option<String> {
    let number_in = |name: &str, low: f64, high: f64| match body.get(name) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_f64() {
            Some(x) if (low..=high).contains(&x) => None,
            Some(x) if x < low => Some(format!(
                "Invalid '{name}': decimal below minimum value. Expected a value >= {low}, but got {x} instead."
            )),
            Some(x) => Some(format!(
                "Invalid '{name}': decimal above maximum value. Expected a value <= {high}, but got {x} instead."
            )),
            None => Some(format!("Invalid type for '{name}': expected a number.")),
        },
    };
    number_in("temperature", 0.0, 2.0)
        .or_else(|| number_in("top_p", 0.0, 1.0))
        .or_else(|| match body.get("max_tokens") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64() {
                Some(n) if n >= 1 => None,
                _ => Some(format!(
                    "Invalid 'max_tokens': expected an integer >= 1, but got {value} instead."
                )),
            },
        })
        .or_else(|| match body.get("stop") {
            None | Some(Value::Null) | Some(Value::String(_)) => None,
            Some(Value::Array(stops)) if stops.len() > 4 => Some(format!(
                "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {} instead.",
                stops.len()
            )),
            Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => None,
            Some(_) => Some("Invalid type for 'stop': expected a string or an array of strings.".to_owned()),
        })
}

/// `stream` is a boolean; `stream_options` (`{include_usage: bool}`) only comes with
/// `stream: true`.
fn stream_reject_reason(body: &serde_json::Map<String, Value>) -> Option<String> {
    let streaming = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Some("Invalid type for 'stream': expected a boolean.".to_owned()),
    };
    match body.get("stream_options") {
        None | Some(Value::Null) => None,
        Some(_) if !streaming => Some(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".to_owned(),
        ),
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => None,
            Some(_) => Some(
                "Invalid type for 'stream_options.include_usage': expected a boolean.".to_owned(),
            ),
        },
        Some(_) => Some("Invalid type for 'stream_options': expected an object.".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(messages: Value) -> Value {
        json!({"model": "gpt-test", "messages": messages})
    }

    fn calling(ids: &[&str]) -> Value {
        let calls: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}}))
            .collect();
        json!({"role": "assistant", "content": null, "tool_calls": calls})
    }

    fn tool(id: &str) -> Value {
        json!({"role": "tool", "tool_call_id": id, "content": "ok"})
    }

    #[test]
    fn the_mock_accepts_a_conversation_with_answered_tool_calls() {
        let accepted = body(json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            calling(&["a", "b"]),
            tool("b"),
            tool("a"),
            {"role": "system", "content": "mid-history"},
            {"role": "assistant", "content": "done"},
        ]));
        assert_eq!(reject_reason(&accepted), None);
    }

    #[test]
    fn the_mock_rejects_unanswered_misplaced_and_unknown_tool_messages() {
        let unanswered =
            body(json!([calling(&["a", "b"]), tool("a"), {"role": "user", "content": "x"}]));
        let at_the_end = body(json!([{"role": "user", "content": "x"}, calling(&["a"])]));
        let interrupted =
            body(json!([calling(&["a"]), {"role": "system", "content": "x"}, tool("a")]));
        let orphan = body(json!([{"role": "user", "content": "x"}, tool("a")]));
        let unknown = body(json!([calling(&["a"]), tool("a"), tool("z")]));
        for rejected in [unanswered, at_the_end, interrupted, orphan, unknown] {
            assert!(reject_reason(&rejected).is_some(), "{rejected}");
        }
    }

    #[test]
    fn the_mock_rejects_bad_fields_and_settings() {
        let user = json!([{"role": "user", "content": "x"}]);
        let mut rejected = vec![
            json!({"messages": user}),
            json!({"model": "", "messages": user}),
            body(json!([])),
            body(json!([{"role": "bot", "content": "x"}])),
            body(json!([{"role": "user", "content": null}])),
            body(json!([{"role": "assistant", "content": null}])),
        ];
        for (name, value) in [
            ("temperature", json!(2.5)),
            ("top_p", json!(-0.1)),
            ("max_tokens", json!(0)),
            ("stop", json!(["a", "b", "c", "d", "e"])),
            ("tools", json!([])),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "has space"}}]),
            ),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f", "parameters": []}}]),
            ),
        ] {
            let mut with = body(user.clone());
            with[name] = value;
            rejected.push(with);
        }
        for body in rejected {
            assert!(reject_reason(&body).is_some(), "{body}");
        }
        let mut accepted = body(user);
        accepted["temperature"] = json!(2);
        accepted["top_p"] = json!(1);
        accepted["max_tokens"] = json!(1);
        accepted["stop"] = json!(["a", "b", "c", "d"]);
        accepted["tools"] = json!([{"type": "function", "function": {"name": "get_weather-2",
            "parameters": {"type": "object", "properties": {}}}}]);
        assert_eq!(reject_reason(&accepted), None);
    }

    #[test]
    fn the_mock_replies_look_like_chat_completions() {
        let text = text_reply("gpt-test", "hello there");
        assert_eq!(text["choices"][0]["message"]["content"], "hello there");
        assert_eq!(text["usage"]["completion_tokens"], 2);
        assert_eq!(text["usage"]["total_tokens"], PROMPT_TOKENS + 2);
        let call = tool_call_reply("gpt-test", &[("call_1", "get_weather", "{}")]);
        assert_eq!(call["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(call["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            call["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(error_body("bad")["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn the_mock_accepts_a_streaming_request_and_rejects_stream_options_without_stream() {
        let user = json!([{"role": "user", "content": "x"}]);
        let mut streaming = body(user.clone());
        streaming["stream"] = json!(true);
        streaming["stream_options"] = json!({"include_usage": true});
        assert_eq!(reject_reason(&streaming), None);
        let mut not_streaming = streaming.clone();
        not_streaming["stream"] = json!(false);
        let mut options_only = body(user.clone());
        options_only["stream_options"] = json!({"include_usage": true});
        let mut stream_text = body(user);
        stream_text["stream"] = json!("yes");
        let mut bad_usage = streaming.clone();
        bad_usage["stream_options"] = json!({"include_usage": "yes"});
        for rejected in [not_streaming, options_only, stream_text, bad_usage] {
            assert!(reject_reason(&rejected).is_some(), "{rejected}");
        }
    }

    #[test]
    fn the_streamed_text_chunks_add_up_to_the_pieces_and_end_with_usage() {
        let chunks = stream_text_chunks("gpt-test", &["Hello", " there"]);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello there");
        let [.., finish, usage] = chunks.as_slice() else {
            panic!("too few chunks")
        };
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 2);
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
    }

    #[test]
    fn the_streamed_tool_call_chunks_split_each_call_into_fragments_by_index() {
        let calls = [
            ("call_1", "get_weather", r#"{"city":"Oslo"}"#),
            ("call_2", "now", "{}"),
        ];
        let chunks = stream_tool_call_chunks("gpt-test", &calls);
        let fragments: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        for (index, (id, name, arguments)) in calls.iter().enumerate() {
            let mine: Vec<&&Value> = fragments.iter().filter(|f| f["index"] == index).collect();
            assert!(mine.len() >= 3, "{mine:?}");
            assert_eq!(mine[0]["id"], *id);
            assert_eq!(mine[0]["function"]["name"], *name);
            assert!(mine[1..].iter().all(|f| f.get("id").is_none()));
            let joined: String = mine
                .iter()
                .filter_map(|f| f["function"]["arguments"].as_str())
                .collect();
            assert_eq!(joined, *arguments);
        }
        let [.., finish, usage] = chunks.as_slice() else {
            panic!("too few chunks")
        };
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(usage["usage"]["completion_tokens"], 10);
        assert_eq!(halves("é"), ["", "é"]);
    }
}
