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

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use memory_core::{
    Embedder, EpisodeId, Error, MemoryConfig, Namespace, Result, RetrievalConfig, RetrievalMethod,
    Retriever, SelfLearningMemory, Storage, SystemClock,
};

use crate::retrieval::{
    Abstention, EvalDataset, QueryMode, RetrievalEval, grades, ndcg_at_10, recall_at,
};

/// The values tried for each weight (see [`RetrievalConfig`] for what each does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightGrid {
    /// [`RetrievalConfig::work_weight`]; each value is its own import and embedding (the
    /// texts are embedded once and remembered across values).
    pub work_weight: Vec<f32>,
    /// [`RetrievalConfig::outcome_weight`].
    pub outcome_weight: Vec<f64>,
    /// [`RetrievalConfig::dense_weight`] (queries with context).
    pub dense_weight: Vec<f64>,
    /// [`RetrievalConfig::context_weight`] (queries with context).
    pub context_weight: Vec<f64>,
    /// [`RetrievalConfig::dense_weight_bare`] (description-only queries).
    pub dense_weight_bare: Vec<f64>,
}

impl Default for WeightGrid {
    fn default() -> Self {
        let dense = vec![0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        WeightGrid {
            work_weight: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            outcome_weight: vec![0.0, 0.05, 0.1, 0.2],
            dense_weight: dense.clone(),
            context_weight: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2],
            dense_weight_bare: dense,
        }
    }
}

impl WeightGrid {
    /// Settings tried: per work and outcome weight, every with-context pair and every
    /// description-only weight.
    pub fn settings(&self) -> usize {
        self.work_weight.len()
            * self.outcome_weight.len()
            * (self.dense_weight.len() * self.context_weight.len() + self.dense_weight_bare.len())
    }

    /// The grid with `w`'s values added where missing, so the weights a run starts from are
    /// scored on the same terms as every candidate.
    #[must_use]
    pub fn including(mut self, w: &Weights) -> Self {
        fn add<T: PartialEq + Copy>(list: &mut Vec<T>, v: T) {
            if !list.contains(&v) {
                list.push(v);
            }
        }
        add(&mut self.work_weight, w.work_weight);
        add(&mut self.outcome_weight, w.outcome_weight);
        add(&mut self.dense_weight, w.dense_weight);
        add(&mut self.context_weight, w.context_weight);
        add(&mut self.dense_weight_bare, w.dense_weight_bare);
        self
    }

    fn validate(&self) -> Result<()> {
        let lists: [(&str, Vec<f64>, f64); 5] = [
            (
                "work_weight",
                self.work_weight.iter().map(|v| f64::from(*v)).collect(),
                f64::MAX,
            ),
            ("outcome_weight", self.outcome_weight.clone(), 1.0),
            ("dense_weight", self.dense_weight.clone(), 1.0),
            ("context_weight", self.context_weight.clone(), f64::MAX),
            ("dense_weight_bare", self.dense_weight_bare.clone(), 1.0),
        ];
        for (name, values, most) in lists {
            if values.is_empty() {
                return Err(Error::invalid(name, "the grid needs at least one value"));
            }
            if let Some(v) = values
                .iter()
                .find(|v| !v.is_finite() || **v < 0.0 || **v > most)
            {
                return Err(Error::invalid(
                    name,
                    format!("grid value {v} is outside 0..={most}"),
                ));
            }
        }
        Ok(())
    }
}

/// One value of every searched weight, and both abstention thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// [`RetrievalConfig::work_weight`].
    pub work_weight: f32,
    /// [`RetrievalConfig::outcome_weight`].
    pub outcome_weight: f64,
    /// [`RetrievalConfig::dense_weight`].
    pub dense_weight: f64,
    /// [`RetrievalConfig::context_weight`].
    pub context_weight: f64,
    /// [`RetrievalConfig::dense_weight_bare`].
    pub dense_weight_bare: f64,
    /// [`RetrievalConfig::strong_match_cosine`].
    pub strong_match_cosine: f32,
    /// [`RetrievalConfig::strong_match_cosine_bare`].
    pub strong_match_cosine_bare: f32,
}

