//! The durable record beneath the sessions: plain rows in, plain rows out, never an
//! `Arc<Session>`. The live history behind the turn lock stays the hot path; a store
//! keeps what was committed so that it outlives the process. Backends are a closed enum
//! dispatched by `match`, like the providers: `memory` (nothing outlives the process:
//! the live sessions are the only copy), `sqlite` (one embedded file, one process) and
//! `postgres` (a database, one process or several).
//!
//! A history is append-only: a commit adds messages after the ones stored and moves the
//! version, conditional on the version it started from, and never rewrites a message.
//! The domain and HTTP do not belong here.

pub mod postgres;
mod rows;
pub mod sqlite;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::message::{Defaults, ForkedFrom, Message, Timestamp, Tool};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A session as stored: everything but its messages.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: Uuid,
    /// The SHA-256 digest (hex) of the API key that owns it; `None` without API keys.
    pub owner: Option<String>,
    pub provider: String,
    pub model: String,
    pub defaults: Defaults,
    pub tools: Vec<Tool>,
    pub metadata: Map<String, Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
    /// A fork's source: the store shares the source's first `up_to` rows rather than
    /// copying them.
    pub forked_from: Option<ForkedFrom>,
}

/// A session read back whole: its messages, and its ended turn records oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub row: SessionRow,
    pub messages: Vec<Message>,
    pub turns: Vec<TurnRow>,
}

/// An ended turn's record, as JSON the session layer reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRow {
    pub session: Uuid,
    pub id: Uuid,
    pub created_at: Timestamp,
    /// `completed`, `failed`, `cancelled` or `rejected`.
    pub status: String,
    pub record: String,
}

/// How many ended turn records a session keeps in the store: the last `records`, and
/// besides them the last `failed` failed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnBounds {
    pub records: usize,
    pub failed: usize,
}

/// One turn's commit: `messages` go after the `from` messages already stored, and the
/// session moves from version `from_version` to `version`. With `key`, the turn's
/// `Idempotency-Key` record (with its `turn`) is written in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct CommitRows<'a> {
    pub session: Uuid,
    pub from_version: u64,
    pub version: u64,
    pub from: usize,
    pub messages: &'a [Message],
    pub updated_at: Timestamp,
    /// The `Idempotency-Key` records the commit claims: one per writer that sent a key
    /// (a turn several writers joined can have several).
    pub keys: &'a [KeyRecord],
    /// The records of the turns it ends (one per writer of a joined turn); with `prune`,
    /// the session's records past those bounds are dropped in the same transaction.
    pub turns: &'a [TurnRow],
    pub prune: Option<TurnBounds>,
    /// The lease epoch the committing process holds the session by (`Lease::Held`):
    /// with it, the commit applies only while that lease is the session's (a store
    /// shared by several processes); `None` where one process is the only writer.
    pub epoch: Option<u64>,
}

/// This process among those that share a store: an id of its own at each start, the
/// address the others reach it at (`INSTANCE_ADDR`; empty when it is alone) and how long
/// a lease it takes lasts without renewal (`LEASE_SECS`).
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: Uuid,
    pub addr: String,
    pub lease: std::time::Duration,
}

impl Instance {
    /// A process alone on its store: no address, leases of 10 s.
    pub fn alone() -> Self {
        Self::new("", std::time::Duration::from_secs(10))
    }

    pub fn new(addr: impl Into<String>, lease: std::time::Duration) -> Self {
        Self {
            id: Uuid::new_v4(),
            addr: addr.into(),
            lease,
        }
    }
}

/// Who serves a session: one process at a time, by lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// This process; its commits carry `epoch`, which moves on whenever the lease
    /// changes hands. `taken_over`: another process held it last and did not hand it
    /// back (it died, or froze past its lease).
    Held { epoch: u64, taken_over: bool },
    /// Another live process, at `addr`.
    Elsewhere { addr: String },
}

/// An `Idempotency-Key` as stored: the request it came with, the turn it committed (if
/// it did) and the answer (once kept). Bytes and JSON only; what they mean is for the
/// layers above.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// The SHA-256 digest (hex) of the API key; `None` without API keys.
    pub owner: Option<String>,
    pub key: String,
    pub route: String,
    pub body_digest: [u8; 32],
    pub created_at: Timestamp,
    pub turn: Option<KeyTurn>,
    pub answer: Option<KeyAnswer>,
}

