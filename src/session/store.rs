//! All live sessions by id. The map lock is held only to look up, insert or remove an
//! `Arc<Session>`; nothing else happens under it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use uuid::Uuid;

use super::Session;

/// The live sessions.
#[derive(Debug, Default)]
pub struct SessionStore {
    sessions: RwLock<HashMap<Uuid, Arc<Session>>>,
}

impl SessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The session with this id.
    pub fn get(&self, id: Uuid) -> Option<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        sessions.get(&id).cloned()
    }

    /// Adds a new session.
    pub fn insert(&self, session: Arc<Session>) {
        let mut sessions = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        sessions.insert(session.id, session);
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
