//! `Idempotency-Key` on POST: the first request with a key runs; a repeat with the same
//! route and body (compared as JSON) gets the stored answer with `Idempotent-Replayed:
//! true`; another route or body gets `422 idempotency_key_reused`; a repeat while the
//! first still runs gets `409 idempotency_key_in_use`. Keys are per API key.
//!
//! The first request runs in a task of its own and its answer is captured as it goes
//! to the client (a stream included), so the answer is kept even if the client leaves.
//! Answers to requests that did not get past validation (400, 405, 413, 415, an unknown
//! route) and load answers (429, 503) are not kept, so a corrected retry runs.
//!
//! An answer that carries a session's history (marked by the route with
//! `HistoryInAnswer`) is kept without it: what stands before and after the history's
//! JSON, and where the history ends. A replay renders that committed history again, so
//! it is the same bytes; if the session has been deleted since, the replay is
//! `404 session_not_found`, as any request to it would be.
//!
//! With a durable store, records outlive the process. A write's turn commits the key's
//! record in its own transaction (`PendingKey` hands it to the handler), and the answer
//! is written once it is complete; a key unknown in memory is looked up in the store. A
//! retry after a crash that fell between the two finds the committed turn and gets the
//! answer rendered again from it (as JSON, the session as of that commit): the turn
//! never runs twice.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Either};
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::app::AppState;
use crate::error::ApiError;
use crate::idempotency::{Fingerprint, Lookup, StoredAnswer, StoredBody};
use crate::keys::KeyId;
use crate::message::Timestamp;
use crate::routes::extract::{caller_of, live_or_stored, session_of};
use crate::routes::responses::{self, HistoryInAnswer, View};
use crate::session::Commit;
use crate::session::turn::TurnOutcome;
use crate::store::KeyRecord;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The header on a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Answers that are not kept.
const NOT_KEPT: [StatusCode; 7] = [
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// Headers of an answer that are not replayed (they belong to each exchange).
const NOT_REPLAYED: [&str; 4] = [
    "date",
    "content-length",
    "x-request-id",
    "transfer-encoding",
];

/// The `Idempotency-Key` layer: a `POST` with the header goes through [`idempotency`];
/// every other request passes through untouched (no boxed future, no clone of the
/// stack below it), as nearly every request does.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer(pub AppState);

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            app: self.0.clone(),
            inner,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Idempotency<S> {
    app: AppState,
    inner: S,
}

impl<S> Service<Request> for Idempotency<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let key = request.headers().get(&IDEMPOTENCY_KEY).cloned();
        let Some(key) = key.filter(|_| request.method() == Method::POST) else {
            return Either::Left(self.inner.call(request));
        };
        let next = Next(BoxCloneSyncService::new(self.inner.clone()));
        Either::Right(
            idempotency(self.app.clone(), key, request, next)
                .map(Ok)
                .boxed(),
        )
    }
}

/// The rest of the stack, for a request the layer handles.
struct Next(BoxCloneSyncService<Request, Response, Infallible>);

impl Next {
    async fn run(self, request: Request) -> Response {
        match self.0.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A `POST` with `Idempotency-Key: value`.
async fn idempotency(app: AppState, value: HeaderValue, request: Request, next: Next) -> Response {
    let key = match valid_key(&value) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let owner = caller_of(request.extensions()).0;
    let route_matched = request.extensions().get::<MatchedPath>().is_some();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, app.max_body_bytes).await else {
        return ApiError::PayloadTooLarge("the request body is too large".into()).into_response();
    };
    let fingerprint = Fingerprint::new(
        format!("{} {}", parts.method, parts.uri),
        &body_value(&bytes),
    );
    let record = KeyRecord {
        owner: owner.map(|key| key.to_hex()),
        key: key.clone(),
        route: fingerprint.route.clone(),
        body_digest: fingerprint.body_digest(),
        created_at: Timestamp::now(),
        turn: None,
        answer: None,
    };
    match app.idempotency.begin(owner, &key, fingerprint) {
        Lookup::InUse => ApiError::IdempotencyKeyInUse.into_response(),
        Lookup::Reused => ApiError::IdempotencyKeyReused.into_response(),
        Lookup::Replay(answer) => replay(&app, owner, answer).await,
        Lookup::Reserved => {
            // Until the request's own task has the key, a client that goes away (this
            // future dropped mid-lookup) must not leave the key in use.
            let reserved = Reservation {
                app: &app,
                owner,
                key: &key,
                handed_on: false,
            };
            match stored(&app, &record, parts.uri.path()).await {
                Ok(None) => {
                    reserved.hand_on();
                    let mut request = Request::from_parts(parts, Body::from(bytes));
                    request.extensions_mut().insert(PendingKey(record.clone()));
                    run_and_keep(app, owner, record, route_matched, request, next).await
                }
                Ok(Some(known)) => {
                    drop(reserved);
                    answer_known(&app, owner, &record, known).await
                }
                Err(error) => error.into_response(),
            }
        }
    }
}

/// A key reserved while the store is asked about it: released when dropped, unless
/// handed on to the request's task (`run_and_keep`, which finishes or releases it).
struct Reservation<'a> {
    app: &'a AppState,
    owner: Option<KeyId>,
    key: &'a str,
    handed_on: bool,
}

