//! A session's turns from outside: list and inspect them, take a waiting one back,
//! retry a failed one, replay a turn's events, and cancel the running turn.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::bodies::CancelRequest;
use super::extract::{OptionalJsonBody, SessionPath};
use super::middleware::idempotency::PendingKey;
use super::middleware::turn_id::AssignedTurnId;
use super::responses::TurnView;
use super::responses::View;
use super::stream::{self, TurnSseEvent};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::session::records::{TurnRecord, TurnStatus};
use crate::session::turn::TurnInput;
use crate::session::{CancelMode, Session};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_turns))
        .routes(routes!(get_turn, delete_turn))
        .routes(routes!(retry_turn))
        .routes(routes!(turn_events))
        .routes(routes!(cancel))
}

/// One of the session's remembered turns; ids that are not UUIDs match nothing.
fn turn_of(session: &Session, turn_id: &str) -> Result<Arc<TurnRecord>, ApiError> {
    Uuid::parse_str(turn_id)
        .ok()
        .and_then(|turn| session.turns().get(turn))
        .ok_or_else(|| ApiError::TurnNotFound(turn_id.to_owned()))
}

/// The record with its place in the turn lock's line, if it waits.
fn view(session: &Session, record: &TurnRecord) -> TurnView {
    let position = session
        .turn_lock()
        .waiting_order()
        .iter()
        .position(|id| *id == record.id)
        .map(|i| i + 1);
    TurnView::new(session.id, record, position)
}

/// `?status=…`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TurnFilter {
    /// Only turns with this status; `failed` is the dead-letter view.
    pub status: Option<TurnStatus>,
}

/// `{success: true, turns}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnListResponse {
    /// Always `true`.
    pub success: bool,
    pub turns: Vec<TurnView>,
}

/// `{success: true, turn}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnResponse {
    /// Always `true`.
    pub success: bool,
    pub turn: TurnView,
}

/// List the session's turns, oldest first.
///
/// Waiting turns carry `position`, the order they will run in (1 = next), which follows
/// the turn lock's real order (`interrupt`, then priority, then arrival);
/// `?status=waiting` lists them in that order, the order they will commit in. Kept: every
/// waiting and running turn, the last `TURNS_KEEP` ended ones and besides them the
/// last `FAILED_TURNS_KEEP` failed ones (`?status=failed` is the dead-letter view), none
/// older than `TURNS_MAX_AGE_SECS` once ended.
#[utoipa::path(
    get, path = "/text/session/{id}/turns", tag = "turns",
    params(("id" = String, Path, description = "Session id (UUID)"), TurnFilter),
    responses(
        (status = 200, description = "The turns, oldest first", body = TurnListResponse),
        (status = 400, description = "Unknown `status` (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
    )
)]
async fn list_turns(
    SessionPath { session, .. }: SessionPath,
    filter: Result<Query<TurnFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<TurnListResponse>, ApiError> {
    let Query(filter) = filter.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let order = session.turn_lock().waiting_order();
    let records = session.turns().list();
    let turns = records
        .iter()
        .map(|record| {
            let position = order.iter().position(|id| *id == record.id).map(|i| i + 1);
            TurnView::new(session.id, record, position)
        })
        .filter(|turn| filter.status.is_none_or(|status| turn.status == status));
    let mut turns: Vec<_> = turns.collect();
    if filter.status == Some(TurnStatus::Waiting) {
        // The line itself: in the order the turns will run.
        turns.sort_by_key(|turn| turn.position);
    }
    Ok(axum::Json(TurnListResponse {
        success: true,
        turns,
    }))
}

/// Get one turn.
#[utoipa::path(
    get, path = "/text/session/{id}/turns/{turnId}", tag = "turns",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ("turnId" = String, Path, description = "Turn id (UUID)"),
    ),
    responses(
        (status = 200, description = "The turn", body = TurnResponse),
        (status = 404, description = "No such session (`session_not_found`) or turn (`turn_not_found`)", body = ErrorBody),
    )
)]
async fn get_turn(
    SessionPath { session, .. }: SessionPath,
    Path((_, turn_id)): Path<(String, String)>,
) -> Result<axum::Json<TurnResponse>, ApiError> {
    let record = turn_of(&session, &turn_id)?;
    Ok(axum::Json(TurnResponse {
        success: true,
        turn: view(&session, &record),
    }))
}

/// Take a waiting turn back, or cancel the running one.
///
/// A waiting turn leaves the line (its writer gets `409 turn_cancelled`; the record
/// stays, as `cancelled`); a running turn is cancelled as `keep`. An ended turn is left
/// as it is. Answers with the turn as it stands after.
#[utoipa::path(
    delete, path = "/text/session/{id}/turns/{turnId}", tag = "turns",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ("turnId" = String, Path, description = "Turn id (UUID)"),
    ),
    responses(
        (status = 200, description = "The turn after the removal or cancel", body = TurnResponse),
        (status = 404, description = "No such session (`session_not_found`) or turn (`turn_not_found`)", body = ErrorBody),
    )
)]
async fn delete_turn(
    SessionPath { session, .. }: SessionPath,
    Path((_, turn_id)): Path<(String, String)>,
) -> Result<axum::Json<TurnResponse>, ApiError> {
    let record = turn_of(&session, &turn_id)?;
    let lock = session.turn_lock();
    if !lock.cancel_waiter(record.id) {
        // A running turn several writers joined stops for all of them.
        lock.cancel_turn(record.id, CancelMode::Keep);
    }
    // The turn's own task records the end; wait for it so the answer shows it.
    let mut events = std::pin::pin!(record.events.follow(0));
    let settle = async { while futures::StreamExt::next(&mut events).await.is_some() {} };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), settle).await;
    tracing::info!(session_id = %session.id, turn_id = %record.id, "turn removed");
    Ok(axum::Json(TurnResponse {
        success: true,
        turn: view(&session, &record),
    }))
}

