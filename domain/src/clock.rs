//! Time and randomness, injected everywhere so tests are exact.
//!
//! Request code never calls `Utc::now()` or `rand::thread_rng()` directly (`clippy.toml` forbids
//! it): it asks the [`Clock`] and the [`RngSource`] held by the application state.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use rand::{rngs::StdRng, RngCore, SeedableRng};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct MockClock {
    now: Mutex<DateTime<Utc>>,
}

impl MockClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// The current time at the precision the database keeps (milliseconds), for comparing with
    /// values read back from storage.
    pub fn now_db(&self) -> DateTime<Utc> {
        db_precision(self.now())
    }

    /// Moves the clock forward (or backward, with a negative duration).
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Default for MockClock {
    /// 2022-01-16T14:40:00Z, a fixed and unremarkable instant.
    fn default() -> Self {
        Self::new(DateTime::from_timestamp(1_642_344_000, 0).unwrap_or_default())
    }
}

impl Clock for MockClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands out independent random number generators (one per request or transaction).
pub trait RngSource: Send + Sync + std::fmt::Debug {
    fn rng(&self) -> StdRng;
}

/// Generators seeded from the operating system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRngSource;

impl RngSource for OsRngSource {
    fn rng(&self) -> StdRng {
        StdRng::from_entropy()
    }
}

/// Deterministic generators derived from one seed, for tests: the n-th generator handed out is
/// always the same for the same seed.
#[derive(Debug)]
pub struct SeededRngSource {
    master: Mutex<StdRng>,
}

impl SeededRngSource {
    pub fn new(seed: u64) -> Self {
        Self {
            master: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl RngSource for SeededRngSource {
    fn rng(&self) -> StdRng {
        let mut master = self.master.lock().unwrap_or_else(|e| e.into_inner());
        StdRng::seed_from_u64(master.next_u64())
    }
}

/// The clock and randomness a component works with.
#[derive(Debug, Clone)]
pub struct Entropy {
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn RngSource>,
}

impl Entropy {
    /// The real clock and OS randomness.
    pub fn system() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            rng: Arc::new(OsRngSource),
        }
    }

    /// A mock clock at its default instant and a seeded RNG.
    pub fn test(seed: u64) -> (Self, Arc<MockClock>) {
        let clock = Arc::new(MockClock::default());
        (
            Self {
                clock: clock.clone(),
                rng: Arc::new(SeededRngSource::new(seed)),
            },
            clock,
        )
    }
}

/// Truncates an instant to what both storage backends keep (PostgreSQL keeps microseconds,
/// SQLite milliseconds), so a value read back equals the value written.
pub fn db_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_clock_moves_only_when_told() {
        let clock = MockClock::default();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::seconds(90));
        assert_eq!(clock.now() - t0, Duration::seconds(90));
    }

    #[test]
    fn seeded_source_is_reproducible_and_children_differ() {
        let a = SeededRngSource::new(7);
        let b = SeededRngSource::new(7);
        let (mut a1, mut a2) = (a.rng(), a.rng());
        let (mut b1, mut b2) = (b.rng(), b.rng());
        let (x1, x2) = (a1.next_u64(), a2.next_u64());
        assert_eq!(x1, b1.next_u64());
        assert_eq!(x2, b2.next_u64());
        assert_ne!(x1, x2);
    }
}
