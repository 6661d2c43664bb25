//! The settings every session shares, fixed at start: how many writers may wait, the
//! bounds on what one session may hold, and how long its ended turns are remembered.

use super::feed::FeedLimits;
use super::records::Retention;

/// Bounds on what one session may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Characters in one message.
    pub message_chars: usize,
    /// Messages in the history (creation instructions included).
    pub messages: usize,
    /// Tools of the session.
    pub tools: usize,
    /// Bytes of `metadata` as compact JSON.
    pub metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            message_chars: 100_000,
            messages: 10_000,
            tools: 128,
            metadata_bytes: 16 * 1024,
        }
    }
}

/// Settings every session shares.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Writers that may wait for one session's turn lock.
    pub max_waiting_per_session: usize,
    pub limits: Limits,
    /// How many ended turns are remembered, and for how long.
    pub turns: Retention,
    /// What a session's live feed keeps.
    pub feed: FeedLimits,
}
