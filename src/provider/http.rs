//! What the HTTP providers share: building their client, sending a request (its answer
//! read whole, or as server-sent events as they arrive) and turning a non-success answer
//! or a transport failure into a [`ProviderError`]. Wire formats do not belong here.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;

use super::ProviderError;

/// How much of an unreadable error body goes into the error message.
const BODY_EXCERPT_CHARS: usize = 300;

/// How much of an error answer is read: enough for any provider's error object.
const ERROR_BODY_BYTES: usize = 64 * 1024;

/// How long reading one answer may take and how much of it may be read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadBounds {
    pub timeout: Duration,
    /// Bytes read at most (`MAX_REPLY_BYTES`); past them the reply is `TooLarge`.
    pub max_bytes: usize,
}

impl ReadBounds {
    fn too_large(&self) -> ProviderError {
        ProviderError::TooLarge(format!(
            "more than MAX_REPLY_BYTES ({} bytes) were sent",
            self.max_bytes
        ))
    }
}

/// Where one provider's requests go, built once: its client, its URL (parsed once) and
/// the headers every request carries (`Content-Type`, `Host`, the key, marked sensitive
/// so that no debug output shows it, and any of the provider's own). A request copies
/// them instead of building them again: hyper would otherwise write `Host` anew for every
/// request, and a key header would be formatted anew.
#[derive(Debug)]
pub(crate) struct Endpoint {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
}

/// Why a provider's endpoint could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("the base URL is not a URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("the base URL has no host")]
    NoHost,
    #[error("the configured API key is not a valid header value")]
    Key,
}

impl Endpoint {
    /// Requests to `url`, each with `headers` and the key header (name and value), if
    /// any.
    pub(crate) fn new(
        timeout: Duration,
        url: &str,
        mut headers: HeaderMap,
        key: Option<(HeaderName, String)>,
    ) -> Result<Self, EndpointError> {
        let url = reqwest::Url::parse(url)?;
        let host = url.host_str().ok_or(EndpointError::NoHost)?;
        // What hyper-util's client would write: the port only when not the scheme's own
        // (`Url::port` leaves the default out).
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let host = HeaderValue::try_from(host).map_err(|_| EndpointError::NoHost)?;
        headers.insert(HOST, host);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some((name, key)) = key {
            let mut value = HeaderValue::try_from(key).map_err(|_| EndpointError::Key)?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self {
            client: client(timeout),
            url,
            headers,
        })
    }

    /// A POST of `body` with the endpoint's headers.
    pub(crate) fn post(&self, body: Bytes) -> reqwest::RequestBuilder {
        let mut request = reqwest::Request::new(reqwest::Method::POST, self.url.clone());
        // Room for what reqwest and hyper add (`Accept`, `Content-Length`) and a caller's
        // own: a clone of the map would be full, and grow on each of them.
        let headers = request.headers_mut();
        headers.reserve(self.headers.len() + 3);
        for (name, value) in &self.headers {
            headers.insert(name, value.clone());
        }
        *request.body_mut() = Some(body.into());
        reqwest::RequestBuilder::from_parts(self.client.clone(), request)
    }
}

/// One client per provider, built once: bounded by the provider timeout, following no
/// redirects (a key must never be sent on to another host).
fn client(timeout: Duration) -> reqwest::Client {
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
    bounds: ReadBounds,
) -> Result<Bytes, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(e, bounds.timeout))?;
    if response.status().is_success() {
        read_body(response, bounds).await
    } else {
        Err(error_answer(response, bounds).await)
    }
}

/// Reads a whole body, at most `bounds.max_bytes` of it (a larger one is refused by its
/// `Content-Length` before reading, or as soon as it passes the bound).
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    bounds: ReadBounds,
) -> Result<Bytes, ProviderError> {
    if response
        .content_length()
        .is_some_and(|length| length > bounds.max_bytes as u64)
    {
        return Err(bounds.too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(e, bounds.timeout))?
    {
        if body.len() + chunk.len() > bounds.max_bytes {
            return Err(bounds.too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A non-2xx answer as an error: its start (enough for an error object) is read, the
/// rest is left unread.
async fn error_answer(mut response: reqwest::Response, bounds: ReadBounds) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(error) => return transport_error(error, bounds.timeout),
        }
    }
    body.truncate(ERROR_BODY_BYTES);
    with_retry_after(upstream_error(status, &body), retry_after)
}

/// Sends a request whose answer is streamed and returns a 2xx response with its body
/// unread; a non-2xx answer is read whole and mapped as by [`send`].
pub(crate) async fn send_streaming(
    request: reqwest::RequestBuilder,
    bounds: ReadBounds,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(e, bounds.timeout))?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(error_answer(response, bounds).await)
}

/// The server-sent events of a streamed answer, each as soon as it is complete. A broken
/// connection or the timeout while reading maps as by [`transport_error`]; a body that is
/// not an event stream is an invalid reply; past `bounds.max_bytes` read (however they
/// are cut into events) the reply is `TooLarge`.
pub(crate) fn sse_events(
    response: reqwest::Response,
    bounds: ReadBounds,
) -> impl Stream<Item = Result<Event, ProviderError>> + Send + 'static {
    let mut read = 0usize;
    let bytes = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| transport_error(e, bounds.timeout))?;
        read += chunk.len();
        if read > bounds.max_bytes {
            return Err(bounds.too_large());
        }
        Ok(chunk)
    });
    bytes.eventsource().map(|event| {
        event.map_err(|error| match error {
            EventStreamError::Transport(error) => error,
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
