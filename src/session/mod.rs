//! The domain: sessions, their history, the turn lock and turns. Knows nothing of HTTP.
//!
//! A session's committed history sits behind a short-lived `std::sync::RwLock` that is
//! never held across an `.await`: readers borrow it to render a snapshot, the one
//! turn holding the turn lock appends to it when it commits.

pub mod context;
mod create;
pub mod events;
pub mod feed;
mod kept;
mod live;
pub mod records;
pub mod runtime;
mod settings;
mod stored_turn;
pub mod turn;
mod turn_lock;
mod view;
pub mod writers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use uuid::Uuid;

use self::feed::Feed;
use self::kept::KeptJson;
use self::records::{TurnRecord, TurnRecords, TurnStatus};
use crate::keys::KeyId;
use crate::memory::{Account, Charge};
use crate::message::{Defaults, ForkedFrom, Message, Timestamp, Tool};
use crate::provider::Provider;
use crate::store::{CommitRows, KeyRecord, KeyTurn, SessionRow, Store, StoreError};

pub use create::{
    HistoryTooShort, Invalid, MAX_ID_CHARS, NewSession, check_id, check_length,
    validate_instructions,
};
pub use live::{LiveSessions, SessionLimit};
pub use settings::{Limits, Settings};
pub use turn_lock::{CancelMode, LockError, LockStatus, OnBusy, Priority, RANK_NAMES, TurnLock};
pub use view::{
    EncodedHistory, SessionHead, SessionStatus, SessionSummary, SessionView, WrittenSession,
};

/// One chat session: fixed settings, its committed history and its turn lock.
#[derive(Debug)]
pub struct Session {
    pub id: Uuid,
    /// The name the session was created with, e.g. `openai` or `ollama`.
    pub provider_name: String,
    pub provider: Arc<Provider>,
    pub model: String,
    pub defaults: Defaults,
    pub tools: Vec<Tool>,
    pub metadata: Map<String, Value>,
    pub created_at: Timestamp,
    /// The session it was forked from, if it was.
    pub forked_from: Option<ForkedFrom>,
    /// What the session may hold.
    pub limits: Limits,
    /// The memory account of the session's API key.
    pub account: Account,
    /// The API key the session belongs to (`None` when no keys are configured).
    pub owner: Option<KeyId>,
    /// When the session was last read or written, for idle expiry.
    last_active: Mutex<Instant>,
    history: RwLock<History>,
    turn_lock: TurnLock,
    turns: TurnRecords,
    /// The live feed of its turns and commits.
    feed: Arc<Feed>,
    /// Set when a commit found the stored session at another version than this copy
    /// (another process committed to it), or failed without knowing whether it landed:
    /// this copy is no longer the session.
    stale: AtomicBool,
    /// The lease epoch this process holds the session by, which fences its commits in
    /// a store several processes share; 0 where it is the only writer.
    epoch: AtomicU64,
}

/// The committed history and what changes with it.
#[derive(Debug)]
pub struct History {
    pub messages: Vec<Message>,
    /// The bytes `messages` hold, on the session's account.
    held: Charge,
    pub updated_at: Timestamp,
    /// Bumped on every commit.
    pub version: u64,
    /// `messages` as the API writes them, kept for the answers that carry them (locked
    /// only while an answer is written, under the history's read lock).
    pub encoded: Mutex<EncodedHistory>,
    /// `messages` as the session's provider is sent them, kept for its requests (locked
    /// only by the turn, while it prepares its request under the history's read lock).
    pub sent: Mutex<KeptJson>,
}

/// Every this many commits, a session's stored turn records are brought back within
/// their bounds (in the commit's transaction).
pub const PRUNE_TURNS_EVERY: u64 = 16;

/// The turn a commit ends, and how: the records of its writers, and the
/// `Idempotency-Key` records of those that came with one, are written in the commit's
/// own transaction (so that after a crash the one is listed and the other replays).
#[derive(Debug, Clone, Copy)]
pub struct Committing<'a> {
    pub writers: &'a [Arc<TurnRecord>],
    pub status: TurnStatus,
    pub result: Option<&'a turn::TurnResult>,
    /// Whether the writers' keys are claimed (not for an answer that is an error).
    pub claim_keys: bool,
}

/// Where a commit left the history: `messages[..len]` is the session as of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Commit {
    /// How many messages the history held before this commit.
    pub from: usize,
    /// How many it holds after.
    pub len: usize,
    pub version: u64,
    pub updated_at: Timestamp,
}

impl Session {
    /// The turn lock of this session: one writer at a time.
    pub fn turn_lock(&self) -> &TurnLock {
        &self.turn_lock
    }

    /// The session's recent turns.
    pub fn turns(&self) -> &TurnRecords {
        &self.turns
    }

