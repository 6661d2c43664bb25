//! Guarding it: API keys and ownership, If-Match, limits, idle expiry, CORS, redirects.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const KEY_A: &str = "key-a-0123456789";
const KEY_B: &str = "key-b-9876543210";

async fn keyed_app() -> TestApp {
    spawn_app_with(|c| {
        c.api_keys = vec![
            text_session_api::secret::Secret::new(KEY_A),
            text_session_api::secret::Secret::new(KEY_B),
        ]
    })
    .await
}

fn with_key(request: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
    request.header("authorization", format!("Bearer {key}"))
}

#[tokio::test]
async fn without_a_key_or_with_a_wrong_one_every_guarded_route_is_401_and_no_provider_is_called() {
    let app = keyed_app().await;
    let id = {
        let response = with_key(app.client.post(app.url("/text/session")), KEY_A)
            .json(&json!({"provider": "openai"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["session"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let guarded = [
        ("POST", "/text/session".to_owned()),
        ("GET", "/text/sessions".to_owned()),
        ("GET", format!("/text/session/{id}")),
        ("POST", format!("/text/session/{id}/message")),
        ("POST", format!("/text/session/{id}/instructions")),
        ("POST", format!("/text/session/{id}/tool-output")),
        ("POST", format!("/text/session/{id}/cancel")),
        ("GET", format!("/text/session/{id}/turns")),
        ("GET", "/metrics".to_owned()),
        ("DELETE", format!("/text/session/{id}")),
    ];
    for (method, path) in &guarded {
        for auth in [
            None,
            Some("Bearer wrong-key"),
            Some("Bearer "),
            Some(KEY_A),
            Some("Basic a2V5"),
        ] {
            let mut request = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .json(&json!({"content": "hi"}));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(app.openai.request_count(), 0);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            app.get(open).await.status(),
            StatusCode::OK,
            "{open} needs no key"
        );
    }
}

#[tokio::test]
async fn another_keys_session_is_404_on_every_route_and_lists_are_per_key() {
    let app = keyed_app().await;
    let create = |key: &'static str| {
        let app = &app;
        async move {
            let response = with_key(app.client.post(app.url("/text/session")), key)
                .json(&json!({"provider": "openai", "instructions": "mine"}))
                .send()
                .await
                .unwrap();
            response.json::<Value>().await.unwrap()["session"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let a = create(KEY_A).await;
    let b = create(KEY_B).await;
    let (status, _) = {
        let response = with_key(
            app.client
                .post(app.url(&format!("/text/session/{a}/message"))),
            KEY_A,
        )
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
        (response.status(), ())
    };
    assert_eq!(status, StatusCode::OK);
    let history_of_a = |key| {
        let app = &app;
        let a = a.clone();
        async move {
            with_key(app.client.get(app.url(&format!("/text/session/{a}"))), key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["session"]["messages"]
                .clone()
        }
    };
    let before = history_of_a(KEY_A).await;
    let turn = {
        let turns: Value = with_key(
            app.client.get(app.url(&format!("/text/session/{a}/turns"))),
            KEY_A,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        turns["turns"][0]["id"].as_str().unwrap().to_owned()
    };
    let routes = [
        ("GET", format!("/text/session/{a}"), json!(null)),
        (
            "POST",
            format!("/text/session/{a}/message"),
            json!({"content": "steal"}),
        ),
        (
            "POST",
            format!("/text/session/{a}/instructions"),
            json!("steal"),
        ),
        (
            "POST",
            format!("/text/session/{a}/tool-output"),
            json!({"callId": "c", "output": "o"}),
        ),
        ("POST", format!("/text/session/{a}/cancel"), json!({})),
        ("GET", format!("/text/session/{a}/turns"), json!(null)),
        (
            "GET",
            format!("/text/session/{a}/turns/{turn}"),
            json!(null),
        ),
        (
            "GET",
            format!("/text/session/{a}/turns/{turn}/events"),
            json!(null),
        ),
        (
            "POST",
            format!("/text/session/{a}/turns/{turn}/retry"),
            json!(null),
        ),
        (
            "DELETE",
            format!("/text/session/{a}/turns/{turn}"),
            json!(null),
        ),
        ("DELETE", format!("/text/session/{a}"), json!(null)),
    ];
    for (method, path, body) in &routes {
        let mut request = with_key(
            app.client.request(method.parse().unwrap(), app.url(path)),
            KEY_B,
        );
        if !body.is_null() {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(
            json["error"]["code"], "session_not_found",
            "exactly as for a missing session"
        );
    }
    assert_eq!(
        history_of_a(KEY_A).await,
        before,
        "A's history is unchanged"
    );
    assert_eq!(app.openai.request_count(), 1);
    for (key, own) in [(KEY_A, &a), (KEY_B, &b)] {
        let list: Value = with_key(app.client.get(app.url("/text/sessions")), key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<_> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&ids, std::slice::from_ref(own));
    }
}

#[tokio::test]
async fn a_stale_if_match_gets_412_and_appends_nothing_and_a_current_one_commits() {
    let app = spawn_app().await;
    let response = app.post("/text/session", &json!({})).await;
    assert_eq!(response.headers()["etag"], "\"1\"");
    let id = response.json::<Value>().await.unwrap()["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = app.url(&format!("/text/session/{id}/message"));
    let response = app
        .client
        .post(&url)
        .json(&json!({"content": "one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let get = app.get(&format!("/text/session/{id}")).await;
    assert_eq!(get.headers()["etag"], "\"2\"");

    let stale = app
        .client
        .post(&url)
        .header("if-match", "\"1\"")
        .json(&json!({"content": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        stale.headers()["etag"],
        "\"2\"",
        "the version it is at, so the client need not read it again"
    );
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "version_mismatch");
    assert_eq!(app.messages(&id).await.len(), 2);
    let rejected: Value = app
        .get(&format!("/text/session/{id}/turns?status=rejected"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rejected["turns"].as_array().unwrap().len(), 1);

    let current = app
        .client
        .post(&url)
        .header("if-match", "\"2\"")
        .json(&json!({"content": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(current.status(), StatusCode::OK);
    assert_eq!(current.headers()["etag"], "\"3\"");
    let body: Value = current.json().await.unwrap();
    assert_eq!(body["session"]["version"], 3);
    let bad = app
        .client
        .post(&url)
        .header("if-match", "yesterday")
        .json(&json!({"content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn each_limit_answers_its_error_one_past_it_and_appends_nothing() {
    let app = spawn_app_with(|c| {
        c.max_body_bytes = 2048;
        c.max_message_chars = 10;
        c.max_messages_per_session = 4;
        c.max_tools_per_session = 1;
        c.max_metadata_bytes = 20;
        c.max_sessions = 2;
    })
    .await;
    let id = app.create_session(json!({})).await;
    let post = |path: String, body: Value| {
        let app = &app;
        async move {
            let response = app.post(&path, &body).await;
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let message = format!("/text/session/{id}/message");
    let (status, body) = post(message.clone(), json!({"content": "x".repeat(3000)})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let (status, body) = post(message.clone(), json!({"content": "12345678901"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content")
    );
    let (status, _) = post(message.clone(), json!({"content": "1234567890"})).await;
    assert_eq!(status, StatusCode::OK, "exactly at the limit is fine");
    let (status, _) = post(message.clone(), json!({"content": "second"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(message.clone(), json!({"content": "third"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("session_full"))
    );
    let (status, body) = post(
        format!("/text/session/{id}/tool-output"),
        json!({"callId": "c", "output": "o"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("session_full"))
    );
    assert_eq!(app.messages(&id).await.len(), 4);

    let tool = |name: &str| json!({"type": "function", "name": name});
    let (status, body) = post(
        "/text/session".into(),
        json!({"tools": [tool("a"), tool("b")]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("tools"));
    let (status, body) = post(
        "/text/session".into(),
        json!({"metadata": {"k": "x".repeat(30)}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metadata")
    );
    let (status, _) = post("/text/session".into(), json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = post("/text/session".into(), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("session_limit"))
    );
    let list: Value = app.get("/text/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn sessions_per_key_are_bounded() {
    let app = spawn_app_with(|c| {
        c.api_keys = vec![
            text_session_api::secret::Secret::new(KEY_A),
            text_session_api::secret::Secret::new(KEY_B),
        ];
        c.max_sessions_per_key = 1;
    })
    .await;
    let create = |key| with_key(app.client.post(app.url("/text/session")), key).send();
    assert_eq!(create(KEY_A).await.unwrap().status(), StatusCode::CREATED);
    let second = create(KEY_A).await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        second.json::<Value>().await.unwrap()["error"]["code"],
        "session_limit"
    );
    assert_eq!(
        create(KEY_B).await.unwrap().status(),
        StatusCode::CREATED,
        "the bound is per key"
    );
}

#[tokio::test]
async fn an_idle_session_expires_but_one_in_a_long_turn_does_not() {
    let app = spawn_app_with(|c| c.session_ttl_secs = 3600.0).await;
    let idle = app.create_session(json!({})).await;
    let busy = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let client = app.client.clone();
    let url = app.url(&format!("/text/session/{busy}/message"));
    let long_turn = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"content": "long"}))
            .send()
            .await
            .unwrap()
            .status()
    });
    app.openai.wait_for_requests(1).await;
    app.clock.advance(Duration::from_secs(3600));
    let ids = app.wait_for_session_ids(|ids| ids.len() < 2).await;
    assert_eq!(
        &ids,
        std::slice::from_ref(&busy),
        "the idle one expired, the busy one stayed"
    );
    assert_eq!(
        app.get(&format!("/text/session/{idle}")).await.status(),
        StatusCode::NOT_FOUND
    );
    app.openai.resume();
    assert_eq!(long_turn.await.unwrap(), StatusCode::OK);
    assert_eq!(app.messages(&busy).await.len(), 2);
}

#[tokio::test]
async fn cors_preflight_echoes_an_allowed_origin_and_gives_others_no_allow_header() {
    let app =
        spawn_app_with(|c| c.cors_allow_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/text/session"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, idempotency-key, authorization",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        allowed.headers().get_all("vary").iter().any(|v| v
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("origin"))
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert_eq!(other.status(), StatusCode::NO_CONTENT);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let simple = app
        .client
        .get(app.url("/text/sessions"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for header in [
        "x-request-id",
        "etag",
        "idempotent-replayed",
        "retry-after",
        "x-turn-id",
        "www-authenticate",
    ] {
        assert!(exposed.contains(header), "{header} is exposed: {exposed}");
    }
    // Every answer, to browsers or not, preflight or not, found or not, says once what
    // its CORS headers depend on, so that a cache keeps them apart.
    let plain = app
        .client
        .get(app.url("/text/sessions"))
        .send()
        .await
        .unwrap();
    let missing = app.client.get(app.url("/nowhere")).send().await.unwrap();
    for response in [&allowed, &other, &simple, &plain, &missing] {
        let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
        assert_eq!(
            vary,
            ["origin, access-control-request-method, access-control-request-headers"],
            "{}",
            response.url()
        );
    }

    let open = spawn_app_with(|c| c.cors_allow_origins = vec!["*".into()]).await;
    let response = open
        .client
        .get(open.url("/healthz"))
        .header("origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let closed = spawn_app().await;
    let response = closed
        .client
        .get(closed.url("/healthz"))
        .header("origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "no origin allowed by default"
    );
}

#[tokio::test]
async fn a_provider_redirect_is_not_followed() {
    let app = spawn_app().await;
    let mock = app.openai.clone();
    let elsewhere = format!("{}/chat/completions", app.anthropic.base_url);
    app.openai.script(move |_, _| {
        let _ = &mock;
        Some(test_support::mock_provider::Reply {
            status: 307,
            body: json!({"moved": elsewhere}),
            delay: Duration::ZERO,
        })
    });
    app.openai
        .set_location(Some(&format!("{}/v1/messages", app.anthropic.base_url)));
    let id = app.create_session(json!({"provider": "openai"})).await;
    let (status, body) = app.message(&id, json!({"content": "hi"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["providerStatus"], 307);
    assert_eq!(
        app.anthropic.request_count(),
        0,
        "the key never travelled to another host"
    );
}
