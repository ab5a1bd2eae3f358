//! Fusion of the candidate lists, re-ranking, confidence and the `why` line.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::query::{
    FusionMethod, RetrievalConfig, RetrievalMethod, RetrievalQuery, ScoreBreakdown,
};
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
    /// The step window whose vector gave the semantic score (numbered from 0), when one beat
    /// the episode's own vector.
    pub window: Option<u16>,
    pub lexical: f64,
    pub semantic: f64,
    pub fused: f64,
}

/// Unions the lists and fuses min-max normalized scores. `score_of` gives the cosine of a
/// lexical candidate the semantic list missed. `with_context`: the query came with its
/// context (which the lexical side then also matches on). `known_share`: the share of the
/// lexical query's terms the index knows ([`TextSearch::known_share`](crate::TextSearch)).
pub(super) fn fuse(
    config: &RetrievalConfig,
    method: RetrievalMethod,
    lexical: &[TextHit],
    semantic: &[VectorHit],
    score_of: impl Fn(EpisodeId) -> Option<VectorHit>,
    with_context: bool,
    known_share: Option<f64>,
) -> Vec<Candidate> {
    let mut out = union(lexical, semantic, score_of);
    let lex = min_max(out.iter().map(|c| c.bm25.unwrap_or(0.0)));
    let sem = min_max(out.iter().map(|c| f64::from(c.cosine.unwrap_or(0.0))));
    let best_cosine = out
        .iter()
        .filter_map(|c| c.cosine)
        .fold(None, |m: Option<f32>, c| Some(m.map_or(c, |m| m.max(c))));
    let w =
        semantic_weight(config, with_context, known_share) * semantic_trust(config, best_cosine);
    for c in &mut out {
        c.lexical = lex.apply(c.bm25.unwrap_or(0.0));
        c.semantic = sem.apply(f64::from(c.cosine.unwrap_or(0.0)));
    }
    match method {
        RetrievalMethod::Lexical => {
            for c in &mut out {
                c.fused = c.lexical;
            }
        }
        RetrievalMethod::Vector => {
            // Vector-only retrieval ranks by cosine alone: drop what only the lexical side
            // found.
            out.retain(|c| c.cosine.is_some());
            for c in &mut out {
                c.fused = c.semantic;
            }
        }
        RetrievalMethod::Hybrid => {
            let raw = hybrid_scores(config, &out, w);
            let range = min_max(raw.iter().copied());
            for (c, r) in out.iter_mut().zip(raw) {
                c.fused = range.apply(r);
            }
        }
    }
    out
}

/// The union of both lists, one candidate per episode, in a fixed order (by id) so ties among
/// ranks do not depend on a map's iteration order; scores not yet normalized.
fn union(
    lexical: &[TextHit],
    semantic: &[VectorHit],
    score_of: impl Fn(EpisodeId) -> Option<VectorHit>,
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
                window: h.row.checked_sub(1),
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
                similarity: hit.as_ref().map(|v| v.similarity),
                window: hit.and_then(|v| v.row.checked_sub(1)),
                lexical: 0.0,
                semantic: 0.0,
                fused: 0.0,
            }
        });
        c.bm25 = Some(h.score);
    }
    let mut out: Vec<Candidate> = by_id.into_values().collect();
    // A fixed order (by id), so ties among ranks do not depend on the map's iteration order.
    out.sort_by_key(|c| c.summary.id);
    out
}

/// The hybrid scores of `out` (normalized lexical and semantic scores in place) before their
/// own min-max normalization, by the configured fusion, the semantic side weighted `w`.
fn hybrid_scores(config: &RetrievalConfig, out: &[Candidate], w: f64) -> Vec<f64> {
    match config.fusion {
        FusionMethod::MinMax => out
            .iter()
            .map(|c| w * c.semantic + (1.0 - w) * c.lexical)
            .collect(),
        FusionMethod::ReciprocalRank => {
            let k = config.rank_constant.max(0.0);
            let sem_rank = ranks(out.iter().map(|c| c.cosine.map(f64::from)));
            let lex_rank = ranks(out.iter().map(|c| c.bm25));
            sem_rank
                .iter()
                .zip(&lex_rank)
                .map(|(s, l)| {
                    let part = |r: &Option<usize>| r.map_or(0.0, |r| 1.0 / (k + r as f64));
                    w * part(s) + (1.0 - w) * part(l)
                })
                .collect()
        }
        FusionMethod::ZScore => {
            let sem_z = z_scores(out.iter().map(|c| c.cosine.map(f64::from)));
            let lex_z = z_scores(out.iter().map(|c| c.bm25));
            sem_z
                .iter()
                .zip(&lex_z)
                .map(|(s, l)| w * s + (1.0 - w) * l)
                .collect()
        }
    }
}

