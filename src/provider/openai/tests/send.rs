//! A whole request over HTTP against a local server: headers, key, upstream errors.

use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use super::*;

#[tokio::test]
async fn sends_the_body_as_json_with_a_bearer_key_only_when_one_is_configured() {
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|headers: HeaderMap, body: Bytes| async move {
            let header = |name| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned()
            };
            let sent: Value = serde_json::from_slice(&body).unwrap();
            let text = format!(
                "{} {} {}",
                header(AUTHORIZATION),
                header(CONTENT_TYPE),
                sent["model"]
            );
            axum::Json(json!({"choices": [{"finish_reason": "stop",
                "message": {"content": text}}]}))
        }),
    );
    let base_url = serve(router).await;

    let with_key = provider_at(base_url.clone(), Some("sk-test"));
    let reply = with_key.send(any_body()).await.unwrap();
    assert_eq!(reply.text, r#"Bearer sk-test application/json "gpt-test""#);

    let without_key = provider_at(base_url, None);
    let reply = without_key.send(any_body()).await.unwrap();
    assert_eq!(reply.text, r#"none application/json "gpt-test""#);
}

#[tokio::test]
async fn a_rejected_request_becomes_an_upstream_error_without_the_key() {
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": "bad messages",
                    "type": "invalid_request_error", "param": null, "code": null}})),
            )
        }),
    );
    let provider = provider_at(serve(router).await, Some("sk-secret"));
    let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::Upstream {
            status: 400,
            kind: "invalid_request_error".to_owned(),
            message: "bad messages".to_owned(),
            retry_after: None,
        }
    );
    assert!(!format!("{error} {error:?}").contains("sk-secret"));
}
