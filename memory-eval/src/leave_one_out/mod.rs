//! Retrieval settings chosen by leave-one-dataset-out, and every labeled set reported side by
//! side ([`leave_one_out`]).
//!
//! A set is one dataset, or a benchmark's dialogues, each its own dataset imported into a
//! namespace of its own ([`EvalSet`]). Every set is imported once; then every query runs,
//! in both modes, with lexical and vector retrieval, with the configuration's own settings,
//! and with each fusion setting of a grid ([`FusionSetting`]).
//!
//! For each set the fusion (method, rank constant, trust ramp, window weight) and each
//! mode's semantic weight and shift for unknown query words are chosen on the *other* sets
//! only. The goal is a fusion that never loses to its parts, so a setting is judged by its
//! worst margin: on each of those sets, its recall@5 and nDCG@10 over the set's answerable
//! queries minus the better of lexical and vector retrieval's on that set (every set counts
//! once, however many queries it has); the choice maximizes the least of these margins,
//! both modes summed. The abstention threshold of each
//! mode is fitted the same way, on the other sets' supports: it minimizes the mean missed
//! share of no-answer queries (over the sets that have some) plus the mean false-flag share
//! (over all of them). So no figure reported for a set comes from settings that saw it.

mod choice;
mod grid;
mod measure;
mod report;
mod set;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use memory_core::{Embedder, Error, MemoryConfig, Result, RetrievalMethod, Storage};

use crate::cross_validation::{Progress, Remembering};
use crate::retrieval::{Abstention, QueryMode};

use choice::{Measured, better_part, choose};
use measure::{Imported, QueryScore, abstention, import, rank_scores, run};

pub use choice::Choice;
pub use grid::{
    FusionSetting, GRID_DENSE_WEIGHTS, GRID_UNKNOWN_TERM_SHIFTS, GRID_WINDOW_WEIGHTS, default_grid,
};
pub use measure::RankScores;
pub use report::{LeaveOneOut, ModeRows, SetReport, format_leave_one_out};
pub use set::EvalSet;

/// The modes every set runs in, in slot order.
const MODES: [QueryMode; 2] = [QueryMode::WithContext, QueryMode::DescriptionOnly];

/// The methods run with the configuration's own settings, in slot order.
const METHODS: [RetrievalMethod; 3] = [
    RetrievalMethod::Lexical,
    RetrievalMethod::Vector,
    RetrievalMethod::Hybrid,
];

/// Per mode, the runs of lexical, vector and hybrid retrieval with the configuration's own
/// settings.
type FixedRuns = [[Vec<QueryScore>; 3]; 2];

/// Per mode, the hybrid runs of every grid setting.
type GridRuns = [Vec<Vec<QueryScore>>; 2];