impl Weights {
    /// The searched values of `c`.
    ///
    /// ```
    /// use memory_core::RetrievalConfig;
    /// use memory_eval::cross_validation::Weights;
    /// let c = RetrievalConfig::default();
    /// assert_eq!(Weights::of(&c).apply(&c), c);
    /// ```
    pub fn of(c: &RetrievalConfig) -> Self {
        Weights {
            work_weight: c.work_weight,
            outcome_weight: c.outcome_weight,
            dense_weight: c.dense_weight,
            context_weight: c.context_weight,
            dense_weight_bare: c.dense_weight_bare,
            strong_match_cosine: c.strong_match_cosine,
            strong_match_cosine_bare: c.strong_match_cosine_bare,
        }
    }

    /// `c` with these values.
    pub fn apply(&self, c: &RetrievalConfig) -> RetrievalConfig {
        RetrievalConfig {
            work_weight: self.work_weight,
            outcome_weight: self.outcome_weight,
            dense_weight: self.dense_weight,
            context_weight: self.context_weight,
            dense_weight_bare: self.dense_weight_bare,
            strong_match_cosine: self.strong_match_cosine,
            strong_match_cosine_bare: self.strong_match_cosine_bare,
            ..c.clone()
        }
    }
}

/// Hybrid scores of one mode over a set of queries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModeScores {
    /// Mean nDCG@10 over the answerable queries.
    pub ndcg_at_10: f64,
    /// Mean recall@5 over the answerable queries.
    pub recall_at_5: f64,
    /// Flags ("no strong match") of no-answer and answerable queries.
    pub abstention: Abstention,
}

/// Both modes' scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetScores {
    /// Queries with their context and task type.
    pub with_context: ModeScores,
    /// Task text only.
    pub description_only: ModeScores,
}

/// What [`cross_validate`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Folds the queries were split into.
    pub folds: usize,
    /// Queries of the tuning set.
    pub queries: usize,
    /// Settings each query ran with ([`WeightGrid::settings`], per mode).
    pub settings_tried: usize,
    /// The weights the run started from (the configuration's).
    pub given: Weights,
    /// The given weights and thresholds on every tuning query.
    pub given_scores: SetScores,
    /// The choice made on each fold's complement, in fold order.
    pub fold_choices: Vec<Weights>,
    /// Every query scored with the choice made without it: the estimate for unseen queries.
    pub out_of_fold: SetScores,
    /// The choice made on every tuning query.
    pub chosen: Weights,
    /// The chosen weights on every tuning query (in sample: optimistic).
    pub chosen_scores: SetScores,
    /// The grid's best on every tuning query, before the one-standard-error rule (the
    /// choice when it clears the rule).
    pub best_in_sample: Weights,
    /// Its scores on every tuning query (in sample).
    pub best_in_sample_scores: SetScores,
}

/// Per query of one mode: `(nDCG@10, recall@5)`, `None` for a no-answer query.
type PerQuery = Vec<Option<(f64, f64)>>;

/// What every setting of one work weight measured.
struct WorkTable {
    /// Per mode (with context, description-only), per query: the support.
    supports: [Vec<Option<f32>>; 2],
    /// Per outcome weight: per (dense, context) pair, row-major.
    with_context: Vec<Vec<PerQuery>>,
    /// Per outcome weight: per description-only dense weight.
    description_only: Vec<Vec<PerQuery>>,
}

/// A choice as indexes into the grid, with fitted thresholds.
#[derive(Debug, Clone, Copy)]
struct Pick {
    work: usize,
    outcome: usize,
    with_context: usize,
    description_only: usize,
    thresholds: [f32; 2],
}

/// An embedder that embeds each distinct text once, however many retrievers and stores ask.
#[derive(Debug)]
pub(crate) struct Remembering {
    inner: Arc<dyn Embedder>,
    seen: Mutex<HashMap<String, Vec<f32>>>,
}

