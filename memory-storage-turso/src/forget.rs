//! Forgetting episodes on libsql.
//!
//! One write transaction per erasure: each episode is checked to be as the caller read it,
//! then its tag, step page, full-text (the `text_rows` trigger removes the FTS5 entries and
//! corrects `text_stats`), embedding (the index log records it), feedback and estimate rows are
//! deleted, its evidence is taken out of the learned items ([`Inner::unlearn`]), the feedback of
//! the targets that remain is counted again, the episode row is stamped (so the change log
//! tells every cache) and deleted, and its audit record is written. Stored images of the
//! namespace's vector index are deleted (they hold the summaries).
//!
//! Then, on a local file, nothing of it stays in the files: every connection runs with
//! `secure_delete` on (freed space is zeroed), the full-text index is merged
//! (`optimize`: its segments would otherwise keep the deleted terms until a later merge), and
//! the WAL, which holds the pages as they were before, is checkpointed and truncated. Over a
//! server the server's files are the server's business (DEPLOYMENT.md).

use std::time::Duration;

use libsql::Value;
use memory_core::{Erasure, ErasureReport, Error, FeedbackTarget, ForgetEpisode, ForgetRecord};
use tracing::{debug, warn};

use crate::codec::{Cols, from_nanos, nanos, text};
use crate::connection::Inner;
use crate::error::DbResult;
use crate::prepared::Db;
use crate::sql::{query_all, query_opt};

/// Tries of the WAL's truncating checkpoint while readers of other processes hold it.
const TRUNCATE_TRIES: usize = 40;

/// The pause between two of those tries.
const TRUNCATE_PAUSE: Duration = Duration::from_millis(50);

/// The episode's stored step count and whether it is completed; `None` if it is not stored.
async fn stored_state(tx: &Db<'_>, ns: &str, id: &str) -> DbResult<Option<(u64, bool)>> {
    query_opt(
        tx,
        "SELECT step_count, completed_at IS NOT NULL FROM episodes WHERE ns = ?1 AND id = ?2",
        (ns, id),
        |row| {
            let c = Cols::new(row, "episode");
            Ok((u64::try_from(c.i64(0)?).unwrap_or(0), c.i64(1)? != 0))
        },
    )
    .await
}

/// Deletes the rows of `table` of the episode; how many.
async fn delete_rows(tx: &Db<'_>, table: &str, column: &str, ns: &str, id: &str) -> DbResult<u64> {
    let sql = format!("DELETE FROM {table} WHERE ns = ?1 AND {column} = ?2");
    tx.exec(&sql, (ns, id)).await
}

/// The targets of the feedback events given in the episode.
async fn feedback_targets(tx: &Db<'_>, ns: &str, id: &str) -> DbResult<Vec<FeedbackTarget>> {
    query_all(
        tx,
        "SELECT target_kind, target_id FROM feedback WHERE ns = ?1 AND episode_id = ?2",
        (ns, id),
        |row| {
            let c = Cols::new(row, "feedback");
            let (kind, target) = (c.text(0)?, c.text(1)?);
            Ok(match kind.as_str() {
                "heuristic" => FeedbackTarget::Heuristic(memory_core::HeuristicId(target)),
                _ => FeedbackTarget::Pattern(memory_core::PatternId(target)),
            })
        },
    )
    .await
}

/// Forgets one stored episode inside the erasure's transaction.
async fn forget_one(
    tx: &Db<'_>,
    ns: &str,
    f: &ForgetEpisode,
    steps: u64,
    position: i64,
    report: &mut ErasureReport,
) -> DbResult<()> {
    let id = f.episode_id.to_string();
    let rows = &mut report.rows;
    rows.steps += steps;
    rows.tags += delete_rows(tx, "episode_tags", "episode_id", ns, &id).await?;
    delete_rows(tx, "step_pages", "episode_id", ns, &id).await?;
    rows.text_rows += delete_rows(tx, "text_rows", "episode_id", ns, &id).await?;
    rows.embeddings += delete_rows(tx, "embeddings", "episode_id", ns, &id).await?;
    rows.estimates += delete_rows(tx, "estimates", "episode_id", ns, &id).await?;
    let targets = feedback_targets(tx, ns, &id).await?;
    rows.feedback_events += delete_rows(tx, "feedback", "episode_id", ns, &id).await?;
    if let Some(update) = &f.learning {
        let out = Inner::unlearn(tx, ns, update, position).await?;
        let (p, h, l) = &mut report.learned_changed;
        *p += out.changes.patterns.len() as u64;
        *h += out.changes.heuristics.len() as u64;
        *l += out.changes.lessons.len() as u64;
        let removed = &mut report.learned_removed;
        removed.patterns.extend(out.removed.patterns);
        removed.heuristics.extend(out.removed.heuristics);
        removed.lessons.extend(out.removed.lessons);
    }
    for target in &targets {
        Inner::refresh_feedback_of(tx, ns, target, position).await?;
    }
    // Stamped first, so the change log tells every cache it changed; then gone.
    tx.exec(
        "UPDATE episodes SET changed_seq = ?3 WHERE ns = ?1 AND id = ?2",
        (ns, id.as_str(), position),
    )
    .await?;
    report.rows.episodes += delete_rows(tx, "episodes", "id", ns, &id).await?;
    report.forgotten.push(f.episode_id);
    Ok(())
}

