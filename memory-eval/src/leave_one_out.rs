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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use memory_core::{
    Embedder, EpisodeId, Error, FusionMethod, MemoryConfig, Namespace, Result, RetrievalConfig,
    RetrievalMethod, Retriever, SelfLearningMemory, Storage, SystemClock,
};

use crate::cross_validation::Remembering;
use crate::retrieval::{
    Abstention, EvalDataset, QueryMode, RetrievalEval, grades, ndcg_at_10, recall_at,
};

/// A labeled set: one dataset, or several (a benchmark's dialogues) that are each imported
/// into a namespace of their own and queried only with their own questions.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// What the reports call it.
    pub name: String,
    /// `(part name, dataset)`, in name order; one part named after the set for a single
    /// dataset.
    pub parts: Vec<(String, EvalDataset)>,
}

impl EvalSet {
    /// Loads `dir`: a dataset directory (`episodes.jsonl`, `queries.jsonl`), or a directory
    /// of them (each subdirectory holding `episodes.jsonl` is a part).
    ///
    /// # Errors
    /// An unreadable directory, a malformed dataset, or a directory with no dataset at all.
    pub fn load(name: impl Into<String>, dir: &Path) -> Result<Self> {
        let name = name.into();
        if dir.join("episodes.jsonl").is_file() {
            return Ok(EvalSet {
                parts: vec![(name.clone(), EvalDataset::load(dir)?)],
                name,
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::invalid("dataset", format!("cannot read {}: {e}", dir.display()))
        })?;
        let mut dirs: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("episodes.jsonl").is_file())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{} holds neither episodes.jsonl nor directories that do",
                    dir.display()
                ),
            ));
        }
        let mut parts = Vec::with_capacity(dirs.len());
        for d in dirs {
            let part = d
                .file_name()
                .map_or_else(|| "part".to_owned(), |n| n.to_string_lossy().into_owned());
            parts.push((part, EvalDataset::load(&d)?));
        }
        Ok(EvalSet { name, parts })
    }

    /// Adds the queries of a `queries.jsonl` file to a single-dataset set.
    ///
    /// # Errors
    /// A set of several parts (which part the labels name would be a guess), or what
    /// [`EvalDataset::with_queries_from`] refuses.
    pub fn with_queries_from(mut self, path: &Path) -> Result<Self> {
        if self.parts.len() != 1 {
            return Err(Error::invalid(
                "extra_queries",
                format!(
                    "set {} has {} parts; extra queries need one",
                    self.name,
                    self.parts.len()
                ),
            ));
        }
        let (name, ds) = self.parts.remove(0);
        self.parts.push((name, ds.with_queries_from(path)?));
        Ok(self)
    }

    /// Episodes in all parts.
    pub fn episodes(&self) -> usize {
        self.parts.iter().map(|(_, d)| d.episodes.len()).sum()
    }

    /// Queries in all parts.
    pub fn queries(&self) -> usize {
        self.parts.iter().map(|(_, d)| d.queries.len()).sum()
    }

    /// Queries with nothing relevant.
    pub fn no_answer_queries(&self) -> usize {
        self.parts
            .iter()
            .flat_map(|(_, d)| &d.queries)
            .filter(|q| q.relevant.is_empty())
            .count()
    }
}

/// One fusion setting of the grid: the method, its rank constant (reciprocal rank fusion
/// only), the semantic trust ramp, and the semantic side's weight (used as
/// [`RetrievalConfig::dense_weight`] for queries with context and
/// [`RetrievalConfig::dense_weight_bare`] for bare ones).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionSetting {
    /// [`RetrievalConfig::fusion`].
    pub fusion: FusionMethod,
    /// [`RetrievalConfig::rank_constant`].
    pub rank_constant: f64,
    /// [`RetrievalConfig::semantic_trust_from`].
    pub semantic_trust_from: f32,
    /// [`RetrievalConfig::semantic_trust_full`].
    pub semantic_trust_full: f32,
    /// The semantic weight.
    pub dense_weight: f64,
    /// [`RetrievalConfig::window_weight`] (0: the step windows are not looked at).
    #[serde(default)]
    pub window_weight: f32,
    /// The semantic weight's shift for unknown query words (used as
    /// [`RetrievalConfig::unknown_term_shift`] and its bare twin).
    #[serde(default)]
    pub unknown_term_shift: f64,
}

