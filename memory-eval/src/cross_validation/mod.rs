//! Choosing the retrieval weights and the abstention thresholds by k-fold cross-validation on
//! a labeled tuning set ([`cross_validate`]).
//!
//! The searched weights are the ones a query is ranked with (how much the embedding counts
//! against BM25, with and without context; the lift for the same kind of work; the outcome's
//! lift) and how much of an episode's work text enters its vector. Every setting of a
//! [`WeightGrid`] runs every query once, hybrid, in both modes. Each mode's abstention
//! threshold is then fitted to the support ([`memory_core::Retrieval::support`]) of the
//! training queries: the threshold that minimizes the share of missed no-answer queries plus
//! the share of wrongly flagged answerable ones.
//!
//! The queries are split into folds (no-answer queries spread over them). Each fold is scored
//! with the setting and thresholds chosen on the other folds only, so the out-of-fold figures
//! estimate how the *selection* does on queries it did not see. The setting chosen on every
//! tuning query is the result ([`CrossValidation::chosen`]); a held-out set is then scored
//! with it and never searched.
//!
//! A setting is ranked by the mean over answerable queries of (nDCG@10 + recall@5) / 2, with
//! context and description-only summed (the work and outcome weights serve both modes); ties
//! keep the first setting in grid order. The best setting replaces the given one only when it
//! is better by more than one standard error of the paired per-query difference (the
//! one-standard-error rule): with hundreds of settings and 80 queries, the best in sample is
//! mostly the one that fits these queries' noise.

mod grid;
mod measure;
mod progress;
mod remembering;
mod scores;
mod select;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use memory_core::{Embedder, Error, MemoryConfig, Namespace, Result, Storage};

use crate::retrieval::EvalDataset;

use measure::measure_work;
use scores::{Tally, set_scores, tally};
use select::{Pick, WorkTable, fold_of, select};

pub use grid::{WeightGrid, Weights};
pub use measure::hybrid_scores;
pub(crate) use progress::Progress;
pub(crate) use remembering::Remembering;
pub use scores::{CrossValidation, ModeScores, SetScores};

/// Chooses the retrieval weights and thresholds by `folds`-fold cross-validation on `ds`
/// (see the module docs). `base` is the configuration the weights start from (its retrieval
/// settings are the given weights, added to `grid`); `open` opens a fresh, empty store for
/// each work weight; `progress` is told `(settings run, settings in all)`.
///
/// # Errors
/// Invalid grid values, fewer than 2 folds or more folds than queries, a dataset with no
/// answerable query, or any storage or embedding failure.
pub async fn cross_validate<F, Fut>(
    ds: &EvalDataset,
    base: &MemoryConfig,
    embedder: Arc<dyn Embedder>,
    grid: &WeightGrid,
    folds: usize,
    open: F,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<CrossValidation>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Storage>>>,
{
    let given = Weights::of(&base.retrieval);
    let grid = grid.clone().including(&given);
    grid.validate()?;
    let answerable = answerable_in_folds(ds, folds)?;
    let embedder: Arc<dyn Embedder> = Arc::new(Remembering::new(embedder));
    let ns = Namespace::new("eval/cross-validation")?;
    let total = grid.settings();
    let mut progress = Progress::start(total, progress);
    let mut tables = Vec::with_capacity(grid.work_weight.len());
    for &work in &grid.work_weight {
        let storage = open().await?;
        let mut config = base.clone();
        config.retrieval.work_weight = work;
        let table = measure_work(ds, &config, &grid, storage, &embedder, &ns, &mut progress);
        tables.push(table.await?);
    }
    Ok(evaluate(&tables, &grid, given, &answerable, folds, total))
}

/// Per query of `ds`, whether it is answerable; refused when `folds` is not 2..=queries or
/// no query is answerable.
fn answerable_in_folds(ds: &EvalDataset, folds: usize) -> Result<Vec<bool>> {
    if folds < 2 || folds > ds.queries.len() {
        return Err(Error::invalid(
            "folds",
            format!(
                "need 2..={} folds for {} queries",
                ds.queries.len(),
                ds.queries.len()
            ),
        ));
    }
    let answerable: Vec<bool> = ds.queries.iter().map(|q| !q.relevant.is_empty()).collect();
    if !answerable.contains(&true) {
        return Err(Error::invalid(
            "dataset",
            "no query lists a relevant episode",
        ));
    }
    Ok(answerable)
}

/// The report from what `tables` measured: the given weights, each fold scored with the
/// choice made on the others, and the choice made on every query (with and without the
/// one-standard-error rule).
fn evaluate(
    tables: &[WorkTable],
    grid: &WeightGrid,
    given: Weights,
    answerable: &[bool],
    folds: usize,
    settings_tried: usize,
) -> CrossValidation {
    let everything = vec![true; answerable.len()];
    let given_pick = Pick::of(grid, &given);
    let mut given_tally = [Tally::default(), Tally::default()];
    tally(tables, &given_pick, &everything, &mut given_tally);

    let fold = fold_of(answerable, folds);
    let mut fold_choices = Vec::with_capacity(folds);
    let mut out_of_fold = [Tally::default(), Tally::default()];
    for k in 0..folds {
        let train: Vec<bool> = fold.iter().map(|f| *f != k).collect();
        let test: Vec<bool> = fold.iter().map(|f| *f == k).collect();
        let pick = select(tables, answerable, &train, Some(&given_pick));
        tally(tables, &pick, &test, &mut out_of_fold);
        fold_choices.push(pick.weights(grid));
    }

    let pick = select(tables, answerable, &everything, Some(&given_pick));
    let mut chosen_tally = [Tally::default(), Tally::default()];
    tally(tables, &pick, &everything, &mut chosen_tally);
    let top = select(tables, answerable, &everything, None);
    let mut top_tally = [Tally::default(), Tally::default()];
    tally(tables, &top, &everything, &mut top_tally);

    CrossValidation {
        folds,
        queries: answerable.len(),
        settings_tried,
        given,
        given_scores: set_scores(&given_tally),
        fold_choices,
        out_of_fold: set_scores(&out_of_fold),
        chosen: pick.weights(grid),
        chosen_scores: set_scores(&chosen_tally),
        best_in_sample: top.weights(grid),
        best_in_sample_scores: set_scores(&top_tally),
    }
}
