//! The real binary as a child process, for the tests that only a process can show:
//! its log lines, signals, its memory and its file descriptors. The child gets a clean
//! environment, so nothing of the developer's (keys, `.env`) leaks in.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

use test_support::mock_provider::MockProvider;

/// The key the child is configured with for the mock.
pub const SECRET_KEY: &str = "sk-test-secret-key-123";

/// The service running as a child process; killed if the test ends before it exits.
pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Everything the child wrote to stderr so far (its log lines).
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// Kept open so that the child never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

/// Starts the binary on port 0 with only `PATH` and `env` in its environment, pointed at
/// `openai` (with the test key), and waits for its start-up line.
pub async fn spawn_service(openai: &MockProvider, env: &[(&str, &str)]) -> Service {
    let mut command = Command::new(env!("CARGO_BIN_EXE_text-session-api"));
    command.args(["--bind", "127.0.0.1:0"]);
    start(command, openai, env).await
}

/// One of several processes on one Postgres (`STORE` in `env`): listening on a port
/// picked for it, which is its `INSTANCE_ADDR` too.
pub async fn spawn_instance(openai: &MockProvider, env: &[(&str, &str)]) -> Service {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_text-session-api"));
    command.args(["--bind", &addr, "--instance-addr", &addr]);
    start(command, openai, env).await
}

/// As `spawn_service`, with the open-file limit (soft and hard) set to `nofile`.
pub async fn spawn_service_with_nofile(
    openai: &MockProvider,
    env: &[(&str, &str)],
    nofile: u64,
) -> Service {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!("ulimit -n {nofile} && exec \"$0\" --bind 127.0.0.1:0"),
        env!("CARGO_BIN_EXE_text-session-api"),
    ]);
    start(command, openai, env).await
}

async fn start(mut command: Command, openai: &MockProvider, env: &[(&str, &str)]) -> Service {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OPENAI_BASE_URL", &openai.base_url)
        .env("OPENAI_API_KEY", SECRET_KEY)
        // Each test keeps its sessions to itself; the tests of the store name one.
        .env("STORE", "memory")
        .envs(env.iter().copied())
        // `main` reads a `.env` here or in a parent directory: not the crate's.
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("the binary starts");
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_reader = {
        let stderr = stderr.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = stderr.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut first)).await;
    let addr = first
        .strip_prefix("text-session-api listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok());
    let Some(addr) = addr else {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), stderr_reader).await;
        panic!(
            "no start-up line ({read:?}): {first:?}; stderr:\n{}",
            stderr.lock().unwrap()
        );
    };
    Service {
        child,
        addr,
        client: reqwest::Client::new(),
        stderr,
        stderr_reader: Some(stderr_reader),
        _stdout: stdout,
    }
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends `kill -<signal> <pid>` (no libc here).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child still runs");
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// Waits (bounded by `limit`) for the child to exit, then for the rest of its stderr.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the child did not exit within {limit:?}; stderr:\n{}",
                self.logs()
            ),
        };
        if let Some(reader) = self.stderr_reader.take() {
            tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("stderr closes when the child exits")
                .unwrap();
        }
        status
    }

    /// The child's resident memory (`VmRSS`), in bytes.
    /// `GET /metrics`: the text.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// A metric's value from `/metrics` (`name` with its labels, if any); 0 when it is
    /// not there (a labelled counter appears once it has counted).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics().await, name)
    }

    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.id().expect("the child still runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kb * 1024
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub async fn create_session(&self, body: Value) -> String {
        self.create_session_as(None, body).await
    }

    /// Creates a session with API key `key` (none: no `Authorization`); its id.
    pub async fn create_session_as(&self, key: Option<&str>, body: Value) -> String {
        let response = self
            .as_key(self.client.post(self.url("/text/session")), key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let json: Value = response.json().await.unwrap();
        json["session"]["id"].as_str().unwrap().to_owned()
    }

    /// `GET /text/session/{id}` with API key `key`: the session.
    pub async fn session_as(&self, key: Option<&str>, id: &str) -> Value {
        let response = self
            .as_key(
                self.client.get(self.url(&format!("/text/session/{id}"))),
                key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()["session"].clone()
    }

    /// A request to `path` with API key `key` (none: no `Authorization`).
    pub fn request_as(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.as_key(self.client.request(method, self.url(path)), key)
    }

    fn as_key(
        &self,
        request: reqwest::RequestBuilder,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `/message` in a task of its own: (status, body, time it took).
    pub fn spawn_message(
        &self,
        id: &str,
        content: &str,
    ) -> JoinHandle<(StatusCode, Value, Duration)> {
        let request = self
            .client
            .post(self.url(&format!("/text/session/{id}/message")))
            .json(&json!({"content": content}));
        tokio::spawn(async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json().await.unwrap(), started.elapsed())
        })
    }

    /// Polls `GET /readyz` until it answers 503 (bounded by 5 s).
    pub async fn wait_until_not_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let response = match self.client.get(self.url("/readyz")).send().await {
                Ok(response) => response,
                Err(error) => panic!("readyz never answered 503 while serving: {error}"),
            };
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body, json!({"status": "shutting_down"}));
                return;
            }
            assert_eq!(response.status(), StatusCode::OK);
            assert!(Instant::now() < deadline, "readyz never answered 503");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The value of `name` (with its labels, if any) in a `/metrics` text; 0 when absent.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
