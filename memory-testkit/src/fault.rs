//! A storage wrapper that injects failures, for testing resilience.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use memory_core::{Error, Result, Storage};

/// When [`FaultInjecting`] fails a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultMode {
    /// Never: a transparent wrapper.
    Never,
    /// Every call.
    Always,
    /// Every call after the first `n` succeed.
    FailAfter(u64),
    /// Each call independently with probability `ratio`, from a seeded generator.
    Ratio {
        /// Probability of failure in [0, 1].
        ratio: f64,
        /// Seed, for reproducible runs.
        seed: u64,
    },
}

/// Wraps a backend and fails calls according to a [`FaultMode`], before they reach the backend
/// (so a failed call changed nothing). Failures are [`Error::Storage`] with backend `fault`,
/// transient or permanent as configured.
#[derive(Debug)]
pub struct FaultInjecting<S: ?Sized> {
    inner: Arc<S>,
    mode: Mutex<(FaultMode, StdRng)>,
    transient: std::sync::atomic::AtomicBool,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl<S: ?Sized> FaultInjecting<S> {
    /// Wraps `inner` (any backend, including an `Arc<dyn Storage>`); injected failures are
    /// transient.
    pub fn new(inner: Arc<S>, mode: FaultMode) -> Self {
        FaultInjecting {
            inner,
            mode: Mutex::new(seeded(mode)),
            transient: std::sync::atomic::AtomicBool::new(true),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Makes injected failures permanent (not transient) instead.
    #[must_use]
    pub fn permanent(self) -> Self {
        self.set_transient(false);
        self
    }

    /// Makes the failures injected from now on transient (true) or permanent (false).
    pub fn set_transient(&self, transient: bool) {
        self.transient.store(transient, Ordering::SeqCst);
    }

    /// Changes the mode (e.g. `Always` to simulate an outage, `Never` to heal). Resets the
    /// call count that `FailAfter` counts from.
    pub fn set_mode(&self, mode: FaultMode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = seeded(mode);
        self.calls.store(0, Ordering::SeqCst);
    }

    /// Calls seen since the last mode change.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    /// Checks, then runs `fut` (which only starts when awaited, so a failed check changes
    /// nothing).
    async fn checked<T>(
        &self,
        operation: &'static str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.check(operation)?;
        fut.await
    }

    fn check(&self, operation: &'static str) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = {
            let mut guard = self.mode.lock().unwrap_or_else(PoisonError::into_inner);
            let (mode, rng) = &mut *guard;
            match *mode {
                FaultMode::Never => false,
                FaultMode::Always => true,
                FaultMode::FailAfter(k) => n >= k,
                FaultMode::Ratio { ratio, .. } => rng.random::<f64>() < ratio,
            }
        };
        if fail {
            self.injected.fetch_add(1, Ordering::SeqCst);
            Err(Error::storage(
                "fault",
                operation,
                self.transient.load(Ordering::SeqCst),
                "injected fault",
            ))
        } else {
            Ok(())
        }
    }
}

/// `mode` with the generator its ratio draws from (seeded by it; 0 for the other modes).
fn seeded(mode: FaultMode) -> (FaultMode, StdRng) {
    let seed = match mode {
        FaultMode::Ratio { seed, .. } => seed,
        _ => 0,
    };
    (mode, StdRng::seed_from_u64(seed))
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] EpisodeStore for FaultInjecting<S> => inner, wrap checked;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] LearningStore for FaultInjecting<S> => inner, wrap checked;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] EmbeddingStore for FaultInjecting<S> => inner, wrap checked;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] MaintenanceStore for FaultInjecting<S> => inner, wrap checked;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] Storage for FaultInjecting<S> => inner;
    forward;
    {
        fn backend_name(&self) -> &'static str {
            "fault"
        }
    }
}
