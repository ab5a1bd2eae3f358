//! The full-text index, kept apart per namespace: what is written for each episode part and
//! how a query is scored.
//!
//! FTS5's own `bm25()` takes its document frequencies, document count and average length
//! from the whole table, so the episodes of one namespace changed the scores of another
//! (and how long its queries took): a side channel between tenants. Here every indexed term
//! is written as `<namespace prefix><term>`, the prefix being the first 16 hex digits of the
//! namespace's SHA-256, so each namespace has posting lists of its own; a query reads only
//! those, and scores them with Okapi BM25 ([`memory_core::bm25_weight`]) from per-namespace
//! counts: the document frequency of each term among the namespace's rows, and the
//! namespace's row count and total length from `text_stats`. Nothing another namespace
//! stores enters a score or a query's work, except the depth of the shared B-trees.
//!
//! The FTS5 table is contentless (`content = ''`), so the prefixed terms are indexed but not
//! stored a second time, and its `ascii` tokenizer keeps each prefixed term whole (the terms
//! come from [`memory_core::tokenize`], which has already split and lowercased the text).
//! Rows are written through the `text_in` view, whose trigger keeps `text_rows` (which
//! episode and part a row indexes, and its length) and `text_stats` in the same transaction.
//! A prefix collision between two namespaces (64 bits of SHA-256) would merge their
//! statistics, never their rows: every row read is checked against `text_rows.ns`.

use std::collections::{BTreeMap, HashMap};

