//! A session's live feed: every turn's events and every commit, in order, for any number
//! of followers (another tab, a second device). Each item is numbered `(version, seq)`:
//! the committed version when it happened and its place since that commit (a commit
//! itself is `(version, 0)`), so a follower resumes from what it last saw, or from a
//! version it read.
//!
//! One bounded log per session, shared by all its followers: a follower is a cursor,
//! never a copy, so a slow one costs nothing; one that falls behind the log's start is
//! told to resynchronise and its feed ends. Commits are always kept (a few, while nobody
//! follows); turn events only once the feed has been followed. A commit holds no
//! messages: they are read from the history, which only ever grows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::Stream;
use tokio::sync::watch;
use uuid::Uuid;

use super::Commit;
use super::events::TurnEvent;
use crate::memory::{Account, Charge};
use crate::message::ITEM_OVERHEAD;

/// How many items and bytes a session's feed keeps.
#[derive(Debug, Clone, Copy)]
pub struct FeedLimits {
    /// Items kept once the feed has been followed.
    pub events: usize,
    /// Bytes of turn events kept (text, tool calls); the oldest go first.
    pub bytes: usize,
}

/// Commits kept by a feed nobody has followed yet: enough for a client that read the
/// session a moment ago to open the feed from its version.
const UNFOLLOWED_COMMITS: usize = 32;

/// What happened.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// An event of a turn (for a turn several writers joined, under its first writer's
    /// id; each writer's `turn.waiting` under its own, and the turn's start and end
    /// naming them all in `joined`).
    Turn {
        turn_id: Uuid,
        event: Arc<TurnEvent>,
        joined: Option<Arc<[Uuid]>>,
    },
    /// A commit (`turn_id` the turn that made it): the history as of `commit`.
    Committed { turn_id: Uuid, commit: Commit },
}

/// What a follower gets next.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Event {
        version: u64,
        seq: u64,
        event: FeedEvent,
    },
    /// The follower missed what the feed no longer holds: read the session again and
    /// follow from its version. The last item of a feed.
    Resync { version: u64 },
}

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStart {
    /// From now on.
    Now,
    /// After the item `(version, seq)` it saw last; `(version, 0)`: after that commit.
    After { version: u64, seq: u64 },
}

#[derive(Debug)]
struct Entry {
    version: u64,
    seq: u64,
    event: FeedEvent,
    bytes: usize,
}

#[derive(Debug)]
struct State {
    entries: VecDeque<Entry>,
    /// The absolute number of `entries[0]`.
    first: u64,
    /// The committed version, and the number of the last item since it.
    version: u64,
    seq: u64,
    /// The oldest place a follower can resume from: every item after it is held (the
    /// last item let go, or where the feed began).
    held_after: (u64, u64),
    /// Turn events are kept (someone has followed).
    followed: bool,
    held: Charge,
    closed: bool,
}

/// One session's feed.
#[derive(Debug)]
pub struct Feed {
    limits: FeedLimits,
    state: Mutex<State>,
    /// The absolute number of the next item; followers wait on it.
    appended: watch::Sender<u64>,
    /// Someone has followed (as `State::followed`, read without the lock): until then
    /// a turn's events, one per piece of every reply, cost no lock.
    followed: AtomicBool,
}

