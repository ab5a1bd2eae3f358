//! Retrieval on text people wrote elsewhere: the public conversation benchmarks converted by
//! `memory eval convert` (see `eval/real/README.md`), looked for in `$MEMORY_REAL_DATA` or
//! the workspace's `.tools/real-data`, as `locomo/` and `realtalk/`.
//!
//! Their data is not redistributable, so it is not in the repository and CI does not have it:
//! each test skips with a message when its set is absent. Where it is present:
//! - the converted sets have the size the benchmarks publish (sittings and questions);
//! - with the default settings, hybrid retrieval stays within 0.015 of the better of BM25 and
//!   vector on recall@5 and nDCG@10, in both modes, on every set. The goal is to be at least
//!   as good; measured on 11-28 it falls short by up to 0.008 (LoCoMo, bare questions), where
//!   the old fusion lost 0.31-0.41 (it ranked these sets almost by the vector alone).
//!
//! The embedder tests' rule applies too: without the model they skip outside CI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use memory_core::{Embedder, MemoryConfig, RateLimitConfig, RetrievalMethod, Storage};
use memory_eval::leave_one_out::{EvalSet, score_set};
use memory_storage_turso::TursoStorage;

/// The converted set `name`, or `None` after a note saying how to get it.
fn real_set(name: &str) -> Option<EvalSet> {
    let root = std::env::var_os("MEMORY_REAL_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/real-data"),
        PathBuf::from,
    );
    let dir = root.join(name);
    if !dir.is_dir() {
        eprintln!(
            "skipping: {} is absent; see eval/real/README.md for how to get and convert it",
            dir.display()
        );
        return None;
    }
    Some(EvalSet::load(name, &dir).unwrap())
}

#[test]
fn converted_sets_have_the_published_size() {
    for (name, dialogues, sittings, questions) in
        [("locomo", 10, 272, 1_536), ("realtalk", 10, 219, 726)]
    {
        let Some(set) = real_set(name) else {
            continue;
        };
        assert_eq!(
            (set.parts.len(), set.episodes(), set.queries()),
            (dialogues, sittings, questions),
            "{name}"
        );
        assert_eq!(
            set.no_answer_queries(),
            0,
            "{name}: every question has evidence"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_ranks_above_both_its_parts_on_real_text() {
    for name in ["locomo", "realtalk"] {
        let Some(set) = real_set(name) else {
            continue;
        };
        let Some(model) = tests::model::minilm().unwrap() else {
            return;
        };
        let config = MemoryConfig {
            rate_limit: RateLimitConfig::disabled(),
            ..MemoryConfig::default()
        };
        let storage: Arc<dyn Storage> =
            Arc::new(TursoStorage::open_local(":memory:").await.unwrap());
        let embedder: Arc<dyn Embedder> = Arc::new(model);
        let modes = score_set(&set, &config, embedder, storage).await.unwrap();
        for (mode, rows) in modes {
            let get = |m: RetrievalMethod| rows.iter().find(|r| r.0 == m).map(|r| r.1).unwrap();
            let (lexical, vector, hybrid) = (
                get(RetrievalMethod::Lexical),
                get(RetrievalMethod::Vector),
                get(RetrievalMethod::Hybrid),
            );
            eprintln!(
                "{name} {mode:?}: R@5 lexical {:.3} vector {:.3} hybrid {:.3}; nDCG@10 {:.3} {:.3} {:.3}",
                lexical.recall_at_5,
                vector.recall_at_5,
                hybrid.recall_at_5,
                lexical.ndcg_at_10,
                vector.ndcg_at_10,
                hybrid.ndcg_at_10
            );
            let best_r5 = lexical.recall_at_5.max(vector.recall_at_5);
            let best_ndcg = lexical.ndcg_at_10.max(vector.ndcg_at_10);
            // Never below the better part (measured 11-29: +0.027 to +0.046).
            assert!(
                hybrid.recall_at_5 >= best_r5,
                "{name} {mode:?}: hybrid R@5 {} < {best_r5}",
                hybrid.recall_at_5
            );
            assert!(
                hybrid.ndcg_at_10 >= best_ndcg,
                "{name} {mode:?}: hybrid nDCG@10 {} < {best_ndcg}",
                hybrid.ndcg_at_10
            );
        }
    }
}
