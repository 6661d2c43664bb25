//! The OpenAPI document root. Paths and schemas come from the routes themselves
//! (`routes::api()`); this adds the title, tags and the shared error schema.

use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::error::ErrorBody;
use crate::routes;
use crate::routes::bodies::{InstructionsRequest, ToolOutputInput, ToolOutputRequest};
use crate::routes::responses::View;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "text-session-api",
        description = "Chat sessions with an LLM. Every write goes straight into the session's history behind that session's turn lock: one writer at a time, waiting writers served by priority then arrival, nothing half-appended.",
        license(name = "MIT"),
    ),
    tags(
        (name = "sessions", description = "Create, read, list, fork and delete sessions"),
        (name = "writes", description = "Messages, instructions and tool outputs; each write is one turn"),
        (name = "turns", description = "See and steer turns: list, cancel, retry, replay a turn's events, follow the session live"),
        (name = "operations", description = "Health and this document"),
    ),
    components(schemas(ErrorBody, View, ToolOutputInput, InstructionsRequest, ToolOutputRequest))
)]
struct ApiDoc;

/// The router's routes together with their document.
pub(crate) fn split() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::api())
        .split_for_parts();
    add_cross_cutting(&mut doc);
    (router, doc)
}

/// Routes anyone may call, even with API keys on.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

/// What the middleware adds to every route, written once here rather than on each:
/// `401` where API keys apply; on every POST, `Idempotency-Key` with its `409`/`422`,
/// and the body's bounds (`408`, `413`).
fn add_cross_cutting(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let open = OPEN_PATHS.contains(&path.as_str());
        let operations = [
            (false, item.get.as_mut()),
            (true, item.post.as_mut()),
            (false, item.delete.as_mut()),
        ];
        for (is_post, operation) in operations {
            let Some(operation) = operation else { continue };
            if !open {
                add_error(
                    operation,
                    "401",
                    "API keys are on and the request has no valid `Authorization: Bearer <key>` (`unauthorized`)",
                );
            }
            if item_tags(operation).contains(&"writes") {
                add_write_errors(path, operation);
            }
            if path.contains("{id}") && !operation.responses.responses.contains_key("503") {
                add_error(
                    operation,
                    "503",
                    "The session could not be read from the store (`store_unavailable`), or the instance serving it does not answer (`instance_unavailable`, several instances); see `Retry-After`",
                );
            }
            if is_post {
                add_error(
                    operation,
                    "400",
                    "`invalid_request`: the `Idempotency-Key` is not 1 to 255 printable ASCII characters",
                );
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(idempotency_key());
                add_error(
                    operation,
                    "409",
                    "`idempotency_key_in_use`: a request with this `Idempotency-Key` still runs",
                );
                add_error(
                    operation,
                    "422",
                    "`idempotency_key_reused`: this `Idempotency-Key` was used with another route or body",
                );
                add_error(
                    operation,
                    "408",
                    "The body did not arrive within `BODY_READ_TIMEOUT_SECS` (`request_timeout`)",
                );
                if !operation.responses.responses.contains_key("413") {
                    add_error(operation, "413", "Body too large (`payload_too_large`)");
                }
            }
        }
    }
}

fn item_tags(operation: &Operation) -> Vec<&str> {
    operation
        .tags
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

/// What every write can answer besides its success, and its `If-Match` header.
fn add_write_errors(path: &str, operation: &mut Operation) {
    operation.parameters.get_or_insert_with(Vec::new).push(
        ParameterBuilder::new()
            .name("If-Match")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "The session version (as its `ETag` shows it, e.g. `\"3\"`) the write expects when it takes the turn lock; otherwise `412 version_mismatch`",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^(\\*|(W/)?\"?[0-9]+\"?)$")),
            ))
            .build(),
    );
    let generates = !path.ends_with("/tool-output");
    let mut errors = vec![
        (
            "400",
            "A field breaks a rule (`invalid_request`); nothing appended",
            false,
        ),
        ("404", "No such session (`session_not_found`)", false),
        (
            "409",
            "`session_busy` (with `onBusy: reject`), `turn_cancelled` (a cancel stopped the turn: with `keep` its messages and the partial reply were kept), `session_full` (MAX_MESSAGES_PER_SESSION), or `session_moved` (another instance took the session over before the turn committed: nothing appended; send it again)",
            false,
        ),
        (
            "412",
            "`If-Match` names another version (`version_mismatch`); nothing appended",
            false,
        ),
        ("413", "Body too large (`payload_too_large`)", false),
        ("415", "Body is not JSON (`unsupported_media_type`)", false),
        (
            "429",
            "Too many writers wait (`session_overloaded`; see `Retry-After`), or this API key holds its memory quota (`memory_quota_exceeded`: delete sessions first); nothing appended",
            true,
        ),
        (
            "503",
            "`overloaded` (every provider slot taken), `memory_budget_exceeded` (the service holds MEMORY_BUDGET_BYTES), `store_unavailable` (the store did not commit), `instance_unavailable` (the instance serving the session does not answer) or `shutting_down`; see `Retry-After`; nothing appended",
            true,
        ),
    ];
    if generates {
        errors.push((
            "502",
            "The provider failed (`provider_error`); nothing appended",
            false,
        ));
        errors.push((
            "504",
            "The provider timed out (`provider_timeout`); nothing appended",
            false,
        ));
    }
    for (status, description, retry_after) in errors {
        add_error(operation, status, description);
        if retry_after
            && let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status)
        {
            response.headers.insert(
                "Retry-After".to_owned(),
                HeaderBuilder::new()
                    .schema(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0)),
                    )
                    .description(Some("Seconds to wait"))
                    .build(),
            );
        }
    }
    let string = || ObjectBuilder::new().schema_type(Type::String);
    if let Some(RefOr::T(response)) = operation.responses.responses.get_mut("412") {
        response.headers.insert(
            "ETag".to_owned(),
            HeaderBuilder::new()
                .schema(string())
                .description(Some(
                    "The version the session is at now (`\"<version>\"`): send it in `If-Match` to write on top of it",
                ))
                .build(),
        );
    }
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .entry("x-turn-id".to_owned())
                .or_insert_with(|| {
                    HeaderBuilder::new()
                        .schema(string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))))
                        .description(Some(
                            "The turn this write ran as, or would have (on every answer of a write, errors included; a write turned away before it became a turn is not listed among the session's turns)",
                        ))
                        .build()
                });
        }
    }
}

fn idempotency_key() -> Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "1 to 255 printable ASCII characters. The first request with a key runs; a repeat with the same route and body (within IDEMPOTENCY_TTL_SECS, per API key) gets the stored answer with `Idempotent-Replayed: true`.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[\\x20-\\x7E]+$")),
        ))
        .build()
}

/// Adds an `ErrorBody` answer, or adds to the description of one already there.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if let Some(RefOr::T(existing)) = responses.get_mut(status) {
        existing.description = format!("{}; or {description}", existing.description);
        return;
    }
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    responses.insert(status.to_owned(), RefOr::T(response));
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
