//! CORS preflights answered `204 No Content` (the CORS layer answers them `200 OK`). A
//! layer of its own rather than a `from_fn` middleware: it reads the request's method
//! and one header and, for a preflight only, the status of the answer, so every other
//! request goes through it untouched (no boxed future, no clone of what it wraps).

use std::task::{Context, Poll};

use axum::http::{Method, Request, Response, StatusCode, header};
use futures::FutureExt;
use futures::future::{Either, Map};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PreflightNoContentLayer;

impl<S> Layer<S> for PreflightNoContentLayer {
    type Service = PreflightNoContent<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PreflightNoContent { inner }
    }
}

#[derive(Debug, Clone)]
pub(super) struct PreflightNoContent<S> {
    inner: S,
}

type Answer<B, E> = Result<Response<B>, E>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PreflightNoContent<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Map<S::Future, fn(Answer<ResBody, S::Error>) -> Answer<ResBody, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let answer = self.inner.call(request);
        if preflight {
            Either::Right(answer.map(no_content as fn(_) -> _))
        } else {
            Either::Left(answer)
        }
    }
}

/// `200 OK` becomes `204 No Content`; any other answer stays as it is.
fn no_content<B, E>(answer: Answer<B, E>) -> Answer<B, E> {
    answer.map(|mut response| {
        if response.status() == StatusCode::OK {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
        response
    })
}