use libsql::Value;
use memory_core::{EpisodeFilter, TextHit, TextSearch, bm25_weight, for_each_token, tokenize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::codec::{Cols, SUMMARY_COLUMNS, summary_from_row, text};
use crate::deferred_text::DeferredText;
use crate::error::DbResult;
use crate::prepared::Db;
use crate::sql::{Sql, filter_sql, insert_statements, query_all, query_opt};

/// The part of an episode whose row holds its work: the distinct tools, actions and error
/// messages of its steps ([`memory_core::indexed_work_text`]), written once by its
/// completion. Stores written before 2026-11-27 also hold `steps` rows (every step's tool,
/// action and output, one row per logged batch); they are searched like any other part.
pub(crate) const WORK_PART: &str = "work";

/// Hex digits of the namespace prefix (64 bits of its SHA-256).
const PREFIX_HEX: usize = 16;

/// Longest term indexed, in characters: longer ones are cut here, at indexing and at query
/// time alike (FTS5 itself cuts tokens at 32 KiB, which would break that symmetry).
const MAX_TERM_CHARS: usize = 64;

/// Candidate episodes whose summaries are read per query while a filter leaves fewer than
/// the limit.
const SUMMARY_CHUNK: usize = 200;

/// Rows moved per page by the version-6 migration.
const MOVE_PAGE: i64 = 500;

/// The one statement that writes an index row: values from [`row_values`].
pub(crate) const INSERT_TEXT: &str =
    "INSERT INTO text_in (terms, len, ns, episode_id, part) VALUES (?1, ?2, ?3, ?4, ?5)";

/// [`INSERT_TEXT`] without its values, for several rows in one statement.
const INSERT_TEXT_HEAD: &str = "INSERT INTO text_in (terms, len, ns, episode_id, part)";

/// The prefix of every term of namespace `ns`.
fn prefix(ns: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(ns.as_bytes());
    let mut out = String::with_capacity(PREFIX_HEX);
    for byte in digest.iter().take(PREFIX_HEX / 2) {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// A term as indexed: the namespace prefix, then the term cut to [`MAX_TERM_CHARS`].
fn indexed(prefix: &str, term: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + term.len().min(4 * MAX_TERM_CHARS));
    push_indexed(&mut s, prefix, term);
    s
}

/// Appends [`indexed`]`(prefix, term)` to `out`.
fn push_indexed(out: &mut String, prefix: &str, term: &str) {
    out.push_str(prefix);
    if term.len() <= MAX_TERM_CHARS {
        // At most as many characters as bytes: nothing to cut.
        out.push_str(term);
    } else {
        out.extend(term.chars().take(MAX_TERM_CHARS));
    }
}

/// The values of [`INSERT_TEXT`] for one part of an episode, or `None` when `body` has no
/// term to index (such a row would only change the namespace's row count).
pub(crate) fn row_values(body: &str, ns: &str, episode_id: &str, part: &str) -> Option<Vec<Value>> {
    let p = prefix(ns);
    let mut len = 0i64;
    // Written straight into the row's text: no string per term (step pages index thousands).
    let mut joined = String::with_capacity(body.len() * 2);
    for_each_token(body, |t| {
        if len > 0 {
            joined.push(' ');
        }
        push_indexed(&mut joined, &p, t);
        len += 1;
    });
    if len == 0 {
        return None;
    }
    Some(vec![
        Value::Text(joined),
        Value::Integer(len),
        text(ns),
        text(episode_id),
        text(part),
    ])
}

/// Writes one index row (nothing when `body` has no term).
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn insert(
    conn: &Db<'_>,
    body: &str,
    ns: &str,
    episode_id: &str,
    part: &str,
) -> DbResult<()> {
    let mut rows = PendingRows::default();
    rows.add(body, ns, episode_id, part);
    rows.write(conn).await
}

/// The index rows of one transaction, written together by one statement after its other
/// writes.
///
/// FTS5 keeps the terms of the rows written in a transaction in memory and writes them out
/// as a new segment at the commit, but also whenever a later statement of the transaction
/// opens a savepoint, which every statement with a statement journal does: the learned
/// items' upserts, and each insert into `text_in` (its trigger writes two tables). A
/// completion that indexed its steps, then its reflection, then merged its learning wrote
/// two segments, each flushed in the middle of the transaction, and each later merged again
/// by FTS5. Written last and by one statement, a transaction's rows are one segment,
/// written at the commit.
#[derive(Debug, Default)]
pub(crate) struct PendingRows(Vec<Vec<Value>>);

impl PendingRows {
    /// Adds the row of `body` (nothing when it has no term).
    pub(crate) fn add(&mut self, body: &str, ns: &str, episode_id: &str, part: &str) {
        self.0.extend(row_values(body, ns, episode_id, part));
    }

    /// Writes the rows, by one statement; call it after the transaction's other writes. In
    /// a grouped write they join the group's rows instead ([`DeferredText`]).
    #[tracing::instrument(level = "debug", skip_all, fields(rows = self.0.len()))]
    pub(crate) async fn write(self, conn: &Db<'_>) -> DbResult<()> {
        if let Some(held) = conn.deferred_text() {
            held.push(self.0);
            return Ok(());
        }
        for (sql, values) in self.statements() {
            conn.exec(&sql, values).await?;
        }
        Ok(())
    }

    /// The statement (SQL and values) that writes the rows: none without rows, one up to
    /// [`crate::sql::ROWS_PER_INSERT`] rows; for a batch to end with.
    pub(crate) fn statements(self) -> Vec<(String, Vec<Value>)> {
        if self.0.len() == 1 {
            let values = self.0.into_iter().flatten().collect();
            return vec![(INSERT_TEXT.to_owned(), values)];
        }
        insert_statements(INSERT_TEXT_HEAD, 5, self.0, "")
    }
}

/// Writes every row `held` holds, by one statement (up to [`crate::sql::ROWS_PER_INSERT`]);
/// the rows are gone from it either way (a failure fails the group, which rolls back).
pub(crate) async fn write_held(held: &DeferredText, conn: &Db<'_>) -> DbResult<()> {
    PendingRows(held.take_for_write())
        .write(&conn.immediate())
        .await
}

/// Deletes the index rows of one part of an episode (the trigger on `text_rows` removes
/// their terms and updates `text_stats`); returns how many there were. In a grouped write,
/// the rows its group holds are written first.
pub(crate) async fn delete(conn: &Db<'_>, ns: &str, episode_id: &str, part: &str) -> DbResult<u64> {
    if let Some(held) = conn.deferred_text() {
        write_held(held, conn).await?;
    }
    conn.exec(
        "DELETE FROM text_rows WHERE ns = ?1 AND episode_id = ?2 AND part = ?3",
        vec![text(ns), text(episode_id), text(part)],
    )
    .await
}

/// The version-6 migration's move: re-indexes every row of the version-1 table
/// `episode_text` (one FTS5 table for all namespaces) into the per-namespace index, page by
/// page, then drops it. Runs inside the migration's transaction.
pub(crate) async fn move_from_v1(conn: &Db<'_>) -> DbResult<()> {
    let mut after = 0i64;
    let mut moved = 0u64;
    loop {
        let page = query_all(
            conn,
            "SELECT rowid, body, ns, episode_id, part FROM episode_text \
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            vec![Value::Integer(after), Value::Integer(MOVE_PAGE)],
            |row| {
                let c = Cols::new(row, "episode_text");
                Ok((c.i64(0)?, c.text(1)?, c.text(2)?, c.text(3)?, c.text(4)?))
            },
        )
        .await?;
        let Some(last) = page.last().map(|r| r.0) else {
            break;
        };
        for (_, body, ns, episode_id, part) in &page {
            insert(conn, body, ns, episode_id, part).await?;
        }
        moved += page.len() as u64;
        after = last;
        if moved % 50_000 < MOVE_PAGE as u64 {
            info!(
                rows = moved,
                "moving the full-text index to per-namespace terms"
            );
        }
    }
    conn.execute("DROP TABLE episode_text", ()).await?;
    info!(rows = moved, "full-text index moved to per-namespace terms");
    Ok(())
}

/// One matching index row: its episode, its length, and the frequency of each query term
/// in it (by position in the query's term list).
struct Match {
    episode_id: String,
    row: i64,
    len: f64,
    term: usize,
    tf: f64,
}

/// Lexical search of namespace `ns`: BM25 over the namespace's own statistics, each
/// episode's score the sum over its parts (task, step batches, reflection). Ties go to the
/// smaller episode id, and the terms of each episode are summed in an order that does not
/// depend on other namespaces, so a namespace's scores are the same bit for bit whatever
/// another stores. Also counts the query's terms the namespace's index holds (whatever the
/// filter).
pub(crate) async fn search(
    conn: &Db<'_>,
    ns: &str,
    query_text: &str,
    filter: &EpisodeFilter,
    limit: u32,
) -> DbResult<TextSearch> {
    let mut words = tokenize(query_text);
    words.sort_unstable();
    words.dedup();
    if words.is_empty() || limit == 0 {
        return Ok(TextSearch::default());
    }
    let p = prefix(ns);
    let terms: Vec<String> = words.iter().map(|w| indexed(&p, w)).collect();
    // Two words cut to the same 64 characters are one indexed term.
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (i, t) in terms.iter().enumerate() {
        position.entry(t.as_str()).or_insert(i);
    }

    let mut found = TextSearch {
        hits: Vec::new(),
        terms: u32::try_from(position.len()).unwrap_or(u32::MAX),
        known_terms: 0,
    };
    let Some((docs, total_len)) = stats(conn, ns).await? else {
        return Ok(found);
    };
    let matches = matches(conn, ns, &terms, &position).await?;
    let mut df = vec![0f64; terms.len()];
    for m in &matches {
        df[m.term] += 1.0;
    }
    found.known_terms = u32::try_from(df.iter().filter(|d| **d > 0.0).count()).unwrap_or(u32::MAX);
    let avg_len = total_len / docs.max(1.0);

    // Per episode, its contributions in (row, term) order: rows of one namespace keep their
    // relative order whatever is interleaved between them.
    let mut per_episode: BTreeMap<&str, Vec<(i64, usize, f64)>> = BTreeMap::new();
    for m in &matches {
        let w = bm25_weight(docs, df[m.term], m.tf, m.len, avg_len);
        per_episode
            .entry(m.episode_id.as_str())
            .or_default()
            .push((m.row, m.term, w));
    }
    let mut ranked: Vec<(&str, f64)> = per_episode
        .into_iter()
        .map(|(id, mut parts)| {
            parts.sort_by_key(|p| (p.0, p.1));
            (id, parts.iter().map(|x| x.2).sum())
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));

    'chunks: for chunk in ranked.chunks(SUMMARY_CHUNK) {
        let mut summaries = summaries(conn, ns, chunk, filter).await?;
        for (id, score) in chunk {
            if let Some(summary) = summaries.remove(*id) {
                found.hits.push(TextHit {
                    episode_id: summary.id,
                    score: *score,
                    summary,
                });
                if found.hits.len() >= limit as usize {
                    break 'chunks;
                }
            }
        }
    }
    Ok(found)
}

/// The namespace's row count and total length, or `None` when it has nothing indexed.
async fn stats(conn: &Db<'_>, ns: &str) -> DbResult<Option<(f64, f64)>> {
    let sql = "SELECT rows, terms FROM text_stats WHERE ns = ?1";
    let found = query_opt(conn, sql, vec![text(ns)], |row| {
        let c = Cols::new(row, "text_stats");
        Ok((c.i64(0)?, c.i64(1)?))
    });
    Ok(found
        .await?
        .filter(|(docs, _)| *docs > 0)
        .map(|(docs, len)| (docs as f64, len as f64)))
}

/// Every row of the namespace holding a query term, with the term's frequency in it. Read
/// from the term postings (`episode_terms_hits`, one row per occurrence), each joined to
/// its `text_rows` entry, which also drops any posting whose row was deleted.
async fn matches(
    conn: &Db<'_>,
    ns: &str,
    terms: &[String],
    position: &HashMap<&str, usize>,
) -> DbResult<Vec<Match>> {
    let mut sql = Sql::default();
    sql.push(
        "SELECT h.term, r.episode_id, r.id, r.len, COUNT(*) \
         FROM episode_terms_hits h CROSS JOIN text_rows r \
         WHERE h.term IN (",
    );
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(Value::Text(t.clone()));
    }
    sql.push(") AND r.id = h.doc")
        .cond(" AND r.ns = ", text(ns), "")
        .push(" GROUP BY h.term, h.doc");
    let rows = query_all(conn, &sql.text, sql.values, |row| {
        let c = Cols::new(row, "term match");
        let Some(&term) = position.get(c.text(0)?.as_str()) else {
            return Ok(None);
        };
        Ok(Some(Match {
            episode_id: c.text(1)?,
            row: c.i64(2)?,
            len: c.i64(3)? as f64,
            term,
            tf: c.i64(4)? as f64,
        }))
    });
    Ok(rows.await?.into_iter().flatten().collect())
}

