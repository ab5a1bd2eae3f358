//! What [`cross_validate`](super::cross_validate) reports, and the sums the scores are
//! tallied in.

use serde::{Deserialize, Serialize};

use crate::retrieval::Abstention;

use super::grid::Weights;
use super::select::{PerQuery, Pick, WorkTable};

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

/// What [`cross_validate`](super::cross_validate) found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Folds the queries were split into.
    pub folds: usize,
    /// Queries of the tuning set.
    pub queries: usize,
    /// Settings each query ran with ([`WeightGrid::settings`](super::WeightGrid::settings), per mode).
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

/// Sums of one mode's scores, merged over folds before they become means.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
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

/// Adds the scores of `pick` on the queries in `mask` to `into` (per mode).
pub(super) fn tally(tables: &[WorkTable], pick: &Pick, mask: &[bool], into: &mut [Tally; 2]) {
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

/// Both modes' means of `t`.
pub(super) fn set_scores(t: &[Tally; 2]) -> SetScores {
    SetScores {
        with_context: t[0].scores(),
        description_only: t[1].scores(),
    }
}
