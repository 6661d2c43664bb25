//! The history without tool calls: `system`, placeholders, merging and blank text
//! (rules 1, 2 and 6 to 9).

use serde_json::{Value, json};

use super::*;
use crate::provider::anthropic::history::{CONTINUE, CONVERSATION_START};

#[test]
fn leading_system_messages_are_joined_into_the_system_field() {
    let body = encode(&[system("be brief"), system("answer in French"), user("hi")]);
    assert_eq!(body["system"], "be brief\n\nanswer in French");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [text("hi")]}])
    );
}

#[test]
fn a_history_without_system_messages_sends_no_system_field() {
    let body = encode(&[user("hi")]);
    assert!(body.get("system").is_none());
}

#[test]
fn a_later_system_message_stays_in_place_as_a_user_text_block() {
    let body = encode(&[
        user("hi"),
        assistant("hello"),
        system("now be formal"),
        user("and now?"),
    ]);
    assert!(body.get("system").is_none());
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [text("hi")]},
            {"role": "assistant", "content": [text("hello")]},
            {"role": "user", "content": [text("[System instruction] now be formal"), text("and now?")]},
        ])
    );
}

#[test]
fn consecutive_messages_of_one_role_are_merged() {
    let body = encode(&[
        user("one"),
        user("two"),
        assistant("three"),
        assistant("four"),
        user("five"),
    ]);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [text("one"), text("two")]},
            {"role": "assistant", "content": [text("three"), text("four")]},
            {"role": "user", "content": [text("five")]},
        ])
    );
}

#[test]
fn a_history_starting_with_an_assistant_message_gets_a_user_placeholder_first() {
    let body = encode(&[system("rules"), assistant("Welcome!"), user("hi")]);
    assert_eq!(
        body["messages"][0],
        json!({"role": "user", "content": [text(CONVERSATION_START)]})
    );
    assert_eq!(body["messages"][1]["role"], "assistant");
}

#[test]
fn a_history_of_system_messages_only_gets_a_user_placeholder() {
    let body = encode(&[system("be brief")]);
    assert_eq!(body["system"], "be brief");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [text(CONVERSATION_START)]}])
    );
    let body = encode(&[]);
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [text(CONVERSATION_START)]}])
    );
}

#[test]
fn blank_user_and_system_text_is_never_sent() {
    let body = encode(&[
        system(" "),
        user("hi"),
        assistant("yes"),
        system("\n"),
        user("  "),
    ]);
    assert!(body.get("system").is_none());
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [text("hi")]},
            {"role": "assistant", "content": [text("yes")]},
            {"role": "user", "content": [text(CONTINUE)]},
        ])
    );
}

#[test]
fn a_history_ending_with_an_assistant_message_gets_a_user_message_after_it() {
    let body = encode(&[user("hi"), assistant("hello ")]);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[2],
        json!({"role": "user", "content": [text(CONTINUE)]})
    );
}

#[test]
fn staged_messages_follow_the_committed_history() {
    let history = [user("hi"), assistant("hello")];
    let staged = [system("be brief"), user("again")];
    let params = Defaults::default();
    let request = ChatRequest {
        model: "claude-sonnet-4-5",
        history: &history,
        staged: &staged,
        tools: &[],
        params: &params,
        stream: false,
        left_out: 0..0,
    };
    let body: Value = serde_json::from_slice(&client().encode(&request).unwrap()).unwrap();
    assert_eq!(
        body["messages"][2]["content"],
        json!([text("[System instruction] be brief"), text("again")])
    );
}
