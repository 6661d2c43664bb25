//! The three writes: what each appends, in which order, and what the provider receives.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{roles_and_contents, spawn_app, spawn_app_with};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(r, c)| (r.to_string(), c.to_string()))
        .collect()
}

/// (role, content) of the messages an OpenAI request carried.
fn sent(body: &Value) -> Vec<(String, String)> {
    roles_and_contents(body["messages"].as_array().unwrap())
}

#[tokio::test]
async fn a_message_appends_instructions_then_user_then_assistant_and_the_provider_sees_it_all() {
    let app = spawn_app().await;
    let id = app
        .create_session(json!({"provider": "openai", "instructions": "be brief"}))
        .await;
    app.message(&id, json!({"content": "first"})).await;

    let (status, body) = app
        .message(
            &id,
            json!({"content": "  second  ", "instructions": ["now in French", "and short"]}),
        )
        .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    assert_eq!(body["result"]["text"], "reply to: second");
    assert_eq!(body["result"]["provider"], "openai");
    assert_eq!(body["result"]["finishReason"], "stop");
    assert!(body["result"]["usage"]["inputTokens"].as_u64().unwrap() > 0);
    let expected = pairs(&[
        ("system", "be brief"),
        ("user", "first"),
        ("assistant", "reply to: first"),
        ("system", "now in French"),
        ("system", "and short"),
        ("user", "second"),
        ("assistant", "reply to: second"),
    ]);
    let committed = roles_and_contents(body["session"]["messages"].as_array().unwrap());
    assert_eq!(committed, expected);
    assert_eq!(roles_and_contents(&app.messages(&id).await), expected);
    let requests = app.openai.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        sent(&requests[1].body),
        expected[..6].to_vec(),
        "the whole history, new messages included"
    );
}

#[tokio::test]
async fn the_response_carries_the_turn_id_in_the_body_and_the_header() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let response = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": "hi"}),
        )
        .await;
    let header = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["turnId"], header.as_str());
}

#[tokio::test]
async fn every_answer_of_a_write_names_a_turn_refusals_before_it_ran_included() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let id = app.create_session(json!({})).await;
    let url = app.url(&format!("/text/session/{id}/message"));
    let answers = [
        // Validation, content type, body limit, malformed JSON.
        app.client.post(&url).json(&json!({"content": " "})).send(),
        app.client.post(&url).body("{\"content\":\"hi\"}").send(),
        app.client
            .post(&url)
            .json(&json!({"content": "x".repeat(4096)}))
            .send(),
        app.client
            .post(&url)
            .header("content-type", "application/json")
            .body("{")
            .send(),
    ];
    let mut seen = std::collections::HashSet::new();
    for answer in answers {
        let answer = answer.await.unwrap();
        assert!(answer.status().is_client_error(), "{}", answer.status());
        let turn = answer.headers()["x-turn-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&turn).is_ok());
        assert!(seen.insert(turn), "a new id for each write");
    }
    // Not a write: no turn id.
    let read = app.get(&format!("/text/session/{id}")).await;
    assert!(read.headers().get("x-turn-id").is_none());
}

#[tokio::test]
async fn the_echo_provider_echoes_the_last_user_message_and_counts_words() {
    let app = spawn_app().await;
    let id = app
        .create_session(json!({"instructions": "be brief"}))
        .await;
    let (status, body) = app.message(&id, json!({"content": "hello there"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["result"],
        json!({"text": "echo: hello there", "toolCalls": [], "finishReason": "stop",
               "usage": {"inputTokens": 4, "outputTokens": 3}, "provider": "echo", "model": "echo-1",
               "messagesSent": 2})
    );
}

#[tokio::test]
async fn instructions_append_system_messages_then_the_reply_in_every_body_form() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    for (body, added) in [
        (json!({"instructions": "one"}), vec!["one"]),
        (
            json!({"instructions": ["two", "three"], "priority": "high"}),
            vec!["two", "three"],
        ),
        (json!("four"), vec!["four"]),
        (json!(["five", "six"]), vec!["five", "six"]),
    ] {
        let before = app.messages(&id).await;
        let response = app
            .post(&format!("/text/session/{id}/instructions"), &body)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["success"], true);
        let after = app.messages(&id).await;
        let new = roles_and_contents(&after[before.len()..]);
        let mut expected: Vec<_> = added
            .iter()
            .map(|t| ("system".to_owned(), t.to_string()))
            .collect();
        expected.push((
            "assistant".into(),
            json["result"]["text"].as_str().unwrap().to_owned(),
        ));
        assert_eq!(new, expected, "{body}");
        let request = app.openai.requests().pop().unwrap();
        assert_eq!(
            sent(&request.body),
            roles_and_contents(&after[..after.len() - 1])
        );
    }
}

