//! The memory budget: what the service holds for its clients, in bytes, by API key and
//! in all: live histories, turn records, turn events and stored `Idempotency-Key`
//! answers. Each holder keeps a `Charge` that it grows as it holds more and that gives
//! its bytes back when dropped, so the counts follow the data without bookkeeping at
//! every exit. Writes ask `admit` first: past a key's quota they are refused for that
//! key alone; past the budget, for everyone until memory is freed. The counts are
//! estimates (text lengths plus a fixed overhead per item), not allocator figures.
//!
//! Beside it, a budget of its own for what is kept only to answer faster (histories
//! kept written as JSON): a cache that does not fit is let go, never a write refused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::keys::KeyId;

/// What a write would pass.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error,
)]
pub enum OverBudget {
    /// The caller's API key holds its quota.
    #[error(
        "this API key holds {held} bytes of sessions, turn records and stored answers; its quota is {quota} (MEMORY_PER_KEY_BYTES): delete sessions to write more"
    )]
    Key { held: usize, quota: usize },
    /// The service holds its budget.
    #[error(
        "the service holds {held} bytes, its budget is {budget} (MEMORY_BUDGET_BYTES); retry later"
    )]
    Service { held: usize, budget: usize },
}

/// The budget and the bytes held, in all and by API key.
#[derive(Debug)]
pub struct MemoryBudget {
    budget: usize,
    per_key: usize,
    total: AtomicUsize,
    owners: Mutex<HashMap<Option<KeyId>, Arc<AtomicUsize>>>,
    /// The budget of what is kept only to answer faster (see [`Account::caches`]),
    /// apart from this one; `None`: nothing is kept so.
    caches: Option<Arc<MemoryBudget>>,
}

impl MemoryBudget {
    pub fn new(budget: usize, per_key: usize) -> Arc<Self> {
        Self::with_caches(budget, per_key, 0)
    }

    /// A budget, with `caches` bytes beside it for what is kept only to answer faster
    /// (0: nothing is).
    pub fn with_caches(budget: usize, per_key: usize, caches: usize) -> Arc<Self> {
        Arc::new(Self {
            budget,
            per_key,
            total: AtomicUsize::new(0),
            owners: Mutex::default(),
            caches: (caches > 0).then(|| Self::new(caches, caches)),
        })
    }

    /// No bound (tests and tools).
    pub fn unbounded() -> Arc<Self> {
        Self::with_caches(usize::MAX, usize::MAX, usize::MAX)
    }

    /// The account of one API key (`None`: callers when no keys are configured).
    pub fn account(self: &Arc<Self>, owner: Option<KeyId>) -> Account {
        let held = self
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(owner)
            .or_default()
            .clone();
        Account {
            budget: self.clone(),
            held,
        }
    }

    /// Bytes held in all.
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Bytes held by caches (see [`Account::caches`]).
    pub fn held_by_caches(&self) -> usize {
        self.caches.as_ref().map_or(0, |caches| caches.held())
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }
}

/// What one API key holds; cheap to clone.
#[derive(Debug, Clone)]
pub struct Account {
    budget: Arc<MemoryBudget>,
    held: Arc<AtomicUsize>,
}

impl Account {
    /// Whether `incoming` more bytes fit: the key's quota first, then the budget.
    pub fn admit(&self, incoming: usize) -> Result<(), OverBudget> {
        let held = self.held.load(Ordering::Relaxed);
        let quota = self.budget.per_key;
        if quota < self.budget.budget && held.saturating_add(incoming) > quota {
            return Err(OverBudget::Key { held, quota });
        }
        let total = self.budget.held();
        if total.saturating_add(incoming) > self.budget.budget {
            return Err(OverBudget::Service {
                held: total,
                budget: self.budget.budget,
            });
        }
        Ok(())
    }

    /// Bytes this key holds.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The account for what is kept only to answer faster, on a budget of its own
    /// (`HISTORY_CACHE_BYTES`) that clients' data never competes with: a cache that
    /// does not fit is not kept, and no write is refused for one. `None` when caches
    /// are off.
    pub fn caches(&self) -> Option<Account> {
        self.budget
            .caches
            .as_ref()
            .map(|caches| caches.account(None))
    }

    /// A charge of `bytes` on this account, given back when it is dropped.
    pub fn charge(&self, bytes: usize) -> Charge {
        let mut charge = Charge {
            account: self.clone(),
            bytes: 0,
        };
        charge.add(bytes);
        charge
    }
}

/// Bytes one holder has on an account; they are given back when it is dropped.
#[derive(Debug)]
pub struct Charge {
    account: Account,
    bytes: usize,
}

impl Charge {
    /// Holds `bytes` more.
    pub fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.account.held.fetch_add(bytes, Ordering::Relaxed);
        self.account
            .budget
            .total
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Holds `bytes` fewer (at most what it holds).
    pub fn sub(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.account.held.fetch_sub(bytes, Ordering::Relaxed);
        self.account
            .budget
            .total
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// What this holder holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The account the bytes are held on.
    pub fn account(&self) -> &Account {
        &self.account
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.sub(self.bytes);
    }
}

/// The memory this process may use: the machine's (`MemTotal`), or its control
/// group's limit where that is lower. `None` where neither can be read.
pub fn machine_bytes() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kb: usize = info
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kb * 1024)
        });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|max| max.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(total), Some(cgroup)) => Some(total.min(cgroup)),
        (total, cgroup) => total.or(cgroup),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_while_they_live_by_key_and_in_all() {
        let budget = MemoryBudget::new(1000, 700);
        let a = budget.account(Some(KeyId::of("a")));
        let b = budget.account(Some(KeyId::of("b")));
        let mut held = a.charge(400);
        assert_eq!(a.admit(300), Ok(()));
        assert_eq!(
            a.admit(301),
            Err(OverBudget::Key {
                held: 400,
                quota: 700
            })
        );
        let other = b.charge(500);
        assert_eq!(b.admit(100), Ok(()));
        assert_eq!(
            b.admit(101),
            Err(OverBudget::Service {
                held: 900,
                budget: 1000
            })
        );
        held.sub(300);
        assert_eq!(budget.held(), 600);
        drop(other);
        drop(held);
        assert_eq!((budget.held(), a.held(), b.held()), (0, 0, 0));
        assert_eq!(
            budget.account(Some(KeyId::of("a"))).held(),
            0,
            "one account per key"
        );
    }
}
