//! Several processes on one Postgres (each with its own `INSTANCE_ADDR`): one process
//! serves a session at a time; the others forward its requests there; a dead or frozen
//! process's sessions are taken over once its lease lapses, and what it tries to commit
//! afterwards is fenced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::service::{Service, metric_value, spawn_instance};
use test_support::mock_provider::{MockProvider, Protocol};
use test_support::postgres::TestDatabase;

/// Seconds of a lease in these tests (the default is 10).
const LEASE_SECS: &str = "1";
const LEASE: Duration = Duration::from_secs(1);

/// `n` processes on a database of their own, with the mock provider they share.
struct Cluster {
    services: Vec<Service>,
    openai: MockProvider,
    _database: TestDatabase,
}

/// A `Cluster`; `None` (the test is skipped) without Postgres.
async fn cluster(name: &str, n: usize) -> Option<Cluster> {
    let database = TestDatabase::create(name).await?;
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let url = database.url();
    let env = [("STORE", url.as_str()), ("LEASE_SECS", LEASE_SECS)];
    let mut services = Vec::new();
    for _ in 0..n {
        services.push(spawn_instance(&openai, &env).await);
    }
    Some(Cluster {
        services,
        openai,
        _database: database,
    })
}

/// `n` sessions on the mock provider, each served by one of `services` in turn (the one
/// that created it, which then reads it).
async fn spread_sessions(services: &[Service], n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let service = &services[i % services.len()];
        let id = service.create_session(json!({"provider": "openai"})).await;
        service.session_as(None, &id).await;
        ids.push(id);
    }
    ids
}

fn message(service: &Service, id: &str, body: Value) -> reqwest::RequestBuilder {
    service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .json(&body)
}

