//! The episode lifecycle and the learning loop on the real default stack (libsql file + redb
//! cache + redb outbox behind `TieredStorage`, opened as the CLI opens it), each store holding
//! 300 realistic episodes of history ([`Workload`]) first:
//!
//! - `lifecycle/start_episode/single`: one `start_episode` (durable insert, cache fill).
//! - `lifecycle/log_step/amortized_1000_steps`: 1,000 `log_step` calls into one episode with
//!   the default batching (a full batch of 64 written behind the caller, with the steps logged
//!   meanwhile) and the final flush; throughput in steps/s, time per step = the amortized
//!   cost, from the first call until every step is stored.
//! - `lifecycle/complete_episode/{10,50,1000}_steps`: `complete_episode` of an episode whose
//!   steps are still buffered (writes them, scores, reflects, extracts and merges patterns,
//!   heuristics and lessons, commits, updates the cache). Only the completion is timed.
//! - `lifecycle/start_episode_concurrent/{1,8,64}_tasks`: 256 episodes started by 1, 8 or 64
//!   concurrent tasks; throughput in episodes/s.
//! - `lifecycle/steps/{batched_64,unbatched_1}`: 200 steps logged into 4 episodes with the
//!   default batch of 64 vs a durable write per step (`max_batch = 1`); steps/s.
//! - `learning/extract/1000_steps`: the in-process learning of a completed 1,000-step episode
//!   (reward, reflection, pattern / heuristic / lesson extraction), no storage.
//! - `policy/redact_step/50_clean_steps`: the default secret scan over the 50 steps of a
//!   workload episode (no secret in them), as `log_step` runs it on the caller's thread.
//! - `learning/heuristic_update/merge_in_process`: `LearningUpdate::apply` of one episode's
//!   observations onto the heuristics (and patterns, lessons) it touches.
//! - `learning/heuristic_update/feedback_vote`: `record_feedback` on a heuristic through the
//!   default stack (the durable vote update from all its feedback events).
//! - `learning/full_cycle/20_steps`: ask (`recommend`, lexical: no embedder here; the MiniLM
//!   query cost is in `retrieval/recommend_e2e_minilm`), record a 20-step episode, complete
//!   it, and report `helped` on the top recommended pattern.
//!
//! The rate limit is disabled (it would throttle a tight loop of `log_step`); everything else
//! is the default configuration except the step flush timer (an hour, so that no timer flush
//! lands inside a measurement).
//!
//! Run: `cargo bench -p memory-benches --bench lifecycle -- --quick`.

// Benchmark code: pedantic style lints that do not help here.
#![allow(
    clippy::items_after_statements,
    clippy::format_collect,
    clippy::redundant_closure_for_method_calls
)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use memory_benches::{DefaultStack, Workload, memory_config, record_workload_episode, runtime};
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    Clock, Episode, EpisodeId, ExecutionStep, ExistingLearned, FeedbackOutcome, FeedbackTarget,
    Heuristic, LearnedQuery, MemoryConfig, Namespace, RateLimitConfig, RedactionConfig, Redactor,
    RewardHistory, SelfLearningMemory, StepBatchConfig, SystemClock, compute_reward,
    extract_learning, reflect,
};
use tokio::runtime::Runtime;

const HISTORY: u64 = 300;
const SEED: u64 = 7;

fn config() -> MemoryConfig {
    memory_config().with_rate_limit(RateLimitConfig::disabled())
}

fn namespace() -> Namespace {
    Namespace::new("bench/lifecycle").unwrap()
}

/// The default stack in `dir` with `HISTORY` workload episodes recorded.
fn stack_with_history(rt: &Runtime, dir: &Path, config: MemoryConfig) -> DefaultStack {
    rt.block_on(async {
        let stack = DefaultStack::open(dir, config).await.unwrap();
        let ns = namespace();
        let workload = Workload::new(SEED, 50);
        for i in 0..HISTORY {
            record_workload_episode(&stack.memory, &ns, workload.episode(i))
                .await
                .unwrap();
        }
        stack
    })
}

