//! Group commit: concurrent write transactions of one process share one durable commit.
//!
//! A write runs its body inside a savepoint of a transaction that stays open while other
//! writes of this process are queued for the writer connection: the member that finds nobody
//! queued behind it (or the [`MAX_MEMBERS`]-th) commits for everyone, and each member returns
//! only once that commit has landed, so an acknowledged write is as durable as before. A body
//! that fails rolls back to its own savepoint; the others' writes are kept.
//!
//! The members' full-text rows wait for the commit, which writes them by one statement just
//! before `COMMIT` ([`crate::deferred_text::DeferredText`]): FTS5 writes a segment at every
//! savepoint a statement opens or releases, so rows written inside each body made a segment
//! per member instead of one per group. A body rolled back to its savepoint drops its rows;
//! one that wrote the held rows (a delete of index rows does) and then fails or is cancelled
//! fails the whole group, since its savepoint holds the rows of the members before it.
//!
//! A member that handed the connection on waits for the commit. Only when told that the
//! connection may be free with its group still open (a write queued behind it was cancelled,
//! or one that took the connection failed or was cancelled midway) does it wait for the
//! connection too, and commit the group itself: waiting members stay out of the connection's
//! queue, so the next group's writes are not held up behind them. Whoever takes the
//! connection for anything else ([`Inner::writer`]) commits an open group first, and rolls
//! back the savepoint of a body cancelled midway.
//!
//! Local databases only: a remote transaction would hold a server stream across members.
//! Written here because the driver has no group commit of its own.

use std::sync::atomic::Ordering;

use libsql::Connection;
use tokio::sync::{MutexGuard, watch};
use tracing::warn;

use crate::connection::{Inner, retry_busy};
use crate::error::{DbResult, DriverError, Failure};
use crate::group_state::{Group, Holding, Outcome, Waiting, lock};
use crate::prepared::Db;

/// The writer connection's `busy_timeout` while writes are grouped: waiting for the write
/// lock happens in [`Inner::begin_immediate`] instead.
pub(crate) const WRITER_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 0";

/// The most writes one commit holds: bounds how long another process waits for the lock.
pub(crate) const MAX_MEMBERS: usize = 16;

fn shared_failure((message, transient): (String, bool)) -> Failure {
    Failure::Driver(DriverError::SharedCommit { message, transient })
}

/// A failure as the members of its group learn it.
fn told(f: &Failure) -> (String, bool) {
    (f.to_string(), f.is_transient())
}

