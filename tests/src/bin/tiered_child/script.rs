//! What the tiered-storage drills record, shared by the crash child (`tiered_child`) and
//! `tests/tiered_sqld_outage.rs` through `#[path]`, so both sides agree on the episodes, the
//! settings and the namespace.

#![allow(dead_code, reason = "each includer uses a different subset")]

use std::time::Duration;

use memory_core::{
    EpisodeId, MemoryConfig, Namespace, NewEpisode, Outcome, SelfLearningMemory, StepBatchConfig,
    StepInput, TaskContext, TaskType,
};
use memory_tiered::{BreakerConfig, TieredConfig};

/// Steps logged in every episode.
pub const STEPS: usize = 3;

/// The namespace the drills write to.
pub fn namespace() -> Namespace {
    Namespace::new("drill/tiered").unwrap_or_else(|_| Namespace::default_namespace())
}

/// Every step is written on return (`max_batch = 1`), so an acknowledged `log_step` is durable
/// or journaled; the flush timer never fires inside a drill.
pub fn memory_config() -> MemoryConfig {
    MemoryConfig::default().with_steps(StepBatchConfig {
        max_batch: 1,
        flush_interval: Duration::from_secs(3_600),
    })
}

/// A quick breaker (trips after 2 transient failures, probes every 100 ms) and a sync task that
/// replays every 20 ms, so outages and recoveries take milliseconds, not seconds.
pub fn tiered_config() -> TieredConfig {
    TieredConfig {
        breaker: BreakerConfig {
            consecutive_failures: 2,
            failure_rate: 0.5,
            window: 10,
            open_for: Duration::from_millis(100),
            ..BreakerConfig::default()
        },
        replay_batch: 64,
        sync_interval: Duration::from_millis(20),
        replica_sync_interval: Duration::from_secs(3_600),
        ..TieredConfig::default()
    }
}

/// The `k`-th step (0-based) of every episode: a failing build, a fix, a passing build, so each
/// completion teaches the same failure lesson once.
pub fn step(k: usize) -> StepInput {
    match k {
        0 => StepInput::error("cargo", "build", "error[E0425]: cannot find value `x`"),
        1 => StepInput::ok("edit_file", "declare x", "edit applied"),
        _ => StepInput::ok("cargo", "build", "ok"),
    }
}

/// The outcome every drill episode completes with.
pub fn outcome() -> Outcome {
    Outcome::success("fixed")
}

/// Where a drill episode failed, and how.
#[derive(Debug)]
pub struct Failed {
    /// The episode, if `start_episode` returned it.
    pub id: Option<EpisodeId>,
    /// `start`, `step N` or `complete`.
    pub stage: String,
    /// The typed error the call returned.
    pub error: memory_core::Error,
}

/// Records one episode (start, [`STEPS`] steps, complete). `Ok` means `complete_episode`
/// returned `Ok`: the episode is acknowledged. On the first failing call it stops and says
/// which call failed; the episode is then abandoned (never completed).
pub async fn record(
    memory: &SelfLearningMemory,
    ns: &Namespace,
    i: u64,
    on_start: impl FnOnce(EpisodeId),
) -> Result<EpisodeId, Failed> {
    let ctx = TaskContext::new("web_api").with_language("rust");
    let new = NewEpisode::new(format!("drill task {i}"), TaskType::Debugging, ctx);
    let id = memory
        .start_episode(ns, new)
        .await
        .map_err(|error| Failed {
            id: None,
            stage: "start".into(),
            error,
        })?;
    on_start(id);
    for k in 0..STEPS {
        memory
            .log_step(ns, id, step(k))
            .await
            .map_err(|error| Failed {
                id: Some(id),
                stage: format!("step {}", k + 1),
                error,
            })?;
    }
    memory
        .complete_episode(ns, id, outcome())
        .await
        .map_err(|error| Failed {
            id: Some(id),
            stage: "complete".into(),
            error,
        })?;
    Ok(id)
}
