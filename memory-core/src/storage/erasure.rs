//! Erasure: what a store is asked to forget, and what it reports having removed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learning::{LearningUpdate, RemovedItems};

/// The longest reason an erasure keeps in its audit record, in bytes.
pub const MAX_FORGET_REASON_BYTES: usize = 500;

/// The most episodes one erasure names (a filter that matches more is forgotten in rounds).
pub const MAX_FORGET_EPISODES: usize = 256;

/// One episode to forget, as the engine read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ForgetEpisode {
    /// The episode.
    pub episode_id: EpisodeId,
    /// What its completion taught, extracted again from the episode as read
    /// ([`crate::extract_learning`]); `None` for an episode still in progress (it taught
    /// nothing yet).
    pub learning: Option<LearningUpdate>,
    /// The steps the episode held when it was read: the store refuses the erasure (writing
    /// nothing, [`crate::Error::steps_changed`]) if it holds another count, or if the episode
    /// was completed since (`learning` would then miss what the completion taught), and the
    /// engine reads it again.
    pub expected_steps: u64,
}

/// Episodes of one namespace to forget, in one transaction, with the reason kept in the audit
/// record.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    /// The episodes (at most [`MAX_FORGET_EPISODES`]).
    pub episodes: Vec<ForgetEpisode>,
    /// Why (at most [`MAX_FORGET_REASON_BYTES`]; kept, so it must hold no content of the
    /// episodes).
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What remains of a forgotten episode: the audit record (no content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetRecord {
    /// The episode that was forgotten.
    pub episode_id: EpisodeId,
    /// When.
    pub at: DateTime<Utc>,
    /// Why, as given.
    pub reason: String,
}

/// Rows removed by an erasure, per kind of row.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErasedRows {
    /// Episode rows.
    pub episodes: u64,
    /// Steps (in whatever rows the store keeps them).
    pub steps: u64,
    /// Tag rows.
    pub tags: u64,
    /// Full-text index rows.
    pub text_rows: u64,
    /// Stored embeddings (every model).
    pub embeddings: u64,
    /// Feedback events given in the episodes.
    pub feedback_events: u64,
    /// Estimate records.
    pub estimates: u64,
    /// Stored images of the in-process vector index that held the episodes (rebuilt from the
    /// embeddings at the next load).
    pub index_snapshots: u64,
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErasureReport {
    /// The episodes forgotten (audit records written).
    pub forgotten: Vec<EpisodeId>,
    /// The episodes named that the namespace does not hold (never recorded, or forgotten
    /// before).
    pub missing: Vec<EpisodeId>,
    /// Rows removed.
    pub rows: ErasedRows,
    /// Learned items whose evidence went down: patterns, heuristics, lessons.
    pub learned_changed: (u64, u64, u64),
    /// Learned items removed: only the forgotten episodes taught them.
    pub learned_removed: RemovedItems,
    /// For a store in local files: whether the freed bytes were overwritten there once the
    /// erasure committed (`false` when another process kept the write-ahead log busy, whose
    /// old frames are then overwritten by later commits). `None` for a store without files
    /// of its own (in memory, or on a server).
    pub files_scrubbed: Option<bool>,
    /// True when the store was unreachable and the erasure was journaled: it runs, in order
    /// after the writes journaled before it, once the store answers again. `forgotten` then
    /// names the episodes asked for, and nothing else is known yet.
    #[serde(default)]
    pub journaled: bool,
}

impl ErasureReport {
    /// Adds another round's report (a filter forgotten in rounds).
    pub fn absorb(&mut self, other: ErasureReport) {
        self.forgotten.extend(other.forgotten);
        self.missing.extend(other.missing);
        let (r, o) = (&mut self.rows, other.rows);
        r.episodes += o.episodes;
        r.steps += o.steps;
        r.tags += o.tags;
        r.text_rows += o.text_rows;
        r.embeddings += o.embeddings;
        r.feedback_events += o.feedback_events;
        r.estimates += o.estimates;
        r.index_snapshots += o.index_snapshots;
        self.learned_changed.0 += other.learned_changed.0;
        self.learned_changed.1 += other.learned_changed.1;
        self.learned_changed.2 += other.learned_changed.2;
        let removed = other.learned_removed;
        self.learned_removed.patterns.extend(removed.patterns);
        self.learned_removed.heuristics.extend(removed.heuristics);
        self.learned_removed.lessons.extend(removed.lessons);
        self.journaled |= other.journaled;
        self.files_scrubbed = match (self.files_scrubbed, other.files_scrubbed) {
            (Some(a), Some(b)) => Some(a && b),
            (a, b) => a.or(b),
        };
    }
}
