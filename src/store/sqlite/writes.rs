//! The writes the connection's thread applies, each inside its batch's transaction, with
//! prepared statements kept by the connection (`prepare_cached`): a commit binds its
//! values to statements SQLite parsed once.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use uuid::Uuid;

use super::{COMPLETED, failed};
use crate::message::{Message, Timestamp};
use crate::store::rows::{
    CLAIM_KEY, HEIR, KEEP_KEY, PRUNE_TURNS, REBASE_FORKS, REBASE_HEIR, RECORD_TURN, base_of,
    headers_json, integer, json, owner_column, role_name, tool_calls,
};
use crate::store::{KeyRecord, SessionRow, StoreError, TurnBounds, TurnRow};

/// A write for the connection's thread, with what it needs owned.
#[derive(Debug)]
pub(super) enum Write {
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

/// One write, inside the batch's transaction: how many rows it concerned (1 for a write
/// that applied, the sessions deleted, the keys forgotten). A write refused for what it
/// found (`VersionMoved`, `Gone`) has changed nothing: its first statement decides.
pub(super) fn apply(conn: &Connection, write: &Write) -> Result<u64, StoreError> {
    match write {
        Write::Create { row, messages } => {
            let (base, own_from) = base_of(row);
            let (defaults, tools, metadata) = (
                json(&row.defaults)?,
                json(&row.tools)?,
                json(&row.metadata)?,
            );
            let forked_from = row.forked_from.as_ref().map(json).transpose()?;
            let (version, stored) = (integer(row.version)?, integer(own_from + messages.len())?);
            let base_len = base.map(|_| integer(own_from)).transpose()?;
            let (id, updated_at) = (row.id.to_string(), row.updated_at.to_rfc3339());
            conn.prepare_cached(
                "INSERT INTO sessions (id, owner, provider, model, defaults, tools, metadata,
                                       created_at, updated_at, version, messages, active_at,
                                       base_id, base_len, forked_from)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    id,
                    row.owner,
                    row.provider,
                    row.model,
                    defaults,
                    tools,
                    metadata,
                    row.created_at.to_rfc3339(),
                    updated_at,
                    version,
                    stored,
                    updated_at,
                    base.map(|id| id.to_string()),
                    base_len,
                    forked_from,
                ])
            })
            .map_err(|error| creating(row, error))?;
            insert_messages(conn, &id, own_from, messages, std::iter::empty())?;
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
            let id = session.to_string();
            let at = updated_at.to_rfc3339();
            let (to, added) = (integer(*version)?, integer(messages.len())?);
            let (expected_version, expected_len) = (integer(*from_version)?, integer(*from)?);
            // Completed turns' records go on the rows the commit adds, one each (a commit
            // adds at least a row per writer, so none is left for `turns` but by a
            // commit that adds none).
            let completed = || turns.iter().filter(|turn| turn.status == COMPLETED);
            let on_rows = completed().count().min(messages.len());
            let counted = integer(on_rows)?;
            // The move of the version is the guard: it applies only from the version
            // and length the commit started from, and nothing else is written if not.
            let moved = conn
                .prepare_cached(MOVE_VERSION)
                .and_then(|mut update| {
                    update.execute(params![
                        id,
                        to,
                        at,
                        added,
                        expected_version,
                        expected_len,
                        counted,
                    ])
                })
                .map_err(failed)?;
            if moved == 0 {
                let found: Option<i64> = conn
                    .prepare_cached("SELECT version FROM sessions WHERE id = ?")
                    .and_then(|mut select| select.query_row([&id], |row| row.get(0)).optional())
                    .map_err(failed)?;
                return Err(StoreError::VersionMoved {
                    expected: *from_version,
                    found: found.and_then(|v| u64::try_from(v).ok()),
                });
            }
            insert_messages(conn, &id, *from, messages, completed())?;
            for key in keys {
                claim_key(conn, key)?;
            }
            // The pruning before the records: it sees the records as they were before
            // this commit, as in Postgres, where the commit is one statement.
            if let Some(bounds) = prune {
                prune_turns(conn, &id, *bounds)?;
            }
            let not_completed = turns.iter().filter(|turn| turn.status != COMPLETED);
            for turn in not_completed.chain(completed().skip(on_rows)) {
                record_turn(conn, turn)?;
            }
            Ok(1)
        }
        Write::RecordTurn(turn, bounds) => {
            record_turn(conn, turn)?;
            if let Some(bounds) = bounds {
                prune_turns(conn, &turn.session.to_string(), *bounds)?;
            }
            Ok(1)
        }
        Write::Delete { id } => delete_session(conn, *id),
        Write::KeepKey(key) => {
            #[cfg(feature = "fault-injection")]
            if key.key == super::fault_injection::ANSWER_NOT_KEPT {
                return Err(StoreError::Unavailable(
                    "fault injection: the answer is not kept".into(),
                ));
            }
            let answer = key.answer.as_ref();
            let history = answer.and_then(|a| a.history.as_ref());
            let answer_values = [
                answer.map(|a| i64::from(a.status)).into(),
                answer.map(|a| headers_json(&a.headers)).transpose()?.into(),
                answer.map(|a| a.body.clone()).into(),
                history.map(|(session, _, _)| session.to_string()).into(),
                history.map(|(_, len, _)| integer(*len)).transpose()?.into(),
                history.map(|(_, _, after)| after.clone()).into(),
            ];
            let values = key_values(key)?.into_iter().chain(answer_values);
            conn.prepare_cached(KEEP_KEY)
                .and_then(|mut keep| keep.execute(params_from_iter(values)))
                .map_err(failed)?;
            Ok(1)
        }
        Write::Touch(sessions) => {
            let mut touch = conn
                .prepare_cached("UPDATE sessions SET active_at = max(active_at, ?) WHERE id = ?")
                .map_err(failed)?;
            for (id, at) in sessions {
                touch
                    .execute(params![at.to_rfc3339(), id.to_string()])
                    .map_err(failed)?;
            }
            Ok(1)
        }
        Write::Expire { id, before } => {
            let idle = conn
                .prepare_cached("SELECT 1 FROM sessions WHERE id = ? AND active_at < ?")
                .and_then(|mut select| select.exists(params![id.to_string(), before.to_rfc3339()]))
                .map_err(failed)?;
            if idle {
                delete_session(conn, *id)
            } else {
                Ok(0)
            }
        }
        Write::ForgetKeys { before } => conn
            .prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?")
            .and_then(|mut forget| forget.execute([before.to_rfc3339()]))
            .map_err(failed)
            .map(|forgotten| forgotten as u64),
    }
}

