//! What encryption at rest costs: the same operations on two default stacks (libsql file +
//! redb cache + journal, opened as the CLI opens them), one not encrypted and one encrypted
//! under a generated key, measured in one run side by side (`plain` then `encrypted` in each
//! group), each store holding 100 realistic episodes of history first:
//!
//! - `encryption/start_episode/{plain,encrypted}`: one `start_episode` (durable insert and
//!   cache fill: an encrypted page write and a sealed cache entry).
//! - `encryption/complete_episode_50_steps/{plain,encrypted}`: `complete_episode` of a 50-step
//!   episode whose steps are still buffered (the write-heavy call).
//! - `encryption/get_episode_disk/{plain,encrypted}`: reading an episode back through the redb
//!   cache file with its in-process front off (a sealed record opened and decoded).
//! - `encryption/journal_append/{plain,encrypted}`: one fsynced journal append (what a write
//!   costs while the database is unreachable), sealed or not.
//! - `encryption/seal/{1KiB,64KiB}`: the AEAD alone (XChaCha20-Poly1305), per record.
//!
//! Needs the `encryption` feature (cmake): `cargo bench -p memory-benches --features
//! encryption --bench encryption`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memory_benches::{DefaultStack, Workload, memory_config, record_workload_episode, runtime};
use memory_core::{
    EpisodeId, MemoryConfig, Namespace, Outbox, OutboxEntry, RateLimitConfig, WriteOp,
};
use memory_seal::{MasterKey, Sealer};
use memory_storage_redb::{CacheConfig, OutboxConfig, RedbOutbox};
use memory_storage_turso::Synchronous;
use tokio::runtime::Runtime;

const HISTORY: u64 = 100;
const SEED: u64 = 11;

fn config() -> MemoryConfig {
    memory_config().with_rate_limit(RateLimitConfig::disabled())
}

fn namespace() -> Namespace {
    Namespace::new("bench/encryption").unwrap()
}

/// A stack in `dir` (encrypted under `key` when given) with `HISTORY` episodes; its cache's
/// in-process front is off, so reads go to the cache file.
fn stack(rt: &Runtime, dir: &Path, key: Option<MasterKey>) -> (DefaultStack, Vec<EpisodeId>) {
    rt.block_on(async {
        let cache = CacheConfig::default().with_memory_capacity(0, 0);
        let stack = DefaultStack::open_keyed(dir, config(), cache, Synchronous::Normal, key)
            .await
            .unwrap();
        let ns = namespace();
        let workload = Workload::new(SEED, 50);
        let mut ids = Vec::new();
        for i in 0..HISTORY {
            let (report, _) = record_workload_episode(&stack.memory, &ns, workload.episode(i))
                .await
                .unwrap();
            ids.push(report.episode_id);
        }
        stack.memory.flush().await.unwrap();
        (stack, ids)
    })
}

struct Side {
    name: &'static str,
    stack: DefaultStack,
    ids: Vec<EpisodeId>,
    next: Arc<AtomicU64>,
}

fn bench_stack(c: &mut Criterion, rt: &Runtime, sides: &[Side]) {
    let ns = namespace();
    let mut group = c.benchmark_group("encryption/start_episode");
    group.throughput(Throughput::Elements(1));
    for side in sides {
        let workload = Workload::new(SEED, 50);
        group.bench_function(side.name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (memory, ns, next) = (side.stack.memory.clone(), ns.clone(), side.next.clone());
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
    }
    group.finish();

    let mut group = c.benchmark_group("encryption/complete_episode_50_steps");
    group.sample_size(20);
    for side in sides {
        let workload = Workload::new(SEED, 50);
        group.bench_function(side.name, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (memory, ns, next) = (side.stack.memory.clone(), ns.clone(), side.next.clone());
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let e = workload.episode(next.fetch_add(1, Ordering::Relaxed));
                        let id = memory.start_episode(&ns, e.task).await.unwrap();
                        for step in e.steps {
                            memory.log_step(&ns, id, step).await.unwrap();
                        }
                        let start = Instant::now();
                        black_box(memory.complete_episode(&ns, id, e.outcome).await.unwrap());
                        total += start.elapsed();
                    }
                    total
                }
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("encryption/get_episode_disk");
    for side in sides {
        let mut i = 0usize;
        group.bench_function(side.name, |b| {
            b.to_async(rt).iter(|| {
                i = (i + 1) % side.ids.len();
                let (memory, ns, id) = (side.stack.memory.clone(), ns.clone(), side.ids[i]);
                async move { black_box(memory.get_episode(&ns, id).await.unwrap()) }
            });
        });
    }
    group.finish();
}

fn bench_journal(c: &mut Criterion, rt: &Runtime, dir: &Path) {
    let key = MasterKey::generate().unwrap();
    let mut group = c.benchmark_group("encryption/journal_append");
    for (name, sealer) in [("plain", None), ("encrypted", Some(Sealer::new(&key)))] {
        let config = OutboxConfig {
            sealer,
            ..OutboxConfig::default()
        };
        let outbox = rt
            .block_on(RedbOutbox::open(dir.join(format!("{name}.redb")), config))
            .unwrap();
        let workload = Workload::new(SEED, 10);
        let ns = namespace();
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.to_async(rt).iter(|| {
                i += 1;
                let task = workload.episode(i).task;
                let episode = memory_core::Episode::start(task, chrono::Utc::now());
                let entry = OutboxEntry {
                    idempotency_key: format!("bench-{name}-{i}"),
                    namespace: ns.clone(),
                    op: WriteOp::CreateEpisode(episode),
                };
                let outbox = &outbox;
                async move { black_box(outbox.append(&entry).await.unwrap()) }
            });
        });
    }
    group.finish();
}

fn bench_seal(c: &mut Criterion) {
    let sealer = Sealer::new(&MasterKey::generate().unwrap());
    let mut group = c.benchmark_group("encryption/seal");
    for (name, size) in [("1KiB", 1024usize), ("64KiB", 64 * 1024)] {
        let data = vec![7u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(sealer.seal(&data, b"bench").unwrap()));
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let sides: Vec<Side> = [
        ("plain", None),
        ("encrypted", Some(MasterKey::generate().unwrap())),
    ]
    .into_iter()
    .map(|(name, key)| {
        let (stack, ids) = stack(&rt, &tmp.path().join(name), key);
        Side {
            name,
            stack,
            ids,
            next: Arc::new(AtomicU64::new(HISTORY)),
        }
    })
    .collect();
    bench_stack(c, &rt, &sides);
    for side in &sides {
        rt.block_on(side.stack.shutdown()).unwrap();
    }
    bench_journal(c, &rt, tmp.path());
    bench_seal(c);
}

criterion_group!(encryption, benches);
criterion_main!(encryption);
