//! Success bodies. They borrow the session snapshot under its read lock and are
//! serialized there (see `session::view`), so answering copies no history.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::session::turn::{TurnOutcome, TurnResult};
use crate::session::{Session, SessionSummary, SessionView};

/// Header naming the turn a write ran as.
pub const TURN_ID_HEADER: &str = "x-turn-id";

/// `{success: true, session}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse<'a> {
    /// Always `true`.
    pub success: bool,
    pub session: &'a SessionView<'a>,
}

/// `{success: true, sessions}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionListResponse<'a> {
    /// Always `true`.
    pub success: bool,
    pub sessions: Vec<SessionSummary<'a>>,
}

/// `{success: true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessResponse {
    /// Always `true`.
    pub success: bool,
}

/// `{success: true, turnId, result, session}`: a write that generated a reply.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteResponse<'a> {
    /// Always `true`.
    pub success: bool,
    /// The id of the turn this write ran as (also in the `x-turn-id` header).
    #[schema(value_type = String, format = Uuid)]
    pub turn_id: Uuid,
    pub result: &'a TurnResult,
    /// The session as of this write's commit.
    pub session: &'a SessionView<'a>,
}

/// `{success: true, turnId, session}`: a write without generation (tool outputs).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolOutputResponse<'a> {
    /// Always `true`.
    pub success: bool,
    /// The id of the turn this write ran as (also in the `x-turn-id` header).
    #[schema(value_type = String, format = Uuid)]
    pub turn_id: Uuid,
    /// The session as of this write's commit.
    pub session: &'a SessionView<'a>,
}

/// The session as it is now, with `status`.
pub fn session(session: &Session, status: StatusCode) -> Response {
    session.render(None, |view| {
        (
            status,
            axum::Json(SessionResponse {
                success: true,
                session: view,
            }),
        )
            .into_response()
    })
}

/// The answer to a committed write: the session as of its commit.
pub fn write(session: &Session, outcome: &TurnOutcome) -> Response {
    let mut response = session.render(Some(outcome.commit), |view| match &outcome.result {
        Some(result) => axum::Json(WriteResponse {
            success: true,
            turn_id: outcome.turn_id,
            result,
            session: view,
        })
        .into_response(),
        None => axum::Json(ToolOutputResponse {
            success: true,
            turn_id: outcome.turn_id,
            session: view,
        })
        .into_response(),
    });
    with_turn_id(&mut response, outcome.turn_id);
    response
}

/// Adds the `x-turn-id` header.
pub fn with_turn_id(response: &mut Response, turn_id: Uuid) {
    if let Ok(value) = HeaderValue::from_str(&turn_id.to_string()) {
        response.headers_mut().insert(TURN_ID_HEADER, value);
    }
}
