//! However a turn ends — success, provider error, timeout, cancel, client gone, session
//! deleted, a panic inside the turn — the session is never left busy and the next
//! writer gets in at once (its `startedAt` within 100 ms of the ended turn's `endedAt`).

use std::time::Duration;

use chrono::DateTime;
use reqwest::StatusCode;
use serde_json::{Value, json};
use text_session_api::session::turn::fault_injection;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, spawn_message};
use test_support::mock_provider::Reply;

/// How soon after a turn ends the next writer must be in.
const HANDOVER: Duration = Duration::from_millis(100);

/// The first provider call answers after `delay` with `status` (200: a text reply).
fn first_call(app: &TestApp, status: u16, delay: Duration) {
    let mock = app.openai.clone();
    app.openai.script(move |body, index| {
        (index == 0).then(|| Reply {
            delay,
            ..if status == 200 {
                Reply {
                    status,
                    body: test_support::mock_openai::text_reply("m", "done"),
                    delay,
                }
            } else {
                let _ = body;
                mock.error_reply(status, "boom")
            }
        })
    });
}

async fn turn(app: &TestApp, id: &str, turn_id: &str) -> Value {
    let body: Value = app
        .get(&format!("/text/session/{id}/turns/{turn_id}"))
        .await
        .json()
        .await
        .unwrap();
    body["turn"].clone()
}

fn at(turn: &Value, field: &str) -> DateTime<chrono::FixedOffset> {
    DateTime::parse_from_rfc3339(
        turn[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} of {turn}")),
    )
    .unwrap()
}

/// Runs `ending` on the session's running turn with one writer waiting behind it, then
/// checks the handover. `ended` is the turn under test; returns its writer's status.
async fn check_handover(
    app: &TestApp,
    id: &str,
    ended_turn: &str,
    waiter: tokio::task::JoinHandle<(StatusCode, Value)>,
    ending: &str,
) {
    let (status, body) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{ending}: the next writer: {body}");
    let next_turn = body["turnId"].as_str().unwrap();
    let ended = turn(app, id, ended_turn).await;
    let next = turn(app, id, next_turn).await;
    let gap = at(&next, "startedAt") - at(&ended, "endedAt");
    assert!(
        gap.num_milliseconds() < HANDOVER.as_millis() as i64,
        "{ending}: next writer in {gap} after the end"
    );
    let session = app.session(id).await;
    assert_eq!(session["status"]["busy"], false, "{ending}");
    assert!(session["status"].get("runningTurnId").is_none(), "{ending}");
}

/// A holder whose first provider call is scripted, a waiter behind it, then `end`.
async fn scenario(
    ending: &str,
    status: u16,
    delay: Duration,
    expected: StatusCode,
    end: impl AsyncFnOnce(&TestApp, &str),
) {
    let app = spawn_app_with(|c| {
        c.provider_timeout_secs = 0.3;
        c.provider_max_retries = 0;
    })
    .await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    first_call(&app, status, delay);
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let ended_turn = app.session(&id).await["status"]["runningTurnId"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiter = spawn_message(&app, &id, json!({"content": "next"}));
    app.wait_until_waiting(&id, 1).await;
    end(&app, &id).await;
    let (holder_status, body) = holder.await.unwrap();
    assert_eq!(holder_status, expected, "{ending}: {body}");
    check_handover(&app, &id, &ended_turn, waiter, ending).await;
}

#[tokio::test]
async fn after_a_success() {
    scenario(
        "success",
        200,
        Duration::from_millis(200),
        StatusCode::OK,
        async |_, _| {},
    )
    .await;
}

#[tokio::test]
async fn after_a_provider_error() {
    scenario(
        "provider error",
        500,
        Duration::from_millis(200),
        StatusCode::BAD_GATEWAY,
        async |_, _| {},
    )
    .await;
}

#[tokio::test]
async fn after_a_provider_timeout() {
    scenario(
        "timeout",
        200,
        Duration::from_secs(3),
        StatusCode::GATEWAY_TIMEOUT,
        async |_, _| {},
    )
    .await;
}

#[tokio::test]
async fn after_a_cancel() {
    scenario(
        "cancel",
        200,
        Duration::from_secs(3),
        StatusCode::CONFLICT,
        async |app, id| {
            let response = app
                .post(
                    &format!("/text/session/{id}/cancel"),
                    &json!({"mode": "rollback"}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        },
    )
    .await;
}

#[tokio::test]
async fn after_the_client_went_away() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    first_call(&app, 200, Duration::from_millis(300));
    let gone = spawn_message(&app, &id, json!({"content": "bye"}));
    app.openai.wait_for_requests(1).await;
    let ended_turn = app.session(&id).await["status"]["runningTurnId"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiter = spawn_message(&app, &id, json!({"content": "next"}));
    app.wait_until_waiting(&id, 1).await;
    gone.abort();
    check_handover(&app, &id, &ended_turn, waiter, "client gone").await;
    assert_eq!(
        turn(&app, &id, &ended_turn).await["status"],
        "completed",
        "the abandoned turn still committed"
    );
    let users: Vec<_> = app
        .messages(&id)
        .await
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(users, ["bye", "next"]);
}

#[tokio::test]
async fn after_a_panic_inside_the_turn() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.gate();
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let panicking = spawn_message(&app, &id, json!({"content": fault_injection::PANIC}));
    app.wait_until_waiting(&id, 1).await;
    let waiter = spawn_message(&app, &id, json!({"content": "next"}));
    app.wait_until_waiting(&id, 2).await;
    app.openai.step();
    app.openai.step();
    assert_eq!(holder.await.unwrap().0, StatusCode::OK);
    let (status, body) = panicking.await.unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], "internal_error");
    let failed: Value = app
        .get(&format!("/text/session/{id}/turns?status=failed"))
        .await
        .json()
        .await
        .unwrap();
    let ended_turn = failed["turns"][0]["id"].as_str().unwrap().to_owned();
    check_handover(&app, &id, &ended_turn, waiter, "panic").await;
    assert_eq!(
        app.messages(&id).await.len(),
        4,
        "nothing of the panicked turn"
    );
}

#[tokio::test]
async fn after_the_session_was_deleted() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let waiter = spawn_message(&app, &id, json!({"content": "next"}));
    app.wait_until_waiting(&id, 1).await;
    let deleted = std::time::Instant::now();
    assert_eq!(
        app.delete(&format!("/text/session/{id}")).await.status(),
        StatusCode::OK
    );
    let (status, _) = waiter.await.unwrap();
    assert!(
        deleted.elapsed() < HANDOVER,
        "the next writer was let go at once"
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(holder.await.unwrap().0, StatusCode::CONFLICT);
    app.openai.resume();
}
