//! Feedback from agents on the advice they applied.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{Effectiveness, HeuristicId, PatternId};

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

impl Effectiveness {
    /// The counts of feedback events, and the streak: hindered events recorded after both the
    /// latest helped event and `seen`, when the item was last observed in an episode (an item
    /// misapplied to other tasks keeps being seen where it belongs; one whose procedure changed
    /// is not). Events may come in any order.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use memory_core::{Effectiveness, EpisodeId, Feedback, FeedbackOutcome, FeedbackTarget, PatternId};
    /// let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
    /// let event = |outcome, s| Feedback {
    ///     target: FeedbackTarget::Pattern(PatternId("p".into())),
    ///     episode_id: EpisodeId::new(),
    ///     outcome,
    ///     recorded_at: at(s),
    /// };
    /// let events = [
    ///     event(FeedbackOutcome::Hindered, 1),
    ///     event(FeedbackOutcome::Helped, 2),
    ///     event(FeedbackOutcome::Hindered, 3),
    ///     event(FeedbackOutcome::NoEffect, 4),
    ///     event(FeedbackOutcome::Hindered, 5),
    /// ];
    /// let e = Effectiveness::of(&events, at(0));
    /// assert_eq!((e.helped, e.no_effect, e.hindered, e.hindered_streak), (1, 1, 3, 2));
    /// // Seen in an episode after the fourth event: only the last hindered event counts.
    /// assert_eq!(Effectiveness::of(&events, at(4)).hindered_streak, 1);
    /// ```
    pub fn of<'a>(
        events: impl IntoIterator<Item = &'a Feedback>,
        seen: DateTime<Utc>,
    ) -> Effectiveness {
        let mut e = Effectiveness::default();
        let mut last_helped = seen;
        let mut hindered_at = Vec::new();
        for f in events {
            match f.outcome {
                FeedbackOutcome::Helped => {
                    e.helped += 1;
                    last_helped = last_helped.max(f.recorded_at);
                }
                FeedbackOutcome::NoEffect => e.no_effect += 1,
                FeedbackOutcome::Hindered => {
                    e.hindered += 1;
                    hindered_at.push(f.recorded_at);
                }
            }
        }
        e.hindered_streak = hindered_at.iter().filter(|at| **at > last_helped).count() as u64;
        e
    }
}
