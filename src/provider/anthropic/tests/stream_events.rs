//! The assembly of a streamed reply, fed event data by hand (module doc, "Streaming").

use serde_json::{Value, json};

use super::events::{
    block_stop, json_delta, message_delta, message_start, message_stop, overloaded, ping,
    text_delta, text_start, tool_start,
};
use crate::message::ToolCall;
use crate::provider::anthropic::stream::{Assembly, Flow};
use crate::provider::{ChatReply, FinishReason, ProviderError, StreamEvent, StreamSink, Usage};

/// Feeds `events` in order as a stream with status 200 would; returns what reached the
/// sink and what the assembly ended with.
fn assemble(events: &[Value]) -> (Vec<StreamEvent>, Result<ChatReply, ProviderError>) {
    let mut pieces = Vec::new();
    let mut sink = |event: StreamEvent| pieces.push(event);
    let result = feed_all(events, &mut sink);
    (pieces, result)
}

fn feed_all(events: &[Value], sink: StreamSink<'_>) -> Result<ChatReply, ProviderError> {
    let mut assembly = Assembly::new(200);
    for event in events {
        if assembly.feed(&event.to_string(), sink)? == Flow::Done {
            break;
        }
    }
    assembly.finish()
}

fn text(text: &str) -> StreamEvent {
    StreamEvent::Text(text.into())
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

#[test]
fn text_deltas_reach_the_sink_one_by_one_and_make_the_reply_text() {
    let (pieces, reply) = assemble(&[
        message_start(12),
        text_start(0),
        ping(),
        text_delta(0, "Hello"),
        text_delta(0, ""),
        text_delta(0, ", world."),
        block_stop(0),
        message_delta("end_turn", 4),
        message_stop(),
    ]);

    assert_eq!(pieces, [text("Hello"), text(", world.")]);
    assert_eq!(
        reply.unwrap(),
        ChatReply {
            text: "Hello, world.".into(),
            tool_calls: vec![],
            finish_reason: FinishReason::Stop,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 4
            },
        }
    );
}

#[test]
fn a_tool_use_block_is_handed_over_whole_when_it_stops() {
    let mut assembly = Assembly::new(200);
    let mut pieces = Vec::new();
    let mut sink = |event: StreamEvent| pieces.push(event);
    let events = [
        message_start(5),
        tool_start(0, "toolu_1", "get_weather"),
        json_delta(0, ""),
        json_delta(0, "{\"city\": \"Os"),
        json_delta(0, "lo\", \"days\": 2}"),
    ];
    for event in &events {
        assembly.feed(&event.to_string(), &mut sink).unwrap();
    }
    let before_stop = pieces.len();
    let mut sink = |event: StreamEvent| pieces.push(event);
    for event in [block_stop(0), message_delta("tool_use", 30), message_stop()] {
        assembly.feed(&event.to_string(), &mut sink).unwrap();
    }
    let reply = assembly.finish().unwrap();

    assert_eq!(before_stop, 0);
    let expected = call("toolu_1", "get_weather", r#"{"city":"Oslo","days":2}"#);
    assert_eq!(pieces, [StreamEvent::ToolCall(expected.clone())]);
    assert_eq!(reply.tool_calls, [expected]);
    assert_eq!(reply.text, "");
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
}

#[test]
fn a_tool_use_block_without_input_fragments_has_empty_object_arguments() {
    let (pieces, reply) = assemble(&[
        message_start(5),
        tool_start(0, "toolu_1", "get_time"),
        block_stop(0),
        message_delta("tool_use", 9),
        message_stop(),
    ]);

    let expected = call("toolu_1", "get_time", "{}");
    assert_eq!(pieces, [StreamEvent::ToolCall(expected.clone())]);
    assert_eq!(reply.unwrap().tool_calls, [expected]);
}

#[test]
fn tool_input_that_does_not_parse_is_kept_as_received() {
    let (_, reply) = assemble(&[
        message_start(5),
        tool_start(0, "toolu_1", "get_weather"),
        json_delta(0, "{\"city\": \"Os"),
        block_stop(0),
        message_delta("max_tokens", 9),
        message_stop(),
    ]);

    let reply = reply.unwrap();
    assert_eq!(reply.tool_calls[0].arguments, "{\"city\": \"Os");
    assert_eq!(reply.finish_reason, FinishReason::Length);
}

#[test]
fn text_and_tool_use_blocks_of_one_message_give_its_text_and_calls_in_order() {
    let (pieces, reply) = assemble(&[
        message_start(5),
        text_start(0),
        text_delta(0, "Checking both."),
        block_stop(0),
        tool_start(1, "toolu_1", "get_weather"),
        json_delta(1, "{\"city\":"),
        json_delta(1, "\"Oslo\"}"),
        block_stop(1),
        tool_start(2, "toolu_2", "get_weather"),
        json_delta(2, "{\"city\":"),
        json_delta(2, "\"Bergen\"}"),
        block_stop(2),
        message_delta("tool_use", 40),
        message_stop(),
    ]);

    let oslo = call("toolu_1", "get_weather", r#"{"city":"Oslo"}"#);
    let bergen = call("toolu_2", "get_weather", r#"{"city":"Bergen"}"#);
    assert_eq!(
        pieces,
        [
            text("Checking both."),
            StreamEvent::ToolCall(oslo.clone()),
            StreamEvent::ToolCall(bergen.clone()),
        ]
    );
    let reply = reply.unwrap();
    assert_eq!(reply.text, "Checking both.");
    assert_eq!(reply.tool_calls, [oslo, bergen]);
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
}

#[test]
fn two_text_blocks_are_concatenated() {
    let (_, reply) = assemble(&[
        message_start(5),
        text_start(0),
        text_delta(0, "One. "),
        block_stop(0),
        text_start(1),
        text_delta(1, "Two."),
        block_stop(1),
        message_delta("end_turn", 2),
        message_stop(),
    ]);

    assert_eq!(reply.unwrap().text, "One. Two.");
}

#[test]
fn usage_is_input_from_message_start_with_cache_and_the_output_total_of_message_delta() {
    let start = json!({"type": "message_start", "message": {"content": [], "usage": {
        "input_tokens": 20, "output_tokens": 1,
        "cache_creation_input_tokens": 3, "cache_read_input_tokens": 5}}});

    let (_, reply) = assemble(&[start, message_delta("end_turn", 15), message_stop()]);

    assert_eq!(
        reply.unwrap().usage,
        Usage {
            input_tokens: 28,
            output_tokens: 15
        }
    );
}

#[test]
fn counts_in_message_delta_replace_those_of_message_start() {
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"input_tokens": 40, "cache_read_input_tokens": 0, "output_tokens": 7}});

    let (_, reply) = assemble(&[message_start(20), delta, message_stop()]);

    assert_eq!(
        reply.unwrap().usage,
        Usage {
            input_tokens: 40,
            output_tokens: 7
        }
    );
}

