//! The store's contract, checked the same way on every backend that keeps anything:
//! SQLite (a file of its own per test) and PostgreSQL (a database of its own per test on
//! `TEST_POSTGRES_URL`; skipped, and saying so, when there is none, unless
//! `REQUIRE_POSTGRES=1`). `memory` keeps nothing by design; its contract is checked in
//! `src/store/mod.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use serde_json::json;
use sqlx::Connection;
use test_support::postgres::TestDatabase;
use text_session_api::message::{Defaults, Message, Role, Timestamp, Tool, ToolCall};
use text_session_api::store::{
    CommitRows, Instance, KeyAnswer, KeyRecord, KeyTurn, Lease, SessionRow, Store, StoreError,
    TurnBounds, TurnRow, parse_cursor,
};
use uuid::Uuid;

/// The bounds records are loaded with where a test does not set them (the defaults).
const KEEP: TurnBounds = TurnBounds {
    records: 100,
    failed: 50,
};

/// Where a test's store lives; it can be opened again (after the last one was closed).
enum Backend {
    Sqlite(std::path::PathBuf),
    Postgres(TestDatabase),
}

impl Backend {
    fn url(&self) -> String {
        match self {
            Backend::Sqlite(path) => format!("sqlite://{}", path.display()),
            Backend::Postgres(database) => database.url(),
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.url()).await.unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Sqlite(path) = self {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// Each test once per backend: `sqlite::name` and `postgres::name`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let path = std::env::temp_dir()
                        .join(format!("text-session-store-{}.db", uuid::Uuid::new_v4()));
                    super::$test(super::Backend::Sqlite(path)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let name = concat!("postgres::", stringify!($test));
                    if let Some(database) = test_support::postgres::TestDatabase::create(name).await {
                        super::$test(super::Backend::Postgres(database)).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    a_session_and_its_commits_read_back_whole_after_the_store_is_reopened,
    a_joined_turns_commit_writes_every_writers_key_and_record,
    a_fork_shares_its_sources_rows_and_outlives_the_source,
    completed_turns_records_read_back_newest_within_bounds_and_stay_with_their_session,
    a_commit_from_a_stale_version_or_length_changes_nothing,
    a_deleted_session_is_gone_with_its_messages,
    a_keys_sessions_are_listed_newest_first_in_pages,
    many_sessions_commit_at_once_and_each_gets_its_own_outcome,
    a_key_record_and_its_answer_read_back_and_expire,
    a_commit_writes_its_keys_record_with_the_turn_and_a_failed_one_writes_none,
    sessions_are_counted_per_owner_and_idle_ones_expire_by_their_last_activity,
    ended_turn_records_read_back_with_their_session_within_their_bounds,
    a_commit_with_many_messages_and_one_that_prunes_read_back_whole,
);

fn row(owner: Option<&str>) -> SessionRow {
    let now = Timestamp::now();
    SessionRow {
        id: Uuid::new_v4(),
        owner: owner.map(str::to_owned),
        provider: "echo".into(),
        model: "echo-1".into(),
        defaults: Defaults {
            temperature: Some(0.5),
            ..Defaults::default()
        },
        tools: vec![Tool {
            kind: Default::default(),
            name: "get_weather".into(),
            description: Some("the weather".into()),
            parameters: json!({"type": "object"}),
        }],
        // Keys out of order: they come back as written.
        metadata: json!({"zeta": 1, "alpha": {"b": 2, "a": [1, "x"]}})
            .as_object()
            .unwrap()
            .clone(),
        created_at: now,
        updated_at: now,
        version: 1,
        forked_from: None,
    }
}

fn turn(text: &str) -> Vec<Message> {
    let now = Timestamp::now();
    let mut reply = Message::text(Role::Assistant, format!("echo: {text}"), now);
    reply.tool_calls = vec![ToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{\"city\":\"Oslo\"}".into(),
    }];
    vec![Message::text(Role::User, text, now), reply]
}

/// A commit whose lease changes hands while it runs: the process that took the lease
/// over (its transaction still open) holds the commit back until it is done, and then
/// the commit, fenced, lands not at all. (A process killed with its last commit in
/// flight cannot then have that commit land after its successor took the session up.)
#[tokio::test]
async fn postgres_a_commit_racing_a_lease_taken_over_waits_for_it_and_is_fenced() {
    let Some(database) = TestDatabase::create("postgres::lease_race").await else {
        return;
    };
    let store = Arc::new(
        Store::open_as(
            &database.url(),
            Instance::new("10.0.0.1:8080", std::time::Duration::from_secs(30)),
        )
        .await
        .unwrap(),
    );
    let session = row(None);
    store.create(&session, &[]).await.unwrap();
    assert!(matches!(
        store.take_lease(session.id).await.unwrap(),
        Some(Lease::Held { epoch: 1, .. })
    ));
    // Another process takes the lease over, in a transaction it has not committed yet.
    let mut other = sqlx::PgConnection::connect(&database.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("UPDATE leases SET epoch = epoch + 1 WHERE session_id = $1")
        .bind(session.id)
        .execute(&mut other)
        .await
        .unwrap();
    let messages = turn("in flight");
    let committing = {
        let (store, session, messages) = (store.clone(), session.clone(), messages.clone());
        tokio::spawn(async move {
            store
                .commit(CommitRows {
                    epoch: Some(1),
                    ..commit(&session, 0, 1, &messages)
                })
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !committing.is_finished(),
        "the commit waits for the lease's row"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    assert_eq!(
        committing.await.unwrap(),
        Err(StoreError::Fenced {
            held: 1,
            found: Some(2)
        })
    );
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert!(stored.messages.is_empty(), "nothing of the fenced commit");
}

/// Deletes in one tree of forks at once (a session, its fork, and a commit to the fork's
/// fork) never deadlock, and lose nothing.
#[tokio::test]
async fn postgres_deletes_in_one_tree_of_forks_at_once_neither_deadlock_nor_lose_rows() {
    let Some(database) = TestDatabase::create("postgres::fork_deletes").await else {
        return;
    };
    let store = Arc::new(Store::open(&database.url()).await.unwrap());
    for round in 0..15 {
        let source = row(None);
        let history: Vec<Message> = (0..10)
            .flat_map(|n| turn(&format!("r{round}m{n}")))
            .collect();
        store.create(&source, &history).await.unwrap();
        let a = fork_of(&source, 1, 16);
        store.create(&a, &[]).await.unwrap();
        let b = fork_of(&a, 1, 8);
        store.create(&b, &[]).await.unwrap();
        let b_turn = turn("on b");
        let (deleted_source, deleted_a, committed) = tokio::join!(
            store.delete(source.id),
            store.delete(a.id),
            store.commit(commit(&b, 8, 1, &b_turn)),
        );
        assert_eq!(deleted_source, Ok(true), "round {round}");
        assert_eq!(deleted_a, Ok(true), "round {round}");
        committed.unwrap();
        let mut expected = history[..8].to_vec();
        expected.extend(b_turn);
        assert_eq!(
            store.load(b.id, KEEP).await.unwrap().unwrap().messages,
            expected
        );
        assert!(store.is_healthy());
    }
}

#[tokio::test]
async fn postgres_leases_give_a_session_one_owner_and_fence_the_commits_of_one_that_lost_it() {
    let Some(database) = TestDatabase::create("postgres::leases").await else {
        return;
    };
    // Two seconds: the checks below leave a quarter of it as margin against a busy machine.
    let lease = std::time::Duration::from_secs(2);
    let url = database.url();
    let open = |addr: &str| Store::open_as(&url, Instance::new(addr, lease));
    let (a, b) = (
        open("10.0.0.1:8080").await.unwrap(),
        open("10.0.0.2:8080").await.unwrap(),
    );
    let session = row(None);
    // The process that stores a session holds it; taken again by the same process, it
    // keeps its epoch (the epoch moves on when the lease changes hands).
    assert_eq!(a.create(&session, &[]).await.unwrap(), 1);
    assert_eq!(
        a.take_lease(Uuid::new_v4()).await.unwrap(),
        None,
        "no such session"
    );
    assert_eq!(
        a.take_lease(session.id).await.unwrap(),
        Some(Lease::Held {
            epoch: 1,
            taken_over: false
        })
    );
    assert_eq!(
        b.take_lease(session.id).await.unwrap(),
        Some(Lease::Elsewhere {
            addr: "10.0.0.1:8080".into()
        })
    );
    let fenced = |epoch| CommitRows {
        epoch: Some(epoch),
        ..commit(&session, 0, 1, &[])
    };
    let first = turn("a's");
    a.commit(CommitRows {
        messages: &first,
        ..fenced(1)
    })
    .await
    .unwrap();
    // Renewed, a lease outlives its first term; once it lapses, another process takes it.
    tokio::time::sleep(lease / 2).await;
    assert_eq!(a.renew_leases().await.unwrap(), [session.id]);
    tokio::time::sleep(lease / 2 + lease / 4).await;
    assert!(matches!(
        b.take_lease(session.id).await.unwrap(),
        Some(Lease::Elsewhere { .. })
    ));
    tokio::time::sleep(lease).await;
    assert_eq!(
        b.take_lease(session.id).await.unwrap(),
        Some(Lease::Held {
            epoch: 2,
            taken_over: true
        })
    );
    // The process that lost it commits nothing, and learns it lost it when it renews.
    let late = turn("a's, late");
    let refused = a
        .commit(CommitRows {
            from: 2,
            from_version: 2,
            version: 3,
            messages: &late,
            ..fenced(1)
        })
        .await;
    assert_eq!(
        refused,
        Err(StoreError::Fenced {
            held: 1,
            found: Some(2)
        })
    );
    assert_eq!(a.renew_leases().await.unwrap(), Vec::<Uuid>::new());
    let second = turn("b's");
    b.commit(CommitRows {
        from: 2,
        from_version: 2,
        version: 3,
        messages: &second,
        ..fenced(2)
    })
    .await
    .unwrap();
    let stored = b.load(session.id, KEEP).await.unwrap().unwrap();
    let expected: Vec<Message> = first.into_iter().chain(second).collect();
    assert_eq!(stored.messages, expected, "no trace of the fenced commit");
    // Handed back, a lease is taken at once (no takeover: nobody died); a process at the same address as a holder
    // (its successor there) and one that says it is alone take it at once too.
    b.release_leases(Some(&[session.id])).await.unwrap();
    assert_eq!(
        a.take_lease(session.id).await.unwrap(),
        Some(Lease::Held {
            epoch: 3,
            taken_over: false
        })
    );
    let successor = open("10.0.0.1:8080").await.unwrap();
    assert_eq!(
        successor.take_lease(session.id).await.unwrap(),
        Some(Lease::Held {
            epoch: 4,
            taken_over: true
        })
    );
    let alone = open("").await.unwrap();
    assert_eq!(
        alone.take_lease(session.id).await.unwrap(),
        Some(Lease::Held {
            epoch: 5,
            taken_over: true
        })
    );
    for store in [a, b, successor, alone] {
        store.close().await;
    }
}

fn commit<'a>(
    row: &SessionRow,
    from: usize,
    from_version: u64,
    messages: &'a [Message],
) -> CommitRows<'a> {
    CommitRows {
        session: row.id,
        from_version,
        version: from_version + 1,
        from,
        messages,
        updated_at: Timestamp::now(),
        keys: &[],
        turns: &[],
        prune: None,
        epoch: None,
    }
}

async fn a_session_and_its_commits_read_back_whole_after_the_store_is_reopened(backend: Backend) {
    let session = row(Some("digest-a"));
    let instructions = vec![Message::text(Role::System, "be terse", Timestamp::now())];
    let first = turn("hello ✓ \u{1F600}");
    let mut interrupted = Message::text(Role::Assistant, "partial", Timestamp::now());
    interrupted.interrupted = true;
    let tool_output = Message::tool_output("call_1", "21 °C", Timestamp::now());
    let store = backend.open().await;
    assert!(store.is_durable());
    store.create(&session, &instructions).await.unwrap();
    store.commit(commit(&session, 1, 1, &first)).await.unwrap();
    store
        .commit(commit(
            &session,
            3,
            2,
            &[tool_output.clone(), interrupted.clone()],
        ))
        .await
        .unwrap();
    store.close().await;

    let store = backend.open().await;
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert_eq!(stored.row.version, 3);
    let expected: Vec<Message> = instructions
        .into_iter()
        .chain(first)
        .chain([tool_output, interrupted])
        .collect();
    assert_eq!(stored.messages, expected);
    assert_eq!(
        serde_json::to_string(&stored.row.metadata).unwrap(),
        serde_json::to_string(&session.metadata).unwrap(),
        "metadata comes back as written"
    );
    assert_eq!(
        stored.row,
        SessionRow {
            version: 3,
            updated_at: stored.row.updated_at,
            ..session
        }
    );
    assert_eq!(store.load(Uuid::new_v4(), KEEP).await.unwrap(), None);
    store.close().await;
}

async fn a_commit_from_a_stale_version_or_length_changes_nothing(backend: Backend) {
    let store = backend.open().await;
    let session = row(None);
    store.create(&session, &[]).await.unwrap();
    store
        .commit(commit(&session, 0, 1, &turn("one")))
        .await
        .unwrap();
    let stale = store.commit(commit(&session, 0, 1, &turn("two"))).await;
    assert_eq!(
        stale,
        Err(StoreError::VersionMoved {
            expected: 1,
            found: Some(2)
        })
    );
    let wrong_place = store.commit(commit(&session, 1, 2, &turn("three"))).await;
    assert!(matches!(wrong_place, Err(StoreError::VersionMoved { .. })));
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert_eq!((stored.row.version, stored.messages.len()), (2, 2));
    let gone = store.commit(commit(&row(None), 0, 1, &turn("x"))).await;
    assert_eq!(
        gone,
        Err(StoreError::VersionMoved {
            expected: 1,
            found: None
        })
    );
    assert!(store.is_healthy(), "a stale commit is no store failure");
    store.close().await;
}

async fn a_deleted_session_is_gone_with_its_messages(backend: Backend) {
    let store = backend.open().await;
    let session = row(None);
    store.create(&session, &turn("x")).await.unwrap();
    assert!(store.delete(session.id).await.unwrap());
    assert!(!store.delete(session.id).await.unwrap());
    assert_eq!(store.load(session.id, KEEP).await.unwrap(), None);
    // The same id stored again starts from nothing: no message of the old one is left.
    store.create(&session, &[]).await.unwrap();
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert!(stored.messages.is_empty());
    store.close().await;
}

async fn a_keys_sessions_are_listed_newest_first_in_pages(backend: Backend) {
    let store = backend.open().await;
    let mut mine = Vec::new();
    for n in 0..5 {
        let session = row(Some("mine"));
        store
            .create(&session, &turn(&format!("{n}")))
            .await
            .unwrap();
        mine.push((session.created_at, session.id));
        store.create(&row(Some("theirs")), &[]).await.unwrap();
        store.create(&row(None), &[]).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(Some("mine"), 2, after).await.unwrap();
        assert!(page.sessions.iter().all(|(_, count)| *count == 2));
        seen.extend(
            page.sessions
                .iter()
                .map(|(row, _)| (row.created_at, row.id)),
        );
        match page.next {
            Some(next) => after = parse_cursor(&next),
            None => break,
        }
    }
    mine.sort();
    mine.reverse();
    assert_eq!(seen, mine, "newest first, each once");
    assert_eq!(store.list(None, 100, None).await.unwrap().sessions.len(), 5);
    assert_eq!(
        store
            .list(Some("nobody"), 100, None)
            .await
            .unwrap()
            .sessions,
        []
    );
    store.close().await;
}

async fn many_sessions_commit_at_once_and_each_gets_its_own_outcome(backend: Backend) {
    let store = Arc::new(backend.open().await);
    let sessions: Vec<SessionRow> = (0..50).map(|_| row(None)).collect();
    for session in &sessions {
        store.create(session, &[]).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (n, session) in sessions.iter().cloned().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let messages = turn("x");
            // Every fifth one starts from a version the session is not at.
            let from_version = if n % 5 == 0 { 7 } else { 1 };
            store
                .commit(commit(&session, 0, from_version, &messages))
                .await
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.unwrap();
        assert_eq!(outcome.is_ok(), n % 5 != 0, "{n}: {outcome:?}");
    }
    for (n, session) in sessions.iter().enumerate() {
        let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
        let expected = if n % 5 == 0 { (1, 0) } else { (2, 2) };
        assert_eq!((stored.row.version, stored.messages.len()), expected, "{n}");
    }
    Arc::into_inner(store).unwrap().close().await;
}

fn key_record(owner: Option<&str>, key: &str) -> KeyRecord {
    KeyRecord {
        owner: owner.map(str::to_owned),
        key: key.into(),
        route: "POST /text/session/x/message?view=full".into(),
        body_digest: [7; 32],
        created_at: Timestamp::now(),
        turn: None,
        answer: None,
    }
}

fn answer(history: Option<Uuid>) -> KeyAnswer {
    KeyAnswer {
        status: 200,
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("etag".into(), b"\"3\"".to_vec()),
        ],
        body: b"{\"success\":true,\"messages\":".to_vec(),
        history: history.map(|session| (session, 4, b"}}".to_vec())),
    }
}

fn ago(millis: i64) -> Timestamp {
    Timestamp::from_unix_millis(Timestamp::now().unix_millis() - millis).unwrap()
}

async fn a_key_record_and_its_answer_read_back_and_expire(backend: Backend) {
    let store = backend.open().await;
    let whole = KeyRecord {
        answer: Some(answer(None)),
        ..key_record(Some("digest-a"), "k1")
    };
    let around = KeyRecord {
        answer: Some(answer(Some(Uuid::new_v4()))),
        ..key_record(None, "k1")
    };
    store.keep_key(&whole).await.unwrap();
    store.keep_key(&around).await.unwrap();
    store.close().await;

    let store = backend.open().await;
    let since = ago(60_000);
    assert_eq!(
        store.key(Some("digest-a"), "k1", since).await.unwrap(),
        Some(whole.clone()),
        "per API key"
    );
    assert_eq!(
        store.key(None, "k1", since).await.unwrap(),
        Some(around.clone())
    );
    assert_eq!(
        store.key(Some("digest-b"), "k1", since).await.unwrap(),
        None
    );
    assert_eq!(
        store.key(Some("digest-a"), "k2", since).await.unwrap(),
        None
    );
    // Made before `since`: as good as gone; `forget_keys` drops it.
    let newest = whole
        .created_at
        .unix_millis()
        .max(around.created_at.unix_millis());
    let later = Timestamp::from_unix_millis(newest + 1).unwrap();
    assert_eq!(
        store.key(Some("digest-a"), "k1", later).await.unwrap(),
        None
    );
    assert_eq!(store.forget_keys(later).await.unwrap(), 2);
    assert_eq!(
        store.key(Some("digest-a"), "k1", since).await.unwrap(),
        None
    );
    store.close().await;
}

async fn a_commit_writes_its_keys_record_with_the_turn_and_a_failed_one_writes_none(
    backend: Backend,
) {
    let store = backend.open().await;
    let session = row(None);
    store.create(&session, &[]).await.unwrap();
    // An old record of the key (an answer of a day ago) is replaced by the new claim.
    let old = KeyRecord {
        created_at: ago(86_400_000),
        answer: Some(answer(None)),
        ..key_record(None, "k")
    };
    store.keep_key(&old).await.unwrap();
    let messages = turn("hi");
    let turn_id = Uuid::new_v4();
    let claim = KeyRecord {
        turn: Some(KeyTurn {
            session: session.id,
            turn_id,
            result: Some(json!({"text": "echo: hi", "finishReason": "stop"})),
            from: 0,
            len: 2,
            version: 2,
            updated_at: Timestamp::now(),
        }),
        ..key_record(None, "k")
    };
    store
        .commit(CommitRows {
            keys: std::slice::from_ref(&claim),
            ..commit(&session, 0, 1, &messages)
        })
        .await
        .unwrap();
    let since = ago(3_600_000);
    assert_eq!(
        store.key(None, "k", since).await.unwrap(),
        Some(claim.clone())
    );
    // Its answer, kept afterwards, leaves the turn in place.
    let answered = KeyRecord {
        answer: Some(answer(Some(session.id))),
        ..key_record(None, "k")
    };
    store
        .keep_key(&KeyRecord {
            created_at: claim.created_at,
            ..answered.clone()
        })
        .await
        .unwrap();
    let stored = store.key(None, "k", since).await.unwrap().unwrap();
    assert_eq!(stored.turn, claim.turn);
    assert_eq!(stored.answer, answered.answer);
    // A commit that does not apply writes no record.
    let stale = KeyRecord {
        turn: claim.turn.clone(),
        ..key_record(None, "other")
    };
    let refused = store
        .commit(CommitRows {
            keys: std::slice::from_ref(&stale),
            ..commit(&session, 0, 1, &messages)
        })
        .await;
    assert!(matches!(refused, Err(StoreError::VersionMoved { .. })));
    assert_eq!(store.key(None, "other", since).await.unwrap(), None);
    store.close().await;
}

async fn a_joined_turns_commit_writes_every_writers_key_and_record(backend: Backend) {
    let store = backend.open().await;
    let session = row(None);
    store.create(&session, &[]).await.unwrap();
    let messages = turn("hi");
    let claims: Vec<KeyRecord> = ["k1", "k2", "k3"]
        .into_iter()
        .map(|key| KeyRecord {
            turn: Some(KeyTurn {
                session: session.id,
                turn_id: Uuid::new_v4(),
                result: Some(json!({"text": "one reply"})),
                from: 0,
                len: 2,
                version: 2,
                updated_at: Timestamp::now(),
            }),
            ..key_record(None, key)
        })
        .collect();
    let records: Vec<TurnRow> = (0..4).map(|n| turn_row(&session, n, "completed")).collect();
    // A refused commit writes none of them.
    let refused = store
        .commit(CommitRows {
            keys: &claims,
            turns: &records,
            ..commit(&session, 0, 7, &messages)
        })
        .await;
    assert!(matches!(refused, Err(StoreError::VersionMoved { .. })));
    let since = ago(3_600_000);
    assert_eq!(store.key(None, "k2", since).await.unwrap(), None);
    store
        .commit(CommitRows {
            keys: &claims,
            turns: &records,
            ..commit(&session, 0, 1, &messages)
        })
        .await
        .unwrap();
    for claim in &claims {
        assert_eq!(
            store.key(None, &claim.key, since).await.unwrap().as_ref(),
            Some(claim)
        );
    }
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert_eq!(stored.turns, records);
    assert_eq!(stored.messages.len(), 2);
    store.close().await;
}

/// How many `messages` rows a session has of its own (what a fork would copy). The store
/// is closed for it (a SQLite file has one user at a time), and opened again.
async fn own_rows(backend: &Backend, store: &mut Store, session: Uuid) -> i64 {
    std::mem::replace(store, Store::Memory).close().await;
    let rows = count_own_rows(backend, session).await;
    *store = backend.open().await;
    rows
}

async fn count_own_rows(backend: &Backend, session: Uuid) -> i64 {
    match backend {
        Backend::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let rows = sqlx::query_scalar("SELECT count(*) FROM messages WHERE session_id = ?")
                .bind(session.to_string())
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            rows
        }
        Backend::Postgres(database) => {
            let pool = sqlx::PgPool::connect(&database.url()).await.unwrap();
            let rows = sqlx::query_scalar("SELECT count(*) FROM messages WHERE session_id = $1")
                .bind(session)
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            rows
        }
    }
}

/// A fork of `source` (whose history is `history`) at `up_to`, as the session layer
/// makes one.
fn fork_of(source: &SessionRow, version: u64, up_to: usize) -> SessionRow {
    SessionRow {
        id: Uuid::new_v4(),
        forked_from: Some(text_session_api::message::ForkedFrom {
            session_id: source.id,
            version,
            up_to,
        }),
        ..source.clone()
    }
}

async fn a_fork_shares_its_sources_rows_and_outlives_the_source(backend: Backend) {
    let mut store = backend.open().await;
    let source = row(None);
    let history: Vec<Message> = (0..100).flat_map(|n| turn(&format!("m{n}"))).collect();
    store.create(&source, &history).await.unwrap();
    // Forks at 150, and at 60 of that fork; the source and the first fork go on.
    let a = fork_of(&source, 1, 150);
    store.create(&a, &[]).await.unwrap();
    let b = fork_of(&a, 1, 60);
    store.create(&b, &[]).await.unwrap();
    assert_eq!(
        own_rows(&backend, &mut store, a.id).await,
        0,
        "nothing copied"
    );
    assert_eq!(
        own_rows(&backend, &mut store, b.id).await,
        0,
        "nothing copied"
    );
    let a_turn = turn("on the fork");
    store.commit(commit(&a, 150, 1, &a_turn)).await.unwrap();
    let s_turn = turn("on the source");
    store
        .commit(commit(&source, 200, 1, &s_turn))
        .await
        .unwrap();
    let whole = |prefix: &[Message], own: &[Message]| {
        let mut all = prefix.to_vec();
        all.extend_from_slice(own);
        all
    };
    async fn load(store: &Store, id: Uuid) -> text_session_api::store::StoredSession {
        store.load(id, KEEP).await.unwrap().unwrap()
    }
    assert_eq!(
        load(&store, source.id).await.messages,
        whole(&history, &s_turn)
    );
    let a_whole = whole(&history[..150], &a_turn);
    assert_eq!(load(&store, a.id).await.messages, a_whole);
    assert_eq!(load(&store, a.id).await.row.forked_from, a.forked_from);
    assert_eq!(load(&store, b.id).await.messages, history[..60].to_vec());

    // The source goes: the fork sharing most of it (a) takes its rows; b reads on.
    assert!(store.delete(source.id).await.unwrap());
    // A fork of a session deleted meanwhile: refused, nothing written, the store well.
    let late = fork_of(&source, 1, 10);
    assert_eq!(
        store.create(&late, &[]).await,
        Err(StoreError::Gone(source.id))
    );
    assert_eq!(store.load(late.id, KEEP).await.unwrap(), None);
    assert!(store.is_healthy());
    assert_eq!(own_rows(&backend, &mut store, a.id).await, 152);
    assert_eq!(load(&store, a.id).await.messages, a_whole);
    assert_eq!(load(&store, b.id).await.messages, history[..60].to_vec());
    // Then a goes too (b's only base), by expiry this time: b takes its first 60.
    let later = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000).unwrap();
    assert!(store.expire(a.id, later).await.unwrap());
    assert_eq!(own_rows(&backend, &mut store, b.id).await, 60);
    let b_turn = turn("on b");
    store.commit(commit(&b, 60, 1, &b_turn)).await.unwrap();
    assert_eq!(
        load(&store, b.id).await.messages,
        whole(&history[..60], &b_turn)
    );
    assert!(store.delete(b.id).await.unwrap());
    assert_eq!(store.load(b.id, KEEP).await.unwrap(), None);
    store.close().await;
}

async fn completed_turns_records_read_back_newest_within_bounds_and_stay_with_their_session(
    backend: Backend,
) {
    let store = backend.open().await;
    let source = row(None);
    store.create(&source, &[]).await.unwrap();
    let mut records = Vec::new();
    for n in 0..5 {
        let record = turn_row(&source, n, "completed");
        let messages = turn(&format!("m{n}"));
        store
            .commit(CommitRows {
                turns: std::slice::from_ref(&record),
                ..commit(&source, 2 * n as usize, n as u64 + 1, &messages)
            })
            .await
            .unwrap();
        records.push(record);
    }
    let bounds = TurnBounds {
        records: 2,
        failed: 0,
    };
    let loaded = store.load(source.id, bounds).await.unwrap().unwrap().turns;
    assert!(
        loaded.ends_with(&records[3..]),
        "the newest two, oldest first"
    );
    assert!(loaded.iter().all(|turn| records.contains(turn)));
    assert_eq!(
        store.load(source.id, KEEP).await.unwrap().unwrap().turns,
        records
    );

    // A fork shares the source's rows, not its turns; nor does it take them over as
    // the source's heir.
    let fork = fork_of(&source, 6, 10);
    store.create(&fork, &[]).await.unwrap();
    assert!(
        store
            .load(fork.id, KEEP)
            .await
            .unwrap()
            .unwrap()
            .turns
            .is_empty()
    );
    let own = turn_row(&fork, 5, "completed");
    store
        .commit(CommitRows {
            turns: std::slice::from_ref(&own),
            ..commit(&fork, 10, 1, &turn("on the fork"))
        })
        .await
        .unwrap();
    assert!(store.delete(source.id).await.unwrap());
    let fork_now = store.load(fork.id, KEEP).await.unwrap().unwrap();
    assert_eq!(fork_now.turns, [own]);
    assert_eq!(fork_now.messages.len(), 12);
    store.close().await;
}

async fn sessions_are_counted_per_owner_and_idle_ones_expire_by_their_last_activity(
    backend: Backend,
) {
    let store = backend.open().await;
    let (a1, a2, none) = (row(Some("a")), row(Some("a")), row(None));
    for session in [&a1, &a2, &none] {
        store.create(session, &[]).await.unwrap();
    }
    let mut counts = store.count_by_owner().await.unwrap();
    counts.sort();
    assert_eq!(counts, [(None, 1), (Some("a".to_owned()), 2)]);

    let soon = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000).unwrap();
    let later = Timestamp::from_unix_millis(soon.unix_millis() + 60_000).unwrap();
    // Read a minute from now (as a session leaving memory reports it): not idle before then.
    store.touch(&[(a2.id, soon)]).await.unwrap();
    let idle = idle_ids(&store, soon).await;
    assert_eq!(idle.len(), 2);
    assert!(idle.contains(&a1.id) && idle.contains(&none.id));
    // A commit is activity too (a minute from now, as the touch above).
    store
        .commit(CommitRows {
            updated_at: soon,
            ..commit(&a1, 0, 1, &turn("x"))
        })
        .await
        .unwrap();
    let idle = idle_ids(&store, soon).await;
    assert_eq!(idle, [none.id], "active since their commit or read");
    assert!(!store.expire(a1.id, soon).await.unwrap(), "committed since");
    assert!(!store.expire(a2.id, soon).await.unwrap(), "active since");
    assert!(store.expire(none.id, soon).await.unwrap());
    assert!(!store.expire(none.id, soon).await.unwrap(), "gone already");
    assert_eq!(store.load(none.id, KEEP).await.unwrap(), None);
    assert_eq!(store.idle(later, 10).await.unwrap().len(), 2);
    assert_eq!(
        store.count_by_owner().await.unwrap(),
        [(Some("a".to_owned()), 2)]
    );
    store.close().await;
}

/// The sessions idle before `before` (at most 10).
async fn idle_ids(store: &Store, before: Timestamp) -> Vec<Uuid> {
    let idle = store.idle(before, 10).await.unwrap();
    idle.into_iter().map(|(id, _)| id).collect()
}

fn turn_row(session: &SessionRow, n: i64, status: &str) -> TurnRow {
    TurnRow {
        session: session.id,
        id: Uuid::new_v4(),
        created_at: Timestamp::from_unix_millis(1_700_000_000_000 + n).unwrap(),
        status: status.into(),
        record: format!("{{\"n\":{n}}}"),
    }
}

async fn ended_turn_records_read_back_with_their_session_within_their_bounds(backend: Backend) {
    let store = backend.open().await;
    let session = row(None);
    store.create(&session, &[]).await.unwrap();
    // Written with a commit, or alone; rewritten in place (a retry noted on it).
    let committed = turn_row(&session, 0, "completed");
    store
        .commit(CommitRows {
            turns: std::slice::from_ref(&committed),
            ..commit(&session, 0, 1, &turn("x"))
        })
        .await
        .unwrap();
    let failed = turn_row(&session, 1, "failed");
    store.record_turn(&failed, None).await.unwrap();
    let retried = TurnRow {
        record: "{\"n\":1,\"retriedBy\":\"x\"}".into(),
        ..failed.clone()
    };
    store.record_turn(&retried, None).await.unwrap();
    // A refused commit writes no record.
    let refused = turn_row(&session, 2, "completed");
    assert!(
        store
            .commit(CommitRows {
                turns: std::slice::from_ref(&refused),
                ..commit(&session, 0, 1, &turn("y"))
            })
            .await
            .is_err()
    );
    store.close().await;

    let store = backend.open().await;
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert_eq!(stored.turns, [committed, retried.clone()]);

    // Past the bounds: the last 3 of any status, and besides them the last 2 failed.
    let mut rows = vec![retried];
    for n in 2..10 {
        let status = if n % 3 == 0 { "failed" } else { "cancelled" };
        let row = turn_row(&session, n, status);
        store.record_turn(&row, None).await.unwrap();
        rows.push(row);
    }
    let bounds = TurnBounds {
        records: 3,
        failed: 2,
    };
    let last = turn_row(&session, 10, "rejected");
    store.record_turn(&last, Some(bounds)).await.unwrap();
    rows.push(last);
    let loaded = store.load(session.id, bounds).await.unwrap().unwrap().turns;
    let (completed, kept): (Vec<_>, Vec<_>) =
        loaded.iter().partition(|turn| turn.status == "completed");
    let kept: Vec<i64> = kept
        .iter()
        .map(|t| t.created_at.unix_millis() - 1_700_000_000_000)
        .collect();
    // Failed: 1, 3, 6, 9 (the last two are 6 and 9); the last three: 8, 9, 10. A store
    // may give completed ones besides, as many as the bounds keep at most (SQLite keeps
    // them on their message rows); the session prunes them when it restores them.
    assert_eq!(kept, [6, 8, 9, 10]);
    assert!(completed.len() <= bounds.records);

    // Deleting the session takes its records with it.
    assert!(store.delete(session.id).await.unwrap());
    store.create(&session, &[]).await.unwrap();
    assert!(
        store
            .load(session.id, KEEP)
            .await
            .unwrap()
            .unwrap()
            .turns
            .is_empty()
    );
    store.close().await;
}

async fn a_commit_with_many_messages_and_one_that_prunes_read_back_whole(backend: Backend) {
    let store = backend.open().await;
    let session = row(None);
    store.create(&session, &[]).await.unwrap();
    // More messages than one statement takes.
    let many: Vec<Message> = (0..600)
        .map(|n| Message::text(Role::User, format!("message {n}"), Timestamp::now()))
        .collect();
    store.commit(commit(&session, 0, 1, &many)).await.unwrap();
    for n in 0..5 {
        store
            .record_turn(&turn_row(&session, n, "cancelled"), None)
            .await
            .unwrap();
    }
    // A commit that prunes: the records as they were before it are brought within the
    // bounds, and its own is added.
    let last = turn_row(&session, 5, "completed");
    let after = turn("after");
    store
        .commit(CommitRows {
            turns: std::slice::from_ref(&last),
            prune: Some(TurnBounds {
                records: 2,
                failed: 1,
            }),
            ..commit(&session, 600, 2, &after)
        })
        .await
        .unwrap();
    store.close().await;

    let store = backend.open().await;
    let stored = store.load(session.id, KEEP).await.unwrap().unwrap();
    assert_eq!(stored.row.version, 3);
    let expected: Vec<Message> = many.into_iter().chain(after).collect();
    assert_eq!(stored.messages, expected);
    let kept: Vec<i64> = stored
        .turns
        .iter()
        .map(|t| t.created_at.unix_millis() - 1_700_000_000_000)
        .collect();
    assert_eq!(kept, [3, 4, 5]);
    store.close().await;
}
