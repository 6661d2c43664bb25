//! The three writes: `/message`, `/instructions`, `/tool-output`. Each checks its body,
//! turns it into a turn's input and runs the turn; ordering, waiting and atomicity are
//! the turn's business (`session::turn`).

use std::borrow::Cow;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::bodies::{Instructions, InstructionsBody, MessageRequest, ToolOutputBody};
use super::extract::{JsonBody, SessionPath};
use super::middleware::idempotency::PendingKey;
use super::middleware::turn_id::AssignedTurnId;
use super::responses::{self, ToolOutputResponse, View, ViewQuery, WriteResponse};
use super::stream::{self, TurnSseEvent};
use crate::app::AppState;
use crate::error::ApiError;
use crate::message::{Message, RawJson, Role, Timestamp};
use crate::session::turn::{self, TurnInput, TurnKind};
use crate::session::{Invalid, Session, check_id, check_length, validate_instructions};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(post_instructions))
        .routes(routes!(post_tool_output))
}

// The errors every write can answer, and `If-Match`, are added to the document in
// `openapi::add_cross_cutting`, once for all three.

/// Send a user message and get the reply.
///
/// Appends the instructions (as system messages), the user message and — once the
/// provider answers — the assistant message, as one step. On any failure nothing is
/// appended. With `stream: true` (or `Accept: text/event-stream`) the reply streams as
/// Server-Sent Events; the turn runs to its end even if the client goes away.
#[utoipa::path(
    post, path = "/text/session/{id}/message", tag = "writes",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ViewQuery,
    ),
    request_body = MessageRequest,
    responses(
        (status = 200, description = "Committed (JSON), or the turn's events (`text/event-stream`) when the body has `stream: true` or the request `Accept: text/event-stream`: `turn.waiting`, `turn.started`, `text.delta`, `tool_call`, then one of `turn.completed`, `turn.failed`, `turn.cancelled`; each with `id: <turnId>:<seq>`",
            content(
                (WriteResponse = "application/json"),
                (TurnSseEvent = "text/event-stream"),
            ),
            headers(("x-turn-id" = String, description = "The turn this write ran as"))),
    )
)]
async fn post_message(
    State(app): State<AppState>,
    SessionPath { session, id }: SessionPath,
    view: View,
    headers: WriteHeaders,
    turn_id: AssignedTurnId,
    key: Option<Extension<PendingKey>>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let body = body?;
    if body.0.opening() != Some(b'{') {
        return Err(ApiError::InvalidRequest(
            "body: expected a JSON object with `content`".into(),
        ));
    }
    let request: MessageRequest = body.typed()?;
    let limit = app.settings.limits.message_chars;
    let content = trimmed(request.content);
    if content.is_empty() {
        return Err(Invalid::new("content", "must not be blank").into());
    }
    check_length("content", &content, limit)?;
    let instructions = checked_instructions(request.instructions, limit)?;
    let staged = staged(&body.0, instructions, Some(content));
    let input = TurnInput {
        kind: TurnKind::Message,
        staged,
        priority: request.priority,
        on_busy: request.on_busy,
        stream: request.stream || headers.event_stream,
        body: body.0,
        if_match: headers.if_match?,
        key: key.map(|Extension(PendingKey(record))| record),
    };
    run(&app, turn_id, session, input, &id, view, |_| {}).await
}

/// Add instructions and get the reply.
///
/// Appends each instruction as a system message, then the assistant reply, as one
/// step. The body is `{instructions, priority?, onBusy?}`, or a bare string or array.
#[utoipa::path(
    post, path = "/text/session/{id}/instructions", tag = "writes",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ViewQuery,
    ),
    request_body = InstructionsBody,
    responses(
        (status = 200, description = "Committed (JSON), or the turn's events (`text/event-stream`) when the body has `stream: true` or the request `Accept: text/event-stream`",
            content(
                (WriteResponse = "application/json"),
                (TurnSseEvent = "text/event-stream"),
            ),
            headers(("x-turn-id" = String, description = "The turn this write ran as"))),
    )
)]
async fn post_instructions(
    State(app): State<AppState>,
    SessionPath { session, id }: SessionPath,
    view: View,
    headers: WriteHeaders,
    turn_id: AssignedTurnId,
    key: Option<Extension<PendingKey>>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let body = body?;
    let InstructionsBody(request) = body.typed()?;
    let limit = app.settings.limits.message_chars;
    let instructions = checked_instructions(Some(request.instructions), limit)?;
    let input = TurnInput {
        kind: TurnKind::Instructions,
        staged: staged(&body.0, instructions, None),
        priority: request.priority,
        on_busy: request.on_busy,
        stream: request.stream || headers.event_stream,
        body: body.0,
        if_match: headers.if_match?,
        key: key.map(|Extension(PendingKey(record))| record),
    };
    run(&app, turn_id, session, input, &id, view, |_| {}).await
}

