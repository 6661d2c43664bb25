//! The session's record of its recent turns: each turn's id, kind and events, so that
//! a client can replay a turn after it dropped off. Bounded: the events of only the
//! last `keep` ended turns are kept, and none longer than `ttl` after they ended.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::events::{EventLog, TurnEvent};
use super::turn::TurnKind;

/// One turn as the session remembers it.
#[derive(Debug)]
pub struct TurnRecord {
    pub id: Uuid,
    pub kind: TurnKind,
    pub events: Arc<EventLog>,
    ended_at: OnceLock<Instant>,
}

impl TurnRecord {
    fn new(id: Uuid, kind: TurnKind) -> Self {
        Self {
            id,
            kind,
            events: Arc::new(EventLog::default()),
            ended_at: OnceLock::new(),
        }
    }

    /// Appends an event; a terminal one marks the turn ended.
    pub fn push(&self, event: TurnEvent) {
        if event.is_terminal() {
            let _ = self.ended_at.set(Instant::now());
        }
        self.events.push(event);
    }

    fn ended_at(&self) -> Option<Instant> {
        self.ended_at.get().copied()
    }
}

/// How many ended turns keep their events, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: usize,
    pub ttl: Duration,
}

/// The recent turns of one session, oldest first.
#[derive(Debug)]
pub struct TurnRecords {
    retention: Retention,
    records: Mutex<VecDeque<Arc<TurnRecord>>>,
}

impl TurnRecords {
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            records: Mutex::new(VecDeque::new()),
        }
    }

    fn records(&self) -> MutexGuard<'_, VecDeque<Arc<TurnRecord>>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new turn and lets go of what is past the bounds.
    pub fn start(&self, id: Uuid, kind: TurnKind) -> Arc<TurnRecord> {
        let record = Arc::new(TurnRecord::new(id, kind));
        let mut records = self.records();
        records.push_back(record.clone());
        self.prune(&mut records);
        record
    }

    /// The turn with this id, if it is still replayable.
    pub fn get(&self, id: Uuid) -> Option<Arc<TurnRecord>> {
        let mut records = self.records();
        self.prune(&mut records);
        records.iter().find(|r| r.id == id).cloned()
    }

    /// How many turns are remembered (running and waiting ones included).
    pub fn len(&self) -> usize {
        self.records().len()
    }

    /// Whether no turn is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ended turns beyond the last `keep`, or ended longer than `ttl` ago, are dropped;
    /// turns that still wait or run are always kept.
    fn prune(&self, records: &mut VecDeque<Arc<TurnRecord>>) {
        let now = Instant::now();
        let mut ended_seen = 0;
        let mut kept = VecDeque::with_capacity(records.len());
        for record in records.drain(..).rev() {
            let keep = match record.ended_at() {
                None => true,
                Some(ended) => {
                    ended_seen += 1;
                    ended_seen <= self.retention.keep
                        && now.duration_since(ended) <= self.retention.ttl
                }
            };
            if keep {
                kept.push_front(record);
            } else {
                record.events.forget();
            }
        }
        *records = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::turn::TurnError;

    fn ended(records: &TurnRecords) -> Uuid {
        let id = Uuid::new_v4();
        records
            .start(id, TurnKind::Message)
            .push(TurnEvent::Failed(TurnError::Internal("x".into())));
        id
    }

    #[test]
    fn only_the_last_few_ended_turns_are_kept_but_running_ones_always() {
        let records = TurnRecords::new(Retention {
            keep: 2,
            ttl: Duration::from_secs(60),
        });
        let running = Uuid::new_v4();
        records.start(running, TurnKind::Message);
        let first = ended(&records);
        let ids: Vec<_> = (0..3).map(|_| ended(&records)).collect();
        assert!(records.get(first).is_none());
        assert!(records.get(ids[0]).is_none());
        assert!(records.get(ids[1]).is_some());
        assert!(records.get(ids[2]).is_some());
        assert!(records.get(running).is_some());
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn ended_turns_past_their_time_are_dropped() {
        let records = TurnRecords::new(Retention {
            keep: 10,
            ttl: Duration::ZERO,
        });
        let id = ended(&records);
        std::thread::sleep(Duration::from_millis(2));
        assert!(records.get(id).is_none());
    }
}
