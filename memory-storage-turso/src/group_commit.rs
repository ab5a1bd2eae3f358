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
mod tests {
    use std::sync::Arc;

    use crate::GroupCommits;

    use chrono::Utc;
    use memory_core::{
        Episode, EpisodeId, EpisodeStore, Error, Namespace, NewEpisode, TaskContext, TaskType,
    };

    use super::*;
    use crate::TursoStorage;

    fn episode(task: &str) -> Episode {
        let new = NewEpisode::new(task, TaskType::Other, TaskContext::new("d"));
        Episode::start(new, Utc::now())
    }

    /// Returns once `n` grouped writes wait for the writer lock (fails after 30 s).
    async fn all_waiting(s: &TursoStorage, n: usize) {
        let waiting = async {
            while s.inner.grouping.waiting.load(Ordering::Acquire) < n {
                tokio::task::yield_now().await;
            }
        };
        let limit = std::time::Duration::from_secs(30);
        tokio::time::timeout(limit, waiting)
            .await
            .expect("every write queued for the writer lock");
    }

    /// Spawns the `writes` while the writer lock is held and lets them run once every one
    /// waits for it, so they form groups as under load.
    async fn queued<T: Send + 'static>(
        s: &TursoStorage,
        writes: impl FnOnce() -> Vec<tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let held = s.inner.writer.lock().await;
        let writes = writes();
        let n = writes.len();
        all_waiting(s, n).await;
        drop(held);
        let mut out = Vec::new();
        for w in writes {
            out.push(w.await.unwrap());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_one_commit_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let episodes: Vec<Episode> = (0..8).map(|i| episode(&format!("task {i}"))).collect();
        let writes = || {
            let spawn = |e: &Episode| {
                let (s, ns, e) = (s.clone(), ns.clone(), e.clone());
                tokio::spawn(async move { s.create_episode(&ns, &e).await })
            };
            episodes.iter().map(spawn).collect()
        };
        for r in queued(&s, writes).await {
            r.unwrap();
        }
        assert_eq!(
            s.group_commits(),
            GroupCommits {
                commits: 1,
                writes: 8
            }
        );
        // Committed: another handle on the file reads every one.
        let other = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        for e in &episodes {
            assert_eq!(
                other.get_episode(&ns, e.id).await.unwrap().as_deref(),
                Some(e)
            );
        }
        assert!(s.inner.writer.lock().await.is_autocommit());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_rolls_back_alone_and_the_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let (a, b) = (episode("a"), episode("b"));
        let missing = EpisodeId::new();
        let spawn_create = |e: &Episode| {
            let (s, ns, e) = (s.clone(), ns.clone(), e.clone());
            tokio::spawn(async move { s.create_episode(&ns, &e).await })
        };
        let failing = || {
            let (s, ns) = (s.clone(), ns.clone());
            tokio::spawn(async move { s.append_steps(&ns, missing, &[]).await })
        };
        let writes = || vec![spawn_create(&a), failing(), spawn_create(&b)];
        let results = queued(&s, writes).await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(Error::NotFound { .. })),
            "{results:?}"
        );
        let other = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        for e in [&a, &b] {
            assert!(other.get_episode(&ns, e.id).await.unwrap().is_some());
        }
        assert_eq!(s.group_commits().writes, 3);
    }

    async fn change_counter(s: &TursoStorage) -> i64 {
        let conn = s.inner.writer().await.unwrap();
        let conn = Db::plain(&conn);
        let sql = "SELECT seq FROM change_counter WHERE id = 1";
        let seq = crate::sql::query_opt(&conn, sql, (), |row| {
            crate::codec::Cols::new(row, "t").i64(0)
        });
        seq.await.unwrap().unwrap()
    }

    /// The first write of a group runs without a savepoint: when it fails, the transaction
    /// (its change-counter step included) is rolled back and the next write begins anew.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_first_write_leaves_nothing_and_the_next_ones_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let before = change_counter(&s).await;
        let (a, b) = (episode("a"), episode("b"));
        let writes = || {
            let failing = {
                let (s, ns) = (s.clone(), ns.clone());
                tokio::spawn(async move { s.append_steps(&ns, EpisodeId::new(), &[]).await })
            };
            let create = |e: &Episode| {
                let (s, ns, e) = (s.clone(), ns.clone(), e.clone());
                tokio::spawn(async move { s.create_episode(&ns, &e).await })
            };
            vec![failing, create(&a), create(&b)]
        };
        let results = queued(&s, writes).await;
        assert!(
            matches!(results[0], Err(Error::NotFound { .. })),
            "{results:?}"
        );
        assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
        assert_eq!(
            change_counter(&s).await,
            before,
            "the failed write's counter step is undone"
        );
        let other = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        for e in [&a, &b] {
            assert!(other.get_episode(&ns, e.id).await.unwrap().is_some());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_cancelled_while_queued_leaves_the_group_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let held = s.inner.writer.lock().await;
        let episodes: Vec<Episode> = (0..3).map(|i| episode(&format!("t{i}"))).collect();
        let mut writes: Vec<_> = episodes
            .iter()
            .map(|e| {
                let (s, ns, e) = (s.clone(), ns.clone(), e.clone());
                tokio::spawn(async move { s.create_episode(&ns, &e).await })
            })
            .collect();
        all_waiting(&s, 3).await;
        let cancelled = writes.pop().unwrap();
        cancelled.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        assert_eq!(s.inner.grouping.waiting.load(Ordering::Acquire), 2);
        drop(held);
        for w in writes {
            w.await.unwrap().unwrap();
        }
        let got = s.get_episode(&ns, episodes[2].id).await.unwrap();
        assert!(got.is_none(), "the cancelled write never ran");
        assert_eq!(s.group_commits().writes, 2);
        assert!(s.inner.writer.lock().await.is_autocommit());
    }

    #[tokio::test]
    async fn a_write_left_in_an_open_group_is_committed_by_the_next_user_of_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let e = episode("left open");
        // As if its member handed the connection on and every member queued behind it was
        // cancelled: the group is open, its write inside.
        {
            let conn = s.inner.writer.lock().await;
            s.inner.begin(&conn).await.unwrap();
            let set = "UPDATE change_counter SET seq = 41 WHERE id = 1";
            conn.execute(set, ()).await.unwrap();
        }
        assert!(!s.inner.writer.lock().await.is_autocommit());
        s.create_episode(&ns, &e).await.unwrap();
        assert!(s.inner.writer().await.unwrap().is_autocommit());
        let other = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let conn = other.inner.writer().await.unwrap();
        let rows = crate::sql::query_all(
            &Db::plain(&conn),
            "SELECT seq FROM change_counter WHERE id = 1",
            (),
            |row| crate::codec::Cols::new(row, "t").i64(0),
        )
        .await
        .unwrap();
        assert_eq!(
            rows,
            vec![41],
            "the open group's write was committed, not dropped"
        );
    }

    /// One runtime thread, two handles on one file (as two components of one process): the
    /// second handle's wait for the write lock must not put the thread to sleep while the
    /// first handle's open group needs it to run its next member.
    #[tokio::test(flavor = "current_thread")]
    async fn a_second_handle_waits_for_the_lock_without_stalling_an_open_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.db");
        let open = || async {
            let config = crate::TursoConfig::local(&path)
                .busy_timeout(std::time::Duration::from_secs(1))
                .build()
                .unwrap();
            TursoStorage::open(config).await.unwrap()
        };
        let (a, b) = (open().await, open().await);
        let ns = Namespace::default();
        // `a` holds the database's write lock for a group whose next member is yet to run.
        a.inner.begin(&*a.inner.writer.lock().await).await.unwrap();
        let spawn = |s: &TursoStorage, task: &str| {
            let (s, ns, e) = (s.clone(), ns.clone(), episode(task));
            tokio::spawn(async move { s.create_episode(&ns, &e).await })
        };
        // Runs first: it finds the lock held and must wait without holding the thread.
        let waits = spawn(&b, "b");
        let joins = spawn(&a, "a");
        joins.await.unwrap().unwrap();
        waits.await.unwrap().unwrap();
    }

    /// Writes a `text_stats` row named `name` (a row no other test write touches).
    async fn mark(tx: &Db<'_>, name: &str) -> DbResult<()> {
        let sql = "INSERT INTO text_stats (ns, rows, terms) VALUES (?1, 0, 0)";
        tx.exec(sql, vec![libsql::Value::Text(name.into())]).await?;
        Ok(())
    }

    /// Whether a committed `text_stats` row is named `name`, as another handle reads it.
    async fn marked(dir: &std::path::Path, name: &str) -> bool {
        let other = TursoStorage::open_in_data_dir(dir).await.unwrap();
        let conn = other.inner.writer().await.unwrap();
        let conn = Db::plain(&conn);
        let sql = "SELECT count(*) FROM text_stats WHERE ns = ?1";
        let n = crate::sql::query_opt(&conn, sql, vec![libsql::Value::Text(name.into())], |row| {
            crate::codec::Cols::new(row, "t").i64(0)
        });
        n.await.unwrap() == Some(1)
    }

    /// Yields until `flag` is set (on a current-thread runtime, the task that set it has then
    /// run up to its next wait).
    async fn until(flag: &std::sync::atomic::AtomicBool) {
        while !flag.load(Ordering::Acquire) {
            tokio::task::yield_now().await;
        }
    }

    /// A grouped write (on its own task) that marks `name` once it has the connection, sets
    /// `started`, and then finishes when `go` fires, or never when `go` is `None`.
    fn held_write(
        s: &TursoStorage,
        name: &'static str,
        started: Arc<std::sync::atomic::AtomicBool>,
        go: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> tokio::task::JoinHandle<Result<(), Error>> {
        let s = s.clone();
        tokio::spawn(async move {
            let written = s.inner.write_tx(async |tx| {
                mark(tx, name).await?;
                started.store(true, Ordering::Release);
                match go {
                    Some(go) => go.await.unwrap_or(()),
                    None => std::future::pending().await,
                }
                Ok(())
            });
            written.await.map_err(|f| f.into_core("write"))
        })
    }

    /// Spawns a grouped write that marks "first" and then holds the connection until the
    /// returned sender fires; returns once it holds it.
    async fn first_member(
        s: &TursoStorage,
    ) -> (
        tokio::task::JoinHandle<Result<(), Error>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (go, wait) = tokio::sync::oneshot::channel();
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let first = held_write(s, "first", started.clone(), Some(wait));
        until(&started).await;
        (first, go)
    }

    /// Waits (30 s at most) for the first member's write to be acknowledged, and checks that
    /// its group was committed.
    async fn first_committed(
        s: &TursoStorage,
        dir: &std::path::Path,
        first: tokio::task::JoinHandle<Result<(), Error>>,
    ) {
        let limit = std::time::Duration::from_secs(30);
        let committed = tokio::time::timeout(limit, first).await;
        committed.expect("the member committed").unwrap().unwrap();
        assert!(s.inner.writer.lock().await.is_autocommit());
        assert!(marked(dir, "first").await);
    }

    /// A member hands the connection on to the write queued behind it, which is cancelled
    /// while it still waits: nobody is left to commit the group, so the member, told of it,
    /// takes the connection and commits its own write.
    #[tokio::test(flavor = "current_thread")]
    async fn a_member_whose_successor_is_cancelled_in_the_queue_commits_the_group() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let (first, go) = first_member(&s).await;
        // Queued next for the connection, ahead of the grouped write: a plain user of it
        // (which commits nothing), holding it until told.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let plain_queued = Arc::new(AtomicBool::new(false));
        let plain = {
            let (s, queued) = (s.clone(), plain_queued.clone());
            tokio::spawn(async move {
                queued.store(true, Ordering::Release);
                let conn = s.inner.writer.lock().await;
                released.await.unwrap_or(());
                drop(conn);
            })
        };
        until(&plain_queued).await;
        let never = Arc::new(AtomicBool::new(false));
        let successor = held_write(&s, "successor", never.clone(), None);
        all_waiting(&s, 1).await;
        // The first member finds the successor queued and hands the connection on.
        go.send(()).unwrap();
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!first.is_finished(), "the first member waits for a commit");
        successor.abort();
        assert!(successor.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        plain.await.unwrap();
        first_committed(&s, dir.path(), first).await;
        assert!(!never.load(Ordering::Acquire), "the successor never ran");
    }

    /// A member hands the connection on, and the write that takes it is cancelled midway
    /// through its body: the member, told of it, rolls that body back and commits the group.
    #[tokio::test(flavor = "current_thread")]
    async fn a_member_whose_successor_is_cancelled_midway_commits_the_group() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let (first, go) = first_member(&s).await;
        let successor_started = Arc::new(AtomicBool::new(false));
        let successor = held_write(&s, "successor", successor_started.clone(), None);
        all_waiting(&s, 1).await;
        go.send(()).unwrap();
        until(&successor_started).await;
        assert!(!first.is_finished(), "the first member waits for a commit");
        successor.abort();
        assert!(successor.await.unwrap_err().is_cancelled());
        first_committed(&s, dir.path(), first).await;
        assert!(
            !marked(dir.path(), "successor").await,
            "its body was rolled back"
        );
    }

    /// [`queued`], with the writes queued in the order given (each spawned once the one
    /// before waits for the writer lock, which is handed on first come, first served).
    async fn queued_in_order<'a, T: Send + 'static>(
        s: &TursoStorage,
        writes: Vec<Box<dyn FnOnce() -> tokio::task::JoinHandle<T> + 'a>>,
    ) -> Vec<T> {
        let held = s.inner.writer.lock().await;
        let mut handles = Vec::new();
        for (i, spawn) in writes.into_iter().enumerate() {
            handles.push(spawn());
            all_waiting(s, i + 1).await;
        }
        drop(held);
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    /// What a test write does with the full-text row of part `work` of episode `e1`.
    #[derive(Clone, Copy)]
    enum TextWrite {
        /// Writes a row of these words.
        Add(&'static str),
        /// Writes a row of these words, then fails.
        AddThenFail(&'static str),
        /// Deletes the rows (returns how many there were).
        Delete,
        /// Deletes the rows, then fails.
        DeleteThenFail,
    }

    /// The results of a write of a "heron survey" row and then `second`, queued in that order
    /// in one group.
    async fn heron_then(
        s: &TursoStorage,
        ns: &Namespace,
        second: TextWrite,
    ) -> Vec<Result<i64, Error>> {
        let writes: Vec<Box<dyn FnOnce() -> _>> = vec![
            Box::new(|| text_write(s, ns, TextWrite::Add("heron survey"))),
            Box::new(|| text_write(s, ns, second)),
        ];
        queued_in_order(s, writes).await
    }

    fn text_write(
        s: &TursoStorage,
        ns: &Namespace,
        what: TextWrite,
    ) -> tokio::task::JoinHandle<Result<i64, Error>> {
        let (s, ns) = (s.clone(), ns.clone());
        tokio::spawn(async move {
            let ns = ns.as_str();
            let written = s.inner.write_tx(async |tx| -> DbResult<i64> {
                let changed = match what {
                    TextWrite::Add(words) | TextWrite::AddThenFail(words) => {
                        let mut rows = crate::text_index::PendingRows::default();
                        rows.add(words, ns, "e1", "work");
                        rows.write(tx).await?;
                        0
                    }
                    TextWrite::Delete | TextWrite::DeleteThenFail => {
                        crate::text_index::delete(tx, ns, "e1", "work").await?
                    }
                };
                if matches!(what, TextWrite::AddThenFail(_) | TextWrite::DeleteThenFail) {
                    let missing = EpisodeId::new();
                    return Err(Error::not_found(memory_core::ObjectKind::Episode, missing).into());
                }
                Ok(i64::try_from(changed).unwrap_or(i64::MAX))
            });
            written.await.map_err(|f| f.into_core("write"))
        })
    }

    /// The rows `text_rows` holds of `ns`, and what `text_stats` counts for it.
    async fn text_counts(s: &TursoStorage, ns: &str) -> (i64, i64) {
        let conn = s.inner.writer().await.unwrap();
        let conn = Db::plain(&conn);
        let sql = "SELECT (SELECT count(*) FROM text_rows WHERE ns = ?1), \
                   (SELECT IFNULL(SUM(rows), 0) FROM text_stats WHERE ns = ?1)";
        let counts =
            crate::sql::query_opt(&conn, sql, vec![libsql::Value::Text(ns.into())], |row| {
                let c = crate::codec::Cols::new(row, "t");
                Ok((c.i64(0)?, c.i64(1)?))
            });
        counts.await.unwrap().unwrap()
    }

    async fn found(s: &TursoStorage, ns: &Namespace, word: &str) -> usize {
        let q = memory_core::TextQuery {
            text: word.into(),
            filter: memory_core::EpisodeFilter::default(),
            limit: 10,
        };
        s.search_episodes(ns, &q).await.unwrap().len()
    }

    /// The members' full-text rows wait for the group's commit (a body after them does not
    /// see them in `text_rows`), and a member that fails after writing its rows leaves none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_text_rows_wait_for_the_commit_and_a_failed_members_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let (a, b) = (episode("quokka census"), episode("wombat census"));
        let create = |e: &Episode| {
            let (s, ns, e) = (s.clone(), ns.clone(), e.clone());
            tokio::spawn(async move { s.create_episode(&ns, &e).await.map(|()| -1) })
        };
        let probe = || {
            let s = s.clone();
            tokio::spawn(async move {
                let sql = "SELECT count(*) FROM text_rows";
                let counted = s.inner.write_tx(async |tx| {
                    let n = crate::sql::query_opt(tx, sql, (), |row| {
                        crate::codec::Cols::new(row, "t").i64(0)
                    });
                    Ok(n.await?.unwrap_or(-1))
                });
                counted.await.map_err(|f| f.into_core("probe"))
            })
        };
        let failing = || text_write(&s, &ns, TextWrite::AddThenFail("platypus census"));
        let writes: Vec<Box<dyn FnOnce() -> _>> = vec![
            Box::new(|| create(&a)),
            Box::new(failing),
            Box::new(probe),
            Box::new(|| create(&b)),
        ];
        let results = queued_in_order(&s, writes).await;
        assert!(
            matches!(results[1], Err(Error::NotFound { .. })),
            "{results:?}"
        );
        assert_eq!(
            results[2].as_ref().ok(),
            Some(&0),
            "rows held until the commit"
        );
        assert_eq!(s.group_commits().writes, 4, "one group: {results:?}");
        assert_eq!(found(&s, &ns, "quokka").await, 1);
        assert_eq!(found(&s, &ns, "wombat").await, 1);
        assert_eq!(
            found(&s, &ns, "platypus").await,
            0,
            "the failed write's row"
        );
        assert_eq!(text_counts(&s, ns.as_str()).await, (2, 2));
    }

    /// A delete of index rows in a group writes the rows held before it, so it finds a row
    /// an earlier member of its group wrote.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_in_a_group_finds_the_rows_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let results = heron_then(&s, &ns, TextWrite::Delete).await;
        assert_eq!(results[1].as_ref().ok(), Some(&1), "{results:?}");
        assert_eq!(s.group_commits().writes, 2);
        assert_eq!(found(&s, &ns, "heron").await, 0);
        assert_eq!(text_counts(&s, ns.as_str()).await, (0, 0));
    }

    /// A write that wrote its group's held rows (for a delete) and then fails takes the
    /// group down with it: its savepoint holds an earlier member's rows, which rolling it
    /// back alone would lose while that member is told they are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_failing_after_writing_its_groups_rows_fails_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let ns = Namespace::default();
        let results = heron_then(&s, &ns, TextWrite::DeleteThenFail).await;
        assert!(
            matches!(results[1], Err(Error::NotFound { .. })),
            "{results:?}"
        );
        assert!(results[0].is_err(), "not acknowledged: {results:?}");
        assert_eq!(text_counts(&s, ns.as_str()).await, (0, 0));
        // The next write starts a group of its own and lands.
        let alone = text_write(&s, &ns, TextWrite::Add("heron survey"));
        assert!(alone.await.unwrap().is_ok());
        assert_eq!(text_counts(&s, ns.as_str()).await, (1, 1));
    }
}
