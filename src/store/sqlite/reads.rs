//! The reads, run on the connection's thread between batches (the file is held by that
//! one connection), and how a row's columns are decoded.

use std::collections::HashSet;

use rusqlite::types::FromSql;
use rusqlite::{Connection, Params, Row};
use uuid::Uuid;

use super::{COMPLETED, failed};
use crate::message::Timestamp;
use crate::store::rows::{
    Columns, LOAD_MESSAGES, corrupt, count, integer, key_record, message, owner_column,
    session_row, turn_row,
};
use crate::store::{KeyRecord, SessionPage, StoreError, StoredSession, TurnRow};

/// A session with its history and its turn records, if it is stored: those of `turns`
/// (turns that did not complete) and the newest `completed` of those on its own message
/// rows (`COMPLETED_TURNS`), oldest first.
pub(super) fn load(
    conn: &Connection,
    id: Uuid,
    completed: usize,
) -> Result<Option<StoredSession>, StoreError> {
    let key = id.to_string();
    let Some(row) = first(conn, "SELECT * FROM sessions WHERE id = ?", [&key], |row| {
        session_row(row)
    })?
    else {
        return Ok(None);
    };
    let mut turns = all(
        conn,
        "SELECT * FROM turns WHERE session_id = ?",
        [&key],
        |row| turn_row(row),
    )?;
    let kept: HashSet<Uuid> = turns.iter().map(|turn| turn.id).collect();
    let on_messages = all(conn, COMPLETED_TURNS, (&key, integer(completed)?), |row| {
        Ok(TurnRow {
            session: id,
            id: row.id("turn_id")?,
            created_at: row.time("turn_created_at")?,
            status: COMPLETED.to_owned(),
            record: row.text("turn_record")?,
        })
    })?;
    // A record written again by itself (`Write::RecordTurn`) stands in for its first.
    turns.extend(
        on_messages
            .into_iter()
            .filter(|turn| !kept.contains(&turn.id)),
    );
    turns.sort_unstable_by_key(|turn| (turn.created_at, turn.id));
    Ok(Some(StoredSession {
        row,
        messages: all(conn, LOAD_MESSAGES, [&key], |row| message(row))?,
        turns,
    }))
}

/// A session's newest completed turn records, kept on its own message rows (a fork's
/// shared rows are its source's). Parameters: session, how many.
pub(super) const COMPLETED_TURNS: &str = "
    SELECT turn_id, turn_created_at, turn_record FROM messages
    WHERE session_id = ? AND turn_id IS NOT NULL
    ORDER BY seq DESC LIMIT ?";

/// Sessions idle since before `before`, the longest idle first: id and owner.
pub(super) fn idle(
    conn: &Connection,
    before: Timestamp,
    limit: usize,
) -> Result<Vec<(Uuid, Option<String>)>, StoreError> {
    all(
        conn,
        "SELECT id, owner FROM sessions WHERE active_at < ? ORDER BY active_at LIMIT ?",
        (before.to_rfc3339(), integer(limit)?),
        |row| Ok((row.id("id")?, row.maybe_text("owner")?)),
    )
}

pub(super) fn count_by_owner(
    conn: &Connection,
) -> Result<Vec<(Option<String>, usize)>, StoreError> {
    all(
        conn,
        "SELECT owner, count(*) AS sessions FROM sessions GROUP BY owner",
        [],
        |row| Ok((row.maybe_text("owner")?, count(row.integer("sessions")?)?)),
    )
}

/// A key's record, if it was written after `since`.
pub(super) fn key(
    conn: &Connection,
    owner: Option<&str>,
    key: &str,
    since: Timestamp,
) -> Result<Option<KeyRecord>, StoreError> {
    first(
        conn,
        "SELECT * FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at > ?",
        (owner_column(owner), key, since.to_rfc3339()),
        |row| key_record(row),
    )
}

/// A page of an owner's sessions, newest first, after the cursor's.
pub(super) fn list(
    conn: &Connection,
    owner: Option<&str>,
    limit: usize,
    after: Option<(Timestamp, Uuid)>,
) -> Result<SessionPage, StoreError> {
    let (after_created, after_id) = match after {
        // Past every stored session: "~" sorts after any time.
        None => ("~".to_owned(), String::new()),
        Some((created, id)) => (created.to_rfc3339(), id.to_string()),
    };
    let mut sessions = all(
        conn,
        "SELECT * FROM sessions WHERE owner IS ? AND (created_at, id) < (?, ?)
         ORDER BY created_at DESC, id DESC LIMIT ?",
        (
            owner,
            after_created,
            after_id,
            integer(limit.saturating_add(1))?,
        ),
        |row| Ok((session_row(row)?, count(row.integer("messages")?)?)),
    )?;
    let more = sessions.len() > limit;
    sessions.truncate(limit);
    let next = more
        .then(|| sessions.last())
        .flatten()
        .map(|(row, _)| crate::store::cursor(row.created_at, row.id));
    Ok(SessionPage { sessions, next })
}

/// Every row a query gives, decoded.
fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(failed)?;
    let mut rows = statement.query(params).map_err(failed)?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next().map_err(failed)? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// The first row a query gives, decoded, if it gives one.
fn first<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(failed)?;
    let mut rows = statement.query(params).map_err(failed)?;
    rows.next().map_err(failed)?.map(decode).transpose()
}

impl Columns for Row<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        get(self, column)
    }

    fn maybe_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        get(self, column)
    }

    fn integer(&self, column: &str) -> Result<i64, StoreError> {
        get(self, column)
    }

    fn maybe_integer(&self, column: &str) -> Result<Option<i64>, StoreError> {
        get(self, column)
    }

    fn maybe_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        get(self, column)
    }

    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        get(self, column)
    }

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

fn get<T: FromSql>(row: &Row<'_>, column: &str) -> Result<T, StoreError> {
    row.get(column).map_err(failed)
}
