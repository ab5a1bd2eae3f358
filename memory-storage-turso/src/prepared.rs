//! The connection a transaction body runs on, with its statements kept prepared across
//! transactions (local files).
//!
//! libsql prepares every `execute` and `query` anew and has no statement cache; preparing was
//! about a tenth of the CPU of an ingest (the SQL of a multi-row insert or of the full-text
//! view's trigger program is long to compile), so the writer of a local database keeps its
//! statements by SQL text. A statement is taken out of the cache while it runs and reset
//! before it goes back, so it never holds a read open between uses. Each reader of a local
//! file keeps its own; remote connections (whose transactions run on a stream each) and
//! replicas prepare every statement.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Mutex, MutexGuard, PoisonError};

use libsql::params::{IntoParams, Params};
use libsql::{Connection, Row, Statement, Value};

use crate::deferred_text::DeferredText;
use crate::error::DbResult;

/// Statements kept at most; past it the cache starts over (statements whose text varies with
/// their number of rows or keys would otherwise crowd out the steady ones).
const CAPACITY: usize = 96;

/// A statement whose bound text and blobs exceed this is not kept: SQLite holds a copy of
/// the last bound values until they are bound again (libsql cannot clear them), and a kept
/// 1 MiB index-snapshot part would stay in memory for nothing.
const MAX_KEPT_BINDINGS: usize = 64 * 1024;

/// The bytes of text and blobs in `params`.
fn bound_bytes(params: &Params) -> usize {
    let size = |v: &Value| match v {
        Value::Text(t) => t.len(),
        Value::Blob(b) => b.len(),
        _ => 0,
    };
    match params {
        Params::None => 0,
        Params::Positional(values) => values.iter().map(size).sum(),
        Params::Named(values) => values.iter().map(|(_, v)| size(v)).sum(),
    }
}

/// Prepared statements of one connection, by SQL text.
#[derive(Default)]
pub(crate) struct Prepared {
    by_sql: Mutex<HashMap<String, Statement>>,
}

impl Prepared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Statement>> {
        self.by_sql.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The statement for `sql`: the kept one, or prepared now.
    async fn take(&self, conn: &Connection, sql: &str) -> DbResult<Statement> {
        let kept = self.lock().remove(sql);
        match kept {
            Some(stmt) => Ok(stmt),
            None => Ok(conn.prepare(sql).await?),
        }
    }

    /// Keeps `stmt` for the next use of `sql`, reset, unless it holds large bound values (it
    /// is finalized then).
    fn give_back(&self, sql: &str, stmt: Statement, bound: usize) {
        stmt.reset();
        if bound > MAX_KEPT_BINDINGS {
            return;
        }
        let mut by_sql = self.lock();
        if by_sql.len() >= CAPACITY {
            by_sql.clear();
        }
        by_sql.insert(sql.to_owned(), stmt);
    }
}

/// The connection a body runs on: a local file's writer or reader with its prepared
/// statements, or a connection that prepares every statement (a remote transaction's stream,
/// a replica, the writer shared by reads of `:memory:`).
#[derive(Clone, Copy)]
pub(crate) struct Db<'a> {
    conn: &'a Connection,
    prepared: Option<&'a Prepared>,
    /// A grouped write's body: its full-text rows go to the group, written by its commit
    /// ([`crate::group_commit`]).
    text: Option<&'a DeferredText>,
}

impl Deref for Db<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'a> Db<'a> {
    /// A connection that prepares every statement.
    pub(crate) fn plain(conn: &'a Connection) -> Self {
        Db {
            conn,
            prepared: None,
            text: None,
        }
    }

    /// A connection that keeps its statements in `prepared` (which must belong to it).
    pub(crate) fn with(conn: &'a Connection, prepared: &'a Prepared) -> Self {
        Db {
            conn,
            prepared: Some(prepared),
            text: None,
        }
    }

    /// [`Db::with`] for the body of a grouped write, whose full-text rows wait in `text` for
    /// the group's commit.
    pub(crate) fn grouped(
        conn: &'a Connection,
        prepared: &'a Prepared,
        text: &'a DeferredText,
    ) -> Self {
        Db {
            conn,
            prepared: Some(prepared),
            text: Some(text),
        }
    }

