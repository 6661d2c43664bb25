//! The embedded store: one SQLite file, one process. WAL with `synchronous=FULL`, so a
//! commit that returned survives a crash and a power loss; the file is held in
//! exclusive locking mode, so a second process on it is refused at start. Migrations
//! are embedded (`migrations/sqlite/`) and run at open; a schema newer than this binary
//! is refused. One connection serves every call; writes go through one writer task that
//! commits whatever is waiting as one transaction (group commit: one fsync for many
//! sessions' turns).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{CommitRows, SessionPage, SessionRow, StoreError, StoredSession};
use crate::message::{Message, Role, Timestamp, ToolCall};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writes wait here for the writer task.
    writes: mpsc::Sender<(Write, oneshot::Sender<Result<bool, StoreError>>)>,
    writer: JoinHandle<()>,
    /// Whether the last batch (or probe) committed.
    healthy: Arc<AtomicBool>,
}

/// How often a store that failed is tried again while no write comes.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Writes one batch takes at most.
const MAX_BATCH: usize = 256;

/// A write for the writer task, with what it needs owned.
#[derive(Debug)]
enum Write {
    Create {
        row: SessionRow,
        messages: Vec<Message>,
    },
    Commit {
        session: Uuid,
        from_version: u64,
        version: u64,
        from: usize,
        messages: Vec<Message>,
        updated_at: Timestamp,
    },
    Delete {
        id: Uuid,
    },
}

impl SqliteStore {
    /// Opens (or creates, with its folder) the file at `path` and brings its schema up
    /// to date.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        if let Some(folder) = Path::new(path)
            .parent()
            .filter(|f| !f.as_os_str().is_empty())
        {
            tokio::fs::create_dir_all(folder).await.map_err(|e| {
                StoreError::Refused(format!("STORE: cannot create {}: {e}", folder.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| StoreError::Refused(format!("STORE: sqlite://{path}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .locking_mode(SqliteLockingMode::Exclusive)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(1));
        // One connection, never closed while the store lives: it holds the file's lock.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| in_use_or_unavailable(path, e))?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Refused(format!(
                "STORE: the schema of {path} is at migration {version}, newer than this binary knows; run a newer binary"
            )),
            sqlx::migrate::MigrateError::Execute(e) => in_use_or_unavailable(path, e),
            other => StoreError::Refused(format!("STORE: migrating {path}: {other}")),
        })?;
        let (writes, waiting) = mpsc::channel(4 * MAX_BATCH);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write_batches(pool.clone(), waiting, healthy.clone()));
        Ok(Self {
            pool,
            writes,
            writer,
            healthy,
        })
    }

    /// Stores a new session with its first messages (in the writer's next batch).
    pub async fn create(&self, row: &SessionRow, messages: &[Message]) -> Result<(), StoreError> {
        self.write(Write::Create {
            row: row.clone(),
            messages: messages.to_vec(),
        })
        .await
        .map(|_| ())
    }

    /// Appends a turn's messages if the session is still where the commit started.
    pub async fn commit(&self, commit: CommitRows<'_>) -> Result<(), StoreError> {
        self.write(Write::Commit {
            session: commit.session,
            from_version: commit.from_version,
            version: commit.version,
            from: commit.from,
            messages: commit.messages.to_vec(),
            updated_at: commit.updated_at,
        })
        .await
        .map(|_| ())
    }

    pub async fn load(&self, id: Uuid) -> Result<Option<StoredSession>, StoreError> {
        let key = id.to_string();
        let Some(row) = sqlx::query("SELECT * FROM sessions WHERE id = ?")
            .bind(&key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let row = session_row(&row)?;
        let messages = sqlx::query("SELECT * FROM messages WHERE session_id = ? ORDER BY seq")
            .bind(&key)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(message)
            .collect::<Result<_, _>>()?;
        Ok(Some(StoredSession { row, messages }))
    }

    /// Removes a session and its history; whether it was stored.
    pub async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(Write::Delete { id }).await
    }

    /// Hands a write to the writer task and waits until its batch is committed.
    async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let (done, answer) = oneshot::channel();
        self.writes
            .send((write, done))
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
    }

