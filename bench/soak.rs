#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The load of the soak case of `bench/run.py`: sessions that come and go, as a service
//! in use sees them. Each of `connections` clients, for `seconds`, creates a session,
//! writes `messages` user messages of 500 bytes to it one after another (each answered
//! by the provider), deletes it, and starts again. Prints one JSON line when done:
//! `{"turns": …, "sessions": …, "errors": …, "seconds": …}`.
//!
//! ```sh
//! cargo run --release --example soak -- http://127.0.0.1:8080 120 64 20
//! ```

use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Default)]
struct Counts {
    turns: u64,
    sessions: u64,
    errors: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .expect("usage: soak <service url> [seconds] [connections] [messages]")
        .trim_end_matches('/')
        .to_owned();
    let number = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().unwrap());
    let seconds = number(1, 120);
    let connections = number(2, 64);
    let messages = number(3, 20);

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let client = reqwest::Client::new();
    let clients: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(churn(client.clone(), url.clone(), until, messages)))
        .collect();
    let mut total = Counts::default();
    for client in clients {
        let counts = client.await.unwrap();
        total.turns += counts.turns;
        total.sessions += counts.sessions;
        total.errors += counts.errors;
    }
    println!(
        "{}",
        json!({
            "turns": total.turns,
            "sessions": total.sessions,
            "errors": total.errors,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
}

/// One client: sessions created, written to and deleted in turn until `until`.
async fn churn(client: reqwest::Client, url: String, until: Instant, messages: u64) -> Counts {
    let mut counts = Counts::default();
    let content = format!("{} 500 bytes", "x".repeat(490));
    while Instant::now() < until {
        let created = client
            .post(format!("{url}/text/session"))
            .json(&json!({}))
            .send()
            .await;
        let Some(id) = (match created {
            Ok(response) if response.status().is_success() => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|body| body["session"]["id"].as_str().map(str::to_owned)),
            _ => None,
        }) else {
            counts.errors += 1;
            continue;
        };
        counts.sessions += 1;
        for _ in 0..messages {
            let written = client
                .post(format!("{url}/text/session/{id}/message?view=delta"))
                .json(&json!({ "content": content }))
                .send()
                .await;
            match written {
                Ok(response) if response.status().is_success() => {
                    let _ = response.bytes().await;
                    counts.turns += 1;
                }
                _ => counts.errors += 1,
            }
        }
        let deleted = client
            .delete(format!("{url}/text/session/{id}"))
            .send()
            .await;
        if !deleted.is_ok_and(|r| r.status().is_success()) {
            counts.errors += 1;
        }
    }
    counts
}
