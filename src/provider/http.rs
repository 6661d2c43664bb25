//! What the HTTP providers share: building their client, sending a request (its answer
//! read whole, or as server-sent events as they arrive) and turning a non-success answer
//! or a transport failure into a [`ProviderError`]. Wire formats do not belong here.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use super::ProviderError;

/// How much of an unreadable error body goes into the error message.
const BODY_EXCERPT_CHARS: usize = 300;

/// One client per provider, built once: bounded by the provider timeout, following no
/// redirects (a key must never be sent on to another host).
pub(crate) fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends a request and returns the body of a 2xx answer.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Bytes, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(e, timeout))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(e, timeout))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(with_retry_after(
            upstream_error(status.as_u16(), &body),
            retry_after,
        ))
    }
}

/// Sends a request whose answer is streamed and returns a 2xx response with its body
/// unread; a non-2xx answer is read whole and mapped as by [`send`].
pub(crate) async fn send_streaming(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(e, timeout))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(e, timeout))?;
    Err(with_retry_after(
        upstream_error(status.as_u16(), &body),
        retry_after,
    ))
}

/// The server-sent events of a streamed answer, each as soon as it is complete. A broken
/// connection or the timeout while reading maps as by [`transport_error`]; a body that is
/// not an event stream is an invalid reply.
pub(crate) fn sse_events(
    response: reqwest::Response,
    timeout: Duration,
) -> impl Stream<Item = Result<Event, ProviderError>> + Send + 'static {
    response.bytes_stream().eventsource().map(move |event| {
        event.map_err(|error| match error {
            EventStreamError::Transport(error) => transport_error(error, timeout),
            other => {
                ProviderError::InvalidReply(format!("the event stream could not be read: {other}"))
            }
        })
    })
}

/// Decodes a 2xx body.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::InvalidReply(e.to_string()))
}

/// Maps a reqwest failure: timeouts to `Timeout`, everything else to `Transport`.
pub(crate) fn transport_error(error: reqwest::Error, timeout: Duration) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout(timeout)
    } else {
        // Only the error kind and its source, never the URL (which may carry a key).
        let error = error.without_url();
        ProviderError::Transport(error_chain(&error))
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Both OpenAI and Anthropic answer errors as `{"error": {"type": …, "message": …}}`;
/// anything else keeps the start of its body.
pub(crate) fn upstream_error(status: u16, body: &[u8]) -> ProviderError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        code: Option<serde_json::Value>,
        #[serde(default)]
        message: Option<String>,
    }
    let (kind, message) = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => (
            error
                .kind
                .or_else(|| {
                    error
                        .code
                        .map(|c| c.to_string().trim_matches('"').to_owned())
                })
                .unwrap_or_else(|| "error".to_owned()),
            error.message.unwrap_or_default(),
        ),
        Err(_) => (
            "http_error".to_owned(),
            String::from_utf8_lossy(body)
                .chars()
                .take(BODY_EXCERPT_CHARS)
                .collect(),
        ),
    };
    ProviderError::Upstream {
        status,
        kind,
        message,
        retry_after: None,
    }
}

fn with_retry_after(mut error: ProviderError, after: Option<Duration>) -> ProviderError {
    if let ProviderError::Upstream { retry_after, .. } = &mut error {
        *retry_after = after;
    }
    error
}

/// `Retry-After` as seconds or as an HTTP date (a date in the past means now).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        let soon = chrono::Utc::now() + chrono::Duration::seconds(30);
        let date = soon.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert("retry-after", date.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn reads_the_type_and_message_of_an_anthropic_error() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            upstream_error(529, body),
            ProviderError::Upstream {
                status: 529,
                kind: "overloaded_error".into(),
                message: "Overloaded".into(),
                retry_after: None,
            }
        );
    }

    #[test]
    fn reads_an_openai_error_and_keeps_the_start_of_an_unreadable_body() {
        let body = br#"{"error":{"message":"bad","type":"invalid_request_error","code":null}}"#;
        assert!(matches!(upstream_error(400, body),
            ProviderError::Upstream { kind, message, .. } if kind == "invalid_request_error" && message == "bad"));
        let long = "x".repeat(1000);
        match upstream_error(502, long.as_bytes()) {
            ProviderError::Upstream { kind, message, .. } => {
                assert_eq!(kind, "http_error");
                assert_eq!(message.len(), BODY_EXCERPT_CHARS);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
