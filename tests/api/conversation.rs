//! Conversation control, against the real binary: a burst of messages answered in one
//! turn (`onBusy: join`), the session's live feed (`GET …/events`), and forks.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use test_support::mock_provider::{MockProvider, Protocol};

use crate::durable::{StoreDir, kill};
use crate::service::{Service, spawn_service};
use crate::sse::{self, SseEvent};

async fn mock() -> MockProvider {
    MockProvider::start(Protocol::OpenAi).await
}

/// A write sent in a task of its own: (status, `x-turn-id`, body as JSON, or the events
/// of a stream as a JSON array of `{event, data}`).
fn spawn_write(
    service: &Service,
    id: &str,
    route: &str,
    body: Value,
) -> JoinHandle<(StatusCode, String, Value)> {
    let request = service
        .client
        .post(service.url(&format!("/text/session/{id}/{route}")))
        .json(&body);
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        let turn = response
            .headers()
            .get("x-turn-id")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let streamed = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
        let body = if streamed {
            let events = sse::all_events(response).await;
            json!(
                events
                    .iter()
                    .map(|e| json!({"event": e.name, "data": e.data}))
                    .collect::<Vec<_>>()
            )
        } else {
            response.json().await.unwrap()
        };
        (status, turn, body)
    })
}

async fn session(service: &Service, id: &str) -> Value {
    service.session_as(None, id).await
}

