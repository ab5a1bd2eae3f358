use std::sync::Arc;

use async_trait::async_trait;

use memory_core::{Embedder, InMemoryStorage, MemoryConfig, Result, RetrievalConfig, Storage};

use crate::retrieval::EvalDataset;

use super::select::{best, fit_threshold, fold_of};
use super::*;

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