async fn history(service: &Service, id: &str) -> Vec<(String, String)> {
    service.session_as(None, id).await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_request_for_a_session_another_instance_serves_is_forwarded_and_its_answer_relayed_unchanged()
 {
    let Some(Cluster {
        services,
        openai,
        _database,
    }) = cluster("instances::forwarded", 2).await
    else {
        return;
    };
    let (a, b) = (&services[0], &services[1]);
    let id = a.create_session(json!({"provider": "openai"})).await;
    // A new session is served by the first process that gets a request for it: A.
    assert_eq!(a.session_as(None, &id).await["version"], 1);

    // A write through B runs on A: B relays A's answer, headers included.
    let answer = message(b, &id, json!({"content": "through b"}))
        .header("Idempotency-Key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let turn_id = answer.headers()["x-turn-id"].to_str().unwrap().to_owned();
    assert_eq!(answer.headers()["etag"], "\"2\"");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["turnId"], turn_id.as_str());
    assert_eq!(body["session"]["version"], 2);
    assert_eq!(b.metric("text_session_requests_forwarded_total").await, 1.0);
    assert_eq!(a.metric("text_session_requests_forwarded_total").await, 0.0);

    // The same key through A is the same request: its answer replayed, not run again.
    let replay = message(a, &id, json!({"content": "through b"}))
        .header("Idempotency-Key", "k-1")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(openai.requests().len(), 1, "one provider call");

    // A stream through B arrives whole, event by event.
    let stream = message(b, &id, json!({"content": "streamed", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = stream.text().await.unwrap();
    assert!(events.contains("event: turn.started"), "{events}");
    assert!(events.contains("event: turn.completed"), "{events}");

    // Reads through B show A's history and status; the turn's record is A's.
    assert_eq!(
        history(b, &id).await,
        [
            ("user".to_owned(), "through b".to_owned()),
            ("assistant".into(), "reply to: through b".into()),
            ("user".into(), "streamed".into()),
            ("assistant".into(), "reply to: streamed".into()),
        ]
    );
    let turn = b
        .client
        .get(b.url(&format!("/text/session/{id}/turns/{turn_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(turn.status(), StatusCode::OK);
    assert_eq!(b.metric("text_session_sessions_live").await, 0.0);
}

/// `kill -9` of the process serving a session: another serves it within `LEASE_SECS`
/// + 1 s, and a client that sends its write again with its `Idempotency-Key` gets it
/// applied exactly once.
#[tokio::test]
async fn the_sessions_of_a_killed_instance_are_served_by_another_within_the_lease() {
    let Some(Cluster {
        mut services,
        openai,
        _database,
    }) = cluster("instances::killed", 2).await
    else {
        return;
    };
    let b = services.pop().unwrap();
    let a = services.pop().unwrap();
    let id = a.create_session(json!({"provider": "openai"})).await;
    let first = message(&a, &id, json!({"content": "one"}))
        .header("Idempotency-Key", "once")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    a.signal("KILL");
    let killed = Instant::now();
    // The client did not see the answer (say), and sends it again, through B.
    let mut answers = Vec::new();
    let served = loop {
        let answer = message(&b, &id, json!({"content": "one"}))
            .header("Idempotency-Key", "once")
            .send()
            .await
            .unwrap();
        let status = answer.status();
        answers.push(status);
        if status == StatusCode::OK {
            break answer;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
        assert!(answer.headers().contains_key("retry-after"));
        assert!(
            killed.elapsed() < LEASE + Duration::from_secs(1),
            "{answers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        killed.elapsed() < LEASE + Duration::from_secs(1),
        "served after {:?}",
        killed.elapsed()
    );
    assert_eq!(served.headers()["idempotent-replayed"], "true");
    let second = message(&b, &id, json!({"content": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        history(&b, &id).await,
        [
            ("user".to_owned(), "one".to_owned()),
            ("assistant".into(), "reply to: one".into()),
            ("user".into(), "two".into()),
            ("assistant".into(), "reply to: two".into()),
        ]
    );
    assert_eq!(openai.requests().len(), 2, "`one` ran once");
    assert_eq!(b.metric("text_session_leases_taken_over_total").await, 1.0);
}

/// `kill -9` of one of three processes in the middle of a load: clients write to a few
/// sessions through any live process, each write with a key of its own, and send it
/// again (same key) until it is answered 200. Every session is served again within
/// `LEASE_SECS` + 1 s of the kill; every write is in its history exactly once, and the
/// histories alternate (nothing half committed).
#[tokio::test]
async fn killed_mid_load_every_retried_write_lands_exactly_once() {
    const CLIENTS: usize = 24;
    const SESSIONS: usize = 6;
    const WRITES: usize = 60;
    let Some(Cluster {
        services,
        openai,
        _database,
    }) = cluster("instances::killed_mid_load", 3).await
    else {
        return;
    };
    openai.set_jitter(Duration::from_millis(30));
    let services = Arc::new(services);
    let ids = Arc::new(spread_sessions(&services, SESSIONS).await);
    let dead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|client| {
        let (services, ids, dead) = (services.clone(), ids.clone(), dead.clone());
        tokio::spawn(async move {
            // (session, content, when it was answered)
            let mut done = Vec::new();
            for n in 0..WRITES {
                let id = &ids[(client + n) % SESSIONS];
                let content = format!("c{client}-w{n}");
                let mut attempt = 0;
                let mut last = String::new();
                loop {
                    attempt += 1;
                    assert!(attempt < 200, "{content} never answered: {last}");
                    // Any process; the killed one (0) no longer, once it is known dead.
                    let pick = (client + n + attempt) % 3;
                    let pick = if pick == 0 && dead.load(Ordering::Relaxed) {
                        1
                    } else {
                        pick
                    };
                    let answer = message(&services[pick], id, json!({"content": content}))
                        .header("Idempotency-Key", content.as_str())
                        .timeout(Duration::from_secs(20))
                        .send()
                        .await;
                    match answer {
                        Ok(answer) if answer.status() == StatusCode::OK => break,
                        Ok(answer) => {
                            let status = answer.status();
                            last = format!(
                                "{pick}: {status} {}",
                                answer.text().await.unwrap_or_default()
                            );
                            assert!(
                                [StatusCode::CONFLICT, StatusCode::SERVICE_UNAVAILABLE]
                                    .contains(&status),
                                "{content}: {last}"
                            );
                        }
                        // The killed process.
                        Err(error) => last = format!("{pick}: {error}"),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                done.push((id.clone(), content, started.elapsed()));
            }
            done
        })
    });
    let clients: Vec<_> = clients.collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    services[0].signal("KILL");
    let killed_at = started.elapsed();
    dead.store(true, Ordering::Relaxed);
    let mut written: HashMap<String, Vec<(String, Duration)>> = HashMap::new();
    for client in futures::future::join_all(clients).await {
        let client = match client {
            Ok(client) => client,
            Err(error) => {
                for service in &services[1..] {
                    let metrics = service.metrics().await;
                    let interesting: Vec<&str> = metrics
                        .lines()
                        .filter(|l| {
                            !l.starts_with('#')
                                && (l.contains("waiting")
                                    || l.contains("busy")
                                    || l.contains("live")
                                    || l.contains("slots")
                                    || l.contains("forwarded")
                                    || l.contains("store_errors")
                                    || l.contains("turns_total"))
                        })
                        .collect();
                    eprintln!(
                        "{}:\n{}\n{}",
                        service.addr,
                        interesting.join("\n"),
                        service
                            .logs()
                            .lines()
                            .rev()
                            .take(30)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
                panic!("{error}");
            }
        };
        for (id, content, at) in client {
            written.entry(id).or_default().push((content, at));
        }
    }
    for (id, writes) in &written {
        // Served again within the lease and a second of the kill (writes that were
        // answered after the kill, the first of them).
        if let Some(first) = writes
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| *at > killed_at)
            .min()
        {
            assert!(
                first - killed_at < LEASE + Duration::from_secs(1),
                "session {id} served again {:?} after the kill",
                first - killed_at
            );
        }
        assert!(
            writes.iter().any(|(_, at)| *at > killed_at),
            "session {id}: no write after the kill; the load ended too soon"
        );
        let users = alternating_once(&services[1], id).await;
        let written: HashSet<String> = writes.iter().map(|(content, _)| content.clone()).collect();
        assert_eq!(users, written, "session {id}: its writes, each once");
    }
}

/// The user messages of a session's history, after checking that it strictly
/// alternates (user, assistant, user…) and holds no user message twice.
async fn alternating_once(service: &Service, id: &str) -> HashSet<String> {
    let history = history(service, id).await;
    for (i, (role, content)) in history.iter().enumerate() {
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        assert_eq!(role, expected, "session {id}, message {i}: {content}");
    }
    let users: Vec<String> = history
        .into_iter()
        .filter(|(role, _)| role == "user")
        .map(|(_, content)| content)
        .collect();
    let unique: HashSet<String> = users.iter().cloned().collect();
    assert_eq!(unique.len(), users.len(), "session {id}: a message twice");
    unique
}

/// The process serving a session freezes (SIGSTOP) in the middle of a turn, past its
/// lease; another takes the session over and commits to it; the frozen one wakes up and
/// finishes its turn: its commit is fenced, its writer gets `409 session_moved`, and the
/// history has no trace of it.
#[tokio::test]
async fn a_frozen_instance_that_wakes_after_a_takeover_commits_nothing() {
    let Some(Cluster {
        services,
        openai,
        _database,
    }) = cluster("instances::zombie", 2).await
    else {
        return;
    };
    let (a, b) = (&services[0], &services[1]);
    let id = a.create_session(json!({"provider": "openai"})).await;
    openai.pause();
    let zombie = tokio::spawn(
        message(a, &id, json!({"content": "from the frozen one"}))
            .timeout(Duration::from_secs(30))
            .send(),
    );
    // Its turn is waiting on the provider when it freezes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while openai.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the turn never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.signal("STOP");
    tokio::time::sleep(LEASE + LEASE / 2).await;
    openai.resume();
    let taken = message(b, &id, json!({"content": "from the new one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), StatusCode::OK);
    a.signal("CONT");
    let fenced = zombie.await.unwrap().unwrap();
    assert_eq!(fenced.status(), StatusCode::CONFLICT);
    let body: Value = fenced.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_moved", "{body}");
    let expected = [
        ("user".to_owned(), "from the new one".to_owned()),
        ("assistant".into(), "reply to: from the new one".into()),
    ];
    assert_eq!(history(b, &id).await, expected);
    // Asked again, the frozen one now forwards to the new one.
    assert_eq!(history(a, &id).await, expected);
    assert_eq!(
        a.metric("text_session_store_errors_total{kind=\"fenced\"}")
            .await,
        1.0
    );
}

/// SIGTERM hands the leases back at once: another process serves at once, without
/// waiting for the lease to lapse.
#[tokio::test]
async fn a_stopping_instance_hands_its_sessions_back_at_once() {
    let Some(database) = TestDatabase::create("instances::hand_back").await else {
        return;
    };
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let url = database.url();
    // A lease far longer than the test: only the hand-back lets B serve.
    let env = [
        ("STORE", url.as_str()),
        ("LEASE_SECS", "60"),
        ("SHUTDOWN_GRACE_SECS", "1"),
    ];
    let mut a = spawn_instance(&openai, &env).await;
    let b = spawn_instance(&openai, &env).await;
    let id = a.create_session(json!({"provider": "openai"})).await;
    a.signal("TERM");
    assert!(a.exit_within(Duration::from_secs(10)).await.success());
    let answer = message(&b, &id, json!({"content": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        b.metric("text_session_leases_taken_over_total").await,
        0.0,
        "handed back, not taken over"
    );
}

/// Three processes with no stickiness at all (each request to the next one in turn),
/// many clients writing to a few sessions with both priorities, streams and cancels:
/// every history strictly alternates, and every acknowledged message is in it exactly
/// once.
#[tokio::test]
async fn round_robin_over_three_instances_never_interleaves_or_loses_a_history() {
    const CLIENTS: usize = 200;
    const SESSIONS: usize = 20;
    const RUN: Duration = Duration::from_secs(30);
    let Some(Cluster {
        services,
        openai,
        _database,
    }) = cluster("instances::round_robin", 3).await
    else {
        return;
    };
    openai.set_jitter(Duration::from_millis(20));
    let services = Arc::new(services);
    let ids = Arc::new(spread_sessions(&services, SESSIONS).await);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|client| {
        let (services, ids, next) = (services.clone(), ids.clone(), next.clone());
        tokio::spawn(async move {
            let mut acknowledged: Vec<(String, String)> = Vec::new();
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            let mut n = 0;
            while started.elapsed() < RUN {
                n += 1;
                let id = &ids[(client + n) % SESSIONS];
                let service = &services[next.fetch_add(1, Ordering::Relaxed) % 3];
                if n % 10 == 0 {
                    let cancel = service
                        .client
                        .post(service.url(&format!("/text/session/{id}/cancel")))
                        .json(&json!({"mode": if n % 20 == 0 { "keep" } else { "rollback" }}))
                        .send()
                        .await
                        .unwrap();
                    *statuses.entry(cancel.status().as_u16()).or_default() += 1;
                    continue;
                }
                let content = format!("c{client}-m{n}");
                let body = json!({
                    "content": content,
                    "priority": if n % 3 == 0 { "high" } else { "normal" },
                    "stream": n % 4 == 0,
                });
                let answer = message(service, id, body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await;
                let Ok(answer) = answer else {
                    *statuses.entry(0).or_default() += 1;
                    continue;
                };
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                *statuses.entry(status.as_u16()).or_default() += 1;
                let committed = if n % 4 == 0 {
                    status == StatusCode::OK && text.contains("event: turn.completed")
                } else {
                    status == StatusCode::OK
                };
                if committed {
                    acknowledged.push((id.clone(), content));
                }
            }
            (acknowledged, statuses)
        })
    });
    let mut acknowledged: HashMap<String, HashSet<String>> = HashMap::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for client in futures::future::join_all(clients).await {
        let (mine, counts) = client.unwrap();
        for (id, content) in mine {
            acknowledged.entry(id).or_default().insert(content);
        }
        for (status, count) in counts {
            *statuses.entry(status).or_default() += count;
        }
    }
    eprintln!("statuses: {statuses:?}");
    let mut forwarded = 0.0;
    for service in services.iter() {
        forwarded += service
            .metric("text_session_requests_forwarded_total")
            .await;
    }
    assert!(forwarded > 0.0, "no request was forwarded");
    let total: usize = acknowledged.values().map(HashSet::len).sum();
    assert!(
        total >= 200,
        "only {total} writes acknowledged: {statuses:?}"
    );
    for (n, id) in ids.iter().enumerate() {
        let unique = alternating_once(&services[n % 3], id).await;
        for content in acknowledged.get(id).into_iter().flatten() {
            assert!(
                unique.contains(content),
                "session {id}: acknowledged {content} is missing"
            );
        }
    }
}

/// `deploy/run-local.sh`: three processes and nginx hashing on the session id. Every
/// write through the balancer lands on the process serving its session (no request is
/// forwarded); when that process is killed, the balancer's next process serves the
/// session within the lease. Skipped (and says so) without nginx, unless
/// `REQUIRE_NGINX=1` (CI installs it).
#[tokio::test]
async fn behind_the_deploy_balancer_a_session_stays_on_one_process_and_moves_when_it_dies() {
    if !std::path::Path::new("/usr/sbin/nginx").exists() && which("nginx").is_none() {
        assert!(
            std::env::var("REQUIRE_NGINX").as_deref() != Ok("1"),
            "REQUIRE_NGINX=1 but nginx is not installed"
        );
        eprintln!("skipped: nginx is not installed (apt-get install nginx-light)");
        return;
    }
    let Some(database) = TestDatabase::create("instances::deploy").await else {
        return;
    };
    let ports: Vec<u16> = (0..4)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port()
        })
        .collect();
    let run_dir = std::env::temp_dir().join(format!("text-session-deploy-{}", ports[0]));
    let instance_ports = ports[1..]
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let mut deploy = tokio::process::Command::new("bash");
    deploy
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/run-local.sh"))
        .env("STORE", database.url())
        .env("BIN", env!("CARGO_BIN_EXE_text-session-api"))
        .env("BALANCER_PORT", ports[0].to_string())
        .env("INSTANCE_PORTS", &instance_ports)
        .env("RUN_DIR", &run_dir)
        .env("LEASE_SECS", LEASE_SECS)
        .env_remove("API_KEYS")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(false);
    let child = deploy.spawn().unwrap();
    let mut deployed = Deployed {
        child,
        instances: HashMap::new(),
    };
    let mut lines = tokio::io::BufReader::new(deployed.child.stdout.take().unwrap()).lines();
    let balancer = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the deploy script starts within a minute")
            .unwrap()
            .expect("the deploy script printed the balancer's address");
        // `process 127.0.0.1:PORT (pid N, log …)`
        if let Some((port, pid)) = line
            .strip_prefix("process 127.0.0.1:")
            .and_then(|rest| rest.split_once(" (pid "))
            .and_then(|(port, rest)| {
                Some((
                    port.parse::<u16>().ok()?,
                    rest.split(',').next()?.parse::<u32>().ok()?,
                ))
            })
        {
            deployed.instances.insert(port, pid);
        }
        if let Some(url) = line.strip_prefix("balancer: ") {
            break url.to_owned();
        }
    };
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{balancer}/text/session"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let write = |content: String| {
        client
            .post(format!("{balancer}/text/session/{id}/message"))
            .json(&json!({"content": content}))
            .send()
    };
    for n in 0..20 {
        assert_eq!(
            write(format!("m{n}")).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let metrics = |port: u16, name: &'static str| {
        let client = client.clone();
        async move {
            let text = client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric_value(&text, name)
        }
    };
    let mut serving = None;
    for &port in &ports[1..] {
        assert_eq!(
            metrics(port, "text_session_requests_forwarded_total").await,
            0.0,
            "the balancer sends the session's requests where it is served"
        );
        if metrics(port, "text_session_sessions_live").await == 1.0 {
            serving = Some(port);
        }
    }
    let serving = serving.expect("one process serves the session");
    // Killed: the balancer moves on to the next process, which serves the session once
    // the lease has lapsed.
    let pid = deployed.instances[&serving];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    loop {
        let status = write("after the kill".into()).await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        // 502 from nginx (a kept-alive connection to the killed process), then 503
        // `instance_unavailable` until the lease lapses: a client sends it again.
        assert!(
            [StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "{status}"
        );
        assert!(started.elapsed() < LEASE + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history: Value = client
        .get(format!("{balancer}/text/session/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = history["session"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 42);
    assert_eq!(messages[40]["content"], "after the kill");
    drop(deployed);
    let _ = std::fs::remove_dir_all(&run_dir);
}

/// The deploy script and what it started; stopped when dropped (the script stops its
/// processes and nginx on SIGTERM).
struct Deployed {
    child: tokio::process::Child,
    /// Each process's port and pid.
    instances: HashMap<u16, u32>,
}

impl Drop for Deployed {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.exists())
}

/// The live feed follows its session across processes: opened through another process
/// it is forwarded to the one serving the session; when that one dies the stream ends,
/// and a follower reconnecting with its `Last-Event-ID` goes on where the session is
/// served now.
#[tokio::test]
async fn the_live_feed_is_forwarded_to_the_serving_process_and_resumes_after_it_dies() {
    use futures::StreamExt;
    let Some(Cluster {
        mut services,
        _database,
        ..
    }) = cluster("instances::feed", 2).await
    else {
        return;
    };
    let id = services[0].create_session(json!({})).await;
    // Served by the first process (its first request), followed through the second.
    assert_eq!(services[0].session_as(None, &id).await["version"], 1);
    let b = &services[1];
    let feed = b
        .client
        .get(b.url(&format!("/text/session/{id}/events?version=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(feed.status(), StatusCode::OK);
    let mut feed = crate::sse::events_until_broken(feed);
    let sent = message(&services[0], &id, json!({"content": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    let mut last = String::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .unwrap()
    {
        last = event.id.clone();
        if event.name == "turn.completed" {
            break;
        }
    }
    assert_eq!(last, "2:1");
    assert_eq!(b.metric("text_session_requests_forwarded_total").await, 1.0);

    // The serving process dies: the forwarded stream ends (broken off, as a dropped
    // connection: EventSource reconnects).
    let a = services.remove(0);
    let mut a = a;
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), feed.next())
        .await
        .expect("the stream ends when the process serving it dies");
    assert!(ended.is_none());

    // Reconnecting as EventSource does: once the lease lapses, the survivor serves the
    // session and the follower goes on from what it saw.
    let b = &services[0];
    let deadline = Instant::now() + LEASE * 5;
    let resumed = loop {
        let response = b
            .client
            .get(b.url(&format!("/text/session/{id}/events")))
            .header("last-event-id", &last)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            break response;
        }
        assert!(Instant::now() < deadline, "{}", response.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut resumed = crate::sse::events(resumed);
    let sent = message(b, &id, json!({"content": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::OK);
    let mut names = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), resumed.next())
        .await
        .unwrap()
    {
        names.push(event.name.clone());
        if event.name == "session.committed" {
            assert_eq!(event.id, "3:0");
            assert_eq!(event.data["newMessages"][0]["content"], "two");
            break;
        }
    }
    assert_eq!(names.first().map(String::as_str), Some("turn.started"));
}
