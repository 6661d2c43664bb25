//! Turns as a resource: the waiting line in run order with live positions, taking a
//! waiting write back, the dead-letter view and retry, and the bounds on records.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, spawn_message};

async fn turns(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let response = app.get(&format!("/text/session/{id}/turns{query}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], true);
    body["turns"].as_array().unwrap().clone()
}

fn contents(turns: &[Value]) -> Vec<String> {
    turns
        .iter()
        .map(|t| t["input"]["content"].as_str().unwrap().to_owned())
        .collect()
}

fn users(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect()
}

/// A running turn held at the mock's gate, then five waiters of mixed priority.
async fn five_waiters(
    app: &TestApp,
    id: &str,
) -> Vec<tokio::task::JoinHandle<(StatusCode, Value)>> {
    app.openai.gate();
    let mut writers = vec![spawn_message(app, id, json!({"content": "holder"}))];
    app.openai.wait_for_requests(1).await;
    for (n, (content, priority)) in [
        ("low-1", "low"),
        ("high-1", "high"),
        ("normal-1", "normal"),
        ("high-2", "high"),
        ("low-2", "low"),
    ]
    .into_iter()
    .enumerate()
    {
        writers.push(spawn_message(
            app,
            id,
            json!({"content": content, "priority": priority}),
        ));
        app.wait_until_waiting(id, n as u64 + 1).await;
    }
    writers
}

#[tokio::test]
async fn the_waiting_list_is_the_order_of_commit_and_positions_follow_as_turns_run() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let writers = five_waiters(&app, &id).await;

    let waiting = turns(&app, &id, "?status=waiting").await;
    let line = contents(&waiting);
    assert_eq!(line, ["high-1", "high-2", "normal-1", "low-1", "low-2"]);
    let positions: Vec<_> = waiting
        .iter()
        .map(|t| t["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    for turn in &waiting {
        assert_eq!(turn["status"], "waiting");
        assert_eq!(turn["kind"], "message");
        assert_eq!(turn["sessionId"], id.as_str());
        assert!(turn["startedAt"].is_null() && turn["endedAt"].is_null());
    }
    let all = turns(&app, &id, "").await;
    assert_eq!(
        contents(&all)[0],
        "holder",
        "the whole list is in creation order"
    );
    assert_eq!(all[0]["status"], "running");
    assert!(all[0].get("position").is_none());

    for done in 1..=5usize {
        app.openai.step();
        app.wait_until_waiting(&id, (5 - done) as u64).await;
        let waiting = turns(&app, &id, "?status=waiting").await;
        assert_eq!(contents(&waiting), line[done..].to_vec());
        let positions: Vec<_> = waiting
            .iter()
            .map(|t| t["position"].as_u64().unwrap())
            .collect();
        assert_eq!(positions, (1..=(5 - done) as u64).collect::<Vec<_>>());
    }
    app.openai.step();
    for writer in writers {
        assert_eq!(writer.await.unwrap().0, StatusCode::OK);
    }
    let mut expected = vec!["holder".to_owned()];
    expected.extend(line);
    assert_eq!(
        users(&app.messages(&id).await),
        expected,
        "they commit in the order listed"
    );
    let completed = turns(&app, &id, "?status=completed").await;
    assert_eq!(completed.len(), 6);
    for turn in &completed {
        assert_eq!(turn["attempts"], 1);
        assert!(
            turn["waitedMs"].is_u64()
                && turn["providerMs"].is_u64()
                && turn["firstTokenMs"].is_u64()
        );
        assert!(turn["result"]["text"].is_string());
        assert!(turn["error"].is_null());
    }
}

#[tokio::test]
async fn deleting_the_third_waiter_takes_it_out_and_the_others_commit_in_order() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let writers = five_waiters(&app, &id).await;
    let waiting = turns(&app, &id, "?status=waiting").await;
    let third = waiting[2]["id"].as_str().unwrap().to_owned();
    assert_eq!(waiting[2]["input"]["content"], "normal-1");

    let response = app
        .delete(&format!("/text/session/{id}/turns/{third}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["turn"]["status"], "cancelled");

    let waiting = turns(&app, &id, "?status=waiting").await;
    assert_eq!(contents(&waiting), ["high-1", "high-2", "low-1", "low-2"]);
    let positions: Vec<_> = waiting
        .iter()
        .map(|t| t["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [1, 2, 3, 4], "its place is freed for the others");

    for _ in 0..6 {
        app.openai.step();
    }
    let mut results = Vec::new();
    for writer in writers {
        results.push(writer.await.unwrap());
    }
    let (status, body) = &results[3];
    assert_eq!(*status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "turn_cancelled");
    let history = users(&app.messages(&id).await);
    assert_eq!(history, ["holder", "high-1", "high-2", "low-1", "low-2"]);
    let record: Value = app
        .get(&format!("/text/session/{id}/turns/{third}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["turn"]["status"], "cancelled", "the record stays");
}

#[tokio::test]
async fn deleting_the_running_turn_cancels_it_as_keep() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let running = turns(&app, &id, "?status=running").await;
    let turn = running[0]["id"].as_str().unwrap();
    assert_eq!(app.session(&id).await["status"]["runningTurnId"], turn);
    let response = app
        .delete(&format!("/text/session/{id}/turns/{turn}"))
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["turn"]["status"], "cancelled");
    assert_eq!(holder.await.unwrap().0, StatusCode::CONFLICT);
    assert_eq!(app.messages(&id).await[1]["interrupted"], true);
    app.openai.resume();
}

#[tokio::test]
async fn a_failed_turn_waits_in_the_dead_letter_view_and_a_retry_commits_it() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let failing = app.openai.clone();
    app.openai
        .script(move |_, _| Some(failing.error_reply(503, "down for maintenance")));
    let response = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": "important", "priority": "high"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let failed_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();

    let failed = turns(&app, &id, "?status=failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], failed_id.as_str());
    assert_eq!(
        failed[0]["input"],
        json!({"content": "important", "priority": "high"})
    );
    assert_eq!(failed[0]["error"]["code"], "provider_error");
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("down for maintenance")
    );
    assert!(failed[0]["attempts"].as_u64().unwrap() >= 1);
    assert_eq!(app.messages(&id).await.len(), 0);

    app.openai.script(|_, _| None);
    let response = app
        .post(
            &format!("/text/session/{id}/turns/{failed_id}/retry"),
            &json!(null),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let new_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["text"], "reply to: important");
    assert_eq!(body["turnId"], new_id.as_str());
    assert_eq!(users(&app.messages(&id).await), ["important"]);

    let old: Value = app
        .get(&format!("/text/session/{id}/turns/{failed_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(old["turn"]["status"], "failed");
    assert_eq!(old["turn"]["retriedBy"], new_id.as_str());
    let new: Value = app
        .get(&format!("/text/session/{id}/turns/{new_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(new["turn"]["status"], "completed");
    assert_eq!(new["turn"]["priority"], "high");

    let again = app
        .post(
            &format!("/text/session/{id}/turns/{failed_id}/retry"),
            &json!(null),
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"]["code"], "turn_not_retryable");
    let completed = app
        .post(
            &format!("/text/session/{id}/turns/{new_id}/retry"),
            &json!(null),
        )
        .await;
    assert_eq!(completed.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn writes_turned_away_are_recorded_as_rejected_with_their_turn_id() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let holder = spawn_message(&app, &id, json!({"content": "holder"}));
    app.openai.wait_for_requests(1).await;
    let response = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": "no wait", "onBusy": "reject"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let turn_id = response.headers()["x-turn-id"].to_str().unwrap().to_owned();
    let rejected = turns(&app, &id, "?status=rejected").await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["id"], turn_id.as_str());
    assert_eq!(rejected[0]["error"]["code"], "session_busy");
    app.openai.resume();
    holder.await.unwrap();
}

#[tokio::test]
async fn unknown_turns_are_404_turn_not_found_and_an_unknown_status_is_400() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    for turn in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".into()] {
        for response in [
            app.get(&format!("/text/session/{id}/turns/{turn}")).await,
            app.delete(&format!("/text/session/{id}/turns/{turn}"))
                .await,
            app.post(
                &format!("/text/session/{id}/turns/{turn}/retry"),
                &json!(null),
            )
            .await,
        ] {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "turn_not_found");
        }
    }
    let response = app
        .get(&format!("/text/session/{id}/turns?status=sleeping"))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app
        .get(&format!("/text/session/{}/turns", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ten_thousand_turns_keep_at_most_the_configured_records() {
    let app = spawn_app_with(|c| {
        c.turns_keep = 100;
        c.failed_turns_keep = 50;
    })
    .await;
    let id = app.create_session(json!({})).await;
    let writes = (0..8).map(|worker| {
        let app = &app;
        let id = &id;
        async move {
            for i in 0..1250 {
                let body = json!({"callId": format!("c{worker}-{i}"), "output": "ok"});
                let response = app
                    .post(&format!("/text/session/{id}/tool-output?view=delta"), &body)
                    .await;
                assert_eq!(response.status(), StatusCode::OK);
            }
        }
    });
    futures::future::join_all(writes).await;
    assert_eq!(app.messages(&id).await.len(), 10_000);
    let kept = turns(&app, &id, "").await;
    assert_eq!(kept.len(), 100);
}

#[tokio::test]
async fn a_turn_shows_its_body_as_received_and_the_history_its_texts_as_meant() {
    let app = spawn_app().await;
    let id = app.create_session(json!({})).await;
    // Bodies as clients write them: spaced out, escaped, bare.
    let bodies = [
        (
            "message",
            "{ \"content\" :  \"  plain words \",\n  \"priority\": \"high\" }",
        ),
        (
            "message",
            r#"{"content":"two\nlines, a \"quote\" and \u00e9t\u00e9"}"#,
        ),
        ("instructions", r#"  ["be brief", "answer in French"]  "#),
        ("instructions", r#""one bare instruction""#),
    ];
    for (route, body) in bodies {
        let response = app
            .client
            .post(app.url(&format!("/text/session/{id}/{route}")))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{body}");
    }
    let inputs: Vec<Value> = turns(&app, &id, "")
        .await
        .iter()
        .map(|t| t["input"].clone())
        .collect();
    let sent: Vec<Value> = bodies
        .iter()
        .map(|(_, body)| serde_json::from_str(body).unwrap())
        .collect();
    assert_eq!(inputs, sent);
    let texts: Vec<String> = app
        .messages(&id)
        .await
        .iter()
        .filter(|m| m["role"] != "assistant")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "plain words",
            "two\nlines, a \"quote\" and été",
            "be brief",
            "answer in French",
            "one bare instruction"
        ]
    );
}
