//! What `complete_episode` returns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::assessment::{Reflection, RewardScore};
use crate::episode::{EpisodeId, Outcome};
use crate::learning::LearnedChanges;
use crate::storage::EpisodeCompletion;

/// A learned item touched by a completion, in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedSummary {
    /// The item's id.
    pub id: String,
    /// `tool_sequence`, `heuristic`, `lesson`, ...
    pub kind: String,
    /// One line for people.
    pub description: String,
    /// Episodes of evidence so far.
    pub evidence: u64,
    /// Confidence now, in [0, 1] (lessons: share of occurrences that recovered).
    pub confidence: f64,
    /// True when this completion created it.
    pub created: bool,
    /// `active`, `superseded`, ...
    pub status: String,
}

/// The result of completing an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionReport {
    /// The episode.
    pub episode_id: EpisodeId,
    /// How it ended.
    pub outcome: Outcome,
    /// Its reward with components.
    pub reward: RewardScore,
    /// Its reflection.
    pub reflection: Reflection,
    /// Patterns learned or updated.
    pub patterns: Vec<LearnedSummary>,
    /// Heuristics learned or updated.
    pub heuristics: Vec<LearnedSummary>,
    /// Failure lessons learned or updated.
    pub lessons: Vec<LearnedSummary>,
    /// True when the durable layer was unreachable and the completion was journaled: it is
    /// acknowledged and will be applied when the journal replays; the learned items shown are a
    /// provisional merge.
    pub queued: bool,
}

impl CompletionReport {
    pub(crate) fn new(
        c: EpisodeCompletion,
        changes: &LearnedChanges,
        now: DateTime<Utc>,
        half_life: f64,
    ) -> Self {
        CompletionReport {
            queued: changes.provisional,
            episode_id: c.episode_id,
            outcome: c.outcome,
            reward: c.reward,
            reflection: c.reflection,
            patterns: changes
                .patterns
                .iter()
                .map(|p| LearnedSummary {
                    id: p.item.id.0.clone(),
                    kind: p.item.kind.name().to_owned(),
                    description: p.item.describe(),
                    evidence: p.item.occurrences,
                    confidence: p.item.confidence(now, half_life),
                    created: p.created,
                    status: p.item.status.name().to_owned(),
                })
                .collect(),
            heuristics: changes
                .heuristics
                .iter()
                .map(|h| LearnedSummary {
                    id: h.item.id.0.clone(),
                    kind: "heuristic".to_owned(),
                    description: h.item.describe(),
                    evidence: h.item.support + h.item.against,
                    confidence: h.item.confidence(now, half_life),
                    created: h.created,
                    status: h.item.status.name().to_owned(),
                })
                .collect(),
            lessons: changes
                .lessons
                .iter()
                .map(|l| LearnedSummary {
                    id: l.item.id.0.clone(),
                    kind: "lesson".to_owned(),
                    description: l.item.text(),
                    evidence: l.item.occurrences,
                    confidence: if l.item.occurrences == 0 {
                        0.0
                    } else {
                        l.item.recovered as f64 / l.item.occurrences as f64
                    },
                    created: l.created,
                    status: l.item.status.name().to_owned(),
                })
                .collect(),
        }
    }
}
