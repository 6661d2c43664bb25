//! What the SQL backends share: reading a session or a message out of a row, and the
//! text a value is stored as. Each backend says how a column of each kind is read
//! (`Columns`); what the columns mean is said once, here.

use uuid::Uuid;

use super::{KeyAnswer, KeyRecord, SessionRow, StoreError, TurnRow};
use crate::message::{Message, Role, Timestamp, ToolCall};

/// How a backend reads one column of each kind a row holds.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn maybe_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn integer(&self, column: &str) -> Result<i64, StoreError>;
    fn maybe_integer(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn maybe_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
    fn id(&self, column: &str) -> Result<Uuid, StoreError>;
    fn maybe_id(&self, column: &str) -> Result<Option<Uuid>, StoreError>;
    fn time(&self, column: &str) -> Result<Timestamp, StoreError>;
}

/// A `sessions` row.
pub(super) fn session_row(row: &impl Columns) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: row.id("id")?,
        owner: row.maybe_text("owner")?,
        provider: row.text("provider")?,
        model: row.text("model")?,
        defaults: from_json(&row.text("defaults")?)?,
        tools: from_json(&row.text("tools")?)?,
        metadata: from_json(&row.text("metadata")?)?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        version: count(row.integer("version")?)?,
        forked_from: row
            .maybe_text("forked_from")?
            .map(|text| from_json(&text))
            .transpose()?,
    })
}

/// A `messages` row.
pub(super) fn message(row: &impl Columns) -> Result<Message, StoreError> {
    let role = row.text("role")?;
    Ok(Message {
        role: match role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(corrupt(format!("role `{other}`"))),
        },
        content: row.text("content")?.into(),
        tool_calls: match row.maybe_text("tool_calls")? {
            Some(calls) => from_json::<Vec<ToolCall>>(&calls)?,
            None => Vec::new(),
        },
        tool_call_id: row.maybe_text("tool_call_id")?,
        interrupted: row.flag("interrupted")?,
        created_at: row.time("created_at")?,
    })
}

/// A `turns` row.
pub(super) fn turn_row(row: &impl Columns) -> Result<TurnRow, StoreError> {
    Ok(TurnRow {
        session: row.id("session_id")?,
        id: row.id("id")?,
        created_at: row.time("created_at")?,
        status: row.text("status")?,
        record: row.text("record")?,
    })
}

/// A session's whole history, in order: the rows it shares with the session it was
/// forked from (and so on down), then its own. Each session in the chain gives the rows
/// from its own start (`base_len`) up to where the one above it starts. Parameter: the
/// session.
pub(super) const LOAD_MESSAGES: &str = "
    WITH RECURSIVE chain (id, lo, hi, base_id) AS (
        SELECT id, COALESCE(base_len, 0), messages, base_id FROM sessions WHERE id = $1
      UNION ALL
        SELECT s.id, COALESCE(s.base_len, 0), CASE WHEN c.lo < c.hi THEN c.lo ELSE c.hi END,
               s.base_id
        FROM sessions s JOIN chain c ON s.id = c.base_id)
    SELECT m.role, m.content, m.tool_calls, m.tool_call_id, m.interrupted, m.created_at
    FROM chain c
    JOIN messages m ON m.session_id = c.id AND m.seq >= c.lo AND m.seq < c.hi
    ORDER BY m.seq";

/// When a session that others were forked from is deleted, the fork sharing the most of
/// its rows (its heir) takes them over, and the others then read them from the heir.
/// Every session a delete changes, locked in one order (by id) so that deletes of
/// sessions of one tree never wait on each other in a circle: the session, its base and
/// its forks. Parameter: the session; Postgres only (`FOR UPDATE`).
pub(super) const LOCK_FOR_DELETE: &str = "
    SELECT id FROM sessions
    WHERE id = $1 OR base_id = $1 OR id = (SELECT base_id FROM sessions WHERE id = $1)
    ORDER BY id FOR UPDATE";