    /// Whether the last write committed (after a failure, a probe tries every second).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Lets the writer finish what it was given, then closes the file (and its lock).
    pub async fn close(self) {
        let Self {
            pool,
            writes,
            writer,
            ..
        } = self;
        drop(writes);
        let _ = writer.await;
        pool.close().await;
    }

    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: usize,
        after: Option<(Timestamp, Uuid)>,
    ) -> Result<SessionPage, StoreError> {
        let (after_created, after_id) = match after {
            // Past every stored session: "~" sorts after any time.
            None => ("~".to_owned(), String::new()),
            Some((created, id)) => (created.to_rfc3339(), id.to_string()),
        };
        let rows = sqlx::query(
            "SELECT * FROM sessions WHERE owner IS ? AND (created_at, id) < (?, ?)
             ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(owner)
        .bind(&after_created)
        .bind(&after_id)
        .bind(integer(limit.saturating_add(1))?)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let more = rows.len() > limit;
        let sessions = rows
            .iter()
            .take(limit)
            .map(|row| {
                let count: i64 = row.try_get("messages").map_err(unavailable)?;
                Ok((session_row(row)?, usize::try_from(count).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = more
            .then(|| sessions.last())
            .flatten()
            .map(|(row, _)| super::cursor(row.created_at, row.id));
        Ok(SessionPage { sessions, next })
    }
}

/// The writer task: takes every write waiting (up to `MAX_BATCH`), applies each in a
/// savepoint of one transaction, and commits them together: one fsync for the batch, so
/// many sessions' turns share it. A write that fails (a stale version) is rolled back
/// alone; if the commit itself fails, every write of the batch fails and none stuck.
async fn write_batches(
    pool: SqlitePool,
    mut waiting: mpsc::Receiver<(Write, oneshot::Sender<Result<bool, StoreError>>)>,
    healthy: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if !healthy.load(Ordering::Acquire) {
            match tokio::time::timeout(PROBE_EVERY, waiting.recv_many(&mut batch, MAX_BATCH)).await
            {
                Err(_) => {
                    let recovered = probe(&pool).await;
                    if recovered {
                        tracing::info!("the store commits again");
                    }
                    healthy.store(recovered, Ordering::Release);
                    continue;
                }
                Ok(0) => return,
                Ok(_) => {}
            }
        } else if waiting.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (outcomes, committed) = apply_batch(&pool, batch.iter().map(|(write, _)| write)).await;
        if !committed && healthy.load(Ordering::Acquire) {
            tracing::error!("the store failed to commit; writes get 503 until it recovers");
        }
        healthy.store(committed, Ordering::Release);
        for ((_, done), outcome) in batch.drain(..).zip(outcomes) {
            let _ = done.send(outcome);
        }
    }
}

/// Whether the store can commit a write now.
async fn probe(pool: &SqlitePool) -> bool {
    sqlx::query(
        "INSERT INTO store_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    )
    .bind(Timestamp::now().to_rfc3339())
    .execute(pool)
    .await
    .is_ok()
}

/// The outcome of each write, and whether the batch's transaction committed.
async fn apply_batch<'a>(
    pool: &SqlitePool,
    writes: impl ExactSizeIterator<Item = &'a Write> + Clone,
) -> (Vec<Result<bool, StoreError>>, bool) {
    let count = writes.len();
    let failed_all = |error: StoreError| (vec![Err(error); count], false);
    #[cfg(feature = "fault-injection")]
    if writes.clone().any(fault_injection::fails) {
        return failed_all(StoreError::Unavailable(
            "fault injection: the store fails".into(),
        ));
    }
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(error) => return failed_all(unavailable(error)),
    };
    let mut outcomes = Vec::with_capacity(count);
    for write in writes {
        let mut savepoint = match sqlx::Connection::begin(&mut *tx).await {
            Ok(savepoint) => savepoint,
            Err(error) => return failed_all(unavailable(error)),
        };
        let outcome = apply(&mut savepoint, write).await;
        let ended = match outcome {
            Ok(_) => savepoint.commit().await,
            Err(_) => savepoint.rollback().await,
        };
        if let Err(error) = ended {
            return failed_all(unavailable(error));
        }
        outcomes.push(outcome);
    }
    match tx.commit().await {
        Ok(()) => (outcomes, true),
        Err(error) => failed_all(unavailable(error)),
    }
}

/// One write, inside the batch's transaction.
async fn apply(tx: &mut Transaction<'_, Sqlite>, write: &Write) -> Result<bool, StoreError> {
    match write {
        Write::Create { row, messages } => {
            sqlx::query(
                "INSERT INTO sessions (id, owner, provider, model, defaults, tools, metadata,
                                       created_at, updated_at, version, messages)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(row.id.to_string())
            .bind(&row.owner)
            .bind(&row.provider)
            .bind(&row.model)
            .bind(json(&row.defaults)?)
            .bind(json(&row.tools)?)
            .bind(json(&row.metadata)?)
            .bind(row.created_at.to_rfc3339())
            .bind(row.updated_at.to_rfc3339())
            .bind(integer(row.version)?)
            .bind(integer(messages.len())?)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
            insert_messages(tx, row.id, 0, messages).await?;
            Ok(true)
        }
        Write::Commit {
            session,
            from_version,
            version,
            from,
            messages,
            updated_at,
        } => {
            let id = session.to_string();
            let moved = sqlx::query(
                "UPDATE sessions SET version = ?, updated_at = ?, messages = messages + ?
                 WHERE id = ? AND version = ? AND messages = ?",
            )
            .bind(integer(*version)?)
            .bind(updated_at.to_rfc3339())
            .bind(integer(messages.len())?)
            .bind(&id)
            .bind(integer(*from_version)?)
            .bind(integer(*from)?)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
            if moved.rows_affected() != 1 {
                let found: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM sessions WHERE id = ?")
                        .bind(&id)
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(unavailable)?;
                return Err(StoreError::VersionMoved {
                    expected: *from_version,
                    found: found.and_then(|v| u64::try_from(v).ok()),
                });
            }
            insert_messages(tx, *session, *from, messages).await?;
            Ok(true)
        }
        Write::Delete { id } => {
            let deleted = sqlx::query("DELETE FROM sessions WHERE id = ?")
                .bind(id.to_string())
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
            Ok(deleted.rows_affected() == 1)
        }
    }
}

async fn insert_messages(
    tx: &mut Transaction<'_, Sqlite>,
    session: Uuid,
    from: usize,
    messages: &[Message],
) -> Result<(), StoreError> {
    let id = session.to_string();
    for (offset, message) in messages.iter().enumerate() {
        let tool_calls = if message.tool_calls.is_empty() {
            None
        } else {
            Some(json(&message.tool_calls)?)
        };
        sqlx::query(
            "INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id,
                                   interrupted, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(integer(from + offset)?)
        .bind(role_name(message.role))
        .bind(&message.content)
        .bind(tool_calls)
        .bind(&message.tool_call_id)
        .bind(message.interrupted)
        .bind(message.created_at.to_rfc3339())
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

fn session_row(row: &SqliteRow) -> Result<SessionRow, StoreError> {
    let text = |column: &str| row.try_get::<String, _>(column).map_err(unavailable);
    let id = text("id")?;
    Ok(SessionRow {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(format!("session id `{id}`: {e}")))?,
        owner: row.try_get("owner").map_err(unavailable)?,
        provider: text("provider")?,
        model: text("model")?,
        defaults: from_json(&text("defaults")?)?,
        tools: from_json(&text("tools")?)?,
        metadata: from_json(&text("metadata")?)?,
        created_at: timestamp(&text("created_at")?)?,
        updated_at: timestamp(&text("updated_at")?)?,
        version: u64::try_from(row.try_get::<i64, _>("version").map_err(unavailable)?)
            .map_err(|e| corrupt(format!("version: {e}")))?,
    })
}

fn message(row: &SqliteRow) -> Result<Message, StoreError> {
    let role: String = row.try_get("role").map_err(unavailable)?;
    let tool_calls: Option<String> = row.try_get("tool_calls").map_err(unavailable)?;
    Ok(Message {
        role: match role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(corrupt(format!("role `{other}`"))),
        },
        content: row.try_get("content").map_err(unavailable)?,
        tool_calls: match tool_calls {
            Some(calls) => from_json::<Vec<ToolCall>>(&calls)?,
            None => Vec::new(),
        },
        tool_call_id: row.try_get("tool_call_id").map_err(unavailable)?,
        interrupted: row.try_get("interrupted").map_err(unavailable)?,
        created_at: timestamp(
            &row.try_get::<String, _>("created_at")
                .map_err(unavailable)?,
        )?,
    })
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("stored JSON: {e}")))
}

fn timestamp(text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse(text).ok_or_else(|| corrupt(format!("time `{text}`")))
}

fn integer<T: TryInto<i64>>(value: T) -> Result<i64, StoreError> {
    value
        .try_into()
        .map_err(|_| StoreError::Unavailable("a number too large for the store".into()))
}

fn corrupt(what: String) -> StoreError {
    StoreError::Unavailable(format!("unreadable row: {what}"))
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// A file another process holds answers "database is locked".
fn in_use_or_unavailable(path: &str, error: sqlx::Error) -> StoreError {
    let text = error.to_string();
    if text.contains("locked") || text.contains("busy") {
        StoreError::Refused(format!(
            "STORE: {path} is in use by another process (one process per SQLite file; use Postgres for several)"
        ))
    } else {
        StoreError::Unavailable(format!("{path}: {text}"))
    }
}

/// Lets tests make the store fail (only with the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    use super::Write;

    /// A turn with a message of exactly this content makes its batch fail as if the disk
    /// did: nothing of the batch is committed, and the store is unhealthy until a probe
    /// commits again.
    pub const STORE_FAILS: &str = "__fault_injection: the store fails__";

    pub(super) fn fails(write: &Write) -> bool {
        match write {
            Write::Commit { messages, .. } => messages.iter().any(|m| m.content == STORE_FAILS),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Defaults, Tool};
    use crate::store::Store;

    /// A store file of its own, removed (with its WAL) when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new() -> Self {
            Self(std::env::temp_dir().join(format!("text-session-store-{}.db", Uuid::new_v4())))
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.path()));
            }
        }
    }

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
                parameters: serde_json::json!({"type": "object"}),
            }],
            metadata: serde_json::json!({"tab": 3}).as_object().unwrap().clone(),
            created_at: now,
            updated_at: now,
            version: 1,
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
        }
    }

    #[tokio::test]
    async fn a_session_and_its_commits_read_back_whole_after_the_store_is_reopened() {
        let file = TempFile::new();
        let session = row(Some("digest-a"));
        let instructions = vec![Message::text(Role::System, "be terse", Timestamp::now())];
        let first = turn("hello");
        let tool_output = Message::tool_output("call_1", "21 °C", Timestamp::now());
        {
            let store = Store::open(&format!("sqlite://{}", file.path()))
                .await
                .unwrap();
            assert!(store.is_durable());
            store.create(&session, &instructions).await.unwrap();
            store.commit(commit(&session, 1, 1, &first)).await.unwrap();
            store
                .commit(commit(&session, 3, 2, std::slice::from_ref(&tool_output)))
                .await
                .unwrap();
            store.close().await;
        }
        let store = Store::open(&format!("sqlite://{}", file.path()))
            .await
            .unwrap();
        let stored = store.load(session.id).await.unwrap().unwrap();
        assert_eq!(stored.row.version, 3);
        assert_eq!(stored.row.tools, session.tools);
        assert_eq!(stored.row.metadata, session.metadata);
        assert_eq!(stored.row.defaults, session.defaults);
        let expected: Vec<Message> = instructions
            .into_iter()
            .chain(first)
            .chain([tool_output])
            .collect();
        let texts = |m: &[Message]| {
            m.iter()
                .map(|m| {
                    (
                        m.role,
                        m.content.clone(),
                        m.tool_calls.clone(),
                        m.tool_call_id.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&stored.messages), texts(&expected));
        assert_eq!(
            stored.messages[1].created_at.to_rfc3339(),
            expected[1].created_at.to_rfc3339()
        );
    }

    #[tokio::test]
    async fn a_commit_from_a_stale_version_or_length_changes_nothing() {
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
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
        let stored = store.load(session.id).await.unwrap().unwrap();
        assert_eq!((stored.row.version, stored.messages.len()), (2, 2));
        let gone = store.commit(commit(&row(None), 0, 1, &turn("x"))).await;
        assert_eq!(
            gone,
            Err(StoreError::VersionMoved {
                expected: 1,
                found: None
            })
        );
    }

    #[tokio::test]
    async fn deleting_removes_the_session_and_its_messages() {
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let session = row(None);
        store.create(&session, &turn("x")).await.unwrap();
        assert!(store.delete(session.id).await.unwrap());
        assert!(!store.delete(session.id).await.unwrap());
        assert_eq!(store.load(session.id).await.unwrap(), None);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn a_keys_sessions_are_listed_newest_first_in_pages() {
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let mut mine = Vec::new();
        for n in 0..5 {
            let session = row(Some("mine"));
            store
                .create(&session, &turn(&format!("{n}")))
                .await
                .unwrap();
            mine.push((session.created_at.to_rfc3339(), session.id.to_string()));
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
                    .map(|(row, _)| (row.created_at.to_rfc3339(), row.id.to_string())),
            );
            match page.next {
                Some(next) => after = crate::store::parse_cursor(&next),
                None => break,
            }
        }
        mine.sort();
        mine.reverse();
        assert_eq!(seen, mine, "newest first, each once");
        assert_eq!(store.list(None, 100, None).await.unwrap().sessions.len(), 5);
    }

    #[tokio::test]
    async fn a_second_process_on_the_file_and_a_newer_schema_are_refused_with_a_clear_message() {
        let file = TempFile::new();
        let first = SqliteStore::open(file.path()).await.unwrap();
        let second = SqliteStore::open(file.path()).await.unwrap_err();
        assert!(
            second.to_string().contains("in use by another process"),
            "{second}"
        );
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&first.pool)
        .await
        .unwrap();
        first.close().await;
        let newer = SqliteStore::open(file.path()).await.unwrap_err();
        assert!(
            newer.to_string().contains("newer than this binary"),
            "{newer}"
        );
    }

    #[tokio::test]
    async fn a_url_that_is_no_store_is_refused_and_memory_keeps_nothing() {
        assert!(matches!(
            Store::open("mysql://x").await,
            Err(StoreError::Refused(_))
        ));
        let memory = Store::open("memory").await.unwrap();
        assert!(!memory.is_durable());
        let session = row(None);
        memory.create(&session, &turn("x")).await.unwrap();
        assert_eq!(memory.load(session.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn many_sessions_commit_at_once_and_each_gets_its_own_outcome() {
        let file = TempFile::new();
        let store = std::sync::Arc::new(SqliteStore::open(file.path()).await.unwrap());
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
            let stored = store.load(session.id).await.unwrap().unwrap();
            let expected = if n % 5 == 0 { (1, 0) } else { (2, 2) };
            assert_eq!((stored.row.version, stored.messages.len()), expected, "{n}");
        }
    }
}
