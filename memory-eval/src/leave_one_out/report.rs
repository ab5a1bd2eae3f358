//! What [`leave_one_out`](super::leave_one_out) reports, and its plain-text tables.

use serde::{Deserialize, Serialize};

use crate::retrieval::{Abstention, QueryMode};

use super::choice::Choice;
use super::grid::FusionSetting;
use super::measure::RankScores;

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

/// What [`leave_one_out`](super::leave_one_out) found.
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
