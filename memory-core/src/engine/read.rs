//! Reading: episodes, learned items and counts, retrieval and recommendations.

use std::sync::Arc;

use tracing::Instrument;

use super::memory::SelfLearningMemory;
use crate::episode::{Episode, EpisodeId, EpisodeSummary};
use crate::error::{Error, Result};
use crate::learned::{
    FailureLesson, Heuristic, HeuristicId, Learned, LessonId, Pattern, PatternId,
};
use crate::namespace::Namespace;
use crate::retrieval::recommend::{Advisor, RecommendRequest, Recommendation};
use crate::retrieval::{Retrieval, RetrievalQuery};
use crate::storage::{EpisodeQuery, LearnedQuery, NamespaceStats, StorageExt, TextHit, TextQuery};
use crate::telemetry::{self, SEARCH_MEMORY, memory_span};

impl SelfLearningMemory {
    /// An episode with all its steps, including steps still buffered in this process.
    ///
    /// Shared: a completed episode served from the cache is the cache's own allocation (no
    /// copy); one with buffered steps is copied once to add them.
    pub async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Arc<Episode>> {
        let mut episode = self
            .inner
            .storage
            .get_episode(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(crate::error::ObjectKind::Episode, id))?;
        if let Some(pending) = self.inner.steps.pending(ns, id) {
            // Numbered after the stored steps, as the store will number them.
            Arc::make_mut(&mut episode).add_steps(&pending);
        }
        Ok(episode)
    }

    /// Every namespace that holds episodes.
    pub async fn namespaces(&self) -> Result<Vec<Namespace>> {
        self.inner.storage.list_namespaces().await
    }

    /// A page of episodes, newest first.
    pub async fn list_episodes(
        &self,
        ns: &Namespace,
        query: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>> {
        self.inner.storage.query_episodes(ns, query).await
    }

    /// Lexical search over episodes; each hit with its summary.
    ///
    /// Traced as `search_memory` (see [`telemetry`](crate::telemetry)).
    pub async fn search_episodes(&self, ns: &Namespace, query: &TextQuery) -> Result<Vec<TextHit>> {
        let span = memory_span!(SEARCH_MEMORY, "search_episodes", ns, limit = query.limit);
        let hits = self
            .inner
            .storage
            .search_episodes(ns, query)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, hits, Vec::len)
    }

    /// The step of an episode that `query` matched: the one sharing the most terms with it
    /// (see [`matched_step`](crate::retrieval::matched_step)); `None` when no step shares
    /// one. For naming the step behind a [`search_episodes`](Self::search_episodes) hit.
    /// `NotFound` if the namespace holds no such episode.
    pub async fn matched_step(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        query: &str,
    ) -> Result<Option<crate::retrieval::MatchedStep>> {
        let episode = self.get_episode(ns, id).await?;
        let windows = self.inner.retriever.config().step_windows as usize;
        Ok(crate::retrieval::matched_step(
            &episode, query, None, windows,
        ))
    }

    /// A learned item of any kind by id; `NotFound` if the namespace holds none.
    pub async fn learned<T: Learned>(&self, ns: &Namespace, id: &T::Id) -> Result<T> {
        self.inner
            .storage
            .get_typed::<T>(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(T::KIND.object_kind(), id))
    }

