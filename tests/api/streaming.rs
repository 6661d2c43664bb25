//! Streaming writes: event names, shapes and ids for each provider, deltas that leave
//! before the provider finishes, turns that survive a dropped client, replay.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::sse::{SseEvent, all_events, events, names};
use test_support::mock_provider::StreamPlan;

pub async fn stream_message(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    let mut body = body;
    body["stream"] = json!(true);
    app.post(&format!("/text/session/{id}/message"), &body)
        .await
}

/// Ids are `<turnId>:<seq>` with seq 1, 2, 3… and one turn id throughout.
fn assert_ids(events: &[SseEvent]) {
    let turn_id = events[0].turn_id().to_owned();
    assert!(uuid::Uuid::parse_str(&turn_id).is_ok());
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.turn_id(), turn_id);
        assert_eq!(event.seq(), i + 1, "seq from 1 without gaps: {events:?}");
    }
}

fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.name == "text.delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_streamed_text_reply_has_the_contract_events_ids_and_shapes_for_every_provider() {
    let app = spawn_app().await;
    for provider in ["echo", "openai", "anthropic"] {
        let id = app.create_session(json!({"provider": provider})).await;
        let response = stream_message(&app, &id, json!({"content": "hello there world"})).await;
        let turn_header = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
        let events = all_events(response).await;

        assert_ids(&events);
        assert_eq!(events[0].turn_id(), turn_header);
        let names = names(&events);
        assert_eq!(
            names.first(),
            Some(&"turn.started"),
            "{provider}: {names:?}"
        );
        assert_eq!(
            names.last(),
            Some(&"turn.completed"),
            "{provider}: {names:?}"
        );
        assert!(
            names[1..names.len() - 1].iter().all(|n| *n == "text.delta"),
            "{provider}: {names:?}"
        );
        assert!(
            names.len() >= 4,
            "{provider}: the reply streams in several deltas: {names:?}"
        );
        assert_eq!(events[0].data, json!({"turnId": turn_header}));
        let completed = &events.last().unwrap().data;
        let expected = if provider == "echo" {
            "echo: hello there world"
        } else {
            "reply to: hello there world"
        };
        assert_eq!(text_of(&events), expected, "{provider}");
        assert_eq!(completed["result"]["text"], expected);
        assert_eq!(completed["result"]["finishReason"], "stop");
        assert_eq!(completed["result"]["provider"], provider);
        let messages = completed["session"]["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1]["content"], expected);
        assert_eq!(app.messages(&id).await, *messages, "{provider}: committed");
    }
}

