//! A mock LLM provider on port 0 that speaks OpenAI Chat Completions or the Anthropic
//! Messages API: it rejects what the real API rejects (`mock_openai` / `mock_anthropic`),
//! records every request in arrival order, and lets a test script latency and failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{mock_anthropic, mock_openai};

/// Which wire protocol the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    OpenAi,
    Anthropic,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub body: Value,
    pub headers: HeaderMap,
}

/// What the mock answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub delay: Duration,
}

type Script = Box<dyn Fn(&Value, usize) -> Option<Reply> + Send + Sync>;

struct Inner {
    protocol: Protocol,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
    /// A `Retry-After` header on every non-2xx answer.
    retry_after: Mutex<Option<String>>,
    /// A `Location` header on every non-2xx answer.
    location: Mutex<Option<String>>,
    /// Random latency up to this bound on every request.
    jitter: Mutex<Duration>,
    /// Overrides the default answer when it returns `Some`.
    script: Mutex<Option<Script>>,
    /// While `true`, requests are recorded but not answered.
    paused: tokio::sync::watch::Sender<bool>,
    /// While set, each answer waits for one permit (see [`MockProvider::step`]).
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// How streamed answers (requests with `"stream": true`) are paced and shaped.
    stream_plan: Mutex<StreamPlan>,
    /// Streamed answers whose client went away before the end.
    disconnects: tokio::sync::watch::Sender<usize>,
}

/// How the mock streams: the reply's pieces (by default the words of
/// `reply to: <last user text>`), or tool calls, one event every `interval`, and
/// optionally a broken connection after `fail_after` events. An `endless` text stream
/// repeats its last piece for ever and never ends.
#[derive(Debug, Clone, Default)]
pub struct StreamPlan {
    pub pieces: Option<Vec<String>>,
    pub tool_calls: Option<Vec<(String, String, String)>>,
    pub interval: Duration,
    pub fail_after: Option<usize>,
    pub endless: bool,
}

/// A running mock provider.
#[derive(Clone)]
pub struct MockProvider {
    /// What the service's `*_BASE_URL` should be set to.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl MockProvider {
    pub async fn start(protocol: Protocol) -> Self {
        let inner = Arc::new(Inner {
            protocol,
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            jitter: Mutex::new(Duration::ZERO),
            retry_after: Mutex::new(None),
            location: Mutex::new(None),
            script: Mutex::new(None),
            paused: tokio::sync::watch::Sender::new(false),
            gate: Mutex::new(None),
            stream_plan: Mutex::new(StreamPlan::default()),
            disconnects: tokio::sync::watch::Sender::new(0),
        });
        let (path, prefix) = match protocol {
            Protocol::OpenAi => ("/v1/chat/completions", "/v1"),
            Protocol::Anthropic => ("/v1/messages", ""),
        };
        let app = Router::new()
            .route(path, post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base_url: format!("http://{addr}{prefix}"),
            inner,
        }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have arrived (bounded by 10 s).
    pub async fn wait_for_requests(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.inner.arrived.notified();
                if self.request_count() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "expected {n} provider requests, got {}",
                    self.request_count()
                )
            });
    }

    /// Sends `Retry-After: <value>` with every non-2xx answer from now on.
    pub fn set_retry_after(&self, value: Option<&str>) {
        *self.inner.retry_after.lock().unwrap() = value.map(str::to_owned);
    }

    /// Sends `Location: <value>` with every non-2xx answer from now on.
    pub fn set_location(&self, value: Option<&str>) {
        *self.inner.location.lock().unwrap() = value.map(str::to_owned);
    }

    /// Shapes the streamed answers from now on.
    pub fn set_stream_plan(&self, plan: StreamPlan) {
        *self.inner.stream_plan.lock().unwrap() = plan;
    }

    /// Waits until a streamed answer's client has gone away (bounded by 5 s).
    pub async fn wait_for_disconnect(&self) {
        let mut disconnects = self.inner.disconnects.subscribe();
        tokio::time::timeout(Duration::from_secs(5), disconnects.wait_for(|n| *n > 0))
            .await
            .expect("the provider connection was never closed")
            .unwrap();
    }

    /// From now on each answer waits until [`MockProvider::step`] lets one through.
    pub fn gate(&self) {
        *self.inner.gate.lock().unwrap() = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Lets one gated answer through.
    pub fn step(&self) {
        if let Some(gate) = self.inner.gate.lock().unwrap().as_ref() {
            gate.add_permits(1);
        }
    }

    /// Holds every answer until [`MockProvider::resume`].
    pub fn pause(&self) {
        self.inner.paused.send_replace(true);
    }

    /// Lets held and later answers go.
    pub fn resume(&self) {
        self.inner.paused.send_replace(false);
    }

    /// Adds a random latency of up to `max` to every answer.
    pub fn set_jitter(&self, max: Duration) {
        *self.inner.jitter.lock().unwrap() = max;
    }

    /// Answers with `script(body, index)` where it returns `Some`; `index` counts from 0.
    pub fn script(&self, script: impl Fn(&Value, usize) -> Option<Reply> + Send + Sync + 'static) {
        *self.inner.script.lock().unwrap() = Some(Box::new(script));
    }

    /// Answers every request after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        let protocol = self.inner.protocol;
        self.script(move |body, _| {
            Some(Reply {
                status: 200,
                body: default_reply(protocol, body),
                delay,
            })
        });
    }

    /// A reply of this protocol calling tools: `(id, name, arguments)`.
    pub fn tool_call_reply(&self, calls: &[(&str, &str, &str)]) -> Value {
        match self.inner.protocol {
            Protocol::OpenAi => mock_openai::tool_call_reply("mock-model", calls),
            Protocol::Anthropic => mock_anthropic::tool_call_reply("mock-model", calls),
        }
    }

    /// An error body of this protocol.
    pub fn error_reply(&self, status: u16, message: &str) -> Reply {
        let body = match self.inner.protocol {
            Protocol::OpenAi => {
                json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
            }
            Protocol::Anthropic => {
                json!({"type": "error", "error": {"type": "api_error", "message": message}})
            }
        };
        Reply {
            status,
            body,
            delay: Duration::ZERO,
        }
    }
}

