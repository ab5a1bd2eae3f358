//! What patterns, heuristics and lessons share: status and bounded recent evidence.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;

/// How many recent evidence episodes a learned item keeps (for display and explanation).
pub const RECENT_EVIDENCE: usize = 10;

/// Whether a learned item is in use. Nothing is deleted: retired items keep a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LearnedStatus {
    /// In use.
    #[default]
    Active,
    /// Lost a contradiction to another item with more evidence; kept for the record.
    Superseded {
        /// The id of the heuristic it lost to (which may have lost in turn since: follow `by`
        /// to the one in use).
        by: String,
        /// Why it lost, with the evidence counts.
        reason: String,
    },
    /// Retired by consolidation (low confidence or unused); restorable.
    Pruned {
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Merged into a near-duplicate; its evidence lives on in the target.
    Merged {
        /// The surviving item's id.
        into: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Retracted by an operator: never recommended again, kept for the record. New evidence
    /// is still counted under its id, but it stays retracted (the same evidence cannot teach
    /// it again); only an operator's `restore` brings it back.
    Retracted {
        /// Why, as the operator said.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
}

/// An operator's pin on a learned item: the procedure a team agreed on, shown first in every
/// recommendation it takes part in and labelled as pinned. Kept on the item until unpinned;
/// consolidation never merges or prunes a pinned item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// Why, as the operator said.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl LearnedStatus {
    /// True for [`LearnedStatus::Active`].
    pub fn is_active(&self) -> bool {
        matches!(self, LearnedStatus::Active)
    }

    /// `active`, `superseded`, `pruned`, `merged` or `retracted`.
    pub fn name(&self) -> &'static str {
        match self {
            LearnedStatus::Active => "active",
            LearnedStatus::Superseded { .. } => "superseded",
            LearnedStatus::Pruned { .. } => "pruned",
            LearnedStatus::Merged { .. } => "merged",
            LearnedStatus::Retracted { .. } => "retracted",
        }
    }
}

/// One piece of evidence: an episode and when it was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Evidence {
    /// When it was observed.
    pub at: DateTime<Utc>,
    /// The episode.
    pub episode_id: EpisodeId,
}

/// Adds `e` to the most-recent-first list, keeping at most [`RECENT_EVIDENCE`] entries.
/// The result depends only on the set of evidence added, not the order.
pub(crate) fn push_recent(list: &mut Vec<Evidence>, e: Evidence) {
    if list.contains(&e) {
        return;
    }
    list.push(e);
    list.sort_by(|a, b| b.cmp(a));
    list.truncate(RECENT_EVIDENCE);
}

/// Takes `episode`'s evidence (observed `at`) out of an item's recent evidence and time span,
/// after its count went down to `count`: the latest observation becomes the newest evidence
/// left when the forgotten one was the latest, and the first becomes the oldest left when the
/// recent evidence now holds every observation (`count` of them). Otherwise the span stays as
/// it was (the older evidence it rests on is not kept).
pub(crate) fn forget_recent(
    list: &mut Vec<Evidence>,
    (first_seen, last_seen): (&mut DateTime<Utc>, &mut DateTime<Utc>),
    (episode_id, at): (EpisodeId, DateTime<Utc>),
    count: u64,
) {
    list.retain(|e| e.episode_id != episode_id);
    let newest = list.iter().map(|e| e.at).max();
    let oldest = list.iter().map(|e| e.at).min();
    if *last_seen == at
        && let Some(newest) = newest
    {
        *last_seen = newest;
    }
    if u64::try_from(list.len()).is_ok_and(|n| n >= count)
        && let Some(oldest) = oldest
    {
        *first_seen = oldest;
    }
}
