//! Shared harness for the benchmarks: the runtime, the synthetic workload (episodes and
//! steps) that the storage, tiered and lifecycle benches record, the realistic workload of the
//! `ingest` run ([`Workload`]), and the default storage stack as the CLI opens it
//! ([`DefaultStack`]).
#![allow(clippy::missing_panics_doc, clippy::unwrap_used)]

pub mod spans;
mod stack;
mod workload;

use std::time::Duration;

use memory_core::{
    Complexity, EpisodeId, MemoryConfig, Namespace, NewEpisode, RateLimitConfig,
    SelfLearningMemory, StepBatchConfig, StepInput, TaskContext, TaskType,
};
use tokio::runtime::Runtime;

pub use stack::{CACHE_FILE, DefaultStack, JOURNAL_DIR, file_size, record_workload_episode};
pub use workload::{Rng, Workload, WorkloadEpisode};

/// A field of `/proc/self/status` in MiB (`VmHWM`: peak resident set; `VmRSS`: current); 0
/// where there is no such file.
pub fn proc_status_mib(field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0.0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Tools the synthetic steps use.
pub const TOOLS: [&str; 6] = ["read_file", "grep", "edit_file", "shell", "git", "cargo"];

/// A two-worker runtime, like the 2-core machines the targets are set for.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Steps stay buffered until `complete_episode` (no timer flush inside a measurement), and
/// no rate limit: a tight loop of `log_step` measures the write path, and outruns the default
/// limit (200,000 calls a second) since steps are stored in pages.
pub fn memory_config() -> MemoryConfig {
    MemoryConfig::default()
        .with_steps(StepBatchConfig {
            max_batch: 64,
            flush_interval: Duration::from_secs(3_600),
        })
        .with_rate_limit(RateLimitConfig::disabled())
}

/// Step `k` of synthetic task `i` (every ninth step fails).
pub fn step(i: usize, k: usize) -> StepInput {
    let tool = TOOLS[(i + k) % TOOLS.len()];
    if k % 9 == 4 {
        StepInput::error(
            tool,
            format!("attempt {k} of task {i}"),
            "error[E0308]: mismatched types at src/lib.rs:10:5",
        )
        .with_latency_ms(40)
    } else {
        StepInput::ok(
            tool,
            format!("step {k} of task {i}"),
            format!("output of step {k}: ok"),
        )
        .with_parameters(serde_json::json!({ "path": "src/lib.rs", "line": k }))
        .with_latency_ms(15)
        .with_tokens(120)
    }
}

/// Synthetic task `i`, in one of four contexts.
pub fn new_episode(i: usize) -> NewEpisode {
    let (task_type, domain, language) = match i % 4 {
        0 => (TaskType::Debugging, "web_api", "rust"),
        1 => (TaskType::CodeGeneration, "web_api", "rust"),
        2 => (TaskType::Testing, "databases", "python"),
        _ => (TaskType::Refactoring, "cli", "go"),
    };
    let ctx = TaskContext::new(domain)
        .with_language(language)
        .with_complexity(Complexity::Moderate)
        .with_tag("bench");
    NewEpisode::new(
        format!("benchmark task number {i} touching the {domain} module"),
        task_type,
        ctx,
    )
}

/// Starts an episode and logs `steps` steps (buffered in the memory).
pub async fn prepared(
    memory: &SelfLearningMemory,
    ns: &Namespace,
    i: usize,
    steps: usize,
) -> EpisodeId {
    let id = memory.start_episode(ns, new_episode(i)).await.unwrap();
    for k in 0..steps {
        memory.log_step(ns, id, step(i, k)).await.unwrap();
    }
    id
}
