//! A session's turns from outside: replay a turn's events, and cancel the running turn.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::bodies::CancelRequest;
use super::extract::OptionalJsonBody;
use super::stream::{self, TurnEventData};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(turn_events))
        .routes(routes!(cancel))
}

/// Replay a turn's events, then follow it live.
///
/// Replays from the start, or only after the event named in `Last-Event-ID`
/// (`<turnId>:<seq>`), then follows the turn until it ends. A browser's `EventSource`
/// pointed here resumes by itself; once the turn has ended and nothing is left to send,
/// the answer is `204`, which tells `EventSource` to stop reconnecting. The events of
/// the last `TURN_EVENTS_KEEP` turns of a session stay for `TURN_EVENTS_TTL_SECS`.
#[utoipa::path(
    get, path = "/text/session/{id}/turns/{turnId}/events", tag = "turns",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ("turnId" = String, Path, description = "Turn id (UUID)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (`<turnId>:<seq>`)"),
    ),
    responses(
        (status = 200, description = "The turn's events", content_type = "text/event-stream", body = TurnEventData),
        (status = 204, description = "The turn has ended and no event is left after `Last-Event-ID`"),
        (status = 400, description = "`Last-Event-ID` is not `<turnId>:<seq>` of this turn (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`), or no such turn kept (`turn_not_found`)", body = ErrorBody),
    )
)]
async fn turn_events(
    State(app): State<AppState>,
    Path((id, turn_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = app.session(&id)?;
    let record = Uuid::parse_str(&turn_id)
        .ok()
        .and_then(|turn| session.turns().get(turn))
        .filter(|record| !record.events.is_forgotten())
        .ok_or_else(|| ApiError::TurnNotFound(turn_id.clone()))?;
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(':'))
            .filter(|(turn, _)| Uuid::parse_str(turn).ok() == Some(record.id))
            .and_then(|(_, seq)| seq.parse::<usize>().ok())
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!("Last-Event-ID: must be `{}:<seq>`", record.id))
            })?,
    };
    if !record.events.has_more_after(after) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(stream::events(session, &record, after))
}

/// `{success: true, cancelled}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResponse {
    /// Always `true`.
    pub success: bool,
    /// The running turn that was told to stop, or `null` if none ran.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub cancelled: Option<Uuid>,
}

/// Cancel the running turn.
///
/// Never waits for the turn lock: the running turn stops at once (its provider request
/// is dropped). `keep` (default) commits its messages and the partial reply, marked
/// `interrupted`; `rollback` leaves the history as it was before the turn.
/// `waiting: true` also turns every waiting writer away with `409 turn_cancelled`.
/// The body is optional.
#[utoipa::path(
    post, path = "/text/session/{id}/cancel", tag = "turns",
    params(("id" = String, Path, description = "Session id (UUID)")),
    request_body(content = Option<CancelRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Done; `cancelled` names the running turn, if there was one", body = CancelResponse),
        (status = 400, description = "A field breaks a rule (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
        (status = 415, description = "Body is not JSON (`unsupported_media_type`)", body = ErrorBody),
    )
)]
async fn cancel(
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<OptionalJsonBody<CancelRequest>, ApiError>,
) -> Result<axum::Json<CancelResponse>, ApiError> {
    let session = app.session(&id)?;
    let OptionalJsonBody(body) = body?;
    if body.waiting {
        session.lock().cancel_waiting();
    }
    let cancelled = session.lock().cancel_running(body.mode);
    tracing::info!(session_id = %session.id, turn_id = ?cancelled, mode = ?body.mode, "cancel");
    Ok(axum::Json(CancelResponse {
        success: true,
        cancelled,
    }))
}
