//! The OpenAPI document root. Paths and schemas come from the routes themselves
//! (`routes::api()`); this adds the title, tags and the shared error schema.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::ErrorBody;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "text-session-api",
        description = "Chat sessions with an LLM. Every write goes straight into the session's history behind that session's turn lock: one writer at a time, waiting writers served by priority then arrival, nothing half-appended.",
        license(name = "MIT"),
    ),
    tags(
        (name = "sessions", description = "Create, read, list and delete sessions"),
        (name = "writes", description = "Messages, instructions and tool outputs; each write is one turn"),
        (name = "turns", description = "Replay a turn's events; cancel the running turn"),
        (name = "operations", description = "Health and this document"),
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The router's routes together with their document.
pub(crate) fn split() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::api())
        .split_for_parts()
}

/// The whole OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    split().1
}

/// The document as `openapi/openapi.json` holds it: pretty JSON and a final newline.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}
