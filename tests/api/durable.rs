//! Sessions that outlive the process (`STORE=sqlite://…`), checked against the real
//! binary: killed with SIGKILL and started again on the same file.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::service::{Service, spawn_service};
use test_support::mock_provider::{MockProvider, Protocol};

/// A store file of its own in a folder of its own (created by the service), removed
/// when dropped.
struct StoreDir(std::path::PathBuf);

impl StoreDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("text-session-durable-{}", uuid::Uuid::new_v4())))
    }

    fn url(&self) -> String {
        format!("sqlite://{}/sessions.db", self.0.display())
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn kill(mut service: Service) {
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
            .client
            .post(service.url(&format!("/text/session/{id}/message")))
            .bearer_auth("key-one")
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
        .client
        .get(service.url("/text/sessions"))
        .bearer_auth("key-one")
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
        .client
        .get(service.url(&format!("/text/session/{id}")))
        .bearer_auth("key-two")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND, "still key one's");

    // It goes on where it stopped, and If-Match sees the stored version.
    let stale = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .bearer_auth("key-one")
        .header("if-match", "\"3\"")
        .json(&json!({"content": "stale"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let next = service
        .client
        .post(service.url(&format!("/text/session/{id}/message")))
        .bearer_auth("key-one")
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
        .client
        .delete(service.url(&format!("/text/session/{id}")))
        .bearer_auth("key-one")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    kill(service).await;

    let service = spawn_service(&openai, &env).await;
    let gone = service
        .client
        .get(service.url(&format!("/text/session/{id}")))
        .bearer_auth("key-one")
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