/// A commit's move of its session to the new version (and its activity to the commit's
/// time), only from the version and length it started from. Unlike Postgres's
/// (`postgres.rs`), it moves the activity every time: SQLite rewrites an index entry
/// whenever its column is set, to the same value or not, and a second statement to move
/// it less often costs what it saves (BENCHMARKS.md, "Tried and not kept").
/// It also counts the completed turns' records the commit puts on its rows
/// (`turns_on_rows`, which tells a pruning whether any are past the bounds). Parameters:
/// session, version, time, messages added, version and length it started from, records
/// put on rows.
const MOVE_VERSION: &str = "
    UPDATE sessions SET version = ?2, updated_at = ?3, active_at = ?3,
                        messages = messages + ?4, turns_on_rows = turns_on_rows + ?7
    WHERE id = ?1 AND version = ?5 AND messages = ?6";

/// The rows a deleted session's heir shares become its own (as Postgres's
/// `HAND_ROWS_TO_HEIR`), without the records of the session's completed turns: those
/// were its turns, not the heir's. Parameters: heir, session, rows shared.
pub(super) const HAND_ROWS_TO_HEIR: &str = "
    UPDATE messages SET session_id = ?1, turn_id = NULL, turn_created_at = NULL,
                        turn_record = NULL
    WHERE session_id = ?2 AND seq < ?3";

/// Inserts messages of a session from `from` on, one prepared row at a time, the
/// records of `completed` turns on the first of them, one a row (as many as there are
/// rows).
fn insert_messages<'a>(
    conn: &Connection,
    session: &str,
    from: usize,
    messages: &[Message],
    mut completed: impl Iterator<Item = &'a TurnRow>,
) -> Result<(), StoreError> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO messages (session_id, seq, role, content, tool_calls, tool_call_id,
                                   interrupted, created_at, turn_id, turn_created_at,
                                   turn_record)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .map_err(failed)?;
    for (seq, message) in (from..).zip(messages) {
        let turn = completed.next();
        insert
            .execute(params![
                session,
                integer(seq)?,
                role_name(message.role),
                &*message.content,
                tool_calls(message)?,
                message.tool_call_id,
                message.interrupted,
                message.created_at.to_rfc3339(),
                turn.map(|turn| turn.id.to_string()),
                turn.map(|turn| turn.created_at.to_rfc3339()),
                turn.map(|turn| turn.record.as_str()),
            ])
            .map_err(failed)?;
    }
    Ok(())
}

