//! The rest of the request body: tools, settings, the streaming switch.

use serde_json::json;

use super::*;
use crate::message::ToolKind;

#[test]
fn tools_are_sent_as_functions_only_when_the_session_has_some() {
    let tools = [
        Tool {
            kind: ToolKind::Function,
            name: "get_weather".to_owned(),
            description: Some("Current weather".to_owned()),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        },
        Tool {
            kind: ToolKind::Function,
            name: "now".to_owned(),
            description: None,
            parameters: json!({"type": "object", "properties": {}}),
        },
    ];
    let history = [text(Role::User, "hi")];
    let body = encode_with(&history, &tools, &Defaults::default(), false);
    assert_eq!(
        body["tools"],
        json!([
            {"type": "function", "function": {
                "name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {
                "name": "now", "parameters": {"type": "object", "properties": {}}}},
        ])
    );
    let without = encode_with(&history, &[], &Defaults::default(), false);
    assert!(without.get("tools").is_none());
}

#[test]
fn settings_are_sent_only_when_set() {
    let history = [text(Role::User, "hi")];
    let body = encode_with(&history, &[], &Defaults::default(), false);
    assert_eq!(
        body,
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]})
    );
    let params = Defaults {
        temperature: Some(0.5),
        max_tokens: Some(64),
        top_p: Some(0.9),
        stop: Some(vec!["END".to_owned()]),
        ..Default::default()
    };
    let body = encode_with(&history, &[], &params, false);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["top_p"], 0.9);
    assert_eq!(body["stop"], json!(["END"]));
    let empty_stop = Defaults {
        stop: Some(Vec::new()),
        ..Defaults::default()
    };
    assert!(
        encode_with(&history, &[], &empty_stop, false)
            .get("stop")
            .is_none()
    );
}

#[test]
fn a_streaming_request_asks_for_the_stream_and_its_usage_chunk() {
    let history = [text(Role::User, "hi")];
    let body = encode_with(&history, &[], &Defaults::default(), true);
    assert_eq!(
        body,
        json!({
            "model": "gpt-test",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}
