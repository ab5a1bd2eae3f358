//! Fusion of the candidate lists, re-ranking, confidence and the `why` line.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::query::{RetrievalConfig, RetrievalMethod, RetrievalQuery, ScoreBreakdown};
use super::vector_index::VectorHit;
use crate::episode::{EpisodeId, EpisodeSummary, OutcomeKind};
use crate::storage::TextHit;

/// One fused candidate before re-ranking.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub summary: Arc<EpisodeSummary>,
    pub bm25: Option<f64>,
    pub cosine: Option<f32>,
    pub similarity: Option<f32>,
    pub lexical: f64,
    pub semantic: f64,
    pub fused: f64,
}

/// Unions the lists and fuses min-max normalized scores. `score_of` gives the cosine of a
/// lexical candidate the semantic list missed. `with_context`: the query came with its
/// context (which the lexical side then also matches on).
pub(super) fn fuse(
    config: &RetrievalConfig,
    method: RetrievalMethod,
    lexical: &[TextHit],
    semantic: &[VectorHit],
    score_of: impl Fn(EpisodeId) -> Option<VectorHit>,
    with_context: bool,
) -> Vec<Candidate> {
    let mut by_id: HashMap<EpisodeId, Candidate> = HashMap::new();
    for h in semantic {
        by_id.insert(
            h.summary.id,
            Candidate {
                summary: Arc::clone(&h.summary),
                bm25: None,
                cosine: Some(h.cosine),
                similarity: Some(h.similarity),
                lexical: 0.0,
                semantic: 0.0,
                fused: 0.0,
            },
        );
    }
    for h in lexical {
        let c = by_id.entry(h.episode_id).or_insert_with(|| {
            let hit = score_of(h.episode_id);
            Candidate {
                summary: Arc::new(h.summary.clone()),
                bm25: None,
                cosine: hit.as_ref().map(|v| v.cosine),
                similarity: hit.map(|v| v.similarity),
                lexical: 0.0,
                semantic: 0.0,
                fused: 0.0,
            }
        });
        c.bm25 = Some(h.score);
    }
    let mut out: Vec<Candidate> = by_id.into_values().collect();
    let lex = min_max(out.iter().map(|c| c.bm25.unwrap_or(0.0)));
    let sem = min_max(out.iter().map(|c| f64::from(c.cosine.unwrap_or(0.0))));
    let w = if with_context {
        config.dense_weight
    } else {
        config.dense_weight_bare
    }
    .clamp(0.0, 1.0);
    for c in &mut out {
        c.lexical = lex.apply(c.bm25.unwrap_or(0.0));
        c.semantic = sem.apply(f64::from(c.cosine.unwrap_or(0.0)));
        c.fused = match method {
            RetrievalMethod::Lexical => c.lexical,
            RetrievalMethod::Vector => c.semantic,
            RetrievalMethod::Hybrid => w * c.semantic + (1.0 - w) * c.lexical,
        };
    }
    // Vector-only retrieval ranks by cosine alone: drop what only the lexical side found.
    if method == RetrievalMethod::Vector {
        out.retain(|c| c.cosine.is_some());
    }
    out
}

/// A min-max normalizer over `values` (everything maps to 1 when they are all equal and
/// positive, to 0 when all zero).
fn min_max<I: Iterator<Item = f64>>(values: I) -> MinMax {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    MinMax { lo, hi }
}

/// A min-max normalization range.
#[derive(Debug, Clone, Copy)]
struct MinMax {
    lo: f64,
    hi: f64,
}

impl MinMax {
    fn apply(self, v: f64) -> f64 {
        if self.hi > self.lo {
            ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
        } else if v > 0.0 {
            1.0
        } else {
            0.0
        }
    }
}

/// Share of the query's kind of work (task type, domain) the episode shares. The stack
/// (language, framework) is left out: see `RetrievalConfig::context_weight`.
fn context_match(query: &RetrievalQuery, e: &EpisodeSummary) -> f64 {
    let mut asked = 0u32;
    let mut shared = 0u32;
    if let Some(t) = query.task_type {
        asked += 1;
        shared += u32::from(t == e.task_type);
    }
    if let Some(c) = &query.context
        && !c.domain.is_empty()
    {
        asked += 1;
        shared += u32::from(c.domain.eq_ignore_ascii_case(&e.context.domain));
    }
    if asked == 0 {
        0.0
    } else {
        f64::from(shared) / f64::from(asked)
    }
}

