//! Wiring: the shared state, the router with its fallbacks and layers (request ids,
//! tracing), and `serve`, which runs on a listener the caller bound (port 0 in tests)
//! until shutdown, then drains running turns.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, Uri};
use bytes::Bytes;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::openapi;
use crate::provider::ProviderRegistry;
use crate::session::runtime::{RetryPolicy, Runtime, RuntimeSettings};
use crate::session::turns::Retention;
use crate::session::{CancelMode, SessionStore, Settings};

/// The header that names a request, taken from the client or made here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppInner {
    /// Every live session.
    pub sessions: SessionStore,
    /// The configured providers.
    pub providers: ProviderRegistry,
    /// Settings every session shares.
    pub settings: Settings,
    /// What every turn shares: metrics, provider slots, retries, shutdown.
    pub runtime: Arc<Runtime>,
    /// How long running turns get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// The OpenAPI document, rendered once.
    pub openapi_json: Bytes,
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

impl AppState {
    /// Builds the state from the configuration (providers and their clients included).
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let settings = Settings {
            max_waiting_per_session: config.max_waiting_per_session,
            turns: Retention {
                records: config.turns_keep,
                failed: config.failed_turns_keep,
                max_age: Duration::from_secs(config.turns_max_age_secs),
                events: config.turn_events_keep,
                events_ttl: Duration::from_secs(config.turn_events_ttl_secs),
            },
        };
        let runtime = RuntimeSettings {
            max_concurrent_turns: config.max_concurrent_turns,
            max_waiting_turns: config.max_waiting_turns,
            provider_timeout: config.provider_timeout(),
            retry: RetryPolicy {
                max_retries: config.provider_max_retries,
                base: Duration::from_millis(config.provider_retry_base_ms),
                cap: Duration::from_millis(config.provider_retry_max_ms),
            },
            log_content: config.log_content,
        };
        Ok(Self {
            inner: Arc::new(AppInner {
                sessions: SessionStore::new(),
                providers: config.providers()?,
                settings,
                runtime: Arc::new(Runtime::new(runtime)),
                shutdown_grace: config.shutdown_grace(),
                openapi_json: Bytes::from(openapi::document_json()),
            }),
        })
    }
}

/// Every route, the JSON fallbacks for unknown routes and methods, and the layers: a
/// request id for every request (the client's `x-request-id`, or a new one) on every
/// response and every log line of the request.
pub fn router(state: AppState) -> Router {
    let (routes, _) = openapi::split();
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
        let request_id = request
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!(
            "request",
            request_id,
            method = %request.method(),
            path = %request.uri().path(),
            session_id = tracing::field::Empty,
        )
    });
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves on `listener` until `shutdown` resolves. Then: readiness fails and new turns
/// are refused (`503 shutting_down`) while running turns get `shutdown_grace` to
/// finish; what is left is cancelled and rolled back; then the server stops.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        drain(&draining).await;
        let _ = stop.send(());
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
}

/// Lets running turns finish within the grace period, then rolls back the rest.
async fn drain(state: &AppState) {
    let runtime = &state.runtime;
    runtime.begin_shutdown();
    tracing::info!(
        grace_secs = state.shutdown_grace.as_secs_f64(),
        "shutting down: draining turns"
    );
    if !runtime.turns_finished(state.shutdown_grace).await {
        let sessions = state.sessions.list();
        tracing::warn!("grace period over: cancelling the turns still running");
        for session in &sessions {
            session.lock().cancel_waiting();
            session.lock().cancel_running(CancelMode::Rollback);
        }
        runtime.turns_finished(Duration::from_secs(5)).await;
    }
    tracing::info!("turns drained");
}