#[tokio::test]
async fn a_streamed_tool_call_reply_sends_tool_call_events_for_openai_and_anthropic() {
    let app = spawn_app().await;
    let tool = json!({"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    for (provider, mock) in [("openai", &app.openai), ("anthropic", &app.anthropic)] {
        mock.set_stream_plan(StreamPlan {
            tool_calls: Some(vec![
                (
                    "call_1".into(),
                    "get_weather".into(),
                    r#"{"city":"Oslo"}"#.into(),
                ),
                (
                    "call_2".into(),
                    "get_weather".into(),
                    r#"{"city":"Bergen"}"#.into(),
                ),
            ]),
            ..Default::default()
        });
        let id = app
            .create_session(json!({"provider": provider, "tools": [tool]}))
            .await;
        let events =
            all_events(stream_message(&app, &id, json!({"content": "weather?"})).await).await;
        assert_ids(&events);
        let calls: Vec<&Value> = events
            .iter()
            .filter(|e| e.name == "tool_call")
            .map(|e| &e.data)
            .collect();
        assert_eq!(
            calls,
            [
                &json!({"id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}),
                &json!({"id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Bergen\"}"}),
            ],
            "{provider}"
        );
        let completed = events.last().unwrap();
        assert_eq!(completed.name, "turn.completed");
        assert_eq!(completed.data["result"]["finishReason"], "tool_calls");
        assert_eq!(
            completed.data["result"]["toolCalls"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let history = app.messages(&id).await;
        assert_eq!(
            history[1]["toolCalls"],
            completed.data["result"]["toolCalls"]
        );
    }
}

#[tokio::test]
async fn accept_text_event_stream_streams_without_the_body_flag() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let response = app
        .client
        .post(app.url(&format!("/text/session/{id}/instructions")))
        .header("accept", "text/event-stream")
        .json(&json!("be brief"))
        .send()
        .await
        .unwrap();
    let events = all_events(response).await;
    assert_eq!(events.last().unwrap().name, "turn.completed");
    assert_eq!(text_of(&events), "echo: be brief");
}

#[tokio::test]
async fn the_first_delta_reaches_the_client_long_before_the_provider_finishes() {
    let app = spawn_app().await;
    let pieces: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    app.openai.set_stream_plan(StreamPlan {
        pieces: Some(pieces),
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let id = app.create_session(json!({"provider": "openai"})).await;
    let started = Instant::now();
    let mut stream = events(stream_message(&app, &id, json!({"content": "go"})).await);
    let first_delta = loop {
        let event = stream.next().await.unwrap();
        if event.name == "text.delta" {
            break started.elapsed();
        }
    };
    let rest: Vec<_> = stream.collect().await;
    let total = started.elapsed();
    assert!(
        first_delta < Duration::from_millis(300),
        "first delta after {first_delta:?}"
    );
    assert!(
        total >= Duration::from_millis(1500),
        "the provider took {total:?}"
    );
    assert_eq!(rest.last().unwrap().name, "turn.completed");
}

#[tokio::test]
async fn a_waiting_streaming_turn_says_where_it_waits() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let holder = {
        let client = app.client.clone();
        let url = app.url(&format!("/text/session/{id}/message"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"content": "first"}))
                .send()
                .await
                .unwrap()
        })
    };
    app.openai.wait_for_requests(1).await;
    let response = stream_message(&app, &id, json!({"content": "second"})).await;
    let mut stream = events(response);
    let waiting = stream.next().await.unwrap();
    assert_eq!(waiting.name, "turn.waiting");
    assert_eq!(waiting.seq(), 1);
    assert_eq!(waiting.data["position"], 1);
    assert_eq!(waiting.data["turnId"], waiting.turn_id());
    app.openai.resume();
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(rest[0].name, "turn.started");
    assert_eq!(rest.last().unwrap().name, "turn.completed");
    holder.await.unwrap();
}

#[tokio::test]
async fn a_client_that_drops_off_loses_nothing_and_can_replay_every_event() {
    let app = spawn_app().await;
    let pieces: Vec<String> = (0..10).map(|i| format!("p{i} ")).collect();
    app.openai.set_stream_plan(StreamPlan {
        pieces: Some(pieces.clone()),
        interval: Duration::from_millis(30),
        ..Default::default()
    });
    let id = app.create_session(json!({"provider": "openai"})).await;
    let response = stream_message(&app, &id, json!({"content": "go"})).await;
    let turn_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let mut stream = events(response);
    while stream.next().await.unwrap().name != "text.delta" {}
    drop(stream);

    app.wait_for_status(&id, |s| s["busy"] == false).await;
    let history = app.messages(&id).await;
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[1]["content"],
        pieces.concat(),
        "the whole reply was committed"
    );

    let replay_url = app.url(&format!("/text/session/{id}/turns/{turn_id}/events"));
    let all = all_events(app.client.get(&replay_url).send().await.unwrap()).await;
    assert_ids(&all);
    assert_eq!(text_of(&all), pieces.concat());
    assert_eq!(all.last().unwrap().name, "turn.completed");

    let after_five = all_events(
        app.client
            .get(&replay_url)
            .header("last-event-id", format!("{turn_id}:5"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let seqs: Vec<_> = after_five.iter().map(SseEvent::seq).collect();
    assert_eq!(seqs, (6..=all.len()).collect::<Vec<_>>());

    let last = format!("{turn_id}:{}", all.len());
    let done = app
        .client
        .get(&replay_url)
        .header("last-event-id", last)
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status(),
        StatusCode::NO_CONTENT,
        "an ended turn tells EventSource to stop"
    );
}

#[tokio::test]
async fn replay_follows_a_running_turn_live_until_it_ends() {
    let app = spawn_app().await;
    app.openai.set_stream_plan(StreamPlan {
        pieces: Some((0..5).map(|i| format!("x{i}")).collect()),
        interval: Duration::from_millis(50),
        ..Default::default()
    });
    let id = app.create_session(json!({"provider": "openai"})).await;
    let response = stream_message(&app, &id, json!({"content": "go"})).await;
    let turn_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    drop(response);
    let replay = app
        .get(&format!("/text/session/{id}/turns/{turn_id}/events"))
        .await;
    let events = all_events(replay).await;
    assert_ids(&events);
    assert_eq!(text_of(&events), "x0x1x2x3x4");
    assert_eq!(events.last().unwrap().name, "turn.completed");
}

#[tokio::test]
async fn replay_of_an_unknown_turn_is_404_turn_not_found_and_a_foreign_last_event_id_is_400() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    for turn in [uuid::Uuid::new_v4().to_string(), "nope".to_owned()] {
        let response = app
            .get(&format!("/text/session/{id}/turns/{turn}/events"))
            .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "turn_not_found");
    }
    let (_, body) = app.message(&id, json!({"content": "hi"})).await;
    let turn = body["turnId"].as_str().unwrap();
    let response = app
        .client
        .get(app.url(&format!("/text/session/{id}/turns/{turn}/events")))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let another = uuid::Uuid::new_v4();
    let response = app
        .client
        .get(app.url(&format!("/text/session/{id}/turns/{turn}/events")))
        .header("last-event-id", format!("{another}:1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "another turn's event"
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(turn));
}

#[tokio::test]
async fn a_provider_error_after_some_deltas_fails_the_turn_and_leaves_the_history_unchanged() {
    let app = spawn_app().await;
    for (provider, mock) in [("openai", &app.openai), ("anthropic", &app.anthropic)] {
        mock.set_stream_plan(StreamPlan {
            pieces: Some((0..6).map(|i| format!("d{i} ")).collect()),
            fail_after: Some(4),
            ..Default::default()
        });
        let id = app
            .create_session(json!({"provider": provider, "instructions": "sys"}))
            .await;
        let before = app.session(&id).await;
        let events = all_events(stream_message(&app, &id, json!({"content": "go"})).await).await;
        assert_ids(&events);
        assert!(
            names(&events).contains(&"text.delta"),
            "{provider}: some deltas first"
        );
        let failed = events.last().unwrap();
        assert_eq!(failed.name, "turn.failed", "{provider}");
        assert_eq!(failed.data["error"]["code"], "provider_error");
        let after = app.session(&id).await;
        assert_eq!(after["messages"], before["messages"], "{provider}: atomic");
        assert_eq!(after["version"], before["version"]);
    }
}

#[tokio::test]
async fn the_events_of_only_the_last_few_turns_are_kept() {
    let app = spawn_app_with(|c| c.turn_events_keep = 16).await;
    let id = app.create_session(json!({})).await;
    let mut turn_ids = Vec::new();
    for i in 0..1000 {
        let (status, body) = app.message(&id, json!({"content": format!("m{i}")})).await;
        assert_eq!(status, StatusCode::OK);
        turn_ids.push(body["turnId"].as_str().unwrap().to_owned());
    }
    let mut replayable = Vec::new();
    for (i, turn) in turn_ids.iter().enumerate() {
        let response = app
            .get(&format!("/text/session/{id}/turns/{turn}/events"))
            .await;
        if response.status() == StatusCode::OK {
            replayable.push(i);
        } else {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
    }
    assert_eq!(replayable, (984..1000).collect::<Vec<_>>());
}
