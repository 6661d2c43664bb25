//! `ApiError`: every way a request can fail, each with its status, its stable `code`
//! and a message, answered as `{success:false, error:{code, message}}`. Domain errors
//! and axum's own rejections are turned into it here, so handlers can use `?`.

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::memory::OverBudget;
use crate::provider::ProviderError;
use crate::session::runtime::NotAdmitted;
use crate::session::turn::TurnError;
use crate::session::{HistoryTooShort, Invalid, LockError};
use crate::store::StoreError;

/// Seconds a client is asked to wait before trying an overloaded session again.
const RETRY_AFTER_SECS: u32 = 1;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body or a parameter breaks a rule; the message names the field.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401: API keys are on and the request has none, or a wrong one.
    #[error("a valid API key is required: `Authorization: Bearer <key>`")]
    Unauthorized,
    /// 404: no session with this id (or the id is not a UUID).
    #[error("no session with id `{0}`")]
    SessionNotFound(String),
    /// 404: no such turn in this session (or it is no longer kept, or the id is not a UUID).
    #[error("no turn with id `{0}` in this session")]
    TurnNotFound(String),
    /// 404: no such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method not allowed for this route")]
    MethodNotAllowed,
    /// 409: `onBusy: reject` and the session is busy.
    #[error("the session is busy with another turn")]
    SessionBusy,
    /// 409: the turn was cancelled (the session was deleted) before it committed.
    #[error("{0}")]
    TurnCancelled(String),
    /// 409: only failed or cancelled turns can be retried, once.
    #[error("{0}")]
    TurnNotRetryable(String),
    /// 409: a fork asked for more messages than the session holds.
    #[error(transparent)]
    HistoryTooShort(#[from] HistoryTooShort),
    /// 408: the request body did not arrive within `BODY_READ_TIMEOUT_SECS`.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// 413: the body is larger than allowed.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many writers wait for this session.
    #[error("too many writers are waiting for this session (at most {0}); retry later")]
    SessionOverloaded(usize),
    /// 502: the provider answered with an error or could not be reached.
    #[error("provider `{provider}` failed: {error}")]
    Provider {
        provider: String,
        error: ProviderError,
    },
    /// 504: the provider did not answer in time.
    #[error("provider `{provider}` did not answer in time")]
    ProviderTimeout { provider: String },
    /// 503: every provider slot is taken and too many turns wait for one.
    #[error("the service is overloaded; retry later")]
    Overloaded,
    /// 429: the caller's API key holds its memory quota.
    #[error("{0}")]
    MemoryQuota(OverBudget),
    /// 503: the service holds its memory budget.
    #[error("{0}")]
    MemoryBudget(OverBudget),
    /// 503: the store did not commit; nothing was appended.
    #[error("the store is unavailable; nothing was appended; retry later ({0})")]
    StoreUnavailable(String),
    /// 409: another process serves the session now (it took the lease over); nothing
    /// was appended here.
    #[error("the session is served by another instance now{}; nothing was appended; retry", at_addr(.0))]
    SessionMoved(String),
    /// 503: the process serving the session does not answer; its lease lapses within
    /// `LEASE_SECS`, and then this one serves it.
    #[error("the instance serving this session{} does not answer; retry: another takes the session over once its lease lapses", at_addr(.0))]
    InstanceUnavailable(String),
    /// 503: the service is shutting down and takes no new turns.
    #[error("the service is shutting down; retry on another instance")]
    ShuttingDown,
    /// 409: a request with this Idempotency-Key still runs.
    #[error("a request with this Idempotency-Key is still running; retry once it has ended")]
    IdempotencyKeyInUse,
    /// 422: this Idempotency-Key was used with another route or body.
    #[error("this Idempotency-Key was used with another route or body; use a new key")]
    IdempotencyKeyReused,
    /// 429: a new session would pass a bound on the number of sessions.
    #[error(transparent)]
    SessionLimit(#[from] crate::session::SessionLimit),
    /// 409: the session holds its most messages.
    #[error("the session holds its most messages ({0}); start a new session")]
    SessionFull(usize),
    /// 412: `If-Match` names another version than the session's.
    #[error("the session is at version {current}, not the one in If-Match")]
    VersionMismatch { current: u64 },
    /// 500: a bug; details go to the log, not to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::SessionNotFound(_)
            | ApiError::TurnNotFound(_)
            | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::SessionBusy
            | ApiError::TurnCancelled(_)
            | ApiError::TurnNotRetryable(_)
            | ApiError::HistoryTooShort(_) => StatusCode::CONFLICT,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::SessionOverloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Provider { .. } => StatusCode::BAD_GATEWAY,
            ApiError::ProviderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::MemoryQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded
            | ApiError::ShuttingDown
            | ApiError::MemoryBudget(_)
            | ApiError::StoreUnavailable(_)
            | ApiError::InstanceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SessionLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::IdempotencyKeyInUse => StatusCode::CONFLICT,
            ApiError::SessionMoved(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::SessionFull(_) => StatusCode::CONFLICT,
            ApiError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::SessionNotFound(_) => "session_not_found",
            ApiError::TurnNotFound(_) => "turn_not_found",
            ApiError::RouteNotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::SessionBusy => "session_busy",
            ApiError::TurnCancelled(_) => "turn_cancelled",
            ApiError::TurnNotRetryable(_) => "turn_not_retryable",
            ApiError::HistoryTooShort(_) => "history_too_short",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::SessionOverloaded(_) => "session_overloaded",
            ApiError::Provider { .. } => "provider_error",
            ApiError::ProviderTimeout { .. } => "provider_timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::MemoryQuota(_) => "memory_quota_exceeded",
            ApiError::MemoryBudget(_) => "memory_budget_exceeded",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::SessionMoved(_) => "session_moved",
            ApiError::InstanceUnavailable(_) => "instance_unavailable",
            ApiError::SessionLimit(_) => "session_limit",
            ApiError::IdempotencyKeyInUse => "idempotency_key_in_use",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::SessionFull(_) => "session_full",
            ApiError::VersionMismatch { .. } => "version_mismatch",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The error a session id that matches nothing gets.
    pub fn session_not_found(id: &str) -> Self {
        ApiError::SessionNotFound(id.to_owned())
    }

    /// The error a route that names the session it works on gets from a turn error.
    pub fn from_turn(error: TurnError, session_id: &str) -> Self {
        match error {
            TurnError::Lock(LockError::Busy) => ApiError::SessionBusy,
            TurnError::Lock(LockError::Overloaded(limit)) => ApiError::SessionOverloaded(limit),
            TurnError::Lock(LockError::Closed) => ApiError::session_not_found(session_id),
            TurnError::Lock(LockError::Cancelled) => {
                ApiError::TurnCancelled("the turn was cancelled before it started".into())
            }
            TurnError::Cancelled { commit: None, .. } => ApiError::TurnCancelled(
                "the turn was cancelled before the provider answered; nothing was appended".into(),
            ),
            TurnError::Cancelled {
                commit: Some(_), ..
            } => ApiError::TurnCancelled(
                "the turn was cancelled; its messages and the partial reply were kept, marked `interrupted`".into(),
            ),
            TurnError::Provider {
                provider,
                error: ProviderError::Timeout(_),
            } => ApiError::ProviderTimeout { provider },
            TurnError::Provider { provider, error } => ApiError::Provider { provider, error },
            TurnError::NotAdmitted(NotAdmitted::Overloaded) => ApiError::Overloaded,
            TurnError::NotAdmitted(NotAdmitted::ShuttingDown) => ApiError::ShuttingDown,
            TurnError::SessionFull(limit) => ApiError::SessionFull(limit),
            TurnError::VersionMismatch { current } => ApiError::VersionMismatch { current },
            TurnError::OverBudget(over) => over.into(),
            TurnError::Store(error) => error.into(),
            TurnError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<OverBudget> for ApiError {
    fn from(over: OverBudget) -> Self {
        match over {
            OverBudget::Key { .. } => ApiError::MemoryQuota(over),
            OverBudget::Service { .. } => ApiError::MemoryBudget(over),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Fenced { .. } => ApiError::SessionMoved(String::new()),
            StoreError::Gone(id) => ApiError::session_not_found(&id.to_string()),
            other => ApiError::StoreUnavailable(other.to_string()),
        }
    }
}

/// ` (at ADDR)`, for an address that is known.
fn at_addr(addr: &str) -> String {
    if addr.is_empty() {
        String::new()
    } else {
        format!(" (at {addr})")
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::InvalidRequest(invalid.to_string())
    }
}

/// The prefix axum puts before serde's `path: message`; dropped for readability.
const AXUM_DATA_PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "the body must be JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::JsonDataError(_) => ApiError::InvalidRequest(readable_data_error(&text)),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::InvalidRequest(format!("malformed JSON: {text}"))
            }
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge("the request body is too large".into())
            }
            _ => ApiError::InvalidRequest(text),
        }
    }
}