/// Add tool outputs.
///
/// Appends one system message per output, `Tool output (<callId>): <output>`, with
/// `toolCallId` set. No generation. The body is `{toolOutputs, priority?, onBusy?}`, a
/// bare array of outputs, or one `{callId, output}`.
#[utoipa::path(
    post, path = "/text/session/{id}/tool-output", tag = "writes",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ViewQuery,
    ),
    request_body = ToolOutputBody,
    responses(
        (status = 200, description = "Committed", body = ToolOutputResponse),
    )
)]
async fn post_tool_output(
    State(app): State<AppState>,
    SessionPath { session, id }: SessionPath,
    view: View,
    headers: WriteHeaders,
    turn_id: AssignedTurnId,
    key: Option<Extension<PendingKey>>,
    body: Result<JsonBody, ApiError>,
) -> Result<Response, ApiError> {
    let raw = body?;
    let ToolOutputBody(body) = raw.typed()?;
    if body.tool_outputs.is_empty() {
        return Err(Invalid::new("toolOutputs", "must not be an empty list").into());
    }
    let now = Timestamp::now();
    let mut staged = Vec::with_capacity(body.tool_outputs.len());
    for (i, item) in body.tool_outputs.iter().enumerate() {
        check_id(&format!("toolOutputs[{i}].callId"), &item.call_id)?;
        let output = match &item.output {
            serde_json::Value::Null => {
                return Err(Invalid::new(
                    format!("toolOutputs[{i}].output"),
                    "is required (a string or any JSON value but null)",
                )
                .into());
            }
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let field = format!("toolOutputs[{i}].output");
        check_length(&field, &output, app.settings.limits.message_chars)?;
        staged.push(Message::tool_output(&item.call_id, &output, now));
    }
    let input = TurnInput {
        kind: TurnKind::ToolOutput,
        staged,
        priority: body.priority,
        on_busy: body.on_busy.into(),
        stream: false,
        body: raw.0,
        if_match: headers.if_match?,
        key: key.map(|Extension(PendingKey(record))| record),
    };
    run(&app, turn_id, session, input, &id, view, |_| {}).await
}

/// What a write reads of its request's headers, read in place (axum's `HeaderMap`
/// extractor would clone them all): whether `Accept` asks for Server-Sent Events, and
/// `If-Match`, whose error the write reports after its body's.
#[derive(Debug)]
struct WriteHeaders {
    event_stream: bool,
    if_match: Result<Option<u64>, ApiError>,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            event_stream: stream::wants_event_stream(&parts.headers),
            if_match: if_match(&parts.headers),
        })
    }
}

/// `If-Match: "<version>"` (also `W/"<version>"` or a bare number); `*` or none: any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    tag.parse::<u64>().map(Some).map_err(|_| {
        ApiError::InvalidRequest(format!(
            "If-Match: must be a session version as its ETag shows it, e.g. \"3\"; got `{text}`"
        ))
    })
}

/// Instructions, checked (none when left out).
fn checked_instructions(
    instructions: Option<Instructions<'_>>,
    max_chars: usize,
) -> Result<Vec<Cow<'_, str>>, Invalid> {
    let Some(Instructions(list)) = instructions else {
        return Ok(Vec::new());
    };
    validate_instructions("instructions", &list, max_chars)?;
    Ok(list)
}

/// A text without its leading and trailing white space, borrowed still where it was.
fn trimmed(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
        Cow::Owned(text) if text.trim().len() == text.len() => Cow::Owned(text),
        Cow::Owned(text) => Cow::Owned(text.trim().to_owned()),
    }
}

/// The messages a write appends: `system` as system messages, then `user` as the user
/// message. Their texts share the body's buffer where they can.
fn staged(body: &RawJson, system: Vec<Cow<'_, str>>, user: Option<Cow<'_, str>>) -> Vec<Message> {
    let now = Timestamp::now();
    let system_count = system.len();
    body.texts(system.into_iter().chain(user))
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let role = if i < system_count {
                Role::System
            } else {
                Role::User
            };
            Message::text(role, text, now)
        })
        .collect()
}

/// Runs the turn; answers with its events as they happen (streaming), or with the
/// session as of its commit once it ends. Every answer names the turn in `x-turn-id`.
/// `started` learns the new turn's id, whether it runs or was turned away.
pub(super) async fn run(
    app: &AppState,
    AssignedTurnId(turn_id): AssignedTurnId,
    session: Arc<Session>,
    input: TurnInput,
    id: &str,
    view: View,
    started: impl FnOnce(Uuid),
) -> Result<Response, ApiError> {
    let streaming = input.stream;
    let turn = turn::start(turn_id, session.clone(), input, &app.runtime);
    started(turn.as_ref().map_or_else(|r| r.turn_id, |t| t.id));
    let turn = match turn {
        Ok(turn) => turn,
        Err(rejected) => {
            let mut response = ApiError::from_turn(rejected.error, id).into_response();
            responses::with_turn_id(&mut response, rejected.turn_id);
            return Ok(response);
        }
    };
    if streaming {
        return Ok(stream::events(session, &turn.record, 0));
    }
    let turn_id = turn.id;
    let turn_record = turn.record.clone();
    match turn.outcome().await {
        Ok(outcome) => {
            let mut response = responses::write(&session, &outcome, view);
            responses::with_overhead(&mut response, &turn_record);
            Ok(response)
        }
        Err(error) => {
            let mut response = ApiError::from_turn(error, id).into_response();
            responses::with_turn_id(&mut response, turn_id);
            Ok(response)
        }
    }
}
