//! The playground at `GET /`: one HTML page, its script and its style sheet, compiled
//! into the binary (no CDN, no build step). Served with a Content-Security-Policy that
//! lets the page load only these files and talk only to this origin; the API key a user
//! types in stays in the page's memory.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::app::AppState;
use crate::routes::middleware::auth::PLAYGROUND_PATH as ASSETS_PATH;

const INDEX_HTML: &str = include_str!("playground/index.html");
const APP_JS: &str = include_str!("playground/app.js");
const STYLE_CSS: &str = include_str!("playground/style.css");

/// Only this origin's files and this origin's API; no inline script or style, no
/// frames, no forms posted elsewhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /playground/app.js`, `GET /playground/style.css`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            &format!("{ASSETS_PATH}/app.js"),
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            &format!("{ASSETS_PATH}/style.css"),
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}
