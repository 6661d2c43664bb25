//! Remembered answers for `Idempotency-Key`: per (API key, idempotency key), what the
//! first request was (route and a digest of its body as a JSON value) and, once it
//! ended, its answer. How requests are matched against it and answers replayed is HTTP
//! work (`routes/middleware/idempotency.rs`); this only keeps records.
//!
//! Each API key has its own records, bounded in count and bytes: one key's traffic can
//! never push out another's record (and so make its retry run twice). An answer that
//! holds a session's history keeps only what is around it, plus where the history ends;
//! a replay renders the history again, which is committed and never rewritten, so the
//! bytes are the same.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clock::Clock;
use crate::keys::KeyId;
use crate::memory::{Charge, MemoryBudget};
use crate::store::KeyAnswer;

/// What makes two requests "the same": the route (method, path, query) and the body
/// compared as a JSON value (object keys in any order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub route: String,
    body: [u8; 32],
}

impl Fingerprint {
    /// The SHA-256 digest of the body as a JSON value.
    pub fn body_digest(&self) -> [u8; 32] {
        self.body
    }

    pub fn new(route: String, body: &Value) -> Self {
        let mut digest = Sha256::new();
        feed(&mut digest, body);
        Self {
            route,
            body: digest.finalize().into(),
        }
    }
}

/// Feeds a JSON value to `digest` so that equal values (object keys in any order) give
/// equal digests and different ones do not: each value is tagged with its type, strings
/// and keys with their length.
fn feed(digest: &mut Sha256, value: &Value) {
    fn text(digest: &mut Sha256, text: &str) {
        digest.update((text.len() as u64).to_le_bytes());
        digest.update(text.as_bytes());
    }
    match value {
        Value::Null => digest.update(b"n"),
        Value::Bool(b) => digest.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            digest.update(b"#");
            text(digest, &n.to_string());
        }
        Value::String(s) => {
            digest.update(b"s");
            text(digest, s);
        }
        Value::Array(items) => {
            digest.update(b"[");
            digest.update((items.len() as u64).to_le_bytes());
            items.iter().for_each(|item| feed(digest, item));
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            digest.update(b"{");
            digest.update((keys.len() as u64).to_le_bytes());
            for key in keys {
                text(digest, key);
                feed(digest, &map[key]);
            }
        }
    }
}

/// A stored answer.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: StoredBody,
}

/// The bytes of a stored answer.
#[derive(Debug, Clone)]
pub enum StoredBody {
    /// All of them.
    Whole(Bytes),
    /// `before`, then the JSON of `messages[..len]` of session `session`, then `after`.
    AroundHistory {
        before: Bytes,
        session: Uuid,
        len: usize,
        after: Bytes,
    },
}

impl StoredAnswer {
    /// The answer as the store keeps it.
    pub fn to_row(&self) -> KeyAnswer {
        let (body, history) = match &self.body {
            StoredBody::Whole(bytes) => (bytes.to_vec(), None),
            StoredBody::AroundHistory {
                before,
                session,
                len,
                after,
            } => (before.to_vec(), Some((*session, *len, after.to_vec()))),
        };
        KeyAnswer {
            status: self.status,
            headers: self.headers.clone(),
            body,
            history,
        }
    }

    /// An answer the store kept.
    pub fn from_row(row: KeyAnswer) -> Self {
        Self {
            status: row.status,
            headers: row.headers,
            body: match row.history {
                None => StoredBody::Whole(row.body.into()),
                Some((session, len, after)) => StoredBody::AroundHistory {
                    before: row.body.into(),
                    session,
                    len,
                    after: after.into(),
                },
            },
        }
    }

    /// Bytes held for this answer.
    fn size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        headers
            + match &self.body {
                StoredBody::Whole(bytes) => bytes.len(),
                StoredBody::AroundHistory { before, after, .. } => before.len() + after.len(),
            }
    }
}

/// What the records know of a key.
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

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    created: Instant,
    answer: Option<StoredAnswer>,
    /// Bytes held for this entry (its key, route and answer).
    size: usize,
}

/// The bounds each API key's records keep to.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyLimits {
    /// How long a key and its answer are kept.
    pub ttl: Duration,
    /// Keys kept per API key.
    pub max_keys: usize,
    /// Bytes kept per API key.
    pub max_bytes: usize,
}

/// The remembered idempotency keys, per API key.
#[derive(Debug)]
pub struct IdempotencyRecords {
    limits: IdempotencyLimits,
    clock: Clock,
    memory: Arc<MemoryBudget>,
    by_owner: Mutex<HashMap<Option<KeyId>, OwnerRecords>>,
}

