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
use super::vector_index::VectorHit;
use crate::clock::SharedClock;
use crate::embedding::Embedder;
use crate::episode::{EpisodeId, EpisodeSummary};
use crate::error::Result;
use crate::namespace::Namespace;
use crate::storage::{Storage, TextHit, TextQuery, TextSearch};

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

    /// Finds the past episodes most relevant to `query`.
    #[instrument(skip_all, fields(namespace = %ns, method = %query.method, limit = query.limit))]
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
        let mut semantic: Vec<VectorHit> = Vec::new();
        let mut query_vectors: Vec<Arc<Vec<f32>>> = Vec::new();
        if let Some(queue) = queue {
            self.ensure_loaded(ns, queue).await?;
            query_vectors = self
                .query_vectors(queue.embedder(), self.query_texts(query))
                .await?;
        }
        let queries: Vec<&[f32]> = query_vectors.iter().map(|v| v.as_slice()).collect();
        let index = &self.indexes.vectors;
        let window_weight = self.config.window_weight;
        let windows = (window_weight > 0.0).then_some(&*self.indexes.windows);
        // An episode's semantic score: its own vector's, or its best step window's times the
        // window weight when that is higher.
        let score_of = |id: EpisodeId| -> Option<VectorHit> {
            let own = index.score(ns, &queries, id);
            let window = windows.and_then(|w| w.score(ns, &queries, id));
            best_of(own, window, window_weight)
        };
        if !queries.is_empty() {
            semantic = index.search(ns, &queries, &query.filter, candidates as usize);
            if let Some(windows) = windows {
                let by_window = windows.search(ns, &queries, &query.filter, candidates as usize);
                let own_of = |id| index.score(ns, &queries, id);
                let window_of = |id| windows.score(ns, &queries, id);
                semantic = merge_windows(
                    &semantic,
                    &by_window,
                    (&own_of, &window_of),
                    window_weight,
                    candidates as usize,
                );
            }
        }

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
                    score_of(id)
                }
            },
            query.context.is_some(),
            lexical.known_share(),
        );
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
mod tests {
    use super::*;
    use crate::episode::{TaskContext, TaskType};
    use crate::error::Result;

    fn hit(summary: &Arc<EpisodeSummary>, cosine: f32, similarity: f32, row: u16) -> VectorHit {
        VectorHit {
            summary: Arc::clone(summary),
            cosine,
            similarity,
            row,
        }
    }

    fn summary() -> Arc<EpisodeSummary> {
        Arc::new(EpisodeSummary {
            id: EpisodeId::new(),
            task_description: "a talk".into(),
            task_type: TaskType::Other,
            context: TaskContext::new("chat"),
            step_count: 40,
            started_at: chrono::Utc::now(),
            completed_at: None,
            outcome: None,
            reward: None,
        })
    }

    #[test]
    fn an_episode_scores_by_its_own_vector_or_its_weighed_best_window() {
        let s = summary();
        // The window wins once weighed: its cosine, its number (from 1), the higher similarity.
        let own = hit(&s, 0.20, 0.30, 0);
        let best = best_of(Some(own.clone()), Some(hit(&s, 0.50, 0.55, 3)), 0.8).unwrap();
        assert!((best.cosine - 0.40).abs() < 1e-6);
        assert_eq!((best.row, best.similarity), (4, 0.55));
        // Weighed down below the episode's own: the own vector's score, row 0.
        let kept = best_of(Some(own.clone()), Some(hit(&s, 0.24, 0.25, 0)), 0.8).unwrap();
        assert_eq!((kept.cosine, kept.row, kept.similarity), (0.20, 0, 0.30));
        assert_eq!(best_of(Some(own), None, 0.8).unwrap().row, 0);
        assert!(best_of(None, None, 0.8).is_none());

        // Merged lists hold each episode once, by its best, best first, at most k.
        let (a, b, c) = (summary(), summary(), summary());
        let scores: HashMap<EpisodeId, VectorHit> = [
            (a.id, hit(&a, 0.3, 0.3, 0)),
            (b.id, hit(&b, 0.6, 0.6, 2)),
            (c.id, hit(&c, 0.1, 0.1, 0)),
        ]
        .into_iter()
        .collect();
        let merged = merge_windows(
            &[hit(&a, 0.3, 0.3, 0), hit(&c, 0.1, 0.1, 0)],
            &[hit(&b, 0.6, 0.6, 1), hit(&a, 0.1, 0.1, 0)],
            (&|id| scores.get(&id).cloned(), &|_| None),
            0.8,
            2,
        );
        let order: Vec<EpisodeId> = merged.iter().map(|h| h.summary.id).collect();
        assert_eq!(order, vec![b.id, a.id]);
    }