#[test]
fn an_error_event_is_an_upstream_error_with_the_streams_status_and_its_type() {
    let (pieces, reply) = assemble(&[
        message_start(5),
        text_start(0),
        text_delta(0, "Hel"),
        overloaded(),
        text_delta(0, "lo"),
        message_stop(),
    ]);

    assert_eq!(pieces, [text("Hel")]);
    assert_eq!(
        reply.unwrap_err(),
        ProviderError::Upstream {
            status: 200,
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
            retry_after: None,
        }
    );
}

#[test]
fn a_stream_that_ends_before_message_stop_is_a_transport_error() {
    let (pieces, reply) = assemble(&[
        message_start(5),
        text_start(0),
        text_delta(0, "Hel"),
        block_stop(0),
        message_delta("end_turn", 2),
    ]);

    assert_eq!(pieces, [text("Hel")]);
    assert_eq!(
        reply.unwrap_err(),
        ProviderError::Transport("stream ended early".into())
    );
}

#[test]
fn ping_thinking_blocks_and_unknown_events_are_ignored() {
    let (pieces, reply) = assemble(&[
        message_start(5),
        ping(),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "thinking_delta", "thinking": "Let me see."}}),
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "signature_delta", "signature": "EqQB"}}),
        block_stop(0),
        json!({"type": "some_future_event", "detail": 1}),
        text_start(1),
        text_delta(1, "Yes."),
        block_stop(1),
        ping(),
        message_delta("end_turn", 3),
        message_stop(),
    ]);

    assert_eq!(pieces, [text("Yes.")]);
    assert_eq!(reply.unwrap().text, "Yes.");
}

#[test]
fn message_stop_ends_the_reply_and_nothing_after_it_is_read() {
    let mut assembly = Assembly::new(200);
    let mut sink = |_: StreamEvent| {};
    for event in [message_start(1), message_delta("end_turn", 1)] {
        assert_eq!(
            assembly.feed(&event.to_string(), &mut sink).unwrap(),
            Flow::More
        );
    }

    let flow = assembly
        .feed(&message_stop().to_string(), &mut sink)
        .unwrap();

    assert_eq!(flow, Flow::Done);
}

#[test]
fn event_data_that_is_not_json_is_an_invalid_reply() {
    let mut assembly = Assembly::new(200);

    let error = assembly.feed("[DONE]", &mut |_| {}).unwrap_err();

    assert!(matches!(error, ProviderError::InvalidReply(_)), "{error:?}");
}
