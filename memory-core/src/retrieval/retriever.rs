//! [`Retriever`]: hybrid retrieval over the in-process indexes and the backend's full-text
//! index, with the embedding queue and the query-vector cache.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::instrument;

use super::embed_queue::EmbedQueue;
use super::indexes::Indexes;
use super::query::RetrievedEpisode;
use super::query::{IndexStatus, Retrieval, RetrievalConfig, RetrievalMethod, RetrievalQuery};
use super::scoring;
use super::texts::{embed_all, embedding_text, vector_key};
use super::vector_index::{VectorHit, VectorIndex};
use crate::clock::SharedClock;
use crate::embedding::Embedder;
use crate::episode::{EpisodeId, EpisodeSummary};
use crate::error::Result;
use crate::namespace::Namespace;
use crate::storage::{EpisodeFilter, Storage, TextHit, TextQuery, TextSearch};

/// How many of the closest episodes back the confidence.
pub const SUPPORT: usize = 3;

/// The mean of the [`SUPPORT`] highest plain cosines (fewer when fewer are given), the
/// measure the confidence is calibrated on: a real match is usually backed by more than one
/// close episode, where a chance look-alike stands alone. On the retrieval eval, at
/// thresholds that flag every no-answer query, it wrongly flagged 2 of 76 answerable queries
/// with context and 4 on bare task text, against 2-3 and 5 for the single best cosine.
fn support(similarities: impl Iterator<Item = f32>) -> Option<f32> {
    let mut top: Vec<f32> = similarities.collect();
    if top.is_empty() {
        return None;
    }
    top.sort_by(|a, b| b.total_cmp(a));
    top.truncate(SUPPORT);
    Some(top.iter().sum::<f32>() / top.len() as f32)
}

/// Hybrid retrieval over a storage backend, with an optional embedder.
pub struct Retriever {
    storage: Arc<dyn Storage>,
    indexes: Indexes,
    /// `None` without an embedder.
    queue: Option<EmbedQueue>,
    queries: moka::sync::Cache<String, Arc<Vec<f32>>>,
    clock: SharedClock,
    config: RetrievalConfig,
    degraded_reason: Option<String>,
}

