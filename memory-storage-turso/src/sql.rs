//! Building SQL: multi-row inserts, and the `WHERE` clauses of episode filters and learned
//! queries (always filtered in SQL, never after).

use libsql::params::IntoParams;
use libsql::{Row, Value};
use memory_core::{EpisodeFilter, EpisodeStatus, LearnedQuery};

use crate::codec::{Cols, nanos_clamped, text};
use crate::error::{DbResult, decode};
use crate::prepared::Db;

/// Rows per multi-row `INSERT` (at 11 columns, far below SQLite's 32,766 bound parameters).
pub(crate) const ROWS_PER_INSERT: usize = 500;

/// `head VALUES (?, ...), (?, ...) tail` for `rows` rows of `columns` values each: one
/// statement (one round trip to a server) instead of one per row.
pub(crate) fn multi_row(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    format!("{head} {} {tail}", values_list(columns, rows, 1))
}

/// `VALUES (?first, ...), (...)`: `rows` rows of `columns` placeholders, numbered from
/// `first`.
pub(crate) fn values_list(columns: usize, rows: usize, first: usize) -> String {
    // Built in one buffer: a 64-step batch's statement has 640 placeholders, and one string
    // per placeholder and per row showed in the step write's profile.
    let mut sql = String::with_capacity(8 + rows * columns * 7);
    sql.push_str("VALUES ");
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        push_placeholders(&mut sql, first + r * columns, columns);
        sql.push(')');
    }
    sql
}

/// Inserts rows (each `columns` values) with multi-row statements.
pub(crate) async fn insert_rows(
    conn: &Db<'_>,
    head: &str,
    columns: usize,
    rows: Vec<Vec<Value>>,
    tail: &str,
) -> DbResult<()> {
    for (sql, values) in insert_statements(head, columns, rows, tail) {
        conn.exec(&sql, values).await?;
    }
    Ok(())
}

/// The multi-row statements (SQL and values) that insert `rows` (each `columns` values), at
/// most [`ROWS_PER_INSERT`] rows each.
pub(crate) fn insert_statements(
    head: &str,
    columns: usize,
    rows: Vec<Vec<Value>>,
    tail: &str,
) -> Vec<(String, Vec<Value>)> {
    let mut statements = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        let sql = multi_row(head, columns, chunk.len(), tail);
        statements.push((sql, chunk.into_iter().flatten().collect()));
    }
    statements
}

/// Every row `sql` returns, each mapped by `f`.
pub(crate) async fn query_all<T>(
    conn: &Db<'_>,
    sql: &str,
    params: impl IntoParams,
    f: impl FnMut(&Row) -> DbResult<T>,
) -> DbResult<Vec<T>> {
    conn.rows(sql, params, f).await
}

/// The first row `sql` returns, mapped by `f`; `None` when it returns none.
pub(crate) async fn query_opt<T>(
    conn: &Db<'_>,
    sql: &str,
    params: impl IntoParams,
    f: impl FnOnce(&Row) -> DbResult<T>,
) -> DbResult<Option<T>> {
    conn.first(sql, params, f).await
}

/// The first row `sql` returns, mapped by `f`; a decode error of `what` when it returns none.
pub(crate) async fn query_one<T>(
    conn: &Db<'_>,
    what: &'static str,
    sql: &str,
    params: impl IntoParams,
    f: impl FnOnce(Cols<'_>) -> DbResult<T>,
) -> DbResult<T> {
    query_opt(conn, sql, params, |row| f(Cols::new(row, what)))
        .await?
        .ok_or_else(|| decode(what, "no row returned"))
}

/// A statement built at run time from fixed SQL fragments and bound values: user values only
/// ever enter as `?N` placeholders.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) values: Vec<Value>,
}

impl Sql {
    /// Appends fixed SQL.
    pub(crate) fn push(&mut self, fragment: &str) -> &mut Self {
        self.text.push_str(fragment);
        self
    }

    /// Binds `value` as the next placeholder and appends `?N`.
    pub(crate) fn bind(&mut self, value: Value) -> &mut Self {
        self.values.push(value);
        self.text.push('?');
        self.text.push_str(&self.values.len().to_string());
        self
    }

    /// Appends `head ?N tail`, binding `value`.
    pub(crate) fn cond(&mut self, head: &str, value: Value, tail: &str) -> &mut Self {
        self.push(head).bind(value).push(tail)
    }

