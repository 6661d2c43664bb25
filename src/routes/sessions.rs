//! Create, read, list and delete sessions.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::bodies::{CreateSessionRequest, ForkRequest, Instructions};
use super::extract::{OptionalJsonBody, SessionPath};
use super::responses::{self, SessionListResponse, SessionResponse, SuccessResponse};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::keys::Caller;
use crate::session::{NewSession, Session, SessionSummary};
use crate::store::parse_cursor;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(list_sessions))
        .routes(routes!(fork_session))
}

/// Create a session.
///
/// Every field is optional; an empty body (or none) creates a session with every
/// default. `instructions` become the first system messages.
#[utoipa::path(
    post, path = "/text/session", tag = "sessions",
    request_body(content = Option<CreateSessionRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = SessionResponse),
        (status = 400, description = "A field breaks a rule (`invalid_request`); the message names it", body = ErrorBody),
        (status = 429, description = "Too many sessions, in all or for this API key (`session_limit`), or this API key holds its memory quota (`memory_quota_exceeded`)", body = ErrorBody),
        (status = 503, description = "The service holds its memory budget (`memory_budget_exceeded`), or the store did not commit (`store_unavailable`); see `Retry-After`", body = ErrorBody),
        (status = 413, description = "Body too large (`payload_too_large`)", body = ErrorBody),
        (status = 415, description = "Body is not JSON (`unsupported_media_type`)", body = ErrorBody),
    )
)]
async fn create_session(
    State(app): State<AppState>,
    caller: Caller,
    OptionalJsonBody(body): OptionalJsonBody<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    let new = NewSession {
        provider: body.provider,
        model: body.model,
        instructions: body.instructions.map(Instructions::into_strings),
        defaults: body.defaults.unwrap_or_default(),
        tools: body.tools.unwrap_or_default(),
        metadata: body.metadata.unwrap_or_default(),
    };
    let account = app.memory.account(caller.0);
    let session = Arc::new(new.build(&app.providers, app.settings, caller.0, account)?);
    keep_new(&app, &session).await?;
    tracing::info!(provider = %session.provider_name, "session created");
    Ok(responses::session(&session, StatusCode::CREATED))
}

/// Makes a new session live and stores it, before it is acknowledged: if the store
/// fails, it is not kept.
async fn keep_new(app: &AppState, session: &Arc<Session>) -> Result<(), ApiError> {
    // The new session's messages now count on its key's account: over the quota or the
    // budget, it is dropped again (and its bytes with it).
    session.account.admit(0)?;
    app.sessions
        .insert(session.clone())
        .map_err(ApiError::SessionLimit)?;
    // A fork's first messages are its source's, which the store has.
    let shared = session.forked_from.map_or(0, |fork| fork.up_to);
    let own = session.read(|history| history.messages[shared..].to_vec());
    match app.runtime.store.create(&session.row(), &own).await {
        Ok(epoch) => {
            session.hold(epoch);
            hand_over_to_its_home(app, session).await;
        }
        Err(error) => {
            app.runtime.metrics.store_error(error.kind());
            app.sessions.remove(session.id);
            return Err(error.into());
        }
    }
    tracing::Span::current().record("session_id", session.id.to_string());
    Ok(())
}

/// Fork a session: a new session that starts with its first messages.
///
/// The new session has the source's provider, model, defaults, tools, metadata and
/// owner, and a copy of its first `upTo` committed messages (all when left out); the
/// source is unchanged, and from then on each goes its own way. The answer's session
/// has `forkedFrom: {sessionId, version, upTo}`. This is how a client edits a message
/// and gets a new answer: fork before the message, then send the edited text to the
/// fork. It never waits for a running turn of the source: it forks the last committed
/// history; an `upTo` past its messages is `409 history_too_short`. A durable store
/// shares the source's rows with the fork instead of copying them.
#[utoipa::path(
    post, path = "/text/session/{id}/fork", tag = "sessions",
    params(("id" = String, Path, description = "Session id (UUID) of the source")),
    request_body(content = Option<ForkRequest>, content_type = "application/json"),
    responses(
        (status = 201, description = "The new session", body = SessionResponse),
        (status = 400, description = "The body is not `{upTo?}` (`invalid_request`)", body = ErrorBody),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
        (status = 409, description = "`upTo` is past the messages the session holds (`history_too_short`)", body = ErrorBody),
        (status = 429, description = "Too many sessions, in all or for this API key (`session_limit`), or this API key holds its memory quota (`memory_quota_exceeded`)", body = ErrorBody),
        (status = 503, description = "The service holds its memory budget (`memory_budget_exceeded`), or the store did not commit (`store_unavailable`); see `Retry-After`", body = ErrorBody),
    )
)]
async fn fork_session(
    State(app): State<AppState>,
    SessionPath {
        session: source, ..
    }: SessionPath,
    OptionalJsonBody(body): OptionalJsonBody<ForkRequest>,
) -> Result<Response, ApiError> {
    let account = app.memory.account(source.owner);
    let session = Arc::new(source.fork(body.up_to, app.settings, account)?);
    keep_new(&app, &session).await?;
    tracing::info!(source = %source.id, up_to = ?session.forked_from.map(|f| f.up_to), "session forked");
    Ok(responses::session(&session, StatusCode::CREATED))
}

