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

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::Value;

use crate::app::AppState;
use crate::error::ApiError;
use crate::idempotency::{Fingerprint, Lookup, StoredAnswer, StoredBody};
use crate::keys::{Caller, KeyId};
use crate::routes::responses::HistoryInAnswer;
use crate::session::Session;

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

pub async fn idempotency(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(&IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    let key = match valid_key(value) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let owner = request
        .extensions()
        .get::<Caller>()
        .copied()
        .unwrap_or_default()
        .0;
    let route_matched = request.extensions().get::<MatchedPath>().is_some();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, app.max_body_bytes).await else {
        return ApiError::PayloadTooLarge("the request body is too large".into()).into_response();
    };
    let fingerprint = Fingerprint::new(
        format!("{} {}", parts.method, parts.uri),
        &body_value(&bytes),
    );
    match app.idempotency.begin(owner, &key, fingerprint) {
        Lookup::InUse => ApiError::IdempotencyKeyInUse.into_response(),
        Lookup::Reused => ApiError::IdempotencyKeyReused.into_response(),
        Lookup::Replay(answer) => replay(&app, owner, answer),
        Lookup::Reserved => {
            let request = Request::from_parts(parts, Body::from(bytes));
            run_and_keep(app, owner, key, route_matched, request, next).await
        }
    }
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

fn replay(app: &AppState, owner: Option<KeyId>, answer: StoredAnswer) -> Response {
    let body = match answer.body {
        StoredBody::Whole(bytes) => bytes,
        StoredBody::AroundHistory {
            before,
            session,
            len,
            after,
        } => {
            let history = app
                .sessions
                .get(session)
                .filter(|s| s.owner == owner)
                .and_then(|s| history_json(&s, len));
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
    key: String,
    route_matched: bool,
    request: Request,
    next: Next,
) -> Response {
    let (answer, answered) = tokio::sync::oneshot::channel();
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
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    kept.extend_from_slice(&chunk);
                    if !client_gone {
                        client_gone = chunks.send(Ok(chunk)).await.is_err();
                    }
                }
                Err(error) => {
                    let _ = chunks.send(Err(error)).await;
                    app.idempotency.release(owner, &key);
                    return;
                }
            }
        }
        app.idempotency.finish(
            owner,
            &key,
            StoredAnswer {
                status: status.as_u16(),
                headers,
                body: without_history(kept.freeze(), history),
            },
        );
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
    let Some(json) = history_json(&session, len) else {
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

/// The JSON of `messages[..len]` of `session`, as every answer that shows it has it.
fn history_json(session: &Session, len: usize) -> Option<Vec<u8>> {
    session.read(|h| serde_json::to_vec(h.messages.get(..len)?).ok())
}
