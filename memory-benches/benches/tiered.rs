//! Tiered storage (`TieredStorage`: the redb cache and the journal in front of libsql, the
//! default stack as `memory-stack` opens it for the CLI) against the bare durable layer,
//! everything on local files:
//!
//! - `tiered/complete_episode_50_steps/{durable,tiered}`: completing an episode whose 50 steps
//!   are still buffered (writes the step rows, reads the episode back, scores, reflects,
//!   extracts and merges, commits) through `SelfLearningMemory`, over bare `TursoStorage` vs
//!   over `TieredStorage` with a healthy durable layer (durable write, then the cache updates).
//!   Each store holds 200 completed episodes of history first.
//! - `tiered/get_episode/{durable,tiered_cache_hit,tiered_redb_hit}`: reading a completed
//!   50-step episode through `SelfLearningMemory::get_episode`: from libsql; from a warm cache
//!   (served by the in-process front); from a warm cache with the front disabled (the stack
//!   reopened on the same directory: served from the redb file).
//! - `tiered/outbox_replay/1000_writes`: 1,000 writes (250 episodes: start, 10 steps in two
//!   batches, complete) journaled in the outbox while the durable layer is unavailable (the
//!   `FaultInjecting` wrapper of `memory-testkit`, failing every call, transiently, between
//!   libsql and the tiered composition, with the stack's cache file and journal directory),
//!   then the time for `sync_now` to replay all of them into libsql once it is healed;
//!   throughput in replayed writes/s. Journaling (8 concurrent writers, so the outbox's group
//!   commit is used) is outside the timed part.
//!
//! Run: `cargo bench -p memory-benches --bench tiered -- --quick`.

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use memory_benches::DefaultStack;
use memory_core::{
    EpisodeId, MemoryConfig, Namespace, Outcome, SelfLearningMemory, StepBatchConfig,
};
use memory_stack::DataDir;
use memory_storage_redb::{CacheConfig, JournalDir, OutboxConfig, RedbCache};
use memory_storage_turso::TursoStorage;
use memory_testkit::{FaultInjecting, FaultMode};
use memory_tiered::{BreakerConfig, TieredConfig, TieredStorage};

const HISTORY: usize = 200;

/// Replay bench: episodes journaled per iteration, and the writes each one journals: its
/// create and its completion, and between none and two step batches of 5 of its own (a full
/// batch is written behind the caller, and the completion carries whatever is still buffered
/// when it comes, so how many batches go first depends on timing).
const REPLAY_EPISODES: usize = 250;
const REPLAY_STEPS: usize = 10;
const MIN_WRITES: u64 = REPLAY_EPISODES as u64 * 2;
const MAX_WRITES: u64 = REPLAY_EPISODES as u64 * 4;
const JOURNAL_WRITERS: usize = 8;

use memory_benches::{memory_config, prepared, runtime};

async fn record(memory: &SelfLearningMemory, ns: &Namespace, i: usize, steps: usize) -> EpisodeId {
    let id = prepared(memory, ns, i, steps).await;
    let outcome = if i % 5 == 3 {
        Outcome::failure("tests still fail")
    } else {
        Outcome::success("done")
    };
    memory.complete_episode(ns, id, outcome).await.unwrap();
    id
}

/// Two memories with the same history: one over bare libsql, one over the default stack (its
/// own data directory). Also returns a completed 50-step episode in each.
struct Pair {
    durable: Arc<SelfLearningMemory>,
    stack: DefaultStack,
    durable_episode: EpisodeId,
    tiered_episode: EpisodeId,
}

