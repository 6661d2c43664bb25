//! The embedded store: one SQLite file, one process. WAL with `synchronous=FULL`, so a
//! commit that returned survives a crash and a power loss; the file is held in
//! exclusive locking mode, so a second process on it is refused at start. Migrations
//! are embedded (`migrations/sqlite/`) and run at open; a schema newer than this binary
//! is refused. One connection serves every call; writes go through one writer task that
//! commits whatever is waiting as one transaction (group commit: one fsync for many
//! sessions' turns).

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::rows::{
    CLAIM_KEY, COMMIT_KEY_AT, COMMIT_MESSAGES_AT, COMMIT_TURN_AT, Columns, HAND_ROWS_TO_HEIR, HEIR,
    KEEP_KEY, LOAD_MESSAGES, PRUNE_TURNS, REBASE_FORKS, REBASE_HEIR, RECORD_TURN, base_of, corrupt,
    count, creating, headers_json, integer, json, key_record, message, numbered_from, owner_column,
    plain_columns, role_name, session_row, tool_calls, turn_row, unavailable,
};
use super::{
    CommitRows, KeyRecord, SessionPage, SessionRow, StoreError, StoredSession, TurnBounds, TurnRow,
};
use crate::message::{Message, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Writes wait here for the writer task.
    writes: mpsc::Sender<(Write, oneshot::Sender<Result<u64, StoreError>>)>,
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
        /// Its own messages (a fork's shared ones left out, `Store::create`).
        messages: Vec<Message>,
    },
    Commit {
        session: Uuid,
        from_version: u64,
        version: u64,
        from: usize,
        messages: Vec<Message>,
        updated_at: Timestamp,
        keys: Vec<KeyRecord>,
        turns: Vec<TurnRow>,
        prune: Option<TurnBounds>,
    },
    RecordTurn(TurnRow, Option<TurnBounds>),
    Delete {
        id: Uuid,
    },
    KeepKey(KeyRecord),
    Touch(Vec<(Uuid, Timestamp)>),
    Expire {
        id: Uuid,
        before: Timestamp,
    },
    ForgetKeys {
        before: Timestamp,
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

    /// Stores a new session with its own first messages (in the writer's next batch).
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
            keys: commit.keys.to_vec(),
            turns: commit.turns.to_vec(),
            prune: commit.prune,
        })
        .await
        .map(|_| ())
    }

    pub async fn record_turn(
        &self,
        turn: &TurnRow,
        bounds: Option<TurnBounds>,
    ) -> Result<(), StoreError> {
        self.write(Write::RecordTurn(turn.clone(), bounds))
            .await
            .map(|_| ())
    }

    pub async fn touch(&self, sessions: &[(Uuid, Timestamp)]) -> Result<(), StoreError> {
        self.write(Write::Touch(sessions.to_vec()))
            .await
            .map(|_| ())
    }

    pub async fn expire(&self, id: Uuid, before: Timestamp) -> Result<bool, StoreError> {
        self.write(Write::Expire { id, before })
            .await
            .map(|rows| rows == 1)
    }

    pub async fn idle(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, Option<String>)>, StoreError> {
        sqlx::query("SELECT id, owner FROM sessions WHERE active_at < ? ORDER BY active_at LIMIT ?")
            .bind(before.to_rfc3339())
            .bind(integer(limit)?)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| Ok((row.id("id")?, row.maybe_text("owner")?)))
            .collect()
    }

    pub async fn count_by_owner(&self) -> Result<Vec<(Option<String>, usize)>, StoreError> {
        sqlx::query("SELECT owner, count(*) AS sessions FROM sessions GROUP BY owner")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| Ok((row.maybe_text("owner")?, count(row.integer("sessions")?)?)))
            .collect()
    }

    pub async fn keep_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.write(Write::KeepKey(record.clone())).await.map(|_| ())
    }

    pub async fn forget_keys(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.write(Write::ForgetKeys { before }).await
    }

    pub async fn key(
        &self,
        owner: Option<&str>,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        sqlx::query("SELECT * FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at > ?")
            .bind(owner_column(owner))
            .bind(key)
            .bind(since.to_rfc3339())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .as_ref()
            .map(key_record)
            .transpose()
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
        let messages = sqlx::query(LOAD_MESSAGES)
            .bind(&key)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(message)
            .collect::<Result<_, _>>()?;
        let turns = sqlx::query("SELECT * FROM turns WHERE session_id = ? ORDER BY created_at, id")
            .bind(&key)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(turn_row)
            .collect::<Result<_, _>>()?;
        Ok(Some(StoredSession {
            row,
            messages,
            turns,
        }))
    }

    /// Removes a session and its history; whether it was stored.
    pub async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(Write::Delete { id }).await.map(|rows| rows == 1)
    }

    /// Hands a write to the writer task and waits until its batch is committed.
    async fn write(&self, write: Write) -> Result<u64, StoreError> {
        let (done, answer) = oneshot::channel();
        self.writes
            .send((write, done))
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer has stopped".into()))?
    }

    /// Whether the last write committed (after a failure, a probe tries every second)
    /// and the writer still runs.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.writer.is_finished()
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
            .map(|row| Ok((session_row(row)?, count(row.integer("messages")?)?)))
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
    mut waiting: mpsc::Receiver<(Write, oneshot::Sender<Result<u64, StoreError>>)>,
    healthy: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    #[cfg(feature = "fault-injection")]
    let mut outage = fault_injection::Outage::default();
    loop {
        if !healthy.load(Ordering::Acquire) {
            match tokio::time::timeout(PROBE_EVERY, waiting.recv_many(&mut batch, MAX_BATCH)).await
            {
                Err(_) => {
                    let recovered = probe(&pool).await;
                    #[cfg(feature = "fault-injection")]
                    let recovered = recovered && !outage.is_on();
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
        #[cfg(feature = "fault-injection")]
        if outage.fails(batch.iter().map(|(write, _)| write)) {
            healthy.store(false, Ordering::Release);
            for (_, done) in batch.drain(..) {
                let _ = done.send(Err(StoreError::Unavailable(
                    "fault injection: the store fails".into(),
                )));
            }
            continue;
        }
        let writes: Vec<&Write> = batch.iter().map(|(write, _)| write).collect();
        let (outcomes, committed) = apply_batch(&pool, &writes).await;
        drop(writes);
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

/// The outcome of each write, and whether the store committed. The writes go in one
/// transaction, without a savepoint each: a write's first statement decides whether it
/// applies (a session at another version, or a fork of a session deleted meanwhile, is
/// refused before anything is written), so a refused write has changed nothing. Should a write fail after it changed something (a
/// broken disk, a bug), the whole transaction is rolled back and each write runs again
/// alone, so none of them is half kept.
async fn apply_batch(pool: &SqlitePool, writes: &[&Write]) -> (Vec<Result<u64, StoreError>>, bool) {
    let failed_all = |error: StoreError| (vec![Err(error); writes.len()], false);
    let mut tx = match begin(pool).await {
        Ok(tx) => tx,
        Err(error) => return failed_all(error),
    };
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        match apply(&mut tx, write).await {
            outcome @ (Ok(_) | Err(StoreError::VersionMoved { .. } | StoreError::Gone(_))) => {
                outcomes.push(outcome)
            }
            Err(_) => {
                rollback(&mut tx).await;
                drop(tx);
                return apply_one_by_one(pool, writes).await;
            }
        }
    }
    match commit(&mut tx).await {
        Ok(()) => (outcomes, true),
        Err(error) => failed_all(error),
    }
}

/// Plain BEGIN/COMMIT/ROLLBACK rather than sqlx's transactions: when a COMMIT fails
/// with SQLITE_FULL or SQLITE_IOERR, SQLite rolls the transaction back by itself, and
/// sqlx's count of open transactions does not follow (its next `begin` would open a
/// savepoint inside a transaction that never commits).
async fn begin(pool: &SqlitePool) -> Result<sqlx::pool::PoolConnection<Sqlite>, StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(conn)
}

async fn commit(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    match sqlx::query("COMMIT").execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(error) => {
            rollback(conn).await;
            Err(unavailable(error))
        }
    }
}

/// Ends whatever is left of the transaction (nothing, if SQLite rolled it back).
async fn rollback(conn: &mut sqlx::SqliteConnection) {
    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
}

/// Each write in a transaction of its own: the slow way, after one broke a batch.
async fn apply_one_by_one(
    pool: &SqlitePool,
    writes: &[&Write],
) -> (Vec<Result<u64, StoreError>>, bool) {
    let mut committed = true;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        let mut tx = match begin(pool).await {
            Ok(tx) => tx,
            Err(error) => {
                committed = false;
                outcomes.push(Err(error));
                continue;
            }
        };
        let outcome = match apply(&mut tx, write).await {
            Ok(done) => commit(&mut tx)
                .await
                .map(|()| done)
                .inspect_err(|_| committed = false),
            Err(error) => {
                rollback(&mut tx).await;
                drop(tx);
                // The write itself may be at fault (a constraint), or the store: a
                // probe tells which.
                if matches!(error, StoreError::Unavailable(_)) && !probe(pool).await {
                    committed = false;
                }
                Err(error)
            }
        };
        outcomes.push(outcome);
    }
    (outcomes, committed)
}

