//! The per-session writer lock: one turn at a time, waiting writers served by priority
//! and then in arrival order (`interrupt` before all), a bound on how many may wait,
//! cancelling the holder or the waiters without waiting for the lock, and a way to end
//! it all when the session is deleted. No queue of work exists: only the writers
//! waiting for their turn, each holding its own request. What a turn does with the lock
//! is `turn.rs`'s job.
//!
//! Writers that asked to `join` are handed the lock together: when it passes to the
//! first of them in line, every joining writer waiting at that moment goes with it, as
//! one turn led by the earliest to arrive (`Grant::Lead`, naming them all); the others
//! learn who leads (`Grant::Joined`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::message::Timestamp;

/// Who goes first among waiting writers.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// A person's interventions, stop-like corrections.
    High,
    #[default]
    Normal,
    /// Automatic follow-ups.
    Low,
}

/// What a writer does when the lock is held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnBusy {
    /// Wait for the lock.
    #[default]
    Wait,
    /// Answer at once that the session is busy.
    Reject,
    /// Cancel the running turn (keeping what it had) and go before every waiter.
    Interrupt,
    /// Wait, and run as one turn with every other joining writer waiting when the lock
    /// passes to the first of them.
    Join,
}

/// What a cancelled turn leaves in the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CancelMode {
    /// Commit the turn's own messages and the partial reply, marked `interrupted`.
    #[default]
    Keep,
    /// Leave the history as it was before the turn.
    Rollback,
}

/// The names of the ranks, first to run first: `onBusy: interrupt`, then the priorities.
pub const RANK_NAMES: [&str; 4] = ["interrupt", "high", "normal", "low"];

/// Where a waiting writer stands: `interrupt` first, then by priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Interrupt,
    Priority(Priority),
}

/// Why a writer did not get the lock.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error,
)]
pub enum LockError {
    /// `onBusy: reject` and the lock is held or someone waits.
    #[error("the session is busy with another turn")]
    Busy,
    /// The bound on waiting writers is reached.
    #[error("too many writers are waiting for this session ({0})")]
    Overloaded(usize),
    /// The session was deleted.
    #[error("the session no longer exists")]
    Closed,
    /// This waiting writer was removed before its turn.
    #[error("the turn was cancelled before it started")]
    Cancelled,
}

/// What the lock looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockStatus {
    /// A turn holds the lock.
    pub busy: bool,
    /// Writers waiting for it.
    pub waiting: usize,
    /// The turn holding the lock, and since when.
    pub running: Option<(Uuid, Timestamp)>,
}

/// The turn lock of one session. Cheap to clone; clones share the lock.
#[derive(Debug, Clone)]
pub struct TurnLock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_waiting: usize,
    state: Mutex<State>,
}

type Key = (Rank, u64);

#[derive(Debug, Default)]
struct State {
    running: Option<Running>,
    /// Ordered by (rank, arrival): the first entry runs next.
    waiting: BTreeMap<Key, Waiter>,
    next_arrival: u64,
    closed: bool,
}

#[derive(Debug)]
struct Running {
    /// The writers the turn runs for, in arrival order; the first leads it.
    members: Vec<Uuid>,
    since: Timestamp,
    cancel: Arc<Cancel>,
}

/// How the holder is told to stop: the first mode asked for wins.
#[derive(Debug, Default)]
struct Cancel {
    token: CancellationToken,
    mode: OnceLock<CancelMode>,
}

impl Cancel {
    fn request(&self, mode: CancelMode) {
        let _ = self.mode.set(mode);
        self.token.cancel();
    }
}

#[derive(Debug)]
struct Waiter {
    turn_id: Uuid,
    join: bool,
    grant: oneshot::Sender<Result<Grant, LockError>>,
}

/// How a waiting writer gets its turn.
#[derive(Debug)]
pub enum Grant {
    /// The lock: this writer runs the turn, for the writers its guard names.
    Lead(TurnGuard),
    /// The writer joined the turn this one leads.
    Joined(Uuid),
}

