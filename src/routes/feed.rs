//! A session's live feed as Server-Sent Events (`GET /text/session/{id}/events`), and
//! the token a browser's `EventSource` opens it with when API keys are on.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::SessionPath;
use super::stream::{SseEventSchema, sse_event_schema};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::keys::Caller;
use crate::message::{Message, Timestamp, ToolCall};
use crate::metrics::Metrics;
use crate::session::Session;
use crate::session::events::TurnEvent;
use crate::session::feed::{FeedEvent, FeedItem, FeedStart};
use crate::session::runtime::Runtime;
use crate::session::turn::TurnResult;

/// How often an idle feed sends a comment so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(session_events))
        .routes(routes!(events_token))
}

/// Where the feed starts.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Follow from this committed version on (as a `GET` of the session showed it):
    /// every later commit and event is sent. Same as `Last-Event-ID: <version>:0`.
    version: Option<u64>,
    /// Resume after this event (`<version>:<seq>`), for a client that cannot send the
    /// `Last-Event-ID` header (a new `EventSource`); the header wins.
    #[param(pattern = "^[0-9]+:[0-9]+$")]
    last_event_id: Option<String>,
    /// An events token of this session (`POST …/events/token`): stands for the API key
    /// that asked for it, for a browser's `EventSource` (read by the API-key layer).
    #[allow(dead_code)]
    #[serde(rename = "access_token")]
    access_token: Option<String>,
}

/// Follow the session live.
///
/// Every turn of the session as it happens, for any number of followers (another tab, a
/// second device): `turn.waiting`, `turn.started`, `text.delta`, `tool_call`, the turn's
/// end (`turn.completed`, `turn.failed`, `turn.cancelled`), and `session.committed`
/// `{version, newMessages}` after each commit (before the `turn.completed` of the turn
/// that made it). Every event's data carries the `turnId` it belongs to; a turn writers
/// joined runs under its first writer's id, its start and end naming them all in
/// `joined`. Event ids are
/// `<version>:<seq>`: the committed version, and the place since that commit (a commit is
/// `<version>:0`). With `Last-Event-ID` (or `?lastEventId=`, or `?version=`) the feed
/// resumes after that event: every commit missed since is sent first. A follower that
/// falls too far behind (`FEED_EVENTS`, `FEED_BYTES`), or resumes from a version the feed
/// no longer holds (before a restart, or moved to another process), gets
/// `session.resync` `{version}` and the stream ends: read the session again and follow
/// from its version. The stream also ends when the session is deleted. Without
/// `Last-Event-ID` or `version` it starts with what happens next.
#[utoipa::path(
    get, path = "/text/session/{id}/events", tag = "turns",
    params(
        ("id" = String, Path, description = "Session id (UUID)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (`<version>:<seq>`)", pattern = "^[0-9]+:[0-9]+$"),
        FeedQuery,
    ),
    responses(
        (status = 200, description = "The session's events, live", content_type = "text/event-stream", body = FeedSseEvent),
        (status = 400, description = "`Last-Event-ID`, `lastEventId` or `version` malformed (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
    )
)]
async fn session_events(
    State(app): State<AppState>,
    SessionPath { session, .. }: SessionPath,
    query: Result<Query<FeedQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let start = feed_start(&headers, &query)?;
    app.runtime.metrics.feed_followers.inc();
    let following = Following(app.runtime.clone());
    let rendering = session.clone();
    let stream = session
        .feed()
        .follow(start)
        .map(move |item| Ok::<_, Infallible>(sse_event(&rendering, &item, &following.0.metrics)));
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Counts a follower while its stream lives.
struct Following(std::sync::Arc<Runtime>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.metrics.feed_followers.dec();
    }
}

/// Where a follower starts: `Last-Event-ID`, else `?lastEventId=`, else `?version=`,
/// else now.
fn feed_start(headers: &HeaderMap, query: &FeedQuery) -> Result<FeedStart, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|value| value.to_str().unwrap_or("").trim().to_owned());
    let (field, id) = match (&header, &query.last_event_id) {
        (Some(id), _) => ("Last-Event-ID", id.as_str()),
        (None, Some(id)) => ("lastEventId", id.as_str()),
        (None, None) => {
            return Ok(match query.version {
                Some(version) => FeedStart::After { version, seq: 0 },
                None => FeedStart::Now,
            });
        }
    };
    id.split_once(':')
        .and_then(|(version, seq)| Some((version.parse().ok()?, seq.parse().ok()?)))
        .map(|(version, seq)| FeedStart::After { version, seq })
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "{field}: must be `<version>:<seq>` as a feed event's id, e.g. `3:0`; got `{id}`"
            ))
        })
}

