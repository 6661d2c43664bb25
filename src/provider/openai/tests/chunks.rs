//! How a streamed reply is put back together from its chunks, fed as the `data` of each
//! server-sent event (shapes as OpenAI sends them, and as compatible servers bend them).

use serde_json::json;

use super::*;
use crate::provider::openai::chunks::{Assembler, Step};

/// A `chat.completion.chunk` with one choice, as OpenAI sends it (`usage: null` when
/// usage was asked for, on every chunk but the last).
fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-test", "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null
    })
    .to_string()
}

fn text_chunk(text: &str) -> String {
    chunk(json!({"content": text}), None)
}

fn finish_chunk(reason: &str) -> String {
    chunk(json!({}), Some(reason))
}

/// The last chunk when `include_usage` was asked for.
fn usage_chunk(prompt: u64, completion: u64) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "gpt-test", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    })
    .to_string()
}

fn fragments(calls: Value) -> String {
    chunk(json!({"tool_calls": calls}), None)
}

fn tool_call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments: arguments.to_owned(),
    }
}

/// What a stream made of these `data` fields gave.
struct Fed {
    events: Vec<StreamEvent>,
    /// How many events the sink had been given after each `data` was pushed.
    seen_after: Vec<usize>,
    reply: Result<ChatReply, ProviderError>,
}

