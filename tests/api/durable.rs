//! Sessions that outlive the process (`STORE=sqlite://…`), checked against the real
//! binary: killed with SIGKILL and started again on the same file.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_with, spawn_message};
use crate::service::{Service, spawn_service};
use test_support::mock_provider::{MockProvider, Protocol};
use test_support::postgres::TestDatabase;
use text_session_api::store::sqlite::fault_injection::ANSWER_NOT_KEPT;

/// A store file of its own in a folder of its own (created by the service), removed
/// when dropped.
pub(crate) struct StoreDir(pub(crate) std::path::PathBuf);

impl StoreDir {
    pub(crate) fn new() -> Self {
        Self(std::env::temp_dir().join(format!("text-session-durable-{}", uuid::Uuid::new_v4())))
    }

    pub(crate) fn url(&self) -> String {
        format!("sqlite://{}/sessions.db", self.0.display())
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn kill(mut service: Service) {
    service.child.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(10), service.child.wait())
        .await
        .expect("the child dies")
        .unwrap();
}

#[tokio::test]
async fn sessions_histories_versions_and_owners_survive_a_kill_9() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let dir = StoreDir::new();
    let store = dir.url();
    let env = [("STORE", store.as_str()), ("API_KEYS", "key-one,key-two")];
    let service = spawn_service(&openai, &env).await;
    let id = service
        .create_session_as(Some("key-one"), json!({"instructions": "be brief"}))
        .await;
    for n in 0..3 {
        let response = service
            .request_as(
                reqwest::Method::POST,
                Some("key-one"),
                &format!("/text/session/{id}/message"),
            )
            .json(&json!({"content": format!("message {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let before = service.session_as(Some("key-one"), &id).await;
    assert_eq!(before["version"], 4);
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    // Listed from the store before anything loads it.
    let list: serde_json::Value = service
        .request_as(reqwest::Method::GET, Some("key-one"), "/text/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    assert_eq!(list["sessions"][0]["messageCount"], 7);
    assert_eq!(list["sessions"][0]["version"], 4);
    assert_eq!(list["nextCursor"], serde_json::Value::Null);
    let after = service.session_as(Some("key-one"), &id).await;
    assert_eq!(
        after["messages"], before["messages"],
        "the whole history, in order"
    );
    assert_eq!(after["version"], 4);
    assert_eq!(after["createdAt"], before["createdAt"]);
    let foreign = service
        .request_as(
            reqwest::Method::GET,
            Some("key-two"),
            &format!("/text/session/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND, "still key one's");

    // It goes on where it stopped, and If-Match sees the stored version.
    let stale = service
        .request_as(
            reqwest::Method::POST,
            Some("key-one"),
            &format!("/text/session/{id}/message"),
        )
        .header("if-match", "\"3\"")
        .json(&json!({"content": "stale"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let next = service
        .request_as(
            reqwest::Method::POST,
            Some("key-one"),
            &format!("/text/session/{id}/message"),
        )
        .header("if-match", "\"4\"")
        .json(&json!({"content": "after the restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(next.headers()["etag"], "\"5\"");
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    let last = service.session_as(Some("key-one"), &id).await;
    let messages = last["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 9);
    assert_eq!(messages[7]["content"], "after the restart");
    let deleted = service
        .request_as(
            reqwest::Method::DELETE,
            Some("key-one"),
            &format!("/text/session/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    let gone = service
        .request_as(
            reqwest::Method::GET,
            Some("key-one"),
            &format!("/text/session/{id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        gone.status(),
        StatusCode::NOT_FOUND,
        "a delete is durable too"
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_file_is_refused_at_start() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let dir = StoreDir::new();
    let store = dir.url();
    let _first = spawn_service(&openai, &[("STORE", store.as_str())]).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_text-session-api"))
        .args(["--bind", "127.0.0.1:0", "--store", &store])
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("the second process exits")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

#[tokio::test]
async fn past_max_live_sessions_idle_ones_leave_memory_and_load_again_whole() {
    let dir = StoreDir::new();
    let store = dir.url();
    let app = spawn_app_with(|c| {
        c.store = store.clone();
        c.max_live_sessions = 5;
    })
    .await;
    // One session is in a long turn the whole time: it must never leave memory.
    let busy = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let long_turn = spawn_message(&app, &busy, json!({"content": "long"}));
    app.openai.wait_for_requests(1).await;

    let mut ids = Vec::new();
    for n in 0..20 {
        let id = app.create_session(json!({})).await;
        let (status, _) = app
            .message(&id, json!({"content": format!("hello {n}")}))
            .await;
        assert_eq!(status, StatusCode::OK);
        ids.push(id);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let live: usize = metrics
        .lines()
        .find_map(|line| line.strip_prefix("text_session_sessions_live "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(live <= 5, "{live} sessions live");
    for (n, id) in ids.iter().enumerate() {
        let messages = app.messages(id).await;
        assert_eq!(messages.len(), 2, "{id}");
        assert_eq!(messages[0]["content"], format!("hello {n}"));
    }

    app.openai.resume();
    let (status, _) = long_turn.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.messages(&busy).await.len(),
        2,
        "its turn committed to the one live copy"
    );
    let (status, _) = app.message(&busy, json!({"content": "again"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.messages(&busy).await.len(), 4);
}

#[tokio::test]
async fn when_the_store_fails_writes_get_503_nothing_is_appended_and_it_recovers_by_itself() {
    use text_session_api::store::sqlite::fault_injection::STORE_FAILS;
    let dir = StoreDir::new();
    let store = dir.url();
    let app = spawn_app_with(|c| c.store = store.clone()).await;
    let id = app.create_session(json!({})).await;
    let (status, _) = app.message(&id, json!({"content": "kept"})).await;
    assert_eq!(status, StatusCode::OK);

    let response = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": STORE_FAILS}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    assert_eq!(
        app.messages(&id).await.len(),
        2,
        "nothing appended in memory"
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "store_unavailable"
    );

    // The store probes itself and comes back without help.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.get("/readyz").await.status() != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = app.message(&id, json!({"content": "after"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["session"]["version"], 3,
        "the failed turn took no version"
    );
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["content"], "after");
}

#[tokio::test]
async fn killed_at_random_moments_on_sqlite_every_acknowledged_message_is_kept_once_in_order() {
    let dir = StoreDir::new();
    crash_rounds(&dir.url()).await;
}

#[tokio::test]
async fn killed_at_random_moments_on_postgres_every_acknowledged_message_is_kept_once_in_order() {
    let name = "durable::killed_at_random_moments_on_postgres";
    if let Some(database) = TestDatabase::create(name).await {
        crash_rounds(&database.url()).await;
    }
}

/// 20 rounds: four writers, one per session, send messages with unique
/// `Idempotency-Key`s until the service is killed with SIGKILL at a random moment; it
/// starts again on the same store and each writer retries the one write it got no
/// answer to. Every acknowledged message is stored once, in order, histories alternate
/// and versions agree; a retried key either replays (its turn had committed) or runs
/// now, and never twice.
async fn crash_rounds(store: &str) {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let env = [("STORE", store)];
    let mut service = spawn_service(&openai, &env).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(service.create_session(json!({})).await);
    }
    // What each session's writer was told was committed, in order.
    let mut acknowledged: Vec<Vec<String>> = vec![Vec::new(); sessions.len()];
    let (mut replayed, mut ran_again) = (0, 0);
    for round in 0..20 {
        let writers: Vec<_> = sessions
            .iter()
            .enumerate()
            .map(|(s, id)| {
                let client = service.client.clone();
                let url = service.url(&format!("/text/session/{id}/message"));
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for n in 0.. {
                        let content = format!("s{s} r{round} m{n}");
                        let sent = client
                            .post(&url)
                            .header("idempotency-key", &content)
                            .json(&json!({"content": content}))
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status() == StatusCode::OK => {
                                acked.push(content)
                            }
                            _ => return (acked, Some(content)),
                        }
                    }
                    (acked, None)
                })
            })
            .collect();
        let pause = Duration::from_millis(rand::random_range(20..150));
        tokio::time::sleep(pause).await;
        kill(service).await;
        let mut unanswered = Vec::new();
        for (s, writer) in writers.into_iter().enumerate() {
            let (acked, in_flight) = writer.await.unwrap();
            acknowledged[s].extend(acked);
            unanswered.push(in_flight);
        }
        service = spawn_service(&openai, &env).await;
        for (s, in_flight) in unanswered.into_iter().enumerate() {
            let Some(content) = in_flight else { continue };
            let url = service.url(&format!("/text/session/{}/message", sessions[s]));
            let retry = || {
                service
                    .client
                    .post(&url)
                    .header("idempotency-key", &content)
                    .json(&json!({"content": content}))
                    .send()
            };
            let mut response = retry().await.unwrap();
            // A commit the killed process had sent may land in Postgres after this
            // process loaded the session: the first write on it then finds the stored
            // version moved, fails with 503 (nothing appended) and the session is loaded
            // again; the client retries as told.
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                response = retry().await.unwrap();
            }
            let status = response.status();
            let was_replayed = response.headers().get("idempotent-replayed").is_some();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status, StatusCode::OK, "round {round}: {content}: {body}");
            if was_replayed {
                replayed += 1;
            } else {
                ran_again += 1;
            }
            assert_eq!(body["result"]["text"], format!("echo: {content}"));
            acknowledged[s].push(content);
        }
        for (s, id) in sessions.iter().enumerate() {
            let session = service.session_as(None, id).await;
            let messages = session["messages"].as_array().unwrap();
            for pair in messages.chunks(2) {
                assert_eq!(pair[0]["role"], "user", "round {round}: whole turns only");
                assert_eq!(pair[1]["role"], "assistant", "round {round}");
            }
            let users: Vec<String> = messages
                .iter()
                .step_by(2)
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect();
            // Every acknowledged message, once, in order, and nothing else.
            assert_eq!(users, acknowledged[s], "round {round}, session {s}");
            assert_eq!(
                session["version"],
                1 + users.len(),
                "round {round}: versions consistent"
            );
        }
    }
    eprintln!("retried keys: {replayed} replayed, {ran_again} ran after the restart");
    assert!(
        acknowledged.iter().all(|acked| !acked.is_empty()),
        "every writer got writes through"
    );
}

#[tokio::test]
async fn idempotency_answers_replay_byte_for_byte_after_a_kill_9_and_a_turn_whose_answer_was_lost_never_runs_twice()
 {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let dir = StoreDir::new();
    let store = dir.url();
    let env = [("STORE", store.as_str()), ("API_KEYS", "key-one,key-two")];
    let service = spawn_service(&openai, &env).await;
    let id = service
        .create_session_as(Some("key-one"), json!({"provider": "openai"}))
        .await;
    let path = format!("/text/session/{id}/message");
    let send = |service: &Service, key: &'static str, idempotency: &'static str, body| {
        service
            .request_as(reqwest::Method::POST, Some(key), &path)
            .header("idempotency-key", idempotency)
            .json(&body)
            .send()
    };
    let first = send(&service, "key-one", "first", json!({"content": "one"}))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].clone();
    let bytes = first.bytes().await.unwrap();
    // The process dies after the commit and before the answer is kept.
    let lost = send(
        &service,
        "key-one",
        ANSWER_NOT_KEPT,
        json!({"content": "two"}),
    )
    .await
    .unwrap();
    assert_eq!(lost.status(), StatusCode::OK);
    let lost: serde_json::Value = lost.json().await.unwrap();
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    let again = send(&service, "key-one", "first", json!({"content": "one"}))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(again.bytes().await.unwrap(), bytes, "byte for byte");
    let reused = send(&service, "key-one", "first", json!({"content": "other"}))
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Another API key's "first" is a key of its own (and the session is not its).
    let theirs = send(&service, "key-two", "first", json!({"content": "one"}))
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    let calls = openai.request_count();
    let rendered = send(
        &service,
        "key-one",
        ANSWER_NOT_KEPT,
        json!({"content": "two"}),
    )
    .await
    .unwrap();
    assert_eq!(rendered.status(), StatusCode::OK);
    assert_eq!(rendered.headers()["idempotent-replayed"], "true");
    let rendered: serde_json::Value = rendered.json().await.unwrap();
    assert_eq!(
        openai.request_count(),
        calls,
        "the provider is not called again"
    );
    assert_eq!(rendered["turnId"], lost["turnId"]);
    assert_eq!(rendered["result"], lost["result"]);
    assert_eq!(rendered["session"]["messages"], lost["session"]["messages"]);
    assert_eq!(rendered["session"]["version"], lost["session"]["version"]);
    let session = service.session_as(Some("key-one"), &id).await;
    assert_eq!(session["messages"].as_array().unwrap().len(), 4, "ran once");
}

/// Two processes on one Postgres, each alone by its configuration (no INSTANCE_ADDR):
/// the one that loads a session takes its lease, and the other, which still holds the
/// session live, can no longer commit to it: its writer gets `409 session_moved`,
/// nothing of it is stored, and its next request loads the session again.
#[tokio::test]
async fn a_process_that_lost_a_sessions_lease_commits_nothing_and_loads_it_again() {
    let name = "durable::a_process_that_lost_a_sessions_lease";
    let Some(database) = TestDatabase::create(name).await else {
        return;
    };
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let url = database.url();
    let env = [("STORE", url.as_str())];
    let (one, two) = (
        spawn_service(&openai, &env).await,
        spawn_service(&openai, &env).await,
    );
    let id = one.create_session(json!({})).await;
    let write = |service: &Service, content: &str| {
        service
            .client
            .post(service.url(&format!("/text/session/{id}/message")))
            .json(&json!({"content": content}))
            .send()
    };
    // The second loads it, and with it the lease: the first's turn runs, but its commit
    // is fenced.
    assert_eq!(two.session_as(None, &id).await["version"], 1);
    let fenced = write(&one, "from one").await.unwrap();
    assert_eq!(fenced.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = fenced.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_moved", "{body}");
    assert_eq!(
        write(&two, "from two").await.unwrap().status(),
        StatusCode::OK
    );
    let again = write(&one, "from one, again").await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let session: serde_json::Value = again.json().await.unwrap();
    let contents: Vec<&str> = session["session"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            "from two",
            "echo: from two",
            "from one, again",
            "echo: from one, again"
        ],
        "no trace of the fenced commit"
    );
    assert_eq!(session["session"]["version"], 3);
    assert!(
        one.metrics()
            .await
            .contains("text_session_store_errors_total{kind=\"fenced\"} 1"),
        "the fenced commit is counted"
    );
}

#[tokio::test]
async fn session_limits_count_stored_sessions_across_eviction_and_restart() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let dir = StoreDir::new();
    let store = dir.url();
    let env = [
        ("STORE", store.as_str()),
        ("MAX_SESSIONS", "3"),
        ("MAX_LIVE_SESSIONS", "1"),
    ];
    let service = spawn_service(&openai, &env).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(service.create_session(json!({})).await);
    }
    let create = |service: &Service| {
        service
            .client
            .post(service.url("/text/session"))
            .json(&json!({}))
            .send()
    };
    // Two of the three are only in the store; they count all the same.
    let refused = create(&service).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_limit");
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("text_session_sessions_stored 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("text_session_sessions_live 1"),
        "{metrics}"
    );
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    assert_eq!(
        create(&service).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS,
        "counted from the store at start"
    );
    // Deleting one that is not in memory makes room.
    let deleted = service
        .client
        .delete(service.url(&format!("/text/session/{}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        create(&service).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        create(&service).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn idle_sessions_expire_from_the_store_too_after_eviction_and_after_a_restart() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let dir = StoreDir::new();
    let store = dir.url();
    let lasting = [("STORE", store.as_str()), ("MAX_LIVE_SESSIONS", "1")];
    let service = spawn_service(&openai, &lasting).await;
    let before_restart = service.create_session(json!({})).await;
    kill(service).await;

    let brief = [
        ("STORE", store.as_str()),
        ("MAX_LIVE_SESSIONS", "1"),
        ("SESSION_TTL_SECS", "2"),
    ];
    let service = spawn_service(&openai, &brief).await;
    let evicted = service.create_session(json!({})).await;
    let live = service.create_session(json!({})).await;
    // Read just now: still there, though only in the store (`live` pushed it out).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = |id: &str| {
        let request = service
            .client
            .get(service.url(&format!("/text/session/{id}")))
            .send();
        async move { request.await.unwrap().status() }
    };
    assert_eq!(status(&before_restart).await, StatusCode::OK);
    assert_eq!(status(&live).await, StatusCode::OK);
    // Idle past the TTL: each is gone, whether live, evicted or never loaded.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for id in [&before_restart, &evicted, &live] {
        assert_eq!(status(id).await, StatusCode::NOT_FOUND, "{id}");
    }
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("text_session_sessions_stored 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("text_session_store_loads_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("text_session_store_commit_duration_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test]
async fn ended_and_failed_turn_records_survive_a_kill_9_and_a_failed_turn_retries_after_it() {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let dir = StoreDir::new();
    let store = dir.url();
    let env = [("STORE", store.as_str()), ("PROVIDER_MAX_RETRIES", "0")];
    let service = spawn_service(&openai, &env).await;
    let id = service.create_session(json!({"provider": "openai"})).await;
    let turns = |service: &Service, query: &'static str| {
        let request = service
            .client
            .get(service.url(&format!("/text/session/{id}/turns{query}")))
            .send();
        async move {
            let body: serde_json::Value = request.await.unwrap().json().await.unwrap();
            body["turns"].as_array().unwrap().clone()
        }
    };
    let (status, _, _) = service.spawn_message(&id, "fine").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let failing = openai.clone();
    openai.script(move |_, _| Some(failing.error_reply(500, "upstream exploded")));
    let (status, _, _) = service.spawn_message(&id, "doomed").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    openai.script(|_, _| None);
    let before = turns(&service, "").await;
    assert_eq!(before.len(), 2);
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    let after = turns(&service, "").await;
    // Everything but the turn's events (which are not kept) reads back as it was.
    let fields = [
        "id",
        "kind",
        "status",
        "priority",
        "input",
        "result",
        "error",
        "attempts",
        "createdAt",
        "startedAt",
    ];
    for (was, is) in before.iter().zip(&after) {
        for field in fields {
            assert_eq!(was[field], is[field], "{field}");
        }
    }
    assert_eq!(after.len(), 2);
    assert_eq!(after[0]["status"], "completed");
    assert_eq!(after[1]["status"], "failed");
    assert_eq!(after[1]["error"]["code"], "provider_error");
    // Their events are not kept: replay is 404 after a restart.
    let events = service
        .client
        .get(service.url(&format!(
            "/text/session/{id}/turns/{}/events",
            after[0]["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::NOT_FOUND);
    let dead_letters = turns(&service, "?status=failed").await;
    assert_eq!(dead_letters.len(), 1);
    let failed_id = dead_letters[0]["id"].as_str().unwrap().to_owned();

    let retry = |service: &Service| {
        service
            .client
            .post(service.url(&format!("/text/session/{id}/turns/{failed_id}/retry")))
            .send()
    };
    let retried = retry(&service).await.unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: serde_json::Value = retried.json().await.unwrap();
    let contents: Vec<&str> = retried["session"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    let reply = test_support::mock_provider::reply_text_for("doomed");
    assert_eq!(contents[2..], ["doomed", reply.as_str()]);
    kill(service).await;

    // The retry is remembered: the failed turn names it, and is not retried twice.
    let service = spawn_service(&openai, &env).await;
    let failed = turns(&service, "?status=failed").await;
    assert_eq!(failed[0]["retriedBy"], retried["turnId"]);
    assert_eq!(
        retry(&service).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    assert_eq!(turns(&service, "").await.len(), 3);
}
