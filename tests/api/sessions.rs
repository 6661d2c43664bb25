//! Create, get, list and delete sessions; unknown routes and methods.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn creating_a_session_with_no_body_or_an_empty_object_uses_every_default() {
    let app = spawn_app().await;
    for response in [
        app.client
            .post(app.url("/text/session"))
            .send()
            .await
            .unwrap(),
        app.post("/text/session", &json!({})).await,
    ] {
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["success"], true);
        let session = &body["session"];
        assert_eq!(session["provider"], "echo");
        assert_eq!(session["model"], "echo-1");
        assert_eq!(session["messages"], json!([]));
        assert_eq!(session["tools"], json!([]));
        assert_eq!(session["metadata"], json!({}));
        assert_eq!(session["status"], json!({"busy": false, "waiting": 0}));
        assert!(uuid::Uuid::parse_str(session["id"].as_str().unwrap()).is_ok());
        assert!(session["createdAt"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn a_created_session_keeps_its_provider_model_defaults_tools_metadata_and_instructions() {
    let app = spawn_app().await;
    let tool = json!({"type": "function", "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    let response = app
        .post(
            "/text/session",
            &json!({
                "provider": "openai", "model": "gpt-test",
                "instructions": ["be brief", "be kind"],
                "defaults": {"temperature": 0.2, "maxTokens": 512, "topP": 1.0, "stop": ["END"]},
                "tools": [tool], "metadata": {"user": "u-42"}
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let session = response.json::<Value>().await.unwrap()["session"].clone();
    assert_eq!(session["provider"], "openai");
    assert_eq!(session["model"], "gpt-test");
    assert_eq!(
        session["defaults"],
        json!({"temperature": 0.2, "maxTokens": 512, "topP": 1.0, "stop": ["END"]})
    );
    assert_eq!(session["tools"], json!([tool]));
    assert_eq!(session["metadata"], json!({"user": "u-42"}));
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[0]["content"], "be brief");
    assert_eq!(messages[1]["content"], "be kind");
    assert_eq!(
        app.openai.request_count(),
        0,
        "creating a session calls no provider"
    );
}

#[tokio::test]
async fn a_single_instruction_string_becomes_one_system_message() {
    let app = spawn_app().await;
    let id = app
        .create_session(json!({"instructions": "be brief"}))
        .await;
    let messages = app.messages(&id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "be brief");
}

#[tokio::test]
async fn getting_a_session_returns_it_with_its_history() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    app.message(&id, json!({"content": "hi"})).await;
    let response = app.get(&format!("/text/session/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["session"]["id"], id.as_str());
    assert_eq!(body["session"]["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn unknown_and_non_uuid_session_ids_are_404_session_not_found_on_every_route() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for id in [unknown.as_str(), "not-a-uuid", "123"] {
        let responses = [
            app.get(&format!("/text/session/{id}")).await,
            app.delete(&format!("/text/session/{id}")).await,
            app.post(
                &format!("/text/session/{id}/message"),
                &json!({"content": "x"}),
            )
            .await,
            app.post(&format!("/text/session/{id}/instructions"), &json!("x"))
                .await,
            app.post(
                &format!("/text/session/{id}/tool-output"),
                &json!({"callId": "c", "output": "o"}),
            )
            .await,
        ];
        for response in responses {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["success"], false);
            assert_eq!(body["error"]["code"], "session_not_found");
            assert!(body["error"]["message"].as_str().unwrap().contains(id));
        }
    }
}

#[tokio::test]
async fn listing_sessions_shows_each_without_messages_but_with_a_message_count() {
    let app = spawn_app().await;
    let first = app.create_session(json!({"instructions": "a"})).await;
    let second = app.create_session(json!({})).await;
    app.message(&second, json!({"content": "hi"})).await;
    let response = app.get("/text/sessions").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let by_id = |id: &str| sessions.iter().find(|s| s["id"] == id).unwrap();
    assert_eq!(by_id(&first)["messageCount"], 1);
    assert_eq!(by_id(&second)["messageCount"], 2);
    assert_eq!(body["nextCursor"], Value::Null);
    assert!(sessions.iter().all(|s| s.get("messages").is_none()));
    assert!(sessions.iter().all(|s| s["status"]["busy"] == false));
}

#[tokio::test]
async fn the_list_pages_newest_first_with_a_cursor_and_refuses_bad_ones() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_session(json!({})).await);
    }
    let mut seen: Vec<Value> = Vec::new();
    let mut path = "/text/sessions?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let body: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        seen.extend(body["sessions"].as_array().unwrap().iter().cloned());
        match body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/text/sessions?limit=3&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<&str> = seen.iter().map(|s| s["id"].as_str().unwrap()).collect();
    let mut expected: Vec<&str> = created.iter().map(String::as_str).collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted_ids, expected, "each session once");
    let keys: Vec<(String, String)> = seen
        .iter()
        .map(|s| {
            (
                s["createdAt"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "newest first: {keys:?}"
    );
    for bad in ["limit=0", "limit=1001", "limit=x", "after=nope"] {
        let response = app.get(&format!("/text/sessions?{bad}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
}

#[tokio::test]
async fn deleting_a_session_answers_success_and_then_it_is_gone() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    let response = app.delete(&format!("/text/session/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    assert_eq!(
        app.get(&format!("/text/session/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/text/session/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let list: Value = app.get("/text/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"], json!([]));
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404_and_a_wrong_method_a_json_405() {
    let app = spawn_app().await;
    let response = app.get("/no/such/route").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "not_found");

    let response = app
        .client
        .put(app.url("/text/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}
