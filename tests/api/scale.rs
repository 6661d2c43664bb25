//! At scale, against the real binary: a SQLite store of 100,000 sessions of 20 messages
//! each, with `MAX_LIVE_SESSIONS=1000`. The service is ready within a second of being
//! started on it, reads thousands of random sessions back whole while its memory stays
//! bounded, and lists them a page at a time.
//!
//! The store's own API (`Store::create`) writes the first 1,000 sessions; plain SQL the
//! rest, in one transaction, after checking that it makes exactly the rows the store
//! wrote for those first ones (through the API, all 100,000 take minutes in a debug
//! build).

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::service::{Service, spawn_service};
use test_support::mock_provider::{MockProvider, Protocol};
use text_session_api::message::{Defaults, Message, Role, Timestamp};
use text_session_api::store::{SessionRow, Store};

/// Sessions stored.
const SESSIONS: usize = 100_000;
/// Turns of each (a user message and the echo provider's reply): 20 messages.
const TURNS: usize = 10;
/// Sessions read back over HTTP, each a different one.
const READS: usize = 2_000;
/// Reads in flight at once.
const READERS: usize = 16;
/// Sessions kept in memory at most.
const MAX_LIVE: usize = 1_000;
/// Pages of `GET /text/sessions?limit=PAGE` walked.
const PAGES: usize = 5;
const PAGE: usize = 1_000;
/// Sessions written through the store's own API (`Store::create`), the oldest ones;
/// the rest by SQL that is checked to write the same rows.
const API_SEEDED: usize = 1_000;
/// Creates handed to the store at once (it commits up to 256 of them in one transaction).
const SEED_CONCURRENCY: usize = 512;
/// The service's resident memory after the reads, at most.
const MAX_RSS: u64 = 100 * 1024 * 1024;
/// From spawning the process to its first `200` from `/readyz`, at most.
const READY_WITHIN: Duration = Duration::from_secs(1);

/// A store folder of its own, removed when dropped.
struct StoreDir(std::path::PathBuf);

impl StoreDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("text-session-scale-{}", Uuid::new_v4())))
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

/// When session `n` was created: one second after session `n - 1`, the newest a
/// moment ago, so that the list's order (newest first) is `n` descending.
fn created_millis(start: i64, n: usize) -> i64 {
    start + 1000 * n as i64
}

fn time(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(millis).unwrap()
}

/// Message `m` of session `n`: user and echo reply in turn, a millisecond apart, each
/// text naming where it is.
fn message(start: i64, n: usize, m: usize) -> Message {
    let at = time(created_millis(start, n) + 1 + m as i64);
    let turn = m / 2;
    let user = format!("session {n}, turn {turn}: what comes next?");
    if m.is_multiple_of(2) {
        Message::text(Role::User, user, at)
    } else {
        Message::text(Role::Assistant, format!("echo: {user}"), at)
    }
}

/// Session `n` as the service would have stored it after `TURNS` turns: created at
/// version 1 with no instructions, one version more per committed turn.
fn session(start: i64, id: Uuid, n: usize) -> (SessionRow, Vec<Message>) {
    let messages: Vec<Message> = (0..2 * TURNS).map(|m| message(start, n, m)).collect();
    let row = SessionRow {
        id,
        owner: None,
        provider: "echo".into(),
        model: "echo-1".into(),
        defaults: Defaults::default(),
        tools: Vec::new(),
        metadata: serde_json::Map::new(),
        created_at: time(created_millis(start, n)),
        updated_at: messages.last().unwrap().created_at,
        version: 1 + TURNS as u64,
        forked_from: None,
    };
    (row, messages)
}