impl Reservation<'_> {
    fn hand_on(mut self) {
        self.handed_on = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.handed_on {
            self.app.idempotency.release(self.owner, self.key);
        }
    }
}

/// The key's record, handed to the write's turn so that its commit writes it too.
#[derive(Debug, Clone)]
pub struct PendingKey(pub KeyRecord);

/// The store's record of a key memory does not know (a restart, an evicted record).
async fn stored(
    app: &AppState,
    record: &KeyRecord,
    path: &str,
) -> Result<Option<KeyRecord>, ApiError> {
    let store = &app.runtime.store;
    if !store.is_durable() {
        return Ok(None);
    }
    // The session the request writes to is taken up first (its lease taken) if this
    // process does not serve it yet. A commit of the process that served it before (one
    // that died with that commit in flight) then lands before the lease changes hands
    // or not at all (the lease fences it): the lookup below sees every turn that will
    // ever have committed under this key. Whether the session exists, and may be served
    // here, is the route's to answer.
    if let Some(session) = session_of(path) {
        let _ = live_or_stored(app, session).await;
    }
    let ttl = i64::try_from(app.idempotency.ttl().as_millis()).unwrap_or(i64::MAX);
    let since = Timestamp::from_unix_millis(record.created_at.unix_millis().saturating_sub(ttl))
        .unwrap_or(record.created_at);
    let known = store
        .key(record.owner.as_deref(), &record.key, since)
        .await?;
    // A record with neither answer nor turn holds nothing to answer with.
    Ok(known.filter(|known| known.answer.is_some() || known.turn.is_some()))
}

/// The answer to a key the store knows: reuse, its kept answer, or its committed turn
/// rendered again.
async fn answer_known(
    app: &AppState,
    owner: Option<KeyId>,
    request: &KeyRecord,
    known: KeyRecord,
) -> Response {
    if known.route != request.route || known.body_digest != request.body_digest {
        return ApiError::IdempotencyKeyReused.into_response();
    }
    if let Some(answer) = known.answer {
        return replay(app, owner, StoredAnswer::from_row(answer)).await;
    }
    let Some(turn) = known.turn else {
        return ApiError::Internal("a key record without answer or turn".into()).into_response();
    };
    let Ok(Some(session)) = live_or_stored(app, turn.session).await else {
        return ApiError::session_not_found(&turn.session.to_string()).into_response();
    };
    if session.owner != owner {
        return ApiError::session_not_found(&turn.session.to_string()).into_response();
    }
    let result = match turn.result.map(serde_json::from_value).transpose() {
        Ok(result) => result,
        Err(error) => {
            return ApiError::Internal(format!("a stored turn result: {error}")).into_response();
        }
    };
    let outcome = TurnOutcome {
        turn_id: turn.turn_id,
        result,
        commit: Commit {
            from: turn.from,
            len: turn.len,
            version: turn.version,
            updated_at: turn.updated_at,
        },
    };
    let view = if request.route.contains("view=delta") {
        View::Delta
    } else {
        View::Full
    };
    let mut response = responses::write(&session, &outcome, view);
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// 1 to 255 printable ASCII characters.
fn valid_key(value: &HeaderValue) -> Result<String, ApiError> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::InvalidRequest(
            "Idempotency-Key: must be 1 to 255 printable ASCII characters".into(),
        ));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The body as a JSON value (no body: null; not JSON: its text).
