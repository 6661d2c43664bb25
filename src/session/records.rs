//! The session's record of its recent turns: what each asked for, where it stands
//! (waiting, running, ended and how), its timings, and its events for replay. This is a
//! view onto the turn lock's waiters and the turns' own tasks, not a queue: nothing here
//! decides what runs next. Bounded in count and age; waiting and running turns are
//! always kept.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::events::{EventLog, TurnEvent};
use super::stored_turn::{self, StoredTurn};
use super::turn::{TurnError, TurnInput, TurnResult};
use crate::memory::{Account, Charge};
use crate::message::Timestamp;
use crate::store::{TurnBounds, TurnRow};

/// Where a turn stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TurnStatus {
    /// Waiting for the turn lock.
    Waiting,
    /// Holding the turn lock.
    Running,
    /// Committed.
    Completed,
    /// Ended without committing (provider error, timeout, a bug).
    Failed,
    /// Stopped by a cancel, an interrupt, a removal or a delete.
    Cancelled,
    /// Turned away before it ran (busy, overloaded, stale version).
    Rejected,
}

impl TurnStatus {
    fn has_ended(self) -> bool {
        !matches!(self, TurnStatus::Waiting | TurnStatus::Running)
    }

    /// Its name, as the API and the store write it.
    pub fn name(self) -> &'static str {
        match self {
            TurnStatus::Waiting => "waiting",
            TurnStatus::Running => "running",
            TurnStatus::Completed => "completed",
            TurnStatus::Failed => "failed",
            TurnStatus::Cancelled => "cancelled",
            TurnStatus::Rejected => "rejected",
        }
    }
}

/// The `Instant` that was `at` on the wall clock (as near as now allows; long ago is
/// `None`).
fn instant_of(at: Timestamp) -> Option<Instant> {
    let ago = Timestamp::now()
        .unix_millis()
        .saturating_sub(at.unix_millis());
    Instant::now().checked_sub(Duration::from_millis(u64::try_from(ago).unwrap_or(0)))
}

/// One turn as the session remembers it.
#[derive(Debug)]
pub struct TurnRecord {
    pub id: Uuid,
    /// What the write asked for (shared with the turn's task, not copied); a retry runs
    /// it again. Once the turn has completed, without its messages: they are in the
    /// history.
    input: Mutex<Arc<TurnInput>>,
    pub created_at: crate::message::Timestamp,
    created: Instant,
    pub events: Arc<EventLog>,
    state: Mutex<RecordState>,
    /// The bytes this record holds (its input and result), on its session's account.
    held: Mutex<Charge>,
}

/// What changes as the turn runs.
#[derive(Debug, Clone)]
pub struct RecordState {
    pub status: TurnStatus,
    pub result: Option<Arc<TurnResult>>,
    pub error: Option<TurnError>,
    /// Provider calls made (retries included).
    pub attempts: u32,
    pub started_at: Option<crate::message::Timestamp>,
    pub ended_at: Option<crate::message::Timestamp>,
    /// From creation to taking the lock.
    pub waited: Option<Duration>,
    /// Time spent in provider calls.
    pub provider: Option<Duration>,
    /// From taking the lock to the first piece of the reply.
    pub first_token: Option<Duration>,
    /// From taking the lock to the end.
    pub held: Option<Duration>,
    /// The turn that retried this one.
    pub retried_by: Option<Uuid>,
    retry_claimed: bool,
    started: Option<Instant>,
    ended: Option<Instant>,
}