/// Seeds the store at `url`; the ids, session `n`'s at `n`.
async fn seed(url: &str, start: i64) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..SESSIONS).map(|_| Uuid::new_v4()).collect();
    // The store makes the file and its schema, and writes the oldest sessions itself.
    let store = Store::open(url).await.unwrap();
    futures::stream::iter(ids[..API_SEEDED].iter().enumerate())
        .map(|(n, id)| {
            let store = &store;
            async move {
                let (row, messages) = session(start, *id, n);
                store.create(&row, &messages).await.map(|_epoch| ())
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<()>()
        .await
        .unwrap();
    store.close().await;
    seed_the_rest_by_sql(url, start, &ids).await;
    ids
}

/// Writes sessions `API_SEEDED..` with plain SQL in one transaction: through
/// `Store::create` (each message one statement, in a debug build) 100,000 sessions take
/// minutes. The rows are made by views over the ids that give, for the sessions the
/// store wrote, exactly the rows it wrote (checked, column by column): so the rest are
/// rows as the store writes them too.
async fn seed_the_rest_by_sql(url: &str, start: i64, ids: &[Uuid]) {
    use sqlx::Connection;
    use std::str::FromStr;

    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).unwrap();
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    let (template, messages) = session(start, ids[0], 0);
    let count = messages.len();
    let setup = [
        // Each session, and the time it was created to the second (`created_at` is a
        // whole second; its messages come a millisecond apart after it).
        "CREATE TEMP TABLE seed (id TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL,
                                 second TEXT NOT NULL) WITHOUT ROWID"
            .to_owned(),
        "CREATE TEMP TABLE template (provider TEXT, model TEXT, defaults TEXT, tools TEXT,
                                     metadata TEXT, version INTEGER)"
            .to_owned(),
        // Each message of a session: its role, its text around the session's number,
        // and its time after the session's second.
        "CREATE TEMP TABLE seqs (m INTEGER PRIMARY KEY, role TEXT, head TEXT, tail TEXT,
                                 after TEXT)"
            .to_owned(),
        format!(
            "INSERT INTO temp.seqs
             WITH RECURSIVE s(m) AS (SELECT 0 UNION ALL SELECT m + 1 FROM s WHERE m + 1 < {count})
             SELECT m, CASE m % 2 WHEN 0 THEN 'user' ELSE 'assistant' END,
                    CASE m % 2 WHEN 0 THEN 'session ' ELSE 'echo: session ' END,
                    format(', turn %d: what comes next?', m / 2),
                    format('.%03dZ', 1 + m)
             FROM s"
        ),
        // What `session` and `message` make, in SQL.
        format!(
            "CREATE TEMP VIEW seed_sessions AS
             SELECT n, id, NULL AS owner, provider, model, defaults, tools, metadata,
                    second || '.000Z' AS created_at, second || format('.%03dZ', {count}) AS updated_at,
                    version, {count} AS messages,
                    second || format('.%03dZ', {count}) AS active_at,
                    NULL AS base_id, NULL AS base_len, NULL AS forked_from, 0 AS turns_from,
                    0 AS turns_on_rows
             FROM temp.seed, temp.template"
        ),
        "CREATE TEMP VIEW seed_messages AS
         SELECT n, id AS session_id, m AS seq, role, head || n || tail AS content,
                NULL AS tool_calls, NULL AS tool_call_id, 0 AS interrupted,
                second || after AS created_at,
                NULL AS turn_id, NULL AS turn_created_at, NULL AS turn_record
         FROM temp.seed, temp.seqs"
            .to_owned(),
    ];
    for statement in &setup {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    assert_eq!(start % 1000, 0, "sessions are created on a whole second");
    sqlx::query(
        "INSERT INTO temp.seed
         SELECT value, key, strftime('%Y-%m-%dT%H:%M:%S', ? + key, 'unixepoch') FROM json_each(?)",
    )
    .bind(start / 1000)
    .bind(serde_json::to_string(ids).unwrap())
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query("INSERT INTO temp.template VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&template.provider)
        .bind(&template.model)
        .bind(serde_json::to_string(&template.defaults).unwrap())
        .bind(serde_json::to_string(&template.tools).unwrap())
        .bind(serde_json::to_string(&template.metadata).unwrap())
        .bind(template.version as i64)
        .execute(&mut db)
        .await
        .unwrap();

    // The views give what the store wrote, both ways.
    let session_columns = "id, owner, provider, model, defaults, tools, metadata, created_at, \
                           updated_at, version, messages, active_at, base_id, base_len, \
                           forked_from, turns_from, turns_on_rows";
    let message_columns = "session_id, seq, role, content, tool_calls, tool_call_id, interrupted, \
                           created_at, turn_id, turn_created_at, turn_record";
    for (table, key, columns) in [
        ("sessions", "id", session_columns),
        ("messages", "session_id", message_columns),
    ] {
        // Every column of the table is made here: a new one fails this until it is.
        let known: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM pragma_table_info('{table}')"
        ))
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(
            known as usize,
            columns.split(',').count(),
            "{table}: columns"
        );
        let view = format!("temp.seed_{table}");
        let stored = format!(
            "SELECT {columns} FROM {table} WHERE {key} IN \
             (SELECT id FROM temp.seed WHERE n < {API_SEEDED})"
        );
        let made = format!("SELECT {columns} FROM {view} WHERE n < {API_SEEDED}");
        for (a, b) in [(&stored, &made), (&made, &stored)] {
            let differ: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({a} EXCEPT {b})"))
                .fetch_one(&mut db)
                .await
                .unwrap();
            assert_eq!(
                differ, 0,
                "{table}: the SQL differs from what the store wrote"
            );
        }
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({stored})"))
            .fetch_one(&mut db)
            .await
            .unwrap();
        let per_session = if table == "sessions" { 1 } else { count };
        assert_eq!(rows as usize, API_SEEDED * per_session, "{table}");
    }

    let mut tx = db.begin().await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO sessions ({session_columns}) SELECT {session_columns} \
         FROM temp.seed_sessions WHERE n >= {API_SEEDED} ORDER BY id"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO messages ({message_columns}) SELECT {message_columns} \
         FROM temp.seed_messages WHERE n >= {API_SEEDED} ORDER BY session_id, seq"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    db.close().await.unwrap();
}

