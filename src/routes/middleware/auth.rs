//! Who may call: with API keys configured, every route but `/healthz`, `/readyz`,
//! `/openapi.json` (and CORS preflights) needs `Authorization: Bearer <key>`; the caller
//! found is put in the request's extensions for the routes to scope sessions by.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;
use crate::keys::Caller;

/// Routes anyone may call.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

/// Identifies the caller, or answers `401 unauthorized`.
pub async fn require_key(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let open = !app.api_keys.enabled()
        || request.method() == Method::OPTIONS
        || OPEN_PATHS.contains(&request.uri().path());
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
            None => return ApiError::Unauthorized.into_response(),
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}