    /// Where this body's full-text rows wait, when it is a grouped write's.
    pub(crate) fn deferred_text(&self) -> Option<&'a DeferredText> {
        self.text
    }

    /// The same connection, writing full-text rows at once.
    pub(crate) fn immediate(&self) -> Db<'a> {
        Db {
            text: None,
            ..*self
        }
    }

    /// Runs a statement that returns no rows; the number of rows it changed.
    pub(crate) async fn exec(&self, sql: &str, params: impl IntoParams) -> DbResult<u64> {
        let Some(prepared) = self.prepared else {
            return Ok(self.conn.execute(sql, params).await?);
        };
        let params = params.into_params()?;
        let bound = bound_bytes(&params);
        let stmt = prepared.take(self.conn, sql).await?;
        stmt.reset();
        let changed = stmt.execute(params).await;
        prepared.give_back(sql, stmt, bound);
        Ok(changed? as u64)
    }

    /// Every row `sql` returns, each mapped by `f`.
    pub(crate) async fn rows<T>(
        &self,
        sql: &str,
        params: impl IntoParams,
        f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        self.query(sql, params, usize::MAX, f).await
    }

    /// The first row `sql` returns, mapped by `f`; the statement stops there.
    pub(crate) async fn first<T>(
        &self,
        sql: &str,
        params: impl IntoParams,
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        let mut f = Some(f);
        let mut first = self
            .query(sql, params, 1, |row| match f.take() {
                Some(f) => f(row),
                None => Err(crate::error::decode("row", "read past the first row")),
            })
            .await?;
        Ok(first.pop())
    }

    /// At most `max` rows of `sql`, each mapped by `f`.
    async fn query<T>(
        &self,
        sql: &str,
        params: impl IntoParams,
        max: usize,
        mut f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        let params = params.into_params()?;
        let bound = bound_bytes(&params);
        let kept = match self.prepared {
            Some(prepared) => Some((prepared, prepared.take(self.conn, sql).await?)),
            None => None,
        };
        let result = async {
            let mut rows = match &kept {
                Some((_, stmt)) => {
                    stmt.reset();
                    stmt.query(params).await?
                }
                None => self.conn.query(sql, params).await?,
            };
            let mut out = Vec::new();
            while out.len() < max
                && let Some(row) = rows.next().await?
            {
                out.push(f(&row)?);
            }
            Ok(out)
        }
        .await;
        if let Some((prepared, stmt)) = kept {
            prepared.give_back(sql, stmt, bound);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    async fn connection() -> Connection {
        let db = libsql::Builder::new_local(":memory:")
            .build()
            .await
            .unwrap();
        let conn = db.connect().unwrap();
        conn.execute(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
            (),
        )
        .await
        .unwrap();
        conn
    }

    async fn values(db: &Db<'_>) -> Vec<String> {
        db.rows("SELECT v FROM t ORDER BY k", (), |row| {
            Ok(row.get::<String>(0)?)
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_statement_is_prepared_once_and_reused_with_new_values() {
        let conn = connection().await;
        let prepared = Prepared::default();
        let db = Db::with(&conn, &prepared);
        let insert = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        for (k, v) in [(1, "a"), (2, "b"), (3, "c")] {
            assert_eq!(db.exec(insert, (k, v)).await.unwrap(), 1);
        }
        assert_eq!(values(&db).await, ["a", "b", "c"]);
        let kept: Vec<String> = prepared.lock().keys().cloned().collect();
        assert_eq!(
            kept.len(),
            2,
            "the insert and the select, once each: {kept:?}"
        );
        // A plain connection keeps nothing and reads the same rows.
        assert_eq!(values(&Db::plain(&conn)).await, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_failed_statement_goes_back_reset_and_runs_again() {
        let conn = connection().await;
        let prepared = Prepared::default();
        let db = Db::with(&conn, &prepared);
        let insert = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        db.exec(insert, (1, "a")).await.unwrap();
        assert!(
            db.exec(insert, (1, "again")).await.is_err(),
            "duplicate key"
        );
        db.exec(insert, (2, "b")).await.unwrap();
        assert_eq!(values(&db).await, ["a", "b"]);
    }

    #[tokio::test]
    async fn first_stops_at_one_row_and_leaves_no_read_open() {
        let conn = connection().await;
        let prepared = Prepared::default();
        let db = Db::with(&conn, &prepared);
        for (k, v) in [(1, "a"), (2, "b")] {
            db.exec("INSERT INTO t (k, v) VALUES (?1, ?2)", (k, v))
                .await
                .unwrap();
        }
        let select = "SELECT v FROM t WHERE k >= ?1 ORDER BY k";
        let first = |k: i64| db.first(select, [k], |row| Ok(row.get::<String>(0)?));
        assert_eq!(first(1).await.unwrap().as_deref(), Some("a"));
        assert_eq!(first(2).await.unwrap().as_deref(), Some("b"));
        assert_eq!(first(3).await.unwrap(), None);
        assert!(conn.is_autocommit());
        // A kept statement holds no read: a schema change on the same connection succeeds.
        conn.execute("DROP TABLE t", ()).await.unwrap();
    }

    #[tokio::test]
    async fn kept_statements_survive_a_rolled_back_savepoint() {
        let conn = connection().await;
        let prepared = Prepared::default();
        let db = Db::with(&conn, &prepared);
        let insert = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        conn.execute("BEGIN IMMEDIATE", ()).await.unwrap();
        db.exec(insert, (1, "kept")).await.unwrap();
        conn.execute("SAVEPOINT member", ()).await.unwrap();
        db.exec(insert, (2, "undone")).await.unwrap();
        conn.execute_batch("ROLLBACK TO member; RELEASE member")
            .await
            .unwrap();
        db.exec(insert, (3, "after")).await.unwrap();
        conn.execute("COMMIT", ()).await.unwrap();
        assert_eq!(values(&db).await, ["kept", "after"]);
    }

    #[tokio::test]
    async fn a_statement_with_large_bound_values_is_not_kept() {
        let conn = connection().await;
        let prepared = Prepared::default();
        let db = Db::with(&conn, &prepared);
        let insert = "INSERT INTO t (k, v) VALUES (?1, ?2)";
        db.exec(insert, (1, "x".repeat(MAX_KEPT_BINDINGS)))
            .await
            .unwrap();
        assert_eq!(prepared.lock().len(), 1, "at the bound: kept");
        db.exec(insert, (2, "x".repeat(MAX_KEPT_BINDINGS + 1)))
            .await
            .unwrap();
        assert!(prepared.lock().is_empty(), "past it: finalized");
        assert_eq!(values(&db).await.len(), 2);
    }

    #[tokio::test]
    async fn the_cache_starts_over_at_its_capacity() {
        let conn = connection().await;
        let prepared = Prepared::default();
        let db = Db::with(&conn, &prepared);
        for k in 0..=CAPACITY {
            // A different text each time, as a multi-row insert of another size would be.
            let sql = format!("INSERT INTO t (k, v) VALUES ({k}, 'x')");
            db.exec(&sql, ()).await.unwrap();
        }
        assert_eq!(
            prepared.lock().len(),
            1,
            "cleared when full, then the last kept"
        );
    }
}
