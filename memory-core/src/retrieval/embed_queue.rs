//! The embedding queue: the episodes with no vector under the key, derived from the data (so it
//! survives restarts), drained in batches off the write path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::indexes::Indexes;
use super::query::RetrievalConfig;
use super::texts::{embed_all, embedding_text, step_windows, work_text};
use crate::embedding::{Embedder, l2_normalize};
use crate::episode::{EpisodeId, EpisodeSummary};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::storage::{Storage, StoredEmbedding};

type Drained = Arc<Mutex<HashMap<Namespace, Option<EpisodeId>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Embeds the episodes of each namespace that have no vector under the key yet.
#[derive(Debug)]
pub(crate) struct EmbedQueue {
    storage: Arc<dyn Storage>,
    embedder: Arc<dyn Embedder>,
    /// The key the vectors are stored under (model and text recipe).
    key: String,
    config: RetrievalConfig,
    /// One drain at a time: a second caller (the background task and an explicit
    /// `embed_pending`) waits and then finds the work done instead of repeating it.
    draining: tokio::sync::Mutex<()>,
    /// Per namespace drained in this process, the last episode id a drain reached (`None`:
    /// the queue was empty from the start).
    drained_up_to: Drained,
    /// Namespaces whose embedding coverage this process has read once (by the first drain
    /// or beside the first load, whichever comes first: the other waits and reuses it).
    coverage_probed: Arc<tokio::sync::Mutex<HashSet<Namespace>>>,
    /// Episodes that completed in this process since the last drain, per namespace: the next
    /// drain embeds each first (again, if a drain embedded it while it ran: its work text
    /// was partial).
    stale: Mutex<HashMap<Namespace, HashSet<EpisodeId>>>,
}

/// Reads once per process whether every episode of `ns` has a vector under `key` (two
/// counts) and, when so, records the newest episode in `drained`: a drain then starts after
/// it, and lexical candidates may come from the in-process index.
async fn probe_coverage(
    storage: &dyn Storage,
    drained: &Mutex<HashMap<Namespace, Option<EpisodeId>>>,
    probed: &tokio::sync::Mutex<HashSet<Namespace>>,
    ns: &Namespace,
    key: &str,
) -> Result<()> {
    let mut probed = probed.lock().await;
    if probed.contains(ns) || lock(drained).contains_key(ns) {
        return Ok(());
    }
    let coverage = storage.embedding_coverage(ns, key).await?;
    if coverage.complete() {
        lock(drained)
            .entry(ns.clone())
            .or_insert(coverage.last_episode);
    }
    probed.insert(ns.clone());
    Ok(())
}

