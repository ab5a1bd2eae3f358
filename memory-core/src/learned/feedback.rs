//! Feedback from agents on the advice they applied.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{HeuristicId, PatternId};

/// What the feedback is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum FeedbackTarget {
    /// A pattern.
    Pattern(PatternId),
    /// A heuristic.
    Heuristic(HeuristicId),
}

impl FeedbackTarget {
    /// `pattern` or `heuristic`.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedbackTarget::Pattern(_) => "pattern",
            FeedbackTarget::Heuristic(_) => "heuristic",
        }
    }

    /// The target's id.
    pub fn id(&self) -> &str {
        match self {
            FeedbackTarget::Pattern(p) => &p.0,
            FeedbackTarget::Heuristic(h) => &h.0,
        }
    }
}

/// How applying the advice went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackOutcome {
    /// It helped.
    Helped,
    /// It made no difference.
    NoEffect,
    /// It made things worse.
    Hindered,
}

impl FeedbackOutcome {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackOutcome::Helped => "helped",
            FeedbackOutcome::NoEffect => "no_effect",
            FeedbackOutcome::Hindered => "hindered",
        }
    }
}

impl std::str::FromStr for FeedbackOutcome {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "helped" => Ok(FeedbackOutcome::Helped),
            "no_effect" => Ok(FeedbackOutcome::NoEffect),
            "hindered" => Ok(FeedbackOutcome::Hindered),
            _ => Err(crate::Error::invalid(
                "feedback.outcome",
                format!(
                    "unknown outcome {} (expected helped, no-effect or hindered)",
                    crate::quote::quote_value(s)
                ),
            )),
        }
    }
}

/// One feedback event. At most one per (target, episode): recording again replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// What it is about.
    pub target: FeedbackTarget,
    /// The episode in which the advice was applied.
    pub episode_id: EpisodeId,
    /// How it went.
    pub outcome: FeedbackOutcome,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}