/// What settings of both modes share.
type Family = (FusionMethod, u64, u32, u32, u32);

impl FusionSetting {
    /// What both modes share: the method, the rank constant, the trust ramp and the window
    /// weight.
    fn family(&self) -> Family {
        (
            self.fusion,
            self.rank_constant.to_bits(),
            self.semantic_trust_from.to_bits(),
            self.semantic_trust_full.to_bits(),
            self.window_weight.to_bits(),
        )
    }
}

/// The window weights the grid tries: a step window's match counted at 0.8 of the episode's
/// own (the choice of every earlier run, against 0 and 1.0; memory-benches/HISTORY.md).
pub const GRID_WINDOW_WEIGHTS: [f32; 1] = [0.8];

/// The semantic weights the grid tries (the weight for a query whose every word the index
/// knows).
pub const GRID_DENSE_WEIGHTS: [f64; 7] = [0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7];

/// The shifts for unknown query words the grid tries (0: off).
pub const GRID_UNKNOWN_TERM_SHIFTS: [f64; 6] = [0.0, 0.5, 0.75, 1.0, 1.5, 2.0];

/// The grid searched, for each of [`GRID_WINDOW_WEIGHTS`]: z-score fusion (min-max and
/// reciprocal rank fusion lost on every set in earlier runs) with the trust ramp off or
/// from 0.1 to full trust at 0.3, at each of [`GRID_DENSE_WEIGHTS`] and
/// [`GRID_UNKNOWN_TERM_SHIFTS`]. No setting gives a list all or none of the weight by itself:
/// the shifted weight stays within 0.1-0.9, and only a query no episode is semantically
/// close to (with the ramp on) loses the semantic side.
pub fn default_grid() -> Vec<FusionSetting> {
    let ramps: [(f32, f32); 2] = [(0.0, 0.0), (0.1, 0.3)];
    let mut grid = Vec::new();
    for window_weight in GRID_WINDOW_WEIGHTS {
        for (from, full) in ramps {
            for dense_weight in GRID_DENSE_WEIGHTS {
                for unknown_term_shift in GRID_UNKNOWN_TERM_SHIFTS {
                    grid.push(FusionSetting {
                        fusion: FusionMethod::ZScore,
                        rank_constant: 60.0,
                        semantic_trust_from: from,
                        semantic_trust_full: full,
                        dense_weight,
                        window_weight,
                        unknown_term_shift,
                    });
                }
            }
        }
    }
    grid
}

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
}

/// Mean ranking scores over the answerable queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RankScores {
    /// Recall@1.
    pub recall_at_1: f64,
    /// Recall@5.
    pub recall_at_5: f64,
    /// Recall@10.
    pub recall_at_10: f64,
    /// Mean reciprocal rank of the first relevant result in the top 10.
    pub mrr: f64,
    /// nDCG@10.
    pub ndcg_at_10: f64,
}

/// One mode of one set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeRows {
    /// The mode.
    pub mode: QueryMode,
    /// BM25 only.
    pub lexical: RankScores,
    /// Embeddings only.
    pub vector: RankScores,
    /// Hybrid with the configuration's own settings.
    pub hybrid_given: RankScores,
    /// Hybrid with the settings chosen without this set.
    pub hybrid_chosen: RankScores,
    /// Flags with the configuration's threshold.
    pub abstention_given: Abstention,
    /// Flags with the threshold fitted without this set.
    pub abstention_chosen: Abstention,
}

