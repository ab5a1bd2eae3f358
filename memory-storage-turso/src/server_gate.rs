//! One write at a time from this machine's processes (of one user) to each server, however
//! many handles they open.
//!
//! `sqld` (0.24) queues writers for its write lock inside the server, and that queue breaks
//! under contention: a writer that waited in it while another committed fails to begin
//! (`SQLITE_BUSY_SNAPSHOT`, error 517) but can stay queued, and when the queue later hands the
//! lock to that entry, nobody takes it: every other writer waits for the 5-s transaction
//! timeout, or for ever when the entry's connection has closed (seen with eight handles in
//! one process: sqld's threads spin on a lock slot of a closed connection and every write
//! hangs until the client's call timeout). The client cannot repair the server's queue, but
//! it can keep its own writes out of it: every write to a server (a Hrana batch or an
//! interactive transaction, from any handle) first takes that server's gate here, so at most
//! one write from this machine is ever waiting for the server's write lock. Reads do not take
//! it.
//!
//! The gate has two parts: a mutex shared by the handles of this process (a map of weak
//! references keyed by URL, so a server's gate lives as long as a handle uses it), then an
//! advisory lock on a file chosen by the URL's hash (one of 64) in a directory only this user can write
//! (`$XDG_RUNTIME_DIR/memory`, else `~/.cache/memory`), shared by the user's processes. The
//! file lock is polled (never a blocking wait), so a cancelled call can never leave it held;
//! the kernel releases it when a process dies. Without a usable directory (no home, a
//! directory others may write, a lock file that is not a plain file) the gate is the mutex
//! alone, with a warning. Writes from other machines still meet in the server's queue;
//! ARCHITECTURE.md ("Writers on one server") says what that leaves open.
//!
//! Written here because the gate is keyed by server and spans processes, which no lock crate
//! in the tree offers; the file lock is the standard library's (`File::try_lock`).

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::warn;

/// The gates of the servers this process has handles to, by URL.
static GATES: OnceLock<std::sync::Mutex<HashMap<String, Weak<ServerGate>>>> = OnceLock::new();

/// How many lock files servers share. The directory never holds more (test runs use a new
/// port each time); two servers whose URLs land on one file merely take turns, as if one.
const LOCK_FILES: u64 = 64;

/// The longest pause between two polls of another process's file lock.
const MAX_POLL: Duration = Duration::from_millis(8);

/// The gate of one server: see the module documentation.
pub(crate) struct ServerGate {
    in_process: Arc<Mutex<()>>,
    /// `None`: no usable lock file, the gate is this process's alone.
    file: Option<File>,
}

/// A held gate: released when dropped (the file lock first, then the mutex).
pub(crate) struct GateGuard {
    gate: Arc<ServerGate>,
    locked_file: bool,
    _in_process: OwnedMutexGuard<()>,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        if let (true, Some(file)) = (self.locked_file, &self.gate.file)
            && let Err(e) = file.unlock()
        {
            warn!(error = %e, "releasing the server gate's file lock failed");
        }
    }
}

impl ServerGate {
    /// Waits for the gate: this process's other writes to the server first, then other
    /// processes' (polling their file lock, pauses of 1 ms doubling up to 8 ms).
    pub(crate) async fn lock(self: &Arc<Self>) -> GateGuard {
        let in_process = Arc::clone(&self.in_process).lock_owned().await;
        let mut locked_file = false;
        if let Some(file) = &self.file {
            let mut pause = Duration::from_millis(1);
            loop {
                match file.try_lock() {
                    Ok(()) => {
                        locked_file = true;
                        break;
                    }
                    Err(TryLockError::WouldBlock) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_POLL);
                    }
                    Err(TryLockError::Error(e)) => {
                        warn!(error = %e, "the server gate's file lock failed; this process's writes alone are serialized");
                        break;
                    }
                }
            }
        }
        GateGuard {
            gate: Arc::clone(self),
            locked_file,
            _in_process: in_process,
        }
    }
}

/// Takes `gate` when there is one (a database on a server); a local database has none.
pub(crate) async fn lock_if_any(gate: Option<&Arc<ServerGate>>) -> Option<GateGuard> {
    match gate {
        Some(gate) => Some(gate.lock().await),
        None => None,
    }
}

