//! A turn's events, in order: what a streaming client receives, what a client that
//! reconnects replays, what a non-streaming client never sees. Appended only by the
//! turn's own task; followed by any number of readers, each from the event it names.
//!
//! Retention drops an ended turn's events (`forget`), but never from under a reader:
//! while readers are attached the events stay, so every reader, however far behind,
//! gets to the terminal event; the last one to leave lets them go.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::Stream;
use tokio::sync::watch;

use super::Commit;
use super::turn::{TurnError, TurnResult};
use crate::memory::{Account, Charge, MemoryBudget};
use crate::message::{ITEM_OVERHEAD, ToolCall};

/// What happened in a turn.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEvent {
    /// The turn had to wait; `position` 1 is next.
    Waiting { position: usize },
    /// The turn took the turn lock.
    Started,
    /// More reply text.
    TextDelta(String),
    /// A complete tool call.
    ToolCall(ToolCall),
    /// Committed; the session as of `commit` goes with it. No result for tool outputs.
    Completed {
        result: Option<Arc<TurnResult>>,
        commit: Commit,
    },
    /// Nothing was committed.
    Failed(TurnError),
    /// Stopped by a cancel: `result` holds the partial text, `commit` what was kept.
    Cancelled {
        result: Arc<TurnResult>,
        commit: Option<Commit>,
    },
}

impl TurnEvent {
    /// Roughly the bytes the event holds.
    fn size_estimate(&self) -> usize {
        match self {
            TurnEvent::ToolCall(call) => call.size_estimate(),
            TurnEvent::TextDelta(text) => ITEM_OVERHEAD + text.len(),
            TurnEvent::Completed { result, .. } => {
                ITEM_OVERHEAD + result.as_deref().map_or(0, TurnResult::size_estimate)
            }
            TurnEvent::Cancelled { result, .. } => ITEM_OVERHEAD + result.size_estimate(),
            TurnEvent::Waiting { .. } | TurnEvent::Started | TurnEvent::Failed(_) => ITEM_OVERHEAD,
        }
    }

    /// Whether the turn ends with this event.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TurnEvent::Completed { .. } | TurnEvent::Failed(_) | TurnEvent::Cancelled { .. }
        )
    }
}

/// The events of one turn. Sequence numbers start at 1 and have no gaps.
#[derive(Debug)]
pub struct EventLog {
    state: Mutex<LogState>,
    /// How many events were appended; followers wait on it.
    appended: watch::Sender<usize>,
}

#[derive(Debug)]
struct LogState {
    events: Vec<Arc<TurnEvent>>,
    /// The bytes `events` hold, on the session's account.
    held: Charge,
    ended: bool,
    /// Retention let the turn go: no new replay; the events go once no reader is left.
    forgotten: bool,
    /// The events were dropped (forgotten, and no reader was attached).
    dropped: bool,
    /// Readers attached now.
    followers: usize,
    /// The terminal event, kept when retention drops the rest: how the turn ended.
    terminal: Option<Arc<TurnEvent>>,
}

impl LogState {
    fn drop_events_if_unread(&mut self) {
        if self.forgotten && self.followers == 0 {
            self.events = Vec::new();
            let held = self.held.bytes();
            self.held.sub(held);
            self.dropped = true;
        }
    }
}

impl Default for EventLog {
    /// A log whose bytes count on no budget.
    fn default() -> Self {
        Self::new(&MemoryBudget::unbounded().account(None))
    }
}

