//! Wiring: the shared state, the router with its fallbacks and layers, and `serve`,
//! which runs on a listener the caller bound (port 0 in tests) until shutdown.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use bytes::Bytes;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::openapi;
use crate::provider::ProviderRegistry;
use crate::session::turns::Retention;
use crate::session::{SessionStore, Settings};

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
        Ok(Self::from_parts(
            config.providers()?,
            Settings {
                max_waiting_per_session: config.max_waiting_per_session,
                turns: Retention {
                    records: config.turns_keep,
                    failed: config.failed_turns_keep,
                    max_age: Duration::from_secs(config.turns_max_age_secs),
                    events: config.turn_events_keep,
                    events_ttl: Duration::from_secs(config.turn_events_ttl_secs),
                },
            },
        ))
    }

    /// Builds the state from ready parts.
    pub fn from_parts(providers: ProviderRegistry, settings: Settings) -> Self {
        Self {
            inner: Arc::new(AppInner {
                sessions: SessionStore::new(),
                providers,
                settings,
                openapi_json: Bytes::from(openapi::document_json()),
            }),
        }
    }
}

/// Every route, the JSON fallbacks for unknown routes and methods, and the layers.
pub fn router(state: AppState) -> Router {
    let (routes, _) = openapi::split();
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
