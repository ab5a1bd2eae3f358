//! The fusion settings searched ([`FusionSetting`], [`default_grid`]).

use serde::{Deserialize, Serialize};

use memory_core::{FusionMethod, RetrievalConfig};

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
pub(super) type Family = (FusionMethod, u64, u32, u32, u32);

impl FusionSetting {
    /// What both modes share: the method, the rank constant, the trust ramp and the window
    /// weight.
    pub(super) fn family(&self) -> Family {
        (
            self.fusion,
            self.rank_constant.to_bits(),
            self.semantic_trust_from.to_bits(),
            self.semantic_trust_full.to_bits(),
            self.window_weight.to_bits(),
        )
    }

    /// `base` with this setting, its semantic weight and shift used in both modes.
    pub(super) fn config(&self, base: &RetrievalConfig) -> RetrievalConfig {
        RetrievalConfig {
            fusion: self.fusion,
            rank_constant: self.rank_constant,
            semantic_trust_from: self.semantic_trust_from,
            semantic_trust_full: self.semantic_trust_full,
            dense_weight: self.dense_weight,
            dense_weight_bare: self.dense_weight,
            unknown_term_shift: self.unknown_term_shift,
            unknown_term_shift_bare: self.unknown_term_shift,
            window_weight: self.window_weight,
            ..base.clone()
        }
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