/// The final score of a candidate.
pub(super) fn rerank(
    config: &RetrievalConfig,
    query: &RetrievalQuery,
    e: &EpisodeSummary,
    c: &Candidate,
    now: DateTime<Utc>,
) -> ScoreBreakdown {
    let context_match = context_match(query, e);
    let reward = e.reward.map(|r| r.clamp(0.0, 1.0));
    let outcome = reward.map_or(0.0, |r| config.outcome_weight * (r - 0.5) * 2.0);
    let age_days = (now - e.started_at).num_seconds().max(0) as f64 / 86_400.0;
    let half_life = config.recency_half_life_days.max(f64::MIN_POSITIVE);
    let recency = 1.0 - config.recency_weight * (1.0 - 0.5f64.powf(age_days / half_life));
    let score = c.fused * (1.0 + config.context_weight * context_match) * (1.0 + outcome) * recency;
    ScoreBreakdown {
        bm25: c.bm25,
        lexical: c.lexical,
        cosine: c.cosine.map(f64::from),
        similarity: c.similarity.map(f64::from),
        semantic: c.semantic,
        fused: c.fused,
        context_match,
        reward,
        recency,
        score,
    }
}

/// Calibrated confidence from the support (the mean plain cosine of the closest episodes): a
/// logistic centred on the strong-match threshold (0.5 there), rising to ~0.95 at +0.12.
pub(super) fn confidence(best_similarity: f32, threshold: f32) -> f64 {
    let x = f64::from(best_similarity - threshold) / 0.04;
    1.0 / (1.0 + (-x).exp())
}

/// One readable line on why a result was returned.
pub(super) fn why(query: &RetrievalQuery, e: &EpisodeSummary, b: &ScoreBreakdown) -> String {
    let mut parts = Vec::new();
    if let Some(c) = b.similarity {
        parts.push(format!("semantic similarity {c:.2}"));
    }
    if b.bm25.is_some() {
        parts.push(format!("shares terms (lexical {:.2})", b.lexical));
    }
    let mut same = Vec::new();
    if let Some(c) = &query.context {
        if c.language.is_some() && c.language == e.context.language {
            same.push("language");
        }
        if c.framework.is_some() && c.framework == e.context.framework {
            same.push("framework");
        }
        if !c.domain.is_empty() && c.domain == e.context.domain {
            same.push("domain");
        }
    }
    if query.task_type == Some(e.task_type) {
        same.push("task type");
    }
    if !same.is_empty() {
        parts.push(format!("same {}", same.join(", ")));
    }
    match e.outcome {
        Some(OutcomeKind::Success) => parts.push("succeeded".to_owned()),
        Some(OutcomeKind::PartialSuccess) => parts.push("partly succeeded".to_owned()),
        Some(OutcomeKind::Failure) => parts.push("failed (a pitfall to avoid)".to_owned()),
        Some(OutcomeKind::Abstained) => parts.push("abstained".to_owned()),
        None => parts.push("still in progress".to_owned()),
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_maps_to_unit_range() {
        let f = min_max([2.0, 4.0, 6.0].into_iter());
        assert!((f.apply(2.0)).abs() < 1e-9);
        assert!((f.apply(4.0) - 0.5).abs() < 1e-9);
        assert!((f.apply(6.0) - 1.0).abs() < 1e-9);
        let g = min_max([3.0, 3.0].into_iter());
        assert!((g.apply(3.0) - 1.0).abs() < 1e-9);
        assert!(g.apply(0.0).abs() < 1e-9);
    }

    #[test]
    fn confidence_is_one_half_at_the_threshold_and_monotone() {
        assert!((confidence(0.55, 0.55) - 0.5).abs() < 1e-6);
        assert!(confidence(0.70, 0.55) > 0.95);
        assert!(confidence(0.40, 0.55) < 0.05);
        assert!(confidence(0.6, 0.55) > confidence(0.58, 0.55));
    }
}
