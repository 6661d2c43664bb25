//! A write takes effect whole or not at all: provider errors and timeouts leave the
//! history exactly as it was, and a retry then succeeds.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn a_provider_500_is_502_provider_error_with_the_history_unchanged_and_a_retry_succeeds() {
    for provider in ["openai", "anthropic"] {
        let app = spawn_app().await;
        let mock = if provider == "openai" {
            app.openai.clone()
        } else {
            app.anthropic.clone()
        };
        let id = app
            .create_session(json!({"provider": provider, "instructions": "sys"}))
            .await;
        app.message(&id, json!({"content": "first"})).await;
        let before = app.session(&id).await;
        let failing = mock.clone();
        mock.script(move |_, _| Some(failing.error_reply(500, "upstream exploded")));

        let (status, body) = app
            .message(&id, json!({"content": "second", "instructions": "x"}))
            .await;

        assert_eq!(status, StatusCode::BAD_GATEWAY, "{provider}");
        assert_eq!(body["success"], false);
        assert_eq!(body["error"]["code"], "provider_error");
        assert_eq!(body["error"]["providerStatus"], 500);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("500") && message.contains("upstream exploded"),
            "{message}"
        );
        let after = app.session(&id).await;
        assert_eq!(
            after["messages"], before["messages"],
            "{provider}: nothing half-appended"
        );
        assert_eq!(after["version"], before["version"]);
        assert_eq!(after["updatedAt"], before["updatedAt"]);

        mock.script(|_, _| None);
        let (status, body) = app.message(&id, json!({"content": "second"})).await;
        assert_eq!(status, StatusCode::OK, "{provider}: {body}");
        assert_eq!(app.messages(&id).await.len(), 5);
    }
}

#[tokio::test]
async fn a_provider_slower_than_the_timeout_is_504_with_the_history_unchanged_and_a_retry_succeeds()
{
    let app = spawn_app_with(|c| c.provider_timeout_secs = 0.5).await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.message(&id, json!({"content": "first"})).await;
    let before = app.session(&id).await;
    app.openai.set_delay(Duration::from_millis(1500));

    let (status, body) = app.message(&id, json!({"content": "second"})).await;

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["error"]["code"], "provider_timeout");
    let after = app.session(&id).await;
    assert_eq!(after["messages"], before["messages"]);
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["status"]["busy"], false);

    app.openai.script(|_, _| None);
    let (status, _) = app.message(&id, json!({"content": "second"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.messages(&id).await.len(), 4);
}

#[tokio::test]
async fn an_unreachable_provider_is_502_and_the_history_unchanged() {
    let app = spawn_app_with(|c| c.openai_base_url = "http://127.0.0.1:9/v1".into()).await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let (status, body) = app.message(&id, json!({"content": "anyone?"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "provider_error");
    assert!(
        !body["error"]["message"].as_str().unwrap().contains("sk-"),
        "no key in errors"
    );
    assert_eq!(app.messages(&id).await.len(), 0);
}
