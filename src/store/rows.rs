//! What the SQL backends share: reading a session or a message out of a row, and the
//! text a value is stored as. Each backend says how a column of each kind is read
//! (`Columns`); what the columns mean is said once, here.

use uuid::Uuid;

use super::{SessionRow, StoreError};
use crate::message::{Message, Role, Timestamp, ToolCall};

/// How a backend reads one column of each kind a row holds.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn maybe_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn integer(&self, column: &str) -> Result<i64, StoreError>;
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
    fn id(&self, column: &str) -> Result<Uuid, StoreError>;
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
        content: row.text("content")?,
        tool_calls: match row.maybe_text("tool_calls")? {
            Some(calls) => from_json::<Vec<ToolCall>>(&calls)?,
            None => Vec::new(),
        },
        tool_call_id: row.maybe_text("tool_call_id")?,
        interrupted: row.flag("interrupted")?,
        created_at: row.time("created_at")?,
    })
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

pub(super) fn unavailable(error: sqlx::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}