/// The least and the most weight the shift for unknown query words gives either list
/// ([`semantic_weight`]): it never takes a list's last tenth.
const SHIFTED_WEIGHT_RANGE: (f64, f64) = (0.1, 0.9);

/// The semantic list's weight for one query before the trust ramp: the configured weight
/// for a query whose every word the lexical index knows, raised by
/// [`RetrievalConfig::unknown_term_shift`] times the share of its words the index has never
/// seen (a paraphrase in words the memory does not use: BM25 is blind to those words). The
/// shift keeps the weight within 0.1-0.9 (or the configured weight, if that lies outside),
/// so no query loses a list by it.
fn semantic_weight(config: &RetrievalConfig, with_context: bool, known_share: Option<f64>) -> f64 {
    let (base, shift) = if with_context {
        (config.dense_weight, config.unknown_term_shift)
    } else {
        (config.dense_weight_bare, config.unknown_term_shift_bare)
    };
    let base = base.clamp(0.0, 1.0);
    let unknown = known_share.map_or(0.0, |k| 1.0 - k.clamp(0.0, 1.0));
    let (lo, hi) = SHIFTED_WEIGHT_RANGE;
    (base + shift * unknown).clamp(base.min(lo), base.max(hi))
}

/// How much of its configured weight the semantic list gets, from the best centered cosine
/// among the candidates (see [`RetrievalConfig::semantic_trust_from`]): 0 below `from`, 1
/// from `full`, linear between; 1 when the ramp is off, 0 with no semantic score at all.
fn semantic_trust(config: &RetrievalConfig, best_cosine: Option<f32>) -> f64 {
    let (from, full) = (config.semantic_trust_from, config.semantic_trust_full);
    if full.partial_cmp(&from) != Some(std::cmp::Ordering::Greater) {
        return 1.0;
    }
    best_cosine.map_or(0.0, |c| {
        f64::from(((c - from) / (full - from)).clamp(0.0, 1.0))
    })
}

/// 1-based ranks of the present values, best (highest) first; ties share the order of
/// appearance. `None` stays `None` (the list did not find the candidate).
fn ranks(values: impl Iterator<Item = Option<f64>>) -> Vec<Option<usize>> {
    let values: Vec<Option<f64>> = values.collect();
    let mut order: Vec<usize> = (0..values.len()).filter(|i| values[*i].is_some()).collect();
    order.sort_by(|a, b| {
        let (x, y) = (values[*a].unwrap_or(0.0), values[*b].unwrap_or(0.0));
        y.total_cmp(&x).then_with(|| a.cmp(b))
    });
    let mut out = vec![None; values.len()];
    for (rank, i) in order.into_iter().enumerate() {
        out[i] = Some(rank + 1);
    }
    out
}