/// The erasure's transaction: every episode checked first (a refusal writes nothing), then
/// each forgotten, its audit record written, and the namespace's index images dropped.
pub(crate) async fn forget_in_tx(
    tx: &Db<'_>,
    ns: &str,
    erasure: &Erasure,
    position: i64,
) -> DbResult<ErasureReport> {
    let at = nanos("forgotten_at", erasure.at)?;
    let mut stored = Vec::with_capacity(erasure.episodes.len());
    let mut named = std::collections::HashSet::new();
    for f in &erasure.episodes {
        if !named.insert(f.episode_id) {
            // Named twice: forgotten (and unlearned) once.
            stored.push(None);
            continue;
        }
        let state = stored_state(tx, ns, &f.episode_id.to_string()).await?;
        if let Some((steps, completed)) = state
            && (steps != f.expected_steps || (completed && f.learning.is_none()))
        {
            return Err(Error::steps_changed(f.episode_id, f.expected_steps, steps).into());
        }
        stored.push(state.map(|(steps, _)| steps));
    }
    let mut report = ErasureReport::default();
    for (f, state) in erasure.episodes.iter().zip(stored) {
        let Some(steps) = state else {
            if !report.forgotten.contains(&f.episode_id) {
                report.missing.push(f.episode_id);
            }
            continue;
        };
        forget_one(tx, ns, f, steps, position, &mut report).await?;
        tx.exec(
            "INSERT INTO forgotten_episodes (ns, episode_id, forgotten_at, reason) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (ns, episode_id) DO NOTHING",
            vec![
                text(ns),
                Value::Text(f.episode_id.to_string()),
                Value::Integer(at),
                text(&erasure.reason),
            ],
        )
        .await?;
    }
    if !report.forgotten.is_empty() {
        tx.exec("DELETE FROM index_snapshot_parts WHERE ns = ?1", [ns])
            .await?;
        report.rows.index_snapshots = tx
            .exec("DELETE FROM index_snapshots WHERE ns = ?1", [ns])
            .await?;
    }
    Ok(report)
}

/// The tables a purge empties of the namespace's rows, in an order the foreign keys allow.
const PURGED_TABLES: [&str; 11] = [
    "feedback",
    "patterns",
    "heuristics",
    "lessons",
    "consolidation_runs",
    "metrics_snapshots",
    "estimates",
    "learned_restores",
    "index_snapshot_parts",
    "index_snapshots",
    "text_stats",
];

/// The purge's transaction: refused while the namespace holds an episode; else the learned
/// items are stamped (so the change log tells every cache) and every row of
/// [`PURGED_TABLES`] of the namespace deleted. The audit records stay.
pub(crate) async fn purge_in_tx(
    tx: &Db<'_>,
    ns: &str,
    position: i64,
) -> DbResult<std::collections::BTreeMap<String, u64>> {
    let held = query_opt(
        tx,
        "SELECT id FROM episodes WHERE ns = ?1 LIMIT 1",
        [ns],
        |row| Cols::new(row, "episode").text(0),
    );
    if let Some(id) = held.await? {
        return Err(Error::Conflict {
            kind: memory_core::ObjectKind::Episode,
            id,
            reason: "the namespace still holds episodes: forget them first".into(),
        }
        .into());
    }
    for table in ["patterns", "heuristics"] {
        let stamp = format!("UPDATE {table} SET changed_seq = ?2 WHERE ns = ?1");
        tx.exec(&stamp, (ns, position)).await?;
    }
    let mut out = std::collections::BTreeMap::new();
    for table in PURGED_TABLES {
        let n = tx
            .exec(&format!("DELETE FROM {table} WHERE ns = ?1"), [ns])
            .await?;
        out.insert(table.to_owned(), n);
    }
    Ok(out)
}

/// Whether `ns` forgot the episode `id` (the schema has the table from v13).
pub(crate) async fn was_forgotten(conn: &Db<'_>, ns: &str, id: &str) -> DbResult<bool> {
    let found = query_opt(
        conn,
        "SELECT 1 FROM forgotten_episodes WHERE ns = ?1 AND episode_id = ?2",
        (ns, id),
        |_| Ok(()),
    );
    Ok(found.await?.is_some())
}

/// The audit records of `ns`, newest first.
pub(crate) async fn forget_records(
    conn: &Db<'_>,
    ns: &str,
    limit: u32,
) -> DbResult<Vec<ForgetRecord>> {
    query_all(
        conn,
        "SELECT episode_id, forgotten_at, reason FROM forgotten_episodes WHERE ns = ?1 \
         ORDER BY forgotten_at DESC, episode_id DESC LIMIT ?2",
        (ns, i64::from(limit)),
        |row| {
            let c = Cols::new(row, "forgotten episode");
            Ok(ForgetRecord {
                episode_id: c.episode_id(0)?,
                at: from_nanos(c.i64(1)?),
                reason: c.text(2)?,
            })
        },
    )
    .await
}

impl Inner {
    /// After an erasure on a local file: the full-text index merged (its segments drop the
    /// deleted entries) and the WAL checkpointed and truncated (it holds the pages as they
    /// were before). Returns whether the WAL was emptied: readers of other processes can hold
    /// it for a while, and then its frames are overwritten by later commits instead.
    pub(crate) async fn scrub(&self) -> DbResult<bool> {
        self.write_tx(async |tx| {
            tx.exec(
                "INSERT INTO episode_terms (episode_terms) VALUES ('optimize')",
                (),
            )
            .await?;
            Ok(())
        })
        .await?;
        for _ in 0..TRUNCATE_TRIES {
            let conn = self.writer().await?;
            let mut rows = conn.query("PRAGMA wal_checkpoint(TRUNCATE)", ()).await?;
            let busy = match rows.next().await? {
                Some(row) => row.get::<i64>(0)? != 0,
                None => false,
            };
            drop(rows);
            drop(conn);
            if !busy {
                debug!("wal truncated after an erasure");
                return Ok(true);
            }
            tokio::time::sleep(TRUNCATE_PAUSE).await;
        }
        warn!("the wal could not be truncated after an erasure: another process kept reading");
        Ok(false)
    }
}
