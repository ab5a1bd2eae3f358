use std::sync::Arc;

use crate::GroupCommits;

use chrono::Utc;
use memory_core::{
    Episode, EpisodeId, EpisodeStore, Error, Namespace, NewEpisode, StorageExt, TaskContext,
    TaskType,
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
    let writes: Vec<Box<dyn FnOnce() -> _>> = vec![
        Box::new(|| spawn_create(&a)),
        Box::new(failing),
        Box::new(|| spawn_create(&b)),
    ];
    let results = queued_in_order(&s, writes).await;
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
        // Counted as waiting just before it asks for the lock: let it take its place.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
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
    let counts = crate::sql::query_opt(&conn, sql, vec![libsql::Value::Text(ns.into())], |row| {
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
