//! Success bodies. They borrow the session snapshot under its read lock and are
//! serialized there (see `session::view`), so answering copies no history. A turn
//! record's body is `turn.rs`.

mod turn;

use std::sync::{Arc, OnceLock};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub use turn::TurnView;

use crate::session::turn::{TurnOutcome, TurnResult};
use crate::session::{Session, SessionSummary, SessionView, WrittenSession};

/// Header naming the turn a write ran as.
pub const TURN_ID_HEADER: &str = "x-turn-id";

/// `{success: true, session}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse<'a> {
    /// Always `true`.
    pub success: bool,
    pub session: &'a SessionView<'a>,
}

/// `{success: true, sessions, nextCursor}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionListResponse<'a> {
    /// Always `true`.
    pub success: bool,
    /// Newest first.
    pub sessions: Vec<SessionSummary<'a>>,
    /// Pass as `?after=` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// `{success: true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessResponse {
    /// Always `true`.
    pub success: bool,
}

/// `?view=…` on a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// The whole session, `messages` included (the default).
    #[default]
    Full,
    /// Everything but `messages`: `newMessages` (what this write appended) is enough.
    Delta,
}

/// `?view=full|delta`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// `full` (default): the whole session, `messages` included; `delta`: everything but
    /// `messages`. Both have `newMessages`, what this write appended.
    pub view: Option<View>,
}

/// A write's `?view=`, read before its body; an unknown one is a 400.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for View {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(query) =
            axum::extract::Query::<ViewQuery>::from_request_parts(parts, state)
                .await
                .map_err(|e| crate::error::ApiError::InvalidRequest(e.body_text()))?;
        Ok(query.view.unwrap_or_default())
    }
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
    pub session: &'a WrittenSession<'a>,
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
    pub session: &'a WrittenSession<'a>,
}

/// Marks an answer that carries `messages[..len]` of `session` as JSON (`len` known
/// once the answer has it), so that a stored copy of the answer can leave it out.
#[derive(Debug, Clone)]
pub struct HistoryInAnswer {
    pub session: Arc<Session>,
    pub len: Arc<OnceLock<usize>>,
}

impl HistoryInAnswer {
    pub fn new(session: Arc<Session>) -> Self {
        Self {
            session,
            len: Arc::default(),
        }
    }

    fn of(session: &Arc<Session>, len: usize) -> Self {
        let marked = Self::new(session.clone());
        let _ = marked.len.set(len);
        marked
    }
}

/// The session as it is now, with `status`.
pub fn session(session: &Arc<Session>, status: StatusCode) -> Response {
    session.render(None, |view| {
        let mut response = (
            status,
            axum::Json(SessionResponse {
                success: true,
                session: view,
            }),
        )
            .into_response();
        with_etag(&mut response, view.head.version);
        response
            .extensions_mut()
            .insert(HistoryInAnswer::of(session, view.messages.len()));
        response
    })
}

/// `ETag: "<version>"`: the session version a response shows, for `If-Match`.
pub fn with_etag(response: &mut Response, version: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// The answer to a committed write: the session as of its commit, whole or as a delta.
pub fn write(session: &Arc<Session>, outcome: &TurnOutcome, view: View) -> Response {
    let answer = |written: &WrittenSession<'_>| match &outcome.result {
        Some(result) => axum::Json(WriteResponse {
            success: true,
            turn_id: outcome.turn_id,
            result,
            session: written,
        })
        .into_response(),
        None => axum::Json(ToolOutputResponse {
            success: true,
            turn_id: outcome.turn_id,
            session: written,
        })
        .into_response(),
    };
    let full = view == View::Full;
    let mut response = session.render_written(outcome.commit, full, answer);
    if full {
        response
            .extensions_mut()
            .insert(HistoryInAnswer::of(session, outcome.commit.len));
    }
    with_turn_id(&mut response, outcome.turn_id);
    with_etag(&mut response, outcome.commit.version);
    response
}

/// Header with what the service itself added to a turn, in microseconds: the time the
/// turn held its session's turn lock minus the time spent in provider calls.
pub const OVERHEAD_HEADER: &str = "x-overhead-us";

/// Adds the `x-overhead-us` header of an ended turn.
pub fn with_overhead(response: &mut Response, record: &crate::session::records::TurnRecord) {
    if let Some(overhead) = record.overhead() {
        response.headers_mut().insert(
            OVERHEAD_HEADER,
            HeaderValue::from(overhead.as_micros() as u64),
        );
    }
}

/// Adds the `x-turn-id` header.
pub fn with_turn_id(response: &mut Response, turn_id: Uuid) {
    if let Ok(value) = HeaderValue::from_str(&turn_id.to_string()) {
        response.headers_mut().insert(TURN_ID_HEADER, value);
    }
}
