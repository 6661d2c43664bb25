//! Tool calls and tool outputs in the history (rules 3 to 5 and 10): `tool_use` and
//! `tool_result` blocks, their ids, and what goes as text instead.

use serde_json::{Value, json};

use super::*;
use crate::message::ToolCall;
use crate::provider::anthropic::history::{
    CONTINUE, EMPTY_OUTPUT, EMPTY_REPLY, MISSING_OUTPUT, tool_input,
};

fn calling(text: &str, calls: &[(&str, &str)]) -> Message {
    let mut message = assistant(text);
    message.tool_calls = calls
        .iter()
        .map(|(id, arguments)| ToolCall {
            id: (*id).into(),
            name: "get_weather".into(),
            arguments: (*arguments).into(),
        })
        .collect();
    message
}

fn output(id: &str, text: &str) -> Message {
    Message::tool_output(id, text, Timestamp::now())
}

fn result(id: &str, content: &str) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": content})
}

fn missing(id: &str) -> Value {
    json!({"type": "tool_result", "tool_use_id": id, "content": MISSING_OUTPUT, "is_error": true})
}

fn tool_use(id: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": "get_weather", "input": input})
}

#[test]
fn a_tool_output_answering_the_previous_assistant_message_becomes_a_tool_result() {
    let body = encode(&[
        user("weather in Oslo?"),
        calling("", &[("toolu_1", r#"{"city":"Oslo"}"#)]),
        output("toolu_1", "sunny, 21 °C"),
    ]);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [text("weather in Oslo?")]},
            {"role": "assistant", "content": [tool_use("toolu_1", json!({"city": "Oslo"}))]},
            {"role": "user", "content": [result("toolu_1", "sunny, 21 °C")]},
        ])
    );
}

#[test]
fn an_empty_tool_output_is_sent_as_a_placeholder() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        output("toolu_1", ""),
    ]);
    assert_eq!(
        body["messages"][2]["content"],
        json!([result("toolu_1", EMPTY_OUTPUT)])
    );
}

#[test]
fn a_duplicate_or_unknown_tool_output_goes_as_text_after_the_results() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        output("toolu_9", "stray"),
        output("toolu_1", "first"),
        output("toolu_1", "second"),
    ]);
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [
            result("toolu_1", "first"),
            text("Tool output (toolu_9): stray"),
            text("Tool output (toolu_1): second"),
        ]})
    );
}

#[test]
fn a_tool_output_after_other_messages_goes_as_text() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        user("never mind"),
        output("toolu_1", "late"),
    ]);
    assert_eq!(
        body["messages"][2],
        json!({"role": "user", "content": [
            missing("toolu_1"),
            text("never mind"),
            text("Tool output (toolu_1): late"),
        ]})
    );
}

#[test]
fn a_tool_output_at_the_start_of_the_history_goes_into_the_system_field() {
    let body = encode(&[output("toolu_1", "orphan"), user("hi")]);
    assert_eq!(body["system"], "Tool output (toolu_1): orphan");
}

#[test]
fn every_call_without_output_gets_an_error_result_in_call_order() {
    let body = encode(&[
        user("go"),
        calling(
            "",
            &[("toolu_1", "{}"), ("toolu_2", "{}"), ("toolu_3", "{}")],
        ),
        output("toolu_2", "two"),
    ]);
    assert_eq!(
        body["messages"][2]["content"],
        json!([
            missing("toolu_1"),
            result("toolu_2", "two"),
            missing("toolu_3")
        ])
    );
}

#[test]
fn calls_left_unanswered_before_the_next_assistant_message_still_get_results() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        assistant("done"),
    ]);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [text("go")]},
            {"role": "assistant", "content": [tool_use("toolu_1", json!({}))]},
            {"role": "user", "content": [missing("toolu_1")]},
            {"role": "assistant", "content": [text("done")]},
            {"role": "user", "content": [text(CONTINUE)]},
        ])
    );
}

