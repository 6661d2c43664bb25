//! All live sessions by id. The map lock is held only to look up, insert or remove an
//! `Arc<Session>` (and to count); nothing else happens under it. Bounds the number of
//! sessions, in all and per API key, and lets idle ones expire.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use uuid::Uuid;

use super::Session;
use crate::auth::KeyId;

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
pub struct SessionStore {
    sessions: RwLock<HashMap<Uuid, Arc<Session>>>,
    max_total: usize,
    max_per_key: usize,
}

impl Default for SessionStore {
    fn default() -> Self {
        Self::new(usize::MAX, usize::MAX)
    }
}

impl SessionStore {
    /// A store of at most `max_total` sessions, `max_per_key` per API key.
    pub fn new(max_total: usize, max_per_key: usize) -> Self {
        Self {
            sessions: RwLock::default(),
            max_total,
            max_per_key,
        }
    }

    /// The session with this id.
    pub fn get(&self, id: Uuid) -> Option<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&id).cloned()
    }

    /// Adds a new session, unless a bound would be passed.
    pub fn insert(&self, session: Arc<Session>) -> Result<(), SessionLimit> {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= self.max_total {
            return Err(SessionLimit::Total(self.max_total));
        }
        if let Some(owner) = session.owner {
            let owned = sessions.values().filter(|s| s.owner == Some(owner)).count();
            if owned >= self.max_per_key {
                return Err(SessionLimit::PerKey(self.max_per_key));
            }
        }
        sessions.insert(session.id, session);
        Ok(())
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
            sessions.values().cloned().collect()
        };
        sessions.sort_by_key(|s| (s.created_at, s.id));
        sessions
    }

    /// The live sessions of one API key (all of them when keys are off), oldest first.
    pub fn list_owned_by(&self, owner: Option<KeyId>) -> Vec<Arc<Session>> {
        let mut sessions = self.list();
        sessions.retain(|s| s.owner == owner);
        sessions
    }

    /// Removes the sessions idle for `ttl` (no read, no write, no turn running or
    /// waiting); how many.
    pub fn expire_idle(&self, ttl: Duration) -> usize {
        let mut expired = Vec::new();
        {
            // Checked under the map lock, so a session is never removed between the check
            // and the removal; nothing here waits.
            let mut sessions = self
                .sessions
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            sessions.retain(|_, session| {
                let idle = session.is_idle_for(ttl);
                if idle {
                    expired.push(session.clone());
                }
                !idle
            });
        }
        for session in &expired {
            session.close();
        }
        expired.len()
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
