//! Choosing a setting on some of the queries: the folds, the objective, the fitted
//! thresholds and the one-standard-error rule.

use super::grid::{WeightGrid, Weights};

/// Per query of one mode: `(nDCG@10, recall@5)`, `None` for a no-answer query.
pub(super) type PerQuery = Vec<Option<(f64, f64)>>;

/// What every setting of one work weight measured.
pub(super) struct WorkTable {
    /// Per mode (with context, description-only), per query: the support.
    pub(super) supports: [Vec<Option<f32>>; 2],
    /// Per outcome weight: per (dense, context) pair, row-major.
    pub(super) with_context: Vec<Vec<PerQuery>>,
    /// Per outcome weight: per description-only dense weight.
    pub(super) description_only: Vec<Vec<PerQuery>>,
}

/// A choice as indexes into the grid, with fitted thresholds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pick {
    pub(super) work: usize,
    pub(super) outcome: usize,
    pub(super) with_context: usize,
    pub(super) description_only: usize,
    pub(super) thresholds: [f32; 2],
}

impl Pick {
    /// `given` as indexes into `grid` (which includes it).
    pub(super) fn of(grid: &WeightGrid, given: &Weights) -> Self {
        Pick {
            work: position(&grid.work_weight, &given.work_weight),
            outcome: position(&grid.outcome_weight, &given.outcome_weight),
            with_context: position(&grid.dense_weight, &given.dense_weight)
                * grid.context_weight.len()
                + position(&grid.context_weight, &given.context_weight),
            description_only: position(&grid.dense_weight_bare, &given.dense_weight_bare),
            thresholds: [given.strong_match_cosine, given.strong_match_cosine_bare],
        }
    }

    /// The weights of `grid` this pick stands for.
    pub(super) fn weights(&self, grid: &WeightGrid) -> Weights {
        Weights {
            work_weight: grid.work_weight[self.work],
            outcome_weight: grid.outcome_weight[self.outcome],
            dense_weight: grid.dense_weight[self.with_context / grid.context_weight.len()],
            context_weight: grid.context_weight[self.with_context % grid.context_weight.len()],
            dense_weight_bare: grid.dense_weight_bare[self.description_only],
            strong_match_cosine: self.thresholds[0],
            strong_match_cosine_bare: self.thresholds[1],
        }
    }
}

/// Which fold each query is in: no-answer queries and answerable ones are each dealt round
/// the folds in dataset order, so every fold gets its share of both.
pub(super) fn fold_of(answerable: &[bool], folds: usize) -> Vec<usize> {
    let mut next = [0usize; 2];
    answerable
        .iter()
        .map(|a| {
            let slot = &mut next[usize::from(*a)];
            let fold = *slot % folds;
            *slot += 1;
            fold
        })
        .collect()
}

