//! The shared store: PostgreSQL, for one process or several. Every connection commits
//! with `synchronous_commit=on`, so a commit that returned survives a crash of the
//! service and of the database host; Postgres groups the WAL flushes of concurrent
//! commits by itself, so each write is simply its own transaction on a pool. Migrations
//! are embedded (`migrations/postgres/`) and run at open under Postgres's migration
//! lock; a schema newer than this binary is refused.
//!
//! A turn's commit is one statement (`COMMIT`): the version moves and everything the
//! commit writes is written together, or nothing is.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::rows::{
    CLAIM_KEY, Columns, HAND_ROWS_TO_HEIR, HEIR, KEEP_KEY, LOAD_MESSAGES, LOCK_FOR_DELETE,
    PRUNE_TURNS, REBASE_FORKS, REBASE_HEIR, RECORD_TURN, base_of, claim_key_conflict, count,
    headers_json, integer, json, key_record, message, numbered, owner_column, record_turn_conflict,
    role_name, session_row, tool_calls, turn_row,
};
use super::{
    CommitRows, Instance, KeyRecord, Lease, SessionPage, SessionRow, StoreError, StoredSession,
    TurnBounds, TurnRow,
};
use crate::message::{Message, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A commit goes to the store as one statement, its parameters numbered: `$1` the
/// session, `$2`/`$3` the bounds its turn records are pruned to (as `PRUNE_TURNS`; NULL
/// when it does not prune), `$4` the version and `$5` the number of messages it started
/// from, `$6` its version, `$7` its time, `$8` how many messages it adds; then the key it
/// claims (`CLAIM_KEY`, from `COMMIT_KEY_AT`), its turn's record (`RECORD_TURN`, from
/// `COMMIT_TURN_AT`), and its messages (from `COMMIT_MESSAGES_AT`). A part a commit has
/// not is bound as NULLs.
const COMMIT_KEY_AT: usize = 9;
const COMMIT_TURN_AT: usize = COMMIT_KEY_AT + 6;
const COMMIT_MESSAGES_AT: usize = COMMIT_TURN_AT + 5;

static KEEP_KEY_NUMBERED: LazyLock<String> = LazyLock::new(|| numbered(KEEP_KEY));
static RECORD_TURN_NUMBERED: LazyLock<String> = LazyLock::new(|| numbered(RECORD_TURN));

/// A commit's move of its session to the new version, only from the version and length
/// it started from (parameters as `COMMIT_KEY_AT` says). Its activity (`active_at`) moves
/// to the commit's time only when it is more than a second older: an update that leaves
/// every indexed column as it was is a heap-only (HOT) update, which writes no index
/// entry, and `active_at` is the one indexed column a commit would change. A session that
/// commits more than once a second so moves it once a second, and the store may see its
/// last commit up to a second early when it looks for idle sessions (`SESSION_TTL_SECS`
/// is counted in hours by default, and a live session expires by its own activity).
/// Measured on 1,000 sessions under load, each committing once or twice a second: 18 to
/// 48 % of the commits HOT instead of none, and WAL written per commit −7 % (−9 to −14 %
/// with migration `0007`, which drops the turn records' second index).
const MOVE_VERSION: &str = "
    UPDATE sessions SET version = $6, updated_at = $7,
                        active_at = CASE WHEN active_at < $7::timestamptz - interval '1 second'
                                         THEN $7::timestamptz ELSE active_at END,
                        messages = messages + $8
    WHERE id = $1 AND version = $4 AND messages = $5";

/// A turn's commit, as one statement (parameters as `COMMIT_KEY_AT` says, then the lease
/// epoch it is fenced by): the session moves to its new version only from the one it
/// started from, and only while the committing process holds its lease (the lease's row
/// is locked for the check: a lease taken meanwhile makes the check see the new epoch,
/// and a lease being taken waits for the commit to end); the rest (its
/// messages, the key it claims, its turn's record, the pruning of older records) is
/// written only if it moved. The pruning sees the records as they were before this
/// commit, so a session keeps at most one record past its bounds until the next one.
static COMMIT: LazyLock<String> = LazyLock::new(|| {
    let key = COMMIT_KEY_AT;
    let turn = COMMIT_TURN_AT;
    format!(
        "WITH moved AS (
             {move_version}
               AND (${epoch}::bigint IS NULL
                    OR EXISTS (SELECT 1 FROM leases WHERE session_id = $1 AND epoch = ${epoch}
                               FOR SHARE))
             RETURNING id),
         added AS (
             INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id,
                                   interrupted, created_at)
             SELECT moved.id, m.* FROM moved, {arrays} AS m),
         pruned AS ({prune} AND $2::bigint IS NOT NULL AND EXISTS (SELECT 1 FROM moved)),
         claimed AS (
             INSERT INTO idempotency_keys (owner, key, route, body_digest, created_at, turn)
             SELECT ${key}::text, ${}::text, ${}::text, ${}::bytea, ${}::timestamptz, ${}::text
             FROM moved WHERE ${}::text IS NOT NULL
             {claim_conflict}),
         recorded AS (
             INSERT INTO turns (session_id, id, created_at, status, record)
             SELECT ${turn}::uuid, ${}::uuid, ${}::timestamptz, ${}::text, ${}::text
             FROM moved WHERE ${}::uuid IS NOT NULL
             {record_conflict})
         SELECT count(*) FROM moved",
        key + 1,
        key + 2,
        key + 3,
        key + 4,
        key + 5,
        key + 1,
        turn + 1,
        turn + 2,
        turn + 3,
        turn + 4,
        turn + 1,
        move_version = MOVE_VERSION,
        arrays = message_arrays(COMMIT_MESSAGES_AT),
        epoch = COMMIT_MESSAGES_AT + MESSAGE_ARRAYS,
        prune = PRUNE_TURNS,
        claim_conflict = claim_key_conflict!(),
        record_conflict = record_turn_conflict!(),
    )
});

