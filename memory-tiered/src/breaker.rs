//! A circuit breaker around the durable layer: closed, open, half-open.
//!
//! Closed: calls pass; it trips open after `consecutive_failures` transient failures in a row,
//! or when the transient-failure rate over the last `window` calls reaches `failure_rate`.
//! Open: calls are refused at once (no waiting on a dead server) for `open_for`.
//! Half-open: one probe call passes; success closes the breaker, failure reopens it.
//! Only transient errors count; permanent ones (not found, invalid input) are successes here.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

/// Breaker settings.
///
/// # Default
/// Trips after 5 consecutive transient failures, or at a 50% failure rate over the last 20 calls
/// (once 20 calls were seen); stays open 5 s; then lets one probe through. A call running 2 s
/// has the layer asked whether it answers, with 2 s for the answer: a hung server opens the
/// breaker within about 4 s of a call, not after five call timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Consecutive transient failures that trip it.
    pub consecutive_failures: u32,
    /// Failure rate in the window that trips it, in (0, 1].
    pub failure_rate: f64,
    /// Calls in the rate window.
    pub window: u32,
    /// How long it stays open before probing.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub open_for: Duration,
    /// How long a durable call runs before the layer is asked whether it still answers (and
    /// again each time this passes): see [`crate::TieredStorage`]'s hang watchdog.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub hang_check_after: Duration,
    /// How long that question waits for its answer; none opens the breaker at once.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub hang_probe_deadline: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            open_for: Duration::from_secs(5),
            hang_check_after: Duration::from_secs(2),
            hang_probe_deadline: Duration::from_secs(2),
        }
    }
}

/// The breaker's state, as reported by status calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused until the open time passes.
    Open,
    /// One probe is allowed.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
        window: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

/// The circuit breaker. Cheap to call; all state behind one short lock.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Time until the next probe is allowed.
    pub retry_after: Duration,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: Mutex::new(State::Closed {
                consecutive: 0,
                window: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the breaker now, as if it had just tripped: calls are refused for `open_for`,
    /// then one probe passes. For a durable layer known to be unreachable before any call
    /// (a server that did not answer at open).
    pub fn trip(&self) {
        *self.lock() = State::Open {
            until: Instant::now() + self.config.open_for,
        };
    }

    /// The current state (an open breaker whose time is up reports half-open).
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= *until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call. `Ok` means go ahead and report the result with
    /// [`CircuitBreaker::record`].
    pub fn allow(&self) -> Result<(), Refused> {
        let mut st = self.lock();
        let now = Instant::now();
        match &mut *st {
            State::Closed { .. } => Ok(()),
            State::Open { until } => {
                if now >= *until {
                    *st = State::HalfOpen { probing: true };
                    Ok(())
                } else {
                    Err(Refused {
                        retry_after: *until - now,
                    })
                }
            }
            State::HalfOpen { probing } => {
                if *probing {
                    Err(Refused {
                        retry_after: Duration::from_millis(100),
                    })
                } else {
                    *probing = true;
                    Ok(())
                }
            }
        }
    }

    /// Reports the result of an allowed call: `transient_failure` is true only for errors for
    /// which [`memory_core::Error::is_transient`] holds.
    pub fn record(&self, transient_failure: bool) {
        let mut st = self.lock();
        let c = &self.config;
        let next = match &mut *st {
            State::Closed {
                consecutive,
                window,
            } => {
                *consecutive = if transient_failure {
                    *consecutive + 1
                } else {
                    0
                };
                window.push_back(transient_failure);
                while window.len() > c.window.max(1) as usize {
                    window.pop_front();
                }
                let failures = window.iter().filter(|f| **f).count();
                let rate_trip = window.len() >= c.window.max(1) as usize
                    && failures as f64 / window.len() as f64 >= c.failure_rate;
                if *consecutive >= c.consecutive_failures.max(1) || rate_trip {
                    warn!(
                        consecutive = *consecutive,
                        failures, "circuit breaker open: durable layer failing"
                    );
                    Some(State::Open {
                        until: Instant::now() + c.open_for,
                    })
                } else {
                    None
                }
            }
            State::HalfOpen { .. } => {
                if transient_failure {
                    warn!("circuit breaker probe failed: open again");
                    Some(State::Open {
                        until: Instant::now() + c.open_for,
                    })
                } else {
                    warn!("circuit breaker closed: durable layer answering again");
                    Some(State::Closed {
                        consecutive: 0,
                        window: VecDeque::new(),
                    })
                }
            }
            // A call that started before the breaker opened; its result changes nothing.
            State::Open { .. } => None,
        };
        if let Some(n) = next {
            *st = n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: 10,
            open_for: Duration::from_secs(5),
            ..BreakerConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_after_open_time_and_closes_on_success() {
        let b = breaker();
        for _ in 0..2 {
            b.allow().unwrap();
            b.record(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.allow().unwrap();
        b.record(true);
        assert_eq!(b.state(), BreakerState::Open);
        let refused = b.allow().unwrap_err();
        assert!(refused.retry_after <= Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.allow().unwrap();
        assert!(b.allow().is_err(), "only one probe at a time");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens() {
        let b = breaker();
        for _ in 0..3 {
            b.allow().unwrap();
            b.record(true);
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        b.allow().unwrap();
        b.record(true);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_never_trip_and_rate_trips() {
        let b = breaker();
        for _ in 0..100 {
            b.allow().unwrap();
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // Alternating failures never reach 3 in a row, but reach a 50% rate within 10 calls.
        let mut calls = 0;
        while b.allow().is_ok() {
            b.record(calls % 2 == 0);
            calls += 1;
            assert!(calls <= 10, "rate never tripped");
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(
            calls >= 9,
            "tripped by the rate, not by consecutive failures ({calls} calls)"
        );
    }
}
