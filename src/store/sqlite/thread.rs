//! The connection's thread: it owns the one connection to the file and runs every job
//! handed to it, the reads as they come and the writes in batches, each batch one
//! transaction (group commit: one fsync for many sessions' turns). A job crosses from
//! the async side once and its answer once; the statements in between run here, on
//! SQLite's side of the hand-off.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::failed;
use super::writes::{Write, apply};
use crate::message::Timestamp;
use crate::store::StoreError;

/// What the connection's thread is handed. Writes are most of them: they travel unboxed
/// (no allocation of their own), reads boxed.
#[allow(clippy::large_enum_variant)]
pub(super) enum Job {
    /// A write, and where its outcome goes once its batch is committed.
    Write(Write, oneshot::Sender<Result<u64, StoreError>>),
    /// A read, which sends its own answer.
    Read(Box<dyn FnOnce(&Connection) + Send>),
}

/// Jobs one turn of the thread takes at most.
pub(super) const MAX_BATCH: usize = 256;

/// How often a store that failed is tried again while no write comes.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Runs jobs until every sender is gone: takes every job waiting (up to `MAX_BATCH`),
/// runs its reads, then applies its writes in one transaction. A write that fails (a
/// stale version) fails alone; if the commit itself fails, every write of the batch
/// fails and none stuck.
pub(super) fn run(conn: Connection, jobs: flume::Receiver<Job>, healthy: Arc<AtomicBool>) {
    let mut writes = Vec::with_capacity(MAX_BATCH);
    // While the store fails, when it is tried next (reads coming meanwhile do not put it
    // off).
    let mut next_probe = Instant::now();
    #[cfg(feature = "fault-injection")]
    let mut outage = super::fault_injection::Outage::default();
    loop {
        let job = if healthy.load(Ordering::Acquire) {
            jobs.recv().map_err(|flume::RecvError::Disconnected| ())
        } else {
            if Instant::now() >= next_probe {
                let recovered = probe(&conn);
                #[cfg(feature = "fault-injection")]
                let recovered = recovered && !outage.is_on();
                if recovered {
                    tracing::info!("the store commits again");
                    healthy.store(true, Ordering::Release);
                    continue;
                }
                next_probe = Instant::now() + PROBE_EVERY;
            }
            match jobs.recv_deadline(next_probe) {
                Err(flume::RecvTimeoutError::Timeout) => continue,
                other => other.map_err(|_| ()),
            }
        };
        let Ok(job) = job else { return };
        // Let the async side run first if it waits for the core (it may be finishing
        // other turns' writes): the batch then takes them too. Without it, measured on
        // one core under load (`bench/store_writes.py`), batches held half as many writes
        // and each write paid twice the `fsync`s; where the thread has a core of its own,
        // it returns at once.
        std::thread::yield_now();
        for job in std::iter::once(job).chain(jobs.try_iter().take(MAX_BATCH - 1)) {
            match job {
                // A read that panics (a bug) fails alone: its caller's answer is dropped.
                Job::Read(read) => {
                    if catch_unwind(AssertUnwindSafe(|| read(&conn))).is_err() {
                        tracing::error!("a read of the store panicked");
                    }
                }
                Job::Write(write, done) => writes.push((write, done)),
            }
        }
        if writes.is_empty() {
            continue;
        }
        #[cfg(feature = "fault-injection")]
        if outage.fails(writes.iter().map(|(write, _)| write)) {
            healthy.store(false, Ordering::Release);
            for (_, done) in writes.drain(..) {
                let _ = done.send(Err(StoreError::Unavailable(
                    "fault injection: the store fails".into(),
                )));
            }
            continue;
        }
        let batch: Vec<&Write> = writes.iter().map(|(write, _)| write).collect();
        // A write that panics (a bug) fails its batch, as a store that failed would.
        let (outcomes, committed) = catch_unwind(AssertUnwindSafe(|| apply_batch(&conn, &batch)))
            .unwrap_or_else(|_| {
                rollback(&conn);
                let failed = StoreError::Unavailable("a write of the store panicked".into());
                (vec![Err(failed); batch.len()], false)
            });
        drop(batch);
        if !committed && healthy.load(Ordering::Acquire) {
            tracing::error!("the store failed to commit; writes get 503 until it recovers");
            next_probe = Instant::now() + PROBE_EVERY;
        }
        healthy.store(committed, Ordering::Release);
        for ((_, done), outcome) in writes.drain(..).zip(outcomes) {
            let _ = done.send(outcome);
        }
    }
}

