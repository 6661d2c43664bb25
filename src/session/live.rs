//! All live sessions by id. The map lock is held only to look up, insert or remove an
//! `Arc<Session>` (and to count); nothing else happens under it. Bounds the number of
//! sessions, in all and per API key, and lets idle ones expire: `expire_idle_forever`
//! is the task that does it, measured by the service's `Clock`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use uuid::Uuid;

use super::Session;
use crate::clock::Clock;
use crate::keys::KeyId;
use crate::message::Timestamp;
use crate::store::{Store, cursor};

/// A new session would pass a bound on the number of sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionLimit {
    #[error("the service holds its most sessions ({0}); delete some or retry later")]
    Total(usize),
    #[error("this API key holds its most sessions ({0}); delete some first")]
    PerKey(usize),
}

/// The live sessions.
#[derive(Debug)]
pub struct LiveSessions {
    sessions: RwLock<Sessions>,
    max_total: usize,
    max_per_key: usize,
    /// Sessions idle this long expire.
    idle_ttl: Duration,
    clock: Clock,
    /// With a durable store: sessions kept in memory at most; past it the least
    /// recently used idle ones leave memory (the store still has them).
    max_live: Option<usize>,
}

/// The map of live sessions, and how many sessions exist (live or only stored), in all
/// and per API key: the counts the bounds apply to, kept under the map's lock.
#[derive(Debug, Default)]
struct Sessions {
    by_id: HashMap<Uuid, Arc<Session>>,
    total: usize,
    per_key: HashMap<KeyId, usize>,
    /// Sessions that left memory and when they were last active, for the store.
    left: Vec<(Uuid, Timestamp)>,
}

impl Sessions {
    /// Ends a live session: it no longer exists.
    fn remove(&mut self, id: &Uuid) -> Option<Arc<Session>> {
        let session = self.by_id.remove(id)?;
        self.uncount(session.owner);
        Some(session)
    }

    /// Counts one session fewer (of `owner`).
    fn uncount(&mut self, owner: Option<KeyId>) {
        self.total = self.total.saturating_sub(1);
        if let Some(owner) = owner
            && let Some(count) = self.per_key.get_mut(&owner)
        {
            *count -= 1;
            if *count == 0 {
                self.per_key.remove(&owner);
            }
        }
    }
}

impl Default for LiveSessions {
    fn default() -> Self {
        Self::new(usize::MAX, usize::MAX, Duration::MAX, Clock::system())
    }
}

impl LiveSessions {
    /// At most `max_total` sessions, `max_per_key` per API key; those idle for
    /// `idle_ttl` by `clock` expire.
    pub fn new(max_total: usize, max_per_key: usize, idle_ttl: Duration, clock: Clock) -> Self {
        Self {
            sessions: RwLock::default(),
            max_total,
            max_per_key,
            idle_ttl,
            clock,
            max_live: None,
        }
    }

    /// Counts the sessions a store holds (per owner, as the store counts them), at start.
    pub fn count_stored(&self, stored: &[(Option<String>, usize)]) {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (owner, count) in stored {
            sessions.total += count;
            if let Some(owner) = owner.as_deref().and_then(KeyId::from_hex) {
                *sessions.per_key.entry(owner).or_default() += count;
            }
        }
    }

    /// Keeps at most `max_live` sessions in memory, leaving out the least recently used
    /// idle ones; only for a store that keeps them, from which they load again.
    pub fn evicting_past(mut self, max_live: usize) -> Self {
        self.max_live = Some(max_live.max(1));
        self
    }

    /// Past `max_live`, drops the least recently used sessions nothing else holds: no
    /// turn running or waiting, no open stream, no request using it (the map's is then
    /// the only reference, checked under the map's write lock, so no request can take
    /// one while it goes, and a session is never live twice).
    fn evict(&self, sessions: &mut Sessions) {
        let Some(max_live) = self.max_live else {
            return;
        };
        while sessions.by_id.len() > max_live {
            let coldest = sessions
                .by_id
                .values()
                .filter(|session| Arc::strong_count(session) == 1)
                .min_by_key(|session| session.last_active())
                .map(|session| session.id);
            let Some(id) = coldest else { break };
            if let Some(session) = sessions.by_id.remove(&id) {
                let active = self.clock.wall_time_of(session.last_active());
                sessions.left.push((id, active));
            }
        }
    }

    /// Notes a read or a write of `session`, which keeps it from expiring.
    pub fn touch(&self, session: &Session) {
        session.touch(self.clock.now());
    }

    /// The session with this id. One found stale (the store holds a newer version than
    /// it) is let go, to be loaded again; its waiting writers fail on it and nothing
    /// else changes.
    pub fn get(&self, id: Uuid) -> Option<Arc<Session>> {
        let session = {
            let sessions = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
            sessions.by_id.get(&id).cloned()
        }?;
        if !session.is_stale() {
            return Some(session);
        }
        self.let_go(&session);
        None
    }

