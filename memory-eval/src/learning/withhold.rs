//! [`Withholding`]: a storage decorator that hides kinds of learned items from every read, so
//! an ablated arm of the learning evaluation really runs without them: not in the
//! recommendation, not in the playbook, not in any ranking that reads them.
//!
//! Writes pass through unchanged (the memory still learns everything); only reads of the
//! withheld kinds come back empty.

use memory_core::{LearnedId, LearnedItem, LearnedKind, LearnedQuery, Namespace, Result, Storage};

/// Which learned items reads return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible {
    /// Patterns (tool sequences, decision points, error recoveries, context statistics).
    pub patterns: bool,
    /// Heuristics.
    pub heuristics: bool,
    /// Failure lessons.
    pub lessons: bool,
}

impl Visible {
    /// Everything visible.
    pub const ALL: Visible = Visible {
        patterns: true,
        heuristics: true,
        lessons: true,
    };
}

/// Forwards every call to `inner`, except that reads of withheld learned items return nothing.
#[derive(Debug)]
pub struct Withholding<S: ?Sized> {
    visible: Visible,
    inner: std::sync::Arc<S>,
}

impl<S: Storage + ?Sized> Withholding<S> {
    /// Wraps `inner`, showing only the `visible` kinds of learned items.
    pub fn new(inner: std::sync::Arc<S>, visible: Visible) -> Self {
        Withholding { visible, inner }
    }
}

impl Visible {
    fn shows(self, kind: LearnedKind) -> bool {
        match kind {
            LearnedKind::Pattern => self.patterns,
            LearnedKind::Heuristic => self.heuristics,
            LearnedKind::Lesson => self.lessons,
        }
    }
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] LearningStore for Withholding<S> => inner;
    forward apply_learning, put_learned, put_learned_unless_changed, record_feedback, list_feedback;
    {
        async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>> {
            if !self.visible.shows(id.kind()) {
                return Ok(None);
            }
            self.inner.get_learned(ns, id).await
        }

        async fn query_learned(
            &self,
            ns: &Namespace,
            kind: LearnedKind,
            query: &LearnedQuery,
        ) -> Result<Vec<LearnedItem>> {
            if !self.visible.shows(kind) {
                return Ok(Vec::new());
            }
            self.inner.query_learned(ns, kind, query).await
        }
    }
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] EpisodeStore for Withholding<S> => inner;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] EmbeddingStore for Withholding<S> => inner;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] MaintenanceStore for Withholding<S> => inner;
    forward all;
    {}
}

memory_core::forward_storage! {
    impl[S: Storage + ?Sized] Storage for Withholding<S> => inner;
    forward;
    {
        fn backend_name(&self) -> &'static str {
            self.inner.backend_name()
        }
    }
}
