//! Wall-clock time, injectable so that decay, TTLs and rate limits can be tested with paused time.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
///
/// Implementations return millisecond precision, which is what every storage backend keeps, so
/// a stored timestamp reads back equal to the one written.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time, truncated to the millisecond.
    fn now(&self) -> DateTime<Utc>;
}

/// Truncates a time to the millisecond.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_millis(Utc::now())
    }
}

/// A clock that starts at the wall time of its creation and then follows tokio's clock.
///
/// Under `#[tokio::test(start_paused = true)]` it stands still until `tokio::time::advance`
/// moves it, which makes age-dependent behaviour (confidence decay, rate-limit refill)
/// testable without real sleeps.
/// Outside a runtime it behaves like the system clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall_start: DateTime<Utc>,
    tokio_start: tokio::time::Instant,
}

impl TokioClock {
    /// Anchors the clock at the current wall time.
    pub fn new() -> Self {
        Self::starting_at(Utc::now())
    }

    /// Anchors the clock at a given wall time.
    pub fn starting_at(wall_start: DateTime<Utc>) -> Self {
        TokioClock {
            wall_start,
            tokio_start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.tokio_start);
        truncate_to_millis(
            chrono::Duration::from_std(elapsed)
                .ok()
                .and_then(|d| self.wall_start.checked_add_signed(d))
                .unwrap_or(self.wall_start),
        )
    }
}
