//! [`MaintenanceStore`] for [`TursoStorage`]: consolidation runs, metrics snapshots, estimate
//! records, restores (schema v3) and retention's step compaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use libsql::Value;
use libsql::params::IntoParams;
use memory_core::{
    ConsolidationRun, EpisodeId, Error, EstimateRecord, FeedbackTarget, HeuristicId,
    MaintenanceStore, MetricsSnapshot, Namespace, ObjectKind, PatternId, RestoreRecord, Result,
    StepCompaction, indexed_work_text,
};
use tracing::instrument;

use crate::backend::TursoStorage;
use crate::codec::{Cols, from_json, from_nanos, nanos, nanos_clamped, text, to_json};
use crate::episode_rows::episode_state;
use crate::error::{DbResult, DriverError};
use crate::prepared::Db;
use crate::sql::{Sql, query_all};
use crate::step_pages;
use crate::text_index::{self, WORK_PART};

impl TursoStorage {
    /// The JSON bodies (column 0) of the rows `sql` returns, as `what`.
    async fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        sql: &str,
        params: impl IntoParams,
    ) -> Result<Vec<T>> {
        self.inner
            .call_rows(what, what, sql, params, |c| from_json(what, &c.text(0)?))
            .await
    }
}

/// After the outputs of a completed episode's steps were cleared: an episode stored before
/// step outputs left the full-text index still has its `steps` rows (every step's output
/// among them), which are replaced by its work row, built from the pages as they are now.
/// An episode stored since has nothing to change: its work row holds no output.
async fn reindex_steps(conn: &Db<'_>, ns: &str, id: &str) -> DbResult<()> {
    if text_index::delete(conn, ns, id, "steps").await? == 0 {
        return Ok(());
    }
    let steps = step_pages::read_steps(conn, ns, id).await?;
    text_index::delete(conn, ns, id, WORK_PART).await?;
    text_index::insert(conn, &indexed_work_text(&steps), ns, id, WORK_PART).await
}

