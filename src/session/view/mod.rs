//! Snapshots of a session as the API shows them. They borrow the committed history
//! under its read lock and are written there (by hand: `json.rs`), so no history is
//! copied to answer.

use std::sync::{MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Commit, History, Session};
use crate::message::{Defaults, ForkedFrom, Message, Timestamp, Tool};
use crate::store::SessionRow;

mod encoded;
mod json;

pub use encoded::EncodedHistory;

/// Whether a turn runs now and how many writers wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// A turn holds the turn lock.
    pub busy: bool,
    /// Writers waiting for the turn lock now.
    pub waiting: usize,
    /// The turn holding the turn lock, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub running_turn_id: Option<Uuid>,
    /// When that turn took the lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
}

/// Everything about a session but its messages.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionHead<'a> {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(example = "echo")]
    pub provider: &'a str,
    #[schema(example = "echo-1")]
    pub model: &'a str,
    pub defaults: &'a Defaults,
    pub tools: &'a [Tool],
    #[schema(value_type = Object)]
    pub metadata: &'a Map<String, Value>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// Bumped on every commit.
    pub version: u64,
    pub status: SessionStatus,
    /// Only on a fork: the session it was forked from, that session's version then, and
    /// how many of its messages the fork started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkedFrom>,
}

/// A session with its history.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Session)]
pub struct SessionView<'a> {
    #[serde(flatten)]
    pub head: SessionHead<'a>,
    pub messages: &'a [Message],
    /// `messages` already written as JSON (the members of its array), where kept.
    #[serde(skip)]
    pub messages_json: Option<&'a [u8]>,
}

/// The session in a write's answer, as of the write's commit: what this write appended
/// (`newMessages`), and the whole history (`messages`) unless the write asked for
/// `?view=delta`. One shape for both views, so that the default needs no narrowing.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WrittenSession<'a> {
    #[serde(flatten)]
    pub head: SessionHead<'a>,
    /// The messages this write appended, in order.
    pub new_messages: &'a [Message],
    /// The whole history as of this write; left out with `?view=delta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<Message>, required = false)]
    pub messages: Option<&'a [Message]>,
    /// `messages` already written as JSON (the members of its array), where kept.
    #[serde(skip)]
    pub messages_json: Option<&'a [u8]>,
}

/// A session in a list: no messages, their count instead.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary<'a> {
    #[serde(flatten)]
    pub head: SessionHead<'a>,
    pub message_count: usize,
}

impl History {
    /// The history kept as JSON: written up to the messages asked for, then copied
    /// (locked only while an answer is written, under the history's read lock).
    fn encoded(&self) -> MutexGuard<'_, EncodedHistory> {
        self.encoded.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Session {
    fn head<'a>(&'a self, history: &History, as_of: Option<Commit>) -> SessionHead<'a> {
        let status = self.turn_lock.status();
        SessionHead {
            id: self.id,
            provider: &self.provider_name,
            model: &self.model,
            defaults: &self.defaults,
            tools: &self.tools,
            metadata: &self.metadata,
            created_at: self.created_at,
            updated_at: as_of.map_or(history.updated_at, |c| c.updated_at),
            version: as_of.map_or(history.version, |c| c.version),
            status: SessionStatus {
                busy: status.busy,
                waiting: status.waiting,
                running_turn_id: status.running.map(|(id, _)| id),
                started_at: status.running.map(|(_, since)| since),
            },
            forked_from: self.forked_from,
        }
    }

    /// Renders the session as of `as_of` (a commit of this session), or as it is now.
    pub fn render<R>(&self, as_of: Option<Commit>, f: impl FnOnce(&SessionView<'_>) -> R) -> R {
        self.read(|history| {
            let len = as_of.map_or(history.messages.len(), |c| c.len);
            let messages = &history.messages[..len.min(history.messages.len())];
            let mut encoded = history.encoded();
            let view = SessionView {
                head: self.head(history, as_of),
                messages,
                messages_json: encoded.members(messages),
            };
            f(&view)
        })
    }

    /// Renders the session as of `commit` with what that commit appended, and its whole
    /// history as of then if `with_history`.
    pub fn render_written<R>(
        &self,
        commit: Commit,
        with_history: bool,
        f: impl FnOnce(&WrittenSession<'_>) -> R,
    ) -> R {
        self.read(|history| {
            let end = commit.len.min(history.messages.len());
            let mut encoded = with_history.then(|| history.encoded());
            let written = WrittenSession {
                head: self.head(history, Some(commit)),
                new_messages: &history.messages[commit.from.min(end)..end],
                messages: with_history.then(|| &history.messages[..end]),
                messages_json: encoded
                    .as_mut()
                    .and_then(|encoded| encoded.members(&history.messages[..end])),
            };
            f(&written)
        })
    }

    /// The JSON array of the first `len` messages, byte for byte as every answer that
    /// shows the history has it; `None` when the history holds fewer.
    pub fn history_json(&self, len: usize) -> Option<Vec<u8>> {
        self.read(|history| {
            let messages = history.messages.get(..len)?;
            let mut json = Vec::new();
            json::write_history(&mut json, messages, history.encoded().members(messages));
            Some(json)
        })
    }

    /// Renders the summary of a session that is stored but not live (so idle).
    pub fn render_stored_summary<R>(
        row: &SessionRow,
        message_count: usize,
        f: impl FnOnce(&SessionSummary<'_>) -> R,
    ) -> R {
        let summary = SessionSummary {
            head: SessionHead {
                id: row.id,
                provider: &row.provider,
                model: &row.model,
                defaults: &row.defaults,
                tools: &row.tools,
                metadata: &row.metadata,
                created_at: row.created_at,
                updated_at: row.updated_at,
                version: row.version,
                status: SessionStatus {
                    busy: false,
                    waiting: 0,
                    running_turn_id: None,
                    started_at: None,
                },
                forked_from: row.forked_from,
            },
            message_count,
        };
        f(&summary)
    }

    /// Renders the session's summary as it is now.
    pub fn render_summary<R>(&self, f: impl FnOnce(&SessionSummary<'_>) -> R) -> R {
        self.read(|history| {
            let summary = SessionSummary {
                head: self.head(history, None),
                message_count: history.messages.len(),
            };
            f(&summary)
        })
    }
}
