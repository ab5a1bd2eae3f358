//! The settings chosen on some of the sets ([`Choice`]): the fusion family with the best
//! least margin over the better part, and the abstention thresholds fitted on the same sets.

use serde::{Deserialize, Serialize};

use memory_core::{FusionMethod, RetrievalConfig};

use super::grid::{Family, FusionSetting};
use super::measure::{QueryScore, abstention, rank_scores};

/// What a choice of settings is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// [`RetrievalConfig::fusion`].
    pub fusion: FusionMethod,
    /// [`RetrievalConfig::rank_constant`].
    pub rank_constant: f64,
    /// [`RetrievalConfig::semantic_trust_from`].
    pub semantic_trust_from: f32,
    /// [`RetrievalConfig::semantic_trust_full`].
    pub semantic_trust_full: f32,
    /// [`RetrievalConfig::dense_weight`].
    pub dense_weight: f64,
    /// [`RetrievalConfig::dense_weight_bare`].
    pub dense_weight_bare: f64,
    /// [`RetrievalConfig::unknown_term_shift`].
    #[serde(default)]
    pub unknown_term_shift: f64,
    /// [`RetrievalConfig::unknown_term_shift_bare`].
    #[serde(default)]
    pub unknown_term_shift_bare: f64,
    /// [`RetrievalConfig::window_weight`].
    #[serde(default)]
    pub window_weight: f32,
    /// [`RetrievalConfig::strong_match_cosine`].
    pub strong_match_cosine: f32,
    /// [`RetrievalConfig::strong_match_cosine_bare`].
    pub strong_match_cosine_bare: f32,
}

impl Choice {
    /// `c` with these settings.
    pub fn apply(&self, c: &RetrievalConfig) -> RetrievalConfig {
        RetrievalConfig {
            fusion: self.fusion,
            rank_constant: self.rank_constant,
            semantic_trust_from: self.semantic_trust_from,
            semantic_trust_full: self.semantic_trust_full,
            dense_weight: self.dense_weight,
            dense_weight_bare: self.dense_weight_bare,
            unknown_term_shift: self.unknown_term_shift,
            unknown_term_shift_bare: self.unknown_term_shift_bare,
            window_weight: self.window_weight,
            strong_match_cosine: self.strong_match_cosine,
            strong_match_cosine_bare: self.strong_match_cosine_bare,
            ..c.clone()
        }
    }

    /// The settings of `c`.
    pub fn of(c: &RetrievalConfig) -> Self {
        Choice {
            fusion: c.fusion,
            rank_constant: c.rank_constant,
            semantic_trust_from: c.semantic_trust_from,
            semantic_trust_full: c.semantic_trust_full,
            dense_weight: c.dense_weight,
            dense_weight_bare: c.dense_weight_bare,
            unknown_term_shift: c.unknown_term_shift,
            unknown_term_shift_bare: c.unknown_term_shift_bare,
            window_weight: c.window_weight,
            strong_match_cosine: c.strong_match_cosine,
            strong_match_cosine_bare: c.strong_match_cosine_bare,
        }
    }
    /// What both modes share (see [`FusionSetting::family`]).
    fn family(&self) -> Family {
        (
            self.fusion,
            self.rank_constant.to_bits(),
            self.semantic_trust_from.to_bits(),
            self.semantic_trust_full.to_bits(),
            self.window_weight.to_bits(),
        )
    }

    /// Where in `grid` the setting of mode `slot` (0: with context, 1: description only) is.
    pub(super) fn position_in(&self, grid: &[FusionSetting], slot: usize) -> Option<usize> {
        let (weight, shift) = if slot == 0 {
            (self.dense_weight, self.unknown_term_shift)
        } else {
            (self.dense_weight_bare, self.unknown_term_shift_bare)
        };
        grid.iter().position(|s| {
            s.family() == self.family()
                && s.dense_weight.to_bits() == weight.to_bits()
                && s.unknown_term_shift.to_bits() == shift.to_bits()
        })
    }

    /// The abstention threshold of mode `slot` (0: with context, 1: description only).
    pub(super) fn threshold(&self, slot: usize) -> f32 {
        if slot == 0 {
            self.strong_match_cosine
        } else {
            self.strong_match_cosine_bare
        }
    }
}

