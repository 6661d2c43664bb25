//! Remembered answers for `Idempotency-Key`: per (API key, idempotency key), what the
//! first request was (route and body, as a JSON value) and, once it ended, its answer.
//! Bounded in count and age. How requests are matched against it and answers replayed
//! is HTTP work (`routes/middleware/idempotency.rs`); this only keeps entries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::clock::Clock;
use crate::keys::KeyId;

/// What makes two requests "the same": the route (method, path, query) and the body
/// compared as a JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub route: String,
    pub body: Value,
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

/// What the store knows of a key.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Never seen (or expired): the caller now holds it and must `finish` or `release`.
    Reserved,
    /// The first request with this key still runs.
    InUse,
    /// Seen with another route or body.
    Reused,
    /// Seen with this route and body: its answer.
    Replay(StoredAnswer),
}

type Key = (Option<KeyId>, String);

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    created: Instant,
    answer: Option<StoredAnswer>,
}

/// The remembered idempotency keys.
#[derive(Debug)]
pub struct IdempotencyRecords {
    ttl: Duration,
    clock: Clock,
    max_keys: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// Keys oldest first, for expiry and eviction.
    order: VecDeque<(Instant, Key)>,
}

impl IdempotencyRecords {
    pub fn new(ttl: Duration, max_keys: usize, clock: Clock) -> Self {
        Self {
            ttl,
            clock,
            max_keys: max_keys.max(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `key` up for a request with `fingerprint`, reserving it if unknown.
    pub fn begin(&self, owner: Option<KeyId>, key: &str, fingerprint: Fingerprint) -> Lookup {
        let mut state = self.state();
        self.expire(&mut state);
        let id = (owner, key.to_owned());
        if let Some(entry) = state.entries.get(&id) {
            return match &entry.answer {
                _ if entry.fingerprint != fingerprint => Lookup::Reused,
                None => Lookup::InUse,
                Some(answer) => Lookup::Replay(answer.clone()),
            };
        }
        let now = self.clock.now();
        state.entries.insert(
            id.clone(),
            Entry {
                fingerprint,
                created: now,
                answer: None,
            },
        );
        state.order.push_back((now, id));
        self.evict(&mut state);
        Lookup::Reserved
    }

    /// Stores the answer of a reserved key.
    pub fn finish(&self, owner: Option<KeyId>, key: &str, answer: StoredAnswer) {
        let mut state = self.state();
        if let Some(entry) = state.entries.get_mut(&(owner, key.to_owned())) {
            entry.answer = Some(answer);
        }
    }

    /// Forgets a reserved key whose answer is not to be kept (so a corrected retry runs).
    pub fn release(&self, owner: Option<KeyId>, key: &str) {
        let mut state = self.state();
        let id = (owner, key.to_owned());
        if state.entries.get(&id).is_some_and(|e| e.answer.is_none()) {
            state.entries.remove(&id);
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&self, state: &mut State) {
        let now = self.clock.now();
        while let Some((created, _)) = state.order.front() {
            if now.saturating_duration_since(*created) < self.ttl {
                break;
            }
            if let Some((created, id)) = state.order.pop_front()
                && state.entries.get(&id).is_some_and(|e| e.created == created)
            {
                state.entries.remove(&id);
            }
        }
    }

    /// Past `max_keys`, the oldest answered keys go (keys still running stay).
    fn evict(&self, state: &mut State) {
        let mut kept = VecDeque::new();
        while state.entries.len() > self.max_keys {
            let Some((created, id)) = state.order.pop_front() else {
                break;
            };
            match state.entries.get(&id) {
                Some(entry) if entry.created == created && entry.answer.is_none() => {
                    kept.push_back((created, id));
                }
                Some(entry) if entry.created == created => {
                    state.entries.remove(&id);
                }
                _ => {}
            }
        }
        while let Some(item) = kept.pop_back() {
            state.order.push_front(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(body: Value) -> Fingerprint {
        Fingerprint {
            route: "POST /x".into(),
            body,
        }
    }

    fn answer() -> StoredAnswer {
        StoredAnswer {
            status: 200,
            headers: Vec::new(),
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn a_key_is_reserved_then_in_use_then_replayed_and_a_new_body_is_reuse() {
        let store = IdempotencyRecords::new(Duration::from_secs(60), 10, Clock::system());
        let body = serde_json::json!({"a": 1, "b": 2});
        assert!(matches!(
            store.begin(None, "k", print(body.clone())),
            Lookup::Reserved
        ));
        assert!(matches!(
            store.begin(None, "k", print(body.clone())),
            Lookup::InUse
        ));
        store.finish(None, "k", answer());
        let same = serde_json::json!({"b": 2, "a": 1});
        assert!(matches!(
            store.begin(None, "k", print(same)),
            Lookup::Replay(_)
        ));
        assert!(matches!(
            store.begin(None, "k", print(serde_json::json!({"a": 2}))),
            Lookup::Reused
        ));
        assert!(
            matches!(
                store.begin(Some(KeyId(1)), "k", print(body)),
                Lookup::Reserved
            ),
            "per API key"
        );
    }

    #[test]
    fn a_released_key_runs_again_and_expired_or_evicted_keys_are_forgotten() {
        let store = IdempotencyRecords::new(Duration::from_secs(60), 2, Clock::system());
        store.begin(None, "k", print(Value::Null));
        store.release(None, "k");
        assert!(matches!(
            store.begin(None, "k", print(Value::Null)),
            Lookup::Reserved
        ));
        store.finish(None, "k", answer());
        for key in ["l", "m"] {
            store.begin(None, key, print(Value::Null));
            store.finish(None, key, answer());
        }
        assert_eq!(store.len(), 2);
        assert!(
            matches!(store.begin(None, "k", print(Value::Null)), Lookup::Reserved),
            "evicted"
        );

        let short = IdempotencyRecords::new(Duration::ZERO, 10, Clock::system());
        short.begin(None, "k", print(Value::Null));
        short.finish(None, "k", answer());
        assert!(
            matches!(short.begin(None, "k", print(Value::Null)), Lookup::Reserved),
            "expired"
        );
    }
}
