//! Every validation rule answers 400 `invalid_request` naming the field, appends
//! nothing and calls no provider; bad JSON and wrong content types in our error shape.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn assert_rejected(app: &TestApp, id: &str, route: &str, body: Value, field: &str) {
    let before = app.session(id).await;
    let response = app
        .post(&format!("/text/session/{id}/{route}"), &body)
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{route} {body}");
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["success"], false);
    assert_eq!(json["error"]["code"], "invalid_request", "{route} {body}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(field),
        "{route} {body}: `{message}` should name `{field}`"
    );
    let after = app.session(id).await;
    assert_eq!(
        after["messages"], before["messages"],
        "nothing appended for {body}"
    );
    assert_eq!(after["version"], before["version"]);
}

#[tokio::test]
async fn message_rules_each_name_their_field() {
    let app = spawn_app().await;
    let id = app
        .create_session(json!({"provider": "openai", "instructions": "keep me"}))
        .await;
    let cases = [
        (json!({}), "content"),
        (json!({"content": ""}), "content"),
        (json!({"content": "   \n\t"}), "content"),
        (json!({"content": 7}), "content"),
        (json!({"content": "hi", "instructions": []}), "instructions"),
        (
            json!({"content": "hi", "instructions": ["ok", "  "]}),
            "instructions[1]",
        ),
        (json!({"content": "hi", "instructions": 5}), "instructions"),
        (json!({"content": "hi", "priority": "urgent"}), "priority"),
        (json!({"content": "hi", "onBusy": "panic"}), "onBusy"),
        (json!("just a string"), "JSON object"),
    ];
    for (body, field) in cases {
        assert_rejected(&app, &id, "message", body, field).await;
    }
    assert_eq!(app.openai.request_count(), 0);
}

#[tokio::test]
async fn instructions_rules_each_name_their_field() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let cases = [
        (json!({"instructions": []}), "instructions"),
        (json!({"instructions": [" "]}), "instructions[0]"),
        (json!({"instructions": ""}), "instructions"),
        (json!({}), "instructions"),
        (json!([]), "instructions"),
        (json!(["fine", ""]), "instructions[1]"),
        (json!("  "), "instructions"),
        (json!({"instructions": "x", "priority": "soon"}), "priority"),
        (json!({"instructions": "x", "onBusy": "never"}), "onBusy"),
        (json!(12), "instructions"),
    ];
    for (body, field) in cases {
        assert_rejected(&app, &id, "instructions", body, field).await;
    }
    assert_eq!(app.openai.request_count(), 0);
}

#[tokio::test]
async fn tool_output_rules_each_name_their_field() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let cases = [
        (json!({"toolOutputs": []}), "toolOutputs"),
        (json!([]), "toolOutputs"),
        (json!({"toolOutputs": [{"output": "x"}]}), "callId"),
        (
            json!({"toolOutputs": [{"callId": "", "output": "x"}]}),
            "toolOutputs[0].callId",
        ),
        (
            json!({"toolOutputs": [{"callId": "a", "output": "x"}, {"callId": "  ", "output": "y"}]}),
            "toolOutputs[1].callId",
        ),
        (
            json!([{"callId": "", "output": "x"}]),
            "toolOutputs[0].callId",
        ),
        (json!({"callId": "", "output": "x"}), "callId"),
        (json!({"callId": "c"}), "output"),
        (
            json!({"toolOutputs": [{"callId": "c", "output": null}]}),
            "toolOutputs[0].output",
        ),
        (
            json!({"toolOutputs": [{"callId": "c", "output": "o"}], "priority": "top"}),
            "priority",
        ),
        (json!("text"), "toolOutputs"),
    ];
    for (body, field) in cases {
        assert_rejected(&app, &id, "tool-output", body, field).await;
    }
}

