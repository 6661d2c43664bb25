//! Wiring: the shared state, the router with its fallbacks and layers (request ids,
//! tracing), and `serve`, which runs on a listener the caller bound (port 0 in tests)
//! until shutdown, then drains running turns.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::middleware;
use axum::response::Response;
use bytes::Bytes;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::auth::ApiKeys;
use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::idempotency::IdempotencyStore;
use crate::openapi;
use crate::provider::ProviderRegistry;
use crate::routes::{guard, idempotency as replay};
use crate::session::runtime::{RetryPolicy, Runtime, RuntimeSettings};
use crate::session::turns::Retention;
use crate::session::{CancelMode, Limits, SessionStore, Settings};

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
    /// The API keys; none means open (local use only).
    pub api_keys: ApiKeys,
    /// Which browser origins may call.
    pub cors: CorsLayer,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Idle sessions expire after this.
    pub session_ttl: Duration,
    /// Remembered answers for `Idempotency-Key`.
    pub idempotency: IdempotencyStore,
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
            limits: Limits {
                message_chars: config.max_message_chars,
                messages: config.max_messages_per_session,
                tools: config.max_tools_per_session,
                metadata_bytes: config.max_metadata_bytes,
            },
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
            max_messages: config.max_messages_per_session,
        };
        let cors = cors(&config.cors_allow_origins)?;
        Ok(Self {
            inner: Arc::new(AppInner {
                sessions: SessionStore::new(config.max_sessions, config.max_sessions_per_key),
                providers: ProviderRegistry::from_config(config)?,
                api_keys: ApiKeys::new(&config.api_keys()?),
                cors,
                max_body_bytes: config.max_body_bytes,
                session_ttl: Duration::from_secs_f64(config.session_ttl_secs),
                idempotency: IdempotencyStore::new(
                    Duration::from_secs(config.idempotency_ttl_secs),
                    config.idempotency_max_keys,
                ),
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
        .layer(middleware::from_fn_with_state(
            state.clone(),
            replay::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_key,
        ))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(state.cors.clone())
        .layer(middleware::from_fn(preflight_no_content))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// CORS from `CORS_ALLOW_ORIGINS`: exact origins (echoed, with `Vary: Origin`), or `*`
/// (never with credentials); none by default. The headers scripts need are exposed.
fn cors(origins: &[String]) -> Result<CorsLayer, ConfigError> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin.trim_end_matches('/')).map_err(|_| {
                    ConfigError::new(format!("CORS_ALLOW_ORIGINS: `{origin}` is not an origin"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("last-event-id"),
            REQUEST_ID,
        ])
        .expose_headers([
            REQUEST_ID,
            header::ETAG,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("x-turn-id"),
            HeaderName::from_static("x-overhead-us"),
        ])
        .max_age(Duration::from_secs(600)))
}

/// CORS preflights are answered `204 No Content`.
async fn preflight_no_content(request: axum::extract::Request, next: middleware::Next) -> Response {
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = next.run(request).await;
    if preflight && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
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
    let sweeper = tokio::spawn(expire_idle_sessions(state.clone()));
    let draining = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        drain(&draining).await;
        let _ = stop.send(());
    });
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await;
    sweeper.abort();
    served
}

/// Removes idle sessions every so often (a quarter of the TTL, at most a minute).
async fn expire_idle_sessions(state: AppState) {
    let every = (state.session_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let expired = state.sessions.expire_idle(state.session_ttl);
        if expired > 0 {
            tracing::info!(expired, "idle sessions expired");
        }
    }
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