/// Retry a failed or cancelled turn.
///
/// Runs the turn's input again as a new turn (same priority) and answers like the
/// original write (with events if it streamed). The old record stays as it was, plus
/// `retriedBy`. Any other turn, or one already retried, is `409 turn_not_retryable`.
#[utoipa::path(
    post, path = "/text/session/{id}/turns/{turnId}/retry", tag = "turns",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ("turnId" = String, Path, description = "Turn id (UUID)"),
    ),
    responses(
        (status = 200, description = "Like the original write: committed (JSON) or its events (`text/event-stream`)",
            content(
                (super::responses::WriteResponse = "application/json"),
                (TurnSseEvent = "text/event-stream"),
            ),
            headers(("x-turn-id" = String, description = "The new turn"))),
        (status = 404, description = "No such session (`session_not_found`) or turn (`turn_not_found`)", body = ErrorBody),
        (status = 409, description = "Not failed or cancelled, or already retried (`turn_not_retryable`); or the new turn was refused or cancelled (`session_busy`, `turn_cancelled`)", body = ErrorBody),
        (status = 429, description = "Too many writers wait (`session_overloaded`)", body = ErrorBody),
        (status = 502, description = "The provider failed again (`provider_error`)", body = ErrorBody),
        (status = 504, description = "The provider timed out again (`provider_timeout`)", body = ErrorBody),
    )
)]
async fn retry_turn(
    State(app): State<AppState>,
    SessionPath { session, id }: SessionPath,
    Path((_, turn_id)): Path<(String, String)>,
    new_turn: AssignedTurnId,
    key: Option<Extension<PendingKey>>,
) -> Result<Response, ApiError> {
    let record = turn_of(&session, &turn_id)?;
    let status = record.read_state(|s| s.status);
    if !matches!(status, TurnStatus::Failed | TurnStatus::Cancelled) {
        let status = serde_json::to_value(status).unwrap_or_default();
        return Err(ApiError::TurnNotRetryable(format!(
            "turn `{}` is {}; only failed or cancelled turns can be retried",
            record.id,
            status.as_str().unwrap_or("not retryable")
        )));
    }
    if let Err(by) = record.claim_retry() {
        let by = by.map_or_else(|| "another request".to_owned(), |by| format!("`{by}`"));
        return Err(ApiError::TurnNotRetryable(format!(
            "turn `{}` was already retried by {by}",
            record.id
        )));
    }
    // A retry runs the input again whatever the session's version now is.
    let input = TurnInput {
        if_match: None,
        key: key.map(|Extension(PendingKey(record))| record),
        ..TurnInput::clone(&record.input())
    };
    let answer = super::writes::run(
        &app,
        new_turn,
        session.clone(),
        input,
        &id,
        View::Full,
        |new| record.retried_by(new),
    )
    .await;
    // The old record now names its retry, after a restart too.
    session.keep_record(&record, &app.runtime.store).await;
    answer
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
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (`<turnId>:<seq>` of this turn)", pattern = "^[0-9a-fA-F-]{36}:[0-9]+$"),
    ),
    responses(
        (status = 200, description = "The turn's events", content_type = "text/event-stream", body = TurnSseEvent),
        (status = 204, description = "The turn has ended and no event is left after `Last-Event-ID`"),
        (status = 400, description = "`Last-Event-ID` is not of the form `<turnId>:<seq>` with this turn's id (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`), or no such turn kept (`turn_not_found`)", body = ErrorBody),
    )
)]
async fn turn_events(
    SessionPath { session, .. }: SessionPath,
    Path((_, turn_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = turn_of(&session, &turn_id)?;
    if record.events.is_forgotten() {
        return Err(ApiError::TurnNotFound(turn_id));
    }
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(':'))
            .filter(|(turn, _)| Uuid::parse_str(turn).is_ok_and(|turn| turn == record.id))
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
    SessionPath { session, .. }: SessionPath,
    body: Result<OptionalJsonBody<CancelRequest>, ApiError>,
) -> Result<axum::Json<CancelResponse>, ApiError> {
    let OptionalJsonBody(body) = body?;
    if body.waiting {
        session.turn_lock().cancel_waiting();
    }
    let cancelled = session.turn_lock().cancel_running(body.mode);
    tracing::info!(session_id = %session.id, turn_id = ?cancelled, mode = ?body.mode, "cancel");
    Ok(axum::Json(CancelResponse {
        success: true,
        cancelled,
    }))
}