/// With several processes behind a balancer that sends a session's requests to one of
/// them by its id, a new session is served where its requests will land, not where it
/// was created (a create carries no id to route by): the creating process hands its
/// lease back at once and lets go of it, and the first request for it, wherever it
/// lands, takes it. A process alone keeps what it creates.
async fn hand_over_to_its_home(app: &AppState, session: &Arc<Session>) {
    let store = &app.runtime.store;
    if store.instance_addr().is_empty() {
        return;
    }
    match store.release_leases(Some(&[session.id])).await {
        // Loaded again (or sent on to another process) on its first use.
        Ok(()) => {
            session.mark_stale();
            app.sessions.let_go(session);
        }
        Err(error) => {
            tracing::warn!(session_id = %session.id, %error, "a new session's lease was not handed back; it lapses by itself");
        }
    }
}

/// Get a session with its committed history.
///
/// Never waits for a running turn: it shows the last committed history and the
/// turn lock's `status` now.
#[utoipa::path(
    get, path = "/text/session/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
    )
)]
async fn get_session(SessionPath { session, .. }: SessionPath) -> Response {
    responses::session(&session, StatusCode::OK)
}

/// `?limit=&after=` on the list.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Sessions per page: 1 to 1000, 100 when left out.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `nextCursor` of the page before.
    #[param(
        pattern = "^[0-9]{1,15}~[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub after: Option<String>,
}

/// Most sessions on one page.
const MAX_PAGE: usize = 1000;

/// List sessions, newest first, without their messages, a page at a time.
///
/// With API keys on, only the caller's own sessions. `nextCursor` is `null` on the last
/// page; pass it as `after` for the next.
#[utoipa::path(
    get, path = "/text/sessions", tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of sessions", body = SessionListResponse),
        (status = 400, description = "`limit` out of 1 to 1000, or `after` not a cursor (`invalid_request`)", body = ErrorBody),
        (status = 503, description = "The store could not be read (`store_unavailable`); see `Retry-After`", body = ErrorBody),
    )
)]
async fn list_sessions(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "limit: must be 1 to {MAX_PAGE}, got {limit}"
        )));
    }
    let after = match query.after.as_deref() {
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            ApiError::InvalidRequest(format!("after: `{cursor}` is not a cursor of this list"))
        })?),
        None => None,
    };
    // Each summary is written while it borrows its own session's history, one at a
    // time, straight into the body: the shape is `SessionListResponse`.
    let mut body = br#"{"success":true,"sessions":["#.to_vec();
    let write = |body: &mut Vec<u8>, i: usize, summary: &SessionSummary<'_>| {
        if i > 0 {
            body.push(b',');
        }
        serde_json::to_writer(body, summary).map_err(|e| ApiError::Internal(e.to_string()))
    };
    let next = if app.runtime.store.is_durable() {
        let owner = caller.0.map(|key| key.to_hex());
        let page = app
            .runtime
            .store
            .list(owner.as_deref(), limit, after)
            .await?;
        for (i, (row, count)) in page.sessions.iter().enumerate() {
            match app.sessions.get(row.id) {
                Some(live) => live.render_summary(|summary| write(&mut body, i, summary))?,
                None => Session::render_stored_summary(row, *count, |summary| {
                    write(&mut body, i, summary)
                })?,
            }
        }
        page.next
    } else {
        let (sessions, next) = app.sessions.page_owned_by(caller.0, limit, after);
        for (i, session) in sessions.iter().enumerate() {
            session.render_summary(|summary| write(&mut body, i, summary))?;
        }
        next
    };
    body.extend_from_slice(b"],\"nextCursor\":");
    serde_json::to_writer(&mut body, &next).map_err(|e| ApiError::Internal(e.to_string()))?;
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Delete a session.
///
/// Its running turn is cancelled (that writer gets `409 turn_cancelled`), its waiting
/// writers get `404 session_not_found`.
#[utoipa::path(
    delete, path = "/text/session/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id (UUID)")),
    responses(
        (status = 200, description = "Deleted", body = SuccessResponse),
        (status = 404, description = "No such session (`session_not_found`)", body = ErrorBody),
        (status = 503, description = "The store did not delete it (`store_unavailable`); see `Retry-After`; nothing changed", body = ErrorBody),
    )
)]
async fn delete_session(
    State(app): State<AppState>,
    SessionPath { session, id }: SessionPath,
) -> Result<axum::Json<SuccessResponse>, ApiError> {
    app.runtime.store.delete(session.id).await?;
    app.sessions
        .remove(session.id)
        .ok_or_else(|| ApiError::session_not_found(&id))?;
    tracing::info!(session_id = %session.id, "session deleted");
    Ok(axum::Json(SuccessResponse { success: true }))
}
