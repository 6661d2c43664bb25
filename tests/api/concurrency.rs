//! One writer per session: priorities, `onBusy: reject`, the bound on waiting writers,
//! reads that never wait, sessions that never wait for each other, and delete.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, spawn_message};

/// Starts a message that will hold the turn lock until the mock is resumed.
async fn hold_the_lock(app: &TestApp, id: &str) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    app.openai.pause();
    let before = app.openai.request_count();
    let handle = spawn_message(app, id, json!({"content": "holder"}));
    app.openai.wait_for_requests(before + 1).await;
    handle
}

fn user_messages(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn waiters_commit_high_then_normal_then_low_whatever_their_arrival() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = hold_the_lock(&app, &id).await;
    let mut waiters = Vec::new();
    for (n, priority) in ["low", "normal", "high"].into_iter().enumerate() {
        waiters.push(spawn_message(
            &app,
            &id,
            json!({"content": priority, "priority": priority}),
        ));
        app.wait_until_waiting(&id, n as u64 + 1).await;
    }
    app.openai.resume();
    assert_eq!(holder.await.unwrap().0, StatusCode::OK);
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        user_messages(&app.messages(&id).await),
        ["holder", "high", "normal", "low"]
    );
}

#[tokio::test]
async fn within_a_priority_waiters_commit_in_arrival_order() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = hold_the_lock(&app, &id).await;
    let mut waiters = Vec::new();
    for n in 0..5 {
        waiters.push(spawn_message(
            &app,
            &id,
            json!({"content": format!("w{n}")}),
        ));
        app.wait_until_waiting(&id, n + 1).await;
    }
    app.openai.resume();
    holder.await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(
        user_messages(&app.messages(&id).await),
        ["holder", "w0", "w1", "w2", "w3", "w4"]
    );
}

#[tokio::test]
async fn on_busy_reject_gets_409_session_busy_at_once_and_appends_nothing() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = hold_the_lock(&app, &id).await;
    let started = Instant::now();
    let (status, body) = app
        .message(&id, json!({"content": "impatient", "onBusy": "reject"}))
        .await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "session_busy");
    app.openai.resume();
    holder.await.unwrap();
    assert_eq!(user_messages(&app.messages(&id).await), ["holder"]);
    let (status, _) = app
        .message(&id, json!({"content": "now", "onBusy": "reject"}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a free session takes a rejecting writer"
    );
}

#[tokio::test]
async fn the_waiter_past_the_limit_gets_429_with_retry_after_and_appends_nothing() {
    let app = spawn_app_with(|c| c.max_waiting_per_session = 2).await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = hold_the_lock(&app, &id).await;
    let a = spawn_message(&app, &id, json!({"content": "a"}));
    app.wait_until_waiting(&id, 1).await;
    let b = spawn_message(&app, &id, json!({"content": "b"}));
    app.wait_until_waiting(&id, 2).await;

    let response = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": "c", "priority": "high"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_overloaded");

    app.openai.resume();
    for handle in [holder, a, b] {
        assert_eq!(handle.await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        user_messages(&app.messages(&id).await),
        ["holder", "a", "b"]
    );
}

#[tokio::test]
async fn reads_answer_at_once_during_a_long_turn_with_busy_and_waiting() {
    let app = spawn_app().await;
    app.openai.set_delay(Duration::from_secs(2));
    let id = app
        .create_session(json!({"provider": "openai", "instructions": "sys"}))
        .await;
    let running = spawn_message(&app, &id, json!({"content": "slow one"}));
    app.openai.wait_for_requests(1).await;
    let waiting = spawn_message(&app, &id, json!({"content": "next"}));
    app.wait_until_waiting(&id, 1).await;

    let started = Instant::now();
    let session = app.session(&id).await;
    let list: Value = app.get("/text/sessions").await.json().await.unwrap();
    let elapsed = started.elapsed();

    assert!(
        elapsed < Duration::from_millis(100),
        "reads took {elapsed:?}"
    );
    assert_eq!(
        (
            session["status"]["busy"].clone(),
            session["status"]["waiting"].clone()
        ),
        (json!(true), json!(1))
    );
    assert!(
        session["status"]["runningTurnId"].is_string()
            && session["status"]["startedAt"].is_string()
    );
    assert_eq!(
        session["messages"].as_array().unwrap().len(),
        1,
        "the running turn is not visible yet"
    );
    assert_eq!(list["sessions"][0]["status"]["waiting"], 1);
    running.await.unwrap();
    waiting.await.unwrap();
    assert_eq!(
        app.session(&id).await["status"],
        json!({"busy": false, "waiting": 0})
    );
}

#[tokio::test]
async fn twenty_sessions_with_a_300ms_provider_finish_together_in_under_one_and_a_half_seconds() {
    let app = spawn_app().await;
    app.openai.set_delay(Duration::from_millis(300));
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.create_session(json!({"provider": "openai"})).await);
    }
    let started = Instant::now();
    let writes = ids
        .iter()
        .map(|id| app.message(id, json!({"content": "hello"})));
    let results = futures::future::join_all(writes).await;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|(status, _)| *status == StatusCode::OK));
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

#[tokio::test]
async fn deleting_a_session_cancels_its_running_turn_with_409_and_its_waiters_get_404() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let holder = hold_the_lock(&app, &id).await;
    let waiter = spawn_message(&app, &id, json!({"content": "waiting"}));
    app.wait_until_waiting(&id, 1).await;

    assert_eq!(
        app.delete(&format!("/text/session/{id}")).await.status(),
        StatusCode::OK
    );

    let (status, body) = holder.await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "turn_cancelled");
    let (status, body) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "session_not_found");
    app.openai.resume();
}