/// One API key's records.
#[derive(Debug)]
struct OwnerRecords {
    entries: HashMap<String, Entry>,
    /// Keys oldest first, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
    /// Bytes held by `entries`, on the key's memory account.
    held: Charge,
}

impl IdempotencyRecords {
    pub fn new(limits: IdempotencyLimits, clock: Clock, memory: Arc<MemoryBudget>) -> Self {
        Self {
            limits: IdempotencyLimits {
                max_keys: limits.max_keys.max(1),
                ..limits
            },
            clock,
            memory,
            by_owner: Mutex::default(),
        }
    }

    /// How long a key and its answer are kept.
    pub fn ttl(&self) -> Duration {
        self.limits.ttl
    }

    fn by_owner(&self) -> MutexGuard<'_, HashMap<Option<KeyId>, OwnerRecords>> {
        self.by_owner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `key` up for a request with `fingerprint`, reserving it if unknown.
    pub fn begin(&self, owner: Option<KeyId>, key: &str, fingerprint: Fingerprint) -> Lookup {
        let now = self.clock.now();
        let mut by_owner = self.by_owner();
        let records = by_owner.entry(owner).or_insert_with(|| OwnerRecords {
            entries: HashMap::new(),
            order: VecDeque::new(),
            held: self.memory.account(owner).charge(0),
        });
        records.expire(now, self.limits.ttl);
        if let Some(entry) = records.entries.get(key) {
            return match &entry.answer {
                _ if entry.fingerprint != fingerprint => Lookup::Reused,
                None => Lookup::InUse,
                Some(answer) => Lookup::Replay(answer.clone()),
            };
        }
        let size = key.len() + fingerprint.route.len() + std::mem::size_of::<Entry>();
        records.entries.insert(
            key.to_owned(),
            Entry {
                fingerprint,
                created: now,
                answer: None,
                size,
            },
        );
        records.held.add(size);
        records.order.push_back((now, key.to_owned()));
        records.evict(self.limits);
        Lookup::Reserved
    }

    /// Stores the answer of a reserved key.
    pub fn finish(&self, owner: Option<KeyId>, key: &str, answer: StoredAnswer) {
        let mut by_owner = self.by_owner();
        let Some(records) = by_owner.get_mut(&owner) else {
            return;
        };
        if let Some(entry) = records.entries.get_mut(key) {
            let grown = answer.size();
            entry.size += grown;
            entry.answer = Some(answer);
            records.held.add(grown);
            records.evict(self.limits);
        }
    }

    /// Forgets a reserved key whose answer is not to be kept (so a corrected retry runs).
    pub fn release(&self, owner: Option<KeyId>, key: &str) {
        let mut by_owner = self.by_owner();
        if let Some(records) = by_owner.get_mut(&owner)
            && records.entries.get(key).is_some_and(|e| e.answer.is_none())
        {
            records.remove(key);
        }
    }