impl Feed {
    /// The feed of a session at `version`.
    pub fn new(version: u64, limits: FeedLimits, account: &Account) -> Self {
        Self {
            limits,
            state: Mutex::new(State {
                entries: VecDeque::new(),
                first: 0,
                version,
                seq: 0,
                held_after: (version, 0),
                followed: false,
                held: account.charge(0),
                closed: false,
            }),
            appended: watch::Sender::new(0),
            followed: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a turn's event (kept only once the feed has been followed); `joined`: the
    /// writers of a joined turn, for its start and end.
    pub fn turn_event(&self, turn_id: Uuid, event: &TurnEvent, joined: Option<Arc<[Uuid]>>) {
        if !self.followed.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.state();
        if !state.followed || state.closed {
            return;
        }
        let bytes = ITEM_OVERHEAD + event_bytes(event);
        state.seq += 1;
        let (version, seq) = (state.version, state.seq);
        let event = FeedEvent::Turn {
            turn_id,
            event: Arc::new(event.clone()),
            joined,
        };
        self.append(state, version, seq, event, bytes);
    }

    /// Adds a commit: the feed's version moves to it.
    pub fn committed(&self, turn_id: Uuid, commit: Commit) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        state.version = commit.version;
        state.seq = 0;
        let event = FeedEvent::Committed { turn_id, commit };
        self.append(state, commit.version, 0, event, ITEM_OVERHEAD);
    }

    fn append(
        &self,
        mut state: MutexGuard<'_, State>,
        version: u64,
        seq: u64,
        event: FeedEvent,
        bytes: usize,
    ) {
        state.held.add(bytes);
        state.entries.push_back(Entry {
            version,
            seq,
            event,
            bytes,
        });
        let keep = if state.followed {
            self.limits.events.max(1)
        } else {
            UNFOLLOWED_COMMITS
        };
        while state.entries.len() > keep
            || (state.held.bytes() > self.limits.bytes && state.entries.len() > 1)
        {
            let Some(gone) = state.entries.pop_front() else {
                break;
            };
            state.first += 1;
            state.held.sub(gone.bytes);
            state.held_after = (gone.version, gone.seq);
        }
        let next = state.first + state.entries.len() as u64;
        drop(state);
        self.appended.send_replace(next);
    }

    /// Ends every follower's feed (the session is gone or moved): they read what is
    /// left, then end.
    pub fn close(&self) {
        self.state().closed = true;
        self.appended.send_modify(|_| {});
    }

    /// The items from `start` on, live, until the session ends or the follower falls
    /// behind (then a last `Resync`). The feed keeps turn events from now on.
    pub fn follow(
        self: &Arc<Self>,
        start: FeedStart,
    ) -> impl Stream<Item = FeedItem> + Send + 'static {
        let next = {
            let mut state = self.state();
            state.followed = true;
            self.followed.store(true, Ordering::Release);
            let end = state.first + state.entries.len() as u64;
            match start {
                FeedStart::Now => Some(end),
                FeedStart::After { version, seq } => resume_at(&state, version, seq),
            }
        };
        let follower = Follower {
            feed: self.clone(),
            next,
            appended: self.appended.subscribe(),
            done: false,
        };
        futures::stream::unfold(follower, |mut follower| async move {
            let item = follower.next_item().await?;
            Some((item, follower))
        })
    }
}

/// Where a follower that saw `(version, seq)` last goes on: after that item if the feed
/// holds it; else, if nothing after it was let go, after the commit of `version` (the
/// item was numbered by an earlier life of the feed: a restart, another process); else
/// nowhere (`None`: resynchronise).
fn resume_at(state: &State, version: u64, seq: u64) -> Option<u64> {
    if (version, seq) < state.held_after || version > state.version {
        return None;
    }
    let mut after_commit = None;
    for (n, entry) in state.entries.iter().enumerate() {
        let at = state.first + n as u64;
        if entry.version == version && entry.seq == seq {
            return Some(at + 1);
        }
        if after_commit.is_none() && entry.version >= version {
            after_commit = Some(if entry.version == version && entry.seq == 0 {
                at + 1
            } else {
                at
            });
        }
    }
    Some(after_commit.unwrap_or(state.first + state.entries.len() as u64))
}

fn event_bytes(event: &TurnEvent) -> usize {
    match event {
        TurnEvent::TextDelta(text) => text.len(),
        TurnEvent::ToolCall(call) => call.size_estimate(),
        TurnEvent::Completed { result, .. } => result.as_ref().map_or(0, |r| r.size_estimate()),
        TurnEvent::Cancelled { result, .. } => result.size_estimate(),
        TurnEvent::Waiting { .. } | TurnEvent::Started | TurnEvent::Failed(_) => 0,
    }
}

struct Follower {
    feed: Arc<Feed>,
    /// The absolute number of the next item to hand out; `None`: resynchronise.
    next: Option<u64>,
    appended: watch::Receiver<u64>,
    done: bool,
}