    /// Appends ` LIMIT ?N OFFSET ?M`, binding both.
    pub(crate) fn page(&mut self, limit: u32, offset: u32) -> &mut Self {
        self.cond(" LIMIT ", Value::Integer(i64::from(limit)), "")
            .cond(" OFFSET ", Value::Integer(i64::from(offset)), "")
    }
}

/// Appends the `WHERE` conditions (each starting with ` AND`) of an [`EpisodeFilter`] over the
/// `episodes` table aliased `e`.
pub(crate) fn filter_sql(f: &EpisodeFilter, sql: &mut Sql) {
    if let Some(t) = f.task_type {
        sql.cond(" AND e.task_type = ", text(t.as_str()), "");
    }
    if let Some(d) = &f.domain {
        sql.cond(" AND e.domain = ", text(d), "");
    }
    if let Some(l) = &f.language {
        sql.cond(" AND e.language = ", text(l), "");
    }
    if let Some(fw) = &f.framework {
        sql.cond(" AND e.framework = ", text(fw), "");
    }
    if let Some(tag) = &f.tag {
        sql.cond(
            " AND EXISTS (SELECT 1 FROM episode_tags g WHERE g.ns = e.ns AND g.tag = ",
            text(tag),
            " AND g.episode_id = e.id)",
        );
    }
    match f.status {
        None => {}
        Some(EpisodeStatus::InProgress) => {
            sql.push(" AND e.outcome_kind IS NULL");
        }
        Some(EpisodeStatus::AnyCompleted) => {
            sql.push(" AND e.outcome_kind IS NOT NULL");
        }
        Some(EpisodeStatus::Completed(kind)) => {
            sql.cond(" AND e.outcome_kind = ", text(kind.as_str()), "");
        }
    }
    if let Some(t) = f.started_after {
        sql.cond(
            " AND e.started_at >= ",
            Value::Integer(nanos_clamped(t)),
            "",
        );
    }
    if let Some(t) = f.started_before {
        sql.cond(" AND e.started_at < ", Value::Integer(nanos_clamped(t)), "");
    }
}

/// Appends the `WHERE` conditions of a [`LearnedQuery`]'s context and status. An item field
/// that is unset (NULL) matches any query value.
pub(crate) fn learned_sql(q: &LearnedQuery, sql: &mut Sql) {
    status_sql(q, sql);
    if let Some(t) = q.task_type {
        sql.cond(
            " AND (task_type IS NULL OR task_type = ",
            text(t.as_str()),
            ")",
        );
    }
    if let Some(d) = &q.domain {
        sql.cond(" AND (domain IS NULL OR domain = ", text(d), ")");
    }
    if let Some(l) = &q.language {
        sql.cond(" AND (language IS NULL OR language = ", text(l), ")");
    }
}

fn status_sql(q: &LearnedQuery, sql: &mut Sql) {
    if !q.include_inactive {
        sql.push(" AND status = 'active'");
    }
}

/// The schema version from which the learned tables have their context indexes
/// (`<table>_by_context`, see `migrations/v9.sql`).
pub(crate) const CONTEXT_INDEXES: u32 = 9;

/// Up to this many items of a context (counted in its index, any status) are read and sorted
/// in full; a larger context is read down the counter index instead, which stops at the page.
pub(crate) const CONTEXT_SORT_MAX: u32 = 4096;