/// The heir: id and how many rows it shares. Parameter: the session.
pub(super) const HEIR: &str =
    "SELECT id, base_len FROM sessions WHERE base_id = $1 ORDER BY base_len DESC, id LIMIT 1";

/// The rows the heir shares become its own. Parameters: heir, session, rows shared.
pub(super) const HAND_ROWS_TO_HEIR: &str =
    "UPDATE messages SET session_id = $1 WHERE session_id = $2 AND seq < $3";

/// The other forks read from the heir. Parameters: heir, session.
pub(super) const REBASE_FORKS: &str =
    "UPDATE sessions SET base_id = $1 WHERE base_id = $2 AND id <> $1";

/// The heir starts where the session started (on its base, if it had one). Parameters:
/// session, rows the heir shares, heir.
pub(super) const REBASE_HEIR: &str = "
    UPDATE sessions SET
        base_id = (SELECT base_id FROM sessions WHERE id = $1),
        base_len = (SELECT CASE WHEN base_id IS NULL THEN NULL
                                WHEN base_len < $2 THEN base_len ELSE $2 END
                    FROM sessions WHERE id = $1)
    WHERE id = $3";

/// Where a new session's history starts in its own rows, and the session whose rows it
/// shares before that (a fork: its source's first `up_to`).
pub(super) fn base_of(row: &SessionRow) -> (Option<Uuid>, usize) {
    match row.forked_from {
        Some(fork) => (Some(fork.session_id), fork.up_to),
        None => (None, 0),
    }
}

/// Drops a session's ended turn records past its bounds: all but the last `records`, and
/// besides them the last `failed` failed ones. A session within `records` (most) is
/// left at its count, read once, without sorting its records twice. Parameters: session,
/// records, failed (`$n`, which SQLite reads as named parameters numbered by first use,
/// so one text serves both backends).
pub(super) const PRUNE_TURNS: &str = "
    DELETE FROM turns WHERE session_id = $1
      AND (SELECT count(*) FROM turns WHERE session_id = $1) > $2
      AND id NOT IN (SELECT id FROM turns WHERE session_id = $1
                     ORDER BY created_at DESC, id DESC LIMIT $2)
      AND id NOT IN (SELECT id FROM turns WHERE session_id = $1 AND status = 'failed'
                     ORDER BY created_at DESC, id DESC LIMIT $3)";

/// Writes an ended turn's record, in place of an earlier one of the same turn.
/// Parameters: session, id, created at, status, record.
pub(super) const RECORD_TURN: &str = concat!(
    "INSERT INTO turns (session_id, id, created_at, status, record) VALUES (?, ?, ?, ?, ?) ",
    record_turn_conflict!()
);

/// What a turn's record written again replaces.
macro_rules! record_turn_conflict {
    () => {
        "ON CONFLICT (session_id, id) DO UPDATE SET status = excluded.status,
                                                    record = excluded.record"
    };
}
pub(super) use record_turn_conflict;

/// An `idempotency_keys` row.
pub(super) fn key_record(row: &impl Columns) -> Result<KeyRecord, StoreError> {
    let owner = row.text("owner")?;
    let body_digest = row.maybe_bytes("body_digest")?.unwrap_or_default();
    let answer = match row.maybe_integer("status")? {
        None => None,
        Some(status) => Some(KeyAnswer {
            status: count(status)?,
            headers: from_json::<Vec<(String, String)>>(
                &row.maybe_text("headers")?.unwrap_or_else(|| "[]".into()),
            )?
            .into_iter()
            .map(|(name, value)| (name, value.into_bytes()))
            .collect(),
            body: row.maybe_bytes("body")?.unwrap_or_default(),
            history: match (
                row.maybe_id("history_session")?,
                row.maybe_integer("history_len")?,
            ) {
                (Some(session), Some(len)) => Some((
                    session,
                    count(len)?,
                    row.maybe_bytes("body_after")?.unwrap_or_default(),
                )),
                _ => None,
            },
        }),
    };
    Ok(KeyRecord {
        owner: (!owner.is_empty()).then_some(owner),
        key: row.text("key")?,
        route: row.text("route")?,
        body_digest: body_digest
            .try_into()
            .map_err(|_| corrupt("a body digest that is not 32 bytes".into()))?,
        created_at: row.time("created_at")?,
        turn: row.maybe_text("turn")?.map(|t| from_json(&t)).transpose()?,
        answer,
    })
}