/// Mean objective of `per_query` over the answerable queries in `mask`.
fn objective(per_query: &PerQuery, mask: &[bool]) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for (s, _) in per_query.iter().zip(mask).filter(|(_, m)| **m) {
        if let Some((ndcg, recall)) = s {
            sum += (ndcg + recall) / 2.0;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The first best of `settings` on `mask`, with its objective.
pub(super) fn best(settings: &[PerQuery], mask: &[bool]) -> (usize, f64) {
    let mut top = (0, f64::NEG_INFINITY);
    for (i, s) in settings.iter().enumerate() {
        let j = objective(s, mask);
        if j > top.1 + 1e-12 {
            top = (i, j);
        }
    }
    top
}

/// The threshold that minimizes missed no-answer share plus false-flag share among the queries
/// in `mask` (a query is flagged when its support is below the threshold, or it has none);
/// of equally good thresholds, the middle one.
pub(super) fn fit_threshold(supports: &[Option<f32>], answerable: &[bool], mask: &[bool]) -> f32 {
    let points: Vec<(Option<f32>, bool)> = supports
        .iter()
        .zip(answerable)
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|((s, a), _)| (*s, *a))
        .collect();
    let values: Vec<f32> = points.iter().filter_map(|(s, _)| *s).collect();
    let no_answer = points.iter().filter(|(_, a)| !a).count();
    let answerable = points.len() - no_answer;
    let cost = |t: f32| -> f64 {
        let (mut missed, mut false_flags) = (0usize, 0usize);
        for (s, a) in &points {
            let flagged = s.is_none_or(|s| s < t);
            match (a, flagged) {
                (false, false) => missed += 1,
                (true, true) => false_flags += 1,
                _ => {}
            }
        }
        crate::ratio(missed, no_answer) + crate::ratio(false_flags, answerable)
    };
    crate::least_cost_threshold(values, cost).unwrap_or(0.0)
}

/// Per answerable query in `mask`: the objective of `pick` in both modes summed.
fn per_query_objective(tables: &[WorkTable], pick: &Pick, mask: &[bool]) -> Vec<f64> {
    let Some(t) = tables.get(pick.work) else {
        return Vec::new();
    };
    let (Some(a), Some(b)) = (
        t.with_context
            .get(pick.outcome)
            .and_then(|r| r.get(pick.with_context)),
        t.description_only
            .get(pick.outcome)
            .and_then(|r| r.get(pick.description_only)),
    ) else {
        return Vec::new();
    };
    a.iter()
        .zip(b)
        .zip(mask)
        .filter(|(_, m)| **m)
        .filter_map(|((a, b), _)| match (a, b) {
            (Some((n1, r1)), Some((n2, r2))) => Some((n1 + r1) / 2.0 + (n2 + r2) / 2.0),
            _ => None,
        })
        .collect()
}

/// Whether `best` beats `given` on `mask` by more than one standard error of the paired
/// per-query difference (the one-standard-error rule: a grid this large always finds a
/// setting that looks better in sample; a change must clear the noise of the queries).
fn clearly_better(tables: &[WorkTable], best: &Pick, given: &Pick, mask: &[bool]) -> bool {
    let a = per_query_objective(tables, best, mask);
    let b = per_query_objective(tables, given, mask);
    if a.len() != b.len() || a.len() < 2 {
        return false;
    }
    let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let variance = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    mean > (variance / n).sqrt()
}

/// The best setting on the queries in `mask`, or `given` (when there is one) if the best does
/// not clearly beat it ([`clearly_better`]); with thresholds fitted on `mask`.
pub(super) fn select(
    tables: &[WorkTable],
    answerable: &[bool],
    mask: &[bool],
    given: Option<&Pick>,
) -> Pick {
    let mut top: Option<(f64, Pick)> = None;
    for (work, t) in tables.iter().enumerate() {
        for outcome in 0..t.with_context.len() {
            let (with_context, a) = best(&t.with_context[outcome], mask);
            let (description_only, b) = best(&t.description_only[outcome], mask);
            if top.as_ref().is_none_or(|(j, _)| a + b > j + 1e-12) {
                let pick = Pick {
                    work,
                    outcome,
                    with_context,
                    description_only,
                    thresholds: [0.0; 2],
                };
                top = Some((a + b, pick));
            }
        }
    }
    let mut pick = top.map_or(
        Pick {
            work: 0,
            outcome: 0,
            with_context: 0,
            description_only: 0,
            thresholds: [0.0; 2],
        },
        |(_, p)| p,
    );
    if let Some(g) = given
        && !clearly_better(tables, &pick, g, mask)
    {
        pick = *g;
    }
    if let Some(t) = tables.get(pick.work) {
        for (slot, supports) in t.supports.iter().enumerate() {
            pick.thresholds[slot] = fit_threshold(supports, answerable, mask);
        }
    }
    pick
}

/// Index of `v` in `list` (present by construction: the grid includes the given weights).
fn position<T: PartialEq>(list: &[T], v: &T) -> usize {
    list.iter().position(|x| x == v).unwrap_or(0)
}
