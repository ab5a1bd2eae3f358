//! [`EmbeddingStore`] of the in-memory backend: vectors, the index change log and index
//! snapshots.

use async_trait::async_trait;

use super::InMemoryStorage;
use crate::episode::EpisodeId;
use crate::error::{Error, ObjectKind, Result};
use crate::namespace::Namespace;
use crate::storage::{
    EmbeddingCoverage, EmbeddingStore, IndexChanges, IndexSnapshot, StoredEmbedding,
    check_index_snapshot_size,
};

#[async_trait]
impl EmbeddingStore for InMemoryStorage {
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        let mut data = self.lock();
        let d = data
            .get_mut(ns)
            .filter(|d| d.episodes.contains_key(&episode_id))
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, episode_id))?;
        d.embeddings
            .insert((episode_id, model.to_owned()), vector.to_vec());
        d.log_index_change(episode_id);
        Ok(())
    }

    async fn get_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        Ok(self.read(ns, |d| {
            d.embeddings.get(&(episode_id, model.to_owned())).cloned()
        }))
    }

    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>> {
        Ok(self.read(ns, |d| {
            d.episodes
                .keys()
                .filter(|id| after.is_none_or(|a| **id > a))
                .filter(|id| !d.embeddings.contains_key(&(**id, model.to_owned())))
                .take(limit as usize)
                .copied()
                .collect()
        }))
    }

    async fn scan_embeddings(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<StoredEmbedding>> {
        Ok(self.read(ns, |d| {
            let mut page: Vec<StoredEmbedding> = d
                .embeddings
                .iter()
                .filter(|((id, m), _)| m == model && after.is_none_or(|a| *id > a))
                .filter_map(|((id, _), v)| {
                    d.episodes.get(id).map(|e| StoredEmbedding {
                        summary: e.summary(),
                        vector: v.clone(),
                    })
                })
                .collect();
            page.sort_by_key(|s| s.summary.id);
            page.truncate(limit as usize);
            page
        }))
    }

    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage> {
        Ok(self.read(ns, |d| EmbeddingCoverage {
            episodes: d.episodes.len() as u64,
            embedded: d.embeddings.keys().filter(|(_, m)| m == model).count() as u64,
            last_episode: d.episodes.keys().next_back().copied(),
        }))
    }

    async fn index_log_head(&self, ns: &Namespace) -> Result<u64> {
        Ok(self.read(ns, |d| d.index_log.last().map_or(0, |(s, _)| *s)))
    }

    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges> {
        let data = self.lock();
        let Some(d) = data.get(ns) else {
            return Ok(IndexChanges {
                through: after,
                ..IndexChanges::default()
            });
        };
        let entries: Vec<&(u64, EpisodeId)> = d
            .index_log
            .iter()
            .filter(|(s, _)| *s > after)
            .take(limit as usize)
            .collect();
        let through = entries.last().map_or(after, |(s, _)| *s);
        let more = d.index_log.last().is_some_and(|(s, _)| *s > through);
        let mut ids: Vec<EpisodeId> = entries.iter().map(|(_, id)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut changes = IndexChanges {
            through,
            more,
            ..IndexChanges::default()
        };
        for id in ids {
            match (
                d.episodes.get(&id),
                d.embeddings.get(&(id, model.to_owned())),
            ) {
                (Some(e), Some(v)) => changes.upserts.push(StoredEmbedding {
                    summary: e.summary(),
                    vector: v.clone(),
                }),
                _ => changes.removed.push(id),
            }
        }
        Ok(changes)
    }

    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>> {
        Ok(self.read(ns, |d| d.index_snapshots.get(model).cloned()))
    }

    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()> {
        check_index_snapshot_size(snapshot.len())?;
        self.write(ns, |d| {
            d.index_snapshots.insert(model.to_owned(), snapshot.clone())
        });
        Ok(())
    }
}
