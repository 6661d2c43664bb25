//! How a whole (non-streamed) reply is read.

use serde_json::{Value, json};

use super::*;

#[test]
fn a_text_reply_is_read_with_its_usage() {
    let reply = decode(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hello!", "refusal": null}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    }))
    .unwrap();
    assert_eq!(
        reply,
        ChatReply {
            text: "Hello!".to_owned(),
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
fn a_tool_call_reply_is_read_with_null_content_as_empty_text() {
    let reply = decode(json!({
        "choices": [{"finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7}
    }))
    .unwrap();
    assert_eq!(reply.text, "");
    assert_eq!(reply.tool_calls, vec![call("call_1")]);
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
}

#[test]
fn finish_reasons_map_to_the_neutral_ones() {
    for (wire, neutral) in [
        (json!("stop"), FinishReason::Stop),
        (json!("length"), FinishReason::Length),
        (json!("tool_calls"), FinishReason::ToolCalls),
        (json!("function_call"), FinishReason::ToolCalls),
        (json!("content_filter"), FinishReason::Other),
        (Value::Null, FinishReason::Other),
    ] {
        let reply = decode(json!({
            "choices": [{"finish_reason": wire, "message": {"content": "x"}}]
        }))
        .unwrap();
        assert_eq!(reply.finish_reason, neutral, "{wire}");
    }
}

#[test]
fn a_reply_without_usage_counts_zero_tokens() {
    let reply = decode(json!({"choices": [{"message": {"content": "x"}}]})).unwrap();
    assert_eq!(reply.usage, Usage::default());
}

#[test]
fn a_refusal_stands_in_for_null_content() {
    let reply = decode(json!({"choices": [{"finish_reason": "stop",
        "message": {"content": null, "refusal": "I can't help with that."}}]}))
    .unwrap();
    assert_eq!(reply.text, "I can't help with that.");
}

#[test]
fn a_reply_without_choices_is_invalid() {
    assert!(matches!(
        decode(json!({"choices": []})),
        Err(ProviderError::InvalidReply(_))
    ));
    assert!(matches!(
        decode(json!({"object": "chat.completion"})),
        Err(ProviderError::InvalidReply(_))
    ));
}