    /// Takes `session` out of memory (if it is still the live one of its id) and leaves
    /// it in the store, where it is loaded from again on its next use.
    pub fn let_go(&self, session: &Arc<Session>) {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sessions
            .by_id
            .get(&session.id)
            .is_some_and(|live| Arc::ptr_eq(live, session))
        {
            sessions.by_id.remove(&session.id);
        }
    }

    /// Adds a new session, unless a bound would be passed.
    pub fn insert(&self, session: Arc<Session>) -> Result<(), SessionLimit> {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sessions.total >= self.max_total {
            return Err(SessionLimit::Total(self.max_total));
        }
        if let Some(owner) = session.owner {
            let owned = sessions.per_key.entry(owner).or_default();
            if *owned >= self.max_per_key {
                return Err(SessionLimit::PerKey(self.max_per_key));
            }
            *owned += 1;
        }
        sessions.total += 1;
        session.touch(self.clock.now());
        sessions.by_id.insert(session.id, session);
        self.evict(&mut sessions);
        Ok(())
    }

    /// Adds a session loaded from the store (no bound applies: it exists already), or
    /// gives back the one another request loaded first.
    pub fn insert_loaded(&self, session: Arc<Session>) -> Arc<Session> {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = sessions.by_id.get(&session.id) {
            return live.clone();
        }
        session.touch(self.clock.now());
        sessions.by_id.insert(session.id, session.clone());
        self.evict(&mut sessions);
        session
    }

    /// Removes a session and ends it (its running turn is cancelled, its waiters turned away).
    pub fn remove(&self, id: Uuid) -> Option<Arc<Session>> {
        let removed = {
            let mut sessions = self
                .sessions
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            sessions.remove(&id)
        };
        if let Some(session) = &removed {
            session.close();
        }
        removed
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut sessions: Vec<_> = {
            let sessions = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
            sessions.by_id.values().cloned().collect()
        };
        sessions.sort_by_key(|s| (s.created_at, s.id));
        sessions
    }

    /// Up to `limit` live sessions of one API key (all of them when keys are off),
    /// newest first, created before the cursor `after`; and the cursor of the next page.
    pub fn page_owned_by(
        &self,
        owner: Option<KeyId>,
        limit: usize,
        after: Option<(Timestamp, Uuid)>,
    ) -> (Vec<Arc<Session>>, Option<String>) {
        let mut sessions = self.list();
        sessions
            .retain(|s| s.owner == owner && after.is_none_or(|after| (s.created_at, s.id) < after));
        sessions.reverse();
        let next = (sessions.len() > limit)
            .then(|| sessions.get(limit.saturating_sub(1)))
            .flatten()
            .map(|last| cursor(last.created_at, last.id));
        sessions.truncate(limit);
        (sessions, next)
    }

    /// Removes the sessions idle for the TTL (no read, no write, no turn running or
    /// waiting); how many.
    pub fn expire_idle(&self) -> Vec<Uuid> {
        let now = self.clock.now();
        let mut expired = Vec::new();
        {
            // Checked under the map lock, so a session is never removed between the check
            // and the removal; nothing here waits.
            let mut sessions = self
                .sessions
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let idle: Vec<Uuid> = sessions
                .by_id
                .values()
                .filter(|session| session.is_idle_for(self.idle_ttl, now))
                .map(|session| session.id)
                .collect();
            expired.extend(idle.iter().filter_map(|id| sessions.remove(id)));
        }
        for session in &expired {
            session.close();
        }
        expired.iter().map(|session| session.id).collect()
    }

