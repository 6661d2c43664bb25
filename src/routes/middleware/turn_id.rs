//! Every answer of a write names a turn in `x-turn-id`, errors included: the id is
//! given before anything else looks at the request, so a write turned away by the body
//! limit, its content type or its validation still carries the id it would have run as
//! (a write that never became a turn is not listed among the session's turns). The
//! write runs as that id (`AssignedTurnId`); an answer that already names a turn (a
//! stored `Idempotency-Key` answer, one relayed from another process) keeps its own.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::Response;
use futures::FutureExt;
use futures::future::{Either, Join, Map, Ready, join, ready};
use tower::{Layer, Service};
use uuid::Uuid;

use crate::routes::responses::{TURN_ID_HEADER, with_turn_id};

/// The id a write runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedTurnId(pub Uuid);

/// Gives a write its turn id, and puts it on the answer if the answer names none. A
/// layer of its own rather than a `from_fn` middleware: every other request goes
/// through it untouched (no boxed future, no clone of what it wraps).
#[derive(Debug, Clone, Copy, Default)]
pub struct AssignLayer;

impl<S> Layer<S> for AssignLayer {
    type Service = Assign<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Assign { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Assign<S> {
    inner: S,
}

type Answer<E> = Result<Response, E>;

/// A write's answer, named by [`named`] once it comes.
type Named<F, E> = Map<Join<F, Ready<Uuid>>, fn((Answer<E>, Uuid)) -> Answer<E>>;

impl<S> Service<Request> for Assign<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Named<S::Future, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        if request.method() != Method::POST || !is_write(request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let id = Uuid::new_v4();
        request.extensions_mut().insert(AssignedTurnId(id));
        let answer = self.inner.call(request);
        Either::Right(join(answer, ready(id)).map(named as fn(_) -> _))
    }
}

/// The answer, with `x-turn-id` unless it names a turn already.
fn named<E>((answer, id): (Answer<E>, Uuid)) -> Answer<E> {
    answer.map(|mut response| {
        if !response.headers().contains_key(TURN_ID_HEADER) {
            with_turn_id(&mut response, id);
        }
        response
    })
}

/// `/text/session/{id}/message`, `…/instructions`, `…/tool-output`, and a retry
/// (`…/turns/{turnId}/retry`), which runs as a new turn.
fn is_write(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/text/session/") else {
        return false;
    };
    let Some((_, route)) = rest.split_once('/') else {
        return false;
    };
    matches!(route, "message" | "instructions" | "tool-output")
        || route
            .strip_prefix("turns/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(turn, tail)| !turn.is_empty() && tail == "retry")
}

impl<S: Send + Sync> FromRequestParts<S> for AssignedTurnId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<AssignedTurnId>()
            .copied()
            .unwrap_or_else(|| AssignedTurnId(Uuid::new_v4())))
    }
}

#[cfg(test)]
mod tests {
    use super::is_write;

    #[test]
    fn the_writes_are_the_three_write_routes_and_a_retry() {
        let id = "0d6e2b1c-8f5a-4a4e-9a40-3b2f8c1d9e77";
        for route in ["message", "instructions", "tool-output", "turns/x/retry"] {
            assert!(is_write(&format!("/text/session/{id}/{route}")), "{route}");
        }
        for path in [
            format!("/text/session/{id}"),
            format!("/text/session/{id}/cancel"),
            format!("/text/session/{id}/fork"),
            format!("/text/session/{id}/turns//retry"),
            "/text/session".to_owned(),
        ] {
            assert!(!is_write(&path), "{path}");
        }
    }
}