impl EmbedQueue {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        embedder: Arc<dyn Embedder>,
        key: String,
        config: RetrievalConfig,
    ) -> Self {
        EmbedQueue {
            storage,
            embedder,
            key,
            config,
            draining: tokio::sync::Mutex::new(()),
            drained_up_to: Arc::new(Mutex::new(HashMap::new())),
            coverage_probed: Arc::new(tokio::sync::Mutex::new(HashSet::new())),
            stale: Mutex::new(HashMap::new()),
        }
    }

    /// The key the vectors are stored under.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The embedder.
    pub(crate) fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Notes that an episode completed: the next drain embeds it with all its steps, first.
    /// Whether a drain already embedded it while it ran is not asked: a drain may have read
    /// it before the completion and still be embedding it (the vector would then miss the
    /// steps for good). An episode completed before any drain saw it is embedded once, by
    /// this pass instead of the scan for missing vectors.
    pub(crate) fn completed(&self, ns: &Namespace, id: EpisodeId) {
        lock(&self.stale).entry(ns.clone()).or_default().insert(id);
    }

    /// Episodes of `ns` with no embedding under the key yet: two counts.
    pub(crate) async fn backlog(&self, ns: &Namespace) -> Result<u64> {
        let c = self.storage.embedding_coverage(ns, &self.key).await?;
        Ok(c.episodes.saturating_sub(c.embedded))
    }

    /// Whether every episode of `ns` is known to be embedded (a drain finished in this
    /// process, or the coverage counts said so); asks the storage when not known yet.
    pub(crate) async fn is_drained(&self, ns: &Namespace) -> Result<bool> {
        if lock(&self.drained_up_to).contains_key(ns) {
            return Ok(true);
        }
        let coverage = self.storage.embedding_coverage(ns, &self.key).await?;
        if coverage.complete() {
            lock(&self.drained_up_to)
                .entry(ns.clone())
                .or_insert(coverage.last_episode);
            return Ok(true);
        }
        Ok(false)
    }

    /// Starts reading the coverage of `ns` in the background (beside the index load) when
    /// no drain has read it yet.
    pub(crate) fn probe_beside_load(&self, ns: &Namespace) -> Option<JoinHandle<()>> {
        if lock(&self.drained_up_to).contains_key(ns) {
            return None;
        }
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (storage, drained, probed, ns, key) = (
            Arc::clone(&self.storage),
            Arc::clone(&self.drained_up_to),
            Arc::clone(&self.coverage_probed),
            ns.clone(),
            self.key.clone(),
        );
        Some(rt.spawn(async move {
            if let Err(e) = probe_coverage(&*storage, &drained, &probed, &ns, &key).await {
                debug!(error = %e, "embedding coverage not read at load");
            }
        }))
    }

    /// Embeds every episode of `ns` that has no embedding yet, in batches, and stores and
    /// indexes the vectors, calling `progress` with the number embedded so far after each
    /// batch. Returns how many were embedded.
    pub(crate) async fn drain(
        &self,
        ns: &Namespace,
        indexes: &Indexes,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<usize> {
        let _draining = self.draining.lock().await;
        let mut done = 0;
        // Episodes that completed after they were embedded: their vector missed the steps.
        let stale: Vec<EpisodeId> = lock(&self.stale)
            .remove(ns)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        for ids in stale.chunks(self.config.embed_batch.max(1) as usize) {
            done += self.embed_episodes(ns, indexes, ids).await?;
            progress(done);
        }
        // Page with a cursor, from where the last full drain of this namespace ended: ids are
        // time-ordered (UUID v7), so what is new lies after it, and a drain never rescans what
        // it has embedded. The first drain of a process starts from the beginning, unless two
        // counts show every episode embedded (the scan probes each episode: ~0.1-0.2 s at
        // 100k, at start-up, when the first query is loading the index).
        if !lock(&self.drained_up_to).contains_key(ns) {
            let storage = &*self.storage;
            probe_coverage(
                storage,
                &self.drained_up_to,
                &self.coverage_probed,
                ns,
                &self.key,
            )
            .await?;
            if lock(&self.drained_up_to).contains_key(ns) {
                return Ok(done);
            }
        }
        let mut after = lock(&self.drained_up_to).get(ns).copied().flatten();
        loop {
            let batch = self.config.embed_batch.max(1);
            let ids = self
                .storage
                .episodes_missing_embedding(ns, &self.key, after, batch)
                .await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            done += self.embed_episodes(ns, indexes, &ids).await?;
            progress(done);
        }
        lock(&self.drained_up_to).insert(ns.clone(), after);
        if done > 0 {
            debug!(embedded = done, "embedding queue drained");
        }
        Ok(done)
    }

    /// The text an episode's task is embedded as.
    fn episode_text(&self, s: &EpisodeSummary) -> String {
        if self.config.embed_context {
            embedding_text(&s.task_description, Some(s.task_type), Some(&s.context))
        } else {
            s.task_description.clone()
        }
    }

    /// Embeds, stores and indexes one batch of episodes (those that vanished meanwhile are
    /// passed over). Returns how many were stored.
    async fn embed_episodes(
        &self,
        ns: &Namespace,
        indexes: &Indexes,
        ids: &[EpisodeId],
    ) -> Result<usize> {
        let mut episodes = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(e) = self.storage.get_episode(ns, id).await? {
                episodes.push(e);
            }
        }
        // One embedder call for the batch: each episode's task text, then its work text
        // when it has one and the work counts, then its step windows.
        let mut texts: Vec<String> = Vec::with_capacity(episodes.len() * 2);
        let mut work_at: Vec<Option<usize>> = Vec::with_capacity(episodes.len());
        let mut windows_at: Vec<std::ops::Range<usize>> = Vec::with_capacity(episodes.len());
        for e in &episodes {
            texts.push(self.episode_text(&e.summary()));
        }
        for e in &episodes {
            let work = if self.config.work_weight > 0.0 {
                work_text(e)
            } else {
                String::new()
            };
            if work.is_empty() {
                work_at.push(None);
            } else {
                work_at.push(Some(texts.len()));
                texts.push(work);
            }
            // Steps that fit in one window are covered by the episode's own vector (its work
            // text holds their actions): windows only for episodes longer than that.
            let start = texts.len();
            let windows = step_windows(e, self.config.step_windows as usize);
            if windows.len() > 1 {
                texts.extend(windows.into_iter().map(|w| w.text));
            }
            windows_at.push(start..texts.len());
        }
        let vectors = embed_all(&self.embedder, &texts).await?;
        let mut done = 0;
        let mut stored = Vec::with_capacity(episodes.len());
        for (i, e) in episodes.into_iter().enumerate() {
            let mut vector = vectors[i].clone();
            if let Some(w) = work_at[i] {
                for (a, b) in vector.iter_mut().zip(&vectors[w]) {
                    *a += self.config.work_weight * b;
                }
                l2_normalize(&mut vector);
            }
            // Stored as one value: the episode's own vector, then each window's.
            for w in windows_at[i].clone() {
                vector.extend_from_slice(&vectors[w]);
            }
            let summary = e.summary();
            match self
                .storage
                .put_embedding(ns, summary.id, &self.key, &vector)
                .await
            {
                Ok(()) => {
                    stored.push(StoredEmbedding { summary, vector });
                    done += 1;
                }
                Err(Error::NotFound { .. }) => {} // vanished meanwhile
                Err(e) => return Err(e),
            }
        }
        // A loaded namespace takes the new vectors from the change log, with the summaries
        // as stored now (an episode may have completed while it was embedded). When the
        // storage cannot answer, they go in directly and the index is marked diverged. A
        // namespace not loaded (or loading now) is left alone: its load reads the stored
        // vectors and the log after them, and every search catches up first. (Indexing them
        // here could put back an episode another process forgot meanwhile: the load reads
        // the log only from its own start.)
        if indexes.is_loaded(ns)
            && let Err(e) = indexes.catch_up(ns, &self.key).await
        {
            warn!(error = %e, "index could not catch up after embedding; indexing directly");
            indexes.diverged(ns);
            indexes.index_stored(ns, stored);
        }
        Ok(done)
    }
}