/// Whether the store can commit a write now.
fn probe(conn: &Connection) -> bool {
    write_probe(conn).is_ok()
}

/// Writes the probe's row (a transaction of its own).
pub(super) fn write_probe(conn: &Connection) -> rusqlite::Result<usize> {
    rollback(conn);
    conn.prepare_cached(
        "INSERT INTO store_probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at",
    )
    .and_then(|mut probe| probe.execute([Timestamp::now().to_rfc3339()]))
}

/// The outcome of each write, and whether the store committed. The writes go in one
/// transaction, without a savepoint each: a write's first statement decides whether it
/// applies (a session at another version, or a fork of a session deleted meanwhile, is
/// refused before anything is written), so a refused write has changed nothing. Should
/// a write fail after it changed something (a broken disk, a bug), the whole transaction
/// is rolled back and each write runs again alone, so none of them is half kept.
pub(super) fn apply_batch(
    conn: &Connection,
    writes: &[&Write],
) -> (Vec<Result<u64, StoreError>>, bool) {
    let failed_all = |error: StoreError| (vec![Err(error); writes.len()], false);
    if let Err(error) = begin(conn) {
        return failed_all(error);
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        match apply(conn, write) {
            outcome @ (Ok(_) | Err(StoreError::VersionMoved { .. } | StoreError::Gone(_))) => {
                outcomes.push(outcome)
            }
            Err(_) => {
                rollback(conn);
                return apply_one_by_one(conn, writes);
            }
        }
    }
    match commit(conn) {
        Ok(()) => (outcomes, true),
        Err(error) => failed_all(error),
    }
}

/// Each write in a transaction of its own: the slow way, after one broke a batch.
fn apply_one_by_one(conn: &Connection, writes: &[&Write]) -> (Vec<Result<u64, StoreError>>, bool) {
    let mut committed = true;
    let mut outcomes = Vec::with_capacity(writes.len());
    for write in writes {
        if let Err(error) = begin(conn) {
            committed = false;
            outcomes.push(Err(error));
            continue;
        }
        let outcome = match apply(conn, write) {
            Ok(done) => commit(conn)
                .map(|()| done)
                .inspect_err(|_| committed = false),
            Err(error) => {
                rollback(conn);
                // The write itself may be at fault (a constraint), or the store: a
                // probe tells which.
                if matches!(error, StoreError::Unavailable(_)) && !probe(conn) {
                    committed = false;
                }
                Err(error)
            }
        };
        outcomes.push(outcome);
    }
    (outcomes, committed)
}

/// Plain BEGIN/COMMIT/ROLLBACK: when a COMMIT fails with SQLITE_FULL or SQLITE_IOERR,
/// SQLite may have rolled the transaction back by itself, and the `ROLLBACK` after it
/// then ends nothing.
fn begin(conn: &Connection) -> Result<(), StoreError> {
    // A transaction a failed ROLLBACK left open would take every batch in.
    rollback(conn);
    run_cached(conn, "BEGIN IMMEDIATE")
}

fn commit(conn: &Connection) -> Result<(), StoreError> {
    run_cached(conn, "COMMIT").inspect_err(|_| rollback(conn))
}

/// Ends whatever is left of the transaction (nothing, if SQLite rolled it back).
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = run_cached(conn, "ROLLBACK");
    }
}

fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(failed)
}
