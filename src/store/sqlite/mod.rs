//! The embedded store: one SQLite file, one process. WAL with `synchronous=FULL`, so a
//! commit that returned survives a crash and a power loss; the file is held in
//! exclusive locking mode, so a second process on it is refused at start. Migrations
//! are embedded (`migrations/sqlite/`) and run at open. One connection, on a thread of
//! its own (`thread`), serves every call: reads as they come, writes in batches of
//! whatever is waiting, each batch one transaction (group commit: one fsync for many
//! sessions' turns).

mod reads;
#[cfg(test)]
mod row_order_tests;
mod thread;
mod wal_writes;
mod writes;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteLockingMode};
use sqlx::{ConnectOptions, Connection as _};
use tokio::sync::oneshot;
use uuid::Uuid;

use self::thread::{Job, MAX_BATCH};
use self::writes::Write;
use super::{
    CommitRows, KeyRecord, SessionPage, SessionRow, StoreError, StoredSession, TurnBounds, TurnRow,
};
use crate::message::{Message, Timestamp};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    /// Jobs wait here for the connection's thread.
    jobs: flume::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
    /// Answers (closes) when the thread has ended and the file is let go of.
    ended: oneshot::Receiver<()>,
    /// Whether the last batch (or probe) committed.
    healthy: Arc<AtomicBool>,
    /// How long a read waits for its answer (`READ_TIMEOUT`).
    read_timeout: Duration,
}

/// Pages the WAL grows to before they are copied back into the file (4 KiB each: about
/// 160 MiB). The fewer checkpoints, the fewer copies of a page written many times in
/// between, and the fewer waits for the file's `fsync` that every commit queues behind.
/// Measured on 1,000 sessions under load: against SQLite's 1,000 pages, 10,000 took
/// `pwrite` 14.1 → 12.1 and `pread` 7.0 → 4.9 per write (`bench/store_writes.py`);
/// against 10,000, 40,000 took 3 to 5 % more turns a second (BENCHMARKS.md, "A larger
/// WAL, …").
/// What it costs: the WAL file's room on disk (SQLite removes it at a clean close), and
/// after a crash, the read of that much log at the next start.
const WAL_PAGES: u32 = 40_000;

/// The status of a turn whose record goes on a message row instead of a row of `turns`
/// (migration `0010`).
const COMPLETED: &str = "completed";

