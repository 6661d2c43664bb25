#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A load test of the real service: starts it in-process on port 0 with the offline
//! echo provider, then drives it over HTTP and prints throughput, latency percentiles
//! and the overhead the service reports per turn (`x-overhead-us`).
//!
//! ```sh
//! cargo run --release --example load                 # defaults below
//! cargo run --release --example load -- 64 200 500   # sessions, messages each, history for the view check
//! STORE=sqlite://target/load.db cargo run --release --example load   # with a durable store (else in memory)
//! ```
//!
//! Scenarios: (1) many sessions written in parallel, one writer each; (2) one session
//! with every writer at once (the turn lock serializes them); (3) the answer size of a
//! write on a long history, `?view=full` against `?view=delta`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use text_session_api::config::Config;
use text_session_api::server::Server;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sessions = args.first().copied().unwrap_or(32);
    let messages = args.get(1).copied().unwrap_or(100);
    let history = args.get(2).copied().unwrap_or(1000);

    let mut config = Config::defaults();
    config.max_waiting_per_session = 100_000;
    config.max_messages_per_session = 1_000_000;
    // In memory unless STORE names a store (a SQLite file here is started afresh).
    config.store = std::env::var("STORE").unwrap_or_else(|_| "memory".to_owned());
    let _ = std::fs::remove_file(config.store.trim_start_matches("sqlite://"));
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
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = reqwest::Client::new();

    println!("parallel sessions: {sessions} sessions × {messages} messages, one writer each");
    let ids = create(&client, &base, sessions).await;
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
    report(&samples, started.elapsed());

    let writers = sessions * 4;
    println!("one session, {writers} writers at once (serialized by the turn lock)");
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

    println!("answer size on a {history}-message history: ?view=full against ?view=delta");
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
    let pick = |p: f64| latency[((latency.len() - 1) as f64 * p) as usize];
    let pick_o = |p: f64| overhead[((overhead.len() - 1) as f64 * p) as usize];
    println!(
        "  {} writes in {:.2} s = {:.0} writes/s; latency p50 {:?} p99 {:?} max {:?}; overhead p50 {} µs p99 {} µs",
        samples.len(),
        took.as_secs_f64(),
        samples.len() as f64 / took.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        latency[latency.len() - 1],
        pick_o(0.5),
        pick_o(0.99),
    );
}