#[async_trait]
impl MaintenanceStore for TursoStorage {
    #[instrument(skip_all, fields(namespace = %ns, run_id = %run.id))]
    async fn record_consolidation(&self, ns: &Namespace, run: &ConsolidationRun) -> Result<()> {
        self.inner
            .call_execute(
                "record_consolidation",
                "INSERT INTO consolidation_runs (ns, id, started_at, body) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (ns, id) DO UPDATE SET \
                 started_at = excluded.started_at, body = excluded.body",
                || {
                    let body = to_json("consolidation_run", run)?;
                    Ok((
                        ns.as_str(),
                        run.id.as_str(),
                        nanos_clamped(run.started_at),
                        body,
                    ))
                },
            )
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, run_id = %run.id))]
    async fn claim_consolidation(
        &self,
        ns: &Namespace,
        run: &ConsolidationRun,
        not_before: DateTime<Utc>,
    ) -> Result<bool> {
        // One statement in a write transaction: the check and the insert see the same state.
        self.inner
            .call_write("claim_consolidation", async |tx| {
                let params = (
                    ns.as_str(),
                    run.id.as_str(),
                    nanos_clamped(run.started_at),
                    to_json("consolidation_run", run)?,
                    nanos_clamped(not_before),
                );
                let n = tx
                    .execute(
                        "INSERT INTO consolidation_runs (ns, id, started_at, body) \
                         SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM consolidation_runs \
                         WHERE ns = ?1 AND started_at > ?5)",
                        params,
                    )
                    .await?;
                Ok(n == 1)
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, limit = limit_n))]
    async fn list_consolidations(
        &self,
        ns: &Namespace,
        limit_n: u32,
    ) -> Result<Vec<ConsolidationRun>> {
        self.bodies(
            "consolidation_run",
            "SELECT body FROM consolidation_runs WHERE ns = ?1 \
             ORDER BY started_at DESC, id DESC LIMIT ?2",
            (ns.as_str(), limit_n),
        )
        .await
    }

    #[instrument(skip_all, fields(namespace = %ns))]
    async fn put_metrics_snapshot(&self, ns: &Namespace, snapshot: &MetricsSnapshot) -> Result<()> {
        self.inner
            .call_execute(
                "put_metrics_snapshot",
                "INSERT INTO metrics_snapshots (ns, taken_at, body) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (ns, taken_at) DO UPDATE SET body = excluded.body",
                || {
                    let taken_at = nanos("snapshot.taken_at", snapshot.taken_at)?;
                    Ok((
                        ns.as_str(),
                        taken_at,
                        to_json("metrics_snapshot", snapshot)?,
                    ))
                },
            )
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, limit = limit_n))]
    async fn list_metrics_snapshots(
        &self,
        ns: &Namespace,
        limit_n: u32,
    ) -> Result<Vec<MetricsSnapshot>> {
        self.bodies(
            "metrics_snapshot",
            "SELECT body FROM metrics_snapshots WHERE ns = ?1 ORDER BY taken_at DESC LIMIT ?2",
            (ns.as_str(), limit_n),
        )
        .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %record.episode_id))]
    async fn put_estimate(&self, ns: &Namespace, record: &EstimateRecord) -> Result<()> {
        let inner = &*self.inner;
        let id = record.episode_id.to_string();
        inner
            .call("put_estimate", async {
                let completed = record.actual.as_ref();
                let completed = completed
                    .map(|a| nanos("estimate.completed_at", a.completed_at))
                    .transpose()?;
                let params = (
                    ns.as_str(),
                    id.as_str(),
                    record.domain.as_str(),
                    nanos("estimate.recorded_at", record.recorded_at)?,
                    completed.map_or(Value::Null, Value::Integer),
                    to_json("estimate", record)?,
                );
                inner
                    .write_tx(async |tx| {
                        if episode_state(tx, ns.as_str(), &id).await?.is_none() {
                            return Err(
                                Error::not_found(ObjectKind::Episode, record.episode_id).into()
                            );
                        }
                        tx.execute(
                            "INSERT INTO estimates (ns, episode_id, domain, recorded_at, \
                             completed_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                             ON CONFLICT (ns, episode_id) DO UPDATE SET domain = excluded.domain, \
                             recorded_at = excluded.recorded_at, \
                             completed_at = excluded.completed_at, body = excluded.body",
                            params,
                        )
                        .await?;
                        Ok(())
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id))]
    async fn get_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>> {
        let sql = "SELECT body FROM estimates WHERE ns = ?1 AND episode_id = ?2";
        let params = (ns.as_str(), episode_id.to_string());
        Ok(self.bodies("estimate", sql, params).await?.pop())
    }

    #[instrument(skip_all, fields(namespace = %ns, domain, limit = limit_n))]
    async fn query_estimates(
        &self,
        ns: &Namespace,
        domain: Option<&str>,
        limit_n: u32,
    ) -> Result<Vec<EstimateRecord>> {
        let mut sql = Sql::default();
        sql.cond(
            "SELECT body FROM estimates WHERE ns = ",
            text(ns.as_str()),
            "",
        );
        if let Some(d) = domain {
            sql.cond(" AND domain = ", text(d), "");
        }
        sql.push(" AND completed_at IS NOT NULL ORDER BY completed_at DESC, episode_id DESC")
            .cond(" LIMIT ", Value::from(limit_n), "");
        self.bodies("estimate", &sql.text, sql.values).await
    }

    #[instrument(skip_all, fields(namespace = %ns, id = restore.target.id()))]
    async fn record_restore(&self, ns: &Namespace, restore: &RestoreRecord) -> Result<()> {
        self.inner
            .call_execute(
                "record_restore",
                "INSERT INTO learned_restores (ns, target_kind, target_id, restored_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (ns, target_kind, target_id) \
                 DO UPDATE SET restored_at = excluded.restored_at",
                || {
                    let at = nanos("restore.restored_at", restore.restored_at)?;
                    Ok((ns.as_str(), restore.target.kind(), restore.target.id(), at))
                },
            )
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns))]
    async fn list_restores(
        &self,
        ns: &Namespace,
        since: DateTime<Utc>,
    ) -> Result<Vec<RestoreRecord>> {
        self.inner
            .call_rows(
                "list_restores",
                "learned_restore",
                "SELECT target_kind, target_id, restored_at FROM learned_restores \
                 WHERE ns = ?1 AND restored_at >= ?2",
                (ns.as_str(), nanos_clamped(since)),
                |c| {
                    let id = c.text(1)?;
                    let target = match c.text(0)?.as_str() {
                        "pattern" => FeedbackTarget::Pattern(PatternId(id)),
                        "heuristic" => FeedbackTarget::Heuristic(HeuristicId(id)),
                        other => {
                            return Err(DriverError::Schema(format!(
                                "learned_restores: unknown target kind {other:?}"
                            ))
                            .into());
                        }
                    };
                    Ok(RestoreRecord {
                        target,
                        restored_at: from_nanos(c.i64(2)?),
                    })
                },
            )
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, max_episodes))]
    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction> {
        self.inner
            .call_write_stamped("compact_step_outputs", async |tx, position| {
                let n = ns.as_str();
                let ids = query_all(
                    tx,
                    "SELECT e.id FROM episodes e WHERE e.ns = ?1 \
                     AND e.outcome_kind = 'success' AND e.completed_at < ?2 \
                     AND EXISTS (SELECT 1 FROM step_pages p WHERE p.ns = e.ns \
                     AND p.episode_id = e.id AND p.output_bytes > 0) \
                     ORDER BY e.completed_at, e.id LIMIT ?3",
                    (n, nanos_clamped(completed_before), max_episodes),
                    |row| Cols::new(row, "episode").episode_id(0),
                )
                .await?;
                let mut out = StepCompaction::default();
                for id in ids {
                    let sid = id.to_string();
                    let pages = query_all(
                        tx,
                        "SELECT first_number, keys, body FROM step_pages WHERE ns = ?1 \
                         AND episode_id = ?2 AND output_bytes > 0",
                        (n, sid.as_str()),
                        |row| step_pages::page_row(&Cols::new(row, "step page")),
                    )
                    .await?;
                    let format = self.inner.json_format();
                    for (first, keys, body) in pages {
                        let (body, steps, bytes) =
                            step_pages::cleared(first, &keys, &body, format)?;
                        out.steps += steps;
                        out.bytes += bytes;
                        tx.exec(
                            "UPDATE step_pages SET body = ?4, output_bytes = 0 \
                             WHERE ns = ?1 AND episode_id = ?2 AND first_number = ?3",
                            (n, sid.as_str(), first, body),
                        )
                        .await?;
                    }
                    reindex_steps(tx, n, &sid).await?;
                    tx.execute(
                        "UPDATE episodes SET changed_seq = ?3 WHERE ns = ?1 AND id = ?2",
                        (n, sid.as_str(), position),
                    )
                    .await?;
                    out.episode_ids.push(id);
                }
                Ok(out)
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, ids = ids.len()))]
    async fn compact_merged_patterns(&self, ns: &Namespace, ids: &[PatternId]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.inner
            .call_write("compact_merged_patterns", async |tx| {
                let mut removed = 0;
                for id in ids {
                    removed += tx
                        .exec(
                            "DELETE FROM patterns WHERE ns = ?1 AND id = ?2 \
                             AND status = 'merged' AND occurrences = 0 \
                             AND NOT EXISTS (SELECT 1 FROM feedback WHERE ns = ?1 \
                             AND target_kind = 'pattern' AND target_id = ?2)",
                            (ns.as_str(), id.0.as_str()),
                        )
                        .await?;
                }
                Ok(removed)
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, rows = rows.len()))]
    async fn compact_pruned_patterns(
        &self,
        ns: &Namespace,
        rows: &[(PatternId, DateTime<Utc>)],
    ) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        self.inner
            .call_write("compact_pruned_patterns", async |tx| {
                let mut removed = 0;
                for (id, pruned_at) in rows {
                    removed += tx
                        .exec(
                            "DELETE FROM patterns WHERE ns = ?1 AND id = ?2 \
                             AND status = 'pruned' AND last_seen <= ?3 \
                             AND NOT EXISTS (SELECT 1 FROM feedback WHERE ns = ?1 \
                             AND target_kind = 'pattern' AND target_id = ?2)",
                            (ns.as_str(), id.0.as_str(), nanos_clamped(*pruned_at)),
                        )
                        .await?;
                }
                Ok(removed)
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns))]
    async fn purge_namespace(
        &self,
        ns: &Namespace,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        let inner = &*self.inner;
        let local = matches!(inner.config.mode(), crate::config::TursoMode::Local { .. });
        inner
            .call("purge_namespace", async {
                let rows = inner
                    .write_tx_stamped_unowned(async |tx, position| {
                        crate::forget::purge_in_tx(tx, ns.as_str(), position).await
                    })
                    .await?;
                if local {
                    inner.scrub().await?;
                }
                Ok(rows)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use memory_core::{
        Episode, EpisodeFilter, EpisodeStore, ExecutionStep, NewEpisode, Outcome, StepInput,
        StorageExt, TaskContext, TaskType, TextQuery,
    };

    use super::*;
    use crate::MEMORY_PATH;

    async fn found(s: &TursoStorage, ns: &Namespace, words: &str) -> Vec<EpisodeId> {
        let q = TextQuery {
            text: words.into(),
            filter: EpisodeFilter::default(),
            limit: 10,
        };
        let hits = s.search_episodes(ns, &q).await.unwrap();
        hits.into_iter().map(|h| h.episode_id).collect()
    }

    async fn parts(s: &TursoStorage, part: &str) -> i64 {
        let conn = s.inner.writer.lock().await;
        let sql = "SELECT count(*) FROM text_rows WHERE part = ?1";
        let mut rows = conn.query(sql, [part]).await.unwrap();
        rows.next().await.unwrap().unwrap().get(0).unwrap()
    }

    /// A store from before 11-27 holds each step batch's tools, actions and outputs as a
    /// `steps` row. Clearing an old success's outputs replaces that row with the work row
    /// (tools, actions, errors), so the cleared outputs stop matching and the rest still does.
    #[tokio::test]
    async fn clearing_outputs_replaces_an_old_steps_row_with_the_work_row() {
        let s = TursoStorage::open_local(MEMORY_PATH).await.unwrap();
        let ns = Namespace::default();
        let at = Utc::now() - Duration::days(30);
        let task = NewEpisode::new(
            "restore the mural",
            TaskType::Other,
            TaskContext::new("art"),
        );
        let mut e = Episode::start(task, at);
        for (n, input) in [
            StepInput::ok("loom_tool", "weave the tapestry", "marzipan printed"),
            StepInput::error("kiln_tool", "fire the kiln", "glaze cracked at cone six"),
        ]
        .into_iter()
        .enumerate()
        {
            e.steps.push(ExecutionStep {
                step_number: n as u32 + 1,
                key: ExecutionStep::new_key(),
                timestamp: at,
                input,
            });
        }
        e.outcome = Some(Outcome::success("restored"));
        e.completed_at = Some(at + Duration::minutes(5));
        s.create_episode(&ns, &e).await.unwrap();
        assert_eq!(found(&s, &ns, "tapestry glaze").await, [e.id]);
        assert!(
            found(&s, &ns, "marzipan").await.is_empty(),
            "outputs unindexed"
        );

        let (n, id) = (ns.as_str(), e.id.to_string());
        {
            // The episode as a build before 11-27 indexed it.
            let conn = s.inner.writer.lock().await;
            let db = Db::plain(&conn);
            text_index::delete(&db, n, &id, WORK_PART).await.unwrap();
            let old = "loom_tool weave the tapestry marzipan printed\n\
                       kiln_tool fire the kiln glaze cracked at cone six";
            text_index::insert(&db, old, n, &id, "steps").await.unwrap();
        }
        assert_eq!(found(&s, &ns, "marzipan").await, [e.id]);

        let done = s.compact_step_outputs(&ns, Utc::now(), 10).await.unwrap();
        assert_eq!(done.episode_ids, [e.id]);
        assert!(
            found(&s, &ns, "marzipan").await.is_empty(),
            "cleared output"
        );
        assert_eq!(found(&s, &ns, "tapestry").await, [e.id], "actions stay");
        assert_eq!(found(&s, &ns, "glaze").await, [e.id], "errors stay");
        assert_eq!(
            (parts(&s, "steps").await, parts(&s, WORK_PART).await),
            (0, 1)
        );
    }
}
