//! Request extraction shared by the routes: JSON bodies whose every failure answers in
//! our error shape, bodies that may be left out, and session ids from the path.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::Extensions;
use axum::http::header;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::keys::{Caller, KeyId};
use crate::message::RawJson;
use crate::session::Session;
use crate::store::Lease;

/// A JSON body kept as received: a write's turn record shows it, and the messages the
/// write appends share its texts. Not JSON, or a wrong content type, is an [`ApiError`];
/// [`typed`](Self::typed) reads it into a request type.
#[derive(Debug)]
pub struct JsonBody(pub RawJson);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(&req) {
            return Err(not_json_content());
        }
        let bytes = read_bytes(req, state).await?;
        // A body that arrived in one piece is a slice of the connection's read buffer,
        // which it would keep alive for as long as the history keeps its texts: it
        // gets a buffer of its own size.
        RawJson::parse(Bytes::copy_from_slice(&bytes))
            .map(Self)
            .map_err(|e| ApiError::InvalidRequest(format!("malformed JSON: {e}")))
    }
}

impl JsonBody {
    /// The body as `T` (whose strings may borrow from it); a mismatch names the field
    /// at fault.
    pub fn typed<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ApiError> {
        self.0
            .typed()
            .map_err(|(path, message)| ApiError::invalid_body(&path, &message))
    }
}

/// A JSON object body that may be left out entirely: no body (or `null`) means
/// `T::default()`.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = has_json_content_type(&req);
        let bytes = read_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !is_json {
            return Err(not_json_content());
        }
        let raw: Value = axum::Json::<Value>::from_bytes(&bytes)?.0;
        if raw.is_null() {
            return Ok(Self(T::default()));
        }
        if !raw.is_object() {
            return Err(ApiError::InvalidRequest(
                "body: expected a JSON object".into(),
            ));
        }
        Ok(Self(typed(&raw)?))
    }
}

async fn read_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("the request body is too large".into())
        } else {
            ApiError::InvalidRequest(e.body_text())
        }
    })
}

fn has_json_content_type(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_content_type)
}

fn not_json_content() -> ApiError {
    ApiError::UnsupportedMediaType(
        "the body must be JSON with `Content-Type: application/json`".into(),
    )
}

/// A JSON value as `T`; a mismatch names the field at fault.
fn typed<T: DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(raw)
        .map_err(|e| ApiError::invalid_body(&e.path().to_string(), &e.into_inner().to_string()))
}

/// `application/json` or `application/<something>+json`, with any parameters.
fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The session the path's `{id}` names, if the caller may see it: ids that are not
/// UUIDs, unknown ids and another key's sessions are all `404 session_not_found`.
/// Extracted before any body, so a missing session is reported first.
#[derive(Debug)]
pub struct SessionPath {
    pub session: Arc<Session>,
    /// The id as the path gave it.
    pub id: String,
}

impl FromRequestParts<AppState> for SessionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::Internal(e.body_text()))?;
        let id = params
            .iter()
            .find(|(name, _)| *name == "id")
            .map(|(_, value)| value.to_owned())
            .unwrap_or_default();
        let caller = caller_of(&parts.extensions);
        tracing::Span::current().record("session_id", id.as_str());
        let session = match Uuid::parse_str(&id) {
            Ok(uuid) => live_or_stored(app, uuid).await?,
            Err(_) => None,
        }
        .filter(|session| session.owner == caller.0)
        .ok_or_else(|| ApiError::session_not_found(&id))?;
        app.sessions.touch(&session);
        Ok(Self { session, id })
    }
}

/// Who is calling, as the key check named them; anyone where no keys are configured
/// (the check is then not in the stack at all).
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(caller_of(&parts.extensions))
    }
}

/// The caller a request's extensions name; anyone where the key check did not run.
pub(crate) fn caller_of(extensions: &Extensions) -> Caller {
    extensions.get::<Caller>().copied().unwrap_or_default()
}

/// The session id of a path under `/text/session/{id}`, for the middleware that runs
/// before routing.
pub(crate) fn session_of(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/text/session/")?;
    Uuid::parse_str(rest.split('/').next()?).ok()
}

/// The live session, or the stored one made live again (sessions are loaded on first
/// use after a restart).
pub(crate) async fn live_or_stored(
    app: &AppState,
    id: Uuid,
) -> Result<Option<Arc<Session>>, ApiError> {
    if let Some(session) = app.sessions.get(id) {
        return Ok(Some(session));
    }
    let metrics = &app.runtime.metrics;
    let store = &app.runtime.store;
    // The lease first: it says whether the session is stored and whether this process
    // may serve it.
    let epoch = match store
        .take_lease(id)
        .await
        .inspect_err(|error| metrics.store_error(error.kind()))?
    {
        None => return Ok(None),
        Some(Lease::Held { epoch, taken_over }) => {
            if taken_over {
                metrics.leases_taken_over.inc();
            }
            epoch
        }
        Some(Lease::Elsewhere { addr }) => return Err(ApiError::SessionMoved(addr)),
    };
    let Some(stored) = store
        .load(id, app.settings.turns.bounds())
        .await
        .inspect_err(|error| metrics.store_error(error.kind()))?
    else {
        return Ok(None);
    };
    metrics.store_loads.inc();
    let owner = stored.row.owner.as_deref().and_then(KeyId::from_hex);
    let session = Session::restore(
        stored,
        &app.providers,
        app.settings,
        app.memory.account(owner),
    )
    .map_err(ApiError::Internal)?;
    session.hold(epoch);
    Ok(Some(app.sessions.insert_loaded(Arc::new(session))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
    }

    #[test]
    fn only_paths_under_a_session_name_one() {
        let id = Uuid::new_v4();
        for path in [
            format!("/text/session/{id}"),
            format!("/text/session/{id}/message"),
            format!("/text/session/{id}/turns/{}/events", Uuid::new_v4()),
        ] {
            assert_eq!(session_of(&path), Some(id), "{path}");
        }
        for path in [
            "/text/session",
            "/text/sessions",
            "/text/session/nope/message",
        ] {
            assert_eq!(session_of(path), None, "{path}");
        }
    }
}
