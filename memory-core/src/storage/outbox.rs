//! The durable outbox: writes acknowledged while the durable layer is unreachable, replayed in
//! order when it returns (the redb crate implements it).

use async_trait::async_trait;
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
}