impl Inner {
    /// [`Inner::write_tx`] as a member of a group (see the module docs).
    pub(crate) async fn write_grouped<T>(
        &self,
        body: impl AsyncFnOnce(&Db<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        let g = &self.grouping;
        let asked = std::time::Instant::now();
        let conn = {
            g.waiting.fetch_add(1, Ordering::AcqRel);
            let mut waiting = Waiting {
                grouping: g,
                acquired: false,
            };
            let conn = self.writer.lock().await;
            waiting.acquired = true;
            conn
        };
        let mut holding = Holding {
            grouping: g,
            armed: true,
        };
        let (id, savepoint) = self.join(&conn).await?;
        let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.longest_lock_wait_us
            .fetch_max(waited, Ordering::Relaxed);
        let result = body(&Db::grouped(&conn, &self.prepared, &g.text)).await;
        if let (Err(e), false) = (&result, savepoint) {
            // The group holds only this body: roll it all back.
            self.finish(&conn, Err(told(e))).await;
            return result;
        }
        if let (Err(e), true) = (&result, savepoint)
            && g.text.written_in_body()
        {
            // Its savepoint holds full-text rows of the members before it (written for a
            // delete): rolling it back alone would lose them, so nobody of the group is
            // acknowledged.
            let failed = format!("a write of the same group failed: {e}");
            self.finish(&conn, Err((failed, true))).await;
            return result;
        }
        let end = match (&result, savepoint) {
            (_, false) => Ok(()),
            (Ok(_), true) => conn.execute("RELEASE member", ()).await.map(|_| ()),
            (Err(_), true) => {
                self.drop_open_body_text();
                conn.execute_batch("ROLLBACK TO member; RELEASE member")
                    .await
                    .map(|_| ())
            }
        };
        if let Err(e) = end {
            // The transaction is in an unknown state: nobody of this group is acknowledged.
            let failure = Failure::from(e);
            self.finish(&conn, Err(told(&failure))).await;
            return Err(failure);
        }
        let members = {
            let mut open = lock(g);
            let Some(group) = open.as_mut() else {
                return Err(shared_failure(("the group vanished".into(), true)));
            };
            group.body_open = false;
            group.members += 1;
            group.members
        };
        // Subscribed before `waiting` is read: a queued write cancelled after that read is
        // then heard of.
        let freed = g.freed.subscribe();
        let hand_on = g.waiting.load(Ordering::Acquire) > 0 && members < MAX_MEMBERS;
        if hand_on {
            holding.armed = false;
            let value = result?; // a failed body left nothing in the group: no need to wait
            let done = lock(g).as_ref().map(|group| group.done.subscribe());
            drop(conn);
            let outcome = match done {
                Some(rx) => self.await_commit(rx, freed, id).await,
                None => Err(("the group vanished".into(), true)),
            };
            return outcome.map(|()| value).map_err(shared_failure);
        }
        // The others' writes are committed even when this body failed.
        let committed = self.commit(&conn).await;
        let value = result?;
        committed.map(|()| value)
    }

    /// Joins the open group, or begins one; opens this member's savepoint when the group
    /// already holds others' writes. Returns the group's id and whether it did.
    async fn join(&self, conn: &Connection) -> DbResult<(u64, bool)> {
        self.roll_back_cancelled(conn).await?;
        let open = lock(&self.grouping).as_ref().map(|group| group.id);
        let id = match open {
            // SQLite rolled the whole transaction back after an error: the group is lost.
            Some(_) if conn.is_autocommit() => {
                let lost = "the shared transaction was rolled back by the database";
                self.finish(conn, Err((lost.into(), true))).await;
                self.begin(conn).await?
            }
            Some(id) => id,
            None => self.begin(conn).await?,
        };
        let savepoint = lock(&self.grouping).as_ref().is_some_and(|g| g.members > 0);
        if savepoint {
            conn.execute("SAVEPOINT member", ()).await?;
        }
        let text_from = self.grouping.text.begin_body();
        if let Some(group) = lock(&self.grouping).as_mut() {
            group.body_open = true;
            group.savepoint = savepoint;
            group.text_from = text_from;
        }
        Ok((id, savepoint))
    }

    async fn begin(&self, conn: &Connection) -> DbResult<u64> {
        if !conn.is_autocommit() {
            warn!(
                "writer connection was left inside a transaction by a cancelled call; rolling back"
            );
            conn.execute("ROLLBACK", ()).await?;
        }
        self.begin_immediate(conn).await?;
        let id = self.grouping.ids.fetch_add(1, Ordering::Relaxed);
        *lock(&self.grouping) = Some(Group {
            id,
            members: 0,
            body_open: false,
            savepoint: false,
            text_from: 0,
            done: watch::channel(None).0,
        });
        Ok(id)
    }

    /// `BEGIN IMMEDIATE`, waiting for another connection's write lock up to `busy_timeout`
    /// with async pauses. The writer connection's own busy handler is off (see
    /// [`WRITER_BUSY_TIMEOUT`]): SQLite's handler sleeps on the thread, and a runtime thread
    /// asleep there cannot run the next member of a group that holds the lock, which other
    /// handles in this process may be waiting for.
    async fn begin_immediate(&self, conn: &Connection) -> DbResult<()> {
        retry_busy(self.config.busy_timeout(), || async move {
            conn.execute("BEGIN IMMEDIATE", ()).await?;
            Ok(())
        })
        .await
    }

    /// Drops the full-text rows of the open body (rolled back to its savepoint).
    fn drop_open_body_text(&self) {
        let from = lock(&self.grouping).as_ref().map(|g| g.text_from);
        if let Some(from) = from {
            self.grouping.text.truncate(from);
        }
    }

    /// Rolls back the savepoint of a body that was cancelled while it ran.
    async fn roll_back_cancelled(&self, conn: &Connection) -> DbResult<()> {
        let cancelled = lock(&self.grouping)
            .as_ref()
            .filter(|g| g.body_open)
            .map(|g| g.savepoint);
        match cancelled {
            Some(true) if !conn.is_autocommit() && self.grouping.text.written_in_body() => {
                warn!("a grouped write was cancelled midway; rolling back its group");
                let cancelled = "a write of the same group was cancelled".to_string();
                self.finish(conn, Err((cancelled, true))).await;
            }
            Some(true) if !conn.is_autocommit() => {
                warn!("a grouped write was cancelled midway; rolling back its savepoint");
                self.drop_open_body_text();
                conn.execute_batch("ROLLBACK TO member; RELEASE member")
                    .await?;
            }
            // The group's first write: nothing else is in the transaction.
            Some(false) => {
                warn!("a write was cancelled midway; rolling back its transaction");
                let cancelled = "the write was cancelled".to_string();
                self.finish(conn, Err((cancelled, true))).await;
            }
            _ => {}
        }
        if let Some(group) = lock(&self.grouping).as_mut() {
            group.body_open = false;
        }
        Ok(())
    }

    /// Commits the open group (if any) and tells its members.
    async fn commit(&self, conn: &Connection) -> DbResult<()> {
        if lock(&self.grouping).is_none() {
            return Ok(());
        }
        let db = Db::with(conn, &self.prepared);
        let result = match crate::text_index::write_held(&self.grouping.text, &db).await {
            Ok(()) => conn
                .execute("COMMIT", ())
                .await
                .map(|_| ())
                .map_err(Failure::from),
            Err(e) => Err(e),
        };
        if let (Ok(()), Some(c)) = (&result, &self.checkpointer) {
            c.committed();
        }
        self.finish(conn, result.as_ref().map_err(told).copied())
            .await;
        result
    }

    /// Ends the open group with `outcome`: rolls back whatever a failed group left open and
    /// tells the members waiting for it.
    async fn finish(&self, conn: &Connection, outcome: Outcome) {
        let Some(group) = lock(&self.grouping).take() else {
            return;
        };
        // Written by a commit; a failed group's are rolled back with it.
        self.grouping.text.truncate(0);
        if outcome.is_err()
            && !conn.is_autocommit()
            && let Err(e) = conn.execute("ROLLBACK", ()).await
        {
            warn!(error = %e, "rollback of a failed group failed");
        }
        if outcome.is_ok() && group.members > 1 {
            let g = &self.grouping;
            g.shared_commits.fetch_add(1, Ordering::Relaxed);
            g.shared_writes
                .fetch_add(group.members as u64, Ordering::Relaxed);
        }
        group.done.send_replace(Some(outcome));
    }

    /// Waits until group `id` is committed, committing it when the connection frees while it
    /// is still open.
    ///
    /// Only once told (`freed`) that the connection may have been left free does a member
    /// queue for it. Queued for it all along (as it once was), every member of a group stood
    /// ahead of the next group's writes, and each took the connection in turn after the commit
    /// just to give it back, once its task was next run: the connection sat idle between
    /// groups. 8,000 50-step episodes with 8 streams, five runs each alternated (11-28):
    /// 1,089-1,322 episodes/s (median 1,261) queued, 1,233-1,401 (median 1,378) not; a probe
    /// found the connection held 71% of the run, then 85%.
    async fn await_commit(
        &self,
        done: watch::Receiver<Option<Outcome>>,
        mut freed: watch::Receiver<u64>,
        id: u64,
    ) -> Outcome {
        let vanished = || Err(("the group ended without an outcome".to_string(), true));
        let mut waiting = done.clone();
        tokio::select! {
            biased;
            outcome = waiting.wait_for(Option::is_some) => {
                return match outcome {
                    Ok(o) => o.clone().unwrap_or_else(vanished),
                    Err(_) => vanished(),
                };
            }
            // A closed channel cannot happen while `self` lives; treated as told.
            _ = freed.changed() => {}
        }
        let committed = async {
            match waiting.wait_for(Option::is_some).await {
                Ok(o) => o.clone(),
                Err(_) => None,
            }
        };
        tokio::select! {
            biased;
            outcome = committed => outcome.unwrap_or_else(vanished),
            conn = self.writer.lock() => {
                let ours = lock(&self.grouping).as_ref().is_some_and(|g| g.id == id);
                if ours {
                    self.settle(&conn).await.map_err(|f| told(&f))?;
                }
                let outcome = done.borrow().clone();
                outcome.unwrap_or_else(vanished)
            }
        }
    }

    /// Commits an open group (rolling back a cancelled member first): the writer connection
    /// is then outside any group's transaction.
    pub(crate) async fn settle(&self, conn: &MutexGuard<'_, Connection>) -> DbResult<()> {
        if lock(&self.grouping).is_none() {
            return Ok(());
        }
        if let Err(e) = self.roll_back_cancelled(conn).await {
            self.finish(conn, Err(told(&e))).await;
            return Err(e);
        }
        self.commit(conn).await
    }
}

#[cfg(test)]
mod tests;