/// Polls until `waiting` writers wait on the session (bounded by 10 s).
async fn wait_until_waiting(service: &Service, id: &str, waiting: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = &session(service, id).await["status"];
        if status["waiting"] == waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never {waiting} waiting: {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The user messages' contents, in history order.
fn users(session: &Value) -> Vec<String> {
    session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// The roles of the history, one letter each (`s`, `u`, `a`).
fn roles(session: &Value) -> String {
    session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["role"].as_str().unwrap()[..1])
        .collect()
}

/// The contents of the user messages a provider request carried, in order.
fn sent_users(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts a plain message that holds the turn lock for the mock's delay, and waits until
/// its provider call arrived.
async fn hold(
    service: &Service,
    openai: &MockProvider,
    id: &str,
) -> JoinHandle<(StatusCode, String, Value)> {
    let before = openai.request_count();
    let holder = spawn_write(service, id, "message", json!({"content": "holder"}));
    openai.wait_for_requests(before + 1).await;
    holder
}

#[tokio::test]
async fn five_joined_messages_are_one_provider_call_and_one_reply_for_all_five() {
    let openai = mock().await;
    openai.set_delay(Duration::from_secs(1));
    let service = spawn_service(&openai, &[]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let holder = hold(&service, &openai, &id).await;

    let mut writers = Vec::new();
    let mut waiting = 0;
    for n in 0..6 {
        let content = if n == 3 {
            "removed".to_owned()
        } else {
            format!("part {n}")
        };
        // One streams; one is taken back before the turn starts.
        let body = json!({"content": content, "onBusy": "join", "stream": n == 1});
        writers.push((content, spawn_write(&service, &id, "message", body)));
        waiting += 1;
        wait_until_waiting(&service, &id, waiting).await;
    }
    let listed: Value = service
        .client
        .get(service.url(&format!("/text/session/{id}/turns?status=waiting")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let removed = listed["turns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["input"]["content"] == "removed")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let taken_back = service
        .client
        .delete(service.url(&format!("/text/session/{id}/turns/{removed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(taken_back.status(), StatusCode::OK);

    assert_eq!(holder.await.unwrap().0, StatusCode::OK);
    let mut answers = Vec::new();
    for (content, writer) in writers {
        answers.push((content, writer.await.unwrap()));
    }

    // Exactly one provider call for the burst, carrying each message on its own.
    let requests = openai.requests();
    assert_eq!(requests.len(), 2, "the holder's call and one for the burst");
    assert_eq!(
        sent_users(&requests[1].body),
        ["holder", "part 0", "part 1", "part 2", "part 4", "part 5"]
    );

    let (_, (status, _, body)) = &answers[3];
    assert_eq!(*status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "turn_cancelled");

    let joined: Vec<(String, (StatusCode, String, Value))> = answers
        .into_iter()
        .filter(|(content, _)| content != "removed")
        .collect();
    let ids: Vec<&str> = joined
        .iter()
        .map(|(_, (_, turn, _))| turn.as_str())
        .collect();
    let mut results = Vec::new();
    for (content, (status, _, body)) in &joined {
        assert_eq!(*status, StatusCode::OK, "{content}: {body}");
        let result = if content == "part 1" {
            let events = body.as_array().unwrap();
            let last = events.last().unwrap();
            assert_eq!(last["event"], "turn.completed", "{body}");
            assert!(events.iter().any(|e| e["event"] == "turn.waiting"));
            last["data"]["result"].clone()
        } else {
            body["result"].clone()
        };
        results.push(result);
    }
    for result in &results {
        assert_eq!(result, &results[0], "every writer gets the same result");
        let listed: Vec<&str> = result["joined"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(listed, ids, "all five turn ids, in arrival order");
    }

    let after = session(&service, &id).await;
    assert_eq!(roles(&after), "uauuuuua", "user-run then one assistant");
    assert_eq!(
        users(&after),
        ["holder", "part 0", "part 1", "part 2", "part 4", "part 5"]
    );
    assert_eq!(after["version"], 3, "created at 1, then two commits");
    assert_eq!(service.metric("text_session_turns_joined_total").await, 1.0);
    assert_eq!(service.metric("text_session_joined_writers_sum").await, 5.0);
    assert_eq!(
        service
            .metric("text_session_turns_total{outcome=\"completed\"}")
            .await,
        6.0
    );
}

#[tokio::test]
async fn join_and_plain_writers_keep_priority_and_arrival_and_a_plain_writer_never_joins() {
    let openai = mock().await;
    openai.set_delay(Duration::from_millis(300));
    let service = spawn_service(&openai, &[]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let holder = hold(&service, &openai, &id).await;
    let arrivals = [
        ("j1", "normal", "join"),
        ("p1", "normal", "wait"),
        ("j2", "low", "join"),
        ("p2", "high", "wait"),
        ("p3", "normal", "wait"),
    ];
    let mut writers = Vec::new();
    for (n, (content, priority, on_busy)) in arrivals.into_iter().enumerate() {
        let body = json!({"content": content, "priority": priority, "onBusy": on_busy});
        writers.push((content, spawn_write(&service, &id, "message", body)));
        wait_until_waiting(&service, &id, n as u64 + 1).await;
    }
    holder.await.unwrap();
    let mut answers = Vec::new();
    for (content, writer) in writers {
        let (status, turn, body) = writer.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{content}: {body}");
        answers.push((content, turn, body));
    }
    // p2 (high) first; the joined turn in j1's place, before p1; then p1 and p3.
    let after = session(&service, &id).await;
    assert_eq!(users(&after), ["holder", "p2", "j1", "j2", "p1", "p3"]);
    assert_eq!(roles(&after), "uauauuauaua");
    let calls: Vec<Vec<String>> = openai
        .requests()
        .iter()
        .map(|r| sent_users(&r.body).split_off(1))
        .collect();
    assert_eq!(calls.len(), 5);
    for (content, turn, body) in &answers {
        let joined = &body["result"]["joined"];
        if content.starts_with('p') {
            assert!(joined.is_null(), "{content} never joins: {body}");
        } else {
            let (j1, j2) = (&answers[0].1, &answers[2].1);
            assert_eq!(joined, &json!([j1, j2]), "{content} ({turn})");
        }
    }
}

#[tokio::test]
async fn a_joined_writer_refused_when_the_turn_starts_is_answered_at_once_and_the_others_run() {
    use futures::StreamExt;
    let openai = mock().await;
    openai.set_delay(Duration::from_millis(800));
    let service = spawn_service(&openai, &[]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let mut feed = follow(&service, &id, "?version=1", None).await;
    let holder = hold(&service, &openai, &id).await;
    // The first joiner names the version before the holder's commit: refused then.
    let stale = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .header("if-match", "\"1\"")
        .json(&json!({"content": "stale", "onBusy": "join"}));
    let stale = tokio::spawn(async move {
        let response = stale.send().await.unwrap();
        let turn = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
        (response.status(), turn, Instant::now())
    });
    wait_until_waiting(&service, &id, 1).await;
    let mut others = Vec::new();
    for (n, content) in ["a", "b"].into_iter().enumerate() {
        let body = json!({"content": content, "onBusy": "join"});
        others.push(spawn_write(&service, &id, "message", body));
        wait_until_waiting(&service, &id, n as u64 + 2).await;
    }
    holder.await.unwrap();
    let (status, stale_turn, answered) = stale.await.unwrap();
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    // Answered while the others' turn still runs, which it does not belong to.
    let running = session(&service, &id).await["status"].clone();
    assert_eq!(running["busy"], true, "{running}");
    assert_ne!(running["runningTurnId"], stale_turn.as_str());
    let mut ids = Vec::new();
    for other in others {
        let (status, turn, body) = other.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(Instant::now() > answered);
        ids.push(turn);
    }
    let after = session(&service, &id).await;
    assert_eq!(users(&after), ["holder", "a", "b"]);
    // The feed: the refused writer ends under its own id; the joined turn's start and
    // end name its writers.
    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .unwrap()
    {
        let done = event.name == "turn.completed" && event.data["turnId"] == ids[0].as_str();
        seen.push(event);
        if done {
            break;
        }
    }
    let failed = seen.iter().find(|e| e.name == "turn.failed").unwrap();
    assert_eq!(failed.data["turnId"], stale_turn.as_str());
    assert_eq!(failed.data["error"]["code"], "version_mismatch");
    let started = seen.iter().rfind(|e| e.name == "turn.started").unwrap();
    assert_eq!(started.data["joined"], json!(ids));
    assert_eq!(seen.last().unwrap().data["joined"], json!(ids));
}

#[tokio::test]
async fn a_join_writer_on_an_idle_session_runs_as_usual_and_tool_outputs_cannot_join() {
    let openai = mock().await;
    let service = spawn_service(&openai, &[]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let (status, turn, body) = spawn_write(
        &service,
        &id,
        "instructions",
        json!({"instructions": "Be brief.", "onBusy": "join"}),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["joined"], json!([turn]));
    let (status, _, body) = spawn_write(
        &service,
        &id,
        "tool-output",
        json!({"toolOutputs": [{"callId": "c1", "output": "x"}], "onBusy": "join"}),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("onBusy")
    );
}

/// Opens the session's feed with `query` (e.g. `?version=1`) and `Last-Event-ID`.
async fn follow(
    service: &Service,
    id: &str,
    query: &str,
    last_event_id: Option<&str>,
) -> impl futures::Stream<Item = SseEvent> + Unpin {
    let mut request = service
        .client
        .get(service.url(&format!("/text/session/{id}/events{query}")));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    sse::events(response)
}

/// Reads a feed until its `commits`-th `session.committed` and the event after it
/// (the turn's end), bounded by 10 s.
async fn read_commits(
    feed: &mut (impl futures::Stream<Item = SseEvent> + Unpin),
    commits: usize,
) -> Vec<SseEvent> {
    use futures::StreamExt;
    let mut events = Vec::new();
    let mut seen = 0;
    let read = async {
        while let Some(event) = feed.next().await {
            let done = seen == commits;
            seen += usize::from(event.name == "session.committed");
            events.push(event);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the feed went quiet");
    events
}

/// `(version, seq)` of a feed event's id.
fn feed_id(event: &SseEvent) -> (u64, u64) {
    let (version, seq) = event.id.split_once(':').unwrap();
    (version.parse().unwrap(), seq.parse().unwrap())
}

/// What a feed delivered, comparable across followers: (id, name, data).
fn delivered(events: &[SseEvent]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .map(|e| (e.id.clone(), e.name.clone(), e.data.clone()))
        .collect()
}

#[tokio::test]
async fn followers_of_the_feed_get_every_event_and_commit_in_order_and_resume_missing_nothing() {
    let openai = mock().await;
    let service = spawn_service(&openai, &[]).await;
    let id = service
        .create_session(json!({"instructions": "Be brief."}))
        .await;
    let version = session(&service, &id).await["version"].as_u64().unwrap();
    let query = format!("?version={version}");
    let mut a = follow(&service, &id, &query, None).await;
    let mut b = follow(&service, &id, &query, None).await;
    let mut c = Some(follow(&service, &id, &query, None).await);

    let turns = [
        ("message", json!({"content": "one"})),
        (
            "message",
            json!({"content": "two words streamed", "stream": true}),
        ),
        (
            "instructions",
            json!({"instructions": "three", "onBusy": "join"}),
        ),
    ];
    let mut turn_ids = Vec::new();
    let mut c_events = Vec::new();
    for (n, (route, body)) in turns.into_iter().enumerate() {
        let (status, turn, _) = spawn_write(&service, &id, route, body).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        turn_ids.push(turn);
        if n == 0 {
            // The third follower reads the first turn, then goes away.
            c_events = read_commits(c.as_mut().unwrap(), 1).await;
            c = None;
        }
    }
    assert!(c.is_none());
    let a_events = read_commits(&mut a, 3).await;
    let b_events = read_commits(&mut b, 3).await;
    assert_eq!(
        delivered(&a_events),
        delivered(&b_events),
        "both followers see the same"
    );

    // In order: ids strictly increase; a commit is `<version>:0`, its version one more.
    let ids: Vec<(u64, u64)> = a_events.iter().map(feed_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let names = sse::names(&a_events);
    let per_turn: Vec<&[&str]> = names.split(|n| *n == "turn.completed").collect();
    for (n, events) in per_turn.iter().take(3).enumerate() {
        assert_eq!(events.first(), Some(&"turn.started"), "turn {n}: {names:?}");
        assert_eq!(
            events.last(),
            Some(&"session.committed"),
            "turn {n}: {names:?}"
        );
        assert!(events.contains(&"text.delta"), "turn {n}: {names:?}");
    }
    assert!(
        per_turn[1].iter().filter(|n| **n == "text.delta").count() > 1,
        "the streamed turn's deltas arrive one by one: {names:?}"
    );
    let mut appended = Vec::new();
    let mut expected_version = version;
    let turn_order: Vec<usize> = a_events.iter().map(|e| turn_index(&turn_ids, e)).collect();
    assert!(
        turn_order.windows(2).all(|w| w[0] <= w[1]) && turn_order.last() == Some(&2),
        "each event names its turn, one turn after the other: {turn_order:?}"
    );
    for event in &a_events {
        if event.name == "session.committed" {
            expected_version += 1;
            assert_eq!(event.data["version"], expected_version);
            assert_eq!(feed_id(event), (expected_version, 0));
            appended.extend(event.data["newMessages"].as_array().unwrap().clone());
        }
    }
    // The commits, put together, are the history since the version followed from.
    let history = session(&service, &id).await["messages"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(appended, history[1..].to_vec());

    // The follower that went away resumes after the last event it saw: nothing missed,
    // nothing twice.
    let last = c_events.last().unwrap().id.clone();
    let mut resumed = follow(&service, &id, "", Some(&last)).await;
    let rest = read_commits(&mut resumed, 2).await;
    let mut whole = c_events.clone();
    whole.extend(rest);
    assert_eq!(delivered(&whole), delivered(&a_events));
}

/// Which of `turns` a feed event belongs to (by its `turnId`).
fn turn_index(turns: &[String], event: &SseEvent) -> usize {
    turns
        .iter()
        .position(|t| event.data["turnId"] == t.as_str())
        .unwrap_or_else(|| panic!("an event of no turn sent: {event:?}"))
}

#[tokio::test]
async fn a_follower_paused_past_the_feeds_bound_gets_session_resync_and_its_feed_ends() {
    use futures::StreamExt;
    let openai = mock().await;
    let service = spawn_service(&openai, &[("FEED_EVENTS", "50")]).await;
    let id = service.create_session(json!({})).await;
    let response = service
        .client
        .get(service.url(&format!("/text/session/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The follower reads nothing while ten streamed replies of 3,000 words each (far
    // more than the socket buffers hold) go by.
    let words: Vec<String> = (0..3000).map(|n| format!("w{n}")).collect();
    let content = words.join(" ");
    for _ in 0..10 {
        let body = json!({"content": content, "stream": true});
        let (status, _, _) = spawn_write(&service, &id, "message", body).await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let version = session(&service, &id).await["version"].as_u64().unwrap();
    let events: Vec<SseEvent> = tokio::time::timeout(
        Duration::from_secs(20),
        sse::events(response).collect::<Vec<_>>(),
    )
    .await
    .expect("the feed ends");
    let last = events.last().unwrap();
    assert_eq!(last.name, "session.resync", "{} events", events.len());
    // The version when the service found the follower behind (its socket took a while
    // longer to fill up).
    let told = last.data["version"].as_u64().unwrap();
    assert!((1..=version).contains(&told), "{last:?}");
    assert!(
        events.len() < 10 * 3000,
        "the follower fell behind rather than getting everything"
    );
    assert_eq!(service.metric("text_session_feed_resyncs_total").await, 1.0);
    // Resuming from a version the feed no longer holds is a resync too.
    let mut stale = follow(&service, &id, "?version=1", None).await;
    let first = stale.next().await.unwrap();
    assert_eq!(first.name, "session.resync");
    assert_eq!(first.data, json!({"version": version}));
    assert!(stale.next().await.is_none());
    // As told: read the session, follow from its version.
    let query = format!("?version={version}");
    let mut again = follow(&service, &id, &query, None).await;
    let (status, _, _) = spawn_write(&service, &id, "message", json!({"content": "hi"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let events = read_commits(&mut again, 1).await;
    assert_eq!(feed_id(&events[events.len() - 2]), (version + 1, 0));
}

#[tokio::test]
async fn with_api_keys_a_browser_opens_the_feed_with_an_events_token_of_that_session_only() {
    let openai = mock().await;
    let service = spawn_service(&openai, &[("API_KEYS", "key-a,key-b")]).await;
    let mine = service.create_session_as(Some("key-a"), json!({})).await;
    let other = service.create_session_as(Some("key-a"), json!({})).await;
    let theirs = service.create_session_as(Some("key-b"), json!({})).await;
    let minted = service
        .request_as(
            reqwest::Method::POST,
            Some("key-a"),
            &format!("/text/session/{mine}/events/token"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), StatusCode::OK);
    let minted: Value = minted.json().await.unwrap();
    let token = minted["token"].as_str().unwrap();
    let url = minted["url"].as_str().unwrap();
    assert_eq!(
        url,
        format!("/text/session/{mine}/events?access_token={token}")
    );

    // As an EventSource would: no Authorization header.
    let open = |path: String| service.client.get(service.url(&path)).send();
    let feed = open(url.to_owned()).await.unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut feed = sse::events(feed);
    let (status, _, _) = {
        let write = service
            .request_as(
                reqwest::Method::POST,
                Some("key-a"),
                &format!("/text/session/{mine}/message"),
            )
            .json(&json!({"content": "hello"}))
            .send()
            .await
            .unwrap();
        (write.status(), (), ())
    };
    assert_eq!(status, StatusCode::OK);
    let events = read_commits(&mut feed, 1).await;
    assert!(sse::names(&events).contains(&"session.committed"));

    // The token reads only that session's events.
    for path in [
        format!("/text/session/{other}/events?access_token={token}"),
        format!("/text/session/{theirs}/events?access_token={token}"),
        format!("/text/session/{mine}?access_token={token}"),
        format!("/text/session/{mine}/events?access_token={token}x"),
        format!("/text/session/{mine}/events"),
    ] {
        let response = open(path.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // A turn's replay takes it too.
    let turns: Value = service
        .request_as(
            reqwest::Method::GET,
            Some("key-a"),
            &format!("/text/session/{mine}/turns"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turn = turns["turns"][0]["id"].as_str().unwrap();
    let replay = open(format!(
        "/text/session/{mine}/turns/{turn}/events?access_token={token}"
    ))
    .await
    .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert!(!service.logs().contains(token), "the token is never logged");
}

/// The bytes a SQLite store takes on disk (its file and write-ahead log).
fn store_bytes(dir: &StoreDir) -> u64 {
    ["sessions.db", "sessions.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.0.join(name)).ok())
        .map(|meta| meta.len())
        .sum()
}

fn messages_of(session: &Value) -> Vec<Value> {
    session["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_fork_of_a_thousand_message_session_starts_with_its_first_n_and_both_go_their_own_way() {
    let openai = mock().await;
    let dir = StoreDir::new();
    let env = [
        ("STORE", dir.url()),
        ("API_KEYS", "key-a,key-b".to_owned()),
        ("MAX_MESSAGES_PER_SESSION", "1003".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let service = spawn_service(&openai, &env).await;
    let key = Some("key-a");
    let post = |path: String, body: Value| {
        service
            .request_as(reqwest::Method::POST, key, &path)
            .json(&body)
            .send()
    };
    let source = service
        .create_session_as(
            key,
            json!({
                "instructions": ["Be brief.", "Answer in English."],
                "defaults": {"maxContextMessages": 50},
                "metadata": {"user": "u-1"},
                "tools": [{"name": "lookup", "parameters": {"type": "object"}}],
            }),
        )
        .await;
    for n in 0..499 {
        let response = post(
            format!("/text/session/{source}/message"),
            json!({"content": format!("message {n}")}),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let before = service.session_as(key, &source).await;
    assert_eq!(messages_of(&before).len(), 1000);

    let bytes_before = store_bytes(&dir);
    let started = Instant::now();
    let forked = post(format!("/text/session/{source}/fork"), json!({"upTo": 601}))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(forked.status(), StatusCode::CREATED);
    let forked: Value = forked.json().await.unwrap();
    let growth = store_bytes(&dir).saturating_sub(bytes_before);
    eprintln!("fork of a 1,000-message session at 601: {took:?}, the store grew {growth} bytes");
    let fork = forked["session"].clone();
    let fork_id = fork["id"].as_str().unwrap().to_owned();
    assert_eq!(
        fork["forkedFrom"],
        json!({"sessionId": source, "version": before["version"], "upTo": 601})
    );
    assert_eq!(messages_of(&fork), messages_of(&before)[..601].to_vec());
    for field in ["provider", "model", "defaults", "tools", "metadata"] {
        assert_eq!(fork[field], before[field], "{field} carries over");
    }
    assert_eq!(fork["version"], 1);
    assert!(
        growth < 64 * 1024,
        "the fork shares the source's rows: the store grew {growth} bytes"
    );

    // The owner carries over: the other key does not see it.
    let theirs = service
        .request_as(
            reqwest::Method::GET,
            Some("key-b"),
            &format!("/text/session/{fork_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    // Each goes its own way; the fork's context bound carries over.
    let reply: Value = post(
        format!("/text/session/{fork_id}/message"),
        json!({"content": "edited"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(reply["result"]["messagesSent"], 50, "{reply}");
    let on_source = post(
        format!("/text/session/{source}/message"),
        json!({"content": "on the source"}),
    )
    .await
    .unwrap();
    assert_eq!(on_source.status(), StatusCode::OK);
    let fork_now = service.session_as(key, &fork_id).await;
    let source_now = service.session_as(key, &source).await;
    assert_eq!(messages_of(&fork_now).len(), 603);
    assert_eq!(messages_of(&fork_now)[601]["content"], "edited");
    assert_eq!(messages_of(&source_now).len(), 1002);
    assert_eq!(messages_of(&source_now)[..1000], messages_of(&before)[..]);
    // The service's bound on messages carries over too: the source is at it.
    let full = post(
        format!("/text/session/{source}/message"),
        json!({"content": "one too many"}),
    )
    .await
    .unwrap();
    assert_eq!(full.status(), StatusCode::CONFLICT);

    // Past the source's messages: a clear error, nothing made.
    let past = post(
        format!("/text/session/{source}/fork"),
        json!({"upTo": 5000}),
    )
    .await
    .unwrap();
    assert_eq!(past.status(), StatusCode::CONFLICT);
    let past: Value = past.json().await.unwrap();
    assert_eq!(past["error"]["code"], "history_too_short");
    assert!(past["error"]["message"].as_str().unwrap().contains("upTo"));

    // After a restart, and after the source is deleted, the fork is whole.
    kill(service).await;
    let service = spawn_service(&openai, &env).await;
    assert_eq!(service.session_as(key, &fork_id).await, fork_now);
    let deleted = service
        .request_as(
            reqwest::Method::DELETE,
            key,
            &format!("/text/session/{source}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    kill(service).await;
    let service = spawn_service(&openai, &env).await;
    let after = service.session_as(key, &fork_id).await;
    assert_eq!(messages_of(&after), messages_of(&fork_now));
    assert_eq!(after["forkedFrom"], fork_now["forkedFrom"]);
}

#[tokio::test]
async fn after_a_restart_a_follower_at_the_current_version_goes_on_and_one_from_before_resyncs() {
    use futures::StreamExt;
    let openai = mock().await;
    let dir = StoreDir::new();
    let env = [("STORE", dir.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let service = spawn_service(&openai, &env).await;
    let id = service.create_session(json!({})).await;
    let (status, _, _) = spawn_write(&service, &id, "message", json!({"content": "one"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    // Seen up to some event after version 2 in the feed of the process that died.
    let mut going_on = follow(&service, &id, "", Some("2:5")).await;
    let (status, _, _) = spawn_write(&service, &id, "message", json!({"content": "two"}))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let events = read_commits(&mut going_on, 1).await;
    assert_eq!(
        events[0].name, "turn.started",
        "nothing of the new turn missed"
    );
    let committed = &events[events.len() - 2];
    assert_eq!(feed_id(committed), (3, 0));
    assert_eq!(committed.data["newMessages"][0]["content"], "two");
    // From before what this process loaded: resync, with the version to read.
    let mut behind = follow(&service, &id, "", Some("1:3")).await;
    let resync = behind.next().await.unwrap();
    assert_eq!(resync.name, "session.resync");
    assert_eq!(resync.data, json!({"version": 3}));
    assert!(behind.next().await.is_none());
}
