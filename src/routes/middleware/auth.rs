//! Who may call: with API keys configured, every route but `/healthz`, `/readyz`,
//! `/openapi.json`, the API reference (`/docs`), the playground (`/` and its files;
//! they hold no data) and CORS preflights needs `Authorization: Bearer <key>`; the caller
//! found is put in the request's extensions for the routes to scope sessions by.
//!
//! A browser's `EventSource` cannot send that header: a `GET` of a session's events
//! (`…/events`, `…/turns/{turnId}/events`) may instead carry `?access_token=` with an
//! events token of that session (`POST …/events/token`), which stands for the key that
//! asked for it.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;
use crate::keys::Caller;

/// Routes anyone may call.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

/// Where the interactive API reference is served (open, like the document it shows).
pub const DOCS_PATH: &str = "/docs";

/// Where the playground's script and style sheet are served (open, like its page at `/`).
pub const PLAYGROUND_PATH: &str = "/playground";

fn is_open(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    path == "/" || OPEN_PATHS.contains(&path) || under(DOCS_PATH) || under(PLAYGROUND_PATH)
}

/// Identifies the caller, or answers `401 unauthorized`.
pub async fn require_key(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let open = !app.api_keys.enabled()
        || request.method() == Method::OPTIONS
        || is_open(request.uri().path());
    let caller = if open {
        Caller(None)
    } else {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, key) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
            });
        match presented.and_then(|key| app.api_keys.identify(key)) {
            Some(key) => Caller(Some(key)),
            None if presented.is_none() => match token_caller(&app, &request) {
                Some(caller) => caller,
                None => return ApiError::Unauthorized.into_response(),
            },
            None => return ApiError::Unauthorized.into_response(),
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller an events token in the query stands for, on a `GET` of the events of the
/// session it was made for.
fn token_caller(app: &AppState, request: &Request) -> Option<Caller> {
    if request.method() != Method::GET {
        return None;
    }
    let session = events_route_session(request.uri().path())?;
    let token = request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let grant = app.api_keys.check_events_token(token, now)?;
    (grant.session == session).then_some(grant.caller)
}

/// The session of `/text/session/{id}/events` or `/text/session/{id}/turns/{turnId}/events`.
fn events_route_session(path: &str) -> Option<uuid::Uuid> {
    let rest = path.strip_prefix("/text/session/")?;
    let (id, rest) = rest.split_once('/')?;
    let events = rest == "events"
        || rest
            .strip_prefix("turns/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(turn, tail)| !turn.is_empty() && tail == "events");
    events.then(|| uuid::Uuid::parse_str(id).ok()).flatten()
}
