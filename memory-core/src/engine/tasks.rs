//! The periodic background tasks of a memory (the step-flush timer, the consolidation
//! schedule): one loop, parameterized by what it runs.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// Runs `tick` on the owner every `interval` until `stop` (a field of the owner) is notified,
/// the owner is dropped, or `stopped` says it has stopped. Holds the owner only weakly between
/// ticks, so dropping the owner ends the loop.
pub(crate) async fn every<T, F, Fut>(
    owner: Weak<T>,
    interval: Duration,
    stop: fn(&T) -> &Notify,
    stopped: fn(&T) -> bool,
    tick: F,
) where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let Some(strong) = owner.upgrade() else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop(&strong).notified() => return,
        }
        if stopped(&strong) {
            return;
        }
        tick(strong).await;
    }
}