/// The threshold minimizing the mean missed share of no-answer queries (over the sets that
/// have some) plus the mean false-flag share (over every set), on `runs` (one per set); of
/// equally good thresholds the middle one. `fallback` when no set has a support.
pub(super) fn fit_threshold(runs: &[&[QueryScore]], fallback: f32) -> f32 {
    let values: Vec<f32> = runs
        .iter()
        .flat_map(|r| r.iter().filter_map(|q| q.support))
        .collect();
    let cost = |t: f32| -> f64 {
        let (mut missed, mut with_no_answer, mut false_flags) = (0.0, 0usize, 0.0);
        for run in runs {
            let a = abstention(run, t);
            if a.no_answer_queries > 0 {
                missed += 1.0 - a.flag_rate();
                with_no_answer += 1;
            }
            false_flags += a.false_flag_rate();
        }
        let missed = if with_no_answer == 0 {
            0.0
        } else {
            missed / with_no_answer as f64
        };
        missed + false_flags / runs.len().max(1) as f64
    };
    crate::least_cost_threshold(values, cost).unwrap_or(fallback)
}

/// Per set, per mode: the runs of every grid setting, the vector run (its supports), and
/// the better part's scores.
pub(super) struct Measured {
    /// `[set][mode][setting]`.
    pub(super) grid: Vec<[Vec<Vec<QueryScore>>; 2]>,
    /// `[set][mode]`.
    pub(super) vector: Vec<[Vec<QueryScore>; 2]>,
    /// `[set][mode]`: the higher of lexical and vector retrieval's recall@5, and of their
    /// nDCG@10.
    pub(super) parts: Vec<[(f64, f64); 2]>,
}

/// The better part of `lexical` and `vector` (recall@5, nDCG@10), each taken separately.
pub(super) fn better_part(lexical: &[QueryScore], vector: &[QueryScore]) -> (f64, f64) {
    let (l, v) = (rank_scores(lexical), rank_scores(vector));
    (
        l.recall_at_5.max(v.recall_at_5),
        l.ndcg_at_10.max(v.ndcg_at_10),
    )
}

/// The worst margin of `run` over its set's better part: the smaller of recall@5 and
/// nDCG@10 minus the better part's.
fn margin(run: &[QueryScore], part: (f64, f64)) -> f64 {
    let s = rank_scores(run);
    (s.recall_at_5 - part.0).min(s.ndcg_at_10 - part.1)
}

/// The choice made on the sets in `mask`: the fusion family whose best setting per mode
/// (weight and shift) has the highest least margin over those sets (both modes summed;
/// ties keep the first in grid order), with thresholds fitted on them.
pub(super) fn choose(
    grid: &[FusionSetting],
    m: &Measured,
    mask: &[bool],
    given: &Choice,
) -> Choice {
    let least_margin = |mode: usize, setting: usize| -> f64 {
        let mut least = f64::INFINITY;
        for ((runs, part), _) in m.grid.iter().zip(&m.parts).zip(mask).filter(|(_, k)| **k) {
            least = least.min(margin(&runs[mode][setting], part[mode]));
        }
        if least.is_finite() { least } else { 0.0 }
    };
    let mut families: Vec<Family> = Vec::new();
    for s in grid {
        if !families.contains(&s.family()) {
            families.push(s.family());
        }
    }
    let mut best: Option<(f64, [usize; 2])> = None;
    for family in families {
        let mut picks = [0usize; 2];
        let mut total = 0.0;
        for (mode, pick) in picks.iter_mut().enumerate() {
            let mut top = (usize::MAX, f64::NEG_INFINITY);
            for (i, s) in grid.iter().enumerate() {
                if s.family() != family {
                    continue;
                }
                let j = least_margin(mode, i);
                if j > top.1 + 1e-12 {
                    top = (i, j);
                }
            }
            *pick = top.0;
            total += top.1;
        }
        if best.is_none_or(|(b, _)| total > b + 1e-12) {
            best = Some((total, picks));
        }
    }
    let thresholds: Vec<f32> = (0..2)
        .map(|mode| {
            let runs: Vec<&[QueryScore]> = m
                .vector
                .iter()
                .zip(mask)
                .filter(|(_, k)| **k)
                .map(|(v, _)| v[mode].as_slice())
                .collect();
            fit_threshold(&runs, given.threshold(mode))
        })
        .collect();
    let Some((_, [a, b])) = best else {
        return *given;
    };
    let (Some(ctx), Some(bare)) = (grid.get(a), grid.get(b)) else {
        return *given;
    };
    Choice {
        fusion: ctx.fusion,
        rank_constant: ctx.rank_constant,
        semantic_trust_from: ctx.semantic_trust_from,
        semantic_trust_full: ctx.semantic_trust_full,
        dense_weight: ctx.dense_weight,
        dense_weight_bare: bare.dense_weight,
        unknown_term_shift: ctx.unknown_term_shift,
        unknown_term_shift_bare: bare.unknown_term_shift,
        window_weight: ctx.window_weight,
        strong_match_cosine: thresholds[0],
        strong_match_cosine_bare: thresholds[1],
    }
}