#[tokio::test]
async fn tool_output_appends_exact_system_messages_in_all_three_forms_without_a_provider_call() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let forms = [
        json!({"toolOutputs": [{"callId": "call_1", "output": "sunny"}, {"callId": "call_2", "output": {"t": 21}}]}),
        json!([{"callId": "call_3", "output": "rain"}]),
        json!({"callId": "call_4", "output": 42}),
    ];
    for form in &forms {
        let response = app
            .post(&format!("/text/session/{id}/tool-output"), form)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{form}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["success"], true);
        assert!(body.get("result").is_none());
        assert!(body["session"]["messages"].is_array());
    }
    let messages = app.messages(&id).await;
    let got: Vec<_> = messages
        .iter()
        .map(|m| {
            (
                m["role"].clone(),
                m["content"].clone(),
                m["toolCallId"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                json!("system"),
                json!("Tool output (call_1): sunny"),
                json!("call_1")
            ),
            (
                json!("system"),
                json!("Tool output (call_2): {\"t\":21}"),
                json!("call_2")
            ),
            (
                json!("system"),
                json!("Tool output (call_3): rain"),
                json!("call_3")
            ),
            (
                json!("system"),
                json!("Tool output (call_4): 42"),
                json!("call_4")
            ),
        ]
    );
    assert_eq!(
        app.openai.request_count(),
        0,
        "tool outputs never call the provider"
    );
}

#[tokio::test]
async fn every_message_has_a_created_at_time_and_the_session_its_updated_at() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let (_, body) = app.message(&id, json!({"content": "hi"})).await;
    let session = &body["session"];
    for message in session["messages"].as_array().unwrap() {
        assert!(chrono_like(message["createdAt"].as_str().unwrap()));
    }
    assert!(session["updatedAt"].as_str().unwrap() >= session["createdAt"].as_str().unwrap());
    assert_eq!(session["version"], 2);
}

fn chrono_like(text: &str) -> bool {
    text.len() == "2026-11-23T08:00:00.123Z".len()
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn view_delta_answers_without_the_history_but_with_what_the_write_appended() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"instructions": "sys"})).await;
    let response = app
        .post(
            &format!("/text/session/{id}/message?view=delta"),
            &json!({"content": "hi", "instructions": "now"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let session = &body["session"];
    assert!(session.get("messages").is_none());
    assert_eq!(
        roles_and_contents(session["newMessages"].as_array().unwrap()),
        pairs(&[("system", "now"), ("user", "hi"), ("assistant", "echo: hi")])
    );
    assert_eq!(session["id"], id.as_str());
    assert_eq!(session["version"], 2);
    let response = app
        .post(
            &format!("/text/session/{id}/tool-output?view=delta"),
            &json!({"callId": "c", "output": "o"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["session"]["newMessages"].as_array().unwrap().len(), 1);
    let full: Value = app
        .post(
            &format!("/text/session/{id}/instructions?view=full"),
            &json!("x"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(full["session"]["messages"].as_array().unwrap().len(), 7);
    let bad = app
        .post(
            &format!("/text/session/{id}/message?view=some"),
            &json!({"content": "x"}),
        )
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        app.messages(&id).await.len(),
        7,
        "nothing appended for a bad view"
    );
}
