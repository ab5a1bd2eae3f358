//! Everything derivable from the primitive storage operations, for every store at once.
//!
//! A backend implements the primitive traits ([`EpisodeStore`], [`LearningStore`], ...); the
//! conveniences here (typed reads of learned items, the hits of a text search alone) come with
//! them through blanket implementations, so no backend or decorator writes or forwards them.
//! Bring them into scope with `use memory_core::StorageExt;`.

use async_trait::async_trait;

use super::queries::{LearnedQuery, TextHit, TextQuery};
use super::traits::{EpisodeStore, LearningStore};
use crate::error::Result;
use crate::learned::{
    FailureLesson, Heuristic, HeuristicId, Learned, LessonId, Pattern, PatternId,
};
use crate::namespace::Namespace;

/// Typed reads of learned items and the hits of a text search, derived from the primitive
/// operations of [`EpisodeStore`] and [`LearningStore`]; implemented for every store.
///
/// ```
/// use memory_core::{InMemoryStorage, LearnedQuery, Namespace, StorageExt};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = InMemoryStorage::new();
/// let ns = Namespace::default();
/// assert!(store.query_patterns(&ns, &LearnedQuery::default()).await.unwrap().is_empty());
/// # });
/// ```
#[async_trait]
pub trait StorageExt: EpisodeStore + LearningStore {
    /// The hits of [`EpisodeStore::search_text`] alone.
    async fn search_episodes(&self, ns: &Namespace, query: &TextQuery) -> Result<Vec<TextHit>> {
        Ok(self.search_text(ns, query).await?.hits)
    }

    /// [`LearningStore::get_learned`] for one kind, typed.
    async fn get_typed<T: Learned>(&self, ns: &Namespace, id: &T::Id) -> Result<Option<T>> {
        Ok(self
            .get_learned(ns, &T::learned_id(id))
            .await?
            .and_then(T::from_item))
    }

    /// [`LearningStore::query_learned`] for one kind, typed.
    async fn query_typed<T: Learned>(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<T>> {
        Ok(self
            .query_learned(ns, T::KIND, query)
            .await?
            .into_iter()
            .filter_map(T::from_item)
            .collect())
    }

    /// A pattern by id.
    async fn get_pattern(&self, ns: &Namespace, id: &PatternId) -> Result<Option<Pattern>> {
        self.get_typed(ns, id).await
    }
    /// Patterns compatible with the query's context, most occurrences first.
    async fn query_patterns(&self, ns: &Namespace, query: &LearnedQuery) -> Result<Vec<Pattern>> {
        self.query_typed(ns, query).await
    }
    /// A heuristic by id.
    async fn get_heuristic(&self, ns: &Namespace, id: &HeuristicId) -> Result<Option<Heuristic>> {
        self.get_typed(ns, id).await
    }
    /// Heuristics compatible with the query's context, most support first.
    async fn query_heuristics(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<Heuristic>> {
        self.query_typed(ns, query).await
    }
    /// A lesson by id.
    async fn get_lesson(&self, ns: &Namespace, id: &LessonId) -> Result<Option<FailureLesson>> {
        self.get_typed(ns, id).await
    }
    /// Lessons compatible with the query's context, most occurrences first.
    async fn query_lessons(
        &self,
        ns: &Namespace,
        query: &LearnedQuery,
    ) -> Result<Vec<FailureLesson>> {
        self.query_typed(ns, query).await
    }
}

impl<S: EpisodeStore + LearningStore + ?Sized> StorageExt for S {}
