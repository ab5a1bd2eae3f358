//! The durable outbox: writes acknowledged while the durable layer is unreachable, replayed in
//! order when it returns (the redb crate implements it).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::{Episode, EpisodeId, ExecutionStep};
use crate::error::Result;
use crate::learned::Feedback;
use crate::namespace::Namespace;
use crate::storage::{EpisodeCompletion, LearnedItems};

/// A write to replay against the durable layer. Every variant maps to one storage call whose
/// replay is harmless (the storage traits make these idempotent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    /// `EpisodeStore::create_episode`.
    CreateEpisode(Episode),
    /// `EpisodeStore::append_steps`.
    AppendSteps {
        /// The episode.
        episode_id: EpisodeId,
        /// The steps.
        steps: Vec<ExecutionStep>,
    },
    /// `EpisodeStore::complete_episode`.
    CompleteEpisode(EpisodeCompletion),
    /// `LearningStore::record_feedback`.
    RecordFeedback(Feedback),
    /// `LearningStore::put_learned`.
    PutLearned(LearnedItems),
    /// `EpisodeStore::forget_episodes`, as the ids and the reason only (a journal holds no
    /// content of what it erases): the erasure is prepared again from the stored episodes when
    /// it is replayed ([`crate::forget_in`]), after every write journaled before it.
    ForgetEpisodes {
        /// The episodes.
        episode_ids: Vec<EpisodeId>,
        /// Why (redacted).
        reason: String,
        /// When it was asked.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// `EmbeddingStore::put_embedding`.
    PutEmbedding {
        /// The episode.
        episode_id: EpisodeId,
        /// The model name.
        model: String,
        /// The vector.
        vector: Vec<f32>,
    },
}

impl WriteOp {
    /// The storage call it replays, e.g. `create_episode`.
    pub fn call_name(&self) -> &'static str {
        match self {
            WriteOp::CreateEpisode(_) => "create_episode",
            WriteOp::AppendSteps { .. } => "append_steps",
            WriteOp::CompleteEpisode(_) => "complete_episode",
            WriteOp::RecordFeedback(_) => "record_feedback",
            WriteOp::PutLearned(_) => "put_learned",
            WriteOp::ForgetEpisodes { .. } => "forget_episodes",
            WriteOp::PutEmbedding { .. } => "put_embedding",
        }
    }

    /// The one episode the write belongs to, if it belongs to one.
    pub fn episode_id(&self) -> Option<EpisodeId> {
        match self {
            WriteOp::CreateEpisode(e) => Some(e.id),
            WriteOp::AppendSteps { episode_id, .. } | WriteOp::PutEmbedding { episode_id, .. } => {
                Some(*episode_id)
            }
            WriteOp::CompleteEpisode(c) => Some(c.episode_id),
            WriteOp::RecordFeedback(_)
            | WriteOp::PutLearned(_)
            | WriteOp::ForgetEpisodes { .. } => None,
        }
    }
}

/// A namespace's counts as last read from the durable layer, kept beside the journal so that
/// a process starting while the durable layer is unreachable still holds the quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptUsage {
    /// Episodes.
    pub episodes: u64,
    /// Steps.
    pub steps: u64,
    /// When they were read.
    pub read_at: DateTime<Utc>,
}

/// A journaled write the replay refused because storing it would cross a quota (the write
/// was acknowledged while the durable layer was unreachable). It names the write, never its
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedWrite {
    /// The namespace.
    pub namespace: Namespace,
    /// The storage call, e.g. `create_episode` ([`WriteOp::call_name`]).
    pub write: String,
    /// The episode it belongs to.
    pub episode_id: Option<EpisodeId>,
    /// The quota: `episodes` or `steps`.
    pub resource: String,
    /// The quota's limit.
    pub limit: u64,
    /// When the replay refused it.
    pub refused_at: DateTime<Utc>,
}

/// One journaled write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique per logical write; replaying an entry twice changes nothing.
    pub idempotency_key: String,
    /// The namespace the write belongs to.
    pub namespace: Namespace,
    /// The write.
    pub op: WriteOp,
}

/// An ordered, durable journal of pending writes.
#[async_trait]
pub trait Outbox: Send + Sync + std::fmt::Debug {
    /// Appends an entry and returns its sequence number, only after the entry is durable
    /// (fsynced). Sequence numbers increase strictly.
    async fn append(&self, entry: &OutboxEntry) -> Result<u64>;
    /// Up to `max` oldest entries with their sequence numbers, in order, without removing them.
    async fn peek(&self, max: usize) -> Result<Vec<(u64, OutboxEntry)>>;
    /// Removes every entry with a sequence number `<= up_to`.
    async fn ack(&self, up_to: u64) -> Result<()>;
    /// Entries pending.
    async fn len(&self) -> Result<u64>;
    /// True when nothing is pending.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
    /// Takes in the journals of processes that stopped before replaying them (when several
    /// processes journal beside each other): their entries are appended, in order, to this
    /// journal and returned with their new sequence numbers. The default has none.
    async fn adopt(&self) -> Result<Vec<(u64, OutboxEntry)>> {
        Ok(Vec::new())
    }
    /// Gives back what an empty journal holds on to (its file), now that everything in it
    /// was replayed; the next append starts a new one. The default does nothing.
    async fn release_if_empty(&self) -> Result<()> {
        Ok(())
    }
    /// Keeps `usage` as the namespace's last counts read from the durable layer (for quotas
    /// during an outage, in this process and in those that start during it). The default
    /// keeps nothing.
    async fn keep_usage(&self, ns: &Namespace, usage: &KeptUsage) -> Result<()> {
        let _ = (ns, usage);
        Ok(())
    }
    /// The counts last kept for the namespace by any process of the data directory.
    async fn kept_usage(&self, ns: &Namespace) -> Result<Option<KeptUsage>> {
        let _ = ns;
        Ok(None)
    }
    /// Records a write the replay refused for a quota, durably, where every process of the
    /// data directory (and `memory sync status`) sees it. The default records nothing (the
    /// tiered layer still counts and logs it).
    async fn record_refused(&self, refused: &RefusedWrite) -> Result<()> {
        let _ = refused;
        Ok(())
    }
    /// Every refused write recorded, oldest first.
    async fn refused(&self) -> Result<Vec<RefusedWrite>> {
        Ok(Vec::new())
    }
}
