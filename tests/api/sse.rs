//! Reading the service's Server-Sent Events in tests, with the same SSE parser the
//! service uses for providers.

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;

/// One event as the client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: String,
    pub name: String,
    pub data: Value,
}

impl SseEvent {
    /// The `<seq>` of an `id: <turnId>:<seq>`.
    pub fn seq(&self) -> usize {
        self.id.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// The `<turnId>` of an `id: <turnId>:<seq>`.
    pub fn turn_id(&self) -> &str {
        self.id.rsplit_once(':').unwrap().0
    }
}

/// The events of a response, as they arrive.
pub fn events(response: reqwest::Response) -> impl Stream<Item = SseEvent> + Unpin {
    Box::pin(response.bytes_stream().eventsource().map(|event| {
        let event = event.unwrap();
        SseEvent {
            id: event.id,
            name: event.event,
            data: serde_json::from_str(&event.data).unwrap(),
        }
    }))
}

/// The events of a response, as they arrive, until it ends or breaks (a relayed stream
/// whose source died ends mid-chunk, as a client sees a dropped connection).
pub fn events_until_broken(response: reqwest::Response) -> impl Stream<Item = SseEvent> + Unpin {
    Box::pin(
        response
            .bytes_stream()
            .eventsource()
            .take_while(|event| futures::future::ready(event.is_ok()))
            .map(|event| {
                let event = event.unwrap();
                SseEvent {
                    id: event.id,
                    name: event.event,
                    data: serde_json::from_str(&event.data).unwrap(),
                }
            }),
    )
}

/// Every event of a response, to its end.
pub async fn all_events(response: reqwest::Response) -> Vec<SseEvent> {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        response.headers()
    );
    events(response).collect().await
}

/// The event names, in order.
pub fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}
