//! Bounds, checked against the real binary: streams that always end, idempotency
//! records per API key, a memory budget, provider replies bounded in bytes, and
//! connections that cannot pin the service.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};
use crate::service::{spawn_service, spawn_service_with_nofile};
use test_support::mock_openai;
use test_support::mock_provider::{MockProvider, Protocol, Reply, StreamPlan};

/// The names of the SSE events in `text`, in order.
fn event_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect()
}

#[tokio::test]
async fn a_reader_paused_until_20_later_turns_ended_still_gets_its_terminal_event() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    // 16 MiB of reply: more than the socket buffers hold, so the reader falls behind.
    openai.set_stream_plan(StreamPlan {
        pieces: Some(vec!["x".repeat(64 * 1024); 256]),
        ..StreamPlan::default()
    });
    let service = spawn_service(&openai, &[("MAX_REPLY_BYTES", "67108864")]).await;
    // Later turns send only their own message, not the long reply.
    let id = service
        .create_session(json!({"provider": "openai", "defaults": {"maxContextMessages": 1}}))
        .await;
    let mut paused = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .json(&json!({"content": "a long one", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    let turn_id = paused.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let mut received = String::from_utf8(paused.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    // The turn commits while its reader sleeps; then 20 more turns end after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let turn: Value = service
            .client
            .get(service.url(&format!("/text/session/{id}/turns/{turn_id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if turn["turn"]["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "the turn never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 0..20 {
        let response = service
            .client
            .post(service.url(&format!("/text/session/{id}/message?view=delta")))
            .json(&json!({"content": format!("later {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let replay = service
        .client
        .get(service.url(&format!("/text/session/{id}/turns/{turn_id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        replay.status(),
        StatusCode::NOT_FOUND,
        "retention has let the turn go"
    );

    while let Some(chunk) = paused.chunk().await.unwrap() {
        received.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let names = event_names(&received);
    assert_eq!(names.first(), Some(&"turn.started"));
    assert_eq!(
        names.last(),
        Some(&"turn.completed"),
        "the stream ended with its turn"
    );
    assert_eq!(names.iter().filter(|n| **n == "text.delta").count(), 256);
}

#[tokio::test]
async fn one_api_key_flooding_idempotency_records_cannot_make_anothers_retry_run_twice() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let service = spawn_service(
        &openai,
        &[
            ("API_KEYS", "key-one,key-two"),
            ("IDEMPOTENCY_MAX_KEYS", "200"),
        ],
    )
    .await;
    let post = |key: &str, idempotency_key: &str, path: &str, body: Value| {
        service
            .client
            .post(service.url(path))
            .bearer_auth(key)
            .header("idempotency-key", idempotency_key)
            .json(&body)
            .send()
    };
    let id = service
        .create_session_as(Some("key-two"), json!({"provider": "openai"}))
        .await;
    let path = format!("/text/session/{id}/message");
    let first = post("key-two", "mine", &path, json!({"content": "once"}))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    // Key one fills its records many times over with answers that are kept (404s).
    let missing = format!("/text/session/{}/message", uuid::Uuid::new_v4());
    for n in 0..1000 {
        let answer = post(
            "key-one",
            &format!("flood-{n}"),
            &missing,
            json!({"content": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    }

    let retry = post("key-two", "mine", &path, json!({"content": "once"}))
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(openai.request_count(), 1, "the write ran once");
    let session = service.session_as(Some("key-two"), &id).await;
    assert_eq!(session["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_50_mb_reply_10000_tool_calls_and_an_endless_stream_each_fail_the_turn_quickly() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let huge = mock_openai::text_reply("mock-model", &"x".repeat(50_000_000));
    let calls: Vec<(String, String, String)> = (0..10_000)
        .map(|i| (format!("call_{i}"), "f".to_owned(), "{}".to_owned()))
        .collect();
    let borrowed: Vec<(&str, &str, &str)> = calls
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    let many_calls = mock_openai::tool_call_reply("mock-model", &borrowed);
    openai.script(move |body, _| {
        let reply = match body["messages"].as_array()?.last()?["content"].as_str()? {
            "huge" => huge.clone(),
            "calls" => many_calls.clone(),
            _ => return None,
        };
        Some(Reply {
            status: 200,
            body: reply,
            delay: Duration::ZERO,
        })
    });
    openai.set_stream_plan(StreamPlan {
        pieces: Some(vec!["more ".repeat(1000)]),
        endless: true,
        ..StreamPlan::default()
    });
    let service = spawn_service(&openai, &[]).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let (status, _, _) = service.spawn_message(&id, "warm up").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let before = service.rss_bytes();

    for (body, what) in [
        (json!({"content": "huge"}), "MAX_REPLY_BYTES"),
        (json!({"content": "calls"}), "MAX_TOOL_CALLS_PER_REPLY"),
        (
            json!({"content": "endless", "stream": true}),
            "MAX_REPLY_BYTES",
        ),
    ] {
        let started = Instant::now();
        let response = service
            .client
            .post(service.url(&format!("/text/session/{id}/message")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let text = response.text().await.unwrap();
        let took = started.elapsed();
        // Far below the 120 s provider timeout (the mock and the binary are debug builds
        // sharing two cores with the rest of the suite); the error names the bound.
        assert!(took < Duration::from_secs(30), "{body} took {took:?}");
        assert!(
            text.contains("provider_error") && text.contains(what),
            "{body}: {text}"
        );
        if body["stream"] == true {
            assert_eq!(event_names(&text).last(), Some(&"turn.failed"), "{text}");
        }
    }

    let session = service.session_as(None, &id).await;
    assert_eq!(
        session["messages"].as_array().unwrap().len(),
        2,
        "only the warm-up turn"
    );
    let after = service.rss_bytes();
    assert!(
        after < before + 48 * 1024 * 1024,
        "memory returned: {} MiB before, {} MiB after",
        before >> 20,
        after >> 20
    );
}

/// Reads until the peer closes (or the bound passes); whether it closed, and how much
/// was read.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> (bool, usize) {
    let mut read = 0;
    let mut buf = vec![0; 64 * 1024];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (false, read),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, read),
            Ok(Ok(n)) => read += n,
        }
    }
}

#[tokio::test]
async fn two_thousand_slowloris_connections_are_closed_within_the_header_timeout() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let service = spawn_service(&openai, &[("HEADER_READ_TIMEOUT_SECS", "2")]).await;
    let mut slow = Vec::new();
    for _ in 0..2000 {
        let mut stream = TcpStream::connect(service.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .await
            .unwrap();
        slow.push(stream);
    }
    let opened = Instant::now();
    // They keep dribbling, one byte a second, never ending their heads.
    let dribble = tokio::time::interval(Duration::from_millis(1000));
    let mut dribble = std::pin::pin!(dribble);
    let mut closed = 0;
    while opened.elapsed() < Duration::from_secs(6) && closed < slow.len() {
        dribble.as_mut().tick().await;
        closed = 0;
        for stream in &mut slow {
            if stream.write_all(b"a").await.is_err() {
                closed += 1;
            }
        }
    }
    let mut still_open = 0;
    for stream in &mut slow {
        if !closed_within(stream, Duration::from_millis(100)).await.0 {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open,
        0,
        "closed {:?} after they opened",
        opened.elapsed()
    );
    let health = service
        .client
        .get(service.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let service = spawn_service(&openai, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(service.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let idle = Instant::now();
    let (closed, _) = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the idle connection was closed");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn with_1024_descriptors_and_1100_idle_connections_healthz_still_answers() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let service = spawn_service_with_nofile(&openai, &[], 1024).await;
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(TcpStream::connect(service.addr).await.unwrap());
    }
    // The idle ones were accepted (or closed to make room) before this one comes.
    for _ in 0..3 {
        let started = Instant::now();
        let health = tokio::time::timeout(
            Duration::from_secs(5),
            reqwest::Client::new().get(service.url("/healthz")).send(),
        )
        .await
        .expect("healthz answers at once")
        .unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let id = service.create_session(json!({})).await;
    assert!(!id.is_empty(), "and real work gets through too");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_and_a_reader_that_never_reads_is_cut_off() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let service = spawn_service(
        &openai,
        &[("BODY_READ_TIMEOUT_SECS", "1"), ("WRITE_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut stream = TcpStream::connect(service.addr).await.unwrap();
    stream
        .write_all(b"POST /text/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"instr")
        .await
        .unwrap();
    let mut answer = String::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A session whose answer is far larger than the socket buffers, asked for and never read.
    let id = service.create_session(json!({})).await;
    let long = "x".repeat(90_000);
    for n in 0..200 {
        let response = service
            .client
            .post(service.url(&format!("/text/session/{id}/tool-output?view=delta")))
            .json(&json!({"callId": format!("call_{n}"), "output": long}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let mut stalled = TcpStream::connect(service.addr).await.unwrap();
    stalled
        .write_all(format!("GET /text/session/{id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Time to render the answer (18 MB; slow in a debug build on a busy machine: once this
    // client starts reading, the write timeout no longer runs) and then to stall for 1 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (closed, read) = closed_within(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed, "the server closed the stalled connection");
    assert!(
        read < 17_000_000,
        "it gave up before sending all {read} bytes"
    );
}

#[tokio::test]
async fn a_key_sending_1_gib_of_writes_under_a_256_mib_budget_is_refused_and_others_still_write() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let service = spawn_service(
        &openai,
        &[
            ("API_KEYS", "key-greedy,key-modest"),
            ("MEMORY_BUDGET_BYTES", "268435456"),
        ],
    )
    .await;
    let greedy = service
        .create_session_as(Some("key-greedy"), json!({}))
        .await;
    // 1 GiB in writes of 10 tool outputs of 100,000 characters each, two at a time.
    let output = "x".repeat(100_000);
    let body = json!({"toolOutputs": (0..10).map(|i| json!({"callId": format!("c{i}"), "output": output})).collect::<Vec<_>>()});
    let body = std::sync::Arc::new(serde_json::to_vec(&body).unwrap());
    let url = service.url(&format!("/text/session/{greedy}/tool-output?view=delta"));
    let mut accepted = 0;
    let mut refused = 0;
    let mut peak = 0;
    for _ in 0..512 {
        let pair = [0, 1].map(|_| {
            service
                .client
                .post(&url)
                .bearer_auth("key-greedy")
                .header("content-type", "application/json")
                .body(body.as_ref().clone())
                .send()
        });
        for response in futures::future::join_all(pair).await {
            let response = response.unwrap();
            match response.status() {
                StatusCode::OK => accepted += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    let error: Value = response.json().await.unwrap();
                    assert_eq!(error["error"]["code"], "memory_quota_exceeded");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
            }
        }
        peak = peak.max(service.rss_bytes());
    }
    assert!(
        accepted > 10 && refused > 900,
        "{accepted} accepted, {refused} refused"
    );
    assert!(peak < 300 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);

    let modest = service
        .create_session_as(Some("key-modest"), json!({}))
        .await;
    for n in 0..5 {
        let response = service
            .client
            .post(service.url(&format!("/text/session/{modest}/message")))
            .bearer_auth("key-modest")
            .json(&json!({"content": format!("small {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the other key still writes"
        );
    }
    println!(
        "greedy: {accepted} accepted, {refused} refused; peak RSS {} MiB",
        peak >> 20
    );
}

#[tokio::test]
async fn past_the_memory_budget_writes_get_503_with_retry_after_until_memory_is_freed() {
    let app = spawn_app_with(|c| c.memory_budget_bytes = 3_000_000).await;
    let id = app.create_session(json!({})).await;
    let output = "y".repeat(100_000);
    let path = format!("/text/session/{id}/tool-output?view=delta");
    let mut answer = None;
    for n in 0..40 {
        let response = app
            .post(&path, &json!({"callId": format!("c{n}"), "output": output}))
            .await;
        if response.status() != StatusCode::OK {
            answer = Some(response);
            break;
        }
    }
    let refused = answer.expect("the budget was reached");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "memory_budget_exceeded");
    let held = app.state.memory.held();
    assert!(held <= 3_000_000, "{held}");
    let messages = app.messages(&id).await.len();

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("text_session_memory_held_bytes"),
        "{metrics}"
    );

    assert_eq!(
        app.delete(&format!("/text/session/{id}")).await.status(),
        StatusCode::OK
    );
    assert!(
        app.state.memory.held() < 10_000,
        "{}",
        app.state.memory.held()
    );
    let fresh = app.create_session(json!({})).await;
    let response = app
        .post(
            &format!("/text/session/{fresh}/tool-output"),
            &json!({"callId": "c", "output": output}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "memory was given back");
    assert!(messages > 5);
}

#[tokio::test]
async fn full_answers_keep_the_history_as_json_within_a_budget_of_its_own_given_back_on_delete() {
    let app = spawn_app_with(|c| c.history_cache_bytes = 4_000).await;
    let id = app.create_session(json!({})).await;
    let (status, _) = app.message(&id, json!({"content": "one"})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(app.state.memory.held_by_caches() > 0, "the history is kept");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("text_session_history_cache_bytes"),
        "{metrics}"
    );

    // Past the budget the session lets go of what it kept; its answers stay whole, and
    // the same as what a read of the session shows.
    let long = "z".repeat(5_000);
    let (status, answer) = app.message(&id, json!({"content": long})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.state.memory.held_by_caches(), 0);
    let messages = answer["session"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["content"], json!(long));
    assert_eq!(
        answer["session"]["messages"],
        json!(app.messages(&id).await)
    );
    let (status, again) = app.message(&id, json!({"content": "three"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["session"]["messages"].as_array().unwrap().len(), 6);
    assert_eq!(app.state.memory.held_by_caches(), 0, "not kept again");

    // Another session is kept, and gives its bytes back when deleted.
    let other = app.create_session(json!({})).await;
    let (_, kept) = app.message(&other, json!({"content": "two"})).await;
    assert!(app.state.memory.held_by_caches() > 0);
    assert_eq!(
        kept["session"]["messages"],
        json!(app.messages(&other).await)
    );
    assert_eq!(
        app.delete(&format!("/text/session/{other}")).await.status(),
        StatusCode::OK
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.state.memory.held_by_caches() > 0 {
        assert!(Instant::now() < deadline, "the kept JSON was given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_read_copies_the_kept_history_too_and_shows_what_the_writes_answered() {
    let app = spawn_app_with(|_| {}).await;
    let id = app.create_session(json!({})).await;
    let response = app
        .post(
            &format!("/text/session/{id}/message?view=delta"),
            &json!({"content": "one"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.state.memory.held_by_caches(),
        0,
        "an answer without the history keeps nothing"
    );

    let read = app.messages(&id).await;
    assert_eq!(read.len(), 2);
    assert!(app.state.memory.held_by_caches() > 0, "a read keeps it");
    let (status, written) = app.message(&id, json!({"content": "two \"quoted\""})).await;
    assert_eq!(status, StatusCode::OK);
    let messages = written["session"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[..2], read[..]);
    assert_eq!(messages[..], app.messages(&id).await[..]);
}

/// One conversation on `provider` (`openai` or `anthropic`): instructions, messages, a
/// tool call answered and one left unanswered (its id repeated), texts that need
/// escaping; every answer `?view=delta`. The bodies the provider got, in order.
async fn conversation_sent_to(app: &TestApp, provider: &str) -> Vec<Value> {
    let mock = match provider {
        "openai" => &app.openai,
        _ => &app.anthropic,
    };
    let id = app
        .create_session(json!({"provider": provider, "instructions": "Be \"brief\".\n"}))
        .await;
    let delta = |path: &str| format!("/text/session/{id}/{path}?view=delta");
    let calls = mock.tool_call_reply(&[("call_1", "lookup", "{\"q\":1}")]);
    mock.script(move |_, index| {
        (index == 1 || index == 3).then(|| Reply {
            status: 200,
            body: calls.clone(),
            delay: Default::default(),
        })
    });
    let writes = [
        ("message", json!({"content": "one\t\"two\""})),
        ("message", json!({"content": "look it up"})),
        ("tool-output", json!({"callId": "call_1", "output": "42"})),
        ("instructions", json!(["Answer in ünïcode ✓"])),
        ("message", json!({"content": "again"})),
        ("message", json!({"content": "call left unanswered"})),
    ];
    for (path, body) in writes {
        let response = app.post(&delta(path), &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    mock.requests().into_iter().map(|r| r.body).collect()
}

#[tokio::test]
async fn requests_that_copy_the_history_kept_as_sent_are_those_written_anew() {
    let kept = spawn_app_with(|_| {}).await;
    let sent = conversation_sent_to(&kept, "openai").await;
    let sent_to_anthropic = conversation_sent_to(&kept, "anthropic").await;
    let held = kept.state.memory.held_by_caches();
    assert!(
        held > 0,
        "answers without the history keep what the provider is sent"
    );
    // A session whose context window leaves messages out keeps none of it.
    let windowed = kept
        .create_session(json!({"provider": "openai", "defaults": {"maxContextMessages": 2}}))
        .await;
    for content in ["hi", "again"] {
        let response = kept
            .post(
                &format!("/text/session/{windowed}/message?view=delta"),
                &json!({ "content": content }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(kept.state.memory.held_by_caches(), held);
    let not_kept = spawn_app_with(|c| c.history_cache_bytes = 0).await;
    assert_eq!(sent, conversation_sent_to(&not_kept, "openai").await);
    assert_eq!(
        sent_to_anthropic,
        conversation_sent_to(&not_kept, "anthropic").await
    );
    assert_eq!(not_kept.state.memory.held_by_caches(), 0);
    // Instructions do not call the provider; the second call of `call_1` is renamed
    // and, unanswered, gets a filler.
    assert_eq!(sent.len(), 5);
    let last = sent[4]["messages"].as_array().unwrap();
    assert_eq!(last.len(), 12, "{}", sent[4]);
    assert_eq!(last[9]["tool_calls"][0]["id"], "call_1_2", "{}", sent[4]);
}
