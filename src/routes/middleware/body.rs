//! Every request body is read whole, within `MAX_BODY_BYTES` and within
//! `BODY_READ_TIMEOUT_SECS` of its head, before anything else looks at it: a client
//! that sends its body slowly, or never, gets `408 request_timeout` and holds nothing
//! for long; one that sends too much gets `413 payload_too_large`. The routes then read
//! the body from memory.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::ApiError;

pub async fn read_whole(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match read(request, app.max_body_bytes, app.body_read_timeout).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

async fn read(request: Request, max_bytes: usize, timeout: Duration) -> Result<Request, ApiError> {
    let (parts, body) = request.into_parts();
    let bytes = tokio::time::timeout(timeout, axum::body::to_bytes(body, max_bytes))
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout))?
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "the request body is larger than MAX_BODY_BYTES ({max_bytes} bytes)"
            ))
        })?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}
