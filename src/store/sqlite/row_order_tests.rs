//! The layout of the message rows (migration `0011`): kept in the order they are
//! written and found through `messages_in_order`, including in a file written before.

use super::tests::{KEEP, TempFile};
use super::*;

/// A file written before migration `0011` (message rows kept in each session's
/// order) opens with its histories, a fork's shared rows and the records on rows as
/// they were, and the rows written after it go after every row written before.
#[tokio::test]
async fn a_file_from_before_rows_were_kept_in_written_order_opens_with_all_it_held() {
    use sqlx::migrate::Migrator;
    let file = TempFile::new();
    // The schema as it was at migration 0010, from its own files.
    let before = std::env::temp_dir().join(format!("migrations-{}", Uuid::new_v4()));
    std::fs::create_dir(&before).unwrap();
    for entry in
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap()
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0011" {
            std::fs::copy(&path, before.join(name)).unwrap();
        }
    }
    let (a, fork) = (Uuid::new_v4(), Uuid::new_v4());
    let mut conn = SqliteConnectOptions::new()
        .filename(file.path())
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    std::fs::remove_dir_all(&before).unwrap();
    let at = "2026-12-04T10:00:00.000Z";
    let forked_from = format!(r#"{{"sessionId":"{a}","version":3,"upTo":2}}"#);
    for (id, stored, base, base_len, forked) in [
        (a.to_string(), 3, None, None, None),
        (
            fork.to_string(),
            3,
            Some(a.to_string()),
            Some(2),
            Some(forked_from),
        ),
    ] {
        sqlx::query(
            "INSERT INTO sessions (id, provider, model, defaults, tools, metadata,
                                   created_at, updated_at, version, messages, active_at,
                                   base_id, base_len, forked_from, turns_on_rows)
             VALUES (?, 'echo', 'echo-1', '{}', '[]', '{}', ?, ?, 3, ?, ?, ?, ?, ?, 1)",
        )
        .bind(id)
        .bind(at)
        .bind(at)
        .bind(stored)
        .bind(at)
        .bind(base)
        .bind(base_len)
        .bind(forked)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let turn = Uuid::new_v4();
    let record = r#"{"status":"completed"}"#;
    for (session, seq, role, content, record) in [
        (a, 0, "user", "first", None),
        (a, 1, "assistant", "second", Some(record)),
        (a, 2, "user", "third of a", None),
        (fork, 2, "user", "third of the fork", None),
    ] {
        sqlx::query(
            "INSERT INTO messages (session_id, seq, role, content, interrupted, created_at,
                                   turn_id, turn_created_at, turn_record)
             VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
        )
        .bind(session.to_string())
        .bind(seq)
        .bind(role)
        .bind(content)
        .bind(at)
        .bind(record.map(|_| turn.to_string()))
        .bind(record.map(|_| at))
        .bind(record)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();

    let store = SqliteStore::open(file.path()).await.unwrap();
    let texts = |stored: StoredSession| {
        stored
            .messages
            .iter()
            .map(|m| m.content.to_string())
            .collect::<Vec<_>>()
    };
    let stored = store.load(a, KEEP).await.unwrap().unwrap();
    assert_eq!(stored.turns.len(), 1);
    assert_eq!(
        (stored.turns[0].id, stored.turns[0].record.as_str()),
        (turn, record)
    );
    assert_eq!(texts(stored), ["first", "second", "third of a"]);
    let stored = store.load(fork, KEEP).await.unwrap().unwrap();
    assert_eq!(texts(stored), ["first", "second", "third of the fork"]);

    // A commit's rows go after every row there was, and the session reads in order.
    let commit = Write::Commit {
        session: a,
        from_version: 3,
        version: 4,
        from: 3,
        messages: vec![Message::text(
            crate::message::Role::User,
            "fourth",
            Timestamp::now(),
        )],
        updated_at: Timestamp::now(),
        keys: Vec::new(),
        turns: Vec::new(),
        prune: None,
    };
    store.write(commit).await.unwrap();
    let written = store
        .read(|conn| {
            let mut rows = conn
                .prepare("SELECT content FROM messages ORDER BY rowid")
                .map_err(failed)?;
            let contents = rows
                .query_map([], |row| row.get::<_, String>(0))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(failed)?;
            let check: String = conn
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .map_err(failed)?;
            Ok((contents, check))
        })
        .await
        .unwrap();
    assert_eq!(written.0.last().map(String::as_str), Some("fourth"));
    assert_eq!(written.1, "ok");
    let stored = store.load(a, KEEP).await.unwrap().unwrap();
    assert_eq!(texts(stored), ["first", "second", "third of a", "fourth"]);
}

/// Every statement that reads or changes a session's rows finds them through
/// `messages_in_order`, never by a scan of the whole table: the rows are kept in the
/// order they were written (migration `0011`).
#[tokio::test]
async fn the_statements_on_a_sessions_rows_find_them_by_its_index() {
    use crate::store::rows::{HAND_ROWS_TO_HEIR, LOAD_MESSAGES};
    let file = TempFile::new();
    let store = SqliteStore::open(file.path()).await.unwrap();
    let statements = [
        LOAD_MESSAGES,
        HAND_ROWS_TO_HEIR,
        reads::COMPLETED_TURNS,
        writes::NEWEST_DROPPED,
        writes::CLEAR_COMPLETED,
        writes::HAND_ROWS_TO_HEIR,
    ];
    let plans = store
        .read(move |conn| {
            statements
                .iter()
                .map(|sql| {
                    let mut plan = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .map_err(failed)?;
                    let unbound = vec![rusqlite::types::Null; plan.parameter_count()];
                    plan.query_map(rusqlite::params_from_iter(unbound), |row| {
                        row.get::<_, String>(3)
                    })
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .map(|steps| steps.join("; "))
                    .map_err(failed)
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })
        .await
        .unwrap();
    for (sql, plan) in statements.iter().zip(plans) {
        let on_messages: Vec<_> = plan
            .split("; ")
            .filter(|step| step.contains(" messages") || step.contains(" m "))
            .collect();
        assert!(!on_messages.is_empty(), "{sql}: {plan}");
        for step in on_messages {
            assert!(
                step.starts_with("SEARCH")
                    && step.contains("INDEX messages_in_order (session_id=?"),
                "{sql}: {plan}"
            );
        }
    }
}
