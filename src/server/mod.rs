//! The HTTP server: the router (the API, the reference at `/docs`, the playground at
//! `/`) with its fallbacks and layers (request ids, tracing,
//! CORS, body limit, API keys, `Idempotency-Key`), and `Server::serve`, which runs on a
//! listener the caller bound (port 0 in tests) until shutdown, then drains running
//! turns. Connections and their bounds are `connections.rs`. The state the handlers
//! share is `app::AppState`; nothing here is a handler.

mod connections;
mod playground;
mod preflight;
mod timed_io;

use std::future::Future;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tower::util::MapRequestLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::openapi;
use crate::routes::OpenApiJson;
use crate::routes::middleware::auth::DOCS_PATH;
use crate::routes::middleware::{auth, body, forward, idempotency, turn_id};
use crate::store::{Instance, Store, StoreError};
use preflight::PreflightNoContentLayer;

pub use connections::ConnectionLimits;

/// The header that names a request, taken from the client or made here.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The service, built from the configuration, ready to serve on a listener.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    cors: CorsLayer,
    shutdown_grace: Duration,
    connections: ConnectionLimits,
    lease: Duration,
}

impl Server {
    /// Opens the store and builds the state (providers and their clients included) and
    /// the HTTP settings.
    pub async fn build(config: &Config) -> Result<Self, BuildError> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// As `build`, with idle expiry and `Idempotency-Key` lifetimes measured by `clock`.
    pub async fn build_with_clock(config: &Config, clock: Clock) -> Result<Self, BuildError> {
        let instance = Instance::new(config.instance_addr()?, config.lease());
        let store = Store::open_as(&config.store, instance).await?;
        // The bounds on sessions count the stored ones (one query, grouped by owner).
        let stored = store.count_by_owner().await?;
        let state = AppState::new(config, clock, store)?;
        state.sessions.count_stored(&stored);
        Ok(Self {
            state,
            cors: cors(&config.cors_allow_origins)?,
            shutdown_grace: config.shutdown_grace(),
            lease: config.lease(),
            connections: ConnectionLimits {
                max_open: max_connections(config.max_connections),
                header_read_timeout: Duration::from_secs_f64(config.header_read_timeout_secs),
                write_timeout: Duration::from_secs_f64(config.write_timeout_secs),
            },
        })
    }

    /// What the handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` resolves. Then: readiness fails and new
    /// turns are refused (`503 shutting_down`) while running turns get the grace period
    /// to finish; what is left is cancelled and rolled back; then the server stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            state,
            cors,
            shutdown_grace,
            connections,
            lease,
        } = self;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sweeper = tokio::spawn({
            let state = state.clone();
            async move {
                tokio::join!(
                    state.sessions.expire_idle_forever(&state.runtime.store),
                    state
                        .sessions
                        .renew_leases_forever(&state.runtime.store, lease),
                    forget_old_keys_forever(&state),
                );
            }
        });
        let draining = state.clone();
        tokio::spawn(async move {
            shutdown.await;
            draining
                .runtime
                .drain(&draining.sessions, shutdown_grace)
                .await;
            // Other processes may serve this one's sessions at once.
            if let Err(error) = draining.runtime.store.release_leases(None).await {
                tracing::warn!(%error, "leases not handed back; they lapse by themselves");
            }
            let _ = stop.send(());
        });
        let stopped = async move {
            let _ = stopped.await;
        };
        let served = connections::serve(
            listener,
            router(state, cors),
            connections,
            stopped,
            Duration::from_secs(5),
        )
        .await;
        sweeper.abort();
        served
    }
}

/// Every route, the JSON fallbacks for unknown routes and methods, and the layers: a
/// request id for every request (the client's `x-request-id`, or a new one) on every
/// response and every log line of the request.
fn router(state: AppState, cors: CorsLayer) -> Router {
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
    // One stack, outermost first, applied to every route at once: each request clones
    // one boxed service, not one per layer.
    let layers = tower::ServiceBuilder::new()
        .layer(Extension(OpenApiJson(openapi::document_json().into())))
        .layer(MapRequestLayer::new(drop_unfit_request_id))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(PreflightNoContentLayer)
        .layer(SetResponseHeaderLayer::overriding(header::VARY, CORS_VARY))
        .layer(cors)
        .layer(turn_id::AssignLayer)
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        // With no keys configured every request is open, and without the layer a
        // handler's `Caller` is the open one (`routes::extract`).
        .option_layer(
            state
                .api_keys
                .enabled()
                .then(|| axum::middleware::from_fn_with_state(state.clone(), auth::require_key)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::read_whole,
        ))
        // Only an instance with an address (several serving one store) forwards.
        .option_layer(
            (!state.runtime.store.instance_addr().is_empty())
                .then(|| axum::middleware::from_fn_with_state(state.clone(), forward::forward)),
        )
        .layer(idempotency::IdempotencyLayer(state.clone()));
    routes
        .merge(api_reference())
        .merge(playground::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layers)
        .with_state(state)
}

/// The interactive API reference at `/docs`: Swagger UI, served from the binary (no
/// network needed), reading the document at `/openapi.json`.
fn api_reference() -> Router<AppState> {
    SwaggerUi::new(DOCS_PATH)
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        .into()
}

/// `MAX_CONNECTIONS`, or where it is 0, half the file-descriptor limit, which is first
/// raised to its hard limit where the system allows: the other half stays for the
/// provider connections and the rest of the process.
fn max_connections(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024);
    usize::try_from(limit / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, 1 << 20)
}

/// The `Vary` of every response: what the CORS headers of an answer depend on (the
/// CORS layer's own default list), so that a cache keeps browsers' answers apart.
const CORS_VARY: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

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
        // Set as a constant by the layer around it (`CORS_VARY`): the CORS layer would
        // join the names into a new header on every request.
        .vary([])
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
            header::WWW_AUTHENTICATE,
        ])
        .max_age(Duration::from_secs(600)))
}

/// Most characters of a client's `x-request-id`, which goes into every log line.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// A client's `x-request-id` longer than `MAX_REQUEST_ID_CHARS`, or with anything but
/// visible ASCII, is dropped, so the request gets a new one.
fn drop_unfit_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let unfit = request.headers().get(&REQUEST_ID).is_some_and(|id| {
        let id = id.as_bytes();
        id.is_empty() || id.len() > MAX_REQUEST_ID_CHARS || !id.iter().all(u8::is_ascii_graphic)
    });
    if unfit {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Every minute, drops the stored `Idempotency-Key` records older than their TTL (the
/// records in memory expire as they are looked at).
async fn forget_old_keys_forever(state: &AppState) {
    if !state.runtime.store.is_durable() {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ttl = i64::try_from(state.idempotency.ttl().as_millis()).unwrap_or(i64::MAX);
        let now = crate::message::Timestamp::now();
        let Some(before) =
            crate::message::Timestamp::from_unix_millis(now.unix_millis().saturating_sub(ttl))
        else {
            continue;
        };
        match state.runtime.store.forget_keys(before).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "expired idempotency records dropped"),
            Err(error) => tracing::warn!(%error, "expired idempotency records are still stored"),
        }
    }
}
