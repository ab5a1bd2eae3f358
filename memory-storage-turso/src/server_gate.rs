//! One write at a time from this process to each server, however many handles it opens.
//!
//! `sqld` (0.24) queues writers for its write lock inside the server, and that queue breaks
//! under contention: a writer that waited in it while another committed fails to begin
//! (`SQLITE_BUSY_SNAPSHOT`, error 517) but stays queued, and when the queue later hands the
//! lock to that entry, nobody takes it: every other writer waits for the 5-s transaction
//! timeout, or for ever when the entry's connection has closed (seen with eight handles in
//! one process: sqld's threads spin on a lock slot of a closed connection and every write
//! hangs until the client's call timeout). The client cannot repair the server's queue, but
//! it can keep its own writes out of it: every write of this process to a server (a Hrana
//! batch or an interactive transaction, from any handle) first takes that server's gate
//! here, so at most one of them is ever waiting for the server's write lock. Reads do not
//! take it. Writes from other processes and machines still meet in the server's queue;
//! ARCHITECTURE.md ("Writers on one server") says what that leaves open.
//!
//! Written here because the gate is keyed by server within one process, which no lock crate
//! offers: a map of weak references, so a server's gate lives as long as a handle uses it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::Mutex;

/// The gates of the servers this process has handles to, by URL.
static GATES: OnceLock<std::sync::Mutex<HashMap<String, Weak<Mutex<()>>>>> = OnceLock::new();

/// The gate of the server at `url`: the same one for every handle of this process to it.
pub(crate) fn server_gate(url: &str) -> Arc<Mutex<()>> {
    let key = url.trim_end_matches('/').to_ascii_lowercase();
    let gates = GATES.get_or_init(Default::default);
    // A panic elsewhere while the map was held leaves it usable: the map is only ever
    // updated whole (one insert or retain).
    let mut gates = gates
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
        return gate;
    }
    gates.retain(|_, gate| gate.strong_count() > 0);
    let gate = Arc::new(Mutex::new(()));
    gates.insert(key, Arc::downgrade(&gate));
    gate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_to_one_server_share_its_gate_and_other_servers_do_not() {
        let a = server_gate("http://127.0.0.1:9/");
        let b = server_gate("HTTP://127.0.0.1:9");
        let c = server_gate("http://127.0.0.1:10");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        let held = a.try_lock().unwrap();
        assert!(
            b.try_lock().is_err(),
            "the second handle waits for the first"
        );
        assert!(c.try_lock().is_ok(), "another server is not held up");
        drop(held);
    }

    #[test]
    fn a_gate_no_handle_uses_is_forgotten() {
        let first = Arc::downgrade(&server_gate("http://127.0.0.1:11"));
        assert!(first.upgrade().is_none());
        let again = server_gate("http://127.0.0.1:11");
        assert_eq!(Arc::strong_count(&again), 1);
    }
}