/// An answer's headers as stored: JSON pairs of name and (text) value.
pub(super) fn headers_json(headers: &[(String, Vec<u8>)]) -> Result<String, StoreError> {
    json(
        &headers
            .iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(value)))
            .collect::<Vec<_>>(),
    )
}

/// A key record's owner as stored: `''` without API keys (a key column is never NULL).
pub(super) fn owner_column(owner: Option<&str>) -> &str {
    owner.unwrap_or("")
}

/// How a message's role is stored.
pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A message's tool calls as stored: JSON, or nothing when it made none.
pub(super) fn tool_calls(message: &Message) -> Result<Option<String>, StoreError> {
    if message.tool_calls.is_empty() {
        Ok(None)
    } else {
        json(&message.tool_calls).map(Some)
    }
}

/// A value as the JSON text it is stored as (kept as written, key order included).
pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("stored JSON: {e}")))
}

/// A count or position as the store's integer.
pub(super) fn integer<T: TryInto<i64>>(value: T) -> Result<i64, StoreError> {
    value
        .try_into()
        .map_err(|_| StoreError::Unavailable("a number too large for the store".into()))
}

/// A stored integer as a count or position.
pub(super) fn count<T: TryFrom<i64>>(value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(format!("a count of {value}")))
}

pub(super) fn corrupt(what: String) -> StoreError {
    StoreError::Unavailable(format!("unreadable row: {what}"))
}

/// Writes a key's record as a commit claims it: the request and the turn, any older
/// record of the key (and its answer) replaced. Parameters: owner, key, route, body
/// digest, created at, turn.
pub(super) const CLAIM_KEY: &str = concat!(
    "INSERT INTO idempotency_keys (owner, key, route, body_digest, created_at, turn)
     VALUES (?, ?, ?, ?, ?, ?) ",
    claim_key_conflict!()
);

/// What a key claimed again replaces: its older record, and its answer.
macro_rules! claim_key_conflict {
    () => {
        "ON CONFLICT (owner, key) DO UPDATE SET
             route = excluded.route, body_digest = excluded.body_digest,
             created_at = excluded.created_at, turn = excluded.turn,
             status = NULL, headers = NULL, body = NULL,
             history_session = NULL, history_len = NULL, body_after = NULL"
    };
}
pub(super) use claim_key_conflict;

/// Writes a key's record with its answer; the turn a commit wrote for this same request
/// (same creation time) stays. Parameters: owner, key, route, body digest, created at,
/// turn, status, headers, body, history session, history length, body after.
pub(super) const KEEP_KEY: &str = "
    INSERT INTO idempotency_keys (owner, key, route, body_digest, created_at, turn, status,
                                  headers, body, history_session, history_len, body_after)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (owner, key) DO UPDATE SET
        turn = CASE WHEN idempotency_keys.created_at = excluded.created_at
                    THEN idempotency_keys.turn ELSE excluded.turn END,
        route = excluded.route, body_digest = excluded.body_digest,
        created_at = excluded.created_at, status = excluded.status,
        headers = excluded.headers, body = excluded.body,
        history_session = excluded.history_session, history_len = excluded.history_len,
        body_after = excluded.body_after";

/// `sql` with its `?` parameters numbered (`$1`, `$2`, …), as Postgres takes them.
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 1;
    for c in sql.chars() {
        if c == '?' {
            out.push_str(&format!("${n}"));
            n += 1;
        } else {
            out.push(c);
        }
    }
    out
}
