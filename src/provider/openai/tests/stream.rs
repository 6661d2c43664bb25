//! A streamed request over HTTP against a local server that controls when each byte goes
//! out: deltas reach the sink while the stream is still open, and every way a stream can
//! end maps to the right reply or error.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Notify;

use super::*;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn event(data: &Value) -> String {
    format!("data: {data}\n\n")
}

fn delta(content: &str) -> Value {
    json!({"object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

fn ending() -> String {
    let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}});
    format!("{}{}data: [DONE]\n\n", event(&finish), event(&usage))
}

/// A server answering every request with this status, content type and body.
async fn answering(status: StatusCode, content_type: &'static str, body: fn() -> Body) -> OpenAi {
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            (status, [(header::CONTENT_TYPE, content_type)], body())
        }),
    );
    provider_at(serve(router).await, Some("sk-test"))
}

/// Streams with a sink that records every event.
async fn stream_all(provider: &OpenAi) -> (Vec<StreamEvent>, Result<ChatReply, ProviderError>) {
    let mut events = Vec::new();
    let reply = tokio::time::timeout(
        PATIENCE,
        provider.stream(any_body(), &mut |event| events.push(event)),
    )
    .await
    .unwrap();
    (events, reply)
}

#[tokio::test]
async fn the_first_delta_reaches_the_sink_before_the_stream_ends() {
    // Arrange: the server sends one delta, then holds the stream open until the test has
    // seen that delta in the sink.
    let release = Arc::new(Notify::new());
    let headers_seen = Arc::new(Mutex::new(String::new()));
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post({
            let release = release.clone();
            let headers_seen = headers_seen.clone();
            move |headers: HeaderMap| async move {
                let header = |name| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned()
                };
                *headers_seen.lock().unwrap() = format!(
                    "{} | {}",
                    header(header::ACCEPT),
                    header(header::AUTHORIZATION)
                );
                let first = futures::stream::iter([Ok::<_, Infallible>(event(&delta("Hel")))]);
                let rest = futures::stream::once(async move {
                    release.notified().await;
                    Ok(format!("{}{}", event(&delta("lo")), ending()))
                });
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(first.chain(rest)),
                )
            }
        }),
    );
    let provider = provider_at(serve(router).await, Some("sk-test"));

    // Act: the sink releases the server when the first text arrives; were deltas held
    // back until the end, the stream would never end.
    let mut events = Vec::new();
    let mut sink = |event: StreamEvent| {
        if events.is_empty() {
            release.notify_one();
        }
        events.push(event);
    };
    let reply = tokio::time::timeout(PATIENCE, provider.stream(any_body(), &mut sink))
        .await
        .expect("the first delta was not handed on while the stream was open")
        .unwrap();

    // Assert
    assert_eq!(
        events,
        ["Hel", "lo"].map(|t| StreamEvent::Text(t.to_owned()))
    );
    assert_eq!(reply.text, "Hello");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 3,
            output_tokens: 2
        }
    );
    assert_eq!(
        *headers_seen.lock().unwrap(),
        "text/event-stream | Bearer sk-test"
    );
}

#[tokio::test]
async fn events_split_anywhere_across_network_chunks_are_put_back_together() {
    let provider = answering(StatusCode::OK, "text/event-stream", || {
        let whole = format!(
            "{}{}{}",
            event(&delta("Grüß ")),
            event(&delta("dich")),
            ending()
        );
        let pieces: Vec<Result<Vec<u8>, Infallible>> = whole
            .into_bytes()
            .chunks(7)
            .map(|piece| Ok(piece.to_vec()))
            .collect();
        Body::from_stream(futures::stream::iter(pieces))
    })
    .await;
    let (events, reply) = stream_all(&provider).await;
    assert_eq!(events.len(), 2);
    assert_eq!(reply.unwrap().text, "Grüß dich");
}

#[tokio::test]
async fn a_rejected_streaming_request_becomes_an_upstream_error() {
    let provider = answering(StatusCode::TOO_MANY_REQUESTS, "application/json", || {
        Body::from(r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#)
    })
    .await;
    let (events, reply) = stream_all(&provider).await;
    assert!(events.is_empty());
    assert_eq!(
        reply.unwrap_err(),
        ProviderError::Upstream {
            status: 429,
            kind: "requests".to_owned(),
            message: "Rate limit reached".to_owned(),
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn an_error_event_inside_the_stream_becomes_an_upstream_error() {
    let provider = answering(StatusCode::OK, "text/event-stream", || {
        Body::from(format!(
            "{}event: error\ndata: {{\"error\":{{\"type\":\"overloaded\",\"message\":\"busy\"}}}}\n\n",
            event(&delta("x"))
        ))
    })
    .await;
    let (_, reply) = stream_all(&provider).await;
    assert_eq!(
        reply.unwrap_err(),
        ProviderError::Upstream {
            status: 200,
            kind: "overloaded".to_owned(),
            message: "busy".to_owned(),
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn a_connection_that_closes_mid_stream_is_a_transport_error() {
    let cut_short = answering(StatusCode::OK, "text/event-stream", || {
        Body::from(event(&delta("half")))
    })
    .await;
    let (events, reply) = stream_all(&cut_short).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        reply.unwrap_err(),
        ProviderError::Transport("stream ended early".to_owned())
    );

    let broken = answering(StatusCode::OK, "text/event-stream", || {
        let first = futures::stream::iter([Ok(event(&delta("half")))]);
        let failure = futures::stream::iter([Err(std::io::Error::other("connection reset"))]);
        Body::from_stream(first.chain(failure))
    })
    .await;
    let (_, reply) = stream_all(&broken).await;
    assert!(
        matches!(reply, Err(ProviderError::Transport(_))),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_server_that_ignores_stream_is_read_whole_and_handed_on_in_one_piece() {
    let provider = answering(StatusCode::OK, "application/json", || {
        Body::from(
            json!({"choices": [{"finish_reason": "tool_calls", "message": {"content": "Looking.",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}]})
            .to_string(),
        )
    })
    .await;
    let (events, reply) = stream_all(&provider).await;
    assert_eq!(
        events,
        [
            StreamEvent::Text("Looking.".to_owned()),
            StreamEvent::ToolCall(call("call_1"))
        ]
    );
    assert_eq!(reply.unwrap().tool_calls, [call("call_1")]);
}
