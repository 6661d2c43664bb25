//! Operating it: metrics, request ids, provider retries, load shedding, overhead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use test_support::mock_provider::Reply;

/// The parsed exposition.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn of(app: &TestApp) -> Self {
        let response = app.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Self(prometheus_parse::Scrape::parse(lines).expect("the metrics parse as Prometheus text"))
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    }

    /// The `_count` of a histogram.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(&format!("{name}_count"), labels)
            .or_else(|| self.value(name, labels))
            .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"))
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.0.samples.iter().map(|s| s.metric.clone()).collect();
        names.dedup();
        names
    }
}

#[tokio::test]
async fn metrics_parse_and_count_three_turns_in_every_family() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    for i in 0..3 {
        let (status, _) = app.message(&id, json!({"content": format!("m{i}")})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let scrape = Scrape::of(&app).await;
    let t = "text_session_";
    assert_eq!(
        scrape.value(&format!("{t}turns_total"), &[("outcome", "completed")]),
        Some(3.0),
        "{:?}",
        scrape.names()
    );
    assert_eq!(scrape.count(&format!("{t}turn_duration_seconds"), &[]), 3.0);
    assert_eq!(scrape.count(&format!("{t}lock_wait_seconds"), &[]), 3.0);
    assert_eq!(scrape.count(&format!("{t}turn_overhead_seconds"), &[]), 3.0);
    assert_eq!(
        scrape.count(
            &format!("{t}provider_request_duration_seconds"),
            &[("provider", "openai")]
        ),
        3.0
    );
    assert!(
        scrape
            .value(
                &format!("{t}tokens_total"),
                &[("provider", "openai"), ("direction", "input")]
            )
            .unwrap()
            > 0.0
    );
    assert!(
        scrape
            .value(
                &format!("{t}tokens_total"),
                &[("provider", "openai"), ("direction", "output")]
            )
            .unwrap()
            > 0.0
    );
    assert_eq!(scrape.value(&format!("{t}sessions_live"), &[]), Some(1.0));
    assert_eq!(scrape.value(&format!("{t}writers_waiting"), &[]), Some(0.0));
    for priority in ["interrupt", "high", "normal", "low"] {
        assert_eq!(
            scrape.value(
                &format!("{t}writers_waiting_by_priority"),
                &[("priority", priority)]
            ),
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn metrics_show_writers_waiting_by_priority_and_failed_rejected_and_cancelled_turns() {
    let app = spawn_app_with(|c| c.provider_max_retries = 0).await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    app.openai.pause();
    let client = app.client.clone();
    let url = app.url(&format!("/text/session/{id}/message"));
    let holder = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .json(&json!({"content": "holder"}))
                .send()
                .await
                .unwrap()
        }
    });
    app.openai.wait_for_requests(1).await;
    let high = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .json(&json!({"content": "h", "priority": "high"}))
                .send()
                .await
                .unwrap()
        }
    });
    app.wait_until_waiting(&id, 1).await;
    let rejected = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": "r", "onBusy": "reject"}),
        )
        .await;
    assert_eq!(rejected.status(), StatusCode::CONFLICT);

    let scrape = Scrape::of(&app).await;
    assert_eq!(scrape.value("text_session_writers_waiting", &[]), Some(1.0));
    assert_eq!(
        scrape.value(
            "text_session_writers_waiting_by_priority",
            &[("priority", "high")]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("text_session_turns_total", &[("outcome", "rejected")]),
        Some(1.0)
    );

    let response = app
        .post(
            &format!("/text/session/{id}/cancel"),
            &json!({"waiting": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    holder.await.unwrap();
    high.await.unwrap();
    let failing = app.openai.clone();
    app.openai
        .script(move |_, _| Some(failing.error_reply(500, "boom")));
    app.openai.resume();
    let (status, _) = app.message(&id, json!({"content": "fails"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value("text_session_turns_total", &[("outcome", "cancelled")]),
        Some(2.0)
    );
    assert_eq!(
        scrape.value("text_session_turns_total", &[("outcome", "failed")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.value(
            "text_session_provider_errors_total",
            &[("provider", "openai"), ("kind", "upstream_5xx")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_provider_that_fails_twice_with_503_gives_one_turn_and_two_retries() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let mock = app.openai.clone();
    app.openai
        .script(move |_, index| (index < 2).then(|| mock.error_reply(503, "busy")));
    let (status, body) = app.message(&id, json!({"content": "hello"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.openai.request_count(), 3);
    assert_eq!(app.messages(&id).await.len(), 2);
    let scrape = Scrape::of(&app).await;
    assert_eq!(
        scrape.value(
            "text_session_provider_retries_total",
            &[("provider", "openai")]
        ),
        Some(2.0)
    );
    assert_eq!(
        scrape.value("text_session_turns_total", &[("outcome", "completed")]),
        Some(1.0)
    );
    let turn: Value = app
        .get(&format!(
            "/text/session/{id}/turns/{}",
            body["turnId"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(turn["turn"]["attempts"], 3);
}

#[tokio::test]
async fn a_429_with_retry_after_one_second_waits_about_a_second() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "anthropic"})).await;
    let mock = app.anthropic.clone();
    app.anthropic.script(move |_, index| {
        (index == 0).then(|| Reply {
            status: 429,
            ..mock.error_reply(429, "slow down")
        })
    });
    app.anthropic.set_retry_after(Some("1"));
    let started = Instant::now();
    let (status, _) = app.message(&id, json!({"content": "hello"})).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(1800),
        "took {took:?}"
    );
    assert_eq!(app.anthropic.request_count(), 2);
}

#[tokio::test]
async fn a_provider_that_always_fails_stops_after_the_configured_tries_with_502() {
    let app = spawn_app_with(|c| c.provider_max_retries = 3).await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let mock = app.openai.clone();
    app.openai
        .script(move |_, _| Some(mock.error_reply(500, "always")));
    let (status, body) = app.message(&id, json!({"content": "hello"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], "provider_error");
    assert_eq!(app.openai.request_count(), 4, "one call and three retries");
    assert_eq!(app.messages(&id).await.len(), 0);
}

#[tokio::test]
async fn a_400_from_the_provider_is_not_retried() {
    let app = spawn_app().await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let mock = app.openai.clone();
    app.openai
        .script(move |_, _| Some(mock.error_reply(400, "bad request")));
    let (status, body) = app.message(&id, json!({"content": "hello"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["providerStatus"], 400);
    assert_eq!(app.openai.request_count(), 1);
}

#[tokio::test]
async fn retries_never_outlast_the_provider_timeout() {
    let app = spawn_app_with(|c| {
        c.provider_timeout_secs = 0.5;
        c.provider_max_retries = 10;
    })
    .await;
    let id = app.create_session(json!({"provider": "openai"})).await;
    let mock = app.openai.clone();
    app.openai.script(move |_, _| {
        Some(Reply {
            delay: Duration::from_millis(200),
            ..mock.error_reply(503, "busy")
        })
    });
    let started = Instant::now();
    let (status, body) = app.message(&id, json!({"content": "hello"})).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_two_provider_slots_a_third_turn_waits_and_past_the_second_bound_writes_get_503() {
    let app = spawn_app_with(|c| {
        c.max_concurrent_turns = 2;
        c.max_waiting_turns = 1;
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.create_session(json!({"provider": "openai"})).await);
    }
    app.openai.pause();
    let spawn = |id: &str| {
        let client = app.client.clone();
        let url = app.url(&format!("/text/session/{id}/message"));
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"content": "hi"}))
                .send()
                .await
                .unwrap();
            response.status()
        })
    };
    let first = spawn(&ids[0]);
    let second = spawn(&ids[1]);
    app.openai.wait_for_requests(2).await;
    let third = spawn(&ids[2]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = Scrape::of(&app).await;
        if scrape.value("text_session_provider_slots_waiting", &[]) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third turn never waited for a slot"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        app.openai.request_count(),
        2,
        "the third turn waits for a slot"
    );

    let response = app
        .post(
            &format!("/text/session/{}/message", ids[3]),
            &json!({"content": "shed"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(
        app.messages(&ids[3]).await.len(),
        0,
        "nothing appended for a shed write"
    );

    app.openai.resume();
    for handle in [first, second, third] {
        assert_eq!(handle.await.unwrap(), StatusCode::OK);
    }
    let (status, _) = app.message(&ids[3], json!({"content": "now"})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id_the_clients_or_a_new_one() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let mut seen = HashMap::new();
    for path in ["/healthz", "/text/sessions", "/nope"] {
        let response = app.get(path).await;
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{path}: {id}");
        assert!(seen.insert(id, path).is_none());
    }
}

#[tokio::test]
async fn a_request_id_too_long_or_not_visible_ascii_is_replaced_by_a_new_one() {
    let app = spawn_app().await;
    for unfit in ["x".repeat(129), "has space".to_owned()] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", &unfit)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{unfit} became {id}");
    }
    let fits = "y".repeat(128);
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", &fits)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], fits.as_str());
}

#[tokio::test]
async fn writes_answer_the_overhead_the_service_added() {
    let app = spawn_app().await;
    app.openai.set_delay(Duration::from_millis(200));
    let id = app.create_session(json!({"provider": "openai"})).await;
    let response = app
        .post(
            &format!("/text/session/{id}/message"),
            &json!({"content": "hi"}),
        )
        .await;
    let overhead: u64 = response.headers()["x-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        overhead < 100_000,
        "the 200 ms provider time is not counted: {overhead} µs"
    );
}

#[tokio::test]
async fn readyz_answers_ok_while_serving() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn the_api_reference_is_served_from_the_binary_and_open_like_the_document() {
    let app =
        spawn_app_with(|c| c.api_keys = vec![text_session_api::secret::Secret::new("key-a")]).await;
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "no key needed");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Everything it loads comes from here (no CDN), and it reads our document.
    assert!(!html.contains("https://"), "{html}");
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"] {
        let response = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    let bare = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::OK, "/docs leads to /docs/");
    // The API itself still wants the key.
    let sessions = app
        .client
        .get(app.url("/text/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(sessions.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_playground_is_one_page_from_the_binary_under_a_strict_csp_and_open() {
    let app =
        spawn_app_with(|c| c.api_keys = vec![text_session_api::secret::Secret::new("key-a")]).await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "no key needed: the page holds no data"
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    // No CDN, and no inline script or style for the CSP to refuse.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(html.contains(r#"<script type="module" src="/playground/app.js"></script>"#));
    assert!(
        !html.contains("style=") && !html.contains("onclick"),
        "{html}"
    );
    for (asset, kind) in [
        ("/playground/app.js", "text/javascript"),
        ("/playground/style.css", "text/css"),
    ] {
        let response = app.get(asset).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
        // The script never stores the key it is given.
        assert!(!body.contains("localStorage") && !body.contains("sessionStorage"));
    }
    let missing = app.get("/playground/nothing.js").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    // The API itself still wants the key.
    let sessions = app.get("/text/sessions").await;
    assert_eq!(sessions.status(), StatusCode::UNAUTHORIZED);
}