/// One set's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetReport {
    /// Its name.
    pub name: String,
    /// Parts (namespaces) it was imported into.
    pub parts: usize,
    /// Episodes.
    pub episodes: usize,
    /// Queries.
    pub queries: usize,
    /// Of which with nothing relevant.
    pub no_answer_queries: usize,
    /// The settings chosen on the other sets.
    pub chosen_without: Choice,
    /// With context, then description only.
    pub modes: Vec<ModeRows>,
    /// Hybrid scores of every grid setting (in grid order), with context then description
    /// only: how each fusion does on this set (in sample, for reading, never for choosing).
    pub grid_scores: [Vec<RankScores>; 2],
}

/// What [`leave_one_out`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaveOneOut {
    /// The configuration's own settings.
    pub given: Choice,
    /// The grid searched.
    pub grid: Vec<FusionSetting>,
    /// The choice made on every set (what a default should be).
    pub chosen_on_all: Choice,
    /// Per set, in the order given.
    pub sets: Vec<SetReport>,
}

/// Per query of one run.
#[derive(Debug, Clone, Copy, Default)]
struct QueryScore {
    answerable: bool,
    recall: [f64; 3],
    reciprocal_rank: f64,
    ndcg: f64,
    support: Option<f32>,
}

/// A set imported into a store: per part, its namespace and episode id -> dataset id.
struct Imported<'a> {
    set: &'a EvalSet,
    storage: Arc<dyn Storage>,
    parts: Vec<(Namespace, HashMap<EpisodeId, String>)>,
}

/// Imports every part of `set` into its own namespace of `storage` and embeds it.
async fn import<'a>(
    set: &'a EvalSet,
    storage: Arc<dyn Storage>,
    config: &MemoryConfig,
    embedder: &Arc<dyn Embedder>,
) -> Result<Imported<'a>> {
    let memory = SelfLearningMemory::with_embedder(
        Arc::clone(&storage),
        config.clone(),
        Arc::new(SystemClock),
        Some(Arc::clone(embedder)),
    )?;
    let mut parts = Vec::with_capacity(set.parts.len());
    for (i, (_, ds)) in set.parts.iter().enumerate() {
        let ns = Namespace::new(format!("eval/part-{i}"))?;
        let ids = RetrievalEval::new(&memory, ns.clone()).import(ds).await?;
        memory.embed_pending(&ns).await?;
        parts.push((ns, ids.into_iter().map(|(d, e)| (e, d)).collect()));
    }
    memory.shutdown().await?;
    Ok(Imported {
        set,
        storage,
        parts,
    })
}

/// Every query of `imported` in `mode` with `method`, under `config`.
async fn run(
    imported: &Imported<'_>,
    embedder: &Arc<dyn Embedder>,
    config: RetrievalConfig,
    mode: QueryMode,
    method: RetrievalMethod,
) -> Result<Vec<QueryScore>> {
    let retriever = Retriever::new(
        Arc::clone(&imported.storage),
        Some(Arc::clone(embedder)),
        Arc::new(SystemClock),
        config,
    );
    let mut out = Vec::with_capacity(imported.set.queries());
    for ((_, ds), (ns, by_id)) in imported.set.parts.iter().zip(&imported.parts) {
        let by_episode: HashMap<EpisodeId, &str> =
            by_id.iter().map(|(e, d)| (*e, d.as_str())).collect();
        for q in &ds.queries {
            let got = retriever.retrieve(ns, &q.query(mode, method)).await?;
            let ranked = grades(&got.results, &by_episode, q);
            let first = ranked.iter().position(|g| *g >= 1);
            out.push(QueryScore {
                answerable: !q.relevant.is_empty(),
                recall: [
                    recall_at(&ranked, 1, q),
                    recall_at(&ranked, 5, q),
                    recall_at(&ranked, 10, q),
                ],
                reciprocal_rank: first.map_or(0.0, |r| 1.0 / (r + 1) as f64),
                ndcg: ndcg_at_10(&ranked, q.relevant.values().copied()),
                support: got.support.map(|s| s as f32),
            });
        }
    }
    Ok(out)
}