fn sse_event(session: &Session, item: &FeedItem, metrics: &Metrics) -> Event {
    let (id, name, data) = match item {
        FeedItem::Resync { version } => {
            metrics.feed_resyncs.inc();
            (
                None,
                "session.resync",
                serde_json::to_string(&ResyncData { version: *version }),
            )
        }
        FeedItem::Event {
            version,
            seq,
            event,
        } => {
            let (name, data) = event_data(session, event);
            (Some(format!("{version}:{seq}")), name, data)
        }
    };
    let event = Event::default()
        .event(name)
        .data(data.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    match id {
        Some(id) => event.id(id),
        None => event,
    }
}

fn event_data(session: &Session, event: &FeedEvent) -> (&'static str, serde_json::Result<String>) {
    use serde_json::to_string;
    let (turn_id, event, joined) = match event {
        FeedEvent::Committed { turn_id, commit } => {
            return (
                "session.committed",
                session.read(|history| {
                    let end = commit.len.min(history.messages.len());
                    to_string(&CommittedData {
                        version: commit.version,
                        turn_id: *turn_id,
                        updated_at: commit.updated_at,
                        new_messages: &history.messages[commit.from.min(end)..end],
                    })
                }),
            );
        }
        FeedEvent::Turn {
            turn_id,
            event,
            joined,
        } => (*turn_id, event.as_ref(), joined.as_deref()),
    };
    let turn = |data: TurnData<'_>| {
        to_string(&FeedTurnData {
            turn_id,
            joined,
            data,
        })
    };
    match event {
        TurnEvent::Waiting { position } => (
            "turn.waiting",
            turn(TurnData::Waiting {
                position: *position,
            }),
        ),
        TurnEvent::Started => ("turn.started", turn(TurnData::Started {})),
        TurnEvent::TextDelta(text) => ("text.delta", turn(TurnData::Text { text })),
        TurnEvent::ToolCall(call) => ("tool_call", turn(TurnData::ToolCall(call))),
        TurnEvent::Completed { result, .. } => (
            "turn.completed",
            turn(TurnData::Result {
                result: result.as_deref(),
            }),
        ),
        TurnEvent::Cancelled { result, .. } => (
            "turn.cancelled",
            turn(TurnData::Result {
                result: Some(result),
            }),
        ),
        TurnEvent::Failed(error) => {
            let error = ApiError::from_turn(error.clone(), &session.id.to_string()).detail();
            ("turn.failed", turn(TurnData::Failed { error }))
        }
    }
}

/// A turn's event in the feed: its data as in the turn's own stream, plus `turnId`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FeedTurnData<'a> {
    turn_id: Uuid,
    /// On the start and end of a turn writers joined: their turn ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<&'a [Uuid]>,
    #[serde(flatten)]
    data: TurnData<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TurnData<'a> {
    Waiting { position: usize },
    Started {},
    Text { text: &'a str },
    ToolCall(&'a ToolCall),
    Result { result: Option<&'a TurnResult> },
    Failed { error: ErrorDetail },
}

/// `session.committed`: what a commit appended.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommittedData<'a> {
    /// The session's version after the commit.
    pub version: u64,
    /// The turn that committed (for a joined turn, its first writer).
    #[schema(value_type = String, format = Uuid)]
    pub turn_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The messages the commit appended, in order.
    pub new_messages: &'a [Message],
}

/// `session.resync`: the feed could not go on; read the session and follow again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResyncData {
    /// The session's version now.
    pub version: u64,
}

/// For the OpenAPI document: one event of the live feed.
#[derive(Debug)]
pub struct FeedSseEvent;

const FEED_EVENT_NAMES: [&str; 9] = [
    "turn.waiting",
    "turn.started",
    "text.delta",
    "tool_call",
    "turn.completed",
    "turn.failed",
    "turn.cancelled",
    "session.committed",
    "session.resync",
];

impl PartialSchema for FeedSseEvent {
    fn schema() -> RefOr<Schema> {
        sse_event_schema(SseEventSchema {
            description: "One event: `id: <version>:<seq>` (none on `session.resync`), its name, and a JSON `data:` line. Turn events have the data of the same event in a turn's own stream (`TurnEventData`) plus `turnId` (and, on the start and end of a turn writers joined, `joined`: their turn ids), except `turn.completed`, whose `session` is left out (the `session.committed` before it has the new messages). `session.committed` is `CommittedData`; `session.resync` is `ResyncData`, and ends the stream.",
            id_pattern: "^[0-9]+:[0-9]+$",
            id_form: "`<version>:<seq>`",
            id_required: false,
            names: &FEED_EVENT_NAMES,
            data: "JSON, by the event's name",
        })
    }
}

impl ToSchema for FeedSseEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("CommittedData".to_owned(), CommittedData::schema()));
        CommittedData::schemas(schemas);
        schemas.push(("ResyncData".to_owned(), ResyncData::schema()));
    }
}

/// `{success, token, expiresAt, url}`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsTokenResponse {
    /// Always `true`.
    pub success: bool,
    /// Pass as `?access_token=` to this session's `…/events` or `…/turns/{turnId}/events`.
    pub token: String,
    /// Until when a stream can be opened with it (an open stream is not cut then).
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// The session's feed with the token, ready for `new EventSource(url)`.
    pub url: String,
}

/// Get a token to open this session's events from a browser.
///
/// A browser's `EventSource` cannot send `Authorization`. With API keys on, ask for a
/// token here (with your key), then open `…/events?access_token=<token>` (or a turn's
/// `…/turns/{turnId}/events?access_token=<token>`). The token reads only this session's
/// events, as the key that asked for it, and opens streams until `expiresAt`
/// (`EVENTS_TOKEN_TTL_SECS`, default 600); it is never logged. Without API keys the
/// events need no token, and this still answers one.
#[utoipa::path(
    post, path = "/text/session/{id}/events/token", tag = "turns",
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses(
        (status = 200, description = "A token for this session's events", body = EventsTokenResponse),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
    )
)]
async fn events_token(
    State(app): State<AppState>,
    SessionPath { session, .. }: SessionPath,
    caller: Caller,
) -> axum::Json<EventsTokenResponse> {
    let ttl = app.events_token_ttl;
    let expires_at = Timestamp::from_unix_millis(
        Timestamp::now().unix_millis() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
    )
    .unwrap_or_else(Timestamp::now);
    let expires = u64::try_from(expires_at.unix_millis() / 1000).unwrap_or(0);
    let token = app.api_keys.events_token(session.id, caller, expires);
    axum::Json(EventsTokenResponse {
        success: true,
        url: format!("/text/session/{}/events?access_token={token}", session.id),
        token,
        expires_at,
    })
}