impl TurnRecord {
    fn new(id: Uuid, input: Arc<TurnInput>, status: TurnStatus, account: &Account) -> Self {
        Self {
            held: Mutex::new(account.charge(input.size_estimate())),
            id,
            input: Mutex::new(input),
            created_at: crate::message::Timestamp::now(),
            created: Instant::now(),
            events: Arc::new(EventLog::new(account)),
            state: Mutex::new(RecordState {
                status,
                result: None,
                error: None,
                attempts: 0,
                started_at: None,
                ended_at: None,
                waited: None,
                provider: None,
                first_token: None,
                held: None,
                retried_by: None,
                retry_claimed: false,
                started: None,
                ended: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, RecordState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record as the store keeps it, once it has ended (`None` before).
    pub fn to_row(&self, session: Uuid) -> Option<TurnRow> {
        let state = self.snapshot();
        state
            .status
            .has_ended()
            .then(|| self.row_of(session, &state, state.result.as_deref()))
    }

    /// The record as the store keeps it, as it will be once the commit under way ends
    /// the turn with `status` and `result`: written in that commit's transaction.
    pub fn to_row_ending(
        &self,
        session: Uuid,
        status: TurnStatus,
        result: Option<&TurnResult>,
    ) -> TurnRow {
        // Before it ends, a turn has no result to copy.
        let mut state = self.snapshot();
        end(&mut state, status);
        self.row_of(session, &state, result)
    }

    fn row_of(&self, session: Uuid, state: &RecordState, result: Option<&TurnResult>) -> TurnRow {
        TurnRow {
            session,
            id: self.id,
            created_at: self.created_at,
            status: state.status.name().to_owned(),
            record: stored_turn::record_json(&self.input(), state, result),
        }
    }

    /// A record the store kept, as it was when it ended (without events).
    fn restored(row: &TurnRow, account: &Account) -> Result<Self, serde_json::Error> {
        let stored: StoredTurn = serde_json::from_str(&row.record)?;
        let created = instant_of(row.created_at).unwrap_or_else(Instant::now);
        let started = stored.started_at.and_then(instant_of);
        // Long ago (past what this machine's clock reaches back to): as old as it gets.
        let ended = stored.ended_at.map(|at| instant_of(at).unwrap_or(created));
        let record = Self::new(row.id, Arc::new(stored.input), stored.status, account);
        record.events.forget();
        let record = Self {
            created_at: row.created_at,
            created,
            ..record
        };
        {
            let mut state = record.state();
            state.result = stored.result.map(Arc::new);
            state.error = stored.error;
            state.attempts = stored.attempts;
            state.started_at = stored.started_at;
            state.ended_at = stored.ended_at;
            state.waited = stored.waited_ms.map(Duration::from_millis);
            state.provider = stored.provider_ms.map(Duration::from_millis);
            state.first_token = stored.first_token_ms.map(Duration::from_millis);
            state.held = stored.held_ms.map(Duration::from_millis);
            state.retried_by = stored.retried_by;
            state.retry_claimed = stored.retried_by.is_some();
            state.started = started;
            state.ended = ended.or(Some(created));
        }
        record.settle();
        Ok(record)
    }

    /// What the write asked for.
    pub fn input(&self) -> Arc<TurnInput> {
        self.input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Lets go of a completed turn's messages: the history holds them now, and only a
    /// failed or cancelled turn can run again. What the write asked for (its body) stays.
    pub fn settle(&self) {
        if self.state().status != TurnStatus::Completed {
            return;
        }
        let mut input = self.input.lock().unwrap_or_else(PoisonError::into_inner);
        if input.staged.is_empty() {
            return;
        }
        let before = input.size_estimate();
        *input = Arc::new(input.settled());
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sub(before.saturating_sub(input.size_estimate()));
    }

    /// A copy of where the turn stands now.
    pub fn snapshot(&self) -> RecordState {
        self.state().clone()
    }

    /// Reads where the turn stands now without copying it (keep `f` short).
    pub fn read_state<R>(&self, f: impl FnOnce(&RecordState) -> R) -> R {
        f(&self.state())
    }

    /// Appends an event and updates the record to match.
    pub fn push(&self, event: TurnEvent) {
        {
            let mut state = self.state();
            let now = Instant::now();
            match &event {
                TurnEvent::Waiting { .. } => {}
                TurnEvent::Started => {
                    state.status = TurnStatus::Running;
                    state.started = Some(now);
                    state.started_at = Some(crate::message::Timestamp::now());
                    state.waited = Some(now.duration_since(self.created));
                }
                TurnEvent::TextDelta(_) | TurnEvent::ToolCall(_) => {
                    if state.first_token.is_none() {
                        state.first_token = state.started.map(|s| now.duration_since(s));
                    }
                }
                TurnEvent::Completed { result, .. } => {
                    state.result = result.clone();
                    self.hold(result.as_deref().map_or(0, TurnResult::size_estimate));
                    end(&mut state, TurnStatus::Completed);
                }
                TurnEvent::Failed(error) => {
                    state.error = Some(error.clone());
                    end(&mut state, TurnStatus::Failed);
                }
                TurnEvent::Cancelled { result, .. } => {
                    state.result = Some(result.clone());
                    self.hold(result.size_estimate());
                    end(&mut state, TurnStatus::Cancelled);
                }
            }
        }
        self.events.push(event);
    }

    fn hold(&self, bytes: usize) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(bytes);
    }

    /// Ends the turn as turned away (`rejected`): it never ran.
    pub fn turned_away(&self, error: TurnError) {
        {
            let mut state = self.state();
            state.error = Some(error.clone());
            end(&mut state, TurnStatus::Rejected);
        }
        self.events.push(TurnEvent::Failed(error));
    }

    /// What the service itself added to the turn, once it ended (see
    /// [`RecordState::overhead`]).
    pub fn overhead(&self) -> Option<Duration> {
        self.state().overhead()
    }

    /// Counts one provider call and the time it took.
    pub fn provider_call(&self, took: Duration) {
        let mut state = self.state();
        state.attempts += 1;
        state.provider = Some(state.provider.unwrap_or_default() + took);
    }

    /// Claims the one retry of this turn; fails with the retrying turn (if known yet)
    /// when it was claimed before.
    pub fn claim_retry(&self) -> Result<(), Option<Uuid>> {
        let mut state = self.state();
        if state.retry_claimed {
            return Err(state.retried_by);
        }
        state.retry_claimed = true;
        Ok(())
    }

    /// Marks the turn as retried by `by`.
    pub fn retried_by(&self, by: Uuid) {
        self.state().retried_by = Some(by);
    }

    fn ended(&self) -> Option<(Instant, TurnStatus)> {
        let state = self.state();
        state.ended.map(|at| (at, state.status))
    }
}

fn end(state: &mut RecordState, status: TurnStatus) {
    if state.status.has_ended() {
        return;
    }
    let now = Instant::now();
    state.status = status;
    state.ended = Some(now);
    state.ended_at = Some(crate::message::Timestamp::now());
    state.held = state.started.map(|started| now.duration_since(started));
}

impl RecordState {
    /// What the service itself added to the turn: the time it held the lock minus the
    /// time spent in provider calls.
    pub fn overhead(&self) -> Option<Duration> {
        Some(self.held?.saturating_sub(self.provider.unwrap_or_default()))
    }
}

/// How many ended turns are remembered, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Ended turns of any status kept.
    pub records: usize,
    /// Failed turns kept besides those (the dead-letter view).
    pub failed: usize,
    /// No ended turn is kept longer than this.
    pub max_age: Duration,
    /// Ended turns whose events stay replayable.
    pub events: usize,
    /// How long an ended turn's events stay replayable.
    pub events_ttl: Duration,
}

impl Retention {
    /// The bounds ended records are kept within, as the store applies them.
    pub fn bounds(&self) -> TurnBounds {
        TurnBounds {
            records: self.records,
            failed: self.failed,
        }
    }
}

/// How many turns may start between two prunings of a session's records (see
/// [`TurnRecords::start`]).
const PRUNE_EVERY: usize = 8;

/// The recent turns of one session, oldest first.
#[derive(Debug)]
pub struct TurnRecords {
    retention: Retention,
    account: Account,
    records: Mutex<VecDeque<Kept>>,
    /// Turns started since the records were last pruned.
    unpruned: AtomicUsize,
}

/// A record as its session keeps it, with what pruning learned of it that cannot change:
/// how it ended, and that its events were let go. A pruning then asks a record neither
/// again: each asking locks the record, which with many sessions is a miss of the
/// cache, and most records were asked at the pruning before.
#[derive(Debug)]
struct Kept {
    record: Arc<TurnRecord>,
    ended: Option<(Instant, TurnStatus)>,
    forgotten: bool,
}

impl Kept {
    fn new(record: Arc<TurnRecord>) -> Self {
        Self {
            record,
            ended: None,
            forgotten: false,
        }
    }
}

impl TurnRecords {
    pub fn new(retention: Retention, account: Account) -> Self {
        Self {
            retention,
            account,
            records: Mutex::new(VecDeque::new()),
            unpruned: AtomicUsize::new(0),
        }
    }

    fn records(&self) -> MutexGuard<'_, VecDeque<Kept>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ended records a store kept, oldest first (one it cannot read is left out,
    /// and said so).
    pub fn restore(&self, rows: &[TurnRow]) {
        let mut records = self.records();
        for row in rows {
            match TurnRecord::restored(row, &self.account) {
                Ok(record) => records.push_back(Kept::new(Arc::new(record))),
                Err(error) => {
                    tracing::warn!(turn_id = %row.id, %error, "a stored turn record is unreadable; left out")
                }
            }
        }
        self.prune(&mut records);
    }

    /// The bounds records are kept within, as the store applies them.
    pub fn bounds(&self) -> TurnBounds {
        self.retention.bounds()
    }

    /// Records a new turn that waits for (or is about to take) the lock. The records
    /// are pruned every [`PRUNE_EVERY`] starts, not on each: pruning walks every record
    /// kept (up to `TURNS_KEEP`), which would cost a long session more on every turn than
    /// the rest of its bookkeeping. Reading them (`get`, `list`) prunes first, so what is
    /// shown is always within the bounds; what is held may pass them by a few turns.
    pub fn start(&self, id: Uuid, input: Arc<TurnInput>) -> Arc<TurnRecord> {
        let record = Arc::new(TurnRecord::new(
            id,
            input,
            TurnStatus::Waiting,
            &self.account,
        ));
        let mut records = self.records();
        records.push_back(Kept::new(record.clone()));
        if self.unpruned.fetch_add(1, Ordering::Relaxed) + 1 >= PRUNE_EVERY {
            self.prune(&mut records);
        }
        record
    }

    /// The turn with this id, if it is still remembered.
    pub fn get(&self, id: Uuid) -> Option<Arc<TurnRecord>> {
        let mut records = self.records();
        self.prune(&mut records);
        records
            .iter()
            .find(|kept| kept.record.id == id)
            .map(|kept| kept.record.clone())
    }

    /// Every remembered turn, oldest first.
    pub fn list(&self) -> Vec<Arc<TurnRecord>> {
        let mut records = self.records();
        self.prune(&mut records);
        records.iter().map(|kept| kept.record.clone()).collect()
    }

    /// Drops what is past the bounds, newest first: waiting and running turns always
    /// stay; of the ended ones, the last `records` and besides them the last `failed`
    /// failed ones, none older than `max_age`. Events go sooner: only the last `events`
    /// ended turns keep theirs, for `events_ttl`.
    fn prune(&self, records: &mut VecDeque<Kept>) {
        self.unpruned.store(0, Ordering::Relaxed);
        let now = Instant::now();
        let retention = self.retention;
        let (mut total_ended, mut total_failed) = (0, 0);
        for kept in records.iter_mut() {
            if kept.ended.is_none() {
                kept.ended = kept.record.ended();
            }
            if let Some((_, status)) = kept.ended {
                total_ended += 1;
                total_failed += usize::from(status == TurnStatus::Failed);
            }
        }
        // Walked oldest first, so the rank from the newest is what is left to come.
        let (mut ended_left, mut failed_left) = (total_ended, total_failed);
        records.retain_mut(|kept| {
            let Some((ended, status)) = kept.ended else {
                return true;
            };
            let rank = ended_left;
            ended_left -= 1;
            let age = now.duration_since(ended);
            if !kept.forgotten && (rank > retention.events || age > retention.events_ttl) {
                kept.record.events.forget();
                kept.forgotten = true;
            }
            let dead_letter = status == TurnStatus::Failed && {
                let failed_rank = failed_left;
                failed_left -= 1;
                failed_rank <= retention.failed
            };
            (rank <= retention.records || dead_letter) && age <= retention.max_age
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::turn::{TurnInput, TurnKind};
    use crate::session::{OnBusy, Priority};

    fn input() -> TurnInput {
        TurnInput {
            kind: TurnKind::Message,
            staged: Vec::new(),
            priority: Priority::Normal,
            on_busy: OnBusy::Wait,
            stream: false,
            body: serde_json::json!({"content": "x"}).into(),
            if_match: None,
            key: None,
        }
    }

    fn unbounded() -> Account {
        crate::memory::MemoryBudget::unbounded().account(None)
    }

    fn retention() -> Retention {
        Retention {
            records: 3,
            failed: 2,
            max_age: Duration::from_secs(60),
            events: 2,
            events_ttl: Duration::from_secs(60),
        }
    }

    fn ended(records: &TurnRecords, failed: bool) -> Uuid {
        let id = Uuid::new_v4();
        let record = records.start(id, Arc::new(input()));
        record.push(TurnEvent::Started);
        if failed {
            record.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        } else {
            record.push(TurnEvent::Cancelled {
                result: Arc::new(TurnResult {
                    text: String::new(),
                    tool_calls: Vec::new(),
                    finish_reason: crate::provider::FinishReason::Cancelled,
                    usage: Default::default(),
                    provider: "echo".into(),
                    model: "echo-1".into(),
                    messages_sent: None,
                    joined: None,
                }),
                commit: None,
            });
        }
        id
    }

    #[test]
    fn the_last_few_ended_turns_and_the_last_failed_ones_are_kept_and_running_ones_always() {
        let records = TurnRecords::new(retention(), unbounded());
        let running = Uuid::new_v4();
        records.start(running, Arc::new(input()));
        let old_failed: Vec<_> = (0..3).map(|_| ended(&records, true)).collect();
        let recent: Vec<_> = (0..3).map(|_| ended(&records, false)).collect();
        let kept: Vec<_> = records.list().iter().map(|r| r.id).collect();
        assert_eq!(
            kept,
            [
                running,
                old_failed[1],
                old_failed[2],
                recent[0],
                recent[1],
                recent[2]
            ]
        );
    }

    #[test]
    fn a_turn_still_running_at_one_pruning_is_pruned_by_a_later_one_once_it_ended() {
        let records = TurnRecords::new(retention(), unbounded());
        let id = Uuid::new_v4();
        let running = records.start(id, Arc::new(input()));
        running.push(TurnEvent::Started);
        assert_eq!(records.list().len(), 1, "a running turn stays");
        running.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        // Past the failed ones kept besides the others, and past the events kept.
        let newer: Vec<_> = (0..2).map(|_| ended(&records, true)).collect();
        let kept: Vec<_> = records.list().iter().map(|r| r.id).collect();
        assert_eq!(kept, [id, newer[0], newer[1]], "within the bounds yet");
        assert!(
            running.events.is_forgotten(),
            "past the 2 that keep their events"
        );
        let newest: Vec<_> = (0..3).map(|_| ended(&records, false)).collect();
        let kept: Vec<_> = records.list().iter().map(|r| r.id).collect();
        assert_eq!(kept, [newer[0], newer[1], newest[0], newest[1], newest[2]]);
    }

    #[test]
    fn a_completed_turn_lets_go_of_its_messages_and_a_failed_one_keeps_them_for_a_retry() {
        let account = unbounded();
        let with_message = || {
            let mut input = input();
            let now = crate::message::Timestamp::now();
            input.staged = vec![crate::message::Message::text(
                crate::message::Role::User,
                "x".repeat(1000),
                now,
            )];
            Arc::new(input)
        };
        let completed = TurnRecord::new(
            Uuid::new_v4(),
            with_message(),
            TurnStatus::Waiting,
            &account,
        );
        completed.push(TurnEvent::Started);
        completed.push(TurnEvent::Completed {
            result: None,
            commit: crate::session::Commit {
                from: 0,
                len: 2,
                version: 1,
                updated_at: crate::message::Timestamp::now(),
            },
        });
        let held_after_completion = account.held();
        // The row its commit writes, before it settles, leaves the messages out too.
        let session = Uuid::new_v4();
        let stored = |row: TurnRow| serde_json::from_str::<StoredTurn>(&row.record).unwrap();
        let kept = stored(completed.to_row_ending(session, TurnStatus::Completed, None));
        assert!(kept.input.staged.is_empty());
        assert_eq!(kept.input.body, input().body);
        completed.settle();
        assert!(completed.input().staged.is_empty());
        assert_eq!(completed.input().body, input().body, "the body stays");
        assert!(
            account.held() + 1000 <= held_after_completion,
            "its bytes are off the account"
        );

        let failed = TurnRecord::new(
            Uuid::new_v4(),
            with_message(),
            TurnStatus::Waiting,
            &account,
        );
        failed.push(TurnEvent::Started);
        failed.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        failed.settle();
        assert_eq!(failed.input().staged.len(), 1);
        let kept = stored(failed.to_row(session).unwrap());
        assert_eq!(
            kept.input.staged.len(),
            1,
            "a retry after a restart runs it"
        );
    }

    #[test]
    fn what_is_held_passes_the_bounds_by_fewer_turns_than_start_between_two_prunings() {
        let records = TurnRecords::new(retention(), unbounded());
        let bound = retention().records + retention().failed;
        for i in 0..5 * PRUNE_EVERY {
            ended(&records, i % 3 == 0);
            let held = records.records().len();
            assert!(held < bound + PRUNE_EVERY, "held {held} after {i}");
        }
        assert!(records.list().len() <= bound, "what is shown stays within");
    }

    #[test]
    fn only_the_last_few_ended_turns_keep_their_events() {
        let records = TurnRecords::new(retention(), unbounded());
        let ids: Vec<_> = (0..3).map(|_| ended(&records, false)).collect();
        let forgotten: Vec<_> = ids
            .iter()
            .map(|id| records.get(*id).unwrap().events.is_forgotten())
            .collect();
        assert_eq!(forgotten, [true, false, false]);
    }

    #[test]
    fn ended_turns_past_their_age_are_dropped() {
        let records = TurnRecords::new(
            Retention {
                max_age: Duration::ZERO,
                ..retention()
            },
            unbounded(),
        );
        let id = ended(&records, false);
        std::thread::sleep(Duration::from_millis(2));
        assert!(records.get(id).is_none());
    }

    #[test]
    fn a_record_follows_its_events_and_times() {
        let records = TurnRecords::new(retention(), unbounded());
        let record = records.start(Uuid::new_v4(), Arc::new(input()));
        assert_eq!(record.snapshot().status, TurnStatus::Waiting);
        record.push(TurnEvent::Started);
        record.provider_call(Duration::from_millis(5));
        record.push(TurnEvent::TextDelta("a".into()));
        let state = record.snapshot();
        assert_eq!(state.status, TurnStatus::Running);
        assert_eq!(state.attempts, 1);
        assert!(state.waited.is_some() && state.first_token.is_some());
        record.push(TurnEvent::Failed(TurnError::Internal("x".into())));
        let state = record.snapshot();
        assert_eq!(state.status, TurnStatus::Failed);
        assert!(state.ended_at.is_some());
    }

    #[test]
    fn a_rejected_write_is_recorded_as_ended() {
        let records = TurnRecords::new(retention(), unbounded());
        let record = records.start(Uuid::new_v4(), Arc::new(input()));
        record.turned_away(TurnError::Lock(crate::session::LockError::Busy));
        assert_eq!(record.snapshot().status, TurnStatus::Rejected);
    }
}
