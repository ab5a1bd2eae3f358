//! What completing an episode adds to it: its reward and its reflection. The types live here,
//! beside the episode they describe; the learning pipeline (`learning`) computes them.

use serde::{Deserialize, Serialize};

/// An episode's reward with its components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardScore {
    /// The total, in [0, 1].
    pub total: f64,
    /// Outcome base in [0, 1] before weighting.
    pub outcome_base: f64,
    /// Efficiency in [0, 1] before weighting.
    pub efficiency: f64,
    /// Quality (share of successful steps) in [0, 1] before weighting.
    pub quality: f64,
    /// Bonus for complexity, already weighted.
    pub complexity_bonus: f64,
    /// Bonus for recovery and new ground, already weighted.
    pub learning_bonus: f64,
    /// The step baseline the efficiency was measured against.
    pub baseline_steps: f64,
}

/// An episode's reflection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Reflection {
    /// What worked.
    pub successes: Vec<String>,
    /// What to do better.
    pub improvements: Vec<String>,
    /// What it teaches for similar tasks.
    pub insights: Vec<String>,
}

impl Reflection {
    /// All lines, for indexing and search.
    pub fn text(&self) -> String {
        self.successes
            .iter()
            .chain(&self.improvements)
            .chain(&self.insights)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}