/// How long a statement waits for a lock the file's other users hold (at open only:
/// afterwards this process holds the file alone).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a read waits for its answer, its wait for the thread included, before it
/// fails (503) rather than hold its request while the disk is stuck: as long as a call
/// on the Postgres store waits for a connection.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (or creates, with its folder) the file at `path` and brings its schema up
    /// to date.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        if path.split('?').next() == Some(":memory:") {
            return Err(StoreError::Refused(
                "STORE: sqlite://:memory: keeps nothing past the process; use STORE=memory"
                    .to_owned(),
            ));
        }
        // The file as sqlx reads the URL (percent-decoded, query left out): migrations
        // and the store's connection open the same one.
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(|e| StoreError::Refused(format!("STORE: sqlite://{path}: {e}")))?;
        let file = options.get_filename().to_owned();
        if let Some(folder) = file.parent().filter(|f| !f.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(folder).await.map_err(|e| {
                StoreError::Refused(format!("STORE: cannot create {}: {e}", folder.display()))
            })?;
        }
        migrate(options, path).await?;
        let conn = tokio::task::spawn_blocking({
            let path = path.to_owned();
            move || connect(&file, &path)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("{path}: {e}")))??;
        let (jobs, waiting) = flume::bounded(4 * MAX_BATCH);
        let healthy = Arc::new(AtomicBool::new(true));
        let (end, ended) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-store".into())
            .spawn({
                let healthy = healthy.clone();
                move || {
                    thread::run(conn, waiting, healthy);
                    // The connection is closed (and the file's lock let go of) by now.
                    let _ = end.send(());
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("starting the store's thread: {e}")))?;
        Ok(Self {
            jobs,
            thread,
            ended,
            healthy,
            read_timeout: READ_TIMEOUT,
        })
    }

    /// Stores a new session with its own first messages (in the next batch).
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
        self.read(move |conn| reads::idle(conn, before, limit))
            .await
    }

    pub async fn count_by_owner(&self) -> Result<Vec<(Option<String>, usize)>, StoreError> {
        self.read_unbounded(reads::count_by_owner).await
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
        let (owner, key) = (owner.map(str::to_owned), key.to_owned());
        self.read(move |conn| reads::key(conn, owner.as_deref(), &key, since))
            .await
    }

    /// A session as `Store::load` says: its completed turns' records, the newest
    /// `bounds.records` of them, with the others (`reads::load`).
    pub async fn load(
        &self,
        id: Uuid,
        bounds: TurnBounds,
    ) -> Result<Option<StoredSession>, StoreError> {
        self.read(move |conn| reads::load(conn, id, bounds.records))
            .await
    }

    /// Removes a session and its history; whether it was stored.
    pub async fn delete(&self, id: Uuid) -> Result<bool, StoreError> {
        self.write(Write::Delete { id }).await.map(|rows| rows == 1)
    }

    pub async fn list(
        &self,
        owner: Option<&str>,
        limit: usize,
        after: Option<(Timestamp, Uuid)>,
    ) -> Result<SessionPage, StoreError> {
        let owner = owner.map(str::to_owned);
        self.read(move |conn| reads::list(conn, owner.as_deref(), limit, after))
            .await
    }

    /// Hands a write to the connection's thread and waits until its batch is committed.
    async fn write(&self, write: Write) -> Result<u64, StoreError> {
        let (done, answer) = oneshot::channel();
        self.hand(Job::Write(write, done)).await?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs a read on the connection's thread (between two batches) and waits for it,
    /// `read_timeout` at most (a read given up on still runs, its answer unread).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.read_timeout, self.read_unbounded(read))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the store did not answer a read within {} s",
                    self.read_timeout.as_secs_f64()
                )))
            })
    }

    /// As `read`, waiting as long as it takes: for the count at start, which reads an
    /// index entry of every stored session, however many there are.
    async fn read_unbounded<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, answer) = oneshot::channel();
        self.hand(Job::Read(Box::new(move |conn| {
            let _ = done.send(read(conn));
        })))
        .await?;
        answer.await.map_err(|_| stopped())?
    }

    async fn hand(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send_async(job).await.map_err(|_| stopped())
    }

    /// Whether the last write committed (after a failure, a probe tries every second)
    /// and the connection's thread still runs.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.thread.is_finished()
    }

    /// Lets the thread finish what it was given, then closes the file (and its lock).
    pub async fn close(self) {
        let Self { jobs, ended, .. } = self;
        drop(jobs);
        let _ = ended.await;
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store's connection thread has stopped".into())
}

/// A statement's failure, as the store's.
fn failed(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Brings the file's schema up to date (sqlx's migrations, on a connection of their own
/// that is closed before the store's opens). A schema newer than this binary is refused.
async fn migrate(options: SqliteConnectOptions, path: &str) -> Result<(), StoreError> {
    let mut conn = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .locking_mode(SqliteLockingMode::Exclusive)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .map_err(|e| in_use_or_unavailable(path, &e.to_string()))?;
    let migrated = MIGRATOR.run_direct(&mut conn).await;
    let _ = conn.close().await;
    migrated.map_err(|e| match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Refused(format!(
            "STORE: the schema of {path} is at migration {version}, newer than this binary knows; run a newer binary"
        )),
        sqlx::migrate::MigrateError::Execute(e) => in_use_or_unavailable(path, &e.to_string()),
        other => StoreError::Refused(format!("STORE: migrating {path}: {other}")),
    })
}

