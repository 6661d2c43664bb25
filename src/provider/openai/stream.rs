//! Reading a streamed reply off the wire: the `text/event-stream` answer parsed event by
//! event as its bytes arrive (never buffered whole, see [`http::sse_events`]) and fed
//! to the [`Assembler`]. What a
//! chunk means lives in `chunks.rs`; sending the request in the parent module.

use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;

use super::chunks::{Assembler, Step};
use super::reply::WireReply;
use crate::provider::http::{self, ReadBounds};
use crate::provider::{ChatReply, ProviderError, StreamEvent, StreamSink};

/// The SSE event name some compatible servers give an error sent inside the stream.
const ERROR_EVENT: &str = "error";

/// Reads a 2xx answer to a streaming request, handing each piece to `sink` as it comes.
pub(super) async fn read(
    response: reqwest::Response,
    bounds: ReadBounds,
    sink: StreamSink<'_>,
) -> Result<ChatReply, ProviderError> {
    if is_json(&response) {
        return read_whole(response, bounds, sink).await;
    }
    let status = response.status().as_u16();
    let mut assembler = Assembler::new(status);
    let mut events = std::pin::pin!(http::sse_events(response, bounds));
    while let Some(event) = events.next().await {
        let event = event?;
        if event.event == ERROR_EVENT {
            return Err(http::upstream_error(status, event.data.as_bytes()));
        }
        if assembler.push(&event.data, sink)? == Step::Done {
            break;
        }
    }
    assembler.finish(sink)
}

/// A compatible server that ignores `stream: true` answers one whole `chat.completion`.
async fn read_whole(
    response: reqwest::Response,
    bounds: ReadBounds,
    sink: StreamSink<'_>,
) -> Result<ChatReply, ProviderError> {
    let body = http::read_body(response, bounds).await?;
    let reply = http::decode::<WireReply>(&body)?.into_reply()?;
    if !reply.text.is_empty() {
        sink(StreamEvent::Text(reply.text.clone()));
    }
    for call in &reply.tool_calls {
        sink(StreamEvent::ToolCall(call.clone()));
    }
    Ok(reply)
}

fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/json"))
}
