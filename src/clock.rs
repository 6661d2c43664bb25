//! The clock that idle expiry and `Idempotency-Key` lifetimes are measured by. In
//! production it is the monotonic system clock; tests use a manual one they can move
//! forward, so that a day-long TTL passes in an instant and no test sleeps through one.
//! Provider timeouts and retries keep to tokio's own time and are not measured here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::message::Timestamp;

/// The system clock, or one that tests move by hand (cheap to clone; clones share it).
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<Manual>>,
}

/// How far a manual clock has been moved ahead of the system clock, and a signal that
/// it moved.
#[derive(Debug)]
struct Manual {
    ahead_nanos: AtomicU64,
    moved: watch::Sender<()>,
}

/// Hears each move of a manual clock made after it was made (`Clock::moves`).
#[derive(Debug)]
pub struct Moves(Option<watch::Receiver<()>>);

impl Moves {
    /// Resolves at the next move; never for the system clock.
    pub async fn next(&mut self) {
        let heard = match &mut self.0 {
            Some(moves) => moves.changed().await.is_ok(),
            None => false,
        };
        if !heard {
            std::future::pending::<()>().await;
        }
    }
}

impl Clock {
    /// The monotonic system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that runs with the system clock and jumps ahead by `advance`.
    pub fn manual() -> Self {
        Self {
            manual: Some(Arc::new(Manual {
                ahead_nanos: AtomicU64::new(0),
                moved: watch::Sender::new(()),
            })),
        }
    }

    /// Now, by this clock.
    pub fn now(&self) -> Instant {
        let ahead = self
            .manual
            .as_ref()
            .map_or(0, |m| m.ahead_nanos.load(Ordering::Acquire));
        Instant::now() + Duration::from_nanos(ahead)
    }

    /// The wall-clock time by this clock (a manual clock's moves included).
    pub fn wall_now(&self) -> Timestamp {
        self.wall_time_of(self.now())
    }

    /// The wall-clock time an `Instant` of this clock stands for.
    pub fn wall_time_of(&self, at: Instant) -> Timestamp {
        let now = Instant::now();
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let wall = Timestamp::now().unix_millis();
        let shifted = if at >= now {
            wall.saturating_add(millis(at - now))
        } else {
            wall.saturating_sub(millis(now - at))
        };
        Timestamp::from_unix_millis(shifted).unwrap_or_else(Timestamp::now)
    }

    /// Moves a manual clock ahead by `by` and wakes whoever listens to its `moves`;
    /// does nothing to the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.manual {
            let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            manual.ahead_nanos.fetch_add(nanos, Ordering::AcqRel);
            manual.moved.send_replace(());
        }
    }

    /// The moves of this clock from now on.
    pub fn moves(&self) -> Moves {
        Moves(self.manual.as_ref().map(|m| m.moved.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_jumps_ahead_and_the_system_clock_does_not() {
        let manual = Clock::manual();
        let before = Instant::now();
        manual.advance(Duration::from_secs(3600));
        assert!(manual.now() >= before + Duration::from_secs(3600));
        let system = Clock::system();
        system.advance(Duration::from_secs(3600));
        assert!(system.now() < Instant::now() + Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_move_is_heard_even_when_made_before_anyone_waits() {
        let clock = Clock::manual();
        let mut moves = clock.moves();
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), moves.next())
            .await
            .expect("the move was heard");
    }
}
