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

use crate::message::{self, Message};
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
        let (head, history) = view.split_history();
        let answer = SessionResponse {
            success: true,
            session: &head,
        };
        let mut response = (status, json_with_history(&answer, history)).into_response();
        with_etag(&mut response, view.head.version);
        if let Some(history) = history {
            response
                .extensions_mut()
                .insert(HistoryInAnswer::of(session, history.len()));
        }
        response
    })
}

/// `answer` as JSON, with `history` as its session's `messages`: the history written
/// by hand ([`message::write_history`], the bulk of a full answer, written on every
/// turn), the rest by serde. The session stands last in every answer that carries one,
/// and `messages` last in the session, so `answer` is serialised without them and
/// `,"messages":[…]` goes in before its two closing braces: the same bytes serde writes
/// for the whole.
pub fn json_with_history(answer: &impl Serialize, history: Option<&[Message]>) -> JsonBody {
    // Room for the rest; `write_history` makes room for the history.
    let mut out = Vec::with_capacity(512);
    if let Err(error) = serde_json::to_writer(&mut out, answer) {
        return JsonBody(Err(error));
    }
    if let Some(history) = history {
        let Some(closing) = out.len().checked_sub(2).filter(|&at| &out[at..] == b"}}") else {
            return JsonBody(Err(serde::ser::Error::custom(
                "the answer does not end with its session",
            )));
        };
        out.truncate(closing);
        out.extend_from_slice(b",\"messages\":");
        message::write_history(&mut out, history);
        out.extend_from_slice(b"}}");
    }
    JsonBody(Ok(out))
}

/// A JSON answer written by [`json_with_history`], or why it could not be (a 500).
#[derive(Debug)]
pub struct JsonBody(serde_json::Result<Vec<u8>>);

impl JsonBody {
    /// The JSON text (for an event's data).
    pub fn into_string(self) -> serde_json::Result<String> {
        String::from_utf8(self.0?).map_err(serde::ser::Error::custom)
    }
}

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(bytes) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                bytes,
            )
                .into_response(),
            Err(error) => crate::error::ApiError::Internal(error.to_string()).into_response(),
        }
    }
}

/// `ETag: "<version>"`: the session version a response shows, for `If-Match`.
pub fn with_etag(response: &mut Response, version: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// The answer to a committed write: the session as of its commit, whole or as a delta.
pub fn write(session: &Arc<Session>, outcome: &TurnOutcome, view: View) -> Response {
    let answer = |written: &WrittenSession<'_>| {
        let (head, history) = written.split_history();
        match &outcome.result {
            Some(result) => json_with_history(
                &WriteResponse {
                    success: true,
                    turn_id: outcome.turn_id,
                    result,
                    session: &head,
                },
                history,
            ),
            None => json_with_history(
                &ToolOutputResponse {
                    success: true,
                    turn_id: outcome.turn_id,
                    session: &head,
                },
                history,
            ),
        }
        .into_response()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Defaults, Role, Timestamp, ToolCall};
    use crate::provider::{FinishReason, Usage};
    use crate::session::{SessionHead, SessionStatus};

    fn history() -> Vec<Message> {
        let at = Timestamp::from_unix_millis(1_795_000_000_123).unwrap();
        let mut called = Message::text(Role::Assistant, "", at);
        called.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        });
        vec![
            Message::text(Role::System, "Be \"brief\".\n", at),
            Message::text(Role::User, "héllo 🦀", at),
            called,
            Message::tool_output("call_1", "{\"temp\":3}", at),
        ]
    }

    #[test]
    fn answers_with_a_history_written_apart_are_the_bytes_serde_writes_for_the_whole() {
        let (defaults, metadata) = (Defaults::default(), serde_json::Map::new());
        let messages = history();
        let head = SessionHead {
            id: Uuid::nil(),
            provider: "echo",
            model: "echo-1",
            defaults: &defaults,
            tools: &[],
            metadata: &metadata,
            created_at: messages[0].created_at,
            updated_at: messages[0].created_at,
            version: 3,
            status: SessionStatus {
                busy: false,
                waiting: 0,
                running_turn_id: None,
                started_at: None,
            },
            forked_from: None,
        };
        let written = |history| WrittenSession {
            head,
            new_messages: &messages[2..],
            messages: history,
        };
        let result = TurnResult {
            text: "ok".into(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            provider: "echo".into(),
            model: "echo-1".into(),
            messages_sent: None,
            joined: None,
        };
        for history in [&messages[..0], &messages[..]] {
            let whole = written(Some(history));
            let (apart, split) = whole.split_history();
            assert_eq!(
                json_with_history(&answer_of(&result, &apart), split)
                    .0
                    .unwrap(),
                serde_json::to_vec(&answer_of(&result, &whole)).unwrap()
            );
            let view = SessionView {
                head,
                messages: Some(history),
            };
            let (apart, split) = view.split_history();
            assert_eq!(
                json_with_history(
                    &SessionResponse {
                        success: true,
                        session: &apart
                    },
                    split
                )
                .0
                .unwrap(),
                serde_json::to_vec(&SessionResponse {
                    success: true,
                    session: &view
                })
                .unwrap()
            );
        }
        let delta = written(None);
        assert_eq!(
            json_with_history(&answer_of(&result, &delta), None)
                .0
                .unwrap(),
            serde_json::to_vec(&answer_of(&result, &delta)).unwrap()
        );
    }

    fn answer_of<'a>(result: &'a TurnResult, session: &'a WrittenSession<'a>) -> WriteResponse<'a> {
        WriteResponse {
            success: true,
            turn_id: Uuid::nil(),
            result,
            session,
        }
    }
}
