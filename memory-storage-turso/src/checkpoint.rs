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
//! WAL holds [`RESTART_PAGES`] the task takes the writer's lock for one more passive checkpoint:
//! with every frame copied and no write in between, the next write starts the WAL from the
//! beginning again. Before taking the lock it runs passive checkpoints until one finds little
//! new ([`LOCKED_CATCH_UP_PAGES`]), so the writer waits for its two fsyncs and a few hundred
//! pages instead of everything that landed during the first (~500 pages and ~4.5 ms in a
//! 50-step ingest; 8.4% of the run's time under the lock, ~5% since). The writer's own
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

/// New WAL pages that a checkpoint may leave for the one under the writer's lock: each page
/// is copied while no write can land (two fsyncs follow either way).
pub(crate) const LOCKED_CATCH_UP_PAGES: i64 = 256;

/// Passive checkpoints run, at most, to get within [`LOCKED_CATCH_UP_PAGES`] of the writer
/// before taking its lock; the last one's remainder is copied under the lock however large.
pub(crate) const CATCH_UP_PASSES: usize = 4;

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
        if log < RESTART_PAGES {
            continue;
        }
        let Some(CaughtUp::Behind(log)) = catch_up(&conn, &shared, log).await else {
            continue;
        };
        if log < RESTART_PAGES {
            // A write started the WAL over meanwhile.
            continue;
        }
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

/// Where [`catch_up`] left the WAL.
enum CaughtUp {
    /// Every page copied and none landed since: the next write starts the WAL over, so the
    /// lock is not needed.
    Done,
    /// The WAL's pages at the last pass; what landed during it is left for the lock.
    Behind(i64),
}

/// Passive checkpoints without the writer's lock, each copying what landed during the one
/// before, until one finds at most [`LOCKED_CATCH_UP_PAGES`] new pages (or after
/// [`CATCH_UP_PASSES`]): what is left for the checkpoint under the lock, so the writer waits
/// for little more than its two fsyncs. `None` when the connection is gone or a pass failed.
async fn catch_up(conn: &Weak<Connection>, shared: &Shared, mut log: i64) -> Option<CaughtUp> {
    for _ in 0..CATCH_UP_PASSES {
        let c = conn.upgrade()?;
        let (now, copied) = passive(c).await?;
        shared.passive.fetch_add(1, Ordering::Relaxed);
        debug!(wal_pages = now, copied, "wal checkpoint catching up");
        if now == log && copied == now {
            return Some(CaughtUp::Done);
        }
        let landed = now - log;
        log = now;
        if landed <= LOCKED_CATCH_UP_PAGES {
            break;
        }
    }
    Some(CaughtUp::Behind(log))
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