/// The turn a key's request committed: enough to answer for it again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyTurn {
    pub session: Uuid,
    pub turn_id: Uuid,
    /// The turn's result as JSON; `None` when it made none (tool outputs).
    pub result: Option<Value>,
    pub from: usize,
    pub len: usize,
    pub version: u64,
    pub updated_at: Timestamp,
}

/// A kept answer: status, headers (JSON) and body; `history`, when the body leaves out a
/// committed history, says whose, how long and what stands after it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyAnswer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub history: Option<(Uuid, usize, Vec<u8>)>,
}

/// Where a page of sessions (newest first) goes on: after the session created at
/// `created_at` with id `id`, as `<unix milliseconds>~<id>`. Opaque to clients; any
/// text of that form (1 to 15 digits, `~`, a UUID: the pattern the API states) reads
/// back.
pub fn cursor(created_at: Timestamp, id: Uuid) -> String {
    format!("{}~{id}", created_at.unix_millis())
}

/// A cursor read back: `None` if it is not one.
pub fn parse_cursor(cursor: &str) -> Option<(Timestamp, Uuid)> {
    let (millis, id) = cursor.split_once('~')?;
    if millis.is_empty() || millis.len() > 15 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = millis.parse().ok()?;
    Some((
        Timestamp::from_unix_millis(millis)?,
        Uuid::parse_str(id).ok()?,
    ))
}

/// A page of a key's sessions, newest first, and where the next page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPage {
    /// Each session with how many messages it holds.
    pub sessions: Vec<(SessionRow, usize)>,
    /// Pass as `after` for the next page (an opaque cursor); `None` at the end.
    pub next: Option<String>,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not commit; nothing of the call stuck.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The session is not at the version the commit started from (or is gone).
    #[error("the stored session is at version {found:?}, not {expected}")]
    VersionMoved { expected: u64, found: Option<u64> },
    /// The committing process no longer holds the session's lease: another one took it
    /// over (this one was paused, cut off or too slow). Nothing was written.
    #[error("the session's lease moved on to epoch {found:?}, past {held}")]
    Fenced { held: u64, found: Option<u64> },
    /// The store cannot be used by this binary (schema newer than it knows, a file that
    /// another process holds, a URL it does not understand).
    #[error("{0}")]
    Refused(String),
    /// A session the call needs is no longer stored (deleted meanwhile: a fork of a
    /// session deleted as it was forked). Nothing was written.
    #[error("session {0} is no longer stored")]
    Gone(Uuid),
}

impl StoreError {
    /// A short name of the kind, for metrics: `unavailable`, `version_moved`, `fenced`,
    /// `refused`, `gone`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::VersionMoved { .. } => "version_moved",
            StoreError::Fenced { .. } => "fenced",
            StoreError::Refused(_) => "refused",
            StoreError::Gone(_) => "gone",
        }
    }
}

/// The configured store.
#[derive(Debug)]
pub enum Store {
    /// Nothing outlives the process.
    Memory,
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl Store {
    /// Opens the store a `STORE` URL names: `memory`, `sqlite://PATH` (the file and its
    /// folder are created) or `postgres://…` (the database must exist); migrations run.
    /// A process alone on its store: see `open_as`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_as(url, Instance::alone()).await
    }

    /// As `open`, for a process that may share the store (Postgres) with others as
    /// `instance`.
    pub async fn open_as(url: &str, instance: Instance) -> Result<Self, StoreError> {
        if url == "memory" {
            return Ok(Store::Memory);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(Store::Sqlite(SqliteStore::open(path).await?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Store::Postgres(
                PostgresStore::open_as(url, instance).await?,
            ));
        }
        Err(StoreError::Refused(
            "STORE: not `memory`, `sqlite://PATH` or `postgres://…`".to_owned(),
        ))
    }

    /// Finishes what was handed to it and lets go of its file.
    pub async fn close(self) {
        match self {
            Store::Memory => {}
            Store::Sqlite(store) => store.close().await,
            Store::Postgres(store) => store.close().await,
        }
    }

    /// Whether the store commits: false from a failed commit until it commits again.
    pub fn is_healthy(&self) -> bool {
        match self {
            Store::Memory => true,
            Store::Sqlite(store) => store.is_healthy(),
            Store::Postgres(store) => store.is_healthy(),
        }
    }

    /// Whether what is committed outlives the process.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Store::Memory)
    }

