//! The change feed: the counter that every write of a cacheable row (episode, pattern,
//! heuristic) advances and stamps on the rows it writes, and what a cache reads to learn of
//! other writers' changes (see `memory_core::Storage::changes_since`).
//!
//! Positions are taken inside the write transaction, under the database's write lock, so
//! their order is the commit order; a reader that has seen every row stamped up to `p` and
//! drops the rows stamped after `p` holds nothing older than the database at that moment.
//!
//! From schema v11 the stamps are read from `change_log`, which triggers append to in every
//! stamping statement and prune to its last 4,096 positions (`migrations/v11.sql`); before, from
//! the stamps on the rows themselves.

use std::collections::BTreeSet;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use libsql::{Connection, Value};
use memory_core::{CacheKey, Change, ChangeSet, EpisodeId, HeuristicId, Namespace, PatternId};
use tokio::sync::Mutex;

use crate::codec::Cols;
use crate::error::{DbResult, Failure, decode};
use crate::prepared::Db;
use crate::sql::query_opt;

/// Takes the next position of the change counter, inside the caller's write transaction.
pub(crate) async fn next_position(tx: &Db<'_>) -> DbResult<i64> {
    query_opt(
        tx,
        "UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq",
        (),
        |row| Cols::new(row, "change counter").i64(0),
    )
    .await?
    .ok_or_else(counter_missing)
}

fn counter_missing() -> Failure {
    decode("change counter", "the change_counter row is missing")
}

/// How a handle learns that something may have been committed since it last looked.
pub(crate) enum Probe {
    /// A local file: `PRAGMA data_version` on a connection of its own changes whenever any
    /// other connection (of this process or another) commits.
    DataVersion {
        /// `PRAGMA data_version`, prepared once: asked before every cached read, where
        /// preparing it again cost about as much as the rest of a cache hit. Declared before
        /// its connection, so it is finalized before the connection closes.
        version: Mutex<libsql::Statement>,
        _conn: Connection,
        last: StdMutex<Option<i64>>,
    },
    /// A server (or a replica of one): no cheap signal, so the feed is read at most once per
    /// interval (the staleness bound of cached reads across machines).
    Interval {
        every: Duration,
        last: StdMutex<Option<Instant>>,
    },
}

