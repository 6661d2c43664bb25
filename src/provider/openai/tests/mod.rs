//! Unit tests of the OpenAI mapping, one file per part of it, and the helpers they share
//! (messages, encoding, a local server on port 0). Tests of the whole service with a mock
//! OpenAI live in `tests/api/`.

use bytes::Bytes;
use serde_json::Value;

use super::reply::WireReply;
use super::*;
use crate::message::{Defaults, Message, Role, Timestamp, Tool, ToolCall};
use crate::provider::{ChatReply, FinishReason, ProviderError, StreamEvent, Usage};

mod chunks;
mod history;
mod reply;
mod request;
mod send;
mod stream;

fn call(id: &str) -> ToolCall {
    ToolCall {
        id: id.to_owned(),
        name: "get_weather".to_owned(),
        arguments: r#"{"city":"Oslo"}"#.to_owned(),
    }
}

fn calling(content: &str, ids: &[&str]) -> Message {
    let mut message = Message::text(Role::Assistant, content, Timestamp::now());
    message.tool_calls = ids.iter().map(|id| call(id)).collect();
    message
}

fn text(role: Role, content: &str) -> Message {
    Message::text(role, content, Timestamp::now())
}

fn output(id: &str, body: &str) -> Message {
    Message::tool_output(id, body, Timestamp::now())
}

fn config(base_url: String, key: Option<&str>) -> HttpProviderConfig {
    HttpProviderConfig {
        name: "openai".to_owned(),
        base_url,
        api_key: key.map(crate::secret::Secret::new),
        default_model: None,
        timeout: std::time::Duration::from_secs(5),
        reply_limits: Default::default(),
    }
}

fn provider_at(base_url: String, key: Option<&str>) -> OpenAi {
    OpenAi::new(config(base_url, key)).unwrap()
}

/// The body `encode` makes of this history, tools and settings.
fn encode_with(history: &[Message], tools: &[Tool], params: &Defaults, stream: bool) -> Value {
    let provider = provider_at("http://127.0.0.1:9".to_owned(), None);
    let request = ChatRequest {
        model: "gpt-test",
        history,
        staged: &[],
        tools,
        params,
        stream,
        left_out: 0..0,
    };
    serde_json::from_slice(&provider.encode(&request).unwrap()).unwrap()
}

fn messages_of(history: &[Message]) -> Value {
    encode_with(history, &[], &Defaults::default(), false)["messages"].clone()
}

fn decode(body: Value) -> Result<ChatReply, ProviderError> {
    http::decode::<WireReply>(&serde_json::to_vec(&body).unwrap())?.into_reply()
}

/// Serves `router` on a free port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}/v1")
}

/// A body for the local servers, which do not read it.
fn any_body() -> Bytes {
    Bytes::from_static(br#"{"model":"gpt-test","messages":[]}"#)
}