/// Connections one process keeps to the database.
const MAX_CONNECTIONS: u32 = 16;

/// How long a call waits for a connection before it fails (503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the store is tried, on a connection of its own.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A store in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// Whether the last call or probe reached the database.
    healthy: Arc<AtomicBool>,
    /// Tries the database every second (`probe`).
    prober: JoinHandle<()>,
    /// This process, as the leases name it.
    instance: Instance,
}

impl PostgresStore {
    /// Connects to the database `url` names and brings its schema up to date, as a
    /// process alone (`Instance::alone`).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_as(url, Instance::alone()).await
    }

    /// As `open`, as `instance` among the processes sharing the database.
    pub async fn open_as(url: &str, instance: Instance) -> Result<Self, StoreError> {
        let shown = without_password(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Refused(format!("STORE: {shown}: {e}")))?
            .options([("synchronous_commit", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Refused(format!("STORE: cannot reach {shown}: {e}")))?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Refused(format!(
                "STORE: the schema of {shown} is at migration {version}, newer than this binary knows; run a newer binary"
            )),
            other => StoreError::Refused(format!("STORE: migrating {shown}: {other}")),
        })?;
        let healthy = Arc::new(AtomicBool::new(true));
        let prober = tokio::spawn(probe(options, healthy.clone()));
        Ok(Self {
            pool,
            healthy,
            prober,
            instance,
        })
    }

    /// Whether the last call or probe reached the database (a probe tries every second).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub async fn close(self) {
        self.prober.abort();
        self.pool.close().await;
    }

    /// Notes whether a call reached the database, and passes its outcome on.
    fn noted<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        match &outcome {
            Err(StoreError::Unavailable(error)) => {
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(%error, "the store failed; writes get 503 until it recovers");
                }
            }
            _ => self.healthy.store(true, Ordering::Release),
        }
        outcome
    }

    /// Stores a new session with its first messages, and its lease for this process
    /// (epoch 1, which it returns).
    pub async fn create(&self, row: &SessionRow, messages: &[Message]) -> Result<u64, StoreError> {
        let outcome = async {
            let (base, own_from) = base_of(row);
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            sqlx::query(
                "INSERT INTO sessions (id, owner, provider, model, defaults, tools, metadata,
                                       created_at, updated_at, version, messages, active_at,
                                       base_id, base_len, forked_from)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9, $12, $13, $14)",
            )
            .bind(row.id)
            .bind(&row.owner)
            .bind(&row.provider)
            .bind(&row.model)
            .bind(json(&row.defaults)?)
            .bind(json(&row.tools)?)
            .bind(json(&row.metadata)?)
            .bind(row.created_at.as_datetime())
            .bind(row.updated_at.as_datetime())
            .bind(integer(row.version)?)
            .bind(integer(own_from + messages.len())?)
            .bind(base)
            .bind(base.map(|_| integer(own_from)).transpose()?)
            .bind(row.forked_from.as_ref().map(json).transpose()?)
            .execute(&mut *tx)
            .await
            .map_err(creating(row))?;
            insert_messages(&mut tx, row.id, own_from, messages).await?;
            sqlx::query(
                "INSERT INTO leases (session_id, instance, addr, epoch, expires_at)
                 VALUES ($1, $2, $3, 1, now() + $4 * interval '1 millisecond')",
            )
            .bind(row.id)
            .bind(self.instance.id)
            .bind(&self.instance.addr)
            .bind(lease_millis(&self.instance))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable).map(|()| 1)
        }
        .await;
        self.noted(outcome)
    }

    /// Appends a turn's messages if the session is still where the commit started: one
    /// statement (`COMMIT`), one round trip, its own transaction. A commit with more
    /// than one key or turn record (a joined turn) writes the rest in the same
    /// transaction, after it.
    pub async fn commit(&self, commit: CommitRows<'_>) -> Result<(), StoreError> {
        let outcome = async {
            let (claim, turn) = (commit.keys.first(), commit.turns.first());
            let more = commit.keys.len() > 1 || commit.turns.len() > 1;
            let mut tx = if more {
                Some(self.pool.begin().await.map_err(unavailable)?)
            } else {
                None
            };
            let query = sqlx::query(&COMMIT)
                .bind(commit.session)
                .bind(commit.prune.map(|b| integer(b.records)).transpose()?)
                .bind(commit.prune.map(|b| integer(b.failed)).transpose()?)
                .bind(integer(commit.from_version)?)
                .bind(integer(commit.from)?)
                .bind(integer(commit.version)?)
                .bind(commit.updated_at.as_datetime())
                .bind(integer(commit.messages.len())?)
                .bind(claim.map(|k| owner_column(k.owner.as_deref())))
                .bind(claim.map(|k| k.key.as_str()))
                .bind(claim.map(|k| k.route.as_str()))
                .bind(claim.map(|k| &k.body_digest[..]))
                .bind(claim.map(|k| k.created_at.as_datetime()))
                .bind(claim.and_then(|k| k.turn.as_ref()).map(json).transpose()?)
                .bind(turn.map(|t| t.session))
                .bind(turn.map(|t| t.id))
                .bind(turn.map(|t| t.created_at.as_datetime()))
                .bind(turn.map(|t| t.status.as_str()))
                .bind(turn.map(|t| t.record.as_str()));
            let query = bind_messages(query, commit.from, commit.messages)?
                .bind(commit.epoch.map(integer).transpose()?);
            let moved: i64 = match tx.as_mut() {
                Some(tx) => query.fetch_one(&mut **tx).await,
                None => query.fetch_one(&self.pool).await,
            }
            .and_then(|row| row.try_get(0))
            .map_err(unavailable)?;
            if moved == 1 {
                if let Some(mut tx) = tx {
                    for key in commit.keys.iter().skip(1) {
                        claim_key(&mut tx, key).await?;
                    }
                    for turn in commit.turns.iter().skip(1) {
                        record_turn(&mut tx, turn).await?;
                    }
                    tx.commit().await.map_err(unavailable)?;
                }
                return Ok(());
            }
            drop(tx);
            // Refused: by the fence, or by the version.
            let found: Option<(i64, Option<i64>)> = sqlx::query_as(
                "SELECT s.version, l.epoch FROM sessions s
                 LEFT JOIN leases l ON l.session_id = s.id WHERE s.id = $1",
            )
            .bind(commit.session)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
            let (version, epoch) = found.unzip();
            let epoch = epoch.flatten().and_then(|e| u64::try_from(e).ok());
            match commit.epoch {
                Some(held) if version.is_some() && epoch != Some(held) => {
                    Err(StoreError::Fenced { held, found: epoch })
                }
                _ => Err(StoreError::VersionMoved {
                    expected: commit.from_version,
                    found: version.and_then(|v| u64::try_from(v).ok()),
                }),
            }
        }
        .await;
        self.noted(outcome)
    }

    /// Takes the session's lease unless another live process holds it. Its epoch moves
    /// on when it changes hands; this process taking it again keeps it (two requests
    /// that load a session at once here hold it by one epoch, and a copy this process
    /// let go cannot commit anyway, its version being behind). A lease held by a process
    /// at this one's address is taken at once: that process is gone, since this one
    /// listens there now. A process without an address says it is alone on the
    /// database, and takes every lease at once (one left by a process that crashed
    /// included); should another process write too, the fence still keeps either from
    /// committing over the other.
    pub async fn take_lease(&self, id: Uuid) -> Result<Option<Lease>, StoreError> {
        let outcome = async {
            // One round trip: the lease taken, or who holds it.
            let taken: Result<(Option<i64>, Option<Uuid>, Option<String>), _> = sqlx::query_as(
                "WITH before AS (SELECT instance, addr FROM leases WHERE session_id = $1),
                 taken AS (
                     INSERT INTO leases (session_id, instance, addr, epoch, expires_at)
                     VALUES ($1, $2, $3, 1, now() + $4 * interval '1 millisecond')
                     ON CONFLICT (session_id) DO UPDATE SET
                         instance = excluded.instance, addr = excluded.addr,
                         epoch = leases.epoch
                                 + CASE WHEN leases.instance = excluded.instance THEN 0 ELSE 1 END,
                         expires_at = excluded.expires_at
                     WHERE leases.instance = excluded.instance OR leases.expires_at <= now()
                        OR excluded.addr = '' OR leases.addr = excluded.addr
                     RETURNING epoch)
                 SELECT (SELECT epoch FROM taken), (SELECT instance FROM before),
                        (SELECT addr FROM before)",
            )
            .bind(id)
            .bind(self.instance.id)
            .bind(&self.instance.addr)
            .bind(lease_millis(&self.instance))
            .fetch_one(&self.pool)
            .await;
            match taken {
                Ok((Some(epoch), before, _)) => Ok(Some(Lease::Held {
                    epoch: count(epoch)?,
                    // From a process that neither is this one nor handed it back.
                    taken_over: before
                        .is_some_and(|before| before != self.instance.id && !before.is_nil()),
                })),
                Ok((None, _, addr)) => Ok(addr.map(|addr| Lease::Elsewhere { addr })),
                // No such session (the lease refers to it).
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(None),
                Err(error) => Err(unavailable(error)),
            }
        }
        .await;
        self.noted(outcome)
    }

    pub fn instance_addr(&self) -> &str {
        &self.instance.addr
    }

    /// Extends every lease this process holds by its lease time; the sessions held.
    pub async fn renew_leases(&self) -> Result<Vec<Uuid>, StoreError> {
        let outcome = sqlx::query_scalar(
            "UPDATE leases SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE instance = $1 RETURNING session_id",
        )
        .bind(self.instance.id)
        .bind(lease_millis(&self.instance))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable);
        self.noted(outcome)
    }

    /// Lets this process's leases of `sessions` (all with `None`) lapse now, held by no
    /// process (the nil id), so that no renewal extends them again.
    pub async fn release_leases(&self, sessions: Option<&[Uuid]>) -> Result<(), StoreError> {
        let outcome = sqlx::query(
            "UPDATE leases SET instance = $3, addr = '', expires_at = now()
             WHERE instance = $1 AND ($2::uuid[] IS NULL OR session_id = ANY($2))",
        )
        .bind(self.instance.id)
        .bind(sessions)
        .bind(Uuid::nil())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable);
        self.noted(outcome)
    }

    pub async fn load(&self, id: Uuid) -> Result<Option<StoredSession>, StoreError> {
        let outcome = async {
            let Some(row) = sqlx::query("SELECT * FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
            else {
                return Ok(None);
            };
            let row = session_row(&row)?;
            let messages = sqlx::query(LOAD_MESSAGES)
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .iter()
                .map(message)
                .collect::<Result<_, _>>()?;
            let turns =
                sqlx::query("SELECT * FROM turns WHERE session_id = $1 ORDER BY created_at, id")
                    .bind(id)
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
        .await;
        self.noted(outcome)
    }

    /// Removes a session and its history; whether it was stored.
    pub async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        let outcome = delete_session(&self.pool, id, None).await;
        self.noted(outcome)
    }

    pub async fn record_turn(
        &self,
        turn: &TurnRow,
        bounds: Option<TurnBounds>,
    ) -> Result<(), StoreError> {
        let outcome = async {
            let mut tx = self.pool.begin().await.map_err(unavailable)?;
            record_turn(&mut tx, turn).await?;
            if let Some(bounds) = bounds {
                prune_turns(&mut tx, turn.session, bounds).await?;
            }
            tx.commit().await.map_err(unavailable)
        }
        .await;
        self.noted(outcome)
    }

    pub async fn touch(&self, sessions: &[(Uuid, Timestamp)]) -> Result<(), StoreError> {
        let outcome = sqlx::query(
            "UPDATE sessions SET active_at = GREATEST(active_at, touched.at)
             FROM UNNEST($1::uuid[], $2::timestamptz[]) AS touched (id, at)
             WHERE sessions.id = touched.id",
        )
        .bind(sessions.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(
            sessions
                .iter()
                .map(|(_, at)| at.as_datetime())
                .collect::<Vec<_>>(),
        )
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable);
        self.noted(outcome)
    }

    pub async fn expire(&self, id: Uuid, before: Timestamp) -> Result<bool, StoreError> {
        let outcome = delete_session(&self.pool, id, Some(before)).await;
        self.noted(outcome)
    }

    pub async fn idle(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, Option<String>)>, StoreError> {
        let outcome = async {
            sqlx::query(
                "SELECT id, owner FROM sessions WHERE active_at < $1 ORDER BY active_at LIMIT $2",
            )
            .bind(before.as_datetime())
            .bind(integer(limit)?)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| Ok((row.id("id")?, row.maybe_text("owner")?)))
            .collect()
        }
        .await;
        self.noted(outcome)
    }

    pub async fn count_by_owner(&self) -> Result<Vec<(Option<String>, usize)>, StoreError> {
        let outcome = async {
            sqlx::query("SELECT owner, count(*) AS sessions FROM sessions GROUP BY owner")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?
                .iter()
                .map(|row| Ok((row.maybe_text("owner")?, count(row.integer("sessions")?)?)))
                .collect()
        }
        .await;
        self.noted(outcome)
    }

    /// Writes a key's record with its answer.
    pub async fn keep_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let outcome = async {
            let answer = key.answer.as_ref();
            let history = answer.and_then(|a| a.history.as_ref());
            sqlx::query(&KEEP_KEY_NUMBERED)
                .bind(owner_column(key.owner.as_deref()))
                .bind(&key.key)
                .bind(&key.route)
                .bind(&key.body_digest[..])
                .bind(key.created_at.as_datetime())
                .bind(key.turn.as_ref().map(json).transpose()?)
                .bind(answer.map(|a| i64::from(a.status)))
                .bind(answer.map(|a| headers_json(&a.headers)).transpose()?)
                .bind(answer.map(|a| &a.body[..]))
                .bind(history.map(|(session, _, _)| *session))
                .bind(history.map(|(_, len, _)| integer(*len)).transpose()?)
                .bind(history.map(|(_, _, after)| &after[..]))
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            Ok(())
        }
        .await;
        self.noted(outcome)
    }

    pub async fn key(
        &self,
        owner: Option<&str>,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let outcome = async {
            sqlx::query(
                "SELECT * FROM idempotency_keys WHERE owner = $1 AND key = $2 AND created_at > $3",
            )
            .bind(owner_column(owner))
            .bind(key)
            .bind(since.as_datetime())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .as_ref()
            .map(key_record)
            .transpose()
        }
        .await;
        self.noted(outcome)
    }

    pub async fn forget_keys(&self, before: Timestamp) -> Result<u64, StoreError> {
        let outcome = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before.as_datetime())
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(unavailable);
        self.noted(outcome)
    }

    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: usize,
        after: Option<(Timestamp, Uuid)>,
    ) -> Result<SessionPage, StoreError> {
        let outcome = async {
            // `owner = NULL` matches nothing, so the unowned are asked for apart.
            let owner_is = if owner.is_some() {
                "owner = $1"
            } else {
                "owner IS NULL AND $1::text IS NULL"
            };
            let rows = sqlx::query(&format!(
                "SELECT * FROM sessions
                 WHERE {owner_is} AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ))
            .bind(owner)
            .bind(after.map(|(created, _)| created.as_datetime()))
            .bind(after.map(|(_, id)| id))
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
        .await;
        self.noted(outcome)
    }
}