/// A page of learned items of `table` for a query with a domain (the context index's leading
/// column), most-seen first by `key` (`occurrences` or `support`), ties by id; `extra` appends
/// conditions both ways of reading share (a pattern kind).
///
/// One statement picks one of two ways to read, by how many items the context holds (counted
/// in the context index, at most [`CONTEXT_SORT_MAX`] + 1 entries): a small context is sought
/// in the context index and sorted; a large one is read down the counter index, where the
/// page fills quickly. The way not taken gets `LIMIT 0`, which SQLite checks before it reads
/// a row, so it costs nothing. One statement keeps it one round trip to a server. No
/// `INDEXED BY`: a replica file that has not yet synced the index answers slowly, not with
/// an error.
pub(crate) fn context_page_sql(
    table: &str,
    key: &str,
    ns: &str,
    q: &LearnedQuery,
    extra: &dyn Fn(&mut Sql),
) -> Sql {
    let mut sql = Sql::default();
    sql.push("WITH probe(n) AS (SELECT COUNT(*) FROM (SELECT 1 FROM ")
        .push(table)
        .cond(" WHERE ns = ", text(ns), "");
    context_in_sql(q, &mut sql);
    let cap = i64::from(CONTEXT_SORT_MAX);
    sql.cond(" LIMIT ", Value::Integer(cap + 1), "))")
        .push(" SELECT body FROM (");
    let seek = |sql: &mut Sql| {
        context_in_sql(q, sql);
        status_sql(q, sql);
        extra(sql);
    };
    // `+` keeps the counter index from being chosen for the order: the context index, the
    // only one with the context expressions, is then the planner's choice for the seek.
    page_arm(&mut sql, table, key, ns, q, &seek, "+", "<=");
    sql.push(" UNION ALL ");
    let walk = |sql: &mut Sql| {
        learned_sql(q, sql);
        extra(sql);
    };
    page_arm(&mut sql, table, key, ns, q, &walk, "", ">");
    sql.push(") ORDER BY k DESC, id ASC");
    sql
}

/// One way of reading a page of [`context_page_sql`]: the rows `conditions` select, ordered
/// by `key` (after `order_prefix`), with the page's limit when the probe's count compares to
/// [`CONTEXT_SORT_MAX`] by `taken_when`, else `LIMIT 0`.
#[allow(clippy::too_many_arguments)]
fn page_arm(
    sql: &mut Sql,
    table: &str,
    key: &str,
    ns: &str,
    q: &LearnedQuery,
    conditions: &dyn Fn(&mut Sql),
    order_prefix: &str,
    taken_when: &str,
) {
    sql.push("SELECT * FROM (SELECT body, ")
        .push(key)
        .push(" AS k, id FROM ")
        .push(table)
        .cond(" WHERE ns = ", text(ns), "");
    conditions(sql);
    sql.push(&format!(" ORDER BY {order_prefix}{key} DESC, id ASC"))
        .push(&format!(" LIMIT (SELECT CASE WHEN n {taken_when} "))
        .bind(Value::Integer(i64::from(CONTEXT_SORT_MAX)))
        .cond(
            " THEN ",
            Value::Integer(i64::from(q.limit)),
            " ELSE 0 END FROM probe)",
        )
        .cond(" OFFSET ", Value::Integer(i64::from(q.offset)), ")");
}

/// The context conditions in the form the context index is sought by: an unset field is
/// NULL, indexed as an empty blob, which no stored text equals.
fn context_in_sql(q: &LearnedQuery, sql: &mut Sql) {
    if let Some(d) = &q.domain {
        sql.cond(" AND IFNULL(domain, x'') IN (x'', ", text(d), ")");
    }
    if let Some(l) = &q.language {
        sql.cond(" AND IFNULL(language, x'') IN (x'', ", text(l), ")");
    }
    if let Some(t) = q.task_type {
        sql.cond(
            " AND IFNULL(task_type, x'') IN (x'', ",
            text(t.as_str()),
            ")",
        );
    }
}

pub(crate) fn placeholders(first: usize, n: usize) -> String {
    let mut sql = String::with_capacity(n * 6);
    push_placeholders(&mut sql, first, n);
    sql
}

/// Appends `?first, ..., ?(first + n - 1)` to `sql`.
fn push_placeholders(sql: &mut String, first: usize, n: usize) {
    use std::fmt::Write as _;
    for i in first..first + n {
        if i > first {
            sql.push_str(", ");
        }
        // Writing to a String cannot fail.
        let _ = write!(sql, "?{i}");
    }
}

#[cfg(test)]
mod tests {
    use super::{multi_row, placeholders, values_list};

    #[test]
    fn placeholder_lists_are_numbered_in_order() {
        assert_eq!(placeholders(3, 0), "");
        assert_eq!(placeholders(3, 3), "?3, ?4, ?5");
        assert_eq!(values_list(2, 2, 3), "VALUES (?3, ?4), (?5, ?6)");
        assert_eq!(
            multi_row("INSERT INTO t (a, b)", 2, 1, "RETURNING a"),
            "INSERT INTO t (a, b) VALUES (?1, ?2) RETURNING a"
        );
    }
}
