#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A load test of the real service: starts it in-process on port 0 with the offline
//! echo provider, then drives it over HTTP and prints throughput, latency percentiles
//! and the overhead the service reports per turn (`x-overhead-us`).
//!
//! ```sh
//! cargo run --release --example load                 # defaults below, STORE=memory
//! cargo run --release --example load -- 64 200 500   # sessions, messages each, history for the view check
//! STORE=sqlite://target/load.db cargo run --release --example load   # a fresh SQLite file
//! STORE=postgres://postgres@127.0.0.1:5432/test cargo run --release --example load
//! ```
//!
//! `STORE` is as for the service. A SQLite file (and its `-wal`, `-shm`) is removed
//! first. For Postgres, the URL names an admin database: the bench creates a fresh
//! database `load_<pid>` next to it, runs on that, and drops it at the end.
//!
//! Scenarios: (1) many sessions written in parallel, one writer each: writes/s and
//! latency, and for a durable store what the service's own histogram
//! `text_session_store_commit_duration_seconds` saw during the run (count, mean, and
//! p50/p99 to the bucket: upper bounds only); (2) one session with every writer at once
//! (the turn lock serializes them); (3) the answer size of a write on a long history,
//! `?view=full` against `?view=delta`; (4) durable stores only: the store alone, without
//! HTTP: `sessions` tasks, one session each, each committing `messages` turns of two
//! messages (a user message and its reply) through `Store::commit`, each commit timed
//! exactly: commits/s and p50/p99/max; then the same with one task, for the latency of
//! a commit that shares its fsync with nobody. (5) Postgres only: what forwarding adds
//! to a write's latency, p50 and p99, two processes on the database (in this one).
//! (6) forking the long session of (3) through the API, p50 and p99; (7) durable stores
//! only: forks at the store alone, sharing the source's rows against copying them, time
//! and bytes per fork. The SQLite store of (4) is a file of its
//! own (`<file>-commits`), since the service holds its file exclusively.
//!
//! The load average (`/proc/loadavg`) is printed at the start and the end: figures
//! taken while something else runs are not comparable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sqlx::Connection;
use text_session_api::config::Config;
use text_session_api::message::{Defaults, Message, Role, Timestamp};
use text_session_api::server::Server;
use text_session_api::session::PRUNE_TURNS_EVERY;
use text_session_api::store::{CommitRows, SessionRow, Store, TurnBounds, TurnRow};
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sessions = args.first().copied().unwrap_or(32);
    let messages = args.get(1).copied().unwrap_or(100);
    let history = args.get(2).copied().unwrap_or(1000);

    println!("load average at start: {}", load_average());
    // In memory unless STORE names a store.
    let target =
        Target::prepare(&std::env::var("STORE").unwrap_or_else(|_| "memory".to_owned())).await;
    let mut config = Config::defaults();
    config.max_waiting_per_session = 100_000;
    config.max_messages_per_session = 1_000_000;
    config.store = target.service_url();
    println!("store: {}", config.store);
    let server = Server::build(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    println!("(1) parallel sessions: {sessions} sessions × {messages} messages, one writer each");
    let ids = create(&client, &base, sessions).await;
    let before = CommitHistogram::scrape(&client, &base).await;
    let started = Instant::now();
    let runs = ids.iter().map(|id| {
        let (client, base, id) = (client.clone(), base.clone(), id.clone());
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(messages);
            for i in 0..messages {
                samples.push(write(&client, &base, &id, i, "delta").await);
            }
            samples
        })
    });
    let samples: Vec<_> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap_or_default())
        .collect();
    let took = started.elapsed();
    report(&samples, took);
    if target.is_durable() {
        CommitHistogram::scrape(&client, &base)
            .await
            .minus(&before)
            .report();
    }

    let writers = sessions * 4;
    println!("(2) one session, {writers} writers at once (serialized by the turn lock)");
    let id = create(&client, &base, 1).await.remove(0);
    let started = Instant::now();
    let runs = (0..writers).map(|i| {
        let (client, base, id) = (client.clone(), base.clone(), id.clone());
        tokio::spawn(async move { write(&client, &base, &id, i, "delta").await })
    });
    let samples: Vec<_> = futures::future::join_all(runs)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    report(&samples, started.elapsed());

    println!("(3) answer size on a {history}-message history: ?view=full against ?view=delta");
    let id = create(&client, &base, 1).await.remove(0);
    for i in 0..history / 2 {
        write(&client, &base, &id, i, "delta").await;
    }
    for view in ["full", "delta"] {
        let started = Instant::now();
        let mut bytes = 0;
        for i in 0..50 {
            let url = format!("{base}/text/session/{id}/message?view={view}");
            let response = client
                .post(&url)
                .json(&json!({"content": format!("m{i}")}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            bytes += response.bytes().await.map(|b| b.len()).unwrap_or(0);
        }
        let took = started.elapsed();
        println!(
            "  view={view:<5}  {:>8} bytes per answer  {:>8.2} ms per write",
            bytes / 50,
            took.as_secs_f64() * 1000.0 / 50.0
        );
    }

    println!("(6) forks of that {history}-message session through the API, one at a time");
    let mut forks = Vec::with_capacity(50);
    for _ in 0..50 {
        let started = Instant::now();
        let response = client
            .post(format!("{base}/text/session/{id}/fork"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), 201);
        let _ = response.bytes().await;
        forks.push(started.elapsed());
    }
    forks.sort();
    println!(
        "  fork: p50 {:?} p99 {:?} (the answer carries the fork's whole history)",
        percentile(&forks, 0.5),
        percentile(&forks, 0.99)
    );

    // The service is done: let it go (and its store with it) before the store alone runs.
    let _ = stop.send(());
    let _ = serving.await;

    if let Some(url) = target.commits_url() {
        for tasks in [sessions, 1] {
            println!(
                "(4) the store alone: {tasks} tasks × {messages} commits of 2 messages, one session each"
            );
            store_commits(&url, tasks, messages).await;
        }
    }
    if let Some(url) = target.commits_url() {
        fork_cost(&url, history).await;
    }
    if let Target::Postgres { url, .. } = &target {
        forwarding_cost(url, messages.max(200)).await;
    }
    target.finish().await;
    println!("load average at end: {}", load_average());
}

/// Latency of one write and the overhead the service reported for it.
struct Sample {
    latency: Duration,
    overhead_us: u64,
}

async fn create(client: &reqwest::Client, base: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let body: Value = client
            .post(format!("{base}/text/session"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        ids.push(
            body["session"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    ids
}

async fn write(client: &reqwest::Client, base: &str, id: &str, i: usize, view: &str) -> Sample {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/text/session/{id}/message?view={view}"))
        .json(&json!({"content": format!("message number {i}")}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(response.status().is_success(), "{}", response.status());
    let overhead_us = response
        .headers()
        .get("x-overhead-us")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = response.bytes().await;
    Sample {
        latency: started.elapsed(),
        overhead_us,
    }
}

fn report(samples: &[Sample], took: Duration) {
    let mut latency: Vec<_> = samples.iter().map(|s| s.latency).collect();
    let mut overhead: Vec<_> = samples.iter().map(|s| s.overhead_us).collect();
    latency.sort();
    overhead.sort_unstable();
    println!(
        "  {} writes in {:.2} s = {:.0} writes/s; latency p50 {:?} p99 {:?} max {:?}; overhead p50 {} µs p99 {} µs",
        samples.len(),
        took.as_secs_f64(),
        samples.len() as f64 / took.as_secs_f64(),
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        latency[latency.len() - 1],
        percentile(&overhead, 0.5),
        percentile(&overhead, 0.99),
    );
}

/// The nearest-rank percentile `p` (0 to 1) of sorted values.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What the bench runs on: the store of `STORE`, made fresh.
enum Target {
    Memory,
    Sqlite {
        path: String,
    },
    Postgres {
        /// The URL given: the admin database the bench's own is created from.
        admin: String,
        /// The URL of the bench's own database.
        url: String,
        name: String,
    },
}

impl Target {
    async fn prepare(store: &str) -> Self {
        if let Some(path) = store.strip_prefix("sqlite://") {
            remove_sqlite(path);
            remove_sqlite(&commits_file(path));
            return Target::Sqlite {
                path: path.to_owned(),
            };
        }
        if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            let name = format!("load_{}", std::process::id());
            let mut url = url::Url::parse(store).unwrap_or_else(|e| panic!("STORE: {e}"));
            url.set_path(&format!("/{name}"));
            let mut admin = sqlx::PgConnection::connect(store)
                .await
                .unwrap_or_else(|e| panic!("STORE: cannot connect to {store}: {e}"));
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
            let _ = admin.close().await;
            return Target::Postgres {
                admin: store.to_owned(),
                url: url.to_string(),
                name,
            };
        }
        Target::Memory
    }

    fn is_durable(&self) -> bool {
        !matches!(self, Target::Memory)
    }

    fn service_url(&self) -> String {
        match self {
            Target::Memory => "memory".to_owned(),
            Target::Sqlite { path } => format!("sqlite://{path}"),
            Target::Postgres { url, .. } => url.clone(),
        }
    }

    /// Where the store-alone scenario runs, for a durable store.
    fn commits_url(&self) -> Option<String> {
        match self {
            Target::Memory => None,
            Target::Sqlite { path } => Some(format!("sqlite://{}", commits_file(path))),
            // Sessions of their own in the same database; the service is stopped by then.
            Target::Postgres { url, .. } => Some(url.clone()),
        }
    }

    /// Drops the bench's Postgres database; SQLite files are left for a look.
    async fn finish(self) {
        if let Target::Postgres { admin, name, .. } = self {
            match sqlx::PgConnection::connect(&admin).await {
                Ok(mut admin) => {
                    if let Err(e) =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await
                    {
                        eprintln!("DROP DATABASE {name}: {e}");
                    }
                    let _ = admin.close().await;
                }
                Err(e) => eprintln!("cannot drop {name}: {e}"),
            }
        }
    }
}

fn commits_file(path: &str) -> String {
    format!("{path}-commits")
}

fn remove_sqlite(path: &str) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

/// The service's `text_session_store_commit_duration_seconds` histogram.
#[derive(Default)]
struct CommitHistogram {
    /// (upper bound in seconds, cumulative count), in the order of the bounds.
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl CommitHistogram {
    const NAME: &str = "text_session_store_commit_duration_seconds";

    async fn scrape(client: &reqwest::Client, base: &str) -> Self {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut histogram = Self::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(Self::NAME) else {
                continue;
            };
            let Some((key, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            if let Some(le) = key
                .strip_prefix("_bucket{le=\"")
                .and_then(|k| k.strip_suffix("\"}"))
            {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                histogram
                    .buckets
                    .push((bound, value.parse::<f64>().unwrap_or(0.0) as u64));
            } else if key == "_sum" {
                histogram.sum = value.parse().unwrap_or(0.0);
            } else if key == "_count" {
                histogram.count = value.parse().unwrap_or(0);
            }
        }
        histogram
    }

    /// What was observed between `earlier` and this.
    fn minus(mut self, earlier: &Self) -> Self {
        for ((_, count), (_, before)) in self.buckets.iter_mut().zip(&earlier.buckets) {
            *count -= before;
        }
        self.sum -= earlier.sum;
        self.count -= earlier.count;
        self
    }

    /// The upper bound of the bucket the `p` quantile falls in.
    fn bound(&self, p: f64) -> f64 {
        let rank = (p * self.count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, count)| *count >= rank.max(1))
            .map_or(f64::NAN, |(bound, _)| *bound)
    }

    fn report(&self) {
        if self.count == 0 {
            println!("  service's commit histogram: no commit observed");
            return;
        }
        println!(
            "  service's commit histogram: {} commits, mean {:.3} ms; p50 ≤ {:.3} ms, p99 ≤ {:.3} ms (bucket bounds)",
            self.count,
            self.sum * 1000.0 / self.count as f64,
            self.bound(0.5) * 1000.0,
            self.bound(0.99) * 1000.0,
        );
    }
}

/// Scenario (5), Postgres only: two processes (here, two servers in this one) on the
/// database, each with its `INSTANCE_ADDR`; one session served by the first; `writes`
/// writes sent straight to it and as many through the second, which forwards them,
/// alternately, one at a time: the latency of each, and what forwarding adds.
async fn forwarding_cost(url: &str, writes: usize) {
    println!(
        "(5) forwarding: {writes} writes straight to the serving process, {writes} through another"
    );
    let mut bases = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut config = Config::defaults();
        config.store = url.to_owned();
        config.instance_addr = Some(addr.to_string());
        config.max_messages_per_session = 1_000_000;
        let server = Server::build(&config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push((
            stop,
            tokio::spawn(server.serve(listener, async move {
                let _ = stopped.await;
            })),
        ));
        bases.push(format!("http://{addr}"));
    }
    let client = reqwest::Client::new();
    let id = create(&client, &bases[0], 1).await.remove(0);
    // The first request takes the new session: to the first process.
    write(&client, &bases[0], &id, 0, "delta").await;
    let (mut direct, mut forwarded) = (Vec::with_capacity(writes), Vec::with_capacity(writes));
    for i in 0..writes {
        direct.push(
            write(&client, &bases[0], &id, 2 * i + 1, "delta")
                .await
                .latency,
        );
        forwarded.push(
            write(&client, &bases[1], &id, 2 * i + 2, "delta")
                .await
                .latency,
        );
    }
    direct.sort();
    forwarded.sort();
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    let (f50, f99) = (percentile(&forwarded, 0.5), percentile(&forwarded, 0.99));
    println!(
        "  straight p50 {d50:?} p99 {d99:?}; forwarded p50 {f50:?} p99 {f99:?}; forwarding adds p50 {:?} p99 {:?}",
        f50.saturating_sub(d50),
        f99.saturating_sub(d99)
    );
    for (stop, serving) in stops {
        let _ = stop.send(());
        let _ = serving.await;
    }
}

/// Scenario (7): what a fork of a `len`-message session costs the store: 100 forks
/// sharing the source's rows, against 100 sessions copying them (what a fork would be
/// without sharing); each timed, and what the store grew by.
async fn fork_cost(url: &str, len: usize) {
    println!("(7) the store alone: 100 forks of a {len}-message session, shared and copied");
    let mut store = Store::open(url).await.unwrap_or_else(|e| panic!("{e}"));
    let now = Timestamp::now();
    let source = echo_session();
    let history: Vec<Message> = (0..len)
        .map(|i| {
            let role = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            Message::text(
                role,
                format!("message number {i} of a long conversation"),
                now,
            )
        })
        .collect();
    store
        .create(&source, &history)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for shared in [true, false] {
        let before;
        (store, before) = store_bytes(url, store).await;
        let mut took = Vec::with_capacity(100);
        for _ in 0..100 {
            let row = SessionRow {
                id: Uuid::new_v4(),
                forked_from: shared.then_some(text_session_api::message::ForkedFrom {
                    session_id: source.id,
                    version: 1,
                    up_to: len,
                }),
                ..source.clone()
            };
            let own: &[Message] = if shared { &[] } else { &history };
            let started = Instant::now();
            store
                .create(&row, own)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            took.push(started.elapsed());
        }
        let after;
        (store, after) = store_bytes(url, store).await;
        took.sort();
        println!(
            "  {}: p50 {:?} p99 {:?}; the store grew {} bytes per fork",
            if shared { "shared" } else { "copied" },
            percentile(&took, 0.5),
            percentile(&took, 0.99),
            after.saturating_sub(before) / 100
        );
    }
    store.close().await;
}

/// The bytes the store at `url` takes: a SQLite file once closed (its log written back;
/// the store is opened again), Postgres' sessions and messages tables with their indexes.
async fn store_bytes(url: &str, store: Store) -> (Store, u64) {
    if let Some(path) = url.strip_prefix("sqlite://") {
        store.close().await;
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        return (
            Store::open(url).await.unwrap_or_else(|e| panic!("{e}")),
            bytes,
        );
    }
    let mut db = sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes: i64 = sqlx::query_scalar(
        "SELECT pg_total_relation_size('messages') + pg_total_relation_size('sessions')",
    )
    .fetch_one(&mut db)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = db.close().await;
    (store, u64::try_from(bytes).unwrap_or(0))
}

/// Scenario (4): `tasks` sessions created, then each committed to `commits` times by a
/// task of its own, all at once; every commit timed.
async fn store_commits(url: &str, tasks: usize, commits: usize) {
    let store = Arc::new(Store::open(url).await.unwrap_or_else(|e| panic!("{e}")));
    let mut rows = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let row = echo_session();
        store
            .create(&row, &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        rows.push(row);
    }
    let started = Instant::now();
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let runs = rows.into_iter().map(|row| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(commits);
            for i in 0..commits {
                let now = Timestamp::now();
                let turn = [
                    Message::text(Role::User, format!("message number {i}"), now),
                    Message::text(Role::Assistant, format!("echo: message number {i}"), now),
                ];
                let version = 1 + i as u64;
                let record = TurnRow {
                    session: row.id,
                    id: Uuid::new_v4(),
                    created_at: now,
                    status: "completed".to_owned(),
                    record: turn_record(i),
                };
                let commit = CommitRows {
                    session: row.id,
                    from_version: version,
                    version: version + 1,
                    from: 2 * i,
                    messages: &turn,
                    updated_at: now,
                    keys: &[],
                    turns: std::slice::from_ref(&record),
                    // As a turn does: every 16th commit brings the records within bounds.
                    prune: version.is_multiple_of(PRUNE_TURNS_EVERY).then_some(BOUNDS),
                    epoch: None,
                };
                let began = Instant::now();
                store.commit(commit).await.unwrap_or_else(|e| panic!("{e}"));
                latencies.push(began.elapsed());
            }
            latencies
        })
    });
    let mut latencies: Vec<Duration> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let took = started.elapsed();
    latencies.sort();
    println!(
        "  {} commits in {:.2} s = {:.0} commits/s; commit p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    // Every commit is there: the version moved once per commit, two messages each.
    for id in ids {
        let stored = store
            .load(id, BOUNDS)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("session {id} is not stored"));
        assert_eq!(
            (stored.row.version, stored.messages.len()),
            (1 + commits as u64, 2 * commits),
            "session {id} read back"
        );
        // Its turn records too, past the last pruning's bounds at most.
        assert!(
            (commits.min(100)..=commits.min(100) + 16).contains(&stored.turns.len()),
            "session {id}: {} turn records",
            stored.turns.len()
        );
    }
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
}

/// The bounds of a session's turn records (the defaults).
const BOUNDS: TurnBounds = TurnBounds {
    records: 100,
    failed: 50,
};

/// A new session on the echo provider, as the store keeps it.
fn echo_session() -> SessionRow {
    let now = Timestamp::now();
    SessionRow {
        id: Uuid::new_v4(),
        owner: None,
        provider: "echo".into(),
        model: "echo-1".into(),
        defaults: Defaults::default(),
        tools: Vec::new(),
        metadata: Map::new(),
        created_at: now,
        updated_at: now,
        version: 1,
        forked_from: None,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A turn's stored record, of the size and shape the service writes for a `/message`
/// turn answered by the echo provider (its input, status, result and timings as JSON).
fn turn_record(i: usize) -> String {
    json!({
        "input": {"kind": "message", "staged": [{"role": "user", "content": format!("message number {i}"), "createdAt": Timestamp::now()}], "priority": "normal", "onBusy": "wait", "stream": false, "body": {"content": format!("message number {i}")}, "ifMatch": null},
        "status": "completed",
        "result": {"text": format!("echo: message number {i}"), "toolCalls": [], "finishReason": "stop", "usage": {"inputTokens": 3, "outputTokens": 4}, "provider": "echo", "model": "echo-1", "messagesSent": 2 * i + 1},
        "error": null,
        "attempts": 1,
        "startedAt": Timestamp::now(),
        "endedAt": Timestamp::now(),
        "waitedMs": 0,
        "providerMs": 0,
        "firstTokenMs": null,
        "heldMs": 0,
        "retriedBy": null
    })
    .to_string()
}
