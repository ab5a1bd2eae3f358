//! Background WAL checkpoints for local database files.
//!
//! SQLite runs a checkpoint inside the commit that grows the WAL past `wal_autocheckpoint`
//! pages: that commit copies the WAL into the database file and fsyncs it, about 20 ms for
//! 1,000 pages on a 2-core test machine, where an ordinary commit takes about 0.2 ms. That one
//! slow commit in every few dozen was the p99 of every write.
//!
//! Here a task with a connection of its own does the copying: a `PASSIVE` checkpoint (which
//! never waits for or blocks the writer and the readers) after every
//! [`CHECKPOINT_EVERY_COMMITS`] commits, or [`CHECKPOINT_INTERVAL`] after the last one. A
//! passive checkpoint cannot restart the WAL while commits keep landing behind it, so once the
//! WAL holds [`RESTART_PAGES`] the task takes the writer's lock for one more passive checkpoint
//! (only the frames since the last one, about a millisecond): with every frame copied and no
//! write in between, the next write starts the WAL from the beginning again. The writer's own
//! automatic checkpoint stays as a backstop ([`BACKSTOP_PAGES`]) in case the task falls behind
//! or is gone.
//!
//! Durability is unchanged: a commit is in the WAL before it returns (process crash safe);
//! with `synchronous = NORMAL` the WAL is fsynced at checkpoints, now in the background.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use libsql::Connection;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Commits after which the task is woken to checkpoint.
pub(crate) const CHECKPOINT_EVERY_COMMITS: u64 = 64;

/// The longest a commit waits for its checkpoint when fewer than
/// [`CHECKPOINT_EVERY_COMMITS`] follow it.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// WAL pages (4 KiB each, 16 MiB) from which the task restarts the WAL under the writer's lock.
///
/// The checkpoint under the lock copies what landed during the one before and fsyncs the WAL
/// and the database file, and no write lands meanwhile. A 50-step ingest writes ~2,600 pages
/// in [`CHECKPOINT_EVERY_COMMITS`] commits, so from 1,000 pages every checkpoint took the lock;
/// from 4,000 every second one does. 10k x 50-step ingest runs, alternating in one hour (11-28):
/// 782, 788, 801 and 802 episodes/s from 1,000 pages; 841, 832, 838 and 818 from 4,000 (8,000:
/// 830 and 853, not more within noise).
pub(crate) const RESTART_PAGES: i64 = 4_000;

/// The writer's own `wal_autocheckpoint`, in pages: reached only if the task cannot keep up,
/// so the WAL stays bounded (about 40 MiB) whatever happens to the task.
pub(crate) const BACKSTOP_PAGES: u32 = 10_000;

/// The running checkpoint task; dropping this stops it.
///
/// The checkpoint connection is owned here and the task only borrows it (a `Weak`) while it
/// checkpoints, so dropping the storage closes every connection at once, as before, instead
/// of leaving one to close later on another thread (the last connection to close checkpoints
/// and removes the WAL under an exclusive lock).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    _conn: Arc<Connection>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Commits since the last checkpoint started.
    commits: AtomicU64,
    wake: Notify,
    passive: AtomicU64,
    caught_up: AtomicU64,
}

/// What the background WAL checkpoints of a local file have done since it was opened
/// ([`TursoStorage::wal_checkpoints`](crate::TursoStorage::wal_checkpoints)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalCheckpoints {
    /// Passive checkpoints run beside the writer.
    pub passive: u64,
    /// Checkpoints run under the writer's lock that copied every frame, so that the next
    /// write starts the WAL from the beginning.
    pub restarts: u64,
}

impl Checkpointer {
    /// Starts the task on `conn` (a connection used for nothing else); `writer` is the lock
    /// every write transaction holds. Must be called inside a tokio runtime.
    pub(crate) fn start(conn: Connection, writer: &Arc<Mutex<Connection>>) -> Self {
        let shared = Arc::new(Shared::default());
        let conn = Arc::new(conn);
        let task = tokio::spawn(run(
            Arc::downgrade(&conn),
            Arc::downgrade(writer),
            Arc::clone(&shared),
        ));
        Checkpointer {
            shared,
            _conn: conn,
            task,
        }
    }

    /// What the task has done so far.
    pub(crate) fn stats(&self) -> WalCheckpoints {
        WalCheckpoints {
            passive: self.shared.passive.load(Ordering::Relaxed),
            restarts: self.shared.caught_up.load(Ordering::Relaxed),
        }
    }

    /// Counts a commit; wakes the task once enough have piled up.
    pub(crate) fn committed(&self) {
        let n = self.shared.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= CHECKPOINT_EVERY_COMMITS {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // A checkpoint already running finishes on its blocking thread, then its connection
        // closes; SQLite makes an interrupted checkpoint harmless anyway.
        self.task.abort();
    }
}

async fn run(conn: Weak<Connection>, writer: Weak<Mutex<Connection>>, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
        }
        if shared.commits.swap(0, Ordering::Relaxed) == 0 {
            continue;
        }
        let Some(c) = conn.upgrade() else { break };
        let Some((log, copied)) = passive(c).await else {
            continue;
        };
        shared.passive.fetch_add(1, Ordering::Relaxed);
        debug!(wal_pages = log, copied, "wal checkpoint");
        if log >= RESTART_PAGES {
            let (Some(c), Some(writer)) = (conn.upgrade(), writer.upgrade()) else {
                break;
            };
            // No commit can land while this is held, so the checkpoint catches up for good.
            let _writing = writer.lock().await;
            if let Some((log, copied)) = passive(c).await {
                if log == copied {
                    shared.caught_up.fetch_add(1, Ordering::Relaxed);
                }
                debug!(wal_pages = log, copied, "wal checkpoint before restart");
            }
        }
    }
}

/// Runs [`checkpoint`] off the async workers (it is synchronous C: copies and fsyncs), logging
/// a failure.
async fn passive(c: Arc<Connection>) -> Option<(i64, i64)> {
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(checkpoint(&c))).await {
        Ok(Ok(pages)) => Some(pages),
        Ok(Err(e)) => {
            warn!(error = %e, "background wal checkpoint failed; retrying later");
            None
        }
        Err(e) => {
            warn!(error = %e, "background wal checkpoint task failed");
            None
        }
    }
}

/// One `PASSIVE` checkpoint: the WAL's pages and how many were copied.
async fn checkpoint(conn: &Connection) -> libsql::Result<(i64, i64)> {
    let mut rows = conn.query("PRAGMA wal_checkpoint(PASSIVE)", ()).await?;
    let Some(row) = rows.next().await? else {
        return Ok((0, 0));
    };
    Ok((row.get::<i64>(1)?, row.get::<i64>(2)?))
}
