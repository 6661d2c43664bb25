//! Several processes on one Postgres: a request for a session that another live process
//! serves (it holds the session's lease) is sent on to that process, and its answer is
//! relayed unchanged: status, headers (`x-turn-id`, `ETag`, `Retry-After`…) and body,
//! streams included, as they come. A session no live process serves is taken over here
//! (loaded, its lease taken) and served here.
//!
//! Every route under `/text/session/{id}` goes to the session's process: writes, cancels,
//! turns and their events, and reads too, so that `status` (`busy`, `waiting`) is the
//! serving process's own. A forwarded request is marked (`x-forwarded-instance`) and is
//! never forwarded again: if the lease moved meanwhile, it is answered where it lands
//! (`409 session_moved`, and the client sends it again). Runs after the API key and body
//! checks, before `Idempotency-Key`, which the serving process applies.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::{live_or_stored, session_of};

/// Marks a forwarded request with the address of the process that forwarded it.
pub const FORWARDED_INSTANCE: HeaderName = HeaderName::from_static("x-forwarded-instance");

/// Headers that belong to one connection, not to the request or answer they travel with.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

pub async fn forward(State(app): State<AppState>, request: Request, next: Next) -> Response {
    // Only in the stack of an instance with an address (`server::router`); a request
    // already forwarded is served here.
    if request.headers().contains_key(&FORWARDED_INSTANCE) {
        return next.run(request).await;
    }
    let Some(id) = session_of(request.uri().path()) else {
        return next.run(request).await;
    };
    match live_or_stored(&app, id).await {
        Err(ApiError::SessionMoved(owner)) if !owner.is_empty() => {
            relay(&app, &owner, request).await
        }
        // Served here: live, loaded now, not stored (404), or an error the route gives.
        _ => next.run(request).await,
    }
}

/// Sends the request to the process at `owner` and relays its answer as it comes.
async fn relay(app: &AppState, owner: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // The body was read whole already (`body::read_whole`).
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::Internal("a request body could not be read again".into()).into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers;
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Ok(me) = HeaderValue::from_str(app.runtime.store.instance_addr()) {
        headers.insert(FORWARDED_INSTANCE, me);
    }
    let sent = app
        .forwarder
        .request(parts.method, format!("http://{owner}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%owner, %error, "the instance serving the session does not answer");
            return ApiError::InstanceUnavailable(owner.to_owned()).into_response();
        }
    };
    app.runtime.metrics.requests_forwarded.inc();
    let status = answer.status();
    let mut headers = answer.headers().clone();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let body = Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