#[tokio::test]
async fn session_creation_rules_each_name_their_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"provider": "nope"}), "provider"),
        (json!({"provider": 3}), "provider"),
        (json!({"model": " "}), "model"),
        (json!({"instructions": []}), "instructions"),
        (json!({"instructions": ["a", ""]}), "instructions[1]"),
        (
            json!({"defaults": {"temperature": 9}}),
            "defaults.temperature",
        ),
        (json!({"defaults": {"topP": 0}}), "defaults.topP"),
        (json!({"defaults": {"maxTokens": 0}}), "defaults.maxTokens"),
        (
            json!({"defaults": {"stop": ["a", "b", "c", "d", "e"]}}),
            "defaults.stop",
        ),
        (json!({"defaults": {"temprature": 1}}), "temprature"),
        (
            json!({"tools": [{"type": "function", "name": "has space"}]}),
            "tools[0].name",
        ),
        (
            json!({"tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "a"}]}),
            "tools[1].name",
        ),
        (
            json!({"tools": [{"type": "function", "name": "a", "parameters": 1}]}),
            "tools[0].parameters",
        ),
        (
            json!({"tools": [{"type": "retrieval", "name": "a"}]}),
            "tools[0].type",
        ),
        (
            json!({"metadata": {"blob": "x".repeat(17 * 1024)}}),
            "metadata",
        ),
        (json!({"metadata": [1]}), "metadata"),
    ];
    for (body, field) in cases {
        let response = app.post("/text/session", &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], "invalid_request");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "`{message}` should name `{field}`");
    }
    let list: Value = app.get("/text/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"], json!([]), "no session was created");
}

#[tokio::test]
async fn malformed_json_is_400_in_our_shape_and_a_non_json_body_is_415() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"instructions": "keep"})).await;
    for route in ["message", "instructions", "tool-output"] {
        let url = app.url(&format!("/text/session/{id}/{route}"));
        let response = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body("{\"content\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["success"], false);
        assert_eq!(json["error"]["code"], "invalid_request");

        let response = app
            .client
            .post(&url)
            .header("content-type", "text/plain")
            .body("{\"content\": \"hi\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], "unsupported_media_type");
    }
    let response = app
        .client
        .post(app.url("/text/session"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = app
        .client
        .post(app.url("/text/session"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.messages(&id).await.len(), 1);
}

#[tokio::test]
async fn positional_arrays_are_not_taken_for_objects() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"instructions": "keep"})).await;
    for (route, body) in [
        ("message", json!(["hi", null])),
        ("tool-output", json!([["call_1", "sunny"]])),
        ("tool-output", json!({"toolOutputs": [["call_1", "sunny"]]})),
    ] {
        assert_rejected(&app, &id, route, body, "object").await;
    }
    let response = app
        .post(
            "/text/session",
            &json!([null, null, null, null, null, null]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app.post("/text/session", &json!(null)).await;
    assert_eq!(response.status(), StatusCode::CREATED, "null is no body");
}

#[tokio::test]
async fn creation_instructions_count_against_the_messages_a_session_may_hold() {
    let app = spawn_app_with(|c| c.max_messages_per_session = 5).await;
    let too_many: Vec<String> = (0..6).map(|i| format!("rule {i}")).collect();
    let response = app
        .post("/text/session", &json!({"instructions": too_many}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("instructions:")
    );
    let list: Value = app.get("/text/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"], json!([]), "nothing was created");
    let fits: Vec<String> = (0..5).map(|i| format!("rule {i}")).collect();
    let response = app
        .post("/text/session", &json!({"instructions": fits}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_call_id_or_model_past_256_characters_is_400_naming_it() {
    let app = spawn_app().await;
    let response = app
        .post("/text/session", &json!({"model": "m".repeat(257)}))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("model:")
    );

    let id = app.create_session(json!({})).await;
    let response = app
        .post(
            &format!("/text/session/{id}/tool-output"),
            &json!({"callId": "c".repeat(500_000), "output": "x"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("toolOutputs[0].callId:")
    );
    assert!(app.messages(&id).await.is_empty(), "nothing appended");
    let response = app
        .post(
            &format!("/text/session/{id}/tool-output"),
            &json!({"callId": "c".repeat(256), "output": "x"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}