/// The summaries of the candidate episodes that pass `filter`, by id.
async fn summaries(
    conn: &Db<'_>,
    ns: &str,
    candidates: &[(&str, f64)],
    filter: &EpisodeFilter,
) -> DbResult<HashMap<String, memory_core::EpisodeSummary>> {
    let mut sql = Sql::default();
    sql.push("SELECT ").push(SUMMARY_COLUMNS).cond(
        " FROM episodes e WHERE e.ns = ",
        text(ns),
        " AND e.id IN (",
    );
    for (i, (id, _)) in candidates.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(text(id));
    }
    sql.push(")");
    filter_sql(filter, &mut sql);
    let found = query_all(conn, &sql.text, sql.values, summary_from_row).await?;
    Ok(found.into_iter().map(|s| (s.id.to_string(), s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_fixed_length_hex_and_differ_by_namespace() {
        let a = prefix("acme/api");
        let b = prefix("acme/web");
        assert_eq!(a.len(), PREFIX_HEX);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(a, prefix("acme/api"));
    }

    #[test]
    fn rows_hold_prefixed_terms_and_their_count() {
        let v = row_values("Fix the Kerberos login", "t", "e1", "task").unwrap();
        let Value::Text(terms) = &v[0] else {
            panic!("terms")
        };
        let p = prefix("t");
        assert_eq!(terms, &format!("{p}fix {p}kerberos {p}login"));
        assert_eq!(v[1], Value::Integer(3));
        assert!(row_values("a the of", "t", "e1", "task").is_none());
    }

    #[test]
    fn long_terms_are_cut_alike_at_both_ends() {
        let long = "x".repeat(500);
        let v = row_values(&long, "t", "e1", "task").unwrap();
        let Value::Text(terms) = &v[0] else {
            panic!("terms")
        };
        assert_eq!(terms, &indexed(&prefix("t"), &long));
        assert_eq!(terms.len(), PREFIX_HEX + MAX_TERM_CHARS);
    }
}
