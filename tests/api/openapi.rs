//! The committed spec is exactly what the code generates, and is what the server serves.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test --test api openapi`.

use std::path::PathBuf;

use reqwest::StatusCode;

use crate::helpers::spawn_app;

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

#[test]
fn the_committed_openapi_json_matches_the_code() {
    let generated = text_session_api::openapi::document_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(spec_path().parent().unwrap()).unwrap();
        std::fs::write(spec_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(spec_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --test api openapi`"
    );
}

#[tokio::test]
async fn the_served_document_is_the_committed_file() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().await.unwrap();
    assert_eq!(served, std::fs::read_to_string(spec_path()).unwrap());
}

#[test]
fn every_route_is_documented_with_its_error_statuses() {
    let doc: serde_json::Value =
        serde_json::from_str(&text_session_api::openapi::document_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/text/session", "post"),
        ("/text/session/{id}", "get"),
        ("/text/session/{id}", "delete"),
        ("/text/sessions", "get"),
        ("/text/session/{id}/message", "post"),
        ("/text/session/{id}/instructions", "post"),
        ("/text/session/{id}/tool-output", "post"),
        ("/healthz", "get"),
        ("/openapi.json", "get"),
    ] {
        let operation = &paths[path][method];
        assert!(
            operation["summary"].is_string(),
            "{method} {path} has a summary"
        );
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has responses"
        );
    }
    let message = &paths["/text/session/{id}/message"]["post"]["responses"];
    for status in [
        "200", "400", "404", "409", "413", "415", "429", "502", "504",
    ] {
        assert!(message[status].is_object(), "message documents {status}");
    }
}