    #[test]
    fn support_is_the_mean_of_the_three_best() {
        assert_eq!(support(std::iter::empty()), None);
        assert_eq!(support([0.5].into_iter()), Some(0.5));
        let s = support([0.2, 0.9, 0.4, 0.8, 0.7].into_iter()).unwrap();
        assert!((s - 0.8).abs() < 1e-6, "{s}");
    }

    /// Vectors from the text's bytes; counts calls and texts.
    #[derive(Debug, Default)]
    struct CountingEmbedder {
        calls: std::sync::atomic::AtomicUsize,
        texts: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Embedder for CountingEmbedder {
        fn model_id(&self) -> &'static str {
            "counting"
        }
        fn dimensions(&self) -> usize {
            8
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            use std::sync::atomic::Ordering::Relaxed;
            self.calls.fetch_add(1, Relaxed);
            self.texts.fetch_add(texts.len(), Relaxed);
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.1f32; 8];
                    for (i, b) in t.bytes().enumerate() {
                        v[i % 8] += f32::from(b);
                    }
                    crate::embedding::l2_normalize(&mut v);
                    v
                })
                .collect())
        }
    }

    #[tokio::test]
    async fn a_query_with_context_embeds_its_two_texts_in_one_call_and_once() {
        use std::sync::atomic::Ordering::Relaxed;
        let embedder = Arc::new(CountingEmbedder::default());
        let retriever = Retriever::new(
            Arc::new(crate::InMemoryStorage::new()),
            Some(Arc::clone(&embedder) as Arc<dyn Embedder>),
            Arc::new(crate::clock::SystemClock),
            RetrievalConfig::default(),
        );
        let ns = Namespace::default();
        let query = RetrievalQuery::new("fix the flaky login test")
            .with_context(Some(TaskType::Debugging), TaskContext::new("web"));
        retriever.retrieve(&ns, &query).await.unwrap();
        assert_eq!(
            (embedder.calls.load(Relaxed), embedder.texts.load(Relaxed)),
            (1, 2)
        );
        // Both vectors are cached; the bare task alone is one of them.
        retriever.retrieve(&ns, &query).await.unwrap();
        retriever
            .retrieve(&ns, &RetrievalQuery::new("fix the flaky login test"))
            .await
            .unwrap();
        assert_eq!(
            (embedder.calls.load(Relaxed), embedder.texts.load(Relaxed)),
            (1, 2)
        );
        // A new context embeds only its own text.
        let other = RetrievalQuery::new("fix the flaky login test")
            .with_context(Some(TaskType::Testing), TaskContext::new("web"));
        retriever.retrieve(&ns, &other).await.unwrap();
        assert_eq!(
            (embedder.calls.load(Relaxed), embedder.texts.load(Relaxed)),
            (2, 3)
        );
    }

    /// Holds its first call until released, telling the test when it got there.
    #[derive(Debug)]
    struct GatedEmbedder {
        inner: CountingEmbedder,
        entered: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
        release: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl Embedder for GatedEmbedder {
        fn model_id(&self) -> &'static str {
            "gated"
        }
        fn dimensions(&self) -> usize {
            8
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            let first = self.entered.lock().ok().and_then(|mut e| e.take());
            if let Some(entered) = first {
                let _ = entered.send(());
                self.release.notified().await;
            }
            self.inner.embed(texts).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_episode_that_completes_while_a_drain_embeds_it_is_embedded_again() {
        use crate::episode::{Episode, NewEpisode};
        use crate::storage::EpisodeStore as _;
        let (entered, entered_rx) = tokio::sync::oneshot::channel();
        let embedder = Arc::new(GatedEmbedder {
            inner: CountingEmbedder::default(),
            entered: std::sync::Mutex::new(Some(entered)),
            release: tokio::sync::Notify::new(),
        });
        let storage = Arc::new(crate::InMemoryStorage::new());
        let retriever = Arc::new(Retriever::new(
            Arc::clone(&storage) as Arc<dyn Storage>,
            Some(Arc::clone(&embedder) as Arc<dyn Embedder>),
            Arc::new(crate::clock::SystemClock),
            RetrievalConfig::default(),
        ));
        let ns = Namespace::default();
        let new = NewEpisode::new(
            "fix the flaky date test",
            TaskType::Testing,
            TaskContext::new("testing"),
        );
        let running = Episode::start(new, chrono::Utc::now());
        storage.create_episode(&ns, &running).await.unwrap();
        // A drain reads the running episode and is held in the model; the episode completes
        // meanwhile.
        let drain = tokio::spawn({
            let (retriever, ns) = (Arc::clone(&retriever), ns.clone());
            async move { retriever.embed_pending(&ns).await }
        });
        entered_rx.await.unwrap();
        let mut done = running.summary();
        done.completed_at = Some(chrono::Utc::now());
        retriever.episode_changed(&ns, done);
        embedder.release.notify_one();
        assert_eq!(drain.await.unwrap().unwrap(), 1);
        // Its vector missed the completion: the next drain embeds it again, and only once.
        assert_eq!(retriever.embed_pending(&ns).await.unwrap(), 1);
        assert_eq!(retriever.embed_pending(&ns).await.unwrap(), 0);
    }

    /// Refuses every index snapshot (as a store does one over the size limit), counting tries.
    #[derive(Debug)]
    struct RefusesSnapshots {
        inner: Arc<dyn Storage>,
        tries: std::sync::atomic::AtomicUsize,
    }

    crate::forward_storage! { impl[] EpisodeStore for RefusesSnapshots => inner; forward all; {} }
    crate::forward_storage! { impl[] LearningStore for RefusesSnapshots => inner; forward all; {} }
    crate::forward_storage! { impl[] MaintenanceStore for RefusesSnapshots => inner; forward all; {} }
    crate::forward_storage! {
        impl[] EmbeddingStore for RefusesSnapshots => inner;
        forward put_embedding, get_embedding, episodes_missing_embedding, scan_embeddings,
            embedding_coverage, index_log_head, index_changes, get_index_snapshot;
        {
            async fn put_index_snapshot(
                &self,
                _ns: &Namespace,
                _model: &str,
                _snapshot: &crate::IndexSnapshot,
            ) -> Result<()> {
                self.tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(crate::Error::invalid("index_snapshot", "over the limit"))
            }
        }
    }
    crate::forward_storage! {
        impl[] Storage for RefusesSnapshots => inner;
        forward may_have_changed, changes_since;
        { fn backend_name(&self) -> &'static str { "refuses-snapshots" } }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_snapshot_is_not_tried_again_at_every_search() {
        use std::sync::atomic::Ordering::SeqCst;
        let storage = Arc::new(RefusesSnapshots {
            inner: Arc::new(crate::InMemoryStorage::new()),
            tries: std::sync::atomic::AtomicUsize::default(),
        });
        let mut config = crate::MemoryConfig::default();
        config.retrieval.index_snapshot_from = 2;
        let memory = crate::SelfLearningMemory::with_embedder(
            Arc::clone(&storage) as Arc<dyn Storage>,
            config,
            Arc::new(crate::clock::SystemClock),
            Some(Arc::new(CountingEmbedder::default())),
        )
        .unwrap();
        let ns = Namespace::default();
        for task in [
            "fix the login test",
            "add pagination",
            "speed up the report",
        ] {
            let new = crate::NewEpisode::new(task, TaskType::Testing, TaskContext::new("web"));
            let id = memory.start_episode(&ns, new).await.unwrap();
            memory
                .complete_episode(&ns, id, crate::Outcome::success("done"))
                .await
                .unwrap();
        }
        memory.embed_pending(&ns).await.unwrap();
        let query = RetrievalQuery::new("fix the login test");
        for _ in 0..5 {
            memory.retrieve(&ns, &query).await.unwrap();
            memory.retriever().finish_snapshots().await;
        }
        // Tried once when the namespace was loaded; the searches after it leave it alone
        // until a twentieth of the namespace (at least a page of the change log) changed.
        assert_eq!(storage.tries.load(SeqCst), 1);
        memory.shutdown().await.unwrap();
    }
}