/// Imports every set (each into the store `open` gives), measures every query under the
/// configuration's settings and every setting of `grid`, and reports each set with the
/// settings chosen on the others (see the module docs). `progress` is told `(runs done,
/// runs in all)`.
///
/// # Errors
/// Fewer than two sets, an empty grid, or any storage or embedding failure.
pub async fn leave_one_out<F, Fut>(
    sets: &[EvalSet],
    base: &MemoryConfig,
    embedder: Arc<dyn Embedder>,
    grid: &[FusionSetting],
    open: F,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LeaveOneOut>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Arc<dyn Storage>>>,
{
    if sets.len() < 2 {
        return Err(Error::invalid(
            "sets",
            "leave-one-dataset-out needs at least two sets",
        ));
    }
    if grid.is_empty() {
        return Err(Error::invalid("grid", "needs at least one setting"));
    }
    // Every setting re-asks for the same query vectors.
    let embedder: Arc<dyn Embedder> = Arc::new(Remembering::new(embedder));
    let given = Choice::of(&base.retrieval);
    let total = sets.len() * MODES.len() * (3 + grid.len());
    let mut progress = Progress::start(total, progress);
    let mut measured = Measured {
        grid: Vec::new(),
        vector: Vec::new(),
        parts: Vec::new(),
    };
    let mut fixed: Vec<FixedRuns> = Vec::new();
    for set in sets {
        let imported = import(set, open().await?, base, &embedder).await?;
        let (fixed_runs, grid_runs) =
            measure_set(&imported, &embedder, base, grid, &mut progress).await?;
        measured
            .vector
            .push([fixed_runs[0][1].clone(), fixed_runs[1][1].clone()]);
        measured.parts.push([
            better_part(&fixed_runs[0][0], &fixed_runs[0][1]),
            better_part(&fixed_runs[1][0], &fixed_runs[1][1]),
        ]);
        measured.grid.push(grid_runs);
        fixed.push(fixed_runs);
    }

    let everything = vec![true; sets.len()];
    let chosen_on_all = choose(grid, &measured, &everything, &given);
    let reports = sets
        .iter()
        .zip(&fixed)
        .enumerate()
        .map(|(k, (set, fixed))| {
            let mask: Vec<bool> = (0..sets.len()).map(|i| i != k).collect();
            let choice = choose(grid, &measured, &mask, &given);
            set_report(set, fixed, &measured.grid[k], grid, &given, choice)
        })
        .collect();
    Ok(LeaveOneOut {
        given,
        grid: grid.to_vec(),
        chosen_on_all,
        sets: reports,
    })
}

/// Every query of `imported` in both modes: with each method under `base`'s settings, then
/// hybrid with each setting of `grid`.
async fn measure_set(
    imported: &Imported<'_>,
    embedder: &Arc<dyn Embedder>,
    base: &MemoryConfig,
    grid: &[FusionSetting],
    progress: &mut Progress<'_>,
) -> Result<(FixedRuns, GridRuns)> {
    let mut grid_runs: GridRuns = [Vec::new(), Vec::new()];
    let mut fixed_runs: FixedRuns = Default::default();
    for (slot, mode) in MODES.into_iter().enumerate() {
        for (i, method) in METHODS.into_iter().enumerate() {
            fixed_runs[slot][i] =
                run(imported, embedder, base.retrieval.clone(), mode, method).await?;
            progress.step();
        }
        for s in grid {
            let config = s.config(&base.retrieval);
            grid_runs[slot]
                .push(run(imported, embedder, config, mode, RetrievalMethod::Hybrid).await?);
            progress.step();
        }
    }
    Ok((fixed_runs, grid_runs))
}

/// The report of `set`, measured as `fixed` and `grid_runs`, with `choice` made without it.
fn set_report(
    set: &EvalSet,
    fixed: &FixedRuns,
    grid_runs: &GridRuns,
    grid: &[FusionSetting],
    given: &Choice,
    choice: Choice,
) -> SetReport {
    let modes = MODES
        .into_iter()
        .enumerate()
        .map(|(slot, mode)| {
            let [lexical, vector, hybrid] = &fixed[slot];
            let chosen = choice
                .position_in(grid, slot)
                .and_then(|i| grid_runs[slot].get(i))
                .map_or_else(RankScores::default, |r| rank_scores(r));
            ModeRows {
                mode,
                lexical: rank_scores(lexical),
                vector: rank_scores(vector),
                hybrid_given: rank_scores(hybrid),
                hybrid_chosen: chosen,
                abstention_given: abstention(vector, given.threshold(slot)),
                abstention_chosen: abstention(vector, choice.threshold(slot)),
            }
        })
        .collect();
    SetReport {
        name: set.name.clone(),
        parts: set.parts.len(),
        episodes: set.episodes(),
        queries: set.queries(),
        no_answer_queries: set.no_answer_queries(),
        chosen_without: choice,
        modes,
        grid_scores: [
            grid_runs[0].iter().map(|r| rank_scores(r)).collect(),
            grid_runs[1].iter().map(|r| rank_scores(r)).collect(),
        ],
    }
}

/// Ranking scores of every part of `set` under `base`'s settings, in both modes, with each
/// method (lexical, vector, hybrid), and the abstention of the configured thresholds: what
/// `memory eval retrieval` prints for a set of several parts.
///
/// # Errors
/// Any storage or embedding failure.
pub async fn score_set(
    set: &EvalSet,
    base: &MemoryConfig,
    embedder: Arc<dyn Embedder>,
    storage: Arc<dyn Storage>,
) -> Result<Vec<(QueryMode, Vec<(RetrievalMethod, RankScores, Abstention)>)>> {
    let imported = import(set, storage, base, &embedder).await?;
    let mut out = Vec::new();
    for mode in MODES {
        let threshold = match mode {
            QueryMode::WithContext => base.retrieval.strong_match_cosine,
            QueryMode::DescriptionOnly => base.retrieval.strong_match_cosine_bare,
        };
        let mut rows = Vec::new();
        for method in METHODS {
            let r = run(&imported, &embedder, base.retrieval.clone(), mode, method).await?;
            rows.push((method, rank_scores(&r), abstention(&r, threshold)));
        }
        out.push((mode, rows));
    }
    Ok(out)
}
