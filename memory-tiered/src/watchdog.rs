//! The hang watchdog: tells a slow durable call from a durable layer that stopped answering.
//!
//! A server that takes connections and answers nothing (stopped, wedged) fails no call before
//! the call timeout, and the breaker would wait for several such failures before opening: a
//! running process would block call after call. Instead, once a call has run for
//! [`BreakerConfig::hang_check_after`](crate::BreakerConfig::hang_check_after), the layer is
//! asked a trivial question on a path of its own
//! ([`EpisodeStore::answers_within`](memory_core::EpisodeStore::answers_within)). No answer
//! within `hang_probe_deadline` opens the breaker and ends every call waiting on the layer with
//! [`Error::CircuitOpen`] (a write goes to the journal, as during a refusal); an answer means
//! the call is only slow, and it runs on, checked again each time `hang_check_after` passes.
//! One question is asked at a time; calls running long together share its answer.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The watchdog's shared state.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    /// Held while a question is asked.
    asking: tokio::sync::Mutex<()>,
    /// When the layer last answered one.
    answered_at: Mutex<Option<tokio::time::Instant>>,
}

impl Inner {
    /// Resolves only once the durable layer is judged hung (the breaker is then open).
    pub(crate) async fn until_hung(&self) {
        let every = self.config.breaker.hang_check_after;
        loop {
            tokio::time::sleep(every).await;
            if self.durable_hung(every).await {
                return;
            }
        }
    }

    /// Whether the layer stopped answering: an open breaker says so already; otherwise an
    /// answer newer than `fresh_for` says no, and a new question decides.
    async fn durable_hung(&self, fresh_for: Duration) -> bool {
        if self.breaker.state() == BreakerState::Open {
            return true;
        }
        let _asking = self.watchdog.asking.lock().await;
        if self.breaker.state() == BreakerState::Open {
            return true;
        }
        if lock(&self.watchdog.answered_at).is_some_and(|at| at.elapsed() < fresh_for) {
            return false;
        }
        let deadline = self.config.breaker.hang_probe_deadline;
        if self.durable.answers_within(deadline).await {
            *lock(&self.watchdog.answered_at) = Some(tokio::time::Instant::now());
            return false;
        }
        warn!(
            deadline_ms = deadline.as_millis() as u64,
            "durable layer does not answer: circuit breaker open, calls waiting on it end now"
        );
        self.breaker.trip();
        true
    }
}
