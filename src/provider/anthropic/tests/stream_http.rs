//! Streaming over a real connection: a local server sends the events in steps the test
//! controls, so that a delta can be seen in the sink before the stream finishes.

use std::sync::{Arc, Mutex};

use axum::http::header::CONTENT_TYPE;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::events::{
    block_stop, message_delta, message_start, message_stop, overloaded, text_delta, text_start,
};
use super::send::serve_once;
use super::*;
use crate::provider::{StreamEvent, Usage};

type Chunks = mpsc::UnboundedSender<Result<Bytes, std::convert::Infallible>>;

/// A server on port 0 answering 200 with an event stream made of what is sent on the
/// returned sender (the stream ends when it is dropped); also hands back the request body.
async fn serve_stream() -> (String, Chunks, oneshot::Receiver<Value>) {
    let (chunks, stream) = mpsc::unbounded();
    let stream = Arc::new(Mutex::new(Some(stream)));
    let (request_tx, request_rx) = oneshot::channel();
    let request_tx = Arc::new(Mutex::new(Some(request_tx)));
    let app = axum::Router::new().fallback(move |payload: axum::body::Bytes| {
        let stream = stream.lock().unwrap().take().unwrap();
        let request_tx = request_tx.lock().unwrap().take().unwrap();
        async move {
            let _ = request_tx.send(serde_json::from_slice(&payload).unwrap_or(Value::Null));
            (
                [(CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, chunks, request_rx)
}

/// One event as the real API frames it: its type as the event name, its JSON as data.
fn sse(event: &Value) -> Result<Bytes, std::convert::Infallible> {
    let name = event["type"].as_str().unwrap();
    Ok(Bytes::from(format!("event: {name}\ndata: {event}\n\n")))
}

fn streaming_body(provider: &Anthropic) -> Bytes {
    let params = Defaults::default();
    let history = [user("hi")];
    let request = ChatRequest {
        model: "claude-sonnet-4-5",
        history: &history,
        staged: &[],
        tools: &[],
        params: &params,
        stream: true,
        left_out: 0..0,
    };
    provider.encode(&request).unwrap()
}

#[tokio::test]
async fn a_text_delta_reaches_the_sink_before_the_stream_finishes() {
    let (url, chunks, received) = serve_stream().await;
    let provider = client_at(&url, Some("sk-ant-secret"));
    for event in [message_start(9), text_start(0), text_delta(0, "Hel")] {
        chunks.unbounded_send(sse(&event)).unwrap();
    }
    // The rest is sent only once the first delta has reached the sink.
    let (first_seen, first_seen_rx) = oneshot::channel::<()>();
    let rest = tokio::spawn(async move {
        first_seen_rx.await.unwrap();
        let rest = [
            text_delta(0, "lo"),
            block_stop(0),
            message_delta("end_turn", 2),
            message_stop(),
        ];
        for event in rest {
            chunks.unbounded_send(sse(&event)).unwrap();
        }
    });
    let mut first_seen = Some(first_seen);
    let mut pieces = Vec::new();
    let mut sink = |event: StreamEvent| {
        if let Some(first_seen) = first_seen.take() {
            let _ = first_seen.send(());
        }
        pieces.push(event);
    };

    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        provider.stream(streaming_body(&provider), &mut sink),
    )
    .await
    .expect("the first delta never reached the sink while the stream was open")
    .unwrap();

    rest.await.unwrap();
    assert_eq!(
        pieces,
        [
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into())
        ]
    );
    assert_eq!(reply.text, "Hello");
    assert_eq!(
        reply.usage,
        Usage {
            input_tokens: 9,
            output_tokens: 2
        }
    );
    let body = received.await.unwrap();
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn an_error_event_mid_stream_is_an_upstream_error_with_the_streams_status() {
    let (url, chunks, _received) = serve_stream().await;
    let provider = client_at(&url, None);
    for event in [message_start(9), overloaded()] {
        chunks.unbounded_send(sse(&event)).unwrap();
    }
    drop(chunks);

    let error = provider
        .stream(streaming_body(&provider), &mut |_| {})
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::Upstream {
            status: 200,
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn a_connection_closed_before_message_stop_is_a_stream_ended_early() {
    let (url, chunks, _received) = serve_stream().await;
    let provider = client_at(&url, None);
    for event in [message_start(9), text_start(0), text_delta(0, "Hel")] {
        chunks.unbounded_send(sse(&event)).unwrap();
    }
    drop(chunks);
    let mut pieces = Vec::new();

    let error = provider
        .stream(streaming_body(&provider), &mut |event| pieces.push(event))
        .await
        .unwrap_err();

    assert_eq!(error, ProviderError::Transport("stream ended early".into()));
    assert_eq!(pieces, [StreamEvent::Text("Hel".into())]);
}

#[tokio::test]
async fn a_non_success_answer_to_a_stream_keeps_its_status_type_and_message() {
    let error = json!({"type": "error", "error": {"type": "rate_limit_error",
                      "message": "Number of request tokens has exceeded your rate limit"}});
    let (url, _received) = serve_once(429, error).await;
    let provider = client_at(&url, Some("sk-ant-secret"));

    let error = provider
        .stream(streaming_body(&provider), &mut |_| {})
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::Upstream {
            status: 429,
            kind: "rate_limit_error".into(),
            message: "Number of request tokens has exceeded your rate limit".into(),
            retry_after: None,
        }
    );
}
