//! A turn's events as Server-Sent Events: `id: <turnId>:<seq>`, an event name, and a
//! JSON `data:` line. Used by streaming writes and by the replay route; the stream ends
//! after the turn's last event.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::responses;
use crate::error::{ApiError, ErrorDetail};
use crate::session::Session;
use crate::session::events::TurnEvent;
use crate::session::turn::TurnResult;
use crate::session::turns::TurnRecord;

/// How often an idle stream sends a comment so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Whether the client asked for Server-Sent Events with its `Accept` header.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The events of `record` after sequence number `after`, live until the turn ends.
pub fn events(session: Arc<Session>, record: &Arc<TurnRecord>, after: usize) -> Response {
    let turn_id = record.id;
    let stream = record
        .events
        .follow(after)
        .map(move |(seq, event)| Ok::<_, Infallible>(sse_event(&session, turn_id, seq, &event)));
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    responses::with_turn_id(&mut response, turn_id);
    response
}

fn sse_event(session: &Session, turn_id: Uuid, seq: usize, event: &TurnEvent) -> Event {
    let (name, data) = event_data(session, turn_id, event);
    Event::default()
        .id(format!("{turn_id}:{seq}"))
        .event(name)
        .data(data.to_string())
}

/// The name and JSON data of one event.
fn event_data(session: &Session, turn_id: Uuid, event: &TurnEvent) -> (&'static str, Value) {
    match event {
        TurnEvent::Queued { position } => (
            "turn.queued",
            json!({"turnId": turn_id, "position": position}),
        ),
        TurnEvent::Started => ("turn.started", json!({"turnId": turn_id})),
        TurnEvent::TextDelta(text) => ("text.delta", json!({"text": text})),
        TurnEvent::ToolCall(call) => ("tool_call", json!(call)),
        TurnEvent::Completed { result, commit } => {
            let session = session
                .render(Some(*commit), |view| serde_json::to_value(view))
                .unwrap_or(Value::Null);
            (
                "turn.completed",
                json!({"result": result, "session": session}),
            )
        }
        TurnEvent::Failed(error) => {
            let detail = ApiError::from_turn(error.clone(), &session.id.to_string()).detail();
            ("turn.failed", json!({"error": detail}))
        }
        TurnEvent::Cancelled { result, .. } => ("turn.cancelled", json!({"result": result})),
    }
}

/// A stream of events, for the OpenAPI document: each SSE event's `data` is one of
/// these, named by its `event:` line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TurnEventData {
    /// `turn.queued`: the turn waits; position 1 is next. Only if it had to wait.
    Queued(QueuedData),
    /// `turn.started`: the turn took the turn lock.
    Started(StartedData),
    /// `text.delta`: more reply text, as the provider sent it.
    TextDelta(TextDeltaData),
    /// `tool_call`: a complete tool call.
    ToolCall(crate::session::ToolCall),
    /// `turn.completed`: committed; the session as of the commit.
    Completed(CompletedData),
    /// `turn.failed`: nothing committed.
    Failed(FailedData),
    /// `turn.cancelled`: stopped by a cancel; the partial reply.
    Cancelled(CancelledData),
}

/// `turn.queued`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedData {
    #[schema(value_type = String, format = Uuid)]
    pub turn_id: Uuid,
    pub position: usize,
}

/// `turn.started`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartedData {
    #[schema(value_type = String, format = Uuid)]
    pub turn_id: Uuid,
}

/// `text.delta`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextDeltaData {
    pub text: String,
}

/// `turn.completed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompletedData {
    /// `null` for tool outputs.
    pub result: Option<TurnResult>,
    #[schema(value_type = crate::session::SessionView)]
    pub session: Value,
}

/// `turn.failed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedData {
    pub error: ErrorDetail,
}

/// `turn.cancelled`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelledData {
    pub result: TurnResult,
}
