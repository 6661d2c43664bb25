//! The context window: what is sent is bounded, the stored history stays whole.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;
use test_support::mock_provider::Reply;

fn roles(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn with_max_context_messages_4_the_provider_gets_the_system_prompt_and_the_newest_messages() {
    let app = spawn_app().await;
    let tool = json!({"type": "function", "name": "lookup"});
    let id = app
        .create_session(json!({"provider": "openai", "instructions": "You are brief.", "tools": [tool], "defaults": {"maxContextMessages": 4}}))
        .await;
    for i in 0..3 {
        let (status, _) = app.message(&id, json!({"content": format!("u{i}")})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let calls = app.openai.tool_call_reply(&[("call_9", "lookup", "{}")]);
    app.openai.script(move |_, index| {
        (index == 3).then(|| Reply {
            status: 200,
            body: calls.clone(),
            delay: Default::default(),
        })
    });
    app.message(&id, json!({"content": "use the tool"})).await;
    let response = app
        .post(
            &format!("/text/session/{id}/tool-output"),
            &json!({"callId": "call_9", "output": "42"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let (status, body) = app.message(&id, json!({"content": "and now?"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["messagesSent"], 4);
    let sent = app.openai.requests().last().unwrap().body.clone();
    // history: system, (u0 a0 u1 a1 u2 a2), user, assistant+call, tool output, user
    assert_eq!(
        roles(&sent),
        ["system", "assistant", "tool", "user"],
        "{sent}"
    );
    assert_eq!(sent["messages"][0]["content"], "You are brief.");
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["id"], "call_9",
        "the output goes with its call"
    );
    assert_eq!(
        app.messages(&id).await.len(),
        12,
        "the stored history stays whole"
    );

    app.message(&id, json!({"content": "last"})).await;
    let sent = app.openai.requests().last().unwrap().body.clone();
    let roles = roles(&sent);
    assert_eq!(roles[0], "system");
    assert!(
        roles[1] != "tool",
        "never a tool output without its call: {roles:?}"
    );
    assert!(roles.len() <= 4);
}

#[tokio::test]
async fn with_max_context_tokens_the_oldest_messages_are_left_out_first() {
    let app = spawn_app().await;
    let id = app
        .create_session(json!({"provider": "anthropic", "instructions": "rules", "defaults": {"maxContextTokens": 40}}))
        .await;
    for i in 0..6 {
        app.message(&id, json!({"content": format!("message number {i}")}))
            .await;
    }
    let sent = app.anthropic.requests().last().unwrap().body.clone();
    assert_eq!(sent["system"], "rules");
    let text = sent["messages"].to_string();
    assert!(text.contains("message number 5"));
    assert!(
        !text.contains("message number 0"),
        "the oldest went first: {text}"
    );
    assert_eq!(app.messages(&id).await.len(), 13);
}

#[tokio::test]
async fn context_bounds_must_be_at_least_one() {
    let app = spawn_app().await;
    for defaults in [
        json!({"maxContextMessages": 0}),
        json!({"maxContextTokens": 0}),
    ] {
        let response = app
            .post("/text/session", &json!({"defaults": defaults}))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