impl EventLog {
    /// An empty log whose events count on `account`.
    pub fn new(account: &Account) -> Self {
        Self {
            state: Mutex::new(LogState {
                events: Vec::new(),
                held: account.charge(0),
                ended: false,
                forgotten: false,
                dropped: false,
                followers: 0,
                terminal: None,
            }),
            appended: watch::Sender::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event; a terminal event ends the log. Nothing is appended after the end.
    pub fn push(&self, event: TurnEvent) {
        let count = {
            let mut state = self.state();
            if state.ended {
                return;
            }
            state.ended = event.is_terminal();
            state.held.add(event.size_estimate());
            let event = Arc::new(event);
            if state.ended {
                state.terminal = Some(event.clone());
            }
            state.events.push(event);
            state.events.len()
        };
        // Only followers wait on it, and telling them wakes eight lists of waiters: with
        // none there is no one to tell (one that comes later subscribes before it reads
        // the log, and so finds this event there or is told of it).
        if self.appended.receiver_count() > 0 {
            self.appended.send_replace(count);
        }
    }

    /// Waits for the turn to end; its terminal event.
    pub async fn ending(&self) -> Arc<TurnEvent> {
        let mut appended = self.appended.subscribe();
        loop {
            if let Some(terminal) = self.state().terminal.clone() {
                return terminal;
            }
            // The sender lives as long as `self`, so this only waits for the next push.
            let _ = appended.changed().await;
        }
    }

    /// Whether the terminal event was appended.
    pub fn has_ended(&self) -> bool {
        self.state().ended
    }

    /// Whether retention let the turn go: it can no longer be replayed.
    pub fn is_forgotten(&self) -> bool {
        self.state().forgotten
    }

    /// Lets the events of an ended turn go: at once if no reader is attached, else
    /// when the last one leaves.
    pub fn forget(&self) {
        let mut state = self.state();
        state.forgotten = true;
        state.drop_events_if_unread();
    }

    /// Whether any piece of a reply (text or a tool call) was recorded.
    pub fn has_reply_pieces(&self) -> bool {
        self.state().events.iter().any(|event| {
            matches!(
                event.as_ref(),
                TurnEvent::TextDelta(_) | TurnEvent::ToolCall(_)
            )
        })
    }

    /// The reply text streamed so far.
    pub fn text_so_far(&self) -> String {
        self.state()
            .events
            .iter()
            .filter_map(|event| match event.as_ref() {
                TurnEvent::TextDelta(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The events after sequence number `after` (0 for all), then the live ones as they
    /// come, until the terminal event. Each item is `(seq, event)`. While the stream
    /// lives the events stay, whatever retention says; nothing, if they are gone.
    pub fn follow(
        self: &Arc<Self>,
        after: usize,
    ) -> impl Stream<Item = (usize, Arc<TurnEvent>)> + Send + 'static {
        let attached = {
            let mut state = self.state();
            if !state.dropped {
                state.followers += 1;
            }
            !state.dropped
        };
        let follower = Follower {
            attached,
            log: self.clone(),
            next: after + 1,
            ready: VecDeque::new(),
            appended: self.appended.subscribe(),
        };
        futures::stream::unfold(follower, |mut follower| async move {
            let item = follower.next_event().await?;
            Some((item, follower))
        })
    }

    /// Whether there is anything after sequence number `after`, or more may come.
    pub fn has_more_after(&self, after: usize) -> bool {
        let state = self.state();
        !state.ended || state.events.len() > after
    }
}

struct Follower {
    /// Counted among the log's readers (false when the events were already gone).
    attached: bool,
    log: Arc<EventLog>,
    /// The sequence number of the next event to hand out.
    next: usize,
    ready: VecDeque<(usize, Arc<TurnEvent>)>,
    appended: watch::Receiver<usize>,
}

impl Follower {
    async fn next_event(&mut self) -> Option<(usize, Arc<TurnEvent>)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            {
                let state = self.log.state();
                let start = self.next - 1;
                if start < state.events.len() {
                    for (offset, event) in state.events[start..].iter().enumerate() {
                        self.ready.push_back((self.next + offset, event.clone()));
                    }
                    self.next = state.events.len() + 1;
                    continue;
                }
                if state.ended || state.dropped {
                    return None;
                }
            }
            // Wakes on the next push; a push between the check and here is not lost,
            // since the receiver remembers what it has seen.
            self.appended.changed().await.ok()?;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.attached {
            let mut state = self.log.state();
            state.followers -= 1;
            state.drop_events_if_unread();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn text(t: &str) -> TurnEvent {
        TurnEvent::TextDelta(t.into())
    }

    #[tokio::test]
    async fn a_follower_gets_past_events_then_live_ones_until_the_end() {
        let log = Arc::new(EventLog::default());
        log.push(TurnEvent::Started);
        log.push(text("a"));
        let follower = log.follow(0);
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                log.push(text("b"));
                log.push(TurnEvent::Failed(TurnError::Internal("x".into())));
                log.push(text("after the end is ignored"));
            })
        };
        let events: Vec<_> = follower.collect().await;
        writer.await.unwrap();
        let seqs: Vec<_> = events.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert!(events[3].1.is_terminal());
        assert_eq!(log.text_so_far(), "ab");
    }

    #[tokio::test]
    async fn following_after_an_event_skips_it_and_those_before() {
        let log = Arc::new(EventLog::default());
        for t in ["a", "b", "c"] {
            log.push(text(t));
        }
        log.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        let seqs: Vec<_> = log.follow(2).map(|(seq, _)| seq).collect().await;
        assert_eq!(seqs, [3, 4]);
        assert!(!log.has_more_after(4));
        assert!(log.has_more_after(3));
    }

    #[tokio::test]
    async fn the_ending_is_kept_after_the_events_go() {
        let log = Arc::new(EventLog::default());
        let waiting = {
            let log = log.clone();
            tokio::spawn(async move { log.ending().await })
        };
        log.push(TurnEvent::Started);
        log.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        log.forget();
        assert!(waiting.await.unwrap().is_terminal());
        assert!(log.ending().await.is_terminal());
    }

    #[tokio::test]
    async fn a_forgotten_log_replays_nothing() {
        let log = Arc::new(EventLog::default());
        log.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        log.forget();
        assert!(log.is_forgotten());
        assert_eq!(log.follow(0).count().await, 0);
    }

    #[tokio::test]
    async fn a_reader_behind_retention_still_reads_to_the_terminal_event() {
        let log = Arc::new(EventLog::default());
        log.push(TurnEvent::Started);
        let mut behind = Box::pin(log.follow(0));
        assert_eq!(behind.next().await.map(|(seq, _)| seq), Some(1));
        log.push(text("a"));
        log.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        log.forget();
        assert!(log.is_forgotten(), "no new replay once let go");
        let rest: Vec<_> = behind
            .map(|(seq, event)| (seq, event.is_terminal()))
            .collect()
            .await;
        assert_eq!(rest, [(2, false), (3, true)]);
        assert_eq!(
            log.follow(0).count().await,
            0,
            "gone once the last reader left"
        );
    }
}
