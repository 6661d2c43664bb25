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

use crate::json_text::{self, WriteJson};
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
        let answer = SessionResponse {
            success: true,
            session: view,
        };
        let mut response = (status, JsonBody::of(&answer)).into_response();
        with_etag(&mut response, view.head.version);
        response
            .extensions_mut()
            .insert(HistoryInAnswer::of(session, view.messages.len()));
        response
    })
}

/// Room for an answer's frame around its session (and result).
const FRAME_SIZE_HINT: usize = 96;

impl WriteJson for SessionResponse<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"success":true,"session":"#);
        self.session.write_json(out);
        out.push(b'}');
    }

    fn size_hint(&self) -> usize {
        FRAME_SIZE_HINT + self.session.json_size_hint()
    }
}

impl WriteJson for WriteResponse<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_turn_answer(out, self.turn_id, Some(self.result), self.session);
    }

    fn size_hint(&self) -> usize {
        FRAME_SIZE_HINT + self.result.json_size_hint() + self.session.json_size_hint()
    }
}

impl WriteJson for ToolOutputResponse<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        write_turn_answer(out, self.turn_id, None, self.session);
    }

    fn size_hint(&self) -> usize {
        FRAME_SIZE_HINT + self.session.json_size_hint()
    }
}

/// `{success, turnId, result?, session}`: the answer to a write, with or without a
/// generation's result.
fn write_turn_answer(
    out: &mut Vec<u8>,
    turn_id: Uuid,
    result: Option<&TurnResult>,
    session: &WrittenSession<'_>,
) {
    out.extend_from_slice(br#"{"success":true,"turnId":"#);
    json_text::write_uuid(out, turn_id);
    if let Some(result) = result {
        out.extend_from_slice(br#","result":"#);
        result.write_json(out);
    }
    out.extend_from_slice(br#","session":"#);
    session.write_json(out);
    out.push(b'}');
}

/// A JSON answer, written by hand (its [`WriteJson`]; the same bytes serde writes for
/// its type, which derives `Serialize` for the spec and the tests).
#[derive(Debug)]
pub struct JsonBody(Vec<u8>);

impl JsonBody {
    pub fn of(answer: &impl WriteJson) -> Self {
        // Room for the whole answer at once where it says how much (at least for a
        // small one), so that it is not copied as it grows.
        let mut out = Vec::with_capacity(answer.size_hint().max(512));
        answer.write_json(&mut out);
        Self(out)
    }

    /// The JSON text (for an event's data).
    pub fn into_string(self) -> String {
        // Every part is written from `str`s and ASCII, so the bytes are kept as they are
        // (the lossy copy is never made).
        String::from_utf8(self.0)
            .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
    }
}

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

/// `ETag: "<version>"`: the session version a response shows, for `If-Match`.
pub fn with_etag(response: &mut Response, version: u64) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut quoted = [b'"'; 22]; // 20 digits at most, between quotes
    quoted[1..=digits.len()].copy_from_slice(digits);
    if let Ok(value) = HeaderValue::from_bytes(&quoted[..digits.len() + 2]) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// The answer to a committed write: the session as of its commit, whole or as a delta.
pub fn write(session: &Arc<Session>, outcome: &TurnOutcome, view: View) -> Response {
    let answer = |written: &WrittenSession<'_>| {
        match &outcome.result {
            Some(result) => JsonBody::of(&WriteResponse {
                success: true,
                turn_id: outcome.turn_id,
                result,
                session: written,
            }),
            None => JsonBody::of(&ToolOutputResponse {
                success: true,
                turn_id: outcome.turn_id,
                session: written,
            }),
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
    let mut text = Uuid::encode_buffer();
    if let Ok(value) = HeaderValue::from_str(turn_id.hyphenated().encode_lower(&mut text)) {
        response.headers_mut().insert(TURN_ID_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Defaults, ForkedFrom, Message, Role, Timestamp, Tool, ToolCall};
    use crate::provider::{FinishReason, Usage};
    use crate::session::{EncodedHistory, SessionHead, SessionStatus};

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

    fn head<'a>(
        defaults: &'a Defaults,
        tools: &'a [Tool],
        metadata: &'a serde_json::Map<String, serde_json::Value>,
        at: Timestamp,
        busy: bool,
    ) -> SessionHead<'a> {
        SessionHead {
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            provider: "echo",
            model: "echo-\"1\"",
            defaults,
            tools,
            metadata,
            created_at: at,
            updated_at: at,
            version: 3,
            status: SessionStatus {
                busy,
                waiting: usize::from(busy) * 2,
                running_turn_id: busy.then(Uuid::nil),
                started_at: busy.then_some(at),
            },
            forked_from: busy.then_some(ForkedFrom {
                session_id: Uuid::max(),
                version: 7,
                up_to: 2,
            }),
        }
    }

    fn result(rich: bool) -> TurnResult {
        TurnResult {
            text: "ok \"quoted\"\n".into(),
            tool_calls: if rich {
                history()[2].tool_calls.clone()
            } else {
                Vec::new()
            },
            finish_reason: if rich {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            },
            usage: Usage {
                input_tokens: 12,
                output_tokens: u64::MAX,
            },
            provider: "echo".into(),
            model: "echo-1".into(),
            messages_sent: rich.then_some(3),
            joined: rich.then(|| vec![Uuid::nil(), Uuid::max()]),
        }
    }

    fn same_as_serde(answer: &(impl WriteJson + Serialize)) {
        assert_eq!(
            String::from_utf8(JsonBody::of(answer).0).unwrap(),
            serde_json::to_string(answer).unwrap()
        );
    }

    #[test]
    fn answers_written_by_hand_are_the_bytes_serde_writes() {
        let messages = history();
        let at = messages[0].created_at;
        let defaults = Defaults {
            temperature: Some(0.5),
            max_tokens: Some(10),
            ..Defaults::default()
        };
        let tools: Vec<Tool> = serde_json::from_value(serde_json::json!([
            {"name": "get_weather", "description": "The weather \"now\""}
        ]))
        .unwrap();
        let metadata = serde_json::json!({"user": "ann", "n": 1});
        let metadata = metadata.as_object().unwrap();
        let plain = (Defaults::default(), serde_json::Map::new());
        for rich in [false, true] {
            let head = if rich {
                head(&defaults, &tools, metadata, at, true)
            } else {
                head(&plain.0, &[], &plain.1, at, false)
            };
            let result = result(rich);
            for history in [&messages[..0], &messages[..]] {
                // The history kept as JSON writes what the messages write.
                let budget = crate::memory::MemoryBudget::unbounded();
                let mut kept = EncodedHistory::new(budget.account(None).caches());
                let kept = kept.members(history);
                assert!(kept.is_some());
                for json in [None, kept] {
                    let view = SessionView {
                        head,
                        messages: history,
                        messages_json: json,
                    };
                    same_as_serde(&SessionResponse {
                        success: true,
                        session: &view,
                    });
                    for result in [None, Some(&result)] {
                        same_as_serde(&crate::routes::stream::CompletedData {
                            result,
                            session: &view,
                        });
                    }
                }
                for (whole, json) in [(None, None), (Some(history), None), (Some(history), kept)] {
                    let written = WrittenSession {
                        head,
                        new_messages: &history[history.len().min(2)..],
                        messages: whole,
                        messages_json: json,
                    };
                    same_as_serde(&WriteResponse {
                        success: true,
                        turn_id: Uuid::nil(),
                        result: &result,
                        session: &written,
                    });
                    same_as_serde(&ToolOutputResponse {
                        success: true,
                        turn_id: Uuid::max(),
                        session: &written,
                    });
                }
            }
        }
    }
}