/// The reply text the mock gives by default: `reply to: <last user text>`.
pub fn reply_text_for(user_text: &str) -> String {
    format!("reply to: {user_text}")
}

/// The text of the last user message of a request body, whatever its protocol.
pub fn last_user_text(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let Some(last_user) = messages.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &last_user["content"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn default_reply(protocol: Protocol, body: &Value) -> Value {
    let text = reply_text_for(&last_user_text(body));
    match protocol {
        Protocol::OpenAi => mock_openai::text_reply("mock-model", &text),
        Protocol::Anthropic => mock_anthropic::text_reply("mock-model", &text),
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let index = {
        let mut requests = inner.requests.lock().unwrap();
        requests.push(Recorded {
            body: body.clone(),
            headers: headers.clone(),
        });
        requests.len() - 1
    };
    inner.arrived.notify_waiters();
    let rejection = match inner.protocol {
        Protocol::OpenAi => mock_openai::reject_reason(&body).map(|r| mock_openai::error_body(&r)),
        Protocol::Anthropic => {
            mock_anthropic::reject_reason(&body).map(|r| mock_anthropic::error_body(&r))
        }
    };
    if let Some(error) = rejection {
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let scripted = inner
        .script
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|script| script(&body, index));
    let reply = scripted.unwrap_or_else(|| Reply {
        status: 200,
        body: default_reply(inner.protocol, &body),
        delay: Duration::ZERO,
    });
    let mut paused = inner.paused.subscribe();
    let _ = paused.wait_for(|paused| !*paused).await;
    let gate = inner.gate.lock().unwrap().clone();
    if let Some(gate) = gate {
        gate.acquire().await.unwrap().forget();
    }
    let jitter = *inner.jitter.lock().unwrap();
    let extra = if jitter.is_zero() {
        Duration::ZERO
    } else {
        jitter.mul_f64(rand::random::<f64>())
    };
    tokio::time::sleep(reply.delay + extra).await;
    if reply.status == 200 && body["stream"] == true {
        return stream_reply(&inner, &body);
    }
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        Json(reply.body),
    )
        .into_response();
    if reply.status >= 300
        && let Some(value) = inner.retry_after.lock().unwrap().clone()
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, value.parse().unwrap());
    }
    response
}

/// The SSE frames of a streamed answer in the mock's protocol.
fn frames(protocol: Protocol, plan: &StreamPlan, body: &Value) -> Vec<String> {
    let default_pieces = || {
        let text = reply_text_for(&last_user_text(body));
        text.split(' ')
            .enumerate()
            .map(|(i, word)| {
                if i == 0 {
                    word.to_owned()
                } else {
                    format!(" {word}")
                }
            })
            .collect::<Vec<_>>()
    };
    let pieces = plan.pieces.clone().unwrap_or_else(default_pieces);
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let calls: Option<Vec<(&str, &str, &str)>> = plan.tool_calls.as_ref().map(|calls| {
        calls
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect()
    });
    match protocol {
        Protocol::OpenAi => {
            let chunks = match &calls {
                Some(calls) => mock_openai::stream_tool_call_chunks("mock-model", calls),
                None => mock_openai::stream_text_chunks("mock-model", &pieces),
            };
            let mut frames: Vec<String> = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            frames.push("data: [DONE]\n\n".to_owned());
            frames
        }
        Protocol::Anthropic => {
            let events = match &calls {
                Some(calls) => mock_anthropic::stream_tool_call_events("mock-model", calls),
                None => mock_anthropic::stream_text_events("mock-model", &pieces),
            };
            events
                .iter()
                .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
                .collect()
        }
    }
}

/// Counts a client that went away before the last frame.
struct DisconnectWatch {
    inner: Arc<Inner>,
    finished: bool,
}

impl Drop for DisconnectWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.inner.disconnects.send_modify(|n| *n += 1);
        }
    }
}

fn stream_reply(inner: &Arc<Inner>, body: &Value) -> Response {
    let plan = inner.stream_plan.lock().unwrap().clone();
    let mut frames = frames(inner.protocol, &plan, body);
    if plan.endless {
        // The frames that close a text reply: OpenAI's last chunk and `[DONE]`;
        // Anthropic's content_block_stop, message_delta and message_stop.
        let closing = match inner.protocol {
            Protocol::OpenAi => 2,
            Protocol::Anthropic => 3,
        };
        frames.truncate(frames.len() - closing);
        let last = frames.last().cloned().unwrap_or_default();
        let endless = frames.into_iter().chain(std::iter::repeat(last));
        let stream = futures::stream::iter(endless.map(Ok::<_, std::io::Error>));
        return (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    let watch = DisconnectWatch {
        inner: inner.clone(),
        finished: false,
    };
    let state = (frames.into_iter().enumerate(), plan, watch);
    let stream = futures::stream::unfold(state, |(mut frames, plan, mut watch)| async move {
        let (index, frame) = frames.next()?;
        if index > 0 {
            tokio::time::sleep(plan.interval).await;
        }
        if plan.fail_after == Some(index) {
            watch.finished = true;
            return Some((
                Err(std::io::Error::other("connection broken")),
                (frames, plan, watch),
            ));
        }
        if frames.len() == 0 {
            watch.finished = true;
        }
        Some((Ok::<_, std::io::Error>(frame), (frames, plan, watch)))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}
