//! What every turn of every session shares: the metrics, the bound on provider calls in
//! flight (`MAX_CONCURRENT_TURNS`) and on turns waiting for one, the retry policy, the
//! provider timeout, and the shutdown state with the tracker of running turn tasks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::{CancelMode, LiveSessions};
use crate::metrics::Metrics;
use crate::store::Store;

/// How failed provider calls are tried again: exponential backoff with full jitter,
/// unless the provider said how long to wait.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first call; 0 turns retrying off.
    pub max_retries: u32,
    /// The backoff before the first retry (doubled for each further one).
    pub base: Duration,
    /// The longest backoff.
    pub cap: Duration,
}

impl RetryPolicy {
    /// A random wait between zero and `min(cap, base · 2^retry)` ("full jitter").
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.cap);
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// The settings of the runtime.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeSettings {
    /// Provider calls in flight across all sessions.
    pub max_concurrent_turns: usize,
    /// Turns that may wait for a provider slot before new writes get `503 overloaded`.
    pub max_waiting_turns: usize,
    /// Bound on a turn's provider calls, retries and backoff included.
    pub provider_timeout: Duration,
    pub retry: RetryPolicy,
    /// Log message content (off by default).
    pub log_content: bool,
}

/// Shared by every turn.
#[derive(Debug)]
pub struct Runtime {
    pub metrics: Metrics,
    pub settings: RuntimeSettings,
    /// Where every commit is made durable before it is acknowledged.
    pub store: Store,
    slots: Arc<Semaphore>,
    slots_waiting: AtomicUsize,
    tracker: TaskTracker,
    shutting_down: AtomicBool,
}

/// Why a new turn was not admitted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error,
)]
pub enum NotAdmitted {
    /// Every provider slot is taken and too many turns wait for one.
    #[error("the service is overloaded; retry later")]
    Overloaded,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl Runtime {
    pub fn new(settings: RuntimeSettings, store: Store) -> Self {
        Self {
            metrics: Metrics::new(),
            store,
            slots: Arc::new(Semaphore::new(settings.max_concurrent_turns.max(1))),
            slots_waiting: AtomicUsize::new(0),
            tracker: TaskTracker::new(),
            shutting_down: AtomicBool::new(false),
            settings,
        }
    }

    /// Whether a new turn may start now.
    pub fn admit(&self) -> Result<(), NotAdmitted> {
        if self.is_shutting_down() {
            return Err(NotAdmitted::ShuttingDown);
        }
        let saturated = self.slots.available_permits() == 0
            && self.slots_waiting.load(Ordering::Relaxed) >= self.settings.max_waiting_turns;
        if saturated {
            return Err(NotAdmitted::Overloaded);
        }
        Ok(())
    }

    /// Waits for one of the provider slots; the slot is freed when the permit drops.
    pub async fn provider_slot(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.slots_waiting.fetch_add(1, Ordering::Relaxed);
        self.metrics.provider_slots_waiting.inc();
        let permit = self.slots.clone().acquire_owned().await.ok();
        self.slots_waiting.fetch_sub(1, Ordering::Relaxed);
        self.metrics.provider_slots_waiting.dec();
        permit
    }

    /// Runs a turn's task, tracked so that shutdown can wait for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// From now on, new turns are refused and readiness fails.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.tracker.close();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Shutdown: new turns are refused at once; running turns get `grace` to finish;
    /// what still runs then is cancelled and rolled back, and its waiters turned away.
    pub async fn drain(&self, sessions: &LiveSessions, grace: Duration) {
        self.begin_shutdown();
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining turns"
        );
        if !self.turns_finished(grace).await {
            tracing::warn!("grace period over: cancelling the turns still running");
            for session in &sessions.list() {
                session.turn_lock().cancel_waiting();
                session.turn_lock().cancel_running(CancelMode::Rollback);
            }
            self.turns_finished(Duration::from_secs(5)).await;
        }
        tracing::info!("turns drained");
    }

    /// Waits until every turn task has ended, or `limit` has passed; whether they all did.
    pub async fn turns_finished(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_concurrent_turns: usize, max_waiting_turns: usize) -> RuntimeSettings {
        RuntimeSettings {
            max_concurrent_turns,
            max_waiting_turns,
            provider_timeout: Duration::from_secs(1),
            retry: RetryPolicy {
                max_retries: 2,
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
            },
            log_content: false,
        }
    }

    #[test]
    fn backoff_stays_under_the_doubling_ceiling_and_the_cap() {
        let policy = settings(1, 1).retry;
        for retry in 0..10 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(retry)).min(Duration::from_secs(1));
            for _ in 0..50 {
                assert!(policy.backoff(retry) <= ceiling);
            }
        }
    }

    #[tokio::test]
    async fn past_the_slots_and_the_waiting_bound_new_turns_are_not_admitted() {
        let runtime = Arc::new(Runtime::new(settings(1, 1), Store::Memory));
        let held = runtime.provider_slot().await;
        assert!(runtime.admit().is_ok(), "nobody waits yet");
        let waiter = {
            let runtime = runtime.clone();
            tokio::spawn(async move { runtime.provider_slot().await.is_some() })
        };
        while runtime.slots_waiting.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(runtime.admit(), Err(NotAdmitted::Overloaded));
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(runtime.admit().is_ok());
        runtime.begin_shutdown();
        assert_eq!(runtime.admit(), Err(NotAdmitted::ShuttingDown));
    }
}
