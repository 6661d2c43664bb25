//! The request body: model, messages, tools, settings and the streaming switch. It
//! borrows from the [`ChatRequest`]; how the history becomes messages lives in
//! `history.rs`.

use serde::Serialize;
use serde_json::Value;

use super::FUNCTION;
use super::history::{WireMessage, wire_messages};
use crate::message::Tool;
use crate::provider::wire_json;
use crate::provider::{ChatRequest, KeptWire};

#[derive(Debug, Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    /// Written by hand, first (see [`WireRequest::to_json`]).
    #[serde(skip)]
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    /// Sent only as `true`: the non-streaming body stays as it always was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    /// Only allowed together with `stream: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

/// Asks for the final chunk that carries the usage of the whole request.
#[derive(Debug, Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

impl WireRequest<'_> {
    /// The body as JSON (`wire_json::body`).
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        wire_json::body(&self.messages, self)
    }
}

impl<'a> WireRequest<'a> {
    pub(super) fn from_request(request: &ChatRequest<'a>, kept: KeptWire<'a>) -> Self {
        let params = request.params;
        Self {
            model: request.model,
            messages: wire_messages(request, kept),
            tools: request.tools.iter().map(WireTool::from_tool).collect(),
            temperature: params.temperature,
            max_tokens: params.max_tokens,
            top_p: params.top_p,
            stop: params.stop.as_deref().filter(|stop| !stop.is_empty()),
            stream: request.stream,
            stream_options: request.stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }
}

impl<'a> WireTool<'a> {
    fn from_tool(tool: &'a Tool) -> Self {
        Self {
            kind: FUNCTION,
            function: WireFunction {
                name: &tool.name,
                description: tool.description.as_deref(),
                parameters: &tool.parameters,
            },
        }
    }
}
