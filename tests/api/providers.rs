//! The OpenAI and Anthropic mappings against mocks that reject what the real APIs
//! reject: any history we can hold is accepted, tools go in each provider's format,
//! tool calls come back in `result.toolCalls`, and keys travel only in headers.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, TestApp, spawn_app};
use test_support::mock_provider::{MockProvider, Reply};

fn weather_tool() -> Value {
    json!({"type": "function", "name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

/// Builds, over HTTP, a history with a leading system message, an assistant message
/// with two tool calls of which only one gets its output, and a mid-history
/// instruction; then one more message. Every provider request must be accepted.
async fn tricky_history(app: &TestApp, provider: &str, mock: &MockProvider) -> String {
    let calls = mock.tool_call_reply(&[
        ("call_1", "get_weather", r#"{"city":"Oslo"}"#),
        ("call_2", "get_weather", r#"{"city":"Bergen"}"#),
    ]);
    mock.script(move |_, index| {
        (index == 0).then(|| Reply {
            status: 200,
            body: calls.clone(),
            delay: Default::default(),
        })
    });
    let id = app
        .create_session(json!({"provider": provider, "instructions": "You are a weather bot.", "tools": [weather_tool()]}))
        .await;

    let (status, body) = app
        .message(&id, json!({"content": "Weather in Oslo and Bergen?"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{provider}: {body}");
    assert_eq!(body["result"]["finishReason"], "tool_calls");
    assert_eq!(
        body["result"]["toolCalls"],
        json!([{"id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"},
               {"id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}])
    );
    let assistant = body["session"]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(
        assistant["toolCalls"], body["result"]["toolCalls"],
        "tool calls are kept on the message"
    );

    let response = app
        .post(
            &format!("/text/session/{id}/tool-output"),
            &json!({"callId": "call_1", "output": "sunny, 21 °C"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .post(
            &format!("/text/session/{id}/instructions"),
            &json!("Answer in one line."),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{provider}: {}",
        response.text().await.unwrap()
    );
    let (status, body) = app.message(&id, json!({"content": "Thanks!"})).await;
    assert_eq!(status, StatusCode::OK, "{provider}: {body}");
    assert_eq!(body["result"]["text"], "reply to: Thanks!");
    assert_eq!(mock.request_count(), 3);
    id
}

#[tokio::test]
async fn the_openai_mapping_is_accepted_for_any_history_and_uses_native_tool_messages() {
    let app = spawn_app().await;
    tricky_history(&app, "openai", &app.openai).await;
    let requests = app.openai.requests();
    for request in &requests {
        assert_eq!(
            request.headers["authorization"],
            format!("Bearer {OPENAI_TEST_KEY}")
        );
        assert_eq!(
            request.body["tools"],
            json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                    "parameters": weather_tool()["parameters"]}}])
        );
        assert!(
            !request.body.to_string().contains(OPENAI_TEST_KEY),
            "the key travels only in a header"
        );
    }
    let messages = requests[2].body["messages"].as_array().unwrap();
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are a weather bot."})
    );
    let answered = messages
        .iter()
        .find(|m| m["tool_call_id"] == "call_1")
        .unwrap();
    assert_eq!(answered["role"], "tool");
    assert_eq!(answered["content"], "sunny, 21 °C");
    let unanswered = messages
        .iter()
        .find(|m| m["tool_call_id"] == "call_2")
        .unwrap();
    assert_eq!(
        unanswered["role"], "tool",
        "a call left without output still gets a tool message"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["role"] == "system" && m["content"] == "Answer in one line.")
    );
}

#[tokio::test]
async fn the_anthropic_mapping_is_accepted_for_any_history_and_uses_native_tool_results() {
    let app = spawn_app().await;
    tricky_history(&app, "anthropic", &app.anthropic).await;
    let requests = app.anthropic.requests();
    for request in &requests {
        assert_eq!(request.headers["x-api-key"], ANTHROPIC_TEST_KEY);
        assert!(request.headers.contains_key("anthropic-version"));
        assert_eq!(
            request.body["tools"],
            json!([{"name": "get_weather", "description": "Current weather",
                    "input_schema": weather_tool()["parameters"]}])
        );
        assert!(request.body["max_tokens"].as_u64().unwrap() >= 1);
    }
    let body = &requests[2].body;
    assert_eq!(body["system"], "You are a weather bot.");
    let blocks: Vec<&Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .collect();
    let result = blocks
        .iter()
        .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == "call_1")
        .unwrap();
    assert_eq!(result["content"], "sunny, 21 °C");
    assert!(
        blocks
            .iter()
            .any(|b| b["type"] == "tool_result" && b["tool_use_id"] == "call_2")
    );
    let tool_use = blocks
        .iter()
        .find(|b| b["type"] == "tool_use" && b["id"] == "call_1")
        .unwrap();
    assert_eq!(tool_use["input"], json!({"city": "Oslo"}));
    assert!(
        body.to_string().contains("Answer in one line."),
        "the mid-history instruction is carried inside messages"
    );
    assert!(
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] != "system")
    );
}

#[tokio::test]
async fn instructions_on_a_fresh_session_are_accepted_by_both_providers() {
    let app = spawn_app().await;
    for provider in ["openai", "anthropic"] {
        let id = app.create_session(json!({"provider": provider})).await;
        let response = app
            .post(
                &format!("/text/session/{id}/instructions"),
                &json!("Say hello."),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{provider}: {}",
            response.text().await.unwrap()
        );
        assert_eq!(app.messages(&id).await.len(), 2);
    }
}

#[tokio::test]
async fn generation_defaults_reach_the_provider_in_its_own_names() {
    let app = spawn_app().await;
    let defaults = json!({"temperature": 0.5, "maxTokens": 64, "topP": 0.9, "stop": ["END"]});
    for provider in ["openai", "anthropic"] {
        let id = app
            .create_session(json!({"provider": provider, "model": "m-1", "defaults": defaults}))
            .await;
        let (status, _) = app.message(&id, json!({"content": "hi"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let openai = &app.openai.requests()[0].body;
    assert_eq!(
        (
            openai["model"].clone(),
            openai["temperature"].clone(),
            openai["max_tokens"].clone(),
            openai["top_p"].clone(),
            openai["stop"].clone()
        ),
        (
            json!("m-1"),
            json!(0.5),
            json!(64),
            json!(0.9),
            json!(["END"])
        )
    );
    let anthropic = &app.anthropic.requests()[0].body;
    // Anthropic: temperature and top_p are not sent together.
    assert_eq!(
        (
            anthropic["model"].clone(),
            anthropic["temperature"].clone(),
            anthropic["max_tokens"].clone(),
            anthropic["top_p"].clone(),
            anthropic["stop_sequences"].clone()
        ),
        (
            json!("m-1"),
            json!(0.5),
            json!(64),
            Value::Null,
            json!(["END"])
        ),
        "recent Claude models refuse temperature and top_p together: temperature wins"
    );
}