async fn pair(dir: &Path, ns: &Namespace) -> Pair {
    let bare = TursoStorage::open_in_data_dir(dir.join("durable"))
        .await
        .unwrap();
    let durable = Arc::new(SelfLearningMemory::new(Arc::new(bare), memory_config()).unwrap());
    let stack = DefaultStack::open(&dir.join("tiered"), memory_config())
        .await
        .unwrap();
    let tiered = Arc::clone(&stack.memory);
    for i in 0..HISTORY {
        record(&durable, ns, i, 10).await;
        record(&tiered, ns, i, 10).await;
    }
    let durable_episode = record(&durable, ns, 5_000, 50).await;
    let tiered_episode = record(&tiered, ns, 5_000, 50).await;
    Pair {
        durable,
        stack,
        durable_episode,
        tiered_episode,
    }
}

fn complete_and_get(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("bench/tiered").unwrap();
    let p = rt.block_on(pair(dir.path(), &ns));

    let mut group = c.benchmark_group("tiered/complete_episode_50_steps");
    group.sample_size(20);
    let next = Arc::new(AtomicUsize::new(10_000));
    for (name, memory) in [("durable", &p.durable), ("tiered", &p.stack.memory)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let memory = memory.clone();
                let ns = ns.clone();
                let next = next.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let id = prepared(&memory, &ns, i, 50).await;
                        let start = Instant::now();
                        black_box(
                            memory
                                .complete_episode(&ns, id, Outcome::success("done"))
                                .await
                                .unwrap(),
                        );
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();
    let status = p.stack.tiered.status();
    assert_eq!(status.outbox_len, 0, "nothing journaled: {status:?}");
    assert_eq!(status.cache_errors, 0, "{status:?}");

    let mut group = c.benchmark_group("tiered/get_episode");
    group.throughput(Throughput::Elements(1));
    let tiered = &p.stack.tiered;
    get_episode(
        &mut group,
        &rt,
        &ns,
        "durable",
        &p.durable,
        p.durable_episode,
        None,
    );
    let cached = &p.stack.memory;
    let tiered_id = p.tiered_episode;
    get_episode(
        &mut group,
        &rt,
        &ns,
        "tiered_cache_hit",
        cached,
        tiered_id,
        Some(tiered),
    );
    // The stack reopened on the same directory with the in-process front disabled, so its
    // hits are served from the redb file (closed cleanly, so it keeps its entries).
    let redb_only = rt.block_on(async {
        p.stack.shutdown().await.unwrap();
        drop(p.stack); // releases the cache file
        let front_off = CacheConfig::default().with_memory_capacity(0, 0);
        let dir = dir.path().join("tiered");
        DefaultStack::open_with(&dir, memory_config(), front_off)
            .await
            .unwrap()
    });
    let (memory, tiered) = (&redb_only.memory, Some(&redb_only.tiered));
    get_episode(
        &mut group,
        &rt,
        &ns,
        "tiered_redb_hit",
        memory,
        tiered_id,
        tiered,
    );
    group.finish();

    rt.block_on(async {
        p.durable.shutdown().await.unwrap();
        redb_only.shutdown().await.unwrap();
    });
}

/// Benches `get_episode` of `id` in `memory`, warmed first; over tiered storage, checks that
/// every measured read was a cache hit.
fn get_episode(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    ns: &Namespace,
    name: &str,
    memory: &Arc<SelfLearningMemory>,
    id: EpisodeId,
    tiered: Option<&Arc<TieredStorage>>,
) {
    let before = rt.block_on(async {
        let e = memory.get_episode(ns, id).await.unwrap();
        assert_eq!(e.steps.len(), 50);
        assert!(e.is_completed());
        tiered.map(|t| t.status().cache.unwrap())
    });
    group.bench_function(name, |b| {
        b.to_async(rt)
            .iter(|| async { black_box(memory.get_episode(ns, id).await.unwrap()) });
    });
    if let (Some(t), Some(before)) = (tiered, before) {
        let after = t.status().cache.unwrap();
        assert_eq!(
            after.misses, before.misses,
            "{name}: every read was a cache hit"
        );
    }
}

/// The replay bench's stack: libsql behind the fault injector, behind the tiered composition.
struct ReplayStack {
    fault: Arc<FaultInjecting<TursoStorage>>,
    tiered: Arc<TieredStorage>,
    memory: Arc<SelfLearningMemory>,
}

/// Breaker open for 10 ms; the sync task wakes only when a write is journaled (every hour
/// otherwise), so replays after the journaling phase are the measured `sync_now` calls.
fn replay_config() -> TieredConfig {
    TieredConfig {
        breaker: BreakerConfig {
            open_for: Duration::from_millis(10),
            ..BreakerConfig::default()
        },
        sync_interval: Duration::from_secs(3_600),
        replica_sync_interval: Duration::from_secs(3_600),
        ..TieredConfig::default()
    }
}

/// Journals [`REPLAY_EPISODES`] episodes with the durable layer failing, and returns once the
/// sync task has stopped retrying (the breaker is open and nothing wakes it); returns how many
/// writes were journaled.
async fn journal(s: &ReplayStack, ns: &Namespace, first: usize) -> u64 {
    s.fault.set_mode(FaultMode::Always);
    let next = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..JOURNAL_WRITERS)
        .map(|_| {
            let (memory, ns, next) = (s.memory.clone(), ns.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= REPLAY_EPISODES {
                        return;
                    }
                    record(&memory, &ns, first + i, REPLAY_STEPS).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // The last journaled write woke the sync task; let its failing attempt finish.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let status = s.tiered.status();
    assert!(
        (MIN_WRITES..=MAX_WRITES).contains(&status.outbox_len),
        "every write journaled, none written: {status:?}"
    );
    status.outbox_len
}

fn outbox_replay(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("bench/replay").unwrap();
    let s = rt.block_on(async {
        let durable = TursoStorage::open_in_data_dir(dir.path().join("durable"))
            .await
            .unwrap();
        let fault = Arc::new(FaultInjecting::new(Arc::new(durable), FaultMode::Never));
        let layout = DataDir::new(dir.path());
        let journal = JournalDir::open(layout.journals(), Vec::new(), OutboxConfig::default())
            .await
            .unwrap();
        let cache = RedbCache::open(layout.cache(), CacheConfig::default())
            .await
            .unwrap();
        let tiered = TieredStorage::builder(fault.clone(), journal)
            .cache(Arc::new(cache))
            .config(replay_config())
            .open()
            .await
            .unwrap();
        // Steps are written in batches of 5: two step writes per 10-step episode.
        let config = MemoryConfig::default().with_steps(StepBatchConfig {
            max_batch: 5,
            flush_interval: Duration::from_secs(3_600),
        });
        let memory = Arc::new(SelfLearningMemory::new(tiered.clone(), config).unwrap());
        ReplayStack {
            fault,
            tiered,
            memory,
        }
    });

    let mut group = c.benchmark_group("tiered/outbox_replay");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(REPLAY_EPISODES as u64));
    let round = AtomicUsize::new(0);
    group.bench_function(format!("{REPLAY_EPISODES}_episodes"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let s = &s;
            let ns = &ns;
            let round = &round;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let first = round.fetch_add(1, Ordering::Relaxed) * REPLAY_EPISODES;
                    let journaled = journal(s, ns, 1_000_000 + first).await;
                    s.fault.set_mode(FaultMode::Never);
                    // Past the breaker's open time: the first replayed write is its probe.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let start = Instant::now();
                    let mut replayed = 0;
                    while s.tiered.status().outbox_len > 0 {
                        replayed += s.tiered.sync_now().await.unwrap();
                    }
                    total += start.elapsed();
                    assert_eq!(
                        replayed, journaled,
                        "all writes replayed by the measured calls"
                    );
                }
                total
            }
        });
    });
    group.finish();
    let status = s.tiered.status();
    assert_eq!(status.dead_letters, 0, "{status:?}");

    rt.block_on(async {
        s.memory.shutdown().await.unwrap();
        s.tiered.shutdown().await.unwrap();
    });
}

criterion_group!(benches, complete_and_get, outbox_replay);
criterion_main!(benches);