impl Remembering {
    /// `inner`, remembering what it embedded.
    pub(crate) fn new(inner: Arc<dyn Embedder>) -> Self {
        Remembering {
            inner,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Embedder for Remembering {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let missing: Vec<String> = {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let mut missing: Vec<String> = texts
                .iter()
                .filter(|t| !seen.contains_key(*t))
                .cloned()
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        let vectors = if missing.is_empty() {
            Vec::new()
        } else {
            self.inner.embed(&missing).await?
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.extend(missing.into_iter().zip(vectors));
        texts
            .iter()
            .map(|t| {
                seen.get(t)
                    .cloned()
                    .ok_or_else(|| Error::invalid("embedder", "returned fewer vectors than texts"))
            })
            .collect()
    }
}

/// Which fold each query is in: no-answer queries and answerable ones are each dealt round
/// the folds in dataset order, so every fold gets its share of both.
fn fold_of(answerable: &[bool], folds: usize) -> Vec<usize> {
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
fn best(settings: &[PerQuery], mask: &[bool]) -> (usize, f64) {
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
fn fit_threshold(supports: &[Option<f32>], answerable: &[bool], mask: &[bool]) -> f32 {
    let points: Vec<(Option<f32>, bool)> = supports
        .iter()
        .zip(answerable)
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|((s, a), _)| (*s, *a))
        .collect();
    let mut values: Vec<f32> = points.iter().filter_map(|(s, _)| *s).collect();
    values.sort_by(f32::total_cmp);
    values.dedup();
    let (Some(lo), Some(hi)) = (values.first(), values.last()) else {
        return 0.0;
    };
    let mut candidates = vec![lo - 0.01];
    candidates.extend(values.windows(2).map(|w| f32::midpoint(w[0], w[1])));
    candidates.push(hi + 0.01);
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
    let costs: Vec<f64> = candidates.iter().map(|t| cost(*t)).collect();
    let least = costs.iter().copied().fold(f64::INFINITY, f64::min);
    let tied: Vec<f32> = candidates
        .iter()
        .zip(&costs)
        .filter(|(_, c)| **c <= least + 1e-12)
        .map(|(t, _)| *t)
        .collect();
    tied[tied.len() / 2]
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
fn select(tables: &[WorkTable], answerable: &[bool], mask: &[bool], given: Option<&Pick>) -> Pick {
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

/// Sums of one mode's scores, merged over folds before they become means.
#[derive(Debug, Default, Clone)]
struct Tally {
    ndcg: f64,
    recall: f64,
    abstention: Abstention,
}

impl Tally {
    fn add(
        &mut self,
        per_query: &PerQuery,
        supports: &[Option<f32>],
        threshold: f32,
        mask: &[bool],
    ) {
        for ((s, support), _) in per_query
            .iter()
            .zip(supports)
            .zip(mask)
            .filter(|(_, m)| **m)
        {
            let flagged = support.is_none_or(|v| v < threshold);
            if let Some((ndcg, recall)) = s {
                self.ndcg += ndcg;
                self.recall += recall;
                self.abstention.answerable_queries += 1;
                self.abstention.answerable_flagged += usize::from(flagged);
            } else {
                self.abstention.no_answer_queries += 1;
                self.abstention.no_answer_flagged += usize::from(flagged);
            }
        }
    }

    fn scores(&self) -> ModeScores {
        let n = self.abstention.answerable_queries.max(1) as f64;
        ModeScores {
            ndcg_at_10: self.ndcg / n,
            recall_at_5: self.recall / n,
            abstention: self.abstention.clone(),
        }
    }
}

fn tally(tables: &[WorkTable], pick: &Pick, mask: &[bool], into: &mut [Tally; 2]) {
    let Some(t) = tables.get(pick.work) else {
        return;
    };
    let runs = [
        t.with_context
            .get(pick.outcome)
            .and_then(|r| r.get(pick.with_context)),
        t.description_only
            .get(pick.outcome)
            .and_then(|r| r.get(pick.description_only)),
    ];
    for (slot, run) in runs.into_iter().enumerate() {
        if let Some(per_query) = run {
            into[slot].add(per_query, &t.supports[slot], pick.thresholds[slot], mask);
        }
    }
}

fn set_scores(t: &[Tally; 2]) -> SetScores {
    SetScores {
        with_context: t[0].scores(),
        description_only: t[1].scores(),
    }
}

/// Runs every query of `ds` in `mode` (hybrid, top 10) with `config`; per query its scores
/// and its support.
async fn run_setting(
    storage: &Arc<dyn Storage>,
    embedder: &Arc<dyn Embedder>,
    config: RetrievalConfig,
    ds: &EvalDataset,
    by_episode: &HashMap<EpisodeId, &str>,
    ns: &Namespace,
    mode: QueryMode,
) -> Result<(PerQuery, Vec<Option<f32>>)> {
    let retriever = Retriever::new(
        Arc::clone(storage),
        Some(Arc::clone(embedder)),
        Arc::new(SystemClock),
        config,
    );
    let mut per_query = Vec::with_capacity(ds.queries.len());
    let mut supports = Vec::with_capacity(ds.queries.len());
    for q in &ds.queries {
        let got = retriever
            .retrieve(ns, &q.query(mode, RetrievalMethod::Hybrid))
            .await?;
        // The support is an f32 in the retriever; the round trip through f64 is exact.
        supports.push(got.support.map(|s| s as f32));
        if q.relevant.is_empty() {
            per_query.push(None);
            continue;
        }
        let ranked = grades(&got.results, by_episode, q);
        per_query.push(Some((
            ndcg_at_10(&ranked, q.relevant.values().copied()),
            recall_at(&ranked, 5, q),
        )));
    }
    Ok((per_query, supports))
}

/// Index of `v` in `list` (present by construction: the grid includes the given weights).
fn position<T: PartialEq>(list: &[T], v: &T) -> usize {
    list.iter().position(|x| x == v).unwrap_or(0)
}

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
    let embedder: Arc<dyn Embedder> = Arc::new(Remembering {
        inner: embedder,
        seen: Mutex::new(HashMap::new()),
    });
    let ns = Namespace::new("eval/cross-validation")?;
    let per_work = grid.outcome_weight.len()
        * (grid.dense_weight.len() * grid.context_weight.len() + grid.dense_weight_bare.len());
    let total = grid.work_weight.len() * per_work;
    let mut done = 0;
    progress(done, total);
    let mut tables = Vec::with_capacity(grid.work_weight.len());
    for &work in &grid.work_weight {
        let storage = open().await?;
        let mut config = base.clone();
        config.retrieval.work_weight = work;
        let memory = SelfLearningMemory::with_embedder(
            Arc::clone(&storage),
            config.clone(),
            Arc::new(SystemClock),
            Some(Arc::clone(&embedder)),
        )?;
        let ids = RetrievalEval::new(&memory, ns.clone()).import(ds).await?;
        memory.embed_pending(&ns).await?;
        memory.shutdown().await?;
        let by_episode: HashMap<EpisodeId, &str> =
            ids.iter().map(|(k, v)| (*v, k.as_str())).collect();
        let mut table = WorkTable {
            supports: [Vec::new(), Vec::new()],
            with_context: Vec::new(),
            description_only: Vec::new(),
        };
        for &outcome in &grid.outcome_weight {
            let base = RetrievalConfig {
                outcome_weight: outcome,
                ..config.retrieval.clone()
            };
            let with_context: Vec<RetrievalConfig> = grid
                .dense_weight
                .iter()
                .flat_map(|&dense| {
                    grid.context_weight
                        .iter()
                        .map(move |&context| (dense, context))
                })
                .map(|(dense, context)| RetrievalConfig {
                    dense_weight: dense,
                    context_weight: context,
                    ..base.clone()
                })
                .collect();
            let description_only: Vec<RetrievalConfig> = grid
                .dense_weight_bare
                .iter()
                .map(|&dense| RetrievalConfig {
                    dense_weight_bare: dense,
                    ..base.clone()
                })
                .collect();
            let mut runs: [Vec<PerQuery>; 2] = [Vec::new(), Vec::new()];
            let modes = [
                (QueryMode::WithContext, with_context),
                (QueryMode::DescriptionOnly, description_only),
            ];
            for (slot, (mode, settings)) in modes.into_iter().enumerate() {
                for retrieval in settings {
                    let (per_query, supports) =
                        run_setting(&storage, &embedder, retrieval, ds, &by_episode, &ns, mode)
                            .await?;
                    table.supports[slot] = supports;
                    runs[slot].push(per_query);
                    done += 1;
                    progress(done, total);
                }
            }
            let [with_context, description_only] = runs;
            table.with_context.push(with_context);
            table.description_only.push(description_only);
        }
        tables.push(table);
    }

    let weights = |p: &Pick| Weights {
        work_weight: grid.work_weight[p.work],
        outcome_weight: grid.outcome_weight[p.outcome],
        dense_weight: grid.dense_weight[p.with_context / grid.context_weight.len()],
        context_weight: grid.context_weight[p.with_context % grid.context_weight.len()],
        dense_weight_bare: grid.dense_weight_bare[p.description_only],
        strong_match_cosine: p.thresholds[0],
        strong_match_cosine_bare: p.thresholds[1],
    };
    let everything = vec![true; ds.queries.len()];

    let given_pick = Pick {
        work: position(&grid.work_weight, &given.work_weight),
        outcome: position(&grid.outcome_weight, &given.outcome_weight),
        with_context: position(&grid.dense_weight, &given.dense_weight) * grid.context_weight.len()
            + position(&grid.context_weight, &given.context_weight),
        description_only: position(&grid.dense_weight_bare, &given.dense_weight_bare),
        thresholds: [given.strong_match_cosine, given.strong_match_cosine_bare],
    };
    let mut given_tally = [Tally::default(), Tally::default()];
    tally(&tables, &given_pick, &everything, &mut given_tally);

    let fold = fold_of(&answerable, folds);
    let mut fold_choices = Vec::with_capacity(folds);
    let mut out_of_fold = [Tally::default(), Tally::default()];
    for k in 0..folds {
        let train: Vec<bool> = fold.iter().map(|f| *f != k).collect();
        let test: Vec<bool> = fold.iter().map(|f| *f == k).collect();
        let pick = select(&tables, &answerable, &train, Some(&given_pick));
        tally(&tables, &pick, &test, &mut out_of_fold);
        fold_choices.push(weights(&pick));
    }

    let pick = select(&tables, &answerable, &everything, Some(&given_pick));
    let mut chosen_tally = [Tally::default(), Tally::default()];
    tally(&tables, &pick, &everything, &mut chosen_tally);
    let top = select(&tables, &answerable, &everything, None);
    let mut top_tally = [Tally::default(), Tally::default()];
    tally(&tables, &top, &everything, &mut top_tally);

    Ok(CrossValidation {
        folds,
        queries: ds.queries.len(),
        settings_tried: total,
        given,
        given_scores: set_scores(&given_tally),
        fold_choices,
        out_of_fold: set_scores(&out_of_fold),
        chosen: weights(&pick),
        chosen_scores: set_scores(&chosen_tally),
        best_in_sample: weights(&top),
        best_in_sample_scores: set_scores(&top_tally),
    })
}

/// Hybrid scores of `ds` in both modes with `config`, in a fresh store `storage`: how a
/// choice is reported on a set it was not chosen on.
///
/// # Errors
/// Any storage or embedding failure.
pub async fn hybrid_scores(
    ds: &EvalDataset,
    config: MemoryConfig,
    embedder: Arc<dyn Embedder>,
    storage: Arc<dyn Storage>,
) -> Result<SetScores> {
    let memory =
        SelfLearningMemory::with_embedder(storage, config, Arc::new(SystemClock), Some(embedder))?;
    let ns = Namespace::new("eval/held-out")?;
    let eval = RetrievalEval::new(&memory, ns.clone());
    let ids = eval.import(ds).await?;
    memory.embed_pending(&ns).await?;
    let mut modes = Vec::with_capacity(2);
    for mode in [QueryMode::WithContext, QueryMode::DescriptionOnly] {
        let s = eval.score(ds, &ids, mode, RetrievalMethod::Hybrid).await?;
        modes.push(ModeScores {
            ndcg_at_10: s.ndcg_at_10,
            recall_at_5: s.recall_at_5,
            abstention: s.abstention.unwrap_or_default(),
        });
    }
    memory.shutdown().await?;
    let description_only = modes.pop().unwrap_or_default();
    let with_context = modes.pop().unwrap_or_default();
    Ok(SetScores {
        with_context,
        description_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory_core::InMemoryStorage;

    /// Words hashed into 64 dimensions: texts that share words are close.
    #[derive(Debug)]
    struct Words;

    #[async_trait]
    impl Embedder for Words {
        fn model_id(&self) -> &'static str {
            "test-words"
        }
        fn dimensions(&self) -> usize {
            64
        }
        async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 64];
                    for w in t.to_lowercase().split(|c: char| !c.is_alphanumeric()) {
                        if !w.is_empty() {
                            let h = w.bytes().fold(2_166_136_261u32, |h, b| {
                                (h ^ u32::from(b)).wrapping_mul(16_777_619)
                            });
                            v[(h % 64) as usize] += 1.0;
                        }
                    }
                    memory_core::l2_normalize(&mut v);
                    v
                })
                .collect())
        }
    }

    fn dataset() -> EvalDataset {
        let episode = |id: &str, task: &str, domain: &str| {
            serde_json::from_value(serde_json::json!({
                "id": id, "task_description": task, "task_type": "debugging",
                "context": {"domain": domain},
                "steps": [{"tool": "shell", "action": task, "result": {"status": "success", "output": "ok"}}],
                "outcome": {"type": "success", "verdict": "fixed"}
            }))
        };
        let query = |id: &str, task: &str, domain: &str, relevant: serde_json::Value| {
            serde_json::from_value(serde_json::json!({
                "id": id, "task_description": task, "task_type": "debugging",
                "context": {"domain": domain}, "relevant": relevant
            }))
        };
        let episodes: std::result::Result<Vec<_>, _> = [
            ("e1", "postgres deadlock between two workers", "databases"),
            (
                "e2",
                "deadlock when workers update the same rows",
                "databases",
            ),
            ("e3", "flaky test fails near midnight", "testing"),
            (
                "e4",
                "test depends on the wall clock and fails at night",
                "testing",
            ),
            ("e5", "docker build killed for memory", "devops"),
            ("e6", "container build runs out of memory", "devops"),
        ]
        .into_iter()
        .map(|(id, t, d)| episode(id, t, d))
        .collect();
        let queries: std::result::Result<Vec<_>, _> = [
            query(
                "q1",
                "two workers deadlock on rows",
                "databases",
                serde_json::json!({"e1": 3, "e2": 2}),
            ),
            query(
                "q2",
                "test fails at midnight",
                "testing",
                serde_json::json!({"e3": 3, "e4": 2}),
            ),
            query(
                "q3",
                "build killed for memory",
                "devops",
                serde_json::json!({"e5": 3, "e6": 2}),
            ),
            query(
                "q4",
                "deadlock in postgres workers",
                "databases",
                serde_json::json!({"e2": 3, "e1": 3}),
            ),
            query(
                "q5",
                "render invoices as pdf",
                "other",
                serde_json::json!({}),
            ),
            query(
                "q6",
                "translate the settings page",
                "frontend",
                serde_json::json!({}),
            ),
        ]
        .into_iter()
        .collect();
        let (Ok(episodes), Ok(queries)) = (episodes, queries) else {
            panic!("the test dataset does not parse");
        };
        EvalDataset { episodes, queries }
    }

    #[tokio::test]
    async fn every_query_is_scored_once_out_of_fold_with_a_choice_made_without_it() -> Result<()> {
        let ds = dataset();
        let base = MemoryConfig {
            rate_limit: memory_core::RateLimitConfig::disabled(),
            ..MemoryConfig::default()
        };
        // The given dense weight (0.8) is missing from the grid: it is added, so 3 settings
        // per work and outcome weight (two dense weights with context, one without).
        let grid = WeightGrid {
            work_weight: vec![base.retrieval.work_weight],
            outcome_weight: vec![base.retrieval.outcome_weight],
            dense_weight: vec![1.0],
            context_weight: vec![base.retrieval.context_weight],
            dense_weight_bare: vec![base.retrieval.dense_weight_bare],
        };
        let mut last = (0, 0);
        let cv = cross_validate(
            &ds,
            &base,
            Arc::new(Words),
            &grid,
            2,
            || async { Ok(Arc::new(InMemoryStorage::new()) as Arc<dyn Storage>) },
            &mut |done, total| last = (done, total),
        )
        .await?;
        assert_eq!(cv.settings_tried, 3);
        assert_eq!(last, (3, 3));
        assert_eq!(cv.fold_choices.len(), 2);
        for scores in [&cv.out_of_fold, &cv.given_scores, &cv.chosen_scores] {
            for mode in [&scores.with_context, &scores.description_only] {
                assert_eq!(mode.abstention.answerable_queries, 4);
                assert_eq!(mode.abstention.no_answer_queries, 2);
                assert!((0.0..=1.0).contains(&mode.ndcg_at_10));
            }
        }
        // The word-sharing embedder finds every intent: the given weights rank perfectly, so
        // nothing beats them and they are kept; only the thresholds are fitted.
        assert!(cv.given_scores.with_context.ndcg_at_10 > 0.9);
        assert_eq!(
            Weights {
                strong_match_cosine: cv.given.strong_match_cosine,
                strong_match_cosine_bare: cv.given.strong_match_cosine_bare,
                ..cv.chosen
            },
            cv.given
        );
        // A bad fold count is refused before any work.
        let refused = cross_validate(
            &ds,
            &base,
            Arc::new(Words),
            &grid,
            7,
            || async { Ok(Arc::new(InMemoryStorage::new()) as Arc<dyn Storage>) },
            &mut |_, _| {},
        )
        .await;
        assert!(refused.is_err());
        Ok(())
    }

    #[test]
    fn folds_spread_no_answer_queries() {
        let answerable = [true, false, true, true, false, true, false, true];
        let fold = fold_of(&answerable, 3);
        // No-answer queries (indexes 1, 4, 6) go to folds 0, 1, 2.
        assert_eq!([fold[1], fold[4], fold[6]], [0, 1, 2]);
        // Answerable ones (0, 2, 3, 5, 7) to 0, 1, 2, 0, 1.
        assert_eq!(
            [fold[0], fold[2], fold[3], fold[5], fold[7]],
            [0, 1, 2, 0, 1]
        );
    }

    #[test]
    fn the_threshold_separates_what_can_be_separated_and_sits_in_the_middle() {
        // No-answer supports 0.30, 0.32; answerable 0.40, 0.45, 0.50: any threshold in
        // (0.32, 0.40] is perfect; the candidates there are the midpoint 0.36 only.
        let supports = [Some(0.30), Some(0.32), Some(0.40), Some(0.45), Some(0.50)];
        let answerable = [false, false, true, true, true];
        let t = fit_threshold(&supports, &answerable, &[true; 5]);
        assert!((t - 0.36).abs() < 1e-6, "{t}");
        // Masking out the 0.32 no-answer query moves the threshold down between 0.30 and 0.40.
        let t = fit_threshold(&supports, &answerable, &[true, false, true, true, true]);
        assert!((t - 0.35).abs() < 1e-6, "{t}");
    }

    #[test]
    fn a_no_answer_query_above_every_answerable_one_is_left_unflagged() {
        // No-answer 0.20 and 0.60, answerable 0.40, 0.45, 0.50. Flagging 0.20 alone costs
        // 0.5 (one of two missed); catching 0.60 too would flag all three answerable ones
        // (cost 1.0). The fit flags 0.20 only: the midpoint 0.30.
        let supports = [Some(0.20), Some(0.60), Some(0.40), Some(0.45), Some(0.50)];
        let answerable = [false, false, true, true, true];
        let t = fit_threshold(&supports, &answerable, &[true; 5]);
        assert!((t - 0.30).abs() < 1e-6, "{t}");
    }

    #[test]
    fn selection_takes_the_best_setting_on_the_mask_and_keeps_the_first_of_ties() {
        let good = vec![Some((1.0, 1.0)), Some((0.0, 0.0))];
        let other = vec![Some((0.0, 0.0)), Some((1.0, 1.0))];
        let same = good.clone();
        let settings = vec![good, other, same];
        assert_eq!(best(&settings, &[true, false]).0, 0);
        assert_eq!(best(&settings, &[false, true]).0, 1);
        assert_eq!(best(&settings, &[true, true]).0, 0);
    }

    #[test]
    fn the_grid_includes_the_given_weights_and_rejects_bad_values() {
        let given = Weights::of(&RetrievalConfig {
            dense_weight: 0.85,
            ..RetrievalConfig::default()
        });
        let grid = WeightGrid::default().including(&given);
        assert!(grid.dense_weight.contains(&0.85));
        assert!(grid.validate().is_ok());
        let bad = WeightGrid {
            dense_weight: vec![1.5],
            ..WeightGrid::default()
        };
        assert!(bad.validate().is_err());
        let empty = WeightGrid {
            outcome_weight: Vec::new(),
            ..WeightGrid::default()
        };
        assert!(empty.validate().is_err());
    }
}
