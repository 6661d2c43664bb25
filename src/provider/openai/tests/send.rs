//! A whole request over HTTP against a local server: headers, key, upstream errors.

use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HOST};
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
async fn every_request_names_its_host_and_carries_each_header_once() {
    // The headers are built once per provider and copied into each request.
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|headers: HeaderMap| async move {
            let all = |name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            };
            let seen = json!({"host": all(HOST), "type": all(CONTENT_TYPE),
                "key": all(AUTHORIZATION), "accept": all(ACCEPT)});
            axum::Json(json!({"choices": [{"finish_reason": "stop",
                "message": {"content": seen.to_string()}}]}))
        }),
    );
    let base_url = serve(router).await;
    let host = base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let provider = provider_at(base_url, Some("sk-test"));
    assert!(
        !format!("{provider:?}").contains("sk-test"),
        "the key header is marked sensitive"
    );

    for _ in 0..2 {
        let reply = provider.send(any_body()).await.unwrap();
        let seen: Value = serde_json::from_str(&reply.text).unwrap();
        assert_eq!(
            seen,
            json!({"host": [host], "type": ["application/json"],
                "key": ["Bearer sk-test"], "accept": ["*/*"]})
        );
    }
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_when_the_provider_is_built() {
    let error = OpenAi::new(config(
        "http://127.0.0.1:9/v1".to_owned(),
        Some("sk\rsecret"),
    ))
    .unwrap_err();

    assert!(matches!(error, EndpointError::Key), "{error:?}");
    assert!(!error.to_string().contains("secret"));
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