/// Polls `/readyz` until it answers 200 (bounded by 10 s).
async fn wait_until_ready(service: &Service) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = service.client.get(service.url("/readyz")).send().await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_100k_sessions_starts_at_once_reads_back_whole_in_bounded_memory_and_lists() {
    let test_started = Instant::now();
    let dir = StoreDir::new();
    let url = dir.url();
    // The newest session was created a second ago.
    let start = Timestamp::now().unix_millis() / 1000 * 1000 - 1000 * SESSIONS as i64;

    let seeding = Instant::now();
    let ids = seed(&url, start).await;
    let seeded_in = seeding.elapsed();
    eprintln!(
        "seeded {SESSIONS} sessions of {} messages in {seeded_in:.2?}",
        2 * TURNS
    );

    let openai = MockProvider::start(Protocol::OpenAi).await;
    let max_live = MAX_LIVE.to_string();
    let env = [
        ("STORE", url.as_str()),
        ("MAX_LIVE_SESSIONS", max_live.as_str()),
        // The seeded sessions were made a second apart, the oldest over a day ago: a
        // day's TTL would rightly expire them from the store.
        ("SESSION_TTL_SECS", "31536000"),
    ];
    let spawned = Instant::now();
    let service = spawn_service(&openai, &env).await;
    wait_until_ready(&service).await;
    let ready_in = spawned.elapsed();
    eprintln!("ready in {ready_in:.2?} (spawn to the first 200 from /readyz)");
    assert!(
        ready_in < READY_WITHIN,
        "ready in {ready_in:?}, not within {READY_WITHIN:?}"
    );
    eprintln!("RSS at start: {:.1} MB", service.rss_bytes() as f64 / 1e6);

    // Distinct random sessions, each read back whole.
    let reading = Instant::now();
    let picked = rand::seq::index::sample(&mut rand::rng(), SESSIONS, READS);
    futures::stream::iter(picked.iter())
        .map(|n| {
            let (service, id) = (&service, ids[n]);
            async move {
                let read = service.session_as(None, &id.to_string()).await;
                let (row, messages) = session(start, id, n);
                assert_eq!(read["id"], id.to_string());
                assert_eq!(read["version"], row.version, "{id}");
                assert_eq!(read["createdAt"], row.created_at.to_rfc3339(), "{id}");
                assert_eq!(read["updatedAt"], row.updated_at.to_rfc3339(), "{id}");
                let expected: Vec<Value> = messages
                    .iter()
                    .map(|m| {
                        json!({
                            "role": m.role,
                            "content": m.content,
                            "createdAt": m.created_at.to_rfc3339(),
                        })
                    })
                    .collect();
                assert_eq!(read["messages"], json!(expected), "{id}: whole, in order");
            }
        })
        .buffer_unordered(READERS)
        .collect::<()>()
        .await;
    let read_in = reading.elapsed();
    let rss = service.rss_bytes();
    let live = service.metric("text_session_sessions_live").await;
    eprintln!(
        "read {READS} sessions ({READERS} at once) in {read_in:.2?}; \
         {live} live; RSS after the reads: {:.1} MB",
        rss as f64 / 1e6
    );
    assert!(live <= MAX_LIVE as f64, "{live} sessions live");
    assert!(
        rss < MAX_RSS,
        "RSS {:.1} MB, not under {} MB",
        rss as f64 / 1e6,
        MAX_RSS / 1024 / 1024
    );

    // Pages of the list, newest first: session `SESSIONS - 1` down, each once.
    let listing = Instant::now();
    let mut after: Option<String> = None;
    for page in 0..PAGES {
        let path = match &after {
            Some(cursor) => format!("/text/sessions?limit={PAGE}&after={cursor}"),
            None => format!("/text/sessions?limit={PAGE}"),
        };
        let response = service.client.get(service.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "page {page}");
        let body: Value = response.json().await.unwrap();
        let sessions = body["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), PAGE, "page {page}");
        for (i, listed) in sessions.iter().enumerate() {
            let n = SESSIONS - 1 - (page * PAGE + i);
            assert_eq!(listed["id"], ids[n].to_string(), "page {page}, item {i}");
            assert_eq!(listed["messageCount"], 2 * TURNS, "page {page}, item {i}");
            assert_eq!(listed["version"], 1 + TURNS, "page {page}, item {i}");
        }
        let next = body["nextCursor"].as_str().expect("more pages").to_owned();
        after = Some(next);
    }
    eprintln!(
        "listed {PAGES} pages of {PAGE} in {:.2?}; the whole test took {:.2?}",
        listing.elapsed(),
        test_started.elapsed()
    );
}