impl std::fmt::Debug for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field(
                "embedder",
                &self.queue.as_ref().map(|q| q.embedder().model_id()),
            )
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Retriever {
    /// A retriever over `storage`; lexical only when `embedder` is `None`.
    pub fn new(
        storage: Arc<dyn Storage>,
        embedder: Option<Arc<dyn Embedder>>,
        clock: SharedClock,
        config: RetrievalConfig,
    ) -> Self {
        let dims = embedder.as_ref().map_or(0, |e| e.dimensions());
        let degraded_reason = embedder.is_none().then(|| {
            "no embedding model loaded: retrieval is lexical only (BM25); install the model \
             (scripts/install-model.sh) or set MEMORY_MODEL_DIR"
                .to_owned()
        });
        let queue = embedder.map(|e| {
            let key = vector_key(e.model_id(), &config);
            EmbedQueue::new(Arc::clone(&storage), e, key, config.clone())
        });
        Retriever {
            indexes: Indexes::new(Arc::clone(&storage), dims, config.index_snapshot_from),
            storage,
            queue,
            queries: moka::sync::Cache::new(config.query_cache_entries),
            clock,
            config,
            degraded_reason,
        }
    }

    /// The embedder, if one is loaded.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.queue.as_ref().map(EmbedQueue::embedder)
    }

    /// Why retrieval is degraded, if it is.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded_reason.as_deref()
    }

    /// The settings.
    pub fn config(&self) -> &RetrievalConfig {
        &self.config
    }

    /// Where the namespace's in-process index stands (`None` before it is first searched, or
    /// without an embedder).
    pub fn index_status(&self, ns: &Namespace) -> Option<IndexStatus> {
        self.indexes.status(ns)
    }

    /// Vectors indexed in process for `ns` (0 before the namespace is first searched).
    pub fn indexed(&self, ns: &Namespace) -> usize {
        self.indexes.vectors.len(ns)
    }

    /// The key the episode vectors are stored under: the model, and how the embedded text
    /// was made (a change re-queues every episode for embedding; old vectors stay stored
    /// under their key).
    pub fn vector_key(&self, embedder: &Arc<dyn Embedder>) -> String {
        vector_key(embedder.model_id(), &self.config)
    }

    /// Tells the index that an episode's summary changed (e.g. it completed). An episode
    /// embedded before it completed is queued to be embedded again with all its steps.
    pub fn episode_changed(&self, ns: &Namespace, summary: EpisodeSummary) {
        if let Some(queue) = &self.queue {
            if summary.completed_at.is_some() {
                queue.completed(ns, summary.id);
            }
            self.indexes.update_summary(ns, summary);
        }
    }

    /// Episodes of `ns` with no embedding for the model yet (0 without an embedder).
    pub async fn embedding_backlog(&self, ns: &Namespace) -> Result<u64> {
        match &self.queue {
            Some(queue) => queue.backlog(ns).await,
            None => Ok(0),
        }
    }

    /// Embeds every episode of `ns` that has no embedding for the model yet, in batches, and
    /// stores and indexes the vectors. Returns how many were embedded (0 without an embedder).
    ///
    /// Safe to run concurrently with itself and after a crash: the queue is derived from the
    /// stored data, and storing an embedding is idempotent.
    #[instrument(skip_all, fields(namespace = %ns))]
    pub async fn embed_pending(&self, ns: &Namespace) -> Result<usize> {
        self.embed_pending_reporting(ns, &|_| {}).await
    }

    /// [`Retriever::embed_pending`], calling `progress` with the number embedded so far after
    /// each batch (for a progress bar over a large backlog).
    pub async fn embed_pending_reporting(
        &self,
        ns: &Namespace,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<usize> {
        match &self.queue {
            Some(queue) => queue.drain(ns, &self.indexes, progress).await,
            None => Ok(0),
        }
    }

    /// Waits for the index snapshots being written in the background (what `shutdown` does,
    /// so a short-lived process, like one CLI command, leaves its snapshot for the next one
    /// instead of abandoning it half-written).
    pub async fn finish_snapshots(&self) {
        self.indexes.finish_snapshots().await;
    }

    /// Loads the namespace's stored vectors into the indexes the first time it is searched;
    /// whether every episode is embedded (which decides where lexical candidates come from)
    /// is read beside the load instead of after it.
    async fn ensure_loaded(&self, ns: &Namespace, queue: &EmbedQueue) -> Result<()> {
        self.indexes
            .ensure_loaded(ns, queue.key(), || queue.probe_beside_load(ns))
            .await
    }

    /// Whether lexical candidates come from the in-process index: an embedder is loaded, the
    /// namespace's vectors are loaded (which indexes their summaries), it holds at least
    /// `in_process_lexical_from` episodes, and no episode waits for an embedding (a drain
    /// finished in this process, or the queue is empty now). Otherwise they come from the
    /// backend's full-text index, which sees every stored episode.
    async fn lexical_ready(&self, ns: &Namespace) -> Result<bool> {
        let Some(queue) = &self.queue else {
            return Ok(false);
        };
        self.ensure_loaded(ns, queue).await?;
        if self.indexes.lexical.len(ns) < self.config.in_process_lexical_from as usize {
            return Ok(false);
        }
        queue.is_drained(ns).await
    }

    /// The vectors of a query's texts, in order: from the cache, and those not cached from
    /// one embedder call (a query with context has two texts, and one batch of two costs
    /// less than two calls).
    async fn query_vectors(
        &self,
        embedder: &Arc<dyn Embedder>,
        texts: Vec<String>,
    ) -> Result<Vec<Arc<Vec<f32>>>> {
        let mut vectors: Vec<Option<Arc<Vec<f32>>>> =
            texts.iter().map(|t| self.queries.get(t)).collect();
        let missing: Vec<String> = texts
            .iter()
            .zip(&vectors)
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        if !missing.is_empty() {
            let embedded = embed_all(embedder, &missing).await?;
            let mut fresh = missing.into_iter().zip(embedded);
            for slot in vectors.iter_mut().filter(|v| v.is_none()) {
                if let Some((text, vector)) = fresh.next() {
                    let vector = Arc::new(vector);
                    self.queries.insert(text, Arc::clone(&vector));
                    *slot = Some(vector);
                }
            }
        }
        Ok(vectors.into_iter().flatten().collect())
    }

    /// The texts a query is embedded as: with context, the task with its context words
    /// first (its plain cosine backs the confidence) and the bare task second; the index
    /// combines them. On the retrieval eval the pair ranked better than either alone (the
    /// context words alone pull same-stack look-alikes up, the bare task loses the stack).
    fn query_texts(&self, query: &RetrievalQuery) -> Vec<String> {
        let bare = query.task.trim().to_owned();
        if self.config.embed_context && (query.context.is_some() || query.task_type.is_some()) {
            let full = embedding_text(&query.task, query.task_type, query.context.as_ref());
            if full != bare {
                return vec![full, bare];
            }
        }
        vec![bare]
    }

    fn lexical_text(&self, query: &RetrievalQuery) -> String {
        let mut text = query.task.clone();
        if self.config.lexical_context_terms
            && let Some(c) = &query.context
        {
            for w in [Some(&c.domain), c.language.as_ref(), c.framework.as_ref()]
                .into_iter()
                .flatten()
                .chain(c.descriptive_tags())
            {
                text.push(' ');
                text.push_str(&w.replace('_', " "));
            }
        }
        text
    }

    /// Lexical candidates: from the in-process index once it is ready, else from the
    /// backend's full-text index.
    async fn lexical_candidates(
        &self,
        ns: &Namespace,
        query: &RetrievalQuery,
        candidates: u32,
    ) -> Result<TextSearch> {
        let text = self.lexical_text(query);
        if self.lexical_ready(ns).await? {
            let lexical = &self.indexes.lexical;
            let hits = lexical.search(ns, &text, &query.filter, candidates as usize);
            let (terms, known_terms) = lexical.known_terms(ns, &text);
            return Ok(TextSearch {
                hits: hits
                    .into_iter()
                    .map(|h| TextHit {
                        episode_id: h.summary.id,
                        score: f64::from(h.score),
                        summary: (*h.summary).clone(),
                    })
                    .collect(),
                terms,
                known_terms,
            });
        }
        let text = TextQuery {
            text,
            filter: query.filter.clone(),
            limit: candidates,
        };
        self.storage.search_text(ns, &text).await
    }

    /// Finds the past episodes most relevant to `query`. A DEBUG span: the caller's operation
    /// span (the `search_memory` of [`crate::SelfLearningMemory::retrieve`] or `recommend`)
    /// is the one reported.
    #[instrument(
        level = "debug",
        skip_all,
        fields(namespace = %ns, method = %query.method, limit = query.limit)
    )]
    pub async fn retrieve(&self, ns: &Namespace, query: &RetrievalQuery) -> Result<Retrieval> {
        let mut method = query.method;
        let mut degraded = None;
        // Lexical retrieval does not embed the query (so it has no calibrated confidence).
        let queue = match (&self.queue, method) {
            (_, RetrievalMethod::Lexical) => None,
            (Some(q), _) => Some(q),
            (None, _) => {
                method = RetrievalMethod::Lexical;
                degraded.clone_from(&self.degraded_reason);
                None
            }
        };
        if query.limit == 0 {
            return Ok(Retrieval {
                results: Vec::new(),
                method,
                confidence: None,
                support: None,
                strong_match: false,
                degraded,
            });
        }
        let candidates = self.config.candidates.max(query.limit);
        if let Some(queue) = queue {
            // Loaded once per namespace; then each search first takes in what other
            // processes (and this one's completions and embeddings) changed.
            self.ensure_loaded(ns, queue).await?;
            self.indexes.refresh(ns, queue.key()).await;
        }
        let lexical = if method == RetrievalMethod::Vector {
            TextSearch::default()
        } else {
            self.lexical_candidates(ns, query, candidates).await?
        };
        let mut query_vectors: Vec<Arc<Vec<f32>>> = Vec::new();
        if let Some(queue) = queue {
            self.ensure_loaded(ns, queue).await?;
            query_vectors = self
                .query_vectors(queue.embedder(), self.query_texts(query))
                .await?;
        }
        let queries: Vec<&[f32]> = query_vectors.iter().map(|v| v.as_slice()).collect();
        let semantic = self.semantic_candidates(ns, &queries, &query.filter, candidates as usize);

        // The plain cosines of the closest semantic candidates back the confidence, whatever
        // the method ranked by (they are the one absolute similarity available).
        let best_similarity = support(semantic.iter().map(|h| h.similarity));
        let fused = scoring::fuse(
            &self.config,
            method,
            &lexical.hits,
            &semantic,
            |id| {
                if queries.is_empty() {
                    None
                } else {
                    self.score_of(ns, &queries, id)
                }
            },
            query.context.is_some(),
            lexical.known_share(),
        );
        let results = self.ranked(query, fused);

        // Context words embedded with the task raise every cosine a little.
        let threshold = if query.context.is_some() || query.task_type.is_some() {
            self.config.strong_match_cosine
        } else {
            self.config.strong_match_cosine_bare
        };
        let confidence = best_similarity.map(|c| scoring::confidence(c, threshold));
        Ok(Retrieval {
            strong_match: !results.is_empty() && confidence.is_some_and(|c| c >= 0.5),
            results,
            method,
            confidence,
            support: best_similarity.map(f64::from),
            degraded,
        })
    }
}

