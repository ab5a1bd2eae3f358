//! Stopping on SIGTERM, SIGINT and SIGHUP: finish the call in progress, flush, close.
//!
//! A process-wide flag (this is the binary, not the library) lets long commands (`import`,
//! `export`, `demo`, the evaluations) stop between items instead of being cut off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

/// How long a command may take to finish after a signal before it is cut off (it is then
/// not acknowledged; what it already stored stays).
pub const GRACE: Duration = Duration::from_secs(10);

/// Whether a stop signal arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Resolves when the process gets SIGTERM, SIGINT or SIGHUP (marking the stop), with the
/// signal's name and the exit code a shell expects for it.
pub async fn terminated() -> (&'static str, u8) {
    let got = wait().await;
    STOP.store(true, Ordering::Relaxed);
    got
}

#[cfg(unix)]
async fn wait() -> (&'static str, u8) {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn next(s: Option<&mut Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, signal = name, "cannot listen for the signal");
            None
        }
    };
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut int = listen(SignalKind::interrupt(), "SIGINT");
    let mut hup = listen(SignalKind::hangup(), "SIGHUP");
    tokio::select! {
        () = next(term.as_mut()) => ("SIGTERM", 143),
        () = next(int.as_mut()) => ("SIGINT", 130),
        () = next(hup.as_mut()) => ("SIGHUP", 129),
    }
}

#[cfg(not(unix))]
async fn wait() -> (&'static str, u8) {
    match tokio::signal::ctrl_c().await {
        Ok(()) => ("interrupt", 130),
        Err(_) => std::future::pending().await,
    }
}