/// Starts episode `i` of `workload` and logs its steps (still buffered: fewer than a batch,
/// or flushed in batches for longer ones).
async fn prepared(
    memory: &SelfLearningMemory,
    ns: &Namespace,
    workload: Workload,
    i: u64,
) -> (EpisodeId, memory_core::Outcome) {
    let e = workload.episode(i);
    let id = memory.start_episode(ns, e.task).await.unwrap();
    for step in e.steps {
        memory.log_step(ns, id, step).await.unwrap();
    }
    (id, e.outcome)
}

/// What the `lifecycle/*` benches share: the runtime, the memory with its history, the
/// namespace and the counter that numbers fresh workload episodes.
struct Shared<'a> {
    rt: &'a Runtime,
    memory: &'a Arc<SelfLearningMemory>,
    ns: &'a Namespace,
    next: &'a Arc<AtomicU64>,
}

/// `lifecycle/start_episode/single`.
fn bench_start_single(c: &mut Criterion, sh: &Shared<'_>, workload: Workload) {
    let Shared {
        rt,
        memory,
        ns,
        next,
    } = *sh;
    let mut group = c.benchmark_group("lifecycle/start_episode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (memory, ns, next) = (memory.clone(), ns.clone(), next.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let task = workload.episode(next.fetch_add(1, Ordering::Relaxed)).task;
                    let start = Instant::now();
                    black_box(memory.start_episode(&ns, task).await.unwrap());
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.finish();
}

/// `lifecycle/log_step/amortized_1000_steps`.
fn bench_log_step(c: &mut Criterion, sh: &Shared<'_>) {
    let Shared {
        rt,
        memory,
        ns,
        next,
    } = *sh;
    let mut group = c.benchmark_group("lifecycle/log_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000));
    let long = Workload::new(SEED, 1_000);
    group.bench_function("amortized_1000_steps", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (memory, ns, next) = (memory.clone(), ns.clone(), next.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let e = long.episode(next.fetch_add(1, Ordering::Relaxed));
                    let id = memory.start_episode(&ns, e.task).await.unwrap();
                    let start = Instant::now();
                    for step in e.steps {
                        memory.log_step(&ns, id, step).await.unwrap();
                    }
                    memory.flush().await.unwrap();
                    total += start.elapsed();
                }
                total
            }
        });
    });
    group.finish();
}

