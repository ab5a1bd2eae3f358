//! Embeddings, the index change log and index snapshots on libsql.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use memory_core::{
    EmbeddingCoverage, EmbeddingStore, EpisodeId, Error, IndexChanges, IndexSnapshot, Namespace,
    ObjectKind, Result, StoredEmbedding, check_index_snapshot_size,
};
use tracing::instrument;

use crate::backend::TursoStorage;
use crate::codec::{
    Cols, SUMMARY_COLUMNS, blob_to_vector, nanos_clamped, summary_from_row, vector_to_blob,
};
use crate::connection::Inner;
use crate::error::{DbResult, DriverError, decode};
use crate::sql::{query_all, query_one, query_opt};

#[async_trait]
impl EmbeddingStore for TursoStorage {
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id, model, dims = vector.len()))]
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        self.inner
            .call_write("put_embedding", async |conn| {
                // One statement: stored only if the episode exists, replacing an earlier vector.
                let changed = conn
                    .exec(
                        "INSERT INTO embeddings (ns, episode_id, model, dims, vector, created_at) \
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
                         WHERE EXISTS (SELECT 1 FROM episodes WHERE ns = ?1 AND id = ?2) \
                         ON CONFLICT (ns, episode_id, model) DO UPDATE SET dims = excluded.dims, \
                         vector = excluded.vector, created_at = excluded.created_at",
                        (
                            ns.as_str(),
                            episode_id.to_string(),
                            model,
                            vector.len() as i64,
                            vector_to_blob(vector),
                            nanos_clamped(Utc::now()),
                        ),
                    )
                    .await?;
                if changed == 0 {
                    return Err(Error::not_found(ObjectKind::Episode, episode_id).into());
                }
                Ok(())
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id, model))]
    async fn get_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        self.inner
            .call_read("get_embedding", async |conn| {
                query_opt(
                    conn,
                    "SELECT vector FROM embeddings WHERE ns = ?1 AND episode_id = ?2 AND model = ?3",
                    (ns.as_str(), episode_id.to_string(), model),
                    |row| blob_to_vector(&Cols::new(row, "embedding").blob(0)?),
                )
                .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, limit))]
    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>> {
        // '' sorts before every id.
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.inner
            .call_rows(
                "episodes_missing_embedding",
                "episode",
                "SELECT e.id FROM episodes e WHERE e.ns = ?1 AND e.id > ?4 AND NOT EXISTS \
                 (SELECT 1 FROM embeddings m \
                  WHERE m.ns = e.ns AND m.episode_id = e.id AND m.model = ?2) \
                 ORDER BY e.id LIMIT ?3",
                (ns.as_str(), model, limit, after),
                |c| c.episode_id(0),
            )
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, limit))]
    async fn scan_embeddings(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<StoredEmbedding>> {
        // Keyset paging on the embeddings primary key; '' sorts before every id.
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, m.vector FROM embeddings m \
             JOIN episodes e ON e.ns = m.ns AND e.id = m.episode_id \
             WHERE m.ns = ?1 AND m.model = ?2 AND m.episode_id > ?3 \
             ORDER BY m.episode_id LIMIT ?4"
        );
        let params = (ns.as_str(), model, after, limit);
        self.inner
            .call_query("scan_embeddings", &sql, params, stored_embedding)
            .await
    }

    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage> {
        self.inner
            .call_read("embedding_coverage", async |conn| {
                // Two index counts and an index max: no probe per episode.
                query_one(
                    conn,
                    "embedding coverage",
                    "SELECT \
                     (SELECT COUNT(*) FROM episodes WHERE ns = ?1), \
                     (SELECT COUNT(*) FROM embeddings WHERE ns = ?1 AND model = ?2), \
                     (SELECT MAX(id) FROM episodes WHERE ns = ?1)",
                    (ns.as_str(), model),
                    |c| {
                        let last_episode = match c.opt_text(2)? {
                            Some(_) => Some(c.episode_id(2)?),
                            None => None,
                        };
                        Ok(EmbeddingCoverage {
                            episodes: c.i64(0)? as u64,
                            embedded: c.i64(1)? as u64,
                            last_episode,
                        })
                    },
                )
                .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns))]
    async fn index_log_head(&self, ns: &Namespace) -> Result<u64> {
        self.inner
            .call_read("index_log_head", async |conn| {
                query_one(
                    conn,
                    "index log head",
                    "SELECT COALESCE(MAX(seq), 0) FROM index_changes WHERE ns = ?1",
                    [ns.as_str()],
                    |c| Ok(c.i64(0)?.max(0) as u64),
                )
                .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, after, limit))]
    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges> {
        let after_i = i64::try_from(after).unwrap_or(i64::MAX);
        let rows_sql = format!(
            "SELECT {SUMMARY_COLUMNS}, m.vector FROM embeddings m \
             JOIN episodes e ON e.ns = m.ns AND e.id = m.episode_id \
             WHERE m.ns = ?1 AND m.model = ?2 AND m.episode_id IN \
             (SELECT episode_id FROM index_changes WHERE ns = ?1 AND seq > ?3 AND seq <= ?4)"
        );
        self.inner
            .call_read("index_changes", async |conn| {
                // The log page first, then the rows it names: a row read after its log
                // entry is at least that new, and anything changed later has a later
                // entry, read next time.
                let log = query_all(
                    conn,
                    "SELECT seq, episode_id FROM index_changes \
                     WHERE ns = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    (ns.as_str(), after_i, limit),
                    |row| {
                        let c = Cols::new(row, "index change");
                        Ok((c.i64(0)?, c.episode_id(1)?))
                    },
                )
                .await?;
                let through = log.last().map_or(after_i, |e| e.0);
                let entries = log.len();
                let mut ids: std::collections::BTreeSet<_> = log.into_iter().map(|e| e.1).collect();
                // A full page may have more after it (at worst the next page is
                // empty); a short one is the end: no second query on every search.
                let mut changes = IndexChanges {
                    through: through.max(0) as u64,
                    more: limit > 0 && entries == limit as usize,
                    ..IndexChanges::default()
                };
                if ids.is_empty() {
                    return Ok(changes);
                }
                let params = (ns.as_str(), model, after_i, through);
                changes.upserts = query_all(conn, &rows_sql, params, stored_embedding).await?;
                for e in &changes.upserts {
                    ids.remove(&e.summary.id);
                }
                changes.upserts.sort_by_key(|e| e.summary.id);
                changes.removed = ids.into_iter().collect();
                Ok(changes)
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model))]
    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>> {
        let inner = &*self.inner;
        inner
            .call("get_index_snapshot", async {
                let header = inner
                    .read(async |conn| {
                        query_opt(
                            conn,
                            "SELECT as_of, written_at, parts, bytes FROM index_snapshots \
                             WHERE ns = ?1 AND model = ?2",
                            (ns.as_str(), model),
                            |row| {
                                let c = Cols::new(row, "index snapshot");
                                Ok((c.i64(0)?, c.i64(1)?, c.i64(2)?, c.i64(3)?))
                            },
                        )
                        .await
                    })
                    .await?;
                let Some((as_of, written_at, parts, bytes)) = header else {
                    return Ok(None);
                };
                // The parts in two halves, on two reader connections at once (a 100k-episode
                // image is ~65 MB, and SQLite reads a blob at about 600 MB/s on one core).
                // (The local driver works on the calling thread, so the second half runs
                // as a task of its own.)
                let half = parts / 2;
                let second = {
                    let (inner, ns, model) =
                        (Arc::clone(&self.inner), ns.clone(), model.to_owned());
                    tokio::spawn(async move {
                        read_snapshot_parts(&inner, &ns, &model, half, parts).await
                    })
                };
                let first = read_snapshot_parts(inner, ns, model, 0, half).await;
                let second = second.await.map_err(|e| {
                    DriverError::Schema(format!("index snapshot reader stopped: {e}"))
                })?;
                let mut data = Vec::with_capacity(usize::try_from(parts).unwrap_or(0));
                let mut expected = 0;
                let mut total = 0i64;
                for (part, tag, chunk) in first?.into_iter().chain(second?) {
                    if part != expected || tag != written_at {
                        // Rewritten between the reads: no consistent image to offer.
                        return Err(DriverError::Schema(
                            "index snapshot replaced while it was read".into(),
                        )
                        .into());
                    }
                    total += chunk.len() as i64;
                    data.push(chunk);
                    expected += 1;
                }
                if expected != parts || total != bytes {
                    return Err(decode("index snapshot", "parts missing"));
                }
                // Handed over in parts: the decoder reads across them without a join.
                Ok(Some(IndexSnapshot {
                    as_of: as_of.max(0) as u64,
                    parts: data,
                }))
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, bytes = snapshot.len()))]
    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()> {
        check_index_snapshot_size(snapshot.len())?;
        let pieces = snapshot.pieces(SNAPSHOT_PART_BYTES);
        let written_at = nanos_clamped(Utc::now());
        self.inner
            .call_write("put_index_snapshot", async |tx| {
                tx.exec(
                    "DELETE FROM index_snapshot_parts WHERE ns = ?1 AND model = ?2",
                    (ns.as_str(), model),
                )
                .await?;
                let parts = pieces.len() as i64;
                for (i, chunk) in pieces.iter().enumerate() {
                    tx.exec(
                        "INSERT INTO index_snapshot_parts \
                         (ns, model, part, written_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                        (ns.as_str(), model, i as i64, written_at, chunk.clone()),
                    )
                    .await?;
                }
                tx.exec(
                    "INSERT INTO index_snapshots \
                     (ns, model, as_of, written_at, parts, bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (ns, model) DO UPDATE SET as_of = excluded.as_of, \
                     written_at = excluded.written_at, parts = excluded.parts, \
                     bytes = excluded.bytes",
                    (
                        ns.as_str(),
                        model,
                        i64::try_from(snapshot.as_of).unwrap_or(i64::MAX),
                        written_at,
                        parts,
                        snapshot.len() as i64,
                    ),
                )
                .await?;
                Ok(())
            })
            .await
    }
}