/// The gate of the server at `url`: the same one for every handle of this process to it.
pub(crate) fn server_gate(url: &str) -> Arc<ServerGate> {
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
    let gate = Arc::new(open_gate(&key, gate_dir().as_deref()));
    gates.insert(key, Arc::downgrade(&gate));
    gate
}

/// Where this user's processes meet: `$XDG_RUNTIME_DIR/memory`, else `~/.cache/memory`.
fn gate_dir() -> Option<PathBuf> {
    let nonempty = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(runtime) = nonempty("XDG_RUNTIME_DIR") {
        return Some(runtime.join("memory"));
    }
    nonempty("HOME").map(|home| home.join(".cache").join("memory"))
}

/// A gate for the server `key`, with a lock file in `dir` when one can be used safely.
fn open_gate(key: &str, dir: Option<&Path>) -> ServerGate {
    let file = match dir.map(|dir| lock_file(dir, key)) {
        Some(Ok(file)) => Some(file),
        Some(Err(reason)) => {
            warn!(%reason, "no server gate shared with other processes; this process's writes alone are serialized");
            None
        }
        None => {
            warn!("no home or runtime directory: no server gate shared with other processes");
            None
        }
    };
    ServerGate {
        in_process: Arc::new(Mutex::new(())),
        file,
    }
}

/// Opens (creating) `dir/server-<NN>.lock` (`NN`: the key's hash modulo [`LOCK_FILES`]), refusing a directory others may write
/// and a lock path that is anything but a plain file (a symbolic link is never followed).
fn lock_file(dir: &Path, key: &str) -> Result<File, String> {
    memory_files::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(format!("{} is writable by others", dir.display()));
        }
    }
    let digest = Sha256::digest(key.as_bytes());
    let hash = digest
        .iter()
        .take(8)
        .fold(0u64, |n, b| n << 8 | u64::from(*b));
    let path = dir.join(format!("server-{:02}.lock", hash % LOCK_FILES));
    match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(format!("{} is not a plain file", path.display()));
        }
        _ => {}
    }
    // The directory is writable by this user alone, so no one else can put a link in place
    // between the check above and the open.
    memory_files::file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
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
    }

    #[test]
    fn a_gate_no_handle_uses_is_forgotten() {
        let first = Arc::downgrade(&server_gate("http://127.0.0.1:11"));
        assert!(first.upgrade().is_none());
        let again = server_gate("http://127.0.0.1:11");
        assert_eq!(Arc::strong_count(&again), 1);
    }

    #[tokio::test]
    async fn a_write_waits_for_this_process_and_for_another_process_holding_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(open_gate("http://server", Some(dir.path())));
        assert!(gate.file.is_some());
        let wait = Duration::from_millis(100);

        let held = gate.lock().await;
        assert!(
            tokio::time::timeout(wait, gate.lock()).await.is_err(),
            "a second write of this process waits"
        );
        drop(held);

        // Another process: its own open file description of the same lock file.
        let lock_path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let other = File::open(&lock_path).unwrap();
        other.try_lock().unwrap();
        assert!(
            tokio::time::timeout(wait, gate.lock()).await.is_err(),
            "a write waits while another process holds the server"
        );
        other.unlock().unwrap();
        let held = tokio::time::timeout(Duration::from_secs(5), gate.lock())
            .await
            .expect("the gate is taken once the other process lets go");
        assert!(other.try_lock().is_err(), "and holds the file meanwhile");
        drop(held);
        other.try_lock().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_lock_file_or_a_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"not ours").unwrap();
        let gates = dir.path().join("gates");
        std::fs::create_dir(&gates).unwrap();
        std::fs::set_permissions(&gates, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = "http://server";
        lock_file(&gates, key).unwrap();
        let lock = std::fs::read_dir(&gates)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        assert!(
            lock_file(&gates, key)
                .unwrap_err()
                .contains("not a plain file")
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"not ours");
        std::fs::set_permissions(&gates, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            lock_file(&gates, key)
                .unwrap_err()
                .contains("writable by others")
        );
        let gate = open_gate(key, Some(&gates));
        assert!(gate.file.is_none(), "the gate is this process's alone then");
    }
}