    /// Stores a new session with its first messages, its lease taken by this process:
    /// the lease epoch (0 where no other process writes). A fork (`row.forked_from`)
    /// shares its source's first `up_to` rows rather than copying them: `messages` are
    /// only those after them (none, for a fork just made).
    pub async fn create(&self, row: &SessionRow, messages: &[Message]) -> Result<u64, StoreError> {
        match self {
            Store::Memory => Ok(0),
            Store::Sqlite(store) => store.create(row, messages).await.map(|()| 0),
            Store::Postgres(store) => store.create(row, messages).await,
        }
    }

    /// Appends a turn's messages and moves the version, if the session is still at
    /// `from_version`; else nothing changes.
    pub async fn commit(&self, commit: CommitRows<'_>) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(store) => store.commit(commit).await,
            Store::Postgres(store) => store.commit(commit).await,
        }
    }

    /// The session and its whole history, if stored, with its ended turn records: at
    /// least those `bounds` keep (a store may give more, oldest first; the session
    /// applies its bounds when it restores them).
    pub async fn load(
        &self,
        id: Uuid,
        bounds: TurnBounds,
    ) -> Result<Option<StoredSession>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::Sqlite(store) => store.load(id, bounds).await,
            Store::Postgres(store) => store.load(id).await,
        }
    }

    /// Takes the lease of a stored session for this process, unless another live
    /// process holds it; `None` if no such session is stored. A store only one process
    /// writes to grants every lease (epoch 0).
    pub async fn take_lease(&self, id: Uuid) -> Result<Option<Lease>, StoreError> {
        match self {
            Store::Memory | Store::Sqlite(_) => Ok(Some(Lease::Held {
                epoch: 0,
                taken_over: false,
            })),
            Store::Postgres(store) => store.take_lease(id).await,
        }
    }

    /// Whether sessions are leased: a store several processes may share (Postgres).
    pub fn has_leases(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Where the other processes reach this one (`INSTANCE_ADDR`); empty when it is
    /// alone on its store.
    pub fn instance_addr(&self) -> &str {
        match self {
            Store::Postgres(store) => store.instance_addr(),
            Store::Memory | Store::Sqlite(_) => "",
        }
    }

    /// Extends every lease this process holds; the sessions it still holds (a session
    /// live here but not among them was taken over by another process).
    pub async fn renew_leases(&self) -> Result<Vec<Uuid>, StoreError> {
        match self {
            Store::Memory | Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(store) => store.renew_leases().await,
        }
    }

    /// Lets this process's leases of `sessions` (all of them with `None`) lapse now,
    /// so that another process can take them at once.
    pub async fn release_leases(&self, sessions: Option<&[Uuid]>) -> Result<(), StoreError> {
        match self {
            Store::Memory | Store::Sqlite(_) => Ok(()),
            Store::Postgres(store) => store.release_leases(sessions).await,
        }
    }

    /// Removes a session and its history; whether it was stored.
    pub async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        match self {
            Store::Memory => Ok(false),
            Store::Sqlite(store) => store.delete(id).await,
            Store::Postgres(store) => store.delete(id).await,
        }
    }

    /// Writes (or rewrites) an ended turn's record; with `bounds`, then drops the
    /// session's records past them.
    pub async fn record_turn(
        &self,
        turn: &TurnRow,
        bounds: Option<TurnBounds>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(store) => store.record_turn(turn, bounds).await,
            Store::Postgres(store) => store.record_turn(turn, bounds).await,
        }
    }

    /// Notes that sessions were last active at the given times (when they leave memory:
    /// reads are not committed, so the store would not know of them otherwise).
    pub async fn touch(&self, sessions: &[(Uuid, Timestamp)]) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(store) => store.touch(sessions).await,
            Store::Postgres(store) => store.touch(sessions).await,
        }
    }

    /// Up to `limit` stored sessions last active before `before`, the longest idle
    /// first, with their owners.
    pub async fn idle(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, Option<String>)>, StoreError> {
        match self {
            Store::Memory => Ok(Vec::new()),
            Store::Sqlite(store) => store.idle(before, limit).await,
            Store::Postgres(store) => store.idle(before, limit).await,
        }
    }

    /// Deletes a session if it was last active before `before` (else leaves it);
    /// whether it did.
    pub async fn expire(&self, id: Uuid, before: Timestamp) -> Result<bool, StoreError> {
        match self {
            Store::Memory => Ok(false),
            Store::Sqlite(store) => store.expire(id, before).await,
            Store::Postgres(store) => store.expire(id, before).await,
        }
    }

    /// How many sessions are stored, per owner (`None`: made without API keys).
    pub async fn count_by_owner(&self) -> Result<Vec<(Option<String>, usize)>, StoreError> {
        match self {
            Store::Memory => Ok(Vec::new()),
            Store::Sqlite(store) => store.count_by_owner().await,
            Store::Postgres(store) => store.count_by_owner().await,
        }
    }

    /// Writes a key's record (its answer kept): in place of an older record of the key,
    /// keeping the turn a commit wrote for this same request.
    pub async fn keep_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(store) => store.keep_key(record).await,
            Store::Postgres(store) => store.keep_key(record).await,
        }
    }

    /// The record of `key` for `owner`, if one was made after `since`.
    pub async fn key(
        &self,
        owner: Option<&str>,
        key: &str,
        since: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        match self {
            Store::Memory => Ok(None),
            Store::Sqlite(store) => store.key(owner, key, since).await,
            Store::Postgres(store) => store.key(owner, key, since).await,
        }
    }

    /// Drops the key records made before `before`; how many.
    pub async fn forget_keys(&self, before: Timestamp) -> Result<u64, StoreError> {
        match self {
            Store::Memory => Ok(0),
            Store::Sqlite(store) => store.forget_keys(before).await,
            Store::Postgres(store) => store.forget_keys(before).await,
        }
    }

    /// Up to `limit` sessions of `owner`, newest first, created before `after` (a
    /// cursor of a page before, read back with `parse_cursor`).
    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: usize,
        after: Option<(Timestamp, Uuid)>,
    ) -> Result<SessionPage, StoreError> {
        match self {
            Store::Memory => Ok(SessionPage {
                sessions: Vec::new(),
                next: None,
            }),
            Store::Sqlite(store) => store.list(owner, limit, after).await,
            Store::Postgres(store) => store.list(owner, limit, after).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_that_is_no_store_is_refused_and_memory_keeps_nothing() {
        assert!(matches!(
            Store::open("mysql://x").await,
            Err(StoreError::Refused(_))
        ));
        let memory = Store::open("memory").await.unwrap();
        assert!(!memory.is_durable() && memory.is_healthy());
        let now = Timestamp::now();
        let row = SessionRow {
            id: Uuid::new_v4(),
            owner: None,
            provider: "echo".into(),
            model: "echo-1".into(),
            defaults: Defaults::default(),
            tools: Vec::new(),
            metadata: Map::new(),
            created_at: now,
            updated_at: now,
            version: 1,
            forked_from: None,
        };
        memory.create(&row, &[]).await.unwrap();
        let bounds = TurnBounds {
            records: 100,
            failed: 50,
        };
        assert_eq!(memory.load(row.id, bounds).await.unwrap(), None);
        assert!(
            memory
                .list(None, 10, None)
                .await
                .unwrap()
                .sessions
                .is_empty()
        );
    }

    #[test]
    fn a_cursor_reads_back_and_anything_of_its_form_does_too() {
        let (at, id) = (Timestamp::now(), Uuid::new_v4());
        assert_eq!(parse_cursor(&cursor(at, id)), Some((at, id)));
        assert!(parse_cursor(&format!("999999999999999~{id}")).is_some());
        assert!(parse_cursor(&format!("0~{id}")).is_some());
        for bad in ["", "~", "12~nope", "1234567890123456~x", "-5~x", "abc"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