impl TurnLock {
    /// A free lock on which at most `max_waiting` writers may wait.
    pub fn new(max_waiting: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_waiting,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code panics while holding this mutex; if one did, the state is still whole.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for the lock without waiting: the lock is taken at once if free, or a place
    /// among the waiting writers is reserved, or the writer is turned away.
    ///
    /// `waits` learns the writer's place (1 = next) before anyone can hand it the lock.
    pub fn enter(
        &self,
        turn_id: Uuid,
        priority: Priority,
        on_busy: OnBusy,
        waits: impl FnOnce(usize),
    ) -> Result<Ticket, LockError> {
        let mut state = self.state();
        if state.closed {
            return Err(LockError::Closed);
        }
        if state.running.is_none() && state.waiting.is_empty() {
            let guard = self.hand_to(&mut state, vec![turn_id]);
            return Ok(Ticket::Ready(guard));
        }
        if on_busy == OnBusy::Reject {
            return Err(LockError::Busy);
        }
        if state.waiting.len() >= self.inner.max_waiting {
            return Err(LockError::Overloaded(self.inner.max_waiting));
        }
        let rank = if on_busy == OnBusy::Interrupt {
            if let Some(running) = &state.running {
                running.cancel.request(CancelMode::Keep);
            }
            Rank::Interrupt
        } else {
            Rank::Priority(priority)
        };
        let key = (rank, state.next_arrival);
        state.next_arrival += 1;
        let (grant, granted) = oneshot::channel();
        let join = on_busy == OnBusy::Join;
        state.waiting.insert(
            key,
            Waiter {
                turn_id,
                join,
                grant,
            },
        );
        let position = state.waiting.range(..key).count() + 1;
        waits(position);
        Ok(Ticket::Waiting(WaitTicket {
            lock: self.clone(),
            key,
            position,
            granted,
        }))
    }

    /// Records `members` (the first leads) as the holder and makes its guard. Called
    /// with the state locked.
    fn hand_to(&self, state: &mut State, members: Vec<Uuid>) -> TurnGuard {
        let cancel = Arc::new(Cancel::default());
        state.running = Some(Running {
            members: members.clone(),
            since: Timestamp::now(),
            cancel: cancel.clone(),
        });
        TurnGuard {
            lock: self.clone(),
            members,
            cancel,
        }
    }

    /// Passes the lock to the first waiter (with every joining writer, if it joins), or
    /// frees it.
    fn release(&self) {
        let (mut party, guard) = {
            let mut state = self.state();
            let Some(first) = state.waiting.pop_first() else {
                state.running = None;
                return;
            };
            let mut party = vec![first];
            if party[0].1.join {
                let joining: Vec<Key> = state
                    .waiting
                    .iter()
                    .filter(|(_, waiter)| waiter.join)
                    .map(|(key, _)| *key)
                    .collect();
                party.extend(
                    joining
                        .into_iter()
                        .filter_map(|key| state.waiting.remove_entry(&key)),
                );
                party.sort_by_key(|((_, arrival), _)| *arrival);
            }
            let members = party.iter().map(|(_, waiter)| waiter.turn_id).collect();
            let guard = self.hand_to(&mut state, members);
            (party, guard)
        };
        let (_, leader) = party.remove(0);
        let leader_id = leader.turn_id;
        match leader.grant.send(Ok(Grant::Lead(guard))) {
            Ok(()) => {
                for (_, waiter) in party {
                    let _ = waiter.grant.send(Ok(Grant::Joined(leader_id)));
                }
            }
            Err(unsent) => {
                // The leader is gone: the others wait again (unless the lock was closed
                // meanwhile), and the lock passes on when the returned guard drops.
                let mut state = self.state();
                let closed = state.closed;
                if !closed {
                    for (key, waiter) in party.drain(..) {
                        state.waiting.insert(key, waiter);
                    }
                }
                drop(state);
                Self::fail(party.into_iter().collect(), LockError::Closed);
                drop(unsent);
            }
        }
    }

    /// The lock's current state.
    pub fn status(&self) -> LockStatus {
        let state = self.state();
        LockStatus {
            busy: state.running.is_some(),
            waiting: state.waiting.len(),
            running: state.running.as_ref().map(|r| (r.members[0], r.since)),
        }
    }

    /// How many writers wait, by rank, in the order of [`RANK_NAMES`].
    pub fn waiting_by_rank(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for (rank, _) in self.state().waiting.keys() {
            let slot = match rank {
                Rank::Interrupt => 0,
                Rank::Priority(Priority::High) => 1,
                Rank::Priority(Priority::Normal) => 2,
                Rank::Priority(Priority::Low) => 3,
            };
            counts[slot] += 1;
        }
        counts
    }

    /// The waiting writers' turn ids in the order they will run.
    pub fn waiting_order(&self) -> Vec<Uuid> {
        self.state().waiting.values().map(|w| w.turn_id).collect()
    }

    /// Tells the running turn to stop, without waiting for anything; its id, if one runs.
    pub fn cancel_running(&self, mode: CancelMode) -> Option<Uuid> {
        let state = self.state();
        let running = state.running.as_ref()?;
        running.cancel.request(mode);
        Some(running.members[0])
    }

    /// Tells the running turn to stop if `turn_id` is one of the writers it runs for;
    /// whether it is.
    pub fn cancel_turn(&self, turn_id: Uuid, mode: CancelMode) -> bool {
        let state = self.state();
        let Some(running) = state.running.as_ref() else {
            return false;
        };
        let runs = running.members.contains(&turn_id);
        if runs {
            running.cancel.request(mode);
        }
        runs
    }

    /// Turns every waiting writer away with `Cancelled`; their turn ids.
    pub fn cancel_waiting(&self) -> Vec<Uuid> {
        let waiters = std::mem::take(&mut self.state().waiting);
        Self::fail(waiters, LockError::Cancelled)
    }

    /// Turns one waiting writer away with `Cancelled`; whether it was waiting.
    pub fn cancel_waiter(&self, turn_id: Uuid) -> bool {
        let waiter = {
            let mut state = self.state();
            let key = state
                .waiting
                .iter()
                .find(|(_, w)| w.turn_id == turn_id)
                .map(|(key, _)| *key);
            key.and_then(|key| state.waiting.remove_entry(&key))
        };
        !Self::fail(waiter.into_iter().collect(), LockError::Cancelled).is_empty()
    }

    /// Ends the lock for good: the running turn is told to stop (as `rollback`), every
    /// waiter gets `Closed`, and later writers are turned away with `Closed`.
    pub fn close(&self) {
        let waiters = {
            let mut state = self.state();
            state.closed = true;
            if let Some(running) = &state.running {
                running.cancel.request(CancelMode::Rollback);
            }
            std::mem::take(&mut state.waiting)
        };
        Self::fail(waiters, LockError::Closed);
    }

    /// Answers waiters that were taken out of the line (outside the state lock).
    fn fail(waiters: BTreeMap<Key, Waiter>, error: LockError) -> Vec<Uuid> {
        waiters
            .into_values()
            .map(|waiter| {
                let _ = waiter.grant.send(Err(error));
                waiter.turn_id
            })
            .collect()
    }
}

/// A place reserved by [`TurnLock::enter`].
#[derive(Debug)]
pub enum Ticket {
    /// The lock was free and is now held.
    Ready(TurnGuard),
    /// The writer waits for its turn.
    Waiting(WaitTicket),
}

impl Ticket {
    /// Waits until the lock is handed over, or the writer joined a turn. Dropping the
    /// future gives the place up.
    pub async fn acquire(self) -> Result<Grant, LockError> {
        match self {
            Ticket::Ready(guard) => Ok(Grant::Lead(guard)),
            Ticket::Waiting(mut ticket) => (&mut ticket.granted)
                .await
                .unwrap_or(Err(LockError::Closed)),
        }
    }
}

impl Ticket {
    /// Where the writer stood when it entered (1 = next); `None` if it did not wait.
    pub fn position(&self) -> Option<usize> {
        match self {
            Ticket::Ready(_) => None,
            Ticket::Waiting(ticket) => Some(ticket.position),
        }
    }
}

/// A waiting writer's place; dropping it leaves the line.
#[derive(Debug)]
pub struct WaitTicket {
    lock: TurnLock,
    key: Key,
    position: usize,
    granted: oneshot::Receiver<Result<Grant, LockError>>,
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        // Still waiting: leave. Already granted: the guard inside `granted` is dropped
        // with it and releases the lock to the next writer.
        self.lock.state().waiting.remove(&self.key);
    }
}