/// The feed state of one storage handle.
pub(crate) struct ChangeTracker {
    probe: Probe,
    /// Positions taken by this handle's committed transactions that no reader has passed yet.
    own: StdMutex<BTreeSet<u64>>,
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ChangeTracker {
    pub(crate) fn new(probe: Probe) -> Self {
        ChangeTracker {
            probe,
            own: StdMutex::new(BTreeSet::new()),
        }
    }

    /// Records a position this handle's transaction committed.
    pub(crate) fn committed(&self, position: i64) {
        if let Ok(p) = u64::try_from(position) {
            lock(&self.own).insert(p);
        }
    }

    /// False only when certainly nothing was committed since the previous call.
    pub(crate) async fn may_have_changed(&self) -> DbResult<bool> {
        match &self.probe {
            Probe::DataVersion { version, last, .. } => {
                let stmt = version.lock().await;
                stmt.reset();
                let mut rows = stmt.query(()).await?;
                let row = rows.next().await?;
                let version = row.map(|r| Cols::new(&r, "data version").i64(0));
                drop(rows);
                stmt.reset();
                let Some(version) = version.transpose()? else {
                    return Ok(true);
                };
                let mut last = lock(last);
                let changed = *last != Some(version);
                *last = Some(version);
                Ok(changed)
            }
            Probe::Interval { every, last } => {
                let mut last = lock(last);
                let due = last.is_none_or(|t| t.elapsed() >= *every);
                if due {
                    *last = Some(Instant::now());
                }
                Ok(due)
            }
        }
    }

    /// The positions of this handle in `(after, head]`; forgets those at or below `after`
    /// (the reader has passed them).
    pub(crate) fn own_between(&self, after: u64, head: u64) -> Vec<u64> {
        let mut own = lock(&self.own);
        *own = own.split_off(&(after + 1));
        own.range(..=head).copied().collect()
    }
}

/// The change counter: the database's identity and the last position taken.
pub(crate) async fn read_head(conn: &Db<'_>) -> DbResult<(String, u64)> {
    let sql = "SELECT seq, db_id FROM change_counter WHERE id = 1";
    query_opt(conn, sql, (), |row| {
        let c = Cols::new(row, "change counter");
        Ok((c.text(1)?, u64::try_from(c.i64(0)?).unwrap_or(0)))
    })
    .await?
    .ok_or_else(counter_missing)
}

/// The objects stamped after `after` (at most `limit`, oldest first), into `set`; `logged`
/// when the database reads its feed from `change_log` (schema v11), else from the stamps on
/// the rows (an object changed twice is then listed once, at its last position).
///
/// From the log, a reader asking from before the log's start (`change_counter.log_from`, read
/// by the same statement as the rows, so from the same snapshot) gets `truncated`: rows it
/// needs may have been deleted.
pub(crate) async fn read_rows(
    conn: &Db<'_>,
    after: u64,
    limit: u32,
    logged: bool,
    set: &mut ChangeSet,
) -> DbResult<()> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    // Kind 0 is the log's start, not a change.
    let sql = if logged {
        "SELECT 0, '', '', log_from FROM change_counter WHERE id = 1 \
         UNION ALL SELECT * FROM ( \
             SELECT kind, ns, id, seq FROM change_log WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
    } else {
        "SELECT kind, ns, id, changed_seq FROM ( \
             SELECT 1 AS kind, ns, id, changed_seq FROM episodes WHERE changed_seq > ?1 \
             UNION ALL SELECT 2, ns, id, changed_seq FROM patterns WHERE changed_seq > ?1 \
             UNION ALL SELECT 3, ns, id, changed_seq FROM heuristics WHERE changed_seq > ?1) \
         ORDER BY changed_seq LIMIT ?2"
    };
    let mut rows = conn
        .query(
            sql,
            vec![Value::Integer(after), Value::Integer(i64::from(limit) + 1)],
        )
        .await?;
    let mut log_from = None;
    while let Some(row) = rows.next().await? {
        let c = Cols::new(&row, "change");
        let kind = c.i64(0)?;
        if kind == 0 {
            log_from = Some(c.i64(3)?);
            continue;
        }
        if set.changes.len() == limit as usize {
            set.truncated = true;
            continue;
        }
        let namespace = Namespace::new(c.text(1)?).map_err(|e| decode("change", e))?;
        let id = c.text(2)?;
        let key = match kind {
            1 => CacheKey::Episode(id.parse::<EpisodeId>().map_err(|e| decode("change", e))?),
            2 => CacheKey::Pattern(PatternId(id)),
            _ => CacheKey::Heuristic(HeuristicId(id)),
        };
        set.changes.push(Change {
            seq: u64::try_from(c.i64(3)?).unwrap_or(0),
            namespace,
            key,
        });
    }
    if logged {
        let from = log_from.ok_or_else(counter_missing)?;
        if after < from {
            set.changes.clear();
            set.truncated = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use memory_core::{
        ContextKey, Episode, EpisodeStore, ExecutionStep, LearnedItems, LearningStore, NewEpisode,
        Pattern, PatternKind, PatternObservation, StepInput, Storage, StorageExt, TaskContext,
        TaskType,
    };

    use super::*;
    use crate::{TursoConfig, TursoStorage};

    fn pattern(at: DateTime<Utc>) -> Pattern {
        let kind = PatternKind::ToolSequence {
            tools: vec!["cargo".into(), "git".into()],
        };
        let obs = PatternObservation::new(kind, ContextKey::default(), EpisodeId::new(), true, at);
        Pattern::from_observation(&obs)
    }

    async fn exec(s: &TursoStorage, sql: &str) {
        let conn = s.inner.writer().await.unwrap();
        conn.execute(sql, ()).await.unwrap();
    }

    async fn count(s: &TursoStorage, sql: &str) -> i64 {
        let conn = s.inner.writer().await.unwrap();
        let conn = Db::plain(&conn);
        let n = query_opt(&conn, sql, (), |row| Cols::new(row, "t").i64(0));
        n.await.unwrap().unwrap()
    }

    fn keys(set: &ChangeSet) -> Vec<(u64, CacheKey)> {
        set.changes.iter().map(|c| (c.seq, c.key.clone())).collect()
    }

    /// Writes through `other` (another writer, so the reader's own positions do not hide
    /// them): an episode created, two step batches, a pattern written twice. Returns the
    /// positions before and after, the episode and the pattern.
    async fn another_writer_changes(other: &TursoStorage) -> (u64, u64, Episode, Pattern) {
        let ns = Namespace::default();
        let before = count(other, "SELECT seq FROM change_counter").await;
        let e = Episode::start(
            NewEpisode::new("t", TaskType::Other, TaskContext::new("d")),
            Utc::now(),
        );
        other.create_episode(&ns, &e).await.unwrap();
        for n in 1..=2 {
            let step = ExecutionStep {
                step_number: n,
                key: ExecutionStep::new_key(),
                timestamp: Utc::now(),
                input: StepInput::ok("cargo", "build", "ok"),
            };
            other.append_steps(&ns, e.id, &[step]).await.unwrap();
        }
        let mut p = pattern(Utc::now());
        let items = |p: &Pattern| LearnedItems {
            patterns: vec![p.clone()],
            ..LearnedItems::default()
        };
        other.put_learned(&ns, &items(&p)).await.unwrap();
        p.occurrences += 1;
        other.put_learned(&ns, &items(&p)).await.unwrap();
        let after = count(other, "SELECT seq FROM change_counter").await;
        (before as u64, after as u64, e, p)
    }

    #[tokio::test]
    async fn the_feed_lists_every_stamp_from_the_log_and_clears_a_reader_older_than_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let reader = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let other = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let (before, after, e, p) = another_writer_changes(&other).await;
        assert_eq!(after - before, 4, "two step batches and two pattern writes");
        let set = reader.changes_since(before, 100).await.unwrap().unwrap();
        let (episode, pattern) = (CacheKey::Episode(e.id), CacheKey::Pattern(p.id.clone()));
        let expected = vec![
            (before + 1, episode.clone()),
            (before + 2, episode),
            (before + 3, pattern.clone()),
            (before + 4, pattern),
        ];
        assert_eq!(
            (set.head, keys(&set), set.truncated),
            (after, expected, false)
        );
        let cut = reader.changes_since(before, 3).await.unwrap().unwrap();
        assert_eq!((cut.changes.len(), cut.truncated), (3, true));

        // The next write takes position 8,192: the log keeps the positions after 4,096.
        exec(&other, "UPDATE change_counter SET seq = 8191 WHERE id = 1").await;
        let mut q = p.clone();
        q.occurrences += 1;
        let items = LearnedItems {
            patterns: vec![q],
            ..LearnedItems::default()
        };
        other
            .put_learned(&Namespace::default(), &items)
            .await
            .unwrap();
        assert_eq!(
            count(&other, "SELECT log_from FROM change_counter").await,
            4096
        );
        let left = "SELECT COUNT(*) FROM change_log WHERE seq <= 4096";
        assert_eq!(count(&other, left).await, 0, "the old rows are deleted");
        let old = reader.changes_since(before, 100).await.unwrap().unwrap();
        assert!(old.truncated && old.changes.is_empty(), "{old:?}");
        let behind = reader.changes_since(4095, 100).await.unwrap().unwrap();
        assert!(
            behind.truncated,
            "position 4,096 may have had rows: {behind:?}"
        );
        let recent = reader.changes_since(4096, 100).await.unwrap().unwrap();
        let only = vec![(8192, CacheKey::Pattern(p.id.clone()))];
        assert_eq!((keys(&recent), recent.truncated), (only, false));
    }

    #[tokio::test]
    async fn a_row_stamped_twice_by_one_transaction_is_logged_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        let p = pattern(Utc::now());
        let mut again = p.clone();
        again.occurrences += 1;
        // One upsert inserts the row, the next updates it, at the same position (version
        // 11's triggers failed the transaction here).
        let items = LearnedItems {
            patterns: vec![p, again.clone()],
            ..LearnedItems::default()
        };
        s.put_learned(&Namespace::default(), &items).await.unwrap();
        let stored = s
            .get_pattern(&Namespace::default(), &again.id)
            .await
            .unwrap();
        assert_eq!(stored, Some(again));
        let logged = count(&s, "SELECT COUNT(*) FROM change_log WHERE kind = 2").await;
        assert_eq!(logged, 1);
    }

    #[tokio::test]
    async fn a_database_of_version_10_reads_the_feed_from_the_stamps_on_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.db");
        let open = || async {
            let config = TursoConfig::local(&path)
                .schema_version(10)
                .build()
                .unwrap();
            TursoStorage::open(config).await.unwrap()
        };
        let (reader, other) = (open().await, open().await);
        assert_eq!(reader.schema_version(), 10);
        let (before, after, e, p) = another_writer_changes(&other).await;
        let set = reader.changes_since(before, 100).await.unwrap().unwrap();
        // Each object once, at its last position.
        let expected = vec![
            (before + 2, CacheKey::Episode(e.id)),
            (before + 4, CacheKey::Pattern(p.id.clone())),
        ];
        assert_eq!(
            (set.head, keys(&set), set.truncated),
            (after, expected, false)
        );
    }
}