fn body_value(bytes: &Bytes) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

async fn replay(app: &AppState, owner: Option<KeyId>, answer: StoredAnswer) -> Response {
    let body = match answer.body {
        StoredBody::Whole(bytes) => bytes,
        StoredBody::AroundHistory {
            before,
            session,
            len,
            after,
        } => {
            let history = live_or_stored(app, session)
                .await
                .ok()
                .flatten()
                .filter(|s| s.owner == owner)
                .and_then(|s| s.history_json(len));
            let Some(history) = history else {
                return ApiError::session_not_found(&session.to_string()).into_response();
            };
            let mut body = BytesMut::with_capacity(before.len() + history.len() + after.len());
            body.extend_from_slice(&before);
            body.extend_from_slice(&history);
            body.extend_from_slice(&after);
            body.freeze()
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Runs the request in its own task; its answer goes to the client as it comes and is
/// kept once complete.
async fn run_and_keep(
    app: AppState,
    owner: Option<KeyId>,
    record: KeyRecord,
    route_matched: bool,
    request: Request,
    next: Next,
) -> Response {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let key = record.key.clone();
    tokio::spawn(async move {
        let response = next.run(request).await;
        let status = response.status();
        if NOT_KEPT.contains(&status) || !route_matched {
            app.idempotency.release(owner, &key);
            let _ = answer.send(response);
            return;
        }
        let (parts, body) = response.into_parts();
        let history = parts.extensions.get::<HistoryInAnswer>().cloned();
        let headers: Vec<(String, Vec<u8>)> = parts
            .headers
            .iter()
            .filter(|(name, _)| !NOT_REPLAYED.contains(&name.as_str()))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        let (mut chunks, client_body) =
            futures::channel::mpsc::channel::<Result<Bytes, axum::Error>>(16);
        let mut client_gone = answer
            .send(Response::from_parts(parts, Body::from_stream(client_body)))
            .is_err();
        let mut kept = BytesMut::new();
        let mut body = body.into_data_stream();
        // The last piece goes out only once the answer is stored: a client that got it
        // whole gets the same bytes again after any restart.
        let mut last: Option<Bytes> = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    kept.extend_from_slice(&chunk);
                    if let Some(before) = last.replace(chunk)
                        && !client_gone
                    {
                        client_gone = chunks.send(Ok(before)).await.is_err();
                    }
                }
                Err(error) => {
                    if let Some(before) = last.take() {
                        let _ = chunks.send(Ok(before)).await;
                    }
                    let _ = chunks.send(Err(error)).await;
                    app.idempotency.release(owner, &key);
                    return;
                }
            }
        }
        let answer = StoredAnswer {
            status: status.as_u16(),
            headers,
            body: without_history(kept.freeze(), history),
        };
        let record = KeyRecord {
            answer: Some(answer.to_row()),
            ..record
        };
        app.idempotency.finish(owner, &key, answer);
        if let Err(error) = app.runtime.store.keep_key(&record).await {
            tracing::warn!(%error, "an idempotency answer was not stored; a retry after a restart renders it from its turn");
        }
        if let Some(last) = last
            && !client_gone
        {
            let _ = chunks.send(Ok(last)).await;
        }
    });
    answered.await.unwrap_or_else(|_| {
        ApiError::Internal("the request's task ended without an answer".into()).into_response()
    })
}

/// The answer's bytes, kept without the history they carry where the route marked one.
fn without_history(body: Bytes, history: Option<HistoryInAnswer>) -> StoredBody {
    let Some((session, len)) = history.and_then(|h| Some((h.session, *h.len.get()?))) else {
        return StoredBody::Whole(body);
    };
    let Some(json) = session.history_json(len) else {
        return StoredBody::Whole(body);
    };
    // The history stands last in the session, which stands last in the answer.
    match memchr::memmem::rfind(&body, &json) {
        Some(at) => StoredBody::AroundHistory {
            before: body.slice(..at),
            session: session.id,
            len,
            after: body.slice(at + json.len()..),
        },
        None => StoredBody::Whole(body),
    }
}
