//! Cancel (`keep`, `rollback`, `waiting`) and `onBusy: "interrupt"`: the running turn
//! stops at once, its provider request is dropped, the history keeps or rolls back.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_message};
use crate::sse::events;
use crate::streaming::stream_message;
use test_support::mock_provider::StreamPlan;

fn slow_stream() -> StreamPlan {
    StreamPlan {
        pieces: Some((0..20).map(|i| format!("w{i} ")).collect()),
        interval: Duration::from_millis(100),
        ..Default::default()
    }
}

async fn cancel(app: &TestApp, id: &str, body: Option<Value>) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let mut request = app
        .client
        .post(app.url(&format!("/text/session/{id}/cancel")));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let elapsed = started.elapsed();
    let status = response.status();
    (status, response.json().await.unwrap(), elapsed)
}

#[tokio::test]
async fn cancel_keep_mid_stream_answers_at_once_closes_the_provider_call_and_keeps_the_partial_reply()
 {
    let app = spawn_app().await;
    app.openai.set_stream_plan(slow_stream());
    let id = app
        .create_session(json!({"provider": "openai", "instructions": "sys"}))
        .await;
    let response = stream_message(&app, &id, json!({"content": "tell me"})).await;
    let turn_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let mut stream = events(response);
    let mut deltas = 0;
    while deltas < 2 {
        if stream.next().await.unwrap().name == "text.delta" {
            deltas += 1;
        }
    }

    let (status, body, elapsed) = cancel(&app, &id, None).await;

    assert_eq!(status, StatusCode::OK);
    assert!(
        elapsed < Duration::from_millis(100),
        "cancel took {elapsed:?}"
    );
    assert_eq!(body, json!({"success": true, "cancelled": turn_id}));
    app.openai.wait_for_disconnect().await;
    let rest: Vec<_> = stream.collect().await;
    let last = rest.last().unwrap();
    assert_eq!(last.name, "turn.cancelled");
    assert_eq!(last.data["result"]["finishReason"], "cancelled");
    let partial = last.data["result"]["text"].as_str().unwrap().to_owned();
    assert!(partial.starts_with("w0 w1 "), "{partial}");
    assert!(partial.len() < "w0 ".len() * 20);

    let history = app.messages(&id).await;
    assert_eq!(history.len(), 3);
    assert_eq!(history[1]["content"], "tell me");
    assert_eq!(history[2]["role"], "assistant");
    assert_eq!(history[2]["content"], partial.as_str());
    assert_eq!(history[2]["interrupted"], true);
    assert_eq!(app.session(&id).await["status"]["busy"], false);

    let (status, _) = app.message(&id, json!({"content": "go on"})).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the next turn sends the partial reply as plain assistant text"
    );
    let sent = app.openai.requests().last().unwrap().body["messages"].clone();
    assert_eq!(sent[2], json!({"role": "assistant", "content": partial}));
}

#[tokio::test]
async fn cancel_rollback_mid_stream_leaves_the_history_as_before_the_turn() {
    let app = spawn_app().await;
    app.anthropic.set_stream_plan(slow_stream());
    let id = app.create_session(json!({"provider": "anthropic"})).await;
    app.message(&id, json!({"content": "earlier", "stream": false}))
        .await;
    let before = app.session(&id).await;
    let mut stream = events(stream_message(&app, &id, json!({"content": "tell me"})).await);
    while stream.next().await.unwrap().name != "text.delta" {}

    let (status, body, elapsed) = cancel(&app, &id, Some(json!({"mode": "rollback"}))).await;

    assert_eq!(status, StatusCode::OK);
    assert!(elapsed < Duration::from_millis(100));
    assert!(body["cancelled"].is_string());
    app.anthropic.wait_for_disconnect().await;
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(rest.last().unwrap().name, "turn.cancelled");
    let after = app.session(&id).await;
    assert_eq!(after["messages"], before["messages"]);
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["status"]["busy"], false);
}

#[tokio::test]
async fn cancel_with_waiting_turns_every_waiter_away_and_a_non_streaming_writer_gets_409() {
    let app = spawn_app().await;
    app.openai.pause();
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let waiters: Vec<_> = (0..3)
        .map(|i| spawn_message(&app, &id, json!({"content": format!("w{i}")})))
        .collect();
    app.wait_until_waiting(&id, 3).await;

    let (status, body, _) = cancel(
        &app,
        &id,
        Some(json!({"mode": "rollback", "waiting": true})),
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert!(body["cancelled"].is_string());
    for waiter in waiters {
        let (status, body) = waiter.await.unwrap();
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "turn_cancelled");
    }
    let (status, body) = holder.await.unwrap();
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a non-streaming writer whose turn is cancelled"
    );
    assert_eq!(body["error"]["code"], "turn_cancelled");
    assert_eq!(app.messages(&id).await.len(), 0);
    assert_eq!(
        app.session(&id).await["status"],
        json!({"busy": false, "waiting": 0})
    );
    app.openai.resume();
}

#[tokio::test]
async fn a_non_streaming_writer_cancelled_with_keep_gets_409_and_its_message_is_kept() {
    let app = spawn_app().await;
    app.openai.pause();
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let (_, body, _) = cancel(&app, &id, Some(json!({}))).await;
    assert!(body["cancelled"].is_string());
    let (status, body) = holder.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "turn_cancelled");
    let history = app.messages(&id).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["content"], "holder");
    assert_eq!(history[1]["interrupted"], true);
    app.openai.resume();
}

#[tokio::test]
async fn interrupt_cancels_the_running_turn_and_goes_before_earlier_high_waiters() {
    let app = spawn_app().await;
    app.openai.pause();
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let high = spawn_message(&app, &id, json!({"content": "high", "priority": "high"}));
    app.wait_until_waiting(&id, 1).await;

    let interrupt = spawn_message(
        &app,
        &id,
        json!({"content": "stop!", "onBusy": "interrupt", "priority": "low"}),
    );
    app.openai.wait_for_requests(2).await;
    app.openai.resume();

    assert_eq!(holder.await.unwrap().0, StatusCode::CONFLICT);
    assert_eq!(interrupt.await.unwrap().0, StatusCode::OK);
    assert_eq!(high.await.unwrap().0, StatusCode::OK);
    let history = app.messages(&id).await;
    let users: Vec<_> = history
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(users, ["holder", "stop!", "high"]);
    assert_eq!(history[1]["interrupted"], true);
    assert!(history[3].get("interrupted").is_none());
}

#[tokio::test]
async fn cancel_without_a_running_turn_answers_null_and_unknown_sessions_404() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let (status, body, _) = cancel(&app, &id, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"success": true, "cancelled": null}));
    let (status, body, _) = cancel(&app, &id, Some(json!({"mode": "later"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("mode"));
    let (status, body, _) = cancel(&app, &uuid::Uuid::new_v4().to_string(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "session_not_found");
}
