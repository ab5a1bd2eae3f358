//! The periodic background tasks of a memory (the step-flush timer, the consolidation
//! schedule): one loop, parameterized by what it runs.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// Runs `tick` on the owner after `first`, then every `interval` (from the end of one tick to
/// the start of the next) until `stop` (a field of the owner) is notified, the owner is
/// dropped, or `stopped` says it has stopped. Holds the owner only weakly between ticks, so
/// dropping the owner ends the loop.
pub(crate) async fn every<T, F, Fut>(
    owner: Weak<T>,
    first: Duration,
    interval: Duration,
    stop: fn(&T) -> &Notify,
    stopped: fn(&T) -> bool,
    tick: F,
) where
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut wait = first;
    loop {
        let Some(strong) = owner.upgrade() else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(std::mem::replace(&mut wait, interval)) => {}
            () = stop(&strong).notified() => return,
        }
        if stopped(&strong) {
            return;
        }
        tick(strong).await;
    }
}
