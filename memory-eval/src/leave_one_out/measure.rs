//! Importing a set and running its queries: per query, the ranking scores and the support.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use memory_core::{
    Embedder, EpisodeId, MemoryConfig, Namespace, Result, RetrievalConfig, RetrievalMethod,
    Retriever, SelfLearningMemory, Storage, SystemClock,
};

use crate::retrieval::{Abstention, QueryMode, RetrievalEval, grades, ndcg_at_10, recall_at};

use super::set::EvalSet;

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

/// Per query of one run.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct QueryScore {
    pub(super) answerable: bool,
    pub(super) recall: [f64; 3],
    pub(super) reciprocal_rank: f64,
    pub(super) ndcg: f64,
    pub(super) support: Option<f32>,
}

/// A set imported into a store: per part, its namespace and episode id -> dataset id.
pub(super) struct Imported<'a> {
    set: &'a EvalSet,
    storage: Arc<dyn Storage>,
    parts: Vec<(Namespace, HashMap<EpisodeId, String>)>,
}

/// Imports every part of `set` into its own namespace of `storage` and embeds it.
pub(super) async fn import<'a>(
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
pub(super) async fn run(
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

/// Mean ranking scores of `run` over its answerable queries.
pub(super) fn rank_scores(run: &[QueryScore]) -> RankScores {
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

/// How many queries of `run` are flagged (support below `threshold`, or none).
pub(super) fn abstention(run: &[QueryScore], threshold: f32) -> Abstention {
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
