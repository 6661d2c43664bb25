//! Operations: liveness, readiness, metrics, and the served OpenAPI document.

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::session::RANK_NAMES;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI document as served at `GET /openapi.json`: rendered once at start by the
/// server and handed to its route as a request extension.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub bytes::Bytes);

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Readiness: 200 while serving; 503 once shutdown has begun, or while the store does
/// not commit.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Shutting down (`shutting_down`), or the store does not commit (`store_unavailable`): send no more work here", body = Health),
    ))]
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let not_ready = if app.runtime.is_shutting_down() {
        Some("shutting_down")
    } else if !app.runtime.store.is_healthy() {
        Some("store_unavailable")
    } else {
        None
    };
    match not_ready {
        Some(status) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health { status }),
        ),
        None => (StatusCode::OK, axum::Json(Health { status: "ok" })),
    }
}

/// The content type of the metrics (OpenMetrics text, which Prometheus scrapes).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The same text for a client that asks for plain text only (`Accept: text/plain`).
const METRICS_PLAIN_TEXT: &str = "text/plain; charset=utf-8";

/// Metrics in Prometheus' text format.
///
/// Sessions live; writers waiting (total and by priority); turns by outcome; turn
/// duration, lock-wait and overhead histograms; provider call duration, errors by kind
/// and retries by provider; tokens in and out by provider; turns waiting for a
/// provider slot; bytes held against the memory budget, and the budget.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics, as OpenMetrics text; as `text/plain` (the same text) for a client whose `Accept` asks for that and not for OpenMetrics",
        content(
            (String = "application/openmetrics-text"),
            (String = "text/plain"),
        ))))]
async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let content_type = if accept.contains("text/plain") && !accept.contains("openmetrics") {
        METRICS_PLAIN_TEXT
    } else {
        METRICS_CONTENT_TYPE
    };
    let metrics = &app.runtime.metrics;
    let sessions = app.sessions.list();
    let mut by_rank = [0usize; 4];
    for session in &sessions {
        for (total, count) in by_rank
            .iter_mut()
            .zip(session.turn_lock().waiting_by_rank())
        {
            *total += count;
        }
    }
    metrics.sessions_live.set(sessions.len() as i64);
    metrics
        .sessions_stored
        .set(i64::try_from(app.sessions.existing()).unwrap_or(i64::MAX));
    metrics.memory_held.set(app.memory.held() as i64);
    metrics
        .history_cache
        .set(i64::try_from(app.memory.held_by_caches()).unwrap_or(i64::MAX));
    metrics
        .memory_budget
        .set(app.memory.budget().min(i64::MAX as usize) as i64);
    metrics
        .writers_waiting
        .set(by_rank.iter().sum::<usize>() as i64);
    for (priority, count) in RANK_NAMES.into_iter().zip(by_rank) {
        metrics
            .writers_waiting_by_priority
            .get_or_create(&crate::metrics::PriorityLabel { priority })
            .set(count as i64);
    }
    ([(header::CONTENT_TYPE, content_type)], metrics.encode())
}

/// This API's OpenAPI 3.1 document, identical to `openapi/openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json(Extension(document): Extension<OpenApiJson>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0)
}
