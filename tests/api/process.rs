//! The real binary as a child process: what only a process shows — request ids and the
//! log lines on stderr (JSON, no content or keys), and shutdown on SIGTERM/SIGINT (readiness
//! fails, new writes are refused, running turns finish or are rolled back, exit 0).
//! The child gets a clean environment, so nothing of the developer's (keys, `.env`) leaks in.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::service::{SECRET_KEY, spawn_service};
use crate::sse::all_events;
use test_support::mock_provider::{MockProvider, Protocol, reply_text_for};

const SECRET_CONTENT: &str = "the-secret-content-xyz";

/// A session on the mock, one message with a known request id, then SIGTERM: the
/// session id and the child's whole stderr.
async fn one_turn_then_stop(log_content: bool) -> (String, String) {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let log_content = if log_content { "true" } else { "false" };
    let mut service = spawn_service(
        &openai,
        &[("LOG_FORMAT", "json"), ("LOG_CONTENT", log_content)],
    )
    .await;
    let id = service.create_session(json!({"provider": "openai"})).await;

    let response = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .header("x-request-id", "test-request-42")
        .json(&json!({"content": SECRET_CONTENT}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "test-request-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["text"], reply_text_for(SECRET_CONTENT));
    let sent = &openai.requests()[0];
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {SECRET_KEY}"),
        "the child has the key, so its absence from the logs means something"
    );

    let response = service
        .client
        .get(service.url(&format!("/text/session/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let generated = response.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(generated).is_ok(),
        "a generated request id is a UUID: {generated:?}"
    );

    service.signal("TERM");
    let status = service.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; stderr:\n{}", service.logs());
    (id, service.logs())
}

/// Whether `line` has a span (current or in the list) with this request and session id.
fn has_request_span(line: &Value, request_id: &str, session_id: &str) -> bool {
    let spans = line["spans"].as_array().cloned().unwrap_or_default();
    spans
        .iter()
        .chain(std::iter::once(&line["span"]))
        .any(|span| span["request_id"] == request_id && span["session_id"] == session_id)
}

#[tokio::test]
async fn json_log_lines_carry_the_request_and_session_ids_but_no_content_or_key_unless_log_content()
{
    let (id, logs) = one_turn_then_stop(false).await;

    let lines: Vec<Value> = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"))
        })
        .collect();
    assert!(!lines.is_empty(), "no log lines at all");
    assert!(
        lines
            .iter()
            .any(|line| has_request_span(line, "test-request-42", &id)),
        "no line carries the request span with request_id and session_id:\n{logs}"
    );
    for forbidden in [SECRET_CONTENT, &reply_text_for(SECRET_CONTENT), SECRET_KEY] {
        assert!(
            !logs.contains(forbidden),
            "the logs contain {forbidden:?}:\n{logs}"
        );
    }

    // With LOG_CONTENT=true the same turn's content is logged: the checks above see it.
    let (_, logs) = one_turn_then_stop(true).await;
    assert!(logs.contains(SECRET_CONTENT), "{logs}");
    assert!(logs.contains(&reply_text_for(SECRET_CONTENT)), "{logs}");
    assert!(!logs.contains(SECRET_KEY), "{logs}");
}

#[tokio::test]
async fn sigterm_lets_a_running_turn_finish_within_the_grace_period_refuses_new_writes_and_exits_0()
{
    let openai = MockProvider::start(Protocol::OpenAi).await;
    openai.set_delay(Duration::from_secs(2));
    let mut service = spawn_service(&openai, &[("SHUTDOWN_GRACE_SECS", "10")]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let running = service.spawn_message(&id, "finish me");
    openai.wait_for_requests(1).await;

    let signalled = Instant::now();
    service.signal("TERM");

    service.wait_until_not_ready().await;
    assert!(
        !running.is_finished(),
        "readiness must fail while the turn still runs"
    );
    let response = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .json(&json!({"content": "too late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response.headers().contains_key("retry-after"),
        "{:?}",
        response.headers()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down");
    assert!(
        !running.is_finished(),
        "the refusal did not wait for the turn"
    );

    let (status, body, _) = running.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["text"], reply_text_for("finish me"));
    assert_eq!(body["session"]["messages"].as_array().unwrap().len(), 2);
    let status = service.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; stderr:\n{}", service.logs());
    assert!(signalled.elapsed() < Duration::from_secs(8));
    assert_eq!(
        openai.request_count(),
        1,
        "the refused write never reached the provider"
    );
}

#[tokio::test]
async fn sigterm_rolls_back_a_turn_that_outlives_the_grace_period_and_still_exits_0() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    openai.set_delay(Duration::from_secs(10));
    let mut service = spawn_service(&openai, &[("SHUTDOWN_GRACE_SECS", "0.5")]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let running = service.spawn_message(&id, "too slow");
    openai.wait_for_requests(1).await;

    let signalled = Instant::now();
    service.signal("TERM");

    let (status, body, _) = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the writer is answered soon after the grace period")
        .unwrap();
    let answered = signalled.elapsed();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "turn_cancelled");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("nothing was appended"), "{message}");
    assert!(
        answered >= Duration::from_millis(400),
        "the turn got its grace period: {answered:?}"
    );
    let status = service.exit_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}; stderr:\n{}", service.logs());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn sigterm_ends_a_streamed_turn_that_outlives_the_grace_period_with_turn_cancelled() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    openai.set_delay(Duration::from_secs(10));
    let mut service = spawn_service(&openai, &[("SHUTDOWN_GRACE_SECS", "0.5")]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let request = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .json(&json!({"content": "too slow", "stream": true}));
    let streaming = tokio::spawn(async move { all_events(request.send().await.unwrap()).await });
    openai.wait_for_requests(1).await;

    service.signal("TERM");

    let events = tokio::time::timeout(Duration::from_secs(5), streaming)
        .await
        .expect("the stream ends soon after the grace period")
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.name, "turn.cancelled", "{events:?}");
    assert_eq!(last.data["result"]["finishReason"], "cancelled");
    let status = service.exit_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}; stderr:\n{}", service.logs());
}

#[tokio::test]
async fn sigint_stops_an_idle_service_cleanly_with_exit_0() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let mut service = spawn_service(&openai, &[]).await;
    let response = service
        .client
        .get(service.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    service.signal("INT");

    let status = service.exit_within(Duration::from_secs(10)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "{status}; stderr:\n{}",
        service.logs()
    );
    assert!(service.logs().contains("stopped"), "{}", service.logs());
}

#[tokio::test]
async fn api_keys_never_reach_the_logs_even_at_trace_level() {
    const KEY: &str = "key-that-must-not-be-logged-42";
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let mut service = spawn_service(&openai, &[("API_KEYS", KEY), ("RUST_LOG", "trace")]).await;
    for auth in [
        format!("Bearer {KEY}"),
        format!("Bearer {KEY}-wrong"),
        KEY.to_owned(),
    ] {
        let response = service
            .client
            .post(service.url("/text/session"))
            .header("authorization", auth)
            .json(&json!({"provider": "openai"}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status() == StatusCode::CREATED
                || response.status() == StatusCode::UNAUTHORIZED
        );
    }
    service.signal("TERM");
    assert!(service.exit_within(Duration::from_secs(10)).await.success());
    let logs = service.logs();
    assert!(
        logs.contains("session created"),
        "the service logged: {logs}"
    );
    assert!(!logs.contains(KEY), "no key in the logs");
}
