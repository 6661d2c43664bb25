#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The bare relay the benchmark measures the service against: the same stack (axum in,
//! reqwest out, serde_json), no state. `POST /relay {"content": "…"}` sends one Chat
//! Completions request with that user message to `{base}/chat/completions` and answers
//! `{"text": <the reply>}`: the least a gateway in front of a model can do.
//!
//! ```sh
//! cargo run --release --example relay -- 127.0.0.1:0 http://127.0.0.1:9000/v1
//! ```
//!
//! Prints `relay listening on http://<addr>` once it accepts connections.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Clone)]
struct Relay {
    client: reqwest::Client,
    url: String,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let base = args
        .next()
        .expect("usage: relay <bind address> <provider base url>");
    let relay = Relay {
        client: reqwest::Client::new(),
        url: format!("{}/chat/completions", base.trim_end_matches('/')),
    };
    let app = axum::Router::new()
        .route("/relay", post(forward))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(&bind).await.unwrap();
    println!(
        "relay listening on http://{}",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, app).await.unwrap();
}

async fn forward(
    State(relay): State<Relay>,
    Json(body): Json<Value>,
) -> Result<Json<Value>, (StatusCode, String)> {
    let content = body["content"].as_str().unwrap_or_default();
    let request = json!({
        "model": "mock",
        "messages": [{"role": "user", "content": content}],
    });
    let bad_gateway = |e: reqwest::Error| (StatusCode::BAD_GATEWAY, e.to_string());
    let reply: Value = relay
        .client
        .post(&relay.url)
        .json(&request)
        .send()
        .await
        .map_err(bad_gateway)?
        .error_for_status()
        .map_err(bad_gateway)?
        .json()
        .await
        .map_err(bad_gateway)?;
    let text = reply["choices"][0]["message"]["content"].clone();
    Ok(Json(json!({ "text": text })))
}