    /// How many keys are remembered, all API keys together.
    pub fn len(&self) -> usize {
        self.by_owner().values().map(|r| r.entries.len()).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the records, all API keys together.
    pub fn bytes(&self) -> usize {
        self.by_owner().values().map(|r| r.held.bytes()).sum()
    }
}

impl OwnerRecords {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.held.sub(entry.size);
        }
    }

    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((created, _)) = self.order.front() {
            if now.saturating_duration_since(*created) < ttl {
                break;
            }
            if let Some((created, key)) = self.order.pop_front()
                && self.entries.get(&key).is_some_and(|e| e.created == created)
            {
                self.remove(&key);
            }
        }
    }

    /// Past either bound, the oldest answered keys go (keys still running stay, and so
    /// does the newest answer, however large).
    fn evict(&mut self, limits: IdempotencyLimits) {
        let mut kept = VecDeque::new();
        while self.entries.len() > limits.max_keys
            || (self.held.bytes() > limits.max_bytes && self.entries.len() > 1)
        {
            let Some((created, key)) = self.order.pop_front() else {
                break;
            };
            match self.entries.get(&key) {
                Some(entry) if entry.created != created => {}
                Some(entry) if entry.answer.is_none() || self.order.is_empty() => {
                    kept.push_back((created, key));
                }
                Some(_) => self.remove(&key),
                None => {}
            }
        }
        while let Some(item) = kept.pop_back() {
            self.order.push_front(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(body: Value) -> Fingerprint {
        Fingerprint::new("POST /x".into(), &body)
    }

    fn limits(ttl: Duration, max_keys: usize) -> IdempotencyLimits {
        IdempotencyLimits {
            ttl,
            max_keys,
            max_bytes: usize::MAX,
        }
    }

    fn answer() -> StoredAnswer {
        StoredAnswer {
            status: 200,
            headers: Vec::new(),
            body: StoredBody::Whole(Bytes::from_static(b"{}")),
        }
    }

    #[test]
    fn a_key_is_reserved_then_in_use_then_replayed_and_a_new_body_is_reuse() {
        let store = IdempotencyRecords::new(
            limits(Duration::from_secs(60), 10),
            Clock::system(),
            MemoryBudget::unbounded(),
        );
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
                store.begin(Some(KeyId::of("b")), "k", print(body)),
                Lookup::Reserved
            ),
            "per API key"
        );
    }

    #[test]
    fn a_released_key_runs_again_and_expired_or_evicted_keys_are_forgotten() {
        let store = IdempotencyRecords::new(
            limits(Duration::from_secs(60), 2),
            Clock::system(),
            MemoryBudget::unbounded(),
        );
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

        let short = IdempotencyRecords::new(
            limits(Duration::ZERO, 10),
            Clock::system(),
            MemoryBudget::unbounded(),
        );
        short.begin(None, "k", print(Value::Null));
        short.finish(None, "k", answer());
        assert!(
            matches!(short.begin(None, "k", print(Value::Null)), Lookup::Reserved),
            "expired"
        );
    }

    #[test]
    fn one_api_keys_flood_never_pushes_out_anothers_record() {
        let store = IdempotencyRecords::new(
            limits(Duration::from_secs(60), 3),
            Clock::system(),
            MemoryBudget::unbounded(),
        );
        let (a, b) = (Some(KeyId::of("a")), Some(KeyId::of("b")));
        store.begin(b, "mine", print(Value::Null));
        store.finish(b, "mine", answer());
        for n in 0..1000 {
            let key = format!("flood-{n}");
            store.begin(a, &key, print(Value::Null));
            store.finish(a, &key, answer());
        }
        assert!(matches!(
            store.begin(b, "mine", print(Value::Null)),
            Lookup::Replay(_)
        ));
        assert_eq!(store.len(), 4, "three of a's, one of b's");
    }

    #[test]
    fn past_the_byte_bound_the_oldest_answers_go_but_never_the_newest_nor_running_ones() {
        let bounds = IdempotencyLimits {
            ttl: Duration::from_secs(60),
            max_keys: 100,
            max_bytes: 4096,
        };
        let store = IdempotencyRecords::new(bounds, Clock::system(), MemoryBudget::unbounded());
        let big = |n: usize| StoredAnswer {
            status: 200,
            headers: Vec::new(),
            body: StoredBody::Whole(Bytes::from(vec![b'x'; n])),
        };
        store.begin(None, "running", print(Value::Null));
        for key in ["a", "b", "c"] {
            store.begin(None, key, print(Value::Null));
            store.finish(None, key, big(1500));
        }
        assert!(store.bytes() <= 4096, "{}", store.bytes());
        assert!(matches!(
            store.begin(None, "running", print(Value::Null)),
            Lookup::InUse
        ));
        assert!(matches!(
            store.begin(None, "c", print(Value::Null)),
            Lookup::Replay(_)
        ));
        assert!(
            matches!(store.begin(None, "a", print(Value::Null)), Lookup::Reserved),
            "evicted"
        );
        store.begin(None, "huge", print(Value::Null));
        store.finish(None, "huge", big(10_000));
        assert!(
            matches!(
                store.begin(None, "huge", print(Value::Null)),
                Lookup::Replay(_)
            ),
            "the newest answer stays, however large"
        );
    }

    #[test]
    fn equal_json_bodies_match_whatever_their_key_order_and_others_do_not() {
        let one = print(serde_json::json!({"a": [1, {"x": "y", "z": null}], "b": true}));
        let same = print(serde_json::json!({"b": true, "a": [1, {"z": null, "x": "y"}]}));
        assert_eq!(one, same);
        for other in [
            serde_json::json!({"a": [1, {"x": "y"}], "b": true}),
            serde_json::json!({"a": [{"x": "y", "z": null}, 1], "b": true}),
            serde_json::json!({"a": [1, {"x": "y", "z": null}], "b": "true"}),
            serde_json::json!(["a", "b"]),
            serde_json::json!("ab"),
        ] {
            assert_ne!(one, print(other));
        }
    }
}
