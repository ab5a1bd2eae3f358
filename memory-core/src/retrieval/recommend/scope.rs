//! What the advice of a recommendation rests on: how strong the match is, which episodes are
//! similar and teach, and which context's learned items are read.

use super::RecommendRequest;
use crate::episode::{EpisodeId, EpisodeSummary, TaskContext, TaskType};
use crate::learned::ContextKey;
use crate::retrieval::taught::MAX_TEACHERS;
use crate::retrieval::{Retrieval, RetrievalConfig, RetrievedEpisode};
use crate::storage::LearnedQuery;
use crate::text::normalize_label;

/// Whether an episode of `task_type` in `context` is of the request's own context: its kind
/// of task (when given), domain and language.
pub(super) fn in_given_context(
    task_type: TaskType,
    context: &TaskContext,
    req: &RecommendRequest,
) -> bool {
    let Some(ctx) = &req.context else {
        return false;
    };
    req.task_type.is_none_or(|t| t == task_type)
        && normalize_label(Some(&ctx.domain)) == normalize_label(Some(&context.domain))
        && normalize_label(ctx.language.as_deref()) == normalize_label(context.language.as_deref())
}

/// Items of the task's context read per kind, most-seen first: a floor under the items the
/// similar episodes taught (which are read whatever their rank), not the selection itself.
pub(super) const CONTEXT_ITEMS: u32 = 200;

/// How sure the match behind a recommendation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// Calibrated and strong.
    Strong,
    /// Calibrated: nothing close.
    Weak,
    /// Lexical only: nothing calibrated says how close.
    Lexical,
}

impl Match {
    /// The match of a retrieval: `strong`, else calibrated (with a `confidence`) or lexical.
    pub(super) fn of(strong: bool, confidence: Option<f64>) -> Self {
        match (strong, confidence) {
            (true, _) => Match::Strong,
            (false, Some(_)) => Match::Weak,
            (false, None) => Match::Lexical,
        }
    }

    /// The label every playbook step carries when the match is not strong.
    pub(super) fn label(self) -> Option<&'static str> {
        match self {
            Match::Strong => None,
            Match::Weak => Some("context default, nothing similar"),
            Match::Lexical => Some("lexical match only"),
        }
    }
}

/// One line on what the learned advice rests on.
pub(super) fn advice_basis(
    similar: &[&RetrievedEpisode],
    strength: Match,
    req: &RecommendRequest,
    has_context: bool,
) -> String {
    let given = ContextKey {
        task_type: req.task_type,
        domain: normalize_label(req.context.as_ref().map(|c| c.domain.as_str())),
        language: normalize_label(req.context.as_ref().and_then(|c| c.language.as_deref())),
    }
    .label();
    let n = similar.len().min(MAX_TEACHERS);
    match (strength, has_context) {
        (Match::Strong, _) => {
            format!("what the {n} similar episode(s) taught, and the items of their context")
        }
        (Match::Lexical, true) => format!(
            "lexical matches only (no calibrated confidence): what the {n} episode(s) sharing the most words taught within the given context ({given}), and that context's items"
        ),
        (Match::Weak, true) => {
            format!("no similar past task: only items of the given context ({given}), as a default")
        }
        (Match::Lexical, false) => {
            "lexical matches only and no context given: no learned advice".to_owned()
        }
        (Match::Weak, false) => {
            "no similar past task and no context given: no learned advice".to_owned()
        }
    }
}

/// The similar episodes: close in meaning when that is measurable (within 0.1 of the strong
/// match threshold), else the top lexical hits.
pub(super) fn similar_episodes<'r>(
    retrieval: &'r Retrieval,
    req: &RecommendRequest,
    rc: &RetrievalConfig,
) -> Vec<&'r RetrievedEpisode> {
    let threshold = f64::from(if req.context.is_some() || req.task_type.is_some() {
        rc.strong_match_cosine
    } else {
        rc.strong_match_cosine_bare
    });
    if retrieval.confidence.is_some() {
        retrieval
            .results
            .iter()
            .filter(|r| r.breakdown.cosine.is_some_and(|c| c >= threshold - 0.1))
            .collect()
    } else {
        retrieval.results.iter().take(5).collect()
    }
}

/// The learned query of a kind of task and context: the items of that context, most-seen first.
pub(super) fn learned_query(
    task_type: Option<TaskType>,
    context: Option<&TaskContext>,
) -> LearnedQuery {
    LearnedQuery {
        task_type,
        domain: context.map(|c| c.domain.clone()).filter(|d| !d.is_empty()),
        language: context.and_then(|c| c.language.clone()),
        limit: CONTEXT_ITEMS,
        ..LearnedQuery::default()
    }
}

/// The request's own scope (when it gives a kind of task or a context) and the context whose
/// items are read.
///
/// The request's own context bounds everything; without one, the context of the closest
/// episode is used, but only when it is a strong match: a weak hit's context is another
/// task's, and its advice would be dressed up as specific.
pub(super) fn learned_scopes(
    req: &RecommendRequest,
    closest: Option<&EpisodeSummary>,
    strong: bool,
) -> (Option<LearnedQuery>, Option<LearnedQuery>) {
    let explicit = req.context.is_some() || req.task_type.is_some();
    let scope = explicit.then(|| learned_query(req.task_type, req.context.as_ref()));
    let context = match (&scope, closest) {
        (Some(q), _) => Some(q.clone()),
        (None, Some(e)) if strong => Some(learned_query(Some(e.task_type), Some(&e.context))),
        _ => None,
    };
    (scope, context)
}

/// The similar episodes whose teachings are read, each with its weight; `explicit` when the
/// request gives a kind of task or a context.
///
/// On a calibrated weak match the near misses teach nothing; lexically, what shares the most
/// words is all there is to go on, within the given context.
pub(super) fn teachers(
    similar: &[&RetrievedEpisode],
    strength: Match,
    explicit: bool,
) -> Vec<(EpisodeId, f64)> {
    if strength == Match::Strong || (strength == Match::Lexical && explicit) {
        // Weighted by closeness in meaning, else by the normalized lexical score.
        similar
            .iter()
            .map(|r| {
                let w = r.breakdown.cosine.map_or(r.breakdown.lexical, f64::from);
                (r.episode.id, w.max(0.0))
            })
            .collect()
    } else {
        Vec::new()
    }
}
