//! Rapid writes to one session are applied one at a time, each seeing exactly the
//! history committed before it; this fails if the turn lock is taken away.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{roles_and_contents, spawn_app};
use test_support::mock_provider::reply_text_for;

#[tokio::test]
async fn fifty_concurrent_messages_are_applied_one_at_a_time_in_a_consistent_order() {
    let app = spawn_app().await;
    app.openai.set_jitter(Duration::from_millis(50));
    let id = app.create_session(json!({"provider": "openai"})).await;

    let writes = (0..50).map(|i| {
        let app = &app;
        let id = &id;
        async move {
            let content = format!("message {i}");
            let (status, body) = app.message(id, json!({"content": content})).await;
            (content, status, body)
        }
    });
    let results = futures::future::join_all(writes).await;

    for (content, status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(
            body["result"]["text"],
            reply_text_for(content),
            "each reply belongs to its own request"
        );
    }
    let history = roles_and_contents(&app.messages(&id).await);
    assert_eq!(history.len(), 100);
    for pair in history.chunks(2) {
        assert_eq!(pair[0].0, "user");
        assert_eq!(pair[1].0, "assistant");
        assert_eq!(
            pair[1].1,
            reply_text_for(&pair[0].1),
            "user/assistant never interleave"
        );
    }
    let requests = app.openai.requests();
    assert_eq!(requests.len(), 50);
    for (k, request) in requests.iter().enumerate() {
        let sent = roles_and_contents(request.body["messages"].as_array().unwrap());
        assert_eq!(
            sent,
            history[..2 * k + 1].to_vec(),
            "request {k} carries exactly the history committed before it plus its own message"
        );
    }
}
