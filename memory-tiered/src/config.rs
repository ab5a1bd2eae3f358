//! The tiered layer's settings and the sync task's report.

use std::time::Duration;

use chrono::{DateTime, Utc};
use memory_core::{CacheStats, QuotaConfig};
use serde::{Deserialize, Serialize};

use crate::breaker::{BreakerConfig, BreakerState};

/// Tiered-storage settings.
///
/// # Default
/// Default breaker; replay in batches of 256; the sync task wakes every 1 s (and at once when a
/// write is journaled); replica sync every 30 s; quotas not checked on replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TieredConfig {
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Outbox entries replayed per batch.
    pub replay_batch: usize,
    /// How often the sync task runs.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub sync_interval: Duration,
    /// How often the durable layer's own sync (embedded replicas) runs.
    #[serde(with = "memory_core::serde_adapters::duration_ms")]
    pub replica_sync_interval: Duration,
    /// The namespaces' quotas, checked again when journaled writes are replayed (`None`: not
    /// checked on replay). The stack sets the memory's own.
    pub quotas: Option<QuotaConfig>,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            breaker: BreakerConfig::default(),
            replay_batch: 256,
            sync_interval: Duration::from_secs(1),
            replica_sync_interval: Duration::from_secs(30),
            quotas: None,
        }
    }
}

/// What the sync task reports (`memory sync status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The breaker's state.
    pub breaker: BreakerState,
    /// Writes waiting in the outbox.
    pub outbox_len: u64,
    /// Last time the outbox was seen empty after a replay, or a replica sync succeeded.
    pub last_successful_sync: Option<DateTime<Utc>>,
    /// The last replay or sync error.
    pub last_error: Option<String>,
    /// Writes journaled since start.
    pub queued_total: u64,
    /// Writes replayed since start.
    pub replayed_total: u64,
    /// Journaled writes the memory refused on replay for what they are (a conflict, such as a
    /// step for an episode another writer completed; an episode not found): logged at error
    /// level with the entry, then removed so the journal can proceed. Storage failures never
    /// remove an entry: it is tried again.
    pub dead_letters: u64,
    /// Why the last of them (or of the writes refused for a quota) was rejected.
    pub last_rejected: Option<String>,
    /// Journaled writes refused on replay since start because storing them would cross a
    /// quota ([`memory_core::RefusedWrite`]): recorded by the journal, then removed from it.
    pub refused_over_quota: u64,
    /// Cache errors swallowed since start.
    pub cache_errors: u64,
    /// Cache counters, if a cache is configured.
    pub cache: Option<CacheStats>,
}