/// The largest part an index snapshot is stored in: small enough for one statement of an
/// embedded replica's write delegation (gRPC refuses messages over 4 MB).
const SNAPSHOT_PART_BYTES: usize = 1024 * 1024;

/// Parts `from..to` of a stored index snapshot: `(part, written_at, bytes)`, in part order.
async fn read_snapshot_parts(
    inner: &Inner,
    ns: &Namespace,
    model: &str,
    from: i64,
    to: i64,
) -> DbResult<Vec<(i64, i64, Vec<u8>)>> {
    if from >= to {
        return Ok(Vec::new());
    }
    inner
        .read(async |conn| {
            query_all(
                conn,
                "SELECT part, written_at, data FROM index_snapshot_parts \
                 WHERE ns = ?1 AND model = ?2 AND part >= ?3 AND part < ?4 ORDER BY part",
                (ns.as_str(), model, from, to),
                |row| {
                    let c = Cols::new(row, "index snapshot part");
                    Ok((c.i64(0)?, c.i64(1)?, c.blob(2)?))
                },
            )
            .await
        })
        .await
}

/// An embedding with its episode's summary, from a row of [`SUMMARY_COLUMNS`] and the vector.
fn stored_embedding(row: &libsql::Row) -> DbResult<StoredEmbedding> {
    let vector = Cols::new(row, "embedding").blob(13)?;
    Ok(StoredEmbedding {
        summary: summary_from_row(row)?,
        vector: blob_to_vector(&vector)?,
    })
}
