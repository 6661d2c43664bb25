//! Idempotency-Key: replays, reuse, in-use, validation failures not kept, per API key,
//! expiry, and streamed writes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeat_with_the_same_key_and_body_is_replayed_byte_for_byte_with_one_provider_call() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let path = format!("/text/session/{id}/message");
    let first = post_with_key(
        &app,
        &path,
        "key-1",
        &json!({"content": "hi", "priority": "normal"}),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let turn = first.headers()["x-turn-id"].clone();
    let first_body = first.bytes().await.unwrap();

    let again = post_with_key(
        &app,
        &path,
        "key-1",
        &json!({"priority": "normal", "content": "hi"}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["x-turn-id"], turn);
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical");
    assert_eq!(app.openai.request_count(), 1);
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test]
async fn twenty_duplicates_while_the_first_runs_make_one_provider_call_and_the_rest_get_409() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let path = format!("/text/session/{id}/message");
    let first = {
        let client = app.client.clone();
        let url = app.url(&path);
        tokio::spawn(async move {
            client
                .post(url)
                .header("idempotency-key", "dup")
                .json(&json!({"content": "once"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    app.openai.wait_for_requests(1).await;
    let once = json!({"content": "once"});
    let duplicates = (0..20).map(|_| post_with_key(&app, &path, "dup", &once));
    for response in futures::future::join_all(duplicates).await {
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "idempotency_key_in_use");
    }
    app.openai.resume();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(app.openai.request_count(), 1);
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test]
async fn the_same_key_with_another_body_or_route_is_422() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let first = post_with_key(
        &app,
        &format!("/text/session/{id}/message"),
        "k",
        &json!({"content": "a"}),
    )
    .await;
    assert_eq!(first.status(), StatusCode::OK);
    for (path, body) in [
        (
            format!("/text/session/{id}/message"),
            json!({"content": "b"}),
        ),
        (
            format!("/text/session/{id}/instructions"),
            json!({"content": "a"}),
        ),
        ("/text/session".to_owned(), json!({"content": "a"})),
    ] {
        let response = post_with_key(&app, &path, "k", &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}"
        );
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["error"]["code"], "idempotency_key_reused");
    }
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test]
async fn a_validation_failure_is_not_kept_so_a_corrected_retry_with_the_same_key_runs() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let path = format!("/text/session/{id}/message");
    let bad = post_with_key(&app, &path, "fix-me", &json!({"content": "  "})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let fixed = post_with_key(&app, &path, "fix-me", &json!({"content": "now right"})).await;
    assert_eq!(fixed.status(), StatusCode::OK);
    assert!(fixed.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test]
async fn errors_past_validation_are_replayed_too() {
    let app = spawn_app_with(|c| c.provider_max_retries = 0).await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let mock = app.openai.clone();
    app.openai
        .script(move |_, _| Some(mock.error_reply(500, "boom")));
    let path = format!("/text/session/{id}/message");
    let first = post_with_key(&app, &path, "e", &json!({"content": "x"})).await;
    assert_eq!(first.status(), StatusCode::BAD_GATEWAY);
    app.openai.script(|_, _| None);
    let again = post_with_key(&app, &path, "e", &json!({"content": "x"})).await;
    assert_eq!(again.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.openai.request_count(), 1);
}

#[tokio::test]
async fn keys_are_per_api_key() {
    let keys = ["idem-key-a", "idem-key-b"];
    let app = spawn_app_with(|c| {
        c.api_keys = keys
            .iter()
            .map(|k| text_session_api::secret::Secret::new(*k))
            .collect()
    })
    .await;
    let mut seen = Vec::new();
    for key in keys {
        let response = app
            .client
            .post(app.url("/text/session"))
            .header("authorization", format!("Bearer {key}"))
            .header("idempotency-key", "same")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(
            response.headers().get("idempotent-replayed").is_none(),
            "{key} ran its own request"
        );
        seen.push(response.json::<Value>().await.unwrap()["session"]["id"].clone());
    }
    assert_ne!(seen[0], seen[1]);
}

#[tokio::test]
async fn after_the_ttl_the_key_runs_again() {
    let app = spawn_app_with(|c| c.idempotency_ttl_secs = 3600).await;
    let first = post_with_key(&app, "/text/session", "ttl", &json!({})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let replayed = post_with_key(&app, "/text/session", "ttl", &json!({})).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    app.clock.advance(Duration::from_secs(3600));
    let again = post_with_key(&app, "/text/session", "ttl", &json!({})).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(again.headers().get("idempotent-replayed").is_none());
    let list: Value = app.get("/text/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn keys_that_are_empty_too_long_or_not_printable_are_400() {
    let app = spawn_app().await;
    for key in ["", &"k".repeat(256), "tab\there"] {
        let response = app
            .client
            .post(app.url("/text/session"))
            .header("idempotency-key", key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key:?}");
    }
    let longest = post_with_key(&app, "/text/session", &"k".repeat(255), &json!({})).await;
    assert_eq!(longest.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_streamed_write_replays_its_events() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let path = format!("/text/session/{id}/message");
    let body = json!({"content": "stream me", "stream": true});
    let first = post_with_key(&app, &path, "s", &body).await;
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let first_text = first.text().await.unwrap();
    assert!(first_text.contains("turn.completed"));
    let again = post_with_key(&app, &path, "s", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "text/event-stream");
    assert_eq!(again.text().await.unwrap(), first_text);
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_still_gets_it_replayed() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.set_delay(Duration::from_millis(300));
    let path = format!("/text/session/{id}/message");
    let gone = {
        let client = app.client.clone();
        let url = app.url(&path);
        tokio::spawn(async move {
            client
                .post(url)
                .header("idempotency-key", "leaver")
                .json(&json!({"content": "x"}))
                .send()
                .await
        })
    };
    app.openai.wait_for_requests(1).await;
    gone.abort();
    app.wait_for_status(&id, |s| s["busy"] == false).await;
    let mut replayed = None;
    for _ in 0..100 {
        let response = post_with_key(&app, &path, "leaver", &json!({"content": "x"})).await;
        if response.status() == StatusCode::OK {
            replayed = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::CONFLICT);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replayed = replayed.expect("the answer was kept");
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(app.openai.request_count(), 1);
    assert_eq!(app.messages(&id).await.len(), 2);
}

#[tokio::test]
async fn a_write_on_a_long_history_is_kept_without_it_and_replayed_byte_for_byte() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let long = "many words in a long message ".repeat(2000);
    for _ in 0..20 {
        let (status, _) = app.message(&id, json!({"content": long})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let path = format!("/text/session/{id}/message");
    let first = post_with_key(&app, &path, "long", &json!({"content": "and one more"})).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_body = first.bytes().await.unwrap();
    assert!(first_body.len() > 2_000_000, "{}", first_body.len());
    let kept = app.state.idempotency.bytes();
    assert!(
        kept < 10_000,
        "the record holds {kept} bytes, not the history"
    );

    // Later writes do not change what the replay shows.
    app.message(&id, json!({"content": "after"})).await;
    let again = post_with_key(&app, &path, "long", &json!({"content": "and one more"})).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical");

    assert_eq!(
        app.delete(&format!("/text/session/{id}")).await.status(),
        StatusCode::OK
    );
    let gone = post_with_key(&app, &path, "long", &json!({"content": "and one more"})).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        gone.json::<Value>().await.unwrap()["error"]["code"],
        "session_not_found"
    );
}

#[tokio::test]
async fn a_streamed_write_on_a_long_history_is_kept_without_it_and_replayed_byte_for_byte() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let long = "many words in a long message ".repeat(2000);
    for _ in 0..10 {
        app.message(&id, json!({"content": long})).await;
    }
    let path = format!("/text/session/{id}/message");
    let body = json!({"content": "stream it", "stream": true});
    let first = post_with_key(&app, &path, "streamed", &body).await;
    let first_body = first.bytes().await.unwrap();
    assert!(first_body.len() > 1_000_000, "{}", first_body.len());
    assert!(app.state.idempotency.bytes() < 10_000);
    let again = post_with_key(&app, &path, "streamed", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.bytes().await.unwrap(), first_body, "byte-identical");
}