fn rank_scores(run: &[QueryScore]) -> RankScores {
    let answerable: Vec<&QueryScore> = run.iter().filter(|q| q.answerable).collect();
    let n = answerable.len().max(1) as f64;
    let mean = |f: &dyn Fn(&QueryScore) -> f64| answerable.iter().map(|q| f(q)).sum::<f64>() / n;
    RankScores {
        recall_at_1: mean(&|q| q.recall[0]),
        recall_at_5: mean(&|q| q.recall[1]),
        recall_at_10: mean(&|q| q.recall[2]),
        mrr: mean(&|q| q.reciprocal_rank),
        ndcg_at_10: mean(&|q| q.ndcg),
    }
}

fn abstention(run: &[QueryScore], threshold: f32) -> Abstention {
    let mut a = Abstention::default();
    for q in run {
        let flagged = q.support.is_none_or(|s| s < threshold);
        if q.answerable {
            a.answerable_queries += 1;
            a.answerable_flagged += usize::from(flagged);
        } else {
            a.no_answer_queries += 1;
            a.no_answer_flagged += usize::from(flagged);
        }
    }
    a
}

/// The threshold minimizing the mean missed share of no-answer queries (over the sets that
/// have some) plus the mean false-flag share (over every set), on `runs` (one per set); of
/// equally good thresholds the middle one. `fallback` when no set has a support.
fn fit_threshold(runs: &[&[QueryScore]], fallback: f32) -> f32 {
    let mut values: Vec<f32> = runs
        .iter()
        .flat_map(|r| r.iter().filter_map(|q| q.support))
        .collect();
    values.sort_by(f32::total_cmp);
    values.dedup();
    let (Some(lo), Some(hi)) = (values.first(), values.last()) else {
        return fallback;
    };
    let mut candidates = vec![lo - 0.01];
    candidates.extend(values.windows(2).map(|w| f32::midpoint(w[0], w[1])));
    candidates.push(hi + 0.01);
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
    let costs: Vec<f64> = candidates.iter().map(|t| cost(*t)).collect();
    let least = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let tied: Vec<f32> = candidates
        .iter()
        .zip(&costs)
        .filter(|(_, c)| **c <= least + 1e-12)
        .map(|(t, _)| *t)
        .collect();
    tied.get(tied.len() / 2).copied().unwrap_or(fallback)
}

/// Per set, per mode: the runs of every grid setting, the vector run (its supports), and
/// the better part's scores.
struct Measured {
    /// `[set][mode][setting]`.
    grid: Vec<[Vec<Vec<QueryScore>>; 2]>,
    /// `[set][mode]`.
    vector: Vec<[Vec<QueryScore>; 2]>,
    /// `[set][mode]`: the higher of lexical and vector retrieval's recall@5, and of their
    /// nDCG@10.
    parts: Vec<[(f64, f64); 2]>,
}

