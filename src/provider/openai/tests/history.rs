//! How the history becomes Chat Completions messages.

use serde_json::{Value, json};

use super::*;

#[test]
fn system_messages_stay_system_messages_at_their_place() {
    let history = [
        text(Role::System, "be brief"),
        text(Role::User, "hi"),
        text(Role::Assistant, "hello"),
        text(Role::System, "now answer in French"),
        text(Role::User, "again"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "now answer in French"},
            {"role": "user", "content": "again"},
        ])
    );
}

#[test]
fn a_tool_call_followed_by_its_output_becomes_a_tool_message() {
    let history = [
        text(Role::User, "weather?"),
        calling("", &["call_1"]),
        output("call_1", "sunny"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ])
    );
}

#[test]
fn an_assistant_text_is_kept_next_to_its_tool_calls() {
    let messages = messages_of(&[calling("let me look", &["call_1"]), output("call_1", "x")]);
    assert_eq!(messages[0]["content"], "let me look");
    assert_eq!(messages[0]["tool_calls"][0]["id"], "call_1");
}

#[test]
fn a_call_without_output_gets_a_synthetic_tool_message_before_the_next_message() {
    let history = [
        calling("", &["call_1", "call_2"]),
        output("call_2", "done"),
        text(Role::User, "never mind"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            history_assistant_json(&["call_1", "call_2"]),
            {"role": "tool", "tool_call_id": "call_2", "content": "done"},
            {"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT},
            {"role": "user", "content": "never mind"},
        ])
    );
}

fn history_assistant_json(ids: &[&str]) -> Value {
    let calls: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"id": id, "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}})
        })
        .collect();
    json!({"role": "assistant", "content": null, "tool_calls": calls})
}

#[test]
fn a_call_at_the_end_of_the_history_gets_a_synthetic_tool_message() {
    let messages = messages_of(&[text(Role::User, "hi"), calling("", &["call_1"])]);
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT})
    );
}

#[test]
fn an_output_after_a_user_message_goes_as_plain_system_text() {
    let history = [
        calling("", &["call_1"]),
        text(Role::User, "still there?"),
        output("call_1", "late"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            history_assistant_json(&["call_1"]),
            {"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT},
            {"role": "user", "content": "still there?"},
            {"role": "system", "content": "Tool output (call_1): late"},
        ])
    );
}

#[test]
fn a_second_output_or_an_unknown_call_goes_as_text_after_the_tool_messages() {
    let history = [
        calling("", &["call_1", "call_2"]),
        output("call_1", "first"),
        output("call_1", "again"),
        output("call_9", "stray"),
        output("call_2", "second"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            history_assistant_json(&["call_1", "call_2"]),
            {"role": "tool", "tool_call_id": "call_1", "content": "first"},
            {"role": "tool", "tool_call_id": "call_2", "content": "second"},
            {"role": "system", "content": "Tool output (call_1): again"},
            {"role": "system", "content": "Tool output (call_9): stray"},
        ])
    );
}

#[test]
fn a_plain_system_message_ends_the_run_of_tool_outputs() {
    let history = [
        calling("", &["call_1"]),
        text(Role::System, "hurry up"),
        output("call_1", "late"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            history_assistant_json(&["call_1"]),
            {"role": "tool", "tool_call_id": "call_1", "content": NO_OUTPUT},
            {"role": "system", "content": "hurry up"},
            {"role": "system", "content": "Tool output (call_1): late"},
        ])
    );
}

#[test]
fn staged_messages_follow_the_committed_history() {
    let history = [calling("", &["call_1"])];
    let staged = [output("call_1", "sunny")];
    let mut config = config("http://127.0.0.1:9".to_owned(), None);
    config.default_model = Some("gpt-test".to_owned());
    let provider = OpenAi::new(config).unwrap();
    let request = ChatRequest {
        model: "gpt-test",
        history: &history,
        staged: &staged,
        tools: &[],
        params: &Defaults::default(),
        stream: false,
        left_out: 0..0,
    };
    let body: Value = serde_json::from_slice(&provider.encode(&request).unwrap()).unwrap();
    assert_eq!(
        body["messages"][1],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
    );
    assert_eq!(provider.default_model(), Some("gpt-test"));
}

#[test]
fn a_call_id_repeated_within_one_message_is_sent_once_with_one_tool_message() {
    let history = [
        calling("", &["call_1", "call_1", "call_2"]),
        output("call_1", "first"),
        output("call_1", "second"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            history_assistant_json(&["call_1", "call_2"]),
            {"role": "tool", "tool_call_id": "call_1", "content": "first"},
            {"role": "tool", "tool_call_id": "call_2", "content": NO_OUTPUT},
            {"role": "system", "content": "Tool output (call_1): second"},
        ])
    );
}

#[test]
fn a_call_id_an_earlier_message_used_is_sent_under_a_new_id_that_its_run_answers() {
    let history = [
        calling("", &["call_1"]),
        output("call_1", "first"),
        calling("", &["call_1"]),
        output("call_1", "second"),
        calling("", &["call_1"]),
        text(Role::User, "go on"),
        output("call_1", "late"),
    ];
    assert_eq!(
        messages_of(&history),
        json!([
            history_assistant_json(&["call_1"]),
            {"role": "tool", "tool_call_id": "call_1", "content": "first"},
            history_assistant_json(&["call_1_2"]),
            {"role": "tool", "tool_call_id": "call_1_2", "content": "second"},
            history_assistant_json(&["call_1_3"]),
            {"role": "tool", "tool_call_id": "call_1_3", "content": NO_OUTPUT},
            {"role": "user", "content": "go on"},
            {"role": "system", "content": "Tool output (call_1): late"},
        ])
    );
}

#[test]
fn a_new_call_id_is_one_no_call_of_the_request_has() {
    let history = [
        calling("", &["call_1"]),
        calling("", &["call_1", "call_1_2"]),
        output("call_1", "renamed"),
        output("call_1_2", "own id"),
    ];
    let messages = messages_of(&history);
    assert_eq!(
        messages[2],
        history_assistant_json(&["call_1_3", "call_1_2"])
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_1_3", "content": "renamed"})
    );
    assert_eq!(
        messages[4],
        json!({"role": "tool", "tool_call_id": "call_1_2", "content": "own id"})
    );
}