impl Follower {
    async fn next_item(&mut self) -> Option<FeedItem> {
        if self.done {
            return None;
        }
        loop {
            {
                let state = self.feed.state();
                let Some(next) = self.next.filter(|&next| next >= state.first) else {
                    self.done = true;
                    return Some(FeedItem::Resync {
                        version: state.version,
                    });
                };
                if let Some(entry) = state.entries.get((next - state.first) as usize) {
                    self.next = Some(next + 1);
                    return Some(FeedItem::Event {
                        version: entry.version,
                        seq: entry.seq,
                        event: entry.event.clone(),
                    });
                }
                if state.closed {
                    return None;
                }
            }
            // A push between the check and here is not lost: the receiver remembers.
            self.appended.changed().await.ok()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBudget;
    use crate::message::Timestamp;
    use futures::StreamExt;

    fn feed(events: usize) -> Arc<Feed> {
        Arc::new(Feed::new(
            1,
            FeedLimits {
                events,
                bytes: 1 << 20,
            },
            &MemoryBudget::unbounded().account(None),
        ))
    }

    fn commit(version: u64) -> Commit {
        Commit {
            from: 0,
            len: version as usize,
            version,
            updated_at: Timestamp::now(),
        }
    }

    fn ids(items: &[FeedItem]) -> Vec<(u64, u64)> {
        items
            .iter()
            .filter_map(|item| match item {
                FeedItem::Event { version, seq, .. } => Some((*version, *seq)),
                FeedItem::Resync { .. } => None,
            })
            .collect()
    }

    async fn take(stream: impl Stream<Item = FeedItem> + Unpin, n: usize) -> Vec<FeedItem> {
        stream.take(n).collect().await
    }

    #[tokio::test]
    async fn items_are_numbered_by_version_and_place_since_the_commit() {
        let feed = feed(100);
        let follower = Box::pin(feed.follow(FeedStart::Now));
        let turn = Uuid::new_v4();
        feed.turn_event(turn, &TurnEvent::Started, None);
        feed.turn_event(turn, &TurnEvent::TextDelta("a".into()), None);
        feed.committed(turn, commit(2));
        feed.turn_event(turn, &TurnEvent::Started, None);
        assert_eq!(
            ids(&take(follower, 4).await),
            [(1, 1), (1, 2), (2, 0), (2, 1)]
        );
    }

    #[tokio::test]
    async fn a_follower_resumes_after_what_it_saw_or_after_a_version_it_read() {
        let feed = feed(100);
        let _first = feed.follow(FeedStart::Now);
        let turn = Uuid::new_v4();
        feed.turn_event(turn, &TurnEvent::Started, None);
        feed.committed(turn, commit(2));
        feed.turn_event(turn, &TurnEvent::Started, None);
        feed.committed(turn, commit(3));
        feed.close();
        let after = |version, seq| feed.follow(FeedStart::After { version, seq });
        assert_eq!(
            ids(&after(1, 1).collect::<Vec<_>>().await),
            [(2, 0), (2, 1), (3, 0)]
        );
        assert_eq!(
            ids(&after(2, 0).collect::<Vec<_>>().await),
            [(2, 1), (3, 0)]
        );
        // Numbered by an earlier life of the feed: from the commit of its version on.
        assert_eq!(
            ids(&after(2, 9).collect::<Vec<_>>().await),
            [(2, 1), (3, 0)]
        );
        assert_eq!(
            ids(&after(3, 0).collect::<Vec<_>>().await),
            Vec::<(u64, u64)>::new()
        );
    }

    #[tokio::test]
    async fn a_follower_behind_the_start_of_the_feed_is_told_to_resync_and_its_feed_ends() {
        let feed = feed(3);
        let mut slow = Box::pin(feed.follow(FeedStart::Now));
        let turn = Uuid::new_v4();
        feed.turn_event(turn, &TurnEvent::Started, None);
        assert!(matches!(
            slow.next().await,
            Some(FeedItem::Event { seq: 1, .. })
        ));
        for _ in 0..5 {
            feed.turn_event(turn, &TurnEvent::TextDelta("x".into()), None);
        }
        feed.committed(turn, commit(2));
        assert!(matches!(
            slow.next().await,
            Some(FeedItem::Resync { version: 2 })
        ));
        assert!(slow.next().await.is_none());
        // Resuming from before the oldest commit held is a resync too.
        for version in 3..8 {
            feed.committed(turn, commit(version));
        }
        let mut late = Box::pin(feed.follow(FeedStart::After { version: 2, seq: 0 }));
        assert!(matches!(
            late.next().await,
            Some(FeedItem::Resync { version: 7 })
        ));
    }

    #[tokio::test]
    async fn resuming_from_before_a_turn_event_that_was_let_go_resyncs() {
        let feed = feed(3);
        let _follower = feed.follow(FeedStart::Now);
        let turn = Uuid::new_v4();
        feed.committed(turn, commit(2));
        for _ in 0..4 {
            feed.turn_event(turn, &TurnEvent::TextDelta("x".into()), None);
        }
        // (2, 1) went: resuming before it cannot be whole.
        for start in [(2, 0), (1, 0)] {
            let (version, seq) = start;
            let mut resumed = Box::pin(feed.follow(FeedStart::After { version, seq }));
            assert!(
                matches!(resumed.next().await, Some(FeedItem::Resync { .. })),
                "{start:?}"
            );
        }
        let mut resumed = Box::pin(feed.follow(FeedStart::After { version: 2, seq: 1 }));
        assert!(matches!(
            resumed.next().await,
            Some(FeedItem::Event {
                version: 2,
                seq: 2,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn before_anyone_follows_only_commits_are_kept() {
        let feed = feed(100);
        let turn = Uuid::new_v4();
        feed.turn_event(turn, &TurnEvent::Started, None);
        feed.committed(turn, commit(2));
        feed.close();
        let items: Vec<_> = feed
            .follow(FeedStart::After { version: 1, seq: 0 })
            .collect()
            .await;
        assert_eq!(ids(&items), [(2, 0)]);
    }
}
