//! Sending over HTTP to a local server: path, headers, and how failures map.

use serde_json::{Value, json};

use super::*;
use crate::provider::Usage;

/// A one-route server on port 0 that answers `status` and `body` and hands back
/// the path and headers of the request it received.
pub(super) async fn serve_once(
    status: u16,
    body: Value,
) -> (
    String,
    tokio::sync::oneshot::Receiver<(String, axum::http::HeaderMap, Value)>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, payload: axum::body::Bytes| {
            let tx = tx.clone();
            let body = body.clone();
            async move {
                let payload = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send((uri.path().to_owned(), headers, payload));
                }
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(body),
                )
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn send_posts_to_v1_messages_with_the_key_and_version_headers() {
    let reply = json!({
        "content": [{"type": "text", "text": "hi there"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 2}
    });
    let (url, received) = serve_once(200, reply).await;
    let provider = client_at(&url, Some("sk-ant-secret"));
    let params = Defaults::default();
    let history = [user("hi")];
    let request = ChatRequest {
        model: "claude-sonnet-4-5",
        history: &history,
        staged: &[],
        tools: &[],
        params: &params,
        stream: false,
        left_out: 0..0,
    };
    let body = provider.encode(&request).unwrap();

    let reply = provider.send(body).await.unwrap();

    assert_eq!(reply.text, "hi there");
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 3,
            output_tokens: 2
        }
    );
    let (path, headers, payload) = received.await.unwrap();
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["x-api-key"], "sk-ant-secret");
    assert_eq!(headers["anthropic-version"], API_VERSION);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["host"], url.trim_start_matches("http://"));
    for name in ["x-api-key", "anthropic-version", "content-type", "host"] {
        assert_eq!(headers.get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(payload["messages"][0]["content"][0]["text"], "hi");
}

#[test]
fn a_key_that_cannot_be_a_header_is_refused_when_the_provider_is_built() {
    let error =
        Anthropic::new(config_at("http://127.0.0.1:9", Some("sk-ant\nsecret"))).unwrap_err();

    assert!(matches!(error, EndpointError::Key), "{error:?}");
    assert!(!error.to_string().contains("secret"));
}

#[tokio::test]
async fn send_without_a_key_sends_no_key_header() {
    let reply = json!({"content": [], "stop_reason": "end_turn", "usage": {}});
    let (url, received) = serve_once(200, reply).await;
    let provider = client_at(&url, None);

    provider.send(Bytes::from_static(b"{}")).await.unwrap();

    let (_, headers, _) = received.await.unwrap();
    assert!(headers.get("x-api-key").is_none());
}

#[tokio::test]
async fn an_error_answer_keeps_its_status_type_and_message_but_never_the_key() {
    let error = json!({"type": "error", "error": {"type": "invalid_request_error",
                      "message": "messages: text content blocks must be non-empty"}});
    let (url, _received) = serve_once(400, error).await;
    let provider = client_at(&url, Some("sk-ant-secret"));

    let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

    assert_eq!(
        error,
        ProviderError::Upstream {
            status: 400,
            kind: "invalid_request_error".into(),
            message: "messages: text content blocks must be non-empty".into(),
            retry_after: None,
        }
    );
    assert!(!format!("{error} {error:?}").contains("sk-ant-secret"));
}

#[tokio::test]
async fn an_unreachable_provider_is_a_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let provider = client_at(&url, Some("sk-ant-secret"));

    let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

    assert!(matches!(&error, ProviderError::Transport(_)), "{error:?}");
    assert!(!format!("{error:?}").contains("sk-ant-secret"));
}

#[tokio::test]
async fn a_provider_that_does_not_answer_in_time_is_a_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts the connection and never answers.
    tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await
    });
    let timeout = Duration::from_millis(200);
    let provider = Anthropic::new(HttpProviderConfig {
        timeout,
        ..config_at(&url, None)
    })
    .unwrap();

    let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

    assert_eq!(error, ProviderError::Timeout(timeout));
}

#[tokio::test]
async fn an_unreadable_success_body_is_an_invalid_reply() {
    let (url, _received) = serve_once(200, json!("not a message")).await;
    let provider = client_at(&url, None);

    let error = provider.send(Bytes::from_static(b"{}")).await.unwrap_err();

    assert!(matches!(error, ProviderError::InvalidReply(_)), "{error:?}");
}