impl ApiError {
    /// A body that does not fit its type: `path: message` (`body: …` at the top).
    pub fn invalid_body(path: &str, message: &str) -> Self {
        ApiError::InvalidRequest(readable_data_error(&at_path(path, message)))
    }
}

/// `path: message` as the API words it: just `message` at the top (`.`), and an element
/// of a list joins its path (`tools` and `[0].type: …` read `tools[0].type: …`).
pub fn at_path(path: &str, message: &str) -> String {
    if path == "." {
        message.to_owned()
    } else if message.starts_with('[') {
        format!("{path}{message}")
    } else {
        format!("{path}: {message}")
    }
}

/// serde's `path: message`, without axum's prefix and Rust type names: a top-level
/// type error reads `body: … expected a JSON object`.
fn readable_data_error(text: &str) -> String {
    let text = text.strip_prefix(AXUM_DATA_PREFIX).unwrap_or(text);
    match text.find("expected struct ") {
        Some(at) => {
            let rest = &text[at + "expected struct ".len()..];
            let after_name = rest.find(' ').map_or("", |end| &rest[end..]);
            format!("body: {}expected a JSON object{after_name}", &text[..at])
        }
        None => text.to_owned(),
    }
}

/// The body of every non-2xx response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"success": false, "error": {"code": "session_not_found", "message": "no session with id `0d6e…`"}}))]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Stable code: `invalid_request`, `unauthorized`, `session_not_found`, `turn_not_found`, `not_found`,
    /// `method_not_allowed`, `session_busy`, `turn_cancelled`, `turn_not_retryable`,
    /// `history_too_short`,
    /// `payload_too_large`,
    /// `unsupported_media_type`, `session_overloaded`, `provider_error`,
    /// `provider_timeout`, `overloaded`, `shutting_down`, `session_limit`,
    /// `session_full`, `version_mismatch`, `idempotency_key_in_use`,
    /// `idempotency_key_reused`, `internal_error`.
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// With `provider_error`: the status the provider answered, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<u16>,
}

impl ApiError {
    /// The `error` object of the body (also what a `turn.failed` event carries); logs
    /// what the client is not told.
    pub fn detail(&self) -> ErrorDetail {
        let message = match self {
            ApiError::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error");
                "internal error; the history is unchanged".to_owned()
            }
            other => other.to_string(),
        };
        if let ApiError::Provider { provider, error } = self {
            tracing::warn!(provider = %provider, error = %error, "provider call failed");
        }
        let provider_status = match self {
            ApiError::Provider {
                error: ProviderError::Upstream { status, .. },
                ..
            } => Some(*status),
            _ => None,
        };
        ErrorDetail {
            code: self.code().to_owned(),
            message,
            provider_status,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            error: self.detail(),
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let ApiError::VersionMismatch { current } = self
            && let Ok(tag) = HeaderValue::from_str(&format!("\"{current}\""))
        {
            // The version it is at, as every answer with a session tags it.
            response.headers_mut().insert(header::ETAG, tag);
        }
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            self,
            ApiError::SessionOverloaded(_)
                | ApiError::Overloaded
                | ApiError::ShuttingDown
                | ApiError::MemoryBudget(_)
                | ApiError::StoreUnavailable(_)
                | ApiError::InstanceUnavailable(_)
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}