async fn record_turn(tx: &mut Transaction<'_, Postgres>, turn: &TurnRow) -> Result<(), StoreError> {
    sqlx::query(&RECORD_TURN_NUMBERED)
        .bind(turn.session)
        .bind(turn.id)
        .bind(turn.created_at.as_datetime())
        .bind(&turn.status)
        .bind(&turn.record)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Deletes a session (idle since before `idle_before`, if given), first handing the rows
/// its forks share to one of them (`HEIR`); whether it was deleted. Deletes in one tree
/// of forks lock in one order and should never deadlock; should the database still see
/// one (a tree rearranged under a delete), the delete is tried again, once.
async fn delete_session(
    pool: &PgPool,
    id: Uuid,
    idle_before: Option<Timestamp>,
) -> Result<bool, StoreError> {
    match try_delete_session(pool, id, idle_before).await {
        Err(error) if is_deadlock(&error) => {
            tracing::info!(session_id = %id, "a delete met another in a deadlock; trying again");
            try_delete_session(pool, id, idle_before).await
        }
        outcome => outcome,
    }
    .map_err(unavailable)
}

fn is_deadlock(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("40P01"))
}

async fn try_delete_session(
    pool: &PgPool,
    id: Uuid,
    idle_before: Option<Timestamp>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The session, its base and its forks, locked in id order: no fork of it is made
    // meanwhile (a fork's reference waits on it).
    let locked: Vec<Uuid> = sqlx::query_scalar(LOCK_FOR_DELETE)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    let idle = match idle_before {
        None => true,
        Some(before) => sqlx::query("SELECT 1 FROM sessions WHERE id = $1 AND active_at < $2")
            .bind(id)
            .bind(before.as_datetime())
            .fetch_optional(&mut *tx)
            .await?
            .is_some(),
    };
    if !locked.contains(&id) || !idle {
        return Ok(false);
    }
    let heir: Option<(Uuid, i64)> = sqlx::query_as(HEIR)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some((heir, shared)) = heir {
        let handed = [
            sqlx::query(HAND_ROWS_TO_HEIR)
                .bind(heir)
                .bind(id)
                .bind(shared),
            sqlx::query(REBASE_FORKS).bind(heir).bind(id),
            sqlx::query(REBASE_HEIR).bind(id).bind(shared).bind(heir),
        ];
        for statement in handed {
            statement.execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Claims a key for a commit (`CLAIM_KEY`).
async fn claim_key(tx: &mut Transaction<'_, Postgres>, key: &KeyRecord) -> Result<(), StoreError> {
    static CLAIM_KEY_NUMBERED: LazyLock<String> = LazyLock::new(|| numbered(CLAIM_KEY));
    sqlx::query(&CLAIM_KEY_NUMBERED)
        .bind(owner_column(key.owner.as_deref()))
        .bind(key.key.as_str())
        .bind(key.route.as_str())
        .bind(&key.body_digest[..])
        .bind(key.created_at.as_datetime())
        .bind(key.turn.as_ref().map(json).transpose()?)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Drops a session's ended turn records past `bounds` (`PRUNE_TURNS`).
async fn prune_turns(
    tx: &mut Transaction<'_, Postgres>,
    session: Uuid,
    bounds: TurnBounds,
) -> Result<(), StoreError> {
    sqlx::query(PRUNE_TURNS)
        .bind(session)
        .bind(integer(bounds.records)?)
        .bind(integer(bounds.failed)?)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Inserts messages of a session from `from` on, as one statement.
async fn insert_messages(
    tx: &mut Transaction<'_, Postgres>,
    session: Uuid,
    from: usize,
    messages: &[Message],
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    static INSERT_MESSAGES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id,
                                   interrupted, created_at)
             SELECT $1, * FROM {}",
            message_arrays(2)
        )
    });
    bind_messages(sqlx::query(&INSERT_MESSAGES).bind(session), from, messages)?
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    Ok(())
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds messages as the arrays `UNNEST` takes, one per column from `seq` to
/// `created_at` (`message_arrays`).
fn bind_messages<'q>(
    query: PgQuery<'q>,
    from: usize,
    messages: &'q [Message],
) -> Result<PgQuery<'q>, StoreError> {
    let seqs = (from..from + messages.len())
        .map(integer)
        .collect::<Result<Vec<_>, _>>()?;
    let tool_calls = messages
        .iter()
        .map(tool_calls)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(query
        .bind(seqs)
        .bind(
            messages
                .iter()
                .map(|m| role_name(m.role))
                .collect::<Vec<_>>(),
        )
        .bind(messages.iter().map(|m| &*m.content).collect::<Vec<_>>())
        .bind(tool_calls)
        .bind(
            messages
                .iter()
                .map(|m| m.tool_call_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(messages.iter().map(|m| m.interrupted).collect::<Vec<_>>())
        .bind(
            messages
                .iter()
                .map(|m| m.created_at.as_datetime())
                .collect::<Vec<_>>(),
        ))
}

fn lease_millis(instance: &Instance) -> i64 {
    i64::try_from(instance.lease.as_millis()).unwrap_or(i64::MAX)
}

/// How many parameters `bind_messages` binds.
const MESSAGE_ARRAYS: usize = 7;

/// The arrays of `bind_messages`, as `UNNEST` takes them (from `$n` on).
fn message_arrays(n: usize) -> String {
    format!(
        "UNNEST(${n}::bigint[], ${}::text[], ${}::text[], ${}::text[], ${}::text[], ${}::boolean[], ${}::timestamptz[])",
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        n + 5,
        n + 6
    )
}

/// Tries the database every second, on a connection of its own, and notes whether it
/// answered. A store that failed shows as healthy again once it answers; one that went
/// away while no call failed (calls waiting for a connection of the pool, which keeps
/// trying until `ACQUIRE_TIMEOUT`) shows as unhealthy within a second.
async fn probe(options: PgConnectOptions, healthy: Arc<AtomicBool>) {
    let mut held: Option<PgConnection> = None;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let answered = tokio::time::timeout(PROBE_EVERY, async {
            // A connection kept from the last probe may have died with a restart: then
            // a fresh one is tried at once.
            if let Some(conn) = held.as_mut() {
                if sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok() {
                    return true;
                }
                held = None;
            }
            let Ok(mut conn) = PgConnection::connect_with(&options).await else {
                return false;
            };
            let answered = sqlx::query("SELECT 1").execute(&mut conn).await.is_ok();
            held = answered.then_some(conn);
            answered
        })
        .await
        .unwrap_or(false);
        if !answered {
            held = None;
        }
        match (healthy.swap(answered, Ordering::AcqRel), answered) {
            (false, true) => tracing::info!("the store answers again"),
            (true, false) => {
                tracing::error!("the store does not answer; /readyz is 503 until it does")
            }
            _ => {}
        }
    }
}

impl Columns for PgRow {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn maybe_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn integer(&self, column: &str) -> Result<i64, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn maybe_integer(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn maybe_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn id(&self, column: &str) -> Result<Uuid, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn maybe_id(&self, column: &str) -> Result<Option<Uuid>, StoreError> {
        self.try_get(column).map_err(unavailable)
    }

    fn time(&self, column: &str) -> Result<Timestamp, StoreError> {
        self.try_get::<DateTime<Utc>, _>(column)
            .map(Timestamp::from_datetime)
            .map_err(unavailable)
    }
}

/// The URL as it may be shown: without its password.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "the STORE URL".to_owned(),
    }
}

fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// A new session's insert that failed: its source is gone if the reference to it was
/// refused (a fork made as its source was deleted).
fn creating(row: &SessionRow) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |error| match (&error, row.forked_from) {
        (sqlx::Error::Database(refused), Some(fork)) if refused.is_foreign_key_violation() => {
            StoreError::Gone(fork.session_id)
        }
        _ => unavailable(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::postgres::TestDatabase;

    #[tokio::test]
    async fn a_newer_schema_is_refused_with_a_clear_message_and_a_password_is_never_shown() {
        let Some(database) = TestDatabase::create("store::postgres::a_newer_schema").await else {
            return;
        };
        let store = PostgresStore::open(&database.url()).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', true, '\\x00', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.close().await;
        let newer = PostgresStore::open(&database.url()).await.unwrap_err();
        assert!(
            newer.to_string().contains("newer than this binary"),
            "{newer}"
        );
        let unreachable = PostgresStore::open("postgres://me:hunter2@127.0.0.1:1/db")
            .await
            .unwrap_err();
        let shown = unreachable.to_string();
        assert!(
            shown.contains("cannot reach") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