/// The store's connection: WAL, `synchronous=FULL`, foreign keys enforced, the file held
/// in exclusive locking mode from its first write on, which is made here (a probe), so a
/// second process is refused at its start rather than at its first commit. The WAL is
/// copied back into the file every `WAL_PAGES` pages rather than SQLite's 1,000: a page
/// written several times between two checkpoints is copied once, and the checkpoint's
/// own `fsync` comes less often. Its writes to the WAL reach the file together before
/// each commit's sync (`wal_writes`). Its page cache is SQLite's default (2,000 KiB): a larger one
/// read fewer pages back but cost as much in SQLite's walk of the whole cache after
/// commits that split a page (BENCHMARKS.md, "Tried and not kept").
fn connect(file: &Path, path: &str) -> Result<Connection, StoreError> {
    wal_writes::register().map_err(StoreError::Unavailable)?;
    let conn = Connection::open_with_flags_and_vfs(
        file,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        wal_writes::NAME,
    )
    .map_err(|e| in_use_or_unavailable(path, &e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(failed)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.execute_batch(&format!(
        "PRAGMA locking_mode = EXCLUSIVE;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = {WAL_PAGES};"
    ))
    .map_err(|e| in_use_or_unavailable(path, &e.to_string()))?;
    thread::write_probe(&conn).map_err(|e| in_use_or_unavailable(path, &e.to_string()))?;
    Ok(conn)
}

/// A file another process holds answers "database is locked".
fn in_use_or_unavailable(path: &str, error: &str) -> StoreError {
    if error.contains("locked") || error.contains("busy") {
        StoreError::Refused(format!(
            "STORE: {path} is in use by another process (one process per SQLite file; use Postgres for several)"
        ))
    } else {
        StoreError::Unavailable(format!("{path}: {error}"))
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

    /// The bounds records are loaded with (the defaults).
    pub(super) const KEEP: TurnBounds = TurnBounds {
        records: 100,
        failed: 50,
    };

    /// A store file of its own, removed (with its WAL) when dropped.
    pub(super) struct TempFile(std::path::PathBuf);

    impl TempFile {
        pub(super) fn new() -> Self {
            Self(std::env::temp_dir().join(format!("text-session-store-{}.db", Uuid::new_v4())))
        }

        pub(super) fn path(&self) -> &str {
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
        let (outcomes, committed) = store
            .read(move |conn| {
                let writes: Vec<&Write> = writes.iter().collect();
                Ok(thread::apply_batch(conn, &writes))
            })
            .await
            .unwrap();
        assert!(committed);
        assert!(outcomes[0].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(StoreError::Unavailable(_))));
        assert!(matches!(outcomes[2], Err(StoreError::VersionMoved { .. })));
        for id in [a, b] {
            let stored = store.load(id, KEEP).await.unwrap().unwrap();
            assert_eq!((stored.row.version, stored.messages.len()), (1, 1));
        }
    }

    #[tokio::test]
    async fn completed_records_past_the_bounds_are_cleared_from_their_rows_as_the_records_are_pruned()
     {
        use crate::message::{Message, Role};
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let id = Uuid::new_v4();
        let create = Write::Create {
            row: session(id),
            messages: Vec::new(),
        };
        store.write(create).await.unwrap();
        let bounds = TurnBounds {
            records: 5,
            failed: 0,
        };
        let mut records = Vec::new();
        for n in 0..40_u64 {
            // A millisecond apart: records are read back in creation order.
            let now = Timestamp::from_unix_millis(1_700_000_000_000 + n as i64).unwrap();
            let record = TurnRow {
                session: id,
                id: Uuid::new_v4(),
                created_at: now,
                status: "completed".into(),
                record: format!("{{\"n\":{n}}}"),
            };
            records.push(record.clone());
            let commit = Write::Commit {
                session: id,
                from_version: 1 + n,
                version: 2 + n,
                from: 2 * n as usize,
                messages: vec![
                    Message::text(Role::User, format!("m{n}"), now),
                    Message::text(Role::Assistant, format!("r{n}"), now),
                ],
                updated_at: now,
                keys: Vec::new(),
                turns: vec![record],
                // As sessions do: now and then (every 8 commits here).
                prune: (n % 8 == 7).then_some(bounds),
            };
            store.write(commit).await.unwrap();
        }
        // The last pruning (with turn 39) kept turns 35 to 39 (rows 70 to 78) and cleared
        // the others, and the next one starts past row 68; a commit since counts its own.
        let counts = move |conn: &Connection| {
            conn.query_row(
                "SELECT (SELECT count(*) FROM messages WHERE turn_id IS NOT NULL),
                        turns_from, turns_on_rows FROM sessions WHERE id = ?",
                [id.to_string()],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get(2)?)),
            )
            .map_err(failed)
        };
        assert_eq!(store.read(counts).await.unwrap(), (5, 69, 5));
        let stored = store.load(id, KEEP).await.unwrap().unwrap();
        assert_eq!(stored.turns, records[35..]);
        assert_eq!(stored.messages.len(), 80);
    }

    #[tokio::test]
    async fn a_read_that_panics_fails_alone_and_an_in_memory_file_is_refused() {
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let panicked = store
            .read(|_| -> Result<(), StoreError> { panic!("a bug in a read") })
            .await;
        assert!(matches!(panicked, Err(StoreError::Unavailable(_))));
        assert!(store.is_healthy());
        assert!(store.load(Uuid::new_v4(), KEEP).await.unwrap().is_none());
        let memory = SqliteStore::open(":memory:").await.unwrap_err();
        assert!(memory.to_string().contains("STORE=memory"), "{memory}");
    }

    #[tokio::test]
    async fn a_read_the_thread_does_not_answer_in_time_fails_and_the_next_one_is_answered() {
        let file = TempFile::new();
        let mut store = SqliteStore::open(file.path()).await.unwrap();
        store.read_timeout = Duration::from_millis(200);
        // A read that holds the thread past the timeout (a stuck disk, as the caller
        // sees it), and one behind it.
        let stuck = store.read(|_| {
            std::thread::sleep(Duration::from_millis(600));
            Ok(())
        });
        let behind = store.load(Uuid::new_v4(), KEEP);
        let (stuck, behind) = tokio::join!(stuck, behind);
        for outcome in [stuck.map(|_| ()), behind.map(|_| ())] {
            let Err(StoreError::Unavailable(why)) = outcome else {
                panic!("{outcome:?}");
            };
            assert!(why.contains("within 0.2 s"), "{why}");
        }
        store.read_timeout = READ_TIMEOUT;
        assert!(store.load(Uuid::new_v4(), KEEP).await.unwrap().is_none());
        assert!(store.is_healthy());
    }

    /// What a commit's durability rests on, as the store's connection has it.
    #[tokio::test]
    async fn the_connection_is_in_wal_with_full_sync_foreign_keys_and_the_file_held_alone() {
        use rusqlite::types::Value::{Integer, Text};
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let pragmas = store
            .read(|conn| {
                let pragma = |name: &str| {
                    conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                        row.get::<_, rusqlite::types::Value>(0)
                    })
                    .map_err(failed)
                };
                Ok([
                    pragma("journal_mode")?,
                    pragma("synchronous")?,
                    pragma("foreign_keys")?,
                    pragma("locking_mode")?,
                    pragma("wal_autocheckpoint")?,
                ])
            })
            .await
            .unwrap();
        assert_eq!(
            pragmas,
            [
                Text("wal".into()),
                Integer(2), // FULL
                Integer(1),
                Text("exclusive".into()),
                Integer(WAL_PAGES.into()),
            ]
        );
    }

    /// The statements the backends share number their parameters (`$1`, `$2`, …) for
    /// Postgres; here they are bound by position, which is the same only when each
    /// number is first used in order.
    #[tokio::test]
    async fn the_shared_statements_use_their_parameters_first_in_the_order_of_their_numbers() {
        use crate::store::rows::{
            HAND_ROWS_TO_HEIR, HEIR, LOAD_MESSAGES, PRUNE_TURNS, REBASE_FORKS, REBASE_HEIR,
        };
        let file = TempFile::new();
        let store = SqliteStore::open(file.path()).await.unwrap();
        let shared = [
            LOAD_MESSAGES,
            HEIR,
            HAND_ROWS_TO_HEIR,
            REBASE_FORKS,
            REBASE_HEIR,
            PRUNE_TURNS,
        ];
        let names = store
            .read(move |conn| {
                shared
                    .iter()
                    .map(|sql| {
                        let statement = conn.prepare(sql).map_err(failed)?;
                        Ok((1..=statement.parameter_count())
                            .map(|i| statement.parameter_name(i).map(str::to_owned))
                            .collect::<Vec<_>>())
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await
            .unwrap();
        for (sql, names) in shared.iter().zip(names) {
            let numbered: Vec<_> = (1..=names.len()).map(|i| Some(format!("${i}"))).collect();
            assert_eq!(names, numbered, "{sql}");
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
        first
            .read(|conn| {
                conn.execute(
                    "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                     VALUES (9999, 'from the future', 1, x'00', 0)",
                    [],
                )
                .map_err(failed)
            })
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
