//! Configuration of the memory facade.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{Limits, QuotaConfig, RateLimitConfig, RedactionConfig};

/// Step buffering: steps are acknowledged into an in-process buffer and written as rows in
/// batches.
///
/// A buffered step is written when its episode's batch fills, when the flush timer fires, on
/// `complete_episode`, on `flush` and on `shutdown`. A full batch is written in the
/// background: the `log_step` that fills it returns at once, the steps logged while the write
/// waits join it, and `log_step` waits for the write only once 8 full batches of the episode
/// are waiting. A process killed before then loses the buffered steps of that window; set
/// `max_batch = 1` for a durable write per step (written before `log_step` returns), or call
/// `flush_episode`.
///
/// # Default
/// `max_batch` 64 steps; `flush_interval` 250 ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepBatchConfig {
    /// Steps per episode buffered before a write.
    pub max_batch: usize,
    /// Longest time a step waits in the buffer.
    #[serde(with = "crate::serde_adapters::duration_ms")]
    pub flush_interval: Duration,
}

impl Default for StepBatchConfig {
    fn default() -> Self {
        StepBatchConfig {
            max_batch: 64,
            flush_interval: Duration::from_millis(250),
        }
    }
}

/// Learning settings.
///
/// # Default
/// `half_life_days` 30; `history_window` 50 episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearningConfig {
    /// Confidence of learned items halves every this many days without new evidence.
    pub half_life_days: f64,
    /// How many similar past episodes the reward's efficiency baseline looks at.
    pub history_window: u32,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig {
            half_life_days: 30.0,
            history_window: 50,
        }
    }
}

/// Everything the facade can be tuned with. Each part documents its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Input limits.
    pub limits: Limits,
    /// Per-namespace quotas.
    pub quotas: QuotaConfig,
    /// Per-namespace rate limit.
    pub rate_limit: RateLimitConfig,
    /// Secret redaction.
    pub redaction: RedactionConfig,
    /// Step buffering.
    pub steps: StepBatchConfig,
    /// Learning.
    pub learning: LearningConfig,
    /// Retrieval and the embedding queue.
    pub retrieval: crate::retrieval::RetrievalConfig,
    /// Consolidation (merging, decay, pruning, metrics, calibration) and its schedule.
    pub consolidation: crate::consolidation::ConsolidationConfig,
    /// Retention per kind of data (off by default).
    pub retention: crate::consolidation::RetentionConfig,
}

impl MemoryConfig {
    /// Sets the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the quotas.
    #[must_use]
    pub fn with_quotas(mut self, quotas: QuotaConfig) -> Self {
        self.quotas = quotas;
        self
    }

    /// Sets the rate limit.
    #[must_use]
    pub fn with_rate_limit(mut self, rate_limit: RateLimitConfig) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// Sets redaction.
    #[must_use]
    pub fn with_redaction(mut self, redaction: RedactionConfig) -> Self {
        self.redaction = redaction;
        self
    }

    /// Sets step buffering.
    #[must_use]
    pub fn with_steps(mut self, steps: StepBatchConfig) -> Self {
        self.steps = steps;
        self
    }

    /// Sets consolidation.
    #[must_use]
    pub fn with_consolidation(
        mut self,
        consolidation: crate::consolidation::ConsolidationConfig,
    ) -> Self {
        self.consolidation = consolidation;
        self
    }

    /// Sets retention.
    #[must_use]
    pub fn with_retention(mut self, retention: crate::consolidation::RetentionConfig) -> Self {
        self.retention = retention;
        self
    }

    /// Sets retrieval.
    #[must_use]
    pub fn with_retrieval(mut self, retrieval: crate::retrieval::RetrievalConfig) -> Self {
        self.retrieval = retrieval;
        self
    }
}
