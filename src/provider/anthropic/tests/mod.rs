//! Unit tests of the Anthropic provider, one file per part: the history mapping
//! (`history`, `tool_results`), the settings (`settings`), the reply (`reply`), sending
//! (`send`) and streaming (`stream_events` for the event assembly, `stream_http` over a
//! real connection, `events` the events they are fed). What they share is here: clients, encoding and message builders.

mod events;
mod history;
mod reply;
mod send;
mod settings;
mod stream_events;
mod stream_http;
mod tool_results;

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::message::{Defaults, Message, Role, Timestamp, Tool, ToolKind};
use crate::secret::Secret;

fn client() -> Anthropic {
    client_at("http://127.0.0.1:9", Some("sk-ant-secret"))
}

fn client_at(base_url: &str, key: Option<&str>) -> Anthropic {
    Anthropic::new(config_at(base_url, key)).unwrap()
}

fn config_at(base_url: &str, key: Option<&str>) -> HttpProviderConfig {
    HttpProviderConfig {
        name: "anthropic".into(),
        base_url: base_url.into(),
        api_key: key.map(Secret::new),
        default_model: Some("claude-sonnet-4-5".into()),
        timeout: Duration::from_secs(5),
        reply_limits: Default::default(),
    }
}

fn encode_with(history: &[Message], tools: &[Tool], params: &Defaults) -> Value {
    let request = ChatRequest {
        model: "claude-sonnet-4-5",
        history,
        staged: &[],
        tools,
        params,
        stream: false,
        left_out: 0..0,
    };
    serde_json::from_slice(&client().encode(&request).unwrap()).unwrap()
}

fn encode(history: &[Message]) -> Value {
    encode_with(history, &[], &Defaults::default())
}

fn system(text: &str) -> Message {
    Message::text(Role::System, text, Timestamp::now())
}

fn user(text: &str) -> Message {
    Message::text(Role::User, text, Timestamp::now())
}

fn assistant(text: &str) -> Message {
    Message::text(Role::Assistant, text, Timestamp::now())
}

fn weather_tool() -> Tool {
    Tool {
        kind: ToolKind::Function,
        name: "get_weather".into(),
        description: Some("Current weather".into()),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

fn text(text: &str) -> Value {
    json!({"type": "text", "text": text})
}