impl Retriever {
    /// The step-window index, when windows count (a positive window weight).
    fn windows(&self) -> Option<&VectorIndex> {
        (self.config.window_weight > 0.0).then_some(&*self.indexes.windows)
    }

    /// An episode's semantic score: its own vector's, or its best step window's times the
    /// window weight when that is higher.
    fn score_of(&self, ns: &Namespace, queries: &[&[f32]], id: EpisodeId) -> Option<VectorHit> {
        let own = self.indexes.vectors.score(ns, queries, id);
        let window = self.windows().and_then(|w| w.score(ns, queries, id));
        best_of(own, window, self.config.window_weight)
    }

    /// The `candidates` best semantic candidates passing `filter` (none without `queries`):
    /// from the episodes' own vectors and, when windows count, their step windows
    /// ([`merge_windows`]).
    fn semantic_candidates(
        &self,
        ns: &Namespace,
        queries: &[&[f32]],
        filter: &EpisodeFilter,
        candidates: usize,
    ) -> Vec<VectorHit> {
        if queries.is_empty() {
            return Vec::new();
        }
        let index = &self.indexes.vectors;
        let semantic = index.search(ns, queries, filter, candidates);
        let Some(windows) = self.windows() else {
            return semantic;
        };
        let by_window = windows.search(ns, queries, filter, candidates);
        let own_of = |id| index.score(ns, queries, id);
        let window_of = |id| windows.score(ns, queries, id);
        merge_windows(
            &semantic,
            &by_window,
            (&own_of, &window_of),
            self.config.window_weight,
            candidates,
        )
    }

