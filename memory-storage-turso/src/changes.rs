//! The change feed: the counter that every write of a cacheable row (episode, pattern,
//! heuristic) advances and stamps on the rows it writes, and what a cache reads to learn of
//! other writers' changes (see `memory_core::Storage::changes_since`).
//!
//! Positions are taken inside the write transaction, under the database's write lock, so
//! their order is the commit order; a reader that has seen every row stamped up to `p` and
//! drops the rows stamped after `p` holds nothing older than the database at that moment.

use std::collections::BTreeSet;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use libsql::{Connection, Value};
use memory_core::{CacheKey, Change, ChangeSet, EpisodeId, HeuristicId, Namespace, PatternId};
use tokio::sync::Mutex;

use crate::codec::{Cols, decode};
use crate::error::{DbResult, Failure};
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

/// The objects stamped after `after` (at most `limit`, oldest first), into `set`.
pub(crate) async fn read_rows(
    conn: &Db<'_>,
    after: u64,
    limit: u32,
    set: &mut ChangeSet,
) -> DbResult<()> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let mut rows = conn
        .query(
            "SELECT kind, ns, id, changed_seq FROM ( \
                 SELECT 1 AS kind, ns, id, changed_seq FROM episodes WHERE changed_seq > ?1 \
                 UNION ALL SELECT 2, ns, id, changed_seq FROM patterns WHERE changed_seq > ?1 \
                 UNION ALL SELECT 3, ns, id, changed_seq FROM heuristics WHERE changed_seq > ?1) \
             ORDER BY changed_seq LIMIT ?2",
            vec![Value::Integer(after), Value::Integer(i64::from(limit) + 1)],
        )
        .await?;
    while let Some(row) = rows.next().await? {
        if set.changes.len() == limit as usize {
            set.truncated = true;
            break;
        }
        let c = Cols::new(&row, "change");
        let namespace = Namespace::new(c.text(1)?).map_err(|e| decode("change", e))?;
        let id = c.text(2)?;
        let key = match c.i64(0)? {
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
    Ok(())
}