/// Holding the turn lock. Dropping it, however the turn ends, passes the lock on.
#[derive(Debug)]
pub struct TurnGuard {
    lock: TurnLock,
    /// The writers the turn runs for, in arrival order; the first leads.
    members: Vec<Uuid>,
    cancel: Arc<Cancel>,
}

impl TurnGuard {
    /// The turn holding the lock (its leader's id).
    pub fn turn_id(&self) -> Uuid {
        self.members[0]
    }

    /// The writers the turn runs for, in arrival order: the leader alone, or every
    /// joining writer that was waiting when the lock passed to them.
    pub fn members(&self) -> &[Uuid] {
        &self.members
    }

    /// Keeps only `members` (not empty, in their order) as the writers the turn runs
    /// for: those turned away when it started are no longer part of it (nor named as
    /// running, nor cancelled through).
    pub fn narrow(&mut self, members: Vec<Uuid>) {
        if members.is_empty() || members == self.members {
            return;
        }
        if let Some(running) = self.lock.state().running.as_mut() {
            running.members = members.clone();
        }
        self.members = members;
    }

    /// Resolves, with the mode asked for, when someone tells this turn to stop.
    pub async fn cancelled(&self) -> CancelMode {
        self.cancel.token.cancelled().await;
        self.cancel.mode.get().copied().unwrap_or_default()
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.lock.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id() -> Uuid {
        Uuid::new_v4()
    }

    async fn hold(lock: &TurnLock) -> TurnGuard {
        lead(
            lock.enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
                .unwrap(),
        )
        .await
    }

    async fn lead(ticket: Ticket) -> TurnGuard {
        match ticket.acquire().await.unwrap() {
            Grant::Lead(guard) => guard,
            Grant::Joined(leader) => panic!("joined {leader}, expected to lead"),
        }
    }

    #[tokio::test]
    async fn a_free_lock_is_taken_at_once_and_freed_on_drop() {
        let lock = TurnLock::new(4);
        let guard = hold(&lock).await;
        assert!(lock.status().busy);
        assert_eq!(lock.status().running.map(|r| r.0), Some(guard.turn_id()));
        drop(guard);
        assert_eq!(
            lock.status(),
            LockStatus {
                busy: false,
                waiting: 0,
                running: None
            }
        );
    }

    #[tokio::test]
    async fn waiters_run_by_priority_then_arrival() {
        let lock = TurnLock::new(8);
        let first = hold(&lock).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [
            ("low", Priority::Low),
            ("normal-1", Priority::Normal),
            ("high", Priority::High),
            ("normal-2", Priority::Normal),
        ] {
            let ticket = lock.enter(id(), priority, OnBusy::Wait, |_| {}).unwrap();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let _guard = lead(ticket).await;
                order.lock().unwrap().push(name);
            }));
        }
        assert_eq!(lock.status().waiting, 4);
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["high", "normal-1", "normal-2", "low"]
        );
        assert!(!lock.status().busy);
    }

    #[tokio::test]
    async fn reject_is_turned_away_while_held_and_succeeds_when_free() {
        let lock = TurnLock::new(4);
        let guard = hold(&lock).await;
        let busy = lock.enter(id(), Priority::High, OnBusy::Reject, |_| {});
        assert_eq!(busy.err(), Some(LockError::Busy));
        drop(guard);
        assert!(
            lock.enter(id(), Priority::Normal, OnBusy::Reject, |_| {})
                .is_ok()
        );
    }

    #[tokio::test]
    async fn one_writer_past_the_bound_is_overloaded() {
        let lock = TurnLock::new(2);
        let _guard = hold(&lock).await;
        let _a = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let _b = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let third = lock.enter(id(), Priority::High, OnBusy::Wait, |_| {});
        assert_eq!(third.err(), Some(LockError::Overloaded(2)));
        assert_eq!(lock.status().waiting, 2);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_line_and_is_skipped() {
        let lock = TurnLock::new(4);
        let guard = hold(&lock).await;
        let gone = lock
            .enter(id(), Priority::High, OnBusy::Wait, |_| {})
            .unwrap();
        let next = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        drop(gone);
        assert_eq!(lock.status().waiting, 1);
        drop(guard);
        let guard = tokio::time::timeout(Duration::from_secs(1), lead(next))
            .await
            .unwrap();
        drop(guard);
        assert!(!lock.status().busy);
    }

    #[tokio::test]
    async fn a_granted_but_never_collected_lock_passes_on() {
        let lock = TurnLock::new(4);
        let guard = hold(&lock).await;
        let abandoned = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let next = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        drop(guard); // hands the lock to `abandoned`, which never looks
        drop(abandoned);
        let guard = tokio::time::timeout(Duration::from_secs(1), lead(next))
            .await
            .unwrap();
        drop(guard);
        assert!(!lock.status().busy);
    }

    #[tokio::test]
    async fn closing_cancels_the_holder_and_fails_waiters_and_newcomers() {
        let lock = TurnLock::new(4);
        let guard = hold(&lock).await;
        let waiter = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        lock.close();
        tokio::time::timeout(Duration::from_secs(1), guard.cancelled())
            .await
            .unwrap();
        assert_eq!(waiter.acquire().await.err(), Some(LockError::Closed));
        assert_eq!(
            lock.enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
                .err(),
            Some(LockError::Closed)
        );
    }

    #[tokio::test]
    async fn an_interrupt_cancels_the_holder_as_keep_and_goes_before_high_waiters() {
        let lock = TurnLock::new(8);
        let holder = hold(&lock).await;
        let high = lock
            .enter(id(), Priority::High, OnBusy::Wait, |_| {})
            .unwrap();
        let interrupt_id = id();
        let interrupt = lock
            .enter(interrupt_id, Priority::Low, OnBusy::Interrupt, |_| {})
            .unwrap();
        assert_eq!(interrupt.position(), Some(1));
        assert_eq!(high.position(), Some(1));
        assert_eq!(lock.waiting_order()[0], interrupt_id);
        let mode = tokio::time::timeout(Duration::from_secs(1), holder.cancelled())
            .await
            .unwrap();
        assert_eq!(mode, CancelMode::Keep);
        drop(holder);
        let next = lead(interrupt).await;
        assert_eq!(next.turn_id(), interrupt_id);
        drop(next);
        drop(high);
    }

    #[tokio::test]
    async fn cancel_running_tells_the_holder_the_mode_and_the_first_mode_wins() {
        let lock = TurnLock::new(4);
        assert_eq!(lock.cancel_running(CancelMode::Keep), None);
        let holder = hold(&lock).await;
        assert_eq!(
            lock.cancel_running(CancelMode::Rollback),
            Some(holder.turn_id())
        );
        lock.cancel_running(CancelMode::Keep);
        assert_eq!(holder.cancelled().await, CancelMode::Rollback);
    }

    #[tokio::test]
    async fn waiters_can_be_cancelled_all_at_once_or_one_by_one() {
        let lock = TurnLock::new(8);
        let holder = hold(&lock).await;
        let (a, b, c) = (id(), id(), id());
        let ta = lock
            .enter(a, Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let tb = lock
            .enter(b, Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let tc = lock
            .enter(c, Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        assert_eq!(tc.position(), Some(3));
        assert!(lock.cancel_waiter(b));
        assert!(!lock.cancel_waiter(b));
        assert_eq!(lock.waiting_order(), [a, c]);
        assert_eq!(tb.acquire().await.err(), Some(LockError::Cancelled));
        assert_eq!(lock.cancel_waiting(), [a, c]);
        assert_eq!(ta.acquire().await.err(), Some(LockError::Cancelled));
        assert_eq!(tc.acquire().await.err(), Some(LockError::Cancelled));
        assert!(lock.status().busy);
        drop(holder);
        assert!(!lock.status().busy);
    }

    #[tokio::test]
    async fn a_panicking_holder_still_releases() {
        let lock = TurnLock::new(4);
        let ticket = lock
            .enter(id(), Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let task = tokio::spawn(async move {
            let _guard = lead(ticket).await;
            panic!("inside a turn");
        });
        assert!(task.await.is_err());
        assert!(!lock.status().busy);
    }

    #[tokio::test]
    async fn joining_writers_waiting_when_the_first_of_them_is_next_run_as_one_turn() {
        let lock = TurnLock::new(8);
        let holder = hold(&lock).await;
        let (j1, plain, j2, j3) = (id(), id(), id(), id());
        let t1 = lock
            .enter(j1, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        let tp = lock
            .enter(plain, Priority::Normal, OnBusy::Wait, |_| {})
            .unwrap();
        let t2 = lock.enter(j2, Priority::Low, OnBusy::Join, |_| {}).unwrap();
        let t3 = lock
            .enter(j3, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        drop(holder);
        // The joined turn takes its earliest member's place, ahead of the plain writer.
        let guard = lead(t1).await;
        assert_eq!(guard.members(), [j1, j2, j3]);
        assert_eq!(lock.status().running.map(|r| r.0), Some(j1));
        for ticket in [t2, t3] {
            assert!(matches!(ticket.acquire().await, Ok(Grant::Joined(leader)) if leader == j1));
        }
        assert_eq!(lock.waiting_order(), [plain]);
        assert!(
            lock.cancel_turn(j3, CancelMode::Keep),
            "any member names the turn"
        );
        assert_eq!(guard.cancelled().await, CancelMode::Keep);
        drop(guard);
        let next = lead(tp).await;
        assert_eq!(next.members(), [plain], "a plain writer never joins");
    }

    #[tokio::test]
    async fn a_plain_writer_first_in_line_runs_alone_and_joiners_wait_for_the_next_turn() {
        let lock = TurnLock::new(8);
        let holder = hold(&lock).await;
        let (high, j1) = (id(), id());
        let tj = lock
            .enter(j1, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        let th = lock
            .enter(high, Priority::High, OnBusy::Wait, |_| {})
            .unwrap();
        drop(holder);
        let guard = lead(th).await;
        assert_eq!(guard.members(), [high]);
        let j2 = id();
        let tj2 = lock
            .enter(j2, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        drop(guard);
        assert_eq!(lead(tj).await.members(), [j1, j2]);
        assert!(matches!(tj2.acquire().await, Ok(Grant::Joined(_))));
    }

    #[tokio::test]
    async fn a_joining_writer_removed_before_the_turn_is_left_out() {
        let lock = TurnLock::new(8);
        let holder = hold(&lock).await;
        let (a, b, c) = (id(), id(), id());
        let ta = lock
            .enter(a, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        let tb = lock
            .enter(b, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        let _tc = lock
            .enter(c, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        assert!(lock.cancel_waiter(b));
        drop(holder);
        assert_eq!(lead(ta).await.members(), [a, c]);
        assert_eq!(tb.acquire().await.err(), Some(LockError::Cancelled));
    }

    #[tokio::test]
    async fn when_the_leader_is_gone_the_next_joiner_leads() {
        let lock = TurnLock::new(8);
        let holder = hold(&lock).await;
        let (a, b) = (id(), id());
        let gone = lock
            .enter(a, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        let tb = lock
            .enter(b, Priority::Normal, OnBusy::Join, |_| {})
            .unwrap();
        // Its place is kept until it is dropped; drop the receiver alone to race it.
        let Ticket::Waiting(mut waiting) = gone else {
            panic!("expected to wait")
        };
        waiting.granted.close();
        drop(holder);
        let guard = tokio::time::timeout(Duration::from_secs(1), lead(tb))
            .await
            .unwrap();
        assert_eq!(guard.members(), [b]);
        drop(guard);
        drop(waiting);
        assert!(!lock.status().busy);
    }
}
