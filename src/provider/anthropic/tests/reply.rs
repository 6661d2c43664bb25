//! Reading a whole reply (module doc, "Reply").

use serde_json::{Value, json};

use super::*;
use crate::message::ToolCall;
use crate::provider::anthropic::reply::WireReply;
use crate::provider::{FinishReason, Usage};

#[test]
fn a_reply_with_text_blocks_concatenates_them() {
    let reply: WireReply = serde_json::from_value(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Hello, "},
            {"type": "text", "text": "world."}
        ],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 3,
                  "cache_creation_input_tokens": null}
    }))
    .unwrap();
    assert_eq!(
        reply.into_chat_reply(),
        ChatReply {
            text: "Hello, world.".into(),
            tool_calls: vec![],
            finish_reason: FinishReason::Stop,
            usage: Usage {
                input_tokens: 15,
                output_tokens: 5
            },
        }
    );
}

#[test]
fn a_reply_with_tool_use_blocks_gives_tool_calls_with_compact_arguments() {
    let reply: WireReply = serde_json::from_value(json!({
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2}
    }))
    .unwrap();
    let reply = reply.into_chat_reply();
    assert_eq!(reply.text, "Checking.");
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(
        reply.tool_calls,
        vec![
            ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into()
            },
            ToolCall {
                id: "toolu_2".into(),
                name: "get_time".into(),
                arguments: "{}".into()
            },
        ]
    );
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    let cases = [
        (json!("end_turn"), FinishReason::Stop),
        (json!("stop_sequence"), FinishReason::Stop),
        (json!("max_tokens"), FinishReason::Length),
        (json!("tool_use"), FinishReason::ToolCalls),
        (json!("refusal"), FinishReason::Other),
        (json!("pause_turn"), FinishReason::Other),
        (Value::Null, FinishReason::Other),
    ];
    for (stop_reason, expected) in cases {
        let reply: WireReply =
            serde_json::from_value(json!({"content": [], "stop_reason": stop_reason})).unwrap();
        assert_eq!(
            reply.into_chat_reply().finish_reason,
            expected,
            "{stop_reason}"
        );
    }
}