/// Standard scores of the present values over the present values; a missing value (the list
/// did not find the candidate) gets the lowest present score, and a list whose values are all
/// equal (or that has fewer than two) gives 0 everywhere: it says nothing about the order.
fn z_scores(values: impl Iterator<Item = Option<f64>>) -> Vec<f64> {
    let values: Vec<Option<f64>> = values.collect();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    if present.len() < 2 {
        return vec![0.0; values.len()];
    }
    let n = present.len() as f64;
    let mean = present.iter().sum::<f64>() / n;
    let var = present.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt();
    if sd <= f64::EPSILON * mean.abs().max(1.0) {
        return vec![0.0; values.len()];
    }
    let low = present.iter().copied().fold(f64::INFINITY, f64::min);
    values
        .iter()
        .map(|v| (v.unwrap_or(low) - mean) / sd)
        .collect()
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
        window: c.window,
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
    use chrono::Utc;

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
    fn ranks_order_present_values_and_leave_the_missing_out() {
        let r = ranks([Some(0.2), None, Some(0.9), Some(0.2)].into_iter());
        assert_eq!(r, vec![Some(2), None, Some(1), Some(3)]);
        assert!(ranks(std::iter::empty()).is_empty());
    }

    #[test]
    fn z_scores_standardize_and_put_the_missing_at_the_bottom() {
        let z = z_scores([Some(1.0), Some(3.0), None].into_iter());
        assert!(
            (z[0] + 1.0).abs() < 1e-9 && (z[1] - 1.0).abs() < 1e-9,
            "{z:?}"
        );
        assert!((z[2] - z[0]).abs() < 1e-9, "{z:?}");
        assert_eq!(z_scores([Some(2.0), Some(2.0)].into_iter()), vec![0.0, 0.0]);
        assert_eq!(z_scores([Some(2.0), None].into_iter()), vec![0.0, 0.0]);
    }

    fn summary(n: u8) -> Arc<EpisodeSummary> {
        use crate::episode::{NewEpisode, TaskContext, TaskType};
        let new = NewEpisode::new(format!("task {n}"), TaskType::Other, TaskContext::new("d"));
        Arc::new(crate::episode::Episode::start(new, Utc::now()).summary())
    }

    /// Four candidates: two found by both lists, one only by each; the lexical list is
    /// peaked (one score far above the rest), the semantic one flat.
    fn lists() -> Lists {
        let s: Vec<Arc<EpisodeSummary>> = (0..4).map(summary).collect();
        let text = |i: usize, score: f64| TextHit {
            episode_id: s[i].id,
            score,
            summary: (*s[i]).clone(),
        };
        let vector = |i: usize, cosine: f32| VectorHit {
            summary: Arc::clone(&s[i]),
            cosine,
            similarity: cosine,
            row: 0,
        };
        let lexical = vec![text(0, 12.0), text(1, 2.0), text(2, 1.8)];
        let semantic = vec![vector(1, 0.52), vector(0, 0.50), vector(3, 0.49)];
        (lexical, semantic, s)
    }

    type Lists = (Vec<TextHit>, Vec<VectorHit>, Vec<Arc<EpisodeSummary>>);

    fn fused_order((lexical, semantic, _): &Lists, fusion: FusionMethod, w: f64) -> Vec<EpisodeId> {
        let config = RetrievalConfig {
            fusion,
            dense_weight: w,
            dense_weight_bare: w,
            ..RetrievalConfig::default()
        };
        let mut out = fuse(
            &config,
            RetrievalMethod::Hybrid,
            lexical,
            semantic,
            |_| None,
            true,
            None,
        );
        assert!(out.iter().all(|c| (0.0..=1.0).contains(&c.fused)));
        out.sort_by(|a, b| b.fused.total_cmp(&a.fused));
        out.iter().map(|c| c.summary.id).collect()
    }

    #[test]
    fn unknown_query_words_shift_the_weight_to_the_vector_within_bounds() {
        let config = RetrievalConfig {
            dense_weight: 0.5,
            unknown_term_shift: 1.0,
            dense_weight_bare: 0.35,
            unknown_term_shift_bare: 1.5,
            ..RetrievalConfig::default()
        };
        let w = |ctx, known| semantic_weight(&config, ctx, known);
        // Every word known, or no lexical query: the configured weight.
        assert!((w(true, Some(1.0)) - 0.5).abs() < 1e-9);
        assert!((w(true, None) - 0.5).abs() < 1e-9);
        assert!((w(false, Some(1.0)) - 0.35).abs() < 1e-9);
        // A fifth of the words unknown: 0.35 + 1.5 x 0.2.
        assert!((w(false, Some(0.8)) - 0.65).abs() < 1e-9);
        // Most words unknown: never more than 0.9, so BM25 keeps a tenth.
        assert!((w(false, Some(0.0)) - 0.9).abs() < 1e-9);
        assert!((w(true, Some(0.0)) - 0.9).abs() < 1e-9);
        // A configured weight outside the range stays as configured.
        let vector_only = RetrievalConfig {
            dense_weight: 1.0,
            ..config.clone()
        };
        assert!((semantic_weight(&vector_only, true, Some(0.0)) - 1.0).abs() < 1e-9);
        // A paraphrase reorders: lexical peaked on 0, semantic on 1.
        let lists = lists();
        let run = |known| {
            let mut out = fuse(
                &config,
                RetrievalMethod::Hybrid,
                &lists.0,
                &lists.1,
                |_| None,
                false,
                known,
            );
            out.sort_by(|a, b| b.fused.total_cmp(&a.fused));
            out[0].summary.id
        };
        assert_eq!(run(Some(1.0)), lists.2[0].id);
        assert_eq!(run(Some(0.3)), lists.2[1].id);
    }

    #[test]
    fn semantic_trust_ramps_with_the_best_cosine() {
        let config = RetrievalConfig {
            semantic_trust_from: 0.1,
            semantic_trust_full: 0.3,
            ..RetrievalConfig::default()
        };
        assert!(semantic_trust(&config, Some(0.05)).abs() < 1e-9);
        assert!((semantic_trust(&config, Some(0.2)) - 0.5).abs() < 1e-6);
        assert!((semantic_trust(&config, Some(0.9)) - 1.0).abs() < 1e-9);
        assert!(semantic_trust(&config, None).abs() < 1e-9);
        let off = RetrievalConfig {
            semantic_trust_from: 0.3,
            semantic_trust_full: 0.3,
            ..RetrievalConfig::default()
        };
        assert!((semantic_trust(&off, Some(-1.0)) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_query_no_episode_is_close_to_is_ranked_by_its_words() {
        let (lexical, semantic, s) = lists();
        // The semantic list's best centered cosine (0.52) is below where trust starts: the
        // lexical list alone orders the candidates, whatever the semantic weight.
        let config = RetrievalConfig {
            fusion: FusionMethod::MinMax,
            dense_weight: 0.9,
            semantic_trust_from: 0.6,
            semantic_trust_full: 0.8,
            ..RetrievalConfig::default()
        };
        let mut out = fuse(
            &config,
            RetrievalMethod::Hybrid,
            &lexical,
            &semantic,
            |_| None,
            true,
            None,
        );
        out.sort_by(|a, b| b.fused.total_cmp(&a.fused));
        assert_eq!(out[0].summary.id, s[0].id);
        assert!(out.iter().all(|c| (c.fused - c.lexical).abs() < 1e-9));
    }

    #[test]
    fn every_fusion_keeps_both_lists_candidates() {
        let lists = lists();
        for fusion in [
            FusionMethod::MinMax,
            FusionMethod::ReciprocalRank,
            FusionMethod::ZScore,
        ] {
            let order = fused_order(&lists, fusion, 0.5);
            assert_eq!(order.len(), 4, "{fusion}");
            for e in &lists.2 {
                assert!(order.contains(&e.id), "{fusion}");
            }
        }
    }

    #[test]
    fn z_score_fusion_follows_the_list_that_stands_out() {
        let lists = lists();
        let s = &lists.2;
        // At an even weight the peaked lexical list decides the top: episode 0 stands out
        // there, while the semantic list barely separates 1 from 0.
        assert_eq!(fused_order(&lists, FusionMethod::ZScore, 0.5)[0], s[0].id);
        // Reciprocal ranks see only the order: 0 and 1 are first and second in one list
        // each, so a semantic lean decides.
        assert_eq!(
            fused_order(&lists, FusionMethod::ReciprocalRank, 0.6)[0],
            s[1].id
        );
    }

    #[test]
    fn confidence_is_one_half_at_the_threshold_and_monotone() {
        assert!((confidence(0.55, 0.55) - 0.5).abs() < 1e-6);
        assert!(confidence(0.70, 0.55) > 0.95);
        assert!(confidence(0.40, 0.55) < 0.05);
        assert!(confidence(0.6, 0.55) > confidence(0.58, 0.55));
    }
}