#[test]
fn tool_results_come_before_instructions_and_user_text() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        output("toolu_1", "ok"),
        system("summarise"),
        user("thanks"),
    ]);
    assert_eq!(
        body["messages"][2]["content"],
        json!([
            result("toolu_1", "ok"),
            text("[System instruction] summarise"),
            text("thanks")
        ])
    );
}

#[test]
fn an_assistant_message_sends_its_text_then_its_calls_with_parsed_input() {
    let body = encode(&[
        user("go"),
        calling(
            "Let me check.",
            &[("toolu_1", r#"{"city":"Oslo","days":2}"#)],
        ),
        output("toolu_1", "ok"),
    ]);
    assert_eq!(
        body["messages"][1]["content"],
        json!([
            text("Let me check."),
            tool_use("toolu_1", json!({"city": "Oslo", "days": 2}))
        ])
    );
}

#[test]
fn blank_assistant_text_is_left_out_and_an_empty_assistant_message_gets_a_placeholder() {
    let body = encode(&[
        user("a"),
        calling("  \n", &[("toolu_1", "{}")]),
        output("toolu_1", "x"),
    ]);
    assert_eq!(
        body["messages"][1]["content"],
        json!([tool_use("toolu_1", json!({}))])
    );
    let body = encode(&[user("a"), assistant(""), user("b")]);
    assert_eq!(body["messages"][1]["content"], json!([text(EMPTY_REPLY)]));
}

#[test]
fn arguments_that_are_not_a_json_object_are_wrapped() {
    assert_eq!(tool_input(""), json!({}));
    assert_eq!(tool_input("  "), json!({}));
    assert_eq!(tool_input("[1,2]"), json!({"arguments": "[1,2]"}));
    assert_eq!(tool_input("{not json"), json!({"arguments": "{not json"}));
    assert_eq!(tool_input(r#"{"a":1}"#), json!({"a": 1}));
}

#[test]
fn a_repeated_call_id_is_sent_once() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}"), ("toolu_1", "{}")]),
    ]);
    assert_eq!(
        body["messages"][1]["content"],
        json!([tool_use("toolu_1", json!({}))])
    );
    assert_eq!(body["messages"][2]["content"], json!([missing("toolu_1")]));
}

#[test]
fn a_call_id_an_earlier_message_used_is_sent_under_a_new_id_that_its_run_answers() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        output("toolu_1", "first"),
        calling("", &[("toolu_1", "{}")]),
        output("toolu_1", "second"),
        calling("", &[("toolu_1", "{}")]),
        user("go on"),
        output("toolu_1", "late"),
    ]);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [text("go")]},
            {"role": "assistant", "content": [tool_use("toolu_1", json!({}))]},
            {"role": "user", "content": [result("toolu_1", "first")]},
            {"role": "assistant", "content": [tool_use("toolu_1_2", json!({}))]},
            {"role": "user", "content": [result("toolu_1_2", "second")]},
            {"role": "assistant", "content": [tool_use("toolu_1_3", json!({}))]},
            {"role": "user", "content": [
                missing("toolu_1_3"),
                text("go on"),
                text("Tool output (toolu_1): late"),
            ]},
        ])
    );
}

#[test]
fn a_new_call_id_is_one_no_call_of_the_request_has() {
    let body = encode(&[
        user("go"),
        calling("", &[("toolu_1", "{}")]),
        calling("", &[("toolu_1", "{}"), ("toolu_1_2", "{}")]),
        output("toolu_1", "renamed"),
        output("toolu_1_2", "own id"),
    ]);
    assert_eq!(
        body["messages"][3],
        json!({"role": "assistant", "content": [
            tool_use("toolu_1_3", json!({})),
            tool_use("toolu_1_2", json!({})),
        ]})
    );
    assert_eq!(
        body["messages"][4]["content"],
        json!([
            result("toolu_1_3", "renamed"),
            result("toolu_1_2", "own id")
        ])
    );
}
