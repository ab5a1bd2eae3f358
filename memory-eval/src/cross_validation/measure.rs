//! Running the queries: every setting of one work weight, and a chosen configuration on a
//! held-out set.

use std::collections::HashMap;
use std::sync::Arc;

use memory_core::{
    Embedder, EpisodeId, MemoryConfig, Namespace, Result, RetrievalConfig, RetrievalMethod,
    Retriever, SelfLearningMemory, Storage, SystemClock,
};

use crate::retrieval::{EvalDataset, QueryMode, RetrievalEval, grades, ndcg_at_10, recall_at};

use super::grid::WeightGrid;
use super::progress::Progress;
use super::scores::{ModeScores, SetScores};
use super::select::{PerQuery, WorkTable};

/// Runs every query of `ds` in `mode` (hybrid, top 10) with `config`; per query its scores
/// and its support.
pub(super) async fn run_setting(
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

/// Imports `ds` into `storage` under `config` (its work weight the one measured) and runs
/// every query with each outcome weight of `grid` and each setting of both modes.
pub(super) async fn measure_work(
    ds: &EvalDataset,
    config: &MemoryConfig,
    grid: &WeightGrid,
    storage: Arc<dyn Storage>,
    embedder: &Arc<dyn Embedder>,
    ns: &Namespace,
    progress: &mut Progress<'_>,
) -> Result<WorkTable> {
    let memory = SelfLearningMemory::with_embedder(
        Arc::clone(&storage),
        config.clone(),
        Arc::new(SystemClock),
        Some(Arc::clone(embedder)),
    )?;
    let ids = RetrievalEval::new(&memory, ns.clone()).import(ds).await?;
    memory.embed_pending(ns).await?;
    memory.shutdown().await?;
    let by_episode: HashMap<EpisodeId, &str> = ids.iter().map(|(k, v)| (*v, k.as_str())).collect();
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
        let mut runs: [Vec<PerQuery>; 2] = [Vec::new(), Vec::new()];
        for (slot, (mode, settings)) in mode_settings(grid, &base).into_iter().enumerate() {
            for retrieval in settings {
                let (per_query, supports) =
                    run_setting(&storage, embedder, retrieval, ds, &by_episode, ns, mode).await?;
                table.supports[slot] = supports;
                runs[slot].push(per_query);
                progress.step();
            }
        }
        let [with_context, description_only] = runs;
        table.with_context.push(with_context);
        table.description_only.push(description_only);
    }
    Ok(table)
}

/// Per mode, the settings of `grid` on top of `base`: with context every (dense, context)
/// pair, row-major; description-only every bare dense weight.
fn mode_settings(
    grid: &WeightGrid,
    base: &RetrievalConfig,
) -> [(QueryMode, Vec<RetrievalConfig>); 2] {
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
    [
        (QueryMode::WithContext, with_context),
        (QueryMode::DescriptionOnly, description_only),
    ]
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