/// The better part of `lexical` and `vector` (recall@5, nDCG@10), each taken separately.
fn better_part(lexical: &[QueryScore], vector: &[QueryScore]) -> (f64, f64) {
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
fn choose(grid: &[FusionSetting], m: &Measured, mask: &[bool], given: &Choice) -> Choice {
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
            let fallback = if mode == 0 {
                given.strong_match_cosine
            } else {
                given.strong_match_cosine_bare
            };
            fit_threshold(&runs, fallback)
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
    let modes = [QueryMode::WithContext, QueryMode::DescriptionOnly];
    let total = sets.len() * modes.len() * (3 + grid.len());
    let mut done = 0;
    progress(done, total);
    let mut measured = Measured {
        grid: Vec::new(),
        vector: Vec::new(),
        parts: Vec::new(),
    };
    let mut fixed: Vec<[[Vec<QueryScore>; 3]; 2]> = Vec::new();
    for set in sets {
        let imported = import(set, open().await?, base, &embedder).await?;
        let mut grid_runs: [Vec<Vec<QueryScore>>; 2] = [Vec::new(), Vec::new()];
        let mut fixed_runs: [[Vec<QueryScore>; 3]; 2] = Default::default();
        for (slot, mode) in modes.into_iter().enumerate() {
            for (i, method) in [
                RetrievalMethod::Lexical,
                RetrievalMethod::Vector,
                RetrievalMethod::Hybrid,
            ]
            .into_iter()
            .enumerate()
            {
                fixed_runs[slot][i] =
                    run(&imported, &embedder, base.retrieval.clone(), mode, method).await?;
                done += 1;
                progress(done, total);
            }
            for s in grid {
                let config = RetrievalConfig {
                    fusion: s.fusion,
                    rank_constant: s.rank_constant,
                    semantic_trust_from: s.semantic_trust_from,
                    semantic_trust_full: s.semantic_trust_full,
                    dense_weight: s.dense_weight,
                    dense_weight_bare: s.dense_weight,
                    unknown_term_shift: s.unknown_term_shift,
                    unknown_term_shift_bare: s.unknown_term_shift,
                    window_weight: s.window_weight,
                    ..base.retrieval.clone()
                };
                grid_runs[slot]
                    .push(run(&imported, &embedder, config, mode, RetrievalMethod::Hybrid).await?);
                done += 1;
                progress(done, total);
            }
        }
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
    let mut reports = Vec::with_capacity(sets.len());
    for (k, set) in sets.iter().enumerate() {
        let mask: Vec<bool> = (0..sets.len()).map(|i| i != k).collect();
        let choice = choose(grid, &measured, &mask, &given);
        let mut rows = Vec::with_capacity(2);
        for (slot, mode) in modes.into_iter().enumerate() {
            let [lexical, vector, hybrid] = &fixed[k][slot];
            let (weight, shift) = if slot == 0 {
                (choice.dense_weight, choice.unknown_term_shift)
            } else {
                (choice.dense_weight_bare, choice.unknown_term_shift_bare)
            };
            let chosen = grid
                .iter()
                .position(|s| {
                    s.family()
                        == (
                            choice.fusion,
                            choice.rank_constant.to_bits(),
                            choice.semantic_trust_from.to_bits(),
                            choice.semantic_trust_full.to_bits(),
                            choice.window_weight.to_bits(),
                        )
                        && s.dense_weight.to_bits() == weight.to_bits()
                        && s.unknown_term_shift.to_bits() == shift.to_bits()
                })
                .and_then(|i| measured.grid[k][slot].get(i))
                .map_or_else(RankScores::default, |r| rank_scores(r));
            let (given_t, chosen_t) = if slot == 0 {
                (given.strong_match_cosine, choice.strong_match_cosine)
            } else {
                (
                    given.strong_match_cosine_bare,
                    choice.strong_match_cosine_bare,
                )
            };
            rows.push(ModeRows {
                mode,
                lexical: rank_scores(lexical),
                vector: rank_scores(vector),
                hybrid_given: rank_scores(hybrid),
                hybrid_chosen: chosen,
                abstention_given: abstention(vector, given_t),
                abstention_chosen: abstention(vector, chosen_t),
            });
        }
        reports.push(SetReport {
            name: set.name.clone(),
            parts: set.parts.len(),
            episodes: set.episodes(),
            queries: set.queries(),
            no_answer_queries: set.no_answer_queries(),
            chosen_without: choice,
            modes: rows,
            grid_scores: [
                measured.grid[k][0].iter().map(|r| rank_scores(r)).collect(),
                measured.grid[k][1].iter().map(|r| rank_scores(r)).collect(),
            ],
        });
    }
    Ok(LeaveOneOut {
        given,
        grid: grid.to_vec(),
        chosen_on_all,
        sets: reports,
    })
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
    for mode in [QueryMode::WithContext, QueryMode::DescriptionOnly] {
        let threshold = match mode {
            QueryMode::WithContext => base.retrieval.strong_match_cosine,
            QueryMode::DescriptionOnly => base.retrieval.strong_match_cosine_bare,
        };
        let mut rows = Vec::new();
        for method in [
            RetrievalMethod::Lexical,
            RetrievalMethod::Vector,
            RetrievalMethod::Hybrid,
        ] {
            let r = run(&imported, &embedder, base.retrieval.clone(), mode, method).await?;
            rows.push((method, rank_scores(&r), abstention(&r, threshold)));
        }
        out.push((mode, rows));
    }
    Ok(out)
}

/// The report as plain-text tables: per set and mode, BM25, vector, hybrid with the given
/// settings and hybrid with the settings chosen without the set.
pub fn format_leave_one_out(r: &LeaveOneOut) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let choice = |c: &Choice| {
        format!(
            "{} (k {}, semantic trust {:.1} -> {:.1}), semantic weight {:.2} + {:.2} x unknown share with context / {:.2} + {:.2} x unknown share bare, window weight {:.1}, thresholds {:.3} / {:.3}",
            c.fusion,
            c.rank_constant,
            c.semantic_trust_from,
            c.semantic_trust_full,
            c.dense_weight,
            c.unknown_term_shift,
            c.dense_weight_bare,
            c.unknown_term_shift_bare,
            c.window_weight,
            c.strong_match_cosine,
            c.strong_match_cosine_bare
        )
    };
    let _ = writeln!(out, "given:          {}", choice(&r.given));
    let _ = writeln!(out, "chosen on all:  {}", choice(&r.chosen_on_all));
    let _ = writeln!(out, "{} fusion settings tried per mode", r.grid.len());
    for s in &r.sets {
        let _ = writeln!(
            out,
            "\n{}: {} episodes in {} part(s), {} queries ({} with no answer)",
            s.name, s.episodes, s.parts, s.queries, s.no_answer_queries
        );
        let _ = writeln!(out, "  chosen without it: {}", choice(&s.chosen_without));
        for m in &s.modes {
            let title = match m.mode {
                QueryMode::WithContext => "with context",
                QueryMode::DescriptionOnly => "description only",
            };
            let _ = writeln!(
                out,
                "  {title:<17} {:>6} {:>6} {:>6} {:>6} {:>8}",
                "R@1", "R@5", "R@10", "MRR", "nDCG@10"
            );
            for (label, v) in [
                ("lexical", &m.lexical),
                ("vector", &m.vector),
                ("hybrid (given)", &m.hybrid_given),
                ("hybrid (chosen)", &m.hybrid_chosen),
            ] {
                let _ = writeln!(
                    out,
                    "    {label:<15} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>8.3}",
                    v.recall_at_1, v.recall_at_5, v.recall_at_10, v.mrr, v.ndcg_at_10
                );
            }
            for (label, a) in [
                ("given threshold", &m.abstention_given),
                ("chosen threshold", &m.abstention_chosen),
            ] {
                let _ = writeln!(
                    out,
                    "    {label:<17} no-answer flagged {}/{}, false flags {}/{} ({:.1}%)",
                    a.no_answer_flagged,
                    a.no_answer_queries,
                    a.answerable_flagged,
                    a.answerable_queries,
                    a.false_flag_rate() * 100.0
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(answerable: bool, r5: f64, support: f32) -> QueryScore {
        QueryScore {
            answerable,
            recall: [r5, r5, r5],
            reciprocal_rank: r5,
            ndcg: r5,
            support: Some(support),
        }
    }

    #[test]
    fn the_threshold_weighs_every_set_alike() {
        // Set 0: no-answer queries below 0.4, answerable above 0.5. Set 1 (no no-answer
        // queries, many of them): answerable at 0.45 and up. The middle of the cheapest
        // gap lies between 0.4 and 0.45.
        let a = vec![q(false, 0.0, 0.30), q(false, 0.0, 0.38), q(true, 1.0, 0.55)];
        let b: Vec<QueryScore> = (0..50)
            .map(|i| q(true, 1.0, 0.45 + i as f32 * 0.001))
            .collect();
        let t = fit_threshold(&[&a, &b], 0.9);
        assert!(t > 0.38 && t < 0.45, "{t}");
        assert!((fit_threshold(&[], 0.9) - 0.9).abs() < f32::EPSILON);
    }

    #[test]
    fn the_choice_for_a_set_never_looks_at_it() {
        let grid = vec![
            FusionSetting {
                fusion: FusionMethod::MinMax,
                rank_constant: 60.0,
                semantic_trust_from: 0.0,
                semantic_trust_full: 0.0,
                dense_weight: 0.5,
                window_weight: 0.0,
                unknown_term_shift: 0.0,
            },
            FusionSetting {
                fusion: FusionMethod::ZScore,
                rank_constant: 60.0,
                semantic_trust_from: 0.0,
                semantic_trust_full: 0.0,
                dense_weight: 0.5,
                window_weight: 0.0,
                unknown_term_shift: 0.0,
            },
        ];
        // Sets 0 and 1 prefer min-max, set 2 (large) z-score.
        let runs = |good: usize| -> [Vec<Vec<QueryScore>>; 2] {
            let one = |i: usize| vec![q(true, if i == good { 1.0 } else { 0.2 }, 0.5)];
            [vec![one(0), one(1)], vec![one(0), one(1)]]
        };
        let m = Measured {
            grid: vec![runs(0), runs(0), runs(1)],
            vector: vec![
                [vec![q(true, 1.0, 0.5)], vec![q(true, 1.0, 0.5)]],
                [vec![q(true, 1.0, 0.5)], vec![q(true, 1.0, 0.5)]],
                [vec![q(true, 1.0, 0.5)], vec![q(true, 1.0, 0.5)]],
            ],
            parts: vec![[(0.0, 0.0); 2]; 3],
        };
        let given = Choice::of(&RetrievalConfig::default());
        // Without set 0, sets 1 and 2 tie (one each): the first family in grid order.
        let without_0 = choose(&grid, &m, &[false, true, true], &given);
        assert_eq!(without_0.fusion, FusionMethod::MinMax);
        // Without set 2, only min-max sets remain.
        let without_2 = choose(&grid, &m, &[true, true, false], &given);
        assert_eq!(without_2.fusion, FusionMethod::MinMax);
        // Without sets 0 and 1, only set 2 speaks.
        let only_2 = choose(&grid, &m, &[false, false, true], &given);
        assert_eq!(only_2.fusion, FusionMethod::ZScore);
    }

    #[test]
    fn a_setting_that_loses_to_a_part_anywhere_is_not_chosen_for_a_higher_mean() {
        let setting = |fusion| FusionSetting {
            fusion,
            rank_constant: 60.0,
            semantic_trust_from: 0.0,
            semantic_trust_full: 0.0,
            dense_weight: 0.5,
            window_weight: 0.8,
            unknown_term_shift: 0.0,
        };
        let grid = vec![setting(FusionMethod::MinMax), setting(FusionMethod::ZScore)];
        // Min-max: far above the parts on set 0, below them on set 1 (mean 0.75). Z-score:
        // just above them on both (mean 0.62).
        let set = |minmax: f64, z: f64| -> [Vec<Vec<QueryScore>>; 2] {
            let runs = vec![vec![q(true, minmax, 0.5)], vec![q(true, z, 0.5)]];
            [runs.clone(), runs]
        };
        let m = Measured {
            grid: vec![set(1.0, 0.62), set(0.5, 0.62)],
            vector: vec![[vec![q(true, 0.6, 0.5)], vec![q(true, 0.6, 0.5)]]; 2],
            parts: vec![[(0.6, 0.6); 2]; 2],
        };
        let given = Choice::of(&RetrievalConfig::default());
        let chosen = choose(&grid, &m, &[true, true], &given);
        assert_eq!(chosen.fusion, FusionMethod::ZScore);
    }

    #[test]
    fn the_default_grid_keeps_both_signals_in_every_fused_setting() {
        let grid = default_grid();
        assert_eq!(grid.len(), 2 * 7 * 6);
        for s in &grid {
            assert!(s.dense_weight > 0.0 && s.dense_weight < 1.0, "{s:?}");
            assert!(s.unknown_term_shift >= 0.0, "{s:?}");
        }
    }
}