    /// The fused candidates re-ranked (with their `why`), best first (ties by id), the
    /// query's `limit` kept.
    fn ranked(
        &self,
        query: &RetrievalQuery,
        fused: Vec<scoring::Candidate>,
    ) -> Vec<RetrievedEpisode> {
        let now = self.clock.now();
        let mut results: Vec<RetrievedEpisode> = fused
            .into_iter()
            .map(|c| {
                let breakdown = scoring::rerank(&self.config, query, &c.summary, &c, now);
                RetrievedEpisode {
                    why: scoring::why(query, &c.summary, &breakdown),
                    matched_step: None,
                    score: breakdown.score,
                    breakdown,
                    episode: (*c.summary).clone(),
                }
            })
            .collect();
        results.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.episode.id.cmp(&b.episode.id))
        });
        results.truncate(query.limit as usize);
        results
    }
}

/// The better of an episode's own hit and its best window's (`row` then numbers the window
/// from 1: 0 is the episode's own vector), the window's cosine weighed by `weight`. The plain
/// similarity (what the confidence is calibrated on) is the higher of the two: how close the
/// closest part of the episode is.
fn best_of(own: Option<VectorHit>, window: Option<VectorHit>, weight: f32) -> Option<VectorHit> {
    match (own, window) {
        (Some(own), Some(w)) => {
            let similarity = own.similarity.max(w.similarity);
            Some(if weight * w.cosine > own.cosine {
                VectorHit {
                    cosine: weight * w.cosine,
                    row: w.row.saturating_add(1),
                    similarity,
                    ..own
                }
            } else {
                VectorHit {
                    row: 0,
                    similarity,
                    ..own
                }
            })
        }
        (Some(own), None) => Some(VectorHit { row: 0, ..own }),
        (None, Some(w)) => Some(VectorHit {
            cosine: weight * w.cosine,
            row: w.row.saturating_add(1),
            ..w
        }),
        (None, None) => None,
    }
}

/// What scores one episode in one index: for the side of a candidate its list missed.
type ScoreOne<'a> = &'a dyn Fn(EpisodeId) -> Option<VectorHit>;

/// The semantic candidates from episodes' own vectors and from their step windows, each
/// episode scored by [`best_of`] both (the side its lists missed scored by `own_of` or
/// `window_of`), the best `k` kept (best first, ties by id).
fn merge_windows(
    own: &[VectorHit],
    windows: &[VectorHit],
    (own_of, window_of): (ScoreOne<'_>, ScoreOne<'_>),
    weight: f32,
    k: usize,
) -> Vec<VectorHit> {
    let by_id = |hits: &[VectorHit]| -> HashMap<EpisodeId, VectorHit> {
        hits.iter().map(|h| (h.summary.id, h.clone())).collect()
    };
    let (mut own_hits, mut window_hits) = (by_id(own), by_id(windows));
    let mut ids: Vec<EpisodeId> = own_hits.keys().chain(window_hits.keys()).copied().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut merged: Vec<VectorHit> = ids
        .into_iter()
        .filter_map(|id| {
            let o = own_hits.remove(&id).or_else(|| own_of(id));
            let w = window_hits.remove(&id).or_else(|| window_of(id));
            best_of(o, w, weight)
        })
        .collect();
    merged.sort_by(|a, b| {
        b.cosine
            .total_cmp(&a.cosine)
            .then_with(|| a.summary.id.cmp(&b.summary.id))
    });
    merged.truncate(k);
    merged
}

#[cfg(test)]
mod tests;
