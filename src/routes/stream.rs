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
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::responses::{self, HistoryInAnswer};
use crate::error::{ApiError, ErrorDetail};
use crate::json_text;
use crate::session::events::TurnEvent;
use crate::session::records::TurnRecord;
use crate::session::turn::TurnResult;
use crate::session::{Session, SessionView};

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
    let history = HistoryInAnswer::new(session.clone());
    let history_len = history.len.clone();
    let stream = record.events.follow(after).map(move |(seq, event)| {
        if let TurnEvent::Completed { commit, .. } = event.as_ref() {
            let _ = history_len.set(commit.len);
        }
        Ok::<_, Infallible>(sse_event(&session, turn_id, seq, &event))
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    responses::with_turn_id(&mut response, turn_id);
    response.extensions_mut().insert(history);
    response
}

fn sse_event(session: &Session, turn_id: Uuid, seq: usize, event: &TurnEvent) -> Event {
    let (name, data) = event_data(session, turn_id, event);
    Event::default()
        .id(format!("{turn_id}:{seq}"))
        .event(name)
        .data(data.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

/// The name and JSON data of one event.
fn event_data(
    session: &Session,
    turn_id: Uuid,
    event: &TurnEvent,
) -> (&'static str, serde_json::Result<String>) {
    use serde_json::to_string;
    match event {
        TurnEvent::Waiting { position } => (
            "turn.waiting",
            to_string(&WaitingData {
                turn_id,
                position: *position,
            }),
        ),
        TurnEvent::Started => ("turn.started", to_string(&StartedData { turn_id })),
        TurnEvent::TextDelta(text) => ("text.delta", to_string(&TextDeltaData { text })),
        TurnEvent::ToolCall(call) => ("tool_call", to_string(call)),
        TurnEvent::Completed { result, commit } => (
            "turn.completed",
            session.render(Some(*commit), |view| {
                let data = CompletedData {
                    result: result.as_deref(),
                    session: view,
                };
                Ok(responses::JsonBody::of(&data).into_string())
            }),
        ),
        TurnEvent::Failed(error) => {
            let error = ApiError::from_turn(error.clone(), &session.id.to_string()).detail();
            ("turn.failed", to_string(&FailedData { error }))
        }
        TurnEvent::Cancelled { result, .. } => {
            ("turn.cancelled", to_string(&CancelledData { result }))
        }
    }
}

/// For the OpenAPI document: one Server-Sent Event of a turn, as a client's parser
/// sees it.
#[derive(Debug)]
pub struct TurnSseEvent;

/// The event names, in the order they can come.
const EVENT_NAMES: [&str; 7] = [
    "turn.waiting",
    "turn.started",
    "text.delta",
    "tool_call",
    "turn.completed",
    "turn.failed",
    "turn.cancelled",
];

impl PartialSchema for TurnSseEvent {
    fn schema() -> RefOr<Schema> {
        sse_event_schema(SseEventSchema {
            description: "One event: `id: <turnId>:<seq>` (seq from 1, no gaps), its name, and a JSON `data:` line whose shape the name gives (see `TurnEventData`). The stream ends after `turn.completed`, `turn.failed` or `turn.cancelled`.",
            id_pattern: "^[0-9a-fA-F-]{36}:[1-9][0-9]*$",
            id_form: "`<turnId>:<seq>`",
            id_required: true,
            names: &EVENT_NAMES,
            data: "JSON: one of `TurnEventData`, by the event's name",
        })
    }
}

/// What tells one stream's events from another's in the OpenAPI document.
pub struct SseEventSchema {
    pub description: &'static str,
    pub id_pattern: &'static str,
    pub id_form: &'static str,
    pub id_required: bool,
    pub names: &'static [&'static str],
    pub data: &'static str,
}

/// One Server-Sent Event as a client's parser sees it: an `id`, an `event` name, a JSON
/// `data` line.
pub fn sse_event_schema(event: SseEventSchema) -> RefOr<Schema> {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let schema = ObjectBuilder::new()
        .description(Some(event.description))
        .property(
            "id",
            string()
                .pattern(Some(event.id_pattern))
                .description(Some(event.id_form)),
        )
        .property(
            "event",
            string().enum_values(Some(event.names.iter().copied())),
        )
        .property(
            "data",
            string()
                .content_media_type("application/json")
                .description(Some(event.data)),
        );
    let schema = if event.id_required {
        schema.required("id")
    } else {
        schema
    };
    schema.required("event").required("data").into()
}

impl ToSchema for TurnSseEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("TurnEventData".to_owned(), TurnEventData::schema()));
        TurnEventData::schemas(schemas);
    }
}

/// For the OpenAPI document: each SSE event's `data` is one of these, named by its
/// `event:` line.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TurnEventData<'a> {
    /// `turn.waiting`: the turn waits; position 1 is next. Only if it had to wait.
    Waiting(WaitingData),
    /// `turn.started`: the turn took the turn lock.
    Started(StartedData),
    /// `text.delta`: more reply text, as the provider sent it.
    TextDelta(TextDeltaData<'a>),
    /// `tool_call`: a complete tool call.
    ToolCall(crate::message::ToolCall),
    /// `turn.completed`: committed; the session as of the commit.
    Completed(CompletedData<'a>),
    /// `turn.failed`: nothing committed.
    Failed(FailedData),
    /// `turn.cancelled`: stopped by a cancel; the partial reply.
    Cancelled(CancelledData<'a>),
}

/// `turn.waiting`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingData {
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
pub struct TextDeltaData<'a> {
    pub text: &'a str,
}

/// `turn.completed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompletedData<'a> {
    /// `null` for tool outputs.
    pub result: Option<&'a TurnResult>,
    pub session: &'a SessionView<'a>,
}

impl json_text::WriteJson for CompletedData<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self.result {
            Some(result) => {
                out.extend_from_slice(br#"{"result":"#);
                result.write_json(out);
            }
            None => out.extend_from_slice(br#"{"result":null"#),
        }
        out.extend_from_slice(br#","session":"#);
        self.session.write_json(out);
        out.push(b'}');
    }
}

/// `turn.failed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedData {
    pub error: ErrorDetail,
}

/// `turn.cancelled`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelledData<'a> {
    pub result: &'a TurnResult,
}
