//! The settings and tools sent with the history (module doc, "Settings").

use serde_json::{Value, json};

use super::*;

#[test]
fn max_tokens_is_the_sessions_or_the_default() {
    let body = encode(&[user("hi")]);
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
    let params = Defaults {
        max_tokens: Some(300),
        ..Defaults::default()
    };
    assert_eq!(encode_with(&[user("hi")], &[], &params)["max_tokens"], 300);
}

#[test]
fn temperature_above_one_is_clamped_to_one() {
    let params = Defaults {
        temperature: Some(1.7),
        ..Defaults::default()
    };
    assert_eq!(encode_with(&[user("hi")], &[], &params)["temperature"], 1.0);
    let params = Defaults {
        temperature: Some(0.2),
        ..Defaults::default()
    };
    assert_eq!(encode_with(&[user("hi")], &[], &params)["temperature"], 0.2);
}

#[test]
fn top_p_is_sent_only_without_temperature() {
    let params = Defaults {
        top_p: Some(0.9),
        ..Defaults::default()
    };
    assert_eq!(encode_with(&[user("hi")], &[], &params)["top_p"], 0.9);
    let params = Defaults {
        top_p: Some(0.9),
        temperature: Some(0.5),
        ..Defaults::default()
    };
    let body = encode_with(&[user("hi")], &[], &params);
    assert_eq!(body["temperature"], 0.5);
    assert!(body.get("top_p").is_none());
}

#[test]
fn stop_becomes_stop_sequences_without_whitespace_only_entries() {
    let params = Defaults {
        stop: Some(vec!["END".into(), "\n".into(), "###".into()]),
        ..Defaults::default()
    };
    assert_eq!(
        encode_with(&[user("hi")], &[], &params)["stop_sequences"],
        json!(["END", "###"])
    );
    let params = Defaults {
        stop: Some(vec!["\n\n".into()]),
        ..Defaults::default()
    };
    assert!(
        encode_with(&[user("hi")], &[], &params)
            .get("stop_sequences")
            .is_none()
    );
}

#[test]
fn unset_settings_and_absent_tools_are_left_out() {
    let body = encode(&[user("hi")]);
    let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["max_tokens", "messages", "model"]);
}

#[test]
fn tools_are_sent_with_their_schema_as_input_schema() {
    let mut bare = weather_tool();
    bare.name = "ping".into();
    bare.description = None;
    bare.parameters = json!({"properties": {}});
    let body = encode_with(&[user("hi")], &[weather_tool(), bare], &Defaults::default());
    assert_eq!(
        body["tools"],
        json!([
            {"name": "get_weather", "description": "Current weather",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
        ])
    );
}

#[test]
fn a_streaming_request_asks_for_stream_and_others_leave_it_out() {
    let history = [user("hi")];
    let params = Defaults::default();
    let mut request = ChatRequest {
        model: "claude-sonnet-4-5",
        history: &history,
        staged: &[],
        tools: &[],
        params: &params,
        stream: true,
        left_out: 0..0,
    };
    let streaming: Value = serde_json::from_slice(&client().encode(&request).unwrap()).unwrap();
    request.stream = false;
    let whole: Value = serde_json::from_slice(&client().encode(&request).unwrap()).unwrap();

    assert_eq!(streaming["stream"], true);
    assert!(whole.get("stream").is_none());
}