/// Feeds the `data` fields in order until `[DONE]` or an error, then ends the stream.
fn feed(data: &[String]) -> Fed {
    let events = std::sync::Mutex::new(Vec::new());
    let mut sink = |event| events.lock().unwrap().push(event);
    let mut assembler = Assembler::new(200);
    let mut seen_after = Vec::new();
    let mut failed = None;
    for data in data {
        let step = assembler.push(data, &mut sink);
        seen_after.push(events.lock().unwrap().len());
        match step {
            Ok(Step::More) => {}
            Ok(Step::Done) => break,
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    let reply = match failed {
        Some(error) => Err(error),
        None => assembler.finish(&mut sink),
    };
    Fed {
        events: events.into_inner().unwrap(),
        seen_after,
        reply,
    }
}

fn done() -> String {
    "[DONE]".to_owned()
}

#[test]
fn text_deltas_are_handed_on_as_they_come_and_make_the_whole_text() {
    let fed = feed(&[
        chunk(
            json!({"role": "assistant", "content": "", "refusal": null}),
            None,
        ),
        text_chunk("Hel"),
        text_chunk("lo"),
        text_chunk(""),
        text_chunk(" there"),
        finish_chunk("stop"),
        usage_chunk(12, 3),
        done(),
    ]);
    let texts = ["Hel", "lo", " there"].map(|t| StreamEvent::Text(t.to_owned()));
    assert_eq!(fed.events, texts);
    // Each piece reached the sink with the chunk that carried it; empty ones never did.
    assert_eq!(fed.seen_after, [0, 1, 2, 2, 3, 3, 3, 3]);
    assert_eq!(
        fed.reply.unwrap(),
        ChatReply {
            text: "Hello there".to_owned(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 3
            },
        }
    );
}

#[test]
fn two_parallel_tool_calls_are_assembled_by_index_and_each_handed_on_once_complete() {
    let fed = feed(&[
        chunk(json!({"role": "assistant", "content": null}), None),
        fragments(json!([{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "get_weather", "arguments": ""}}])),
        fragments(json!([{"index": 0, "function": {"arguments": "{\"city\":"}}])),
        fragments(json!([{"index": 0, "function": {"arguments": " \"Oslo\"}"}}])),
        fragments(json!([{"index": 1, "id": "call_b", "type": "function",
            "function": {"name": "get_time", "arguments": ""}}])),
        fragments(json!([{"index": 1, "function": {"arguments": "{\"tz\":"}}])),
        fragments(json!([{"index": 1, "function": {"arguments": "\"CET\"}"}}])),
        finish_chunk("tool_calls"),
        usage_chunk(20, 9),
        done(),
    ]);
    let weather = tool_call("call_a", "get_weather", r#"{"city": "Oslo"}"#);
    let time = tool_call("call_b", "get_time", r#"{"tz":"CET"}"#);
    assert_eq!(
        fed.events,
        [
            StreamEvent::ToolCall(weather.clone()),
            StreamEvent::ToolCall(time.clone())
        ]
    );
    // The first call went out when the second began, the second at the finish reason.
    assert_eq!(fed.seen_after, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
    let reply = fed.reply.unwrap();
    assert_eq!(reply.tool_calls, [weather, time]);
    assert_eq!(reply.text, "");
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage.output_tokens, 9);
}

#[test]
fn text_before_a_tool_call_is_kept_and_a_call_open_at_the_end_is_handed_on() {
    let fed = feed(&[
        text_chunk("Let me look."),
        fragments(json!([{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}])),
        done(),
    ]);
    let call = tool_call("call_a", "get_weather", "{}");
    assert_eq!(
        fed.events,
        [
            StreamEvent::Text("Let me look.".to_owned()),
            StreamEvent::ToolCall(call.clone())
        ]
    );
    let reply = fed.reply.unwrap();
    assert_eq!(reply.text, "Let me look.");
    assert_eq!(reply.tool_calls, [call]);
    // [DONE] without a finish reason ends the reply, for a reason we cannot name.
    assert_eq!(reply.finish_reason, FinishReason::Other);
}

#[test]
fn usage_comes_from_the_last_chunk_and_null_usage_on_the_others_does_not_erase_it() {
    let fed = feed(&[
        text_chunk("hi"),
        usage_chunk(7, 1),
        chunk(json!({}), None),
        done(),
    ]);
    assert_eq!(
        fed.reply.unwrap().usage,
        Usage {
            input_tokens: 7,
            output_tokens: 1
        }
    );
    let without = feed(&[text_chunk("hi"), finish_chunk("stop"), done()]);
    assert_eq!(without.reply.unwrap().usage, Usage::default());
}

#[test]
fn usage_with_null_choices_or_beside_the_finish_reason_is_read() {
    let null_choices =
        json!({"choices": null, "usage": {"prompt_tokens": 4, "completion_tokens": 2}});
    let fed = feed(&[
        text_chunk("a"),
        finish_chunk("length"),
        null_choices.to_string(),
    ]);
    let reply = fed.reply.unwrap();
    assert_eq!(reply.usage.input_tokens, 4);
    assert_eq!(reply.finish_reason, FinishReason::Length);

    let beside = json!({"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1}});
    let reply = feed(&[beside.to_string()]).reply.unwrap();
    assert_eq!((reply.text.as_str(), reply.usage.input_tokens), ("b", 5));
}

#[test]
fn done_ends_the_stream_and_nothing_after_it_is_read() {
    let mut assembler = Assembler::new(200);
    let mut sink = |_| {};
    assert_eq!(
        assembler.push(&text_chunk("x"), &mut sink).unwrap(),
        Step::More
    );
    assert_eq!(assembler.push("", &mut sink).unwrap(), Step::More);
    assert_eq!(assembler.push(" [DONE]\n", &mut sink).unwrap(), Step::Done);
    let fed = feed(&[text_chunk("x"), done(), text_chunk("never")]);
    assert_eq!(fed.seen_after, [1, 1]);
    assert_eq!(fed.reply.unwrap().text, "x");
}

#[test]
fn an_error_chunk_is_an_upstream_error_with_the_status_of_the_stream() {
    let error = json!({"error": {"message": "The server had an error while processing your request.",
        "type": "server_error", "param": null, "code": null}});
    let fed = feed(&[text_chunk("par"), error.to_string(), done()]);
    assert_eq!(fed.events, [StreamEvent::Text("par".to_owned())]);
    assert_eq!(
        fed.reply.unwrap_err(),
        ProviderError::Upstream {
            status: 200,
            kind: "server_error".to_owned(),
            message: "The server had an error while processing your request.".to_owned(),
            retry_after: None,
        }
    );
}

#[test]
fn a_stream_that_ends_without_done_or_finish_reason_broke_off() {
    let fed = feed(&[text_chunk("half a"), text_chunk(" sentence")]);
    assert_eq!(
        fed.reply.unwrap_err(),
        ProviderError::Transport("stream ended early".to_owned())
    );
    // A finish reason is enough: some compatible servers never send [DONE].
    let fed = feed(&[text_chunk("whole"), finish_chunk("stop")]);
    assert_eq!(fed.reply.unwrap().finish_reason, FinishReason::Stop);
}

#[test]
fn a_chunk_that_is_not_json_is_an_invalid_reply() {
    let fed = feed(&["{not json".to_owned()]);
    assert!(matches!(fed.reply, Err(ProviderError::InvalidReply(_))));
}

#[test]
fn a_new_id_with_a_name_at_a_reused_index_starts_another_call() {
    // Ollama sends each parallel call whole, every one at index 0.
    let fed = feed(&[
        fragments(json!([{"index": 0, "id": "call_x", "type": "function",
            "function": {"name": "write", "arguments": "{\"f\":1}"}}])),
        fragments(json!([{"index": 0, "id": "call_y", "type": "function",
            "function": {"name": "write", "arguments": "{\"f\":2}"}}])),
        finish_chunk("tool_calls"),
        done(),
    ]);
    assert_eq!(fed.seen_after, [0, 1, 2, 2]);
    assert_eq!(
        fed.reply.unwrap().tool_calls,
        [
            tool_call("call_x", "write", r#"{"f":1}"#),
            tool_call("call_y", "write", r#"{"f":2}"#)
        ]
    );
}

#[test]
fn fragments_without_index_continue_the_last_call_and_a_call_without_id_gets_one() {
    let fed = feed(&[
        fragments(json!([{"function": {"name": "now", "arguments": "{"}}])),
        fragments(json!([{"id": "", "function": {"arguments": "}"}}])),
        finish_chunk("tool_calls"),
    ]);
    assert_eq!(
        fed.reply.unwrap().tool_calls,
        [tool_call("call_0", "now", "{}")]
    );
}

#[test]
fn a_repeated_id_on_every_fragment_does_not_split_the_call() {
    let fed = feed(&[
        fragments(
            json!([{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{\"a\""}}]),
        ),
        fragments(json!([{"index": 0, "id": "call_a", "function": {"arguments": ":1}"}}])),
        fragments(json!([{"index": 0, "id": "call_other", "function": {"arguments": ""}}])),
        finish_chunk("tool_calls"),
    ]);
    assert_eq!(
        fed.reply.unwrap().tool_calls,
        [tool_call("call_a", "f", r#"{"a":1}"#)]
    );
}

#[test]
fn a_refusal_streams_as_text() {
    let fed = feed(&[
        chunk(json!({"content": null, "refusal": "I can't"}), None),
        chunk(json!({"content": null, "refusal": " help."}), None),
        finish_chunk("stop"),
    ]);
    assert_eq!(fed.reply.unwrap().text, "I can't help.");
}
