//! [`MaintenanceStore`] for [`TursoStorage`]: consolidation runs, metrics snapshots, estimate
//! records, restores (schema v3) and retention's step compaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use libsql::{Connection, Value};
use memory_core::{
    ConsolidationRun, EpisodeId, Error, EstimateRecord, FeedbackTarget, HeuristicId,
    MaintenanceStore, MetricsSnapshot, Namespace, ObjectKind, PatternId, RestoreRecord, Result,
    StepCompaction,
};
use tracing::instrument;

use crate::backend::TursoStorage;
use crate::codec::{Cols, from_json, from_nanos, nanos, nanos_clamped, text, to_json};
use crate::episodes::episode_state;
use crate::error::{DbResult, DriverError};
use crate::sql::{Sql, query_all, query_opt};
use crate::text_index;

async fn bodies<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    what: &'static str,
    sql: &str,
    params: Vec<Value>,
) -> DbResult<Vec<T>> {
    query_all(conn, sql, params, |row| {
        from_json(what, &Cols::new(row, what).text(0)?)
    })
    .await
}

fn limit(n: u32) -> Value {
    Value::Integer(i64::from(n))
}

/// Rebuilds the full-text rows of an episode's steps from the step rows (after their text
/// changed): one `steps` row with every step's text.
async fn reindex_steps(conn: &Connection, ns: &str, id: &str) -> DbResult<()> {
    text_index::delete(conn, ns, id, "steps").await?;
    let lines = query_all(
        conn,
        "SELECT tool, action, result_text FROM steps WHERE ns = ?1 AND episode_id = ?2 \
         ORDER BY step_number",
        vec![text(ns), text(id)],
        |row| {
            let c = Cols::new(row, "step");
            Ok(format!("{} {} {}", c.text(0)?, c.text(1)?, c.text(2)?))
        },
    )
    .await?;
    text_index::insert(conn, &lines.join("\n"), ns, id, "steps").await
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
                    Ok(vec![
                        text(ns.as_str()),
                        text(&run.id),
                        Value::Integer(nanos_clamped(run.started_at)),
                        Value::Text(to_json("consolidation_run", run)?),
                    ])
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
                let params = vec![
                    text(ns.as_str()),
                    text(&run.id),
                    Value::Integer(nanos_clamped(run.started_at)),
                    Value::Text(to_json("consolidation_run", run)?),
                    Value::Integer(nanos_clamped(not_before)),
                ];
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
        self.inner
            .call_read("list_consolidations", async |conn| {
                bodies(
                    conn,
                    "consolidation_run",
                    "SELECT body FROM consolidation_runs WHERE ns = ?1 \
                     ORDER BY started_at DESC, id DESC LIMIT ?2",
                    vec![text(ns.as_str()), limit(limit_n)],
                )
                .await
            })
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
                    Ok(vec![
                        text(ns.as_str()),
                        Value::Integer(nanos("snapshot.taken_at", snapshot.taken_at)?),
                        Value::Text(to_json("metrics_snapshot", snapshot)?),
                    ])
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
        self.inner
            .call_read("list_metrics_snapshots", async |conn| {
                bodies(
                    conn,
                    "metrics_snapshot",
                    "SELECT body FROM metrics_snapshots WHERE ns = ?1 \
                     ORDER BY taken_at DESC LIMIT ?2",
                    vec![text(ns.as_str()), limit(limit_n)],
                )
                .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %record.episode_id))]
    async fn put_estimate(&self, ns: &Namespace, record: &EstimateRecord) -> Result<()> {
        let inner = &*self.inner;
        let id = record.episode_id.to_string();
        inner
            .call("put_estimate", async {
                let completed = match &record.actual {
                    Some(a) => Value::Integer(nanos("estimate.completed_at", a.completed_at)?),
                    None => Value::Null,
                };
                let params = vec![
                    text(ns.as_str()),
                    text(&id),
                    text(&record.domain),
                    Value::Integer(nanos("estimate.recorded_at", record.recorded_at)?),
                    completed,
                    Value::Text(to_json("estimate", record)?),
                ];
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
        self.inner
            .call_read("get_estimate", async |conn| {
                Ok(bodies(
                    conn,
                    "estimate",
                    "SELECT body FROM estimates WHERE ns = ?1 AND episode_id = ?2",
                    vec![text(ns.as_str()), text(&episode_id.to_string())],
                )
                .await?
                .pop())
            })
            .await
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
            .cond(" LIMIT ", limit(limit_n), "");
        self.inner
            .call_read("query_estimates", async |conn| {
                bodies(conn, "estimate", &sql.text, sql.values).await
            })
            .await
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
                    Ok(vec![
                        text(ns.as_str()),
                        text(restore.target.kind()),
                        text(restore.target.id()),
                        Value::Integer(nanos("restore.restored_at", restore.restored_at)?),
                    ])
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
            .call_read("list_restores", async |conn| {
                query_all(
                    conn,
                    "SELECT target_kind, target_id, restored_at FROM learned_restores \
                     WHERE ns = ?1 AND restored_at >= ?2",
                    vec![text(ns.as_str()), Value::Integer(nanos_clamped(since))],
                    |row| {
                        let c = Cols::new(row, "learned_restore");
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
            })
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
                     AND EXISTS (SELECT 1 FROM steps s WHERE s.ns = e.ns \
                     AND s.episode_id = e.id AND s.status = 'success' \
                     AND s.result_text <> '') \
                     ORDER BY e.completed_at, e.id LIMIT ?3",
                    vec![
                        text(n),
                        Value::Integer(nanos_clamped(completed_before)),
                        limit(max_episodes),
                    ],
                    |row| Cols::new(row, "episode").episode_id(0),
                )
                .await?;
                let mut out = StepCompaction::default();
                for id in ids {
                    let sid = id.to_string();
                    let counts = query_opt(
                        tx,
                        "SELECT COUNT(*), COALESCE(SUM(length(CAST(result_text AS BLOB))), 0) \
                         FROM steps WHERE ns = ?1 AND episode_id = ?2 \
                         AND status = 'success' AND result_text <> ''",
                        vec![text(n), text(&sid)],
                        |row| {
                            let c = Cols::new(row, "step");
                            Ok((c.i64(0)?, c.i64(1)?))
                        },
                    )
                    .await?;
                    if let Some((steps, bytes)) = counts {
                        out.steps += u64::try_from(steps).unwrap_or(0);
                        out.bytes += u64::try_from(bytes).unwrap_or(0);
                    }
                    tx.execute(
                        "UPDATE steps SET result_text = '' WHERE ns = ?1 \
                         AND episode_id = ?2 AND status = 'success' AND result_text <> ''",
                        vec![text(n), text(&sid)],
                    )
                    .await?;
                    reindex_steps(tx, n, &sid).await?;
                    tx.execute(
                        "UPDATE episodes SET changed_seq = ?3 WHERE ns = ?1 AND id = ?2",
                        vec![text(n), text(&sid), Value::Integer(position)],
                    )
                    .await?;
                    out.episode_ids.push(id);
                }
                Ok(out)
            })
            .await
    }
}
