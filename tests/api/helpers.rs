//! `spawn_app()`: the real server on port 0, with one mock provider per HTTP protocol,
//! and small helpers to talk to it.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use text_session_api::app::AppState;
use text_session_api::clock::Clock;
use text_session_api::config::{Config, Secret};
use text_session_api::server::Server;

use test_support::mock_provider::{MockProvider, Protocol};

/// The key the service is configured with for each mock.
pub const OPENAI_TEST_KEY: &str = "sk-test-openai-key";
pub const ANTHROPIC_TEST_KEY: &str = "sk-ant-test-key";

/// A running service and its mock providers.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub openai: MockProvider,
    pub anthropic: MockProvider,
    /// The service's clock: `advance` it to pass a TTL without sleeping through it.
    pub clock: Clock,
    /// The service's state, to look at what it holds.
    pub state: AppState,
}

/// The service with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The service with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let openai = MockProvider::start(Protocol::OpenAi).await;
    let anthropic = MockProvider::start(Protocol::Anthropic).await;
    let mut config = Config::defaults();
    // Each test keeps its sessions to itself; the tests of the store name one.
    config.store = "memory".to_owned();
    config.openai_base_url = openai.base_url.clone();
    config.openai_api_key = Some(Secret::new(OPENAI_TEST_KEY));
    config.anthropic_base_url = anthropic.base_url.clone();
    config.anthropic_api_key = Some(Secret::new(ANTHROPIC_TEST_KEY));
    // Retries stay on, with short backoffs so that tests stay fast.
    config.provider_retry_base_ms = 5;
    config.provider_retry_max_ms = 50;
    configure(&mut config);
    let clock = Clock::manual();
    let server = Server::build_with_clock(&config, clock.clone())
        .await
        .expect("valid test configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server.state().clone();
    tokio::spawn(server.serve(listener, std::future::pending()));
    TestApp {
        addr,
        client: reqwest::Client::new(),
        openai,
        anthropic,
        clock,
        state,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POSTs a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    /// Creates a session and returns its id.
    pub async fn create_session(&self, body: Value) -> String {
        let response = self.post("/text/session", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let json: Value = response.json().await.unwrap();
        json["session"]["id"].as_str().unwrap().to_owned()
    }

    /// The session as `GET /text/session/{id}` shows it.
    pub async fn session(&self, id: &str) -> Value {
        let response = self.get(&format!("/text/session/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let json: Value = response.json().await.unwrap();
        json["session"].clone()
    }

    /// The session's messages.
    pub async fn messages(&self, id: &str) -> Vec<Value> {
        self.session(id).await["messages"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Sends a user message and returns the status and body.
    pub async fn message(&self, id: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .post(&format!("/text/session/{id}/message"), &body)
            .await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// Waits until the session shows `waiting` writers (bounded by 10 s).
    pub async fn wait_until_waiting(&self, id: &str, waiting: u64) {
        self.wait_for_status(id, |status| status["waiting"] == json!(waiting))
            .await;
    }

    /// Waits until the session's `status` satisfies `check` (bounded by 10 s).
    pub async fn wait_for_status(&self, id: &str, check: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.session(id).await["status"].clone();
            if check(&status) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "status never matched: {status}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the ids `GET /text/sessions` lists satisfy `check` (bounded by 10 s);
    /// returns them.
    pub async fn wait_for_session_ids(&self, check: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let list: Value = self.get("/text/sessions").await.json().await.unwrap();
            let ids: Vec<String> = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect();
            if check(&ids) {
                return ids;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sessions never matched: {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Sends a user message in a task of its own; its status and body come back when
/// awaited, so that a test can do other things while the write waits or runs.
pub fn spawn_message(
    app: &TestApp,
    id: &str,
    body: Value,
) -> tokio::task::JoinHandle<(StatusCode, Value)> {
    let client = app.client.clone();
    let url = app.url(&format!("/text/session/{id}/message"));
    tokio::spawn(async move {
        let response = client.post(url).json(&body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    })
}

/// The (role, content) pairs of a message list.
pub fn roles_and_contents(messages: &[Value]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}