/// Deletes a session (and its rows, records and keys' turns), first handing the rows its
/// forks share to one of them (`HEIR`); how many sessions were deleted.
fn delete_session(conn: &Connection, id: Uuid) -> Result<u64, StoreError> {
    let key = id.to_string();
    let heir: Option<(String, i64)> = conn
        .prepare_cached(HEIR)
        .and_then(|mut heir| {
            heir.query_row([&key], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(failed)?;
    if let Some((heir, shared)) = heir {
        let handed = [
            (HAND_ROWS_TO_HEIR, params![heir, key, shared]),
            (REBASE_FORKS, params![heir, key]),
            (REBASE_HEIR, params![key, shared, heir]),
        ];
        for (sql, values) in handed {
            conn.prepare_cached(sql)
                .and_then(|mut statement| statement.execute(values))
                .map_err(failed)?;
        }
    }
    conn.prepare_cached("DELETE FROM sessions WHERE id = ?")
        .and_then(|mut delete| delete.execute([&key]))
        .map_err(failed)
        .map(|deleted| deleted as u64)
}

fn record_turn(conn: &Connection, turn: &TurnRow) -> Result<(), StoreError> {
    conn.prepare_cached(RECORD_TURN)
        .and_then(|mut record| {
            record.execute(params![
                turn.session.to_string(),
                turn.id.to_string(),
                turn.created_at.to_rfc3339(),
                turn.status,
                turn.record,
            ])
        })
        .map_err(failed)?;
    Ok(())
}

/// Claims a key for a commit (`CLAIM_KEY`).
fn claim_key(conn: &Connection, key: &KeyRecord) -> Result<(), StoreError> {
    let values = key_values(key)?;
    conn.prepare_cached(CLAIM_KEY)
        .and_then(|mut claim| claim.execute(params_from_iter(values)))
        .map_err(failed)?;
    Ok(())
}

/// A key record's first columns, as `CLAIM_KEY` and `KEEP_KEY` take them: owner, key,
/// route, body digest, created at, turn.
fn key_values(key: &KeyRecord) -> Result<[Value; 6], StoreError> {
    Ok([
        owner_column(key.owner.as_deref()).to_owned().into(),
        key.key.clone().into(),
        key.route.clone().into(),
        key.body_digest.to_vec().into(),
        key.created_at.to_rfc3339().into(),
        key.turn.as_ref().map(json).transpose()?.into(),
    ])
}

/// Drops a session's ended turn records past `bounds`: those of `turns`
/// (`PRUNE_TURNS`), and, if its rows hold more completed ones than `bounds.records`, those
/// older than the newest `bounds.records` (`CLEAR_COMPLETED`), from where the last
/// pruning stopped: a pruning reads the records kept and the rows added since, however
/// long the history, and nothing at all while the rows hold no more than the bounds.
fn prune_turns(conn: &Connection, session: &str, bounds: TurnBounds) -> Result<(), StoreError> {
    let (records, failed_ones) = (integer(bounds.records)?, integer(bounds.failed)?);
    conn.prepare_cached(PRUNE_TURNS)
        .and_then(|mut prune| prune.execute(params![session, records, failed_ones]))
        .map_err(failed)?;
    let newest_dropped: Option<i64> = conn
        .prepare_cached(NEWEST_DROPPED)
        .and_then(|mut select| {
            select
                .query_row(params![session, records], |row| row.get(0))
                .optional()
        })
        .map_err(failed)?
        .flatten();
    if let Some(seq) = newest_dropped {
        conn.prepare_cached(CLEAR_COMPLETED)
            .and_then(|mut clear| clear.execute(params![session, seq]))
            .and_then(|_| {
                conn.prepare_cached(
                    "UPDATE sessions SET turns_from = ?2 + 1, turns_on_rows = ?3 WHERE id = ?1",
                )
            })
            .and_then(|mut noted| noted.execute(params![session, seq, records]))
            .map_err(failed)?;
    }
    Ok(())
}

/// The row of the newest completed record past the newest `records` of a session, if
/// its rows hold more than `records`. Parameters: session, records.
pub(super) const NEWEST_DROPPED: &str = "
    SELECT (SELECT seq FROM messages WHERE session_id = ?1 AND turn_id IS NOT NULL
            ORDER BY seq DESC LIMIT 1 OFFSET ?2)
    FROM sessions WHERE id = ?1 AND turns_on_rows > ?2";

/// Clears the completed turn records on a session's rows from where the last clearing
/// stopped (`sessions.turns_from`) up to a row, that one included (the caller then notes
/// where it stopped, and that the rows hold as many as the bounds keep). Parameters:
/// session, the row.
pub(super) const CLEAR_COMPLETED: &str = "
    UPDATE messages SET turn_id = NULL, turn_created_at = NULL, turn_record = NULL
    WHERE session_id = ?1 AND turn_id IS NOT NULL AND seq <= ?2
      AND seq >= (SELECT turns_from FROM sessions WHERE id = ?1)";

/// A new session's insert that failed: its source is gone if the reference to it was
/// refused (a fork made as its source was deleted).
fn creating(row: &SessionRow, error: rusqlite::Error) -> StoreError {
    match (&error, row.forked_from) {
        (rusqlite::Error::SqliteFailure(refused, _), Some(fork))
            if refused.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            StoreError::Gone(fork.session_id)
        }
        _ => failed(error),
    }
}