    /// Expires idle sessions every so often (a quarter of the TTL, at least every 50 ms,
    /// at most every minute) and whenever the clock is moved: the live ones, then the
    /// stored ones that are not live. Every second, tells the store when the sessions
    /// that left memory were last active. Runs until dropped.
    pub async fn expire_idle_forever(&self, store: &Store) {
        let every = (self.idle_ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(60));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut moves = self.clock.moves();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = moves.next() => {}
                _ = flush.tick() => {
                    self.flush_activity(store).await;
                    continue;
                }
            }
            self.flush_activity(store).await;
            let expired = self.expire_idle();
            for id in &expired {
                if let Err(error) = store.delete(*id).await {
                    tracing::warn!(session_id = %id, %error, "an expired session is still stored");
                }
            }
            let stored = self.expire_stored(store).await;
            if !expired.is_empty() || stored > 0 {
                tracing::info!(live = expired.len(), stored, "idle sessions expired");
            }
        }
    }

    /// Tells the store when the sessions that left memory were last active, and hands
    /// back their leases (unless they are live again).
    async fn flush_activity(&self, store: &Store) {
        let left = std::mem::take(
            &mut self
                .sessions
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .left,
        );
        if left.is_empty() {
            return;
        }
        if let Err(error) = store.touch(&left).await {
            tracing::warn!(%error, sessions = left.len(), "when sessions were last active is not stored");
        }
        if store.has_leases() {
            let gone: Vec<Uuid> = left
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| self.get(*id).is_none())
                .collect();
            if let Err(error) = store.release_leases(Some(&gone)).await {
                tracing::warn!(%error, "leases not handed back; they lapse by themselves");
            }
        }
    }

    /// With leased sessions (Postgres), renews this process's leases every third of
    /// `lease`, and lets go of the live sessions another process took over meanwhile
    /// (this one was paused, or cut off from the database, past its lease): they are
    /// loaded again, or sent on to their new process, on their next use. Runs until
    /// dropped.
    pub async fn renew_leases_forever(&self, store: &Store, lease: Duration) {
        if !store.has_leases() {
            return std::future::pending().await;
        }
        let mut tick = tokio::time::interval(lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let live = self.list();
            let held: std::collections::HashSet<Uuid> = match store.renew_leases().await {
                Ok(held) => held.into_iter().collect(),
                Err(error) => {
                    tracing::warn!(%error, "leases not renewed; commits are fenced if they lapse");
                    continue;
                }
            };
            for session in live.iter().filter(|s| !held.contains(&s.id)) {
                tracing::info!(session_id = %session.id, "another instance took the session over");
                session.mark_stale();
            }
        }
    }

    /// Deletes the stored sessions idle past the TTL that are not live (live ones expire
    /// by their own last activity); how many.
    async fn expire_stored(&self, store: &Store) -> usize {
        let Some(ttl) = i64::try_from(self.idle_ttl.as_millis())
            .ok()
            .filter(|_| store.is_durable())
        else {
            return 0;
        };
        let now = self.clock.wall_now().unix_millis();
        let Some(before) = Timestamp::from_unix_millis(now.saturating_sub(ttl)) else {
            return 0;
        };
        let mut expired = 0;
        // In batches, while batches expire something (live ones stay in the list).
        for _ in 0..20 {
            let idle = match store.idle(before, 500).await {
                Ok(idle) => idle,
                Err(error) => {
                    tracing::warn!(%error, "idle stored sessions were not looked for");
                    break;
                }
            };
            let mut this_batch = 0;
            for (id, owner) in idle {
                if self.get(id).is_some() {
                    continue;
                }
                match store.expire(id, before).await {
                    Ok(true) => {
                        this_batch += 1;
                        let owner = owner.as_deref().and_then(KeyId::from_hex);
                        let mut sessions = self
                            .sessions
                            .write()
                            .unwrap_or_else(PoisonError::into_inner);
                        sessions.uncount(owner);
                        // Loaded again meanwhile: it is gone all the same.
                        if let Some(session) = sessions.by_id.remove(&id) {
                            session.close();
                        }
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(session_id = %id, %error, "an idle stored session did not expire");
                    }
                }
            }
            expired += this_batch;
            if this_batch == 0 {
                break;
            }
        }
        expired
    }

    /// How many sessions exist, live or only stored (what `MAX_SESSIONS` bounds).
    pub fn existing(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Provider, ProviderRegistry, echo::Echo};
    use crate::session::records::Retention;
    use crate::session::{Limits, NewSession, Settings};

    fn session(owner: Option<KeyId>) -> Arc<Session> {
        let registry = ProviderRegistry::new(
            [("echo".to_owned(), Provider::Echo(Echo::default()))],
            "echo",
            None,
        )
        .unwrap();
        let settings = Settings {
            max_waiting_per_session: 4,
            limits: Limits::default(),
            turns: Retention {
                records: 4,
                failed: 4,
                max_age: Duration::from_secs(60),
                events: 4,
                events_ttl: Duration::from_secs(60),
            },
            feed: crate::session::feed::FeedLimits {
                events: 16,
                bytes: 1 << 16,
            },
        };
        Arc::new(
            NewSession::default()
                .build(
                    &registry,
                    settings,
                    owner,
                    crate::memory::MemoryBudget::unbounded().account(owner),
                )
                .unwrap(),
        )
    }

    #[test]
    fn the_per_key_bound_counts_what_each_key_holds_now() {
        let clock = Clock::manual();
        let store = LiveSessions::new(10, 2, Duration::from_secs(60), clock.clone());
        let (a, b) = (Some(KeyId::of("a")), Some(KeyId::of("b")));
        let first = session(a);
        store.insert(first.clone()).unwrap();
        store.insert(session(a)).unwrap();
        assert_eq!(store.insert(session(a)), Err(SessionLimit::PerKey(2)));
        store.insert(session(b)).unwrap();
        store.remove(first.id).unwrap();
        store.insert(session(a)).unwrap();
        assert_eq!(store.len(), 3);
        clock.advance(Duration::from_secs(60));
        assert_eq!(store.expire_idle().len(), 3);
        store.insert(session(a)).unwrap();
        store.insert(session(a)).unwrap();
    }

    #[test]
    fn the_total_bound_holds_for_sessions_without_a_key() {
        let store = LiveSessions::new(1, 1, Duration::MAX, Clock::system());
        store.insert(session(None)).unwrap();
        assert_eq!(store.insert(session(None)), Err(SessionLimit::Total(1)));
    }
}