/// One write, inside the batch's transaction.
async fn apply(tx: &mut sqlx::SqliteConnection, write: &Write) -> Result<u64, StoreError> {
    match write {
        Write::Create { row, messages } => {
            let (base, own_from) = base_of(row);
            sqlx::query(
                "INSERT INTO sessions (id, owner, provider, model, defaults, tools, metadata,
                                       created_at, updated_at, version, messages, active_at,
                                       base_id, base_len, forked_from)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            .bind(integer(own_from + messages.len())?)
            .bind(row.updated_at.to_rfc3339())
            .bind(base.map(|id| id.to_string()))
            .bind(base.map(|_| integer(own_from)).transpose()?)
            .bind(row.forked_from.as_ref().map(json).transpose()?)
            .execute(&mut *tx)
            .await
            .map_err(creating(row))?;
            insert_messages(tx, row.id, own_from, messages).await?;
            Ok(1)
        }
        Write::Commit {
            session,
            from_version,
            version,
            from,
            messages,
            updated_at,
            keys,
            turns,
            prune,
        } => {
            // One round trip for the whole commit (up to `MESSAGES_PER_INSERT` messages,
            // one key and one turn record; more, rarely, follow in their own statements).
            let first = messages.len().min(MESSAGES_PER_INSERT);
            let (claim, turn) = (keys.first(), turns.first());
            let sql = commit_sql(first, claim.is_some(), turn.is_some(), prune.is_some());
            let mut query = sqlx::query(&sql)
                .bind(session.to_string())
                .bind(prune.map(|b| integer(b.records)).transpose()?)
                .bind(prune.map(|b| integer(b.failed)).transpose()?)
                .bind(integer(*from_version)?)
                .bind(integer(*from)?)
                .bind(integer(*version)?)
                .bind(updated_at.to_rfc3339())
                .bind(integer(messages.len())?)
                .bind(claim.map(|k| owner_column(k.owner.as_deref())))
                .bind(claim.map(|k| k.key.as_str()))
                .bind(claim.map(|k| k.route.as_str()))
                .bind(claim.map(|k| &k.body_digest[..]))
                .bind(claim.map(|k| k.created_at.to_rfc3339()))
                .bind(claim.and_then(|k| k.turn.as_ref()).map(json).transpose()?)
                .bind(turn.map(|t| t.session.to_string()))
                .bind(turn.map(|t| t.id.to_string()))
                .bind(turn.map(|t| t.created_at.to_rfc3339()))
                .bind(turn.map(|t| t.status.as_str()))
                .bind(turn.map(|t| t.record.as_str()));
            for (seq, message) in (*from..).zip(&messages[..first]) {
                query = bind_message(query, seq, message)?;
            }
            match query.execute(&mut *tx).await {
                Ok(_) => {}
                Err(error) if is_guard(&error) => {
                    let found: Option<i64> =
                        sqlx::query_scalar("SELECT version FROM sessions WHERE id = ?")
                            .bind(session.to_string())
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(unavailable)?;
                    return Err(StoreError::VersionMoved {
                        expected: *from_version,
                        found: found.and_then(|v| u64::try_from(v).ok()),
                    });
                }
                Err(error) => return Err(unavailable(error)),
            }
            insert_messages(tx, *session, from + first, &messages[first..]).await?;
            for key in keys.iter().skip(1) {
                claim_key(tx, key).await?;
            }
            for turn in turns.iter().skip(1) {
                record_turn(tx, turn).await?;
            }
            Ok(1)
        }
        Write::RecordTurn(turn, bounds) => {
            record_turn(tx, turn).await?;
            if let Some(bounds) = bounds {
                prune_turns(tx, turn.session, *bounds).await?;
            }
            Ok(1)
        }
        Write::Delete { id } => delete_session(tx, *id).await,
        Write::KeepKey(key) => {
            #[cfg(feature = "fault-injection")]
            if key.key == fault_injection::ANSWER_NOT_KEPT {
                return Err(StoreError::Unavailable(
                    "fault injection: the answer is not kept".into(),
                ));
            }
            let answer = key.answer.as_ref();
            let history = answer.and_then(|a| a.history.as_ref());
            sqlx::query(KEEP_KEY)
                .bind(owner_column(key.owner.as_deref()))
                .bind(&key.key)
                .bind(&key.route)
                .bind(&key.body_digest[..])
                .bind(key.created_at.to_rfc3339())
                .bind(key.turn.as_ref().map(json).transpose()?)
                .bind(answer.map(|a| i64::from(a.status)))
                .bind(answer.map(|a| headers_json(&a.headers)).transpose()?)
                .bind(answer.map(|a| &a.body[..]))
                .bind(history.map(|(session, _, _)| session.to_string()))
                .bind(history.map(|(_, len, _)| integer(*len)).transpose()?)
                .bind(history.map(|(_, _, after)| &after[..]))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            Ok(1)
        }
        Write::Touch(sessions) => {
            for (id, at) in sessions {
                sqlx::query("UPDATE sessions SET active_at = max(active_at, ?) WHERE id = ?")
                    .bind(at.to_rfc3339())
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            Ok(1)
        }
        Write::Expire { id, before } => {
            let idle = sqlx::query("SELECT 1 FROM sessions WHERE id = ? AND active_at < ?")
                .bind(id.to_string())
                .bind(before.to_rfc3339())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            match idle {
                Some(_) => delete_session(tx, *id).await,
                None => Ok(0),
            }
        }
        Write::ForgetKeys { before } => {
            let forgotten = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
                .bind(before.to_rfc3339())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            Ok(forgotten.rows_affected())
        }
    }
}

/// Deletes a session (and its rows, records and keys' turns), first handing the rows its
/// forks share to one of them (`HEIR`); how many sessions were deleted.
async fn delete_session(tx: &mut sqlx::SqliteConnection, id: Uuid) -> Result<u64, StoreError> {
    let key = id.to_string();
    let heir: Option<(String, i64)> = sqlx::query_as(HEIR)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
    if let Some((heir, shared)) = heir {
        let handed = [
            sqlx::query(HAND_ROWS_TO_HEIR)
                .bind(&heir)
                .bind(&key)
                .bind(shared),
            sqlx::query(REBASE_FORKS).bind(&heir).bind(&key),
            sqlx::query(REBASE_HEIR).bind(&key).bind(shared).bind(&heir),
        ];
        for statement in handed {
            statement.execute(&mut *tx).await.map_err(unavailable)?;
        }
    }
    let deleted = sqlx::query("DELETE FROM sessions WHERE id = ?")
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(deleted.rows_affected())
}

async fn record_turn(tx: &mut sqlx::SqliteConnection, turn: &TurnRow) -> Result<(), StoreError> {
    sqlx::query(RECORD_TURN)
        .bind(turn.session.to_string())
        .bind(turn.id.to_string())
        .bind(turn.created_at.to_rfc3339())
        .bind(&turn.status)
        .bind(&turn.record)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Claims a key for a commit (`CLAIM_KEY`).
async fn claim_key(tx: &mut sqlx::SqliteConnection, key: &KeyRecord) -> Result<(), StoreError> {
    sqlx::query(CLAIM_KEY)
        .bind(owner_column(key.owner.as_deref()))
        .bind(key.key.as_str())
        .bind(key.route.as_str())
        .bind(&key.body_digest[..])
        .bind(key.created_at.to_rfc3339())
        .bind(key.turn.as_ref().map(json).transpose()?)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Drops a session's ended turn records past `bounds` (`PRUNE_TURNS`).
async fn prune_turns(
    tx: &mut sqlx::SqliteConnection,
    session: Uuid,
    bounds: TurnBounds,
) -> Result<(), StoreError> {
    sqlx::query(PRUNE_TURNS)
        .bind(session.to_string())
        .bind(integer(bounds.records)?)
        .bind(integer(bounds.failed)?)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A commit's move of its session to the new version (and its activity to the commit's
/// time), only from the version and length it started from. Its parameters are those of
/// a commit (see `COMMIT_KEY_AT`). Unlike Postgres's (`postgres.rs`), it moves the
/// activity every time: SQLite rewrites an index entry whenever its column is set, to
/// the same value or not, and a second statement to move it less often costs what it
/// saves (BENCHMARKS.md, "Tried and not kept").
const MOVE_VERSION: &str = "
    UPDATE sessions SET version = $6, updated_at = $7, active_at = $7,
                        messages = messages + $8
    WHERE id = $1 AND version = $4 AND messages = $5";

/// Rows one `INSERT` of messages takes at most (`PARAMETERS_PER_MESSAGE` each, far below
/// SQLite's bound on parameters).
const MESSAGES_PER_INSERT: usize = 256;

/// Inserts messages of a session from `from` on, as few statements as it takes.
async fn insert_messages(
    tx: &mut sqlx::SqliteConnection,
    session: Uuid,
    from: usize,
    messages: &[Message],
) -> Result<(), StoreError> {
    let id = session.to_string();
    for (chunk, rows) in messages.chunks(MESSAGES_PER_INSERT).enumerate() {
        let mut sql = String::new();
        push_insert_messages(&mut sql, rows.len(), 2);
        let mut insert = sqlx::query(&sql).bind(id.as_str());
        let first = from + chunk * MESSAGES_PER_INSERT;
        for (seq, message) in (first..).zip(rows) {
            insert = bind_message(insert, seq, message)?;
        }
        insert.execute(&mut *tx).await.map_err(unavailable)?;
    }
    Ok(())
}

/// Parameters each message takes in `push_insert_messages` (the session is `$1`).
const PARAMETERS_PER_MESSAGE: usize = 7;

/// Appends `INSERT INTO messages … VALUES` for `rows` messages of session `$1`, their
/// parameters from `$first` on.
fn push_insert_messages(sql: &mut String, rows: usize, first: usize) {
    use std::fmt::Write as _;
    sql.push_str(
        "INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id,
                               interrupted, created_at) VALUES ",
    );
    for row in 0..rows {
        let p = first + row * PARAMETERS_PER_MESSAGE;
        let _ = write!(
            sql,
            "{}($1, ${p}, ${}, ${}, ${}, ${}, ${}, ${})",
            if row > 0 { ", " } else { "" },
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6
        );
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds a message's parameters (`PARAMETERS_PER_MESSAGE` of them).
fn bind_message<'q>(
    query: Query<'q>,
    seq: usize,
    message: &'q Message,
) -> Result<Query<'q>, StoreError> {
    Ok(query
        .bind(integer(seq)?)
        .bind(role_name(message.role))
        .bind(&*message.content)
        .bind(tool_calls(message)?)
        .bind(message.tool_call_id.as_deref())
        .bind(message.interrupted)
        .bind(message.created_at.to_rfc3339()))
}

/// A commit's statements (see `COMMIT_KEY_AT`): the guard, which stops a commit to a
/// session that moved before anything is written (`commit_guard`), the move of its
/// version, `rows` messages, and the key, the pruning and the turn record it has.
///
/// They go to SQLite as one query text, so one hand-off to the connection's thread per
/// commit rather than one per statement (measured: 60 % more commits per second in
/// `bench/load.rs`). sqlx 0.8 runs each statement of a text in turn, binding `$n` to
/// the n-th argument, and stops at the first error; that is its documented behaviour
/// for SQLite but marked for removal (launchbadge/sqlx#3108): the store conformance
/// tests (`tests/store.rs`) fail at once on an sqlx that no longer does it.
fn commit_sql(rows: usize, key: bool, turn: bool, prune: bool) -> String {
    static CLAIM_KEY_IN_COMMIT: LazyLock<String> =
        LazyLock::new(|| numbered_from(CLAIM_KEY, COMMIT_KEY_AT));
    static RECORD_TURN_IN_COMMIT: LazyLock<String> =
        LazyLock::new(|| numbered_from(RECORD_TURN, COMMIT_TURN_AT));
    let mut sql = String::with_capacity(1024 + rows * 48);
    sql.push_str(
        "INSERT INTO commit_guard (refused) SELECT 'version moved' WHERE NOT EXISTS (
             SELECT 1 FROM sessions WHERE id = $1 AND version = $4 AND messages = $5);\n",
    );
    sql.push_str(MOVE_VERSION);
    sql.push_str(";\n");
    if rows > 0 {
        push_insert_messages(&mut sql, rows, COMMIT_MESSAGES_AT);
        sql.push_str(";\n");
    }
    // The pruning before the record: it sees the records as they were before this
    // commit, as in Postgres, where the commit is one statement.
    for (part, text) in [
        (key, CLAIM_KEY_IN_COMMIT.as_str()),
        (prune, PRUNE_TURNS),
        (turn, RECORD_TURN_IN_COMMIT.as_str()),
    ] {
        if part {
            sql.push_str(text);
            sql.push_str(";\n");
        }
    }
    sql
}

/// Whether a commit's statements stopped at their guard: the session moved.
fn is_guard(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.message().contains("version_moved"))
}

impl Columns for SqliteRow {
    plain_columns!();

    /// Ids are stored as their hyphenated text.
    fn id(&self, column: &str) -> Result<Uuid, StoreError> {
        let text = self.text(column)?;
        Uuid::parse_str(&text).map_err(|e| corrupt(format!("id `{text}`: {e}")))
    }

    fn maybe_id(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        self.maybe_text(column)?
            .map(|text| Uuid::parse_str(&text).map_err(|e| corrupt(format!("id `{text}`: {e}"))))
            .transpose()
    }

    /// Times are stored as RFC 3339 text, to the millisecond (so text order is time
    /// order).
    fn time(&self, column: &str) -> Result<Timestamp, StoreError> {
        let text = self.text(column)?;
        Timestamp::parse(&text).ok_or_else(|| corrupt(format!("time `{text}`")))
    }
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
    use std::time::{Duration, Instant};

    use super::Write;

    /// A turn with a message of exactly this content makes the store fail as if the
    /// disk did, for a second: its batch and every write in that second fail, nothing of
    /// them is committed, and the store is unhealthy until a probe commits after it.
    pub const STORE_FAILS: &str = "__fault_injection: the store fails__";

    /// How long the outage `STORE_FAILS` starts lasts.
    const OUTAGE: Duration = Duration::from_secs(1);

    /// An `Idempotency-Key` whose answer is never kept (as if the process died between
    /// the turn's commit and the answer's): only the commit's record of it is stored.
    pub const ANSWER_NOT_KEPT: &str = "__fault_injection: the answer is not kept__";

    /// The outage a store's writer is in, if any.
    #[derive(Debug, Default)]
    pub(super) struct Outage {
        until: Option<Instant>,
    }

    impl Outage {
        /// Whether this batch fails: it starts an outage, or comes during one.
        pub(super) fn fails<'a>(&mut self, mut batch: impl Iterator<Item = &'a Write>) -> bool {
            let starts = batch.any(|write| match write {
                Write::Commit { messages, .. } => messages.iter().any(|m| m.content == STORE_FAILS),
                _ => false,
            });
            if starts {
                self.until = Some(Instant::now() + OUTAGE);
            }
            self.is_on()
        }

        pub(super) fn is_on(&self) -> bool {
            self.until.is_some_and(|until| Instant::now() < until)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn session(id: Uuid) -> SessionRow {
        let now = Timestamp::now();
        SessionRow {
            id,
            owner: None,
            provider: "echo".into(),
            model: "echo-1".into(),
            defaults: Default::default(),
            tools: Vec::new(),
            metadata: Default::default(),
            created_at: now,
            updated_at: now,
            version: 1,
            forked_from: None,
        }
    }

    #[tokio::test]
    async fn a_write_that_breaks_part_way_leaves_the_rest_of_its_batch_committed_and_itself_not_at_all()
     {
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let hello = vec![crate::message::Message::text(
            crate::message::Role::User,
            "hello",
            Timestamp::now(),
        )];
        let writes = [
            Write::Create {
                row: session(a),
                messages: hello.clone(),
            },
            // The same id again: its INSERT fails (a write that breaks).
            Write::Create {
                row: session(a),
                messages: hello.clone(),
            },
            // A commit from a version the session is not at: refused, nothing written.
            Write::Commit {
                session: a,
                from_version: 7,
                version: 8,
                from: 1,
                messages: hello.clone(),
                updated_at: Timestamp::now(),
                keys: Vec::new(),
                turns: Vec::new(),
                prune: None,
            },
            Write::Create {
                row: session(b),
                messages: hello,
            },
        ];
        let writes: Vec<&Write> = writes.iter().collect();
        let (outcomes, committed) = apply_batch(&store.pool, &writes).await;
        assert!(committed);
        assert!(outcomes[0].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(StoreError::Unavailable(_))));
        assert!(matches!(outcomes[2], Err(StoreError::VersionMoved { .. })));
        for id in [a, b] {
            let stored = store.load(id).await.unwrap().unwrap();
            assert_eq!((stored.row.version, stored.messages.len()), (1, 1));
        }
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
}