/// `lifecycle/complete_episode/{10,50,1000}_steps`.
fn bench_complete(c: &mut Criterion, sh: &Shared<'_>) {
    let Shared {
        rt,
        memory,
        ns,
        next,
    } = *sh;
    let mut group = c.benchmark_group("lifecycle/complete_episode");
    for steps in [10_usize, 50, 1_000] {
        group.sample_size(if steps >= 1_000 { 10 } else { 20 });
        let workload = Workload::new(SEED, steps);
        group.bench_function(format!("{steps}_steps"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (memory, ns, next) = (memory.clone(), ns.clone(), next.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let (id, outcome) = prepared(&memory, &ns, workload, i).await;
                        let start = Instant::now();
                        black_box(memory.complete_episode(&ns, id, outcome).await.unwrap());
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

/// `lifecycle/start_episode_concurrent/{1,8,64}_tasks`.
fn bench_start_concurrent(c: &mut Criterion, sh: &Shared<'_>, workload: Workload) {
    const STARTS: u64 = 256;
    let Shared {
        rt,
        memory,
        ns,
        next,
    } = *sh;
    let mut group = c.benchmark_group("lifecycle/start_episode_concurrent");
    group.sample_size(10);
    group.throughput(Throughput::Elements(STARTS));
    for tasks in [1_u64, 8, 64] {
        group.bench_function(format!("{tasks}_tasks"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (memory, ns, next) = (memory.clone(), ns.clone(), next.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let mut set = tokio::task::JoinSet::new();
                        for _ in 0..tasks {
                            let (memory, ns, next) = (memory.clone(), ns.clone(), next.clone());
                            set.spawn(async move {
                                for _ in 0..STARTS / tasks {
                                    let i = next.fetch_add(1, Ordering::Relaxed);
                                    let task = workload.episode(i).task;
                                    memory.start_episode(&ns, task).await.unwrap();
                                }
                            });
                        }
                        while let Some(done) = set.join_next().await {
                            done.unwrap();
                        }
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

fn lifecycle(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = namespace();
    let stack = stack_with_history(&rt, dir.path(), config());
    let memory = stack.memory.clone();
    let next = Arc::new(AtomicU64::new(1_000_000));
    let shared = Shared {
        rt: &rt,
        memory: &memory,
        ns: &ns,
        next: &next,
    };
    // Episodes of 4 steps: only their tasks are started.
    let workload = Workload::new(SEED, 4);
    bench_start_single(c, &shared, workload);
    bench_log_step(c, &shared);
    bench_complete(c, &shared);
    bench_start_concurrent(c, &shared, workload);
    rt.block_on(stack.shutdown()).unwrap();
}

fn batching(c: &mut Criterion) {
    const STEPS: u64 = 200;
    const EPISODES: u64 = 4;
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = namespace();
    let batched = stack_with_history(&rt, &dir.path().join("batched"), config());
    let unbatched_config = config().with_steps(StepBatchConfig {
        max_batch: 1,
        flush_interval: Duration::from_secs(3_600),
    });
    let unbatched = stack_with_history(&rt, &dir.path().join("unbatched"), unbatched_config);
    let next = Arc::new(AtomicU64::new(2_000_000));
    let workload = Workload::new(SEED, (STEPS / EPISODES) as usize);

    let mut group = c.benchmark_group("lifecycle/steps");
    group.sample_size(10);
    group.throughput(Throughput::Elements(STEPS));
    for (name, stack) in [("batched_64", &batched), ("unbatched_1", &unbatched)] {
        let memory = stack.memory.clone();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (memory, ns, next) = (memory.clone(), ns.clone(), next.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut episodes = Vec::new();
                        for _ in 0..EPISODES {
                            let e = workload.episode(next.fetch_add(1, Ordering::Relaxed));
                            let id = memory.start_episode(&ns, e.task).await.unwrap();
                            episodes.push((id, e.steps));
                        }
                        let start = Instant::now();
                        for (id, steps) in episodes {
                            for step in steps {
                                memory.log_step(&ns, id, step).await.unwrap();
                            }
                        }
                        memory.flush().await.unwrap();
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();
    rt.block_on(async {
        batched.shutdown().await.unwrap();
        unbatched.shutdown().await.unwrap();
    });
}

/// Episode `i` of `workload` as the memory holds it just before completion.
fn in_memory_episode(workload: Workload, i: u64) -> (Episode, memory_core::Outcome) {
    let e = workload.episode(i);
    let at = SystemClock.now();
    let mut episode = Episode::start(e.task, at);
    episode.steps = e
        .steps
        .into_iter()
        .enumerate()
        .map(|(k, input)| ExecutionStep {
            step_number: k as u32 + 1,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: at,
            input,
        })
        .collect();
    (episode, e.outcome)
}

/// `learning/extract/1000_steps`.
fn bench_extract(c: &mut Criterion) {
    let mut group = c.benchmark_group("learning/extract");
    let (episode, outcome) = in_memory_episode(Workload::new(SEED, 1_000), 3);
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("1000_steps", |b| {
        b.iter(|| {
            let reward = compute_reward(
                &episode.steps,
                episode.context.complexity,
                &outcome,
                RewardHistory::default(),
            );
            let reflection = reflect(&episode, &outcome, &reward);
            let update = extract_learning(&episode, &outcome, SystemClock.now());
            black_box((reward, reflection, update))
        });
    });
    group.finish();
}

/// `policy/redact_step/50_clean_steps`: the secret scan every logged step goes through
/// (`log_step` runs it on the caller's thread): the default rules over the 50 steps of a
/// workload episode, none of which holds a secret. Each iteration scans fresh copies
/// (redaction rewrites in place).
fn bench_redact(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy/redact_step");
    let steps = Workload::new(SEED, 50).episode(5).steps;
    let redactor = Redactor::new(&RedactionConfig::default()).unwrap();
    group.throughput(Throughput::Elements(steps.len() as u64));
    group.bench_function("50_clean_steps", |b| {
        b.iter_batched_ref(
            || steps.clone(),
            |steps| {
                for step in steps.iter_mut() {
                    redactor.redact_step(step);
                }
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// `learning/heuristic_update/merge_in_process`: the observations of one 50-step episode
/// merged onto the items an earlier episode of the same kind created (so each heuristic and
/// pattern absorbs evidence).
fn bench_merge(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (episode, outcome) = in_memory_episode(Workload::new(SEED, 50), 11);
    let update = extract_learning(&episode, &outcome, SystemClock.now());
    let created = update.apply(ExistingLearned::default());
    let existing = ExistingLearned {
        patterns: created.patterns.iter().map(|c| c.item.clone()).collect(),
        heuristics: created
            .heuristics
            .iter()
            .map(|c| c.item.clone())
            .collect::<Vec<Heuristic>>(),
        lessons: created.lessons.iter().map(|c| c.item.clone()).collect(),
    };
    group.bench_function("merge_in_process", |b| {
        b.iter(|| black_box(update.apply(existing.clone())));
    });
}

/// `learning/heuristic_update/feedback_vote`: votes on a heuristic the history taught,
/// through the default stack.
fn bench_feedback_vote(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    memory: &SelfLearningMemory,
    ns: &Namespace,
) {
    let (heuristic, episodes) = rt.block_on(async {
        let h = memory
            .heuristics(ns, &LearnedQuery::default())
            .await
            .unwrap()
            .into_iter()
            .next()
            .expect("the history taught at least one heuristic");
        let episodes: Vec<EpisodeId> = memory
            .list_episodes(ns, &memory_core::EpisodeQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        (h, episodes)
    });
    assert!(!episodes.is_empty());
    let turn = AtomicU64::new(0);
    group.bench_function("feedback_vote", |b| {
        b.to_async(rt).iter(|| {
            let t = turn.fetch_add(1, Ordering::Relaxed);
            let episode = episodes[(t as usize) % episodes.len()];
            let outcome = if t.is_multiple_of(3) {
                FeedbackOutcome::Hindered
            } else {
                FeedbackOutcome::Helped
            };
            let target = FeedbackTarget::Heuristic(heuristic.id.clone());
            async move {
                memory
                    .record_feedback(ns, target, episode, outcome)
                    .await
                    .unwrap();
            }
        });
    });
}

/// `learning/full_cycle/20_steps`: ask, record, complete, report `helped`.
fn bench_full_cycle(c: &mut Criterion, rt: &Runtime, memory: &SelfLearningMemory, ns: &Namespace) {
    let mut group = c.benchmark_group("learning/full_cycle");
    group.sample_size(20);
    let workload = Workload::new(SEED, 20);
    let next = AtomicU64::new(3_000_000);
    group.bench_function("20_steps", |b| {
        b.to_async(rt).iter(|| {
            let e = workload.episode(next.fetch_add(1, Ordering::Relaxed));
            async move {
                let request = RecommendRequest::new(e.task.task_description.clone())
                    .with_context(Some(e.task.task_type), e.task.context.clone());
                let advice = memory.recommend(ns, &request).await.unwrap();
                let (report, _) = record_workload_episode(memory, ns, e).await.unwrap();
                if let Some(p) = advice.patterns.first() {
                    memory
                        .record_feedback(
                            ns,
                            FeedbackTarget::Pattern(p.item.id.clone()),
                            report.episode_id,
                            FeedbackOutcome::Helped,
                        )
                        .await
                        .unwrap();
                }
                black_box(report)
            }
        });
    });
    group.finish();
}

fn learning(c: &mut Criterion) {
    bench_extract(c);
    bench_redact(c);
    let mut group = c.benchmark_group("learning/heuristic_update");
    bench_merge(&mut group);

    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = namespace();
    let stack = stack_with_history(&rt, dir.path(), config());
    let memory = stack.memory.clone();
    bench_feedback_vote(&mut group, &rt, &memory, &ns);
    group.finish();

    bench_full_cycle(c, &rt, &memory, &ns);
    rt.block_on(stack.shutdown()).unwrap();
}

criterion_group!(benches, lifecycle, batching, learning);
criterion_main!(benches);