    /// The session's live feed.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// Borrows the committed history; keep the closure short and free of `.await`.
    pub fn read<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.history())
    }

    fn history(&self) -> RwLockReadGuard<'_, History> {
        // Nothing panics while holding the write lock; a poisoned lock is still whole.
        self.history.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a turn's messages as one step: first to the store (durable before it is
    /// acknowledged), then to the history in memory. Only the holder of the turn lock
    /// calls it, so the history cannot move between the two; no lock is held across the
    /// store's `.await`. If the store fails, nothing is appended anywhere.
    pub(crate) async fn commit(
        &self,
        messages: Vec<Message>,
        store: &Store,
        turn: Committing<'_>,
    ) -> Result<Commit, StoreError> {
        let (from, version) = self.read(|h| (h.messages.len(), h.version));
        let updated_at = Timestamp::now();
        let mut keys = Vec::new();
        if turn.claim_keys {
            // Encoded for the first writer that came with a key (most come without).
            let mut result = None;
            for writer in turn.writers {
                let input = writer.input();
                let Some(request) = &input.key else {
                    continue;
                };
                let result = result
                    .get_or_insert_with(|| {
                        turn.result
                            .and_then(|result| serde_json::to_value(result).ok())
                    })
                    .clone();
                keys.push(KeyRecord {
                    turn: Some(KeyTurn {
                        session: self.id,
                        turn_id: writer.id,
                        result,
                        from,
                        len: from + messages.len(),
                        version: version + 1,
                        updated_at,
                    }),
                    ..request.clone()
                });
            }
        }
        // The records as the store keeps them: none to encode where nothing is kept.
        let records: Vec<_> = turn
            .writers
            .iter()
            .filter(|_| store.is_durable())
            .map(|writer| writer.to_row_ending(self.id, turn.status, turn.result))
            .collect();
        store
            .commit(CommitRows {
                session: self.id,
                from_version: version,
                version: version + 1,
                from,
                messages: &messages,
                updated_at,
                keys: &keys,
                turns: &records,
                prune: (version % PRUNE_TURNS_EVERY == 0).then(|| self.turns.bounds()),
                epoch: Some(self.epoch.load(Ordering::Acquire)).filter(|&epoch| epoch > 0),
            })
            .await
            .inspect_err(|error| {
                // The store is ahead of this copy, or may be (a commit whose answer was
                // lost with a broken connection may have landed), or another process
                // serves the session now. Either way the store is the truth, and the
                // session is read from it again on next use.
                tracing::warn!(session_id = %self.id, %error, "the commit failed; the session will be loaded again from the store");
                self.mark_stale();
            })?;
        let mut history = self.history.write().unwrap_or_else(PoisonError::into_inner);
        history
            .held
            .add(messages.iter().map(Message::size_estimate).sum());
        history.messages.extend(messages);
        history.version = version + 1;
        history.updated_at = updated_at;
        let commit = Commit {
            from,
            len: history.messages.len(),
            version: history.version,
            updated_at,
        };
        drop(history);
        if let Some(lead) = turn.writers.first() {
            self.feed.committed(lead.id, commit);
        }
        Ok(commit)
    }

    /// Writes an ended turn's record that no commit wrote (a turn that failed, was
    /// cancelled or turned away, or one retried since), bringing the session's stored
    /// records back within their bounds. A store that fails loses only the record.
    pub async fn keep_record(&self, record: &TurnRecord, store: &Store) {
        if !store.is_durable() {
            return;
        }
        let Some(row) = record.to_row(self.id) else {
            return;
        };
        if let Err(error) = store.record_turn(&row, Some(self.turns.bounds())).await {
            tracing::warn!(turn_id = %record.id, %error, "an ended turn's record was not stored");
        }
    }

    /// Whether a commit found the store ahead of this copy.
    /// Notes the lease this process now holds the session by (`Store::take_lease`).
    pub fn hold(&self, lease_epoch: u64) {
        self.epoch.store(lease_epoch, Ordering::Release);
    }

    /// Notes that this copy is no longer the session (another process took it over):
    /// it leaves memory on its next use, and is loaded again.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
        // Its followers reconnect, and are served by whoever serves it now.
        self.feed.close();
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }

    /// The session as the store keeps it (everything but its messages).
    pub fn row(&self) -> SessionRow {
        self.read(|history| SessionRow {
            id: self.id,
            owner: self.owner.map(|key| key.to_hex()),
            provider: self.provider_name.clone(),
            model: self.model.clone(),
            defaults: self.defaults.clone(),
            tools: self.tools.clone(),
            metadata: self.metadata.clone(),
            created_at: self.created_at,
            updated_at: history.updated_at,
            version: history.version,
            forked_from: self.forked_from,
        })
    }

    /// When the session was last read or written.
    fn last_active(&self) -> Instant {
        *self
            .last_active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes a read or a write at `now`, which keeps the session from expiring.
    fn touch(&self, now: Instant) {
        *self
            .last_active
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// Whether the session has been idle for `ttl` at `now`: no read or write, no
    /// running or waiting turn.
    fn is_idle_for(&self, ttl: Duration, now: Instant) -> bool {
        let status = self.turn_lock.status();
        let last = *self
            .last_active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        !status.busy && status.waiting == 0 && now.saturating_duration_since(last) >= ttl
    }

    /// Ends the session: its running turn is cancelled, its waiters turned away.
    pub fn close(&self) {
        self.turn_lock.close();
        self.feed.close();
    }
}