    /// Learned items of one kind matching the query.
    pub async fn learned_page<T: Learned>(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<T>> {
        self.inner.storage.query_typed(ns, query).await
    }

    /// A pattern by id.
    pub async fn pattern(&self, ns: &Namespace, id: &PatternId) -> Result<Pattern> {
        self.learned(ns, id).await
    }

    /// Patterns matching the query.
    pub async fn patterns(&self, ns: &Namespace, query: &LearnedQuery) -> Result<Vec<Pattern>> {
        self.learned_page(ns, query).await
    }

    /// A heuristic by id.
    pub async fn heuristic(&self, ns: &Namespace, id: &HeuristicId) -> Result<Heuristic> {
        self.learned(ns, id).await
    }

    /// Heuristics matching the query.
    pub async fn heuristics(&self, ns: &Namespace, query: &LearnedQuery) -> Result<Vec<Heuristic>> {
        self.learned_page(ns, query).await
    }

    /// A lesson by id.
    pub async fn lesson(&self, ns: &Namespace, id: &LessonId) -> Result<FailureLesson> {
        self.learned(ns, id).await
    }

    /// Lessons matching the query.
    pub async fn lessons(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<FailureLesson>> {
        self.learned_page(ns, query).await
    }

    /// Counts of what the namespace holds.
    pub async fn stats(&self, ns: &Namespace) -> Result<NamespaceStats> {
        self.inner.storage.namespace_stats(ns).await
    }

    /// Finds the past episodes most relevant to a task: hybrid (BM25 + embeddings) unless
    /// the query asks otherwise or no embedder is loaded. See [`crate::retrieval`].
    ///
    /// Traced as `search_memory` (see [`telemetry`](crate::telemetry)).
    pub async fn retrieve(&self, ns: &Namespace, query: &RetrievalQuery) -> Result<Retrieval> {
        let span = memory_span!(
            SEARCH_MEMORY,
            "retrieve",
            ns,
            method = %query.method,
            limit = query.limit
        );
        let found = self
            .retrieve_untraced(ns, query)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, found, |r| r.results.len())
    }

    async fn retrieve_untraced(&self, ns: &Namespace, query: &RetrievalQuery) -> Result<Retrieval> {
        self.ensure_running()?;
        self.inner.config.limits.check_retrieval(query)?;
        self.inner.limiter.acquire(ns, 1)?;
        self.inner.retriever.retrieve(ns, query).await
    }

    /// Recommends for a new task: similar episodes (near-duplicates folded), patterns,
    /// heuristics, pitfalls, a playbook and an estimate, each item with a `why`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use memory_core::*;
    /// use memory_core::retrieval::recommend::RecommendRequest;
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let memory = SelfLearningMemory::new(Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
    /// let ns = Namespace::default();
    /// let ctx = TaskContext::new("web_api").with_language("rust");
    /// for _ in 0..3 {
    ///     let id = memory.start_episode(&ns, NewEpisode::new("add a health endpoint", TaskType::CodeGeneration, ctx.clone())).await?;
    ///     memory.log_step(&ns, id, StepInput::ok("read_file", "open router", "ok")).await?;
    ///     memory.log_step(&ns, id, StepInput::ok("edit_file", "add route", "edit applied")).await?;
    ///     memory.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok")).await?;
    ///     memory.complete_episode(&ns, id, Outcome::success("endpoint works")).await?;
    /// }
    /// let rec = memory
    ///     .recommend(&ns, &RecommendRequest::new("add a health endpoint").with_context(Some(TaskType::CodeGeneration), ctx))
    ///     .await?;
    /// assert_eq!(rec.episodes.len(), 1); // three runs of one task, folded
    /// assert_eq!(rec.episodes[0].near_duplicates.len(), 2);
    /// assert_eq!(rec.playbook.iter().map(|s| s.tool.as_str()).collect::<Vec<_>>(), ["read_file", "edit_file", "shell"]);
    /// assert_eq!(rec.estimate.sample_size, 3);
    /// memory.shutdown().await?;
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// Traced as `search_memory`, the count being the episodes recommended (see
    /// [`telemetry`](crate::telemetry)).
    pub async fn recommend(
        &self,
        ns: &Namespace,
        req: &RecommendRequest,
    ) -> Result<Recommendation> {
        let span = memory_span!(SEARCH_MEMORY, "recommend", ns, limit = req.limit);
        let rec = self
            .recommend_untraced(ns, req)
            .instrument(span.clone())
            .await;
        telemetry::ended(&span, rec, |r| r.episodes.len())
    }

    async fn recommend_untraced(
        &self,
        ns: &Namespace,
        req: &RecommendRequest,
    ) -> Result<Recommendation> {
        self.ensure_running()?;
        let inner = &self.inner;
        let limits = &inner.config.limits;
        limits.check_retrieval(&req.retrieval_query(req.limit))?;
        inner.limiter.acquire(ns, 1)?;
        let advisor = Advisor {
            retriever: &inner.retriever,
            storage: inner.storage.as_ref(),
            half_life_days: inner.config.learning.half_life_days,
            calibration: &inner.config.consolidation,
            max_results: limits.max_results as u32,
        };
        let rec = advisor.recommend(ns, req, inner.clock.now()).await?;
        inner.pending_estimates.offer(ns, &req.task, &rec.estimate);
        Ok(rec)
    }

    /// [`SelfLearningMemory::recommend`] once every episode of `ns` still waiting for its
    /// embedding is embedded, so the episodes other processes recorded count now (a
    /// short-lived process, the CLI, is where that queue drains when no long-lived one runs).
    /// `progress` gets the number embedded so far after each batch. A request over the limits
    /// is refused before anything is embedded.
    ///
    /// ```
    /// # use memory_core::{Error, InMemoryStorage, MemoryConfig, Namespace, SelfLearningMemory};
    /// # use memory_core::retrieval::recommend::RecommendRequest;
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let memory = SelfLearningMemory::new(std::sync::Arc::new(InMemoryStorage::new()), MemoryConfig::default())?;
    /// let ns = Namespace::default();
    /// let rec = memory
    ///     .recommend_caught_up(&ns, &RecommendRequest::new("add a health endpoint"), &|_| {})
    ///     .await?;
    /// assert!(rec.episodes.is_empty());
    /// memory.shutdown().await?;
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn recommend_caught_up(
        &self,
        ns: &Namespace,
        req: &RecommendRequest,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Recommendation> {
        self.ensure_running()?;
        let limits = &self.inner.config.limits;
        limits.check_retrieval(&req.retrieval_query(req.limit))?;
        if self.inner.retriever.embedder().is_some() {
            self.embed_pending_reporting(ns, progress).await?;
        }
        self.recommend(ns, req).await
    }

    /// Embeds every episode of `ns` still waiting for an embedding, now (the background task
    /// does the same lazily). Returns how many were embedded.
    pub async fn embed_pending(&self, ns: &Namespace) -> Result<usize> {
        self.ensure_running()?;
        self.inner.retriever.embed_pending(ns).await
    }

    /// [`SelfLearningMemory::embed_pending`], calling `progress` with the number embedded so
    /// far after each batch.
    pub async fn embed_pending_reporting(
        &self,
        ns: &Namespace,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<usize> {
        self.ensure_running()?;
        self.inner
            .retriever
            .embed_pending_reporting(ns, progress)
            .await
    }

    /// Episodes of `ns` waiting to be embedded (0 without an embedder): two counts.
    pub async fn embedding_backlog(&self, ns: &Namespace) -> Result<u64> {
        self.inner.retriever.embedding_backlog(ns).await
    }
}
