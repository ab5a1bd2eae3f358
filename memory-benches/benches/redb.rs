//! redb cache and outbox benchmarks: a cache hit served in process (moka), a hit served from the
//! redb file (front disabled), a miss, an insert (at capacity, so each insert also evicts), and
//! outbox appends (one appender: one fsync each; eight appenders: group commit).
//!
//! Fixture: a completed-looking episode with 20 steps (~4 KB encoded).
//!
//! Run: `cargo bench -p memory-benches --bench redb -- --quick`.

// Benchmark code: pedantic style lints that do not help here.
#![allow(
    clippy::items_after_statements,
    clippy::format_collect,
    clippy::redundant_closure_for_method_calls
)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use memory_core::{
    Cache, CacheKey, CachedValue, Clock, Episode, EpisodeId, ExecutionStep, Namespace, NewEpisode,
    Outbox, OutboxEntry, StepInput, SystemClock, TaskContext, TaskType, WriteOp,
};
use memory_storage_redb::{CacheConfig, OutboxConfig, RedbCache, RedbOutbox};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn episode(i: u64) -> Episode {
    let at = SystemClock.now();
    let mut e = Episode::start(
        NewEpisode::new(
            format!("episode {i}: add rate limiting to the public API and cover it with tests"),
            TaskType::CodeGeneration,
            TaskContext::new("web_api")
                .with_language("rust")
                .with_framework("axum")
                .with_tag("bench"),
        ),
        at,
    );
    e.steps = (1..=20)
        .map(|n| ExecutionStep {
            step_number: n,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: at,
            input: StepInput::ok(
                if n % 3 == 0 { "cargo" } else { "edit_file" },
                format!("step {n}: change the middleware and run the tests"),
                "ok: 42 tests passed; no warnings; the middleware now limits requests per key",
            )
            .with_parameters(serde_json::json!({"path": "src/middleware/rate_limit.rs", "line": n}))
            .with_latency_ms(120),
        })
        .collect();
    e
}

/// A cache benchmark group.
type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// `redb_cache/get_hit_memory`: an in-process hit (moka front). Returns the cache (front
/// enabled, `hot` in it).
fn bench_hit_memory(
    g: &mut Group<'_>,
    rt: &Runtime,
    dir: &Path,
    ns: &Namespace,
    hot: &Episode,
) -> RedbCache {
    let hot_key = CacheKey::Episode(hot.id);
    let with_front = rt
        .block_on(RedbCache::open(
            dir.join("front.redb"),
            CacheConfig::default(),
        ))
        .unwrap();
    rt.block_on(with_front.put(ns, &CachedValue::Episode(Arc::new(hot.clone()))))
        .unwrap();
    // Checked only where the bench ran (a filter may skip it).
    let mut ran = false;
    g.bench_function("get_hit_memory", |b| {
        ran = true;
        b.to_async(rt)
            .iter(|| async { black_box(with_front.get(ns, &hot_key).await.unwrap()) });
    });
    assert!(!ran || with_front.stats().memory_hits > 0);
    with_front
}

/// The cache with its front disabled and 1,000 entries, `hot` among them.
fn disk_cache(rt: &Runtime, dir: &Path, ns: &Namespace, hot: &Episode) -> RedbCache {
    let disk = rt
        .block_on(RedbCache::open(
            dir.join("disk.redb"),
            CacheConfig::default().with_memory_capacity(0, 0),
        ))
        .unwrap();
    rt.block_on(async {
        for i in 1..1_000 {
            disk.put(ns, &CachedValue::Episode(Arc::new(episode(i))))
                .await
                .unwrap();
        }
        disk.put(ns, &CachedValue::Episode(Arc::new(hot.clone())))
            .await
            .unwrap();
    });
    disk
}

/// `redb_cache/get_hit_redb`: a hit from the redb file (front disabled), 1,000 entries
/// present.
fn bench_hit_redb(
    g: &mut Group<'_>,
    rt: &Runtime,
    disk: &RedbCache,
    ns: &Namespace,
    hot_key: &CacheKey,
) {
    let mut ran = false;
    g.bench_function("get_hit_redb", |b| {
        ran = true;
        b.to_async(rt)
            .iter(|| async { black_box(disk.get(ns, hot_key).await.unwrap()) });
    });
    assert!(!ran || disk.stats().disk_hits > 0);
}

/// `redb_cache/invalidate_64_unknown`: invalidating 64 keys the file never held (the change
/// feed after another process wrote a lot): answered from one read of the file, with no
/// write transaction.
fn bench_invalidate_unknown(g: &mut Group<'_>, rt: &Runtime, disk: &RedbCache, ns: &Namespace) {
    const UNKNOWN: usize = 64;
    g.throughput(Throughput::Elements(UNKNOWN as u64));
    g.bench_function("invalidate_64_unknown", |b| {
        b.to_async(rt).iter_batched(
            || {
                (0..UNKNOWN)
                    .map(|_| (ns.clone(), CacheKey::Episode(EpisodeId::new())))
                    .collect::<Vec<_>>()
            },
            |keys| async move { disk.invalidate_many(&keys).await.unwrap() },
            BatchSize::SmallInput,
        );
    });
    g.throughput(Throughput::Elements(1));
}

/// `redb_cache/get_miss`: a miss (front enabled: a miss checks both tiers).
fn bench_miss(g: &mut Group<'_>, rt: &Runtime, with_front: &RedbCache, ns: &Namespace) {
    let missing = CacheKey::Episode(EpisodeId::new());
    g.bench_function("get_miss", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(with_front.get(ns, &missing).await.unwrap()) });
    });
}

/// `redb_cache/put_evicting` (insert at capacity: each put writes one entry and evicts one)
/// and `redb_cache/put_evicting_8_writers` (eight concurrent writers: their puts share
/// commits, group commit).
fn bench_put_evicting(g: &mut Group<'_>, rt: &Runtime, dir: &Path, ns: &Namespace) {
    let bounded = rt
        .block_on(RedbCache::open(
            dir.join("bounded.redb"),
            CacheConfig::default().with_max_entries(1_000),
        ))
        .unwrap();
    let pool: Vec<CachedValue> = (0..2_000)
        .map(|i| CachedValue::Episode(Arc::new(episode(10_000 + i))))
        .collect();
    let next = AtomicU64::new(0);
    g.bench_function("put_evicting", |b| {
        b.to_async(rt).iter(|| async {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize % pool.len();
            bounded.put(ns, &pool[i]).await.unwrap();
        });
    });

    const WRITERS: u64 = 8;
    g.throughput(Throughput::Elements(WRITERS));
    let shared = Arc::new((bounded.clone(), pool, ns.clone()));
    g.bench_function("put_evicting_8_writers", |b| {
        b.to_async(rt).iter(|| {
            let shared = shared.clone();
            let base = next.fetch_add(WRITERS, Ordering::Relaxed) as usize;
            async move {
                let mut tasks = Vec::new();
                for w in 0..WRITERS as usize {
                    let shared = shared.clone();
                    tasks.push(tokio::spawn(async move {
                        let (cache, pool, ns) = &*shared;
                        cache.put(ns, &pool[(base + w) % pool.len()]).await.unwrap();
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
            }
        });
    });
    eprintln!("bounded cache after bench: {:?}", bounded.stats());
}

fn cache_benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("bench").unwrap();
    let hot = episode(0);
    let hot_key = CacheKey::Episode(hot.id);
    let bytes =
        memory_storage_redb::encode_cached_value(&CachedValue::Episode(Arc::new(hot.clone())))
            .unwrap()
            .len();
    eprintln!("fixture episode: {bytes} encoded bytes");

    let mut g = c.benchmark_group("redb_cache");
    g.throughput(Throughput::Elements(1));
    let with_front = bench_hit_memory(&mut g, &rt, dir.path(), &ns, &hot);
    let disk = disk_cache(&rt, dir.path(), &ns, &hot);
    bench_hit_redb(&mut g, &rt, &disk, &ns, &hot_key);
    bench_invalidate_unknown(&mut g, &rt, &disk, &ns);
    bench_miss(&mut g, &rt, &with_front, &ns);
    bench_put_evicting(&mut g, &rt, dir.path(), &ns);
    g.finish();
}

fn outbox_entry(i: u64) -> OutboxEntry {
    OutboxEntry {
        idempotency_key: format!("bench-{i}"),
        namespace: Namespace::new("bench").unwrap(),
        op: WriteOp::AppendSteps {
            episode_id: EpisodeId::new(),
            steps: episode(i).steps.into_iter().take(5).collect(),
        },
    }
}

fn outbox_benches(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let outbox = rt
        .block_on(RedbOutbox::open(
            dir.path().join("outbox.redb"),
            OutboxConfig::default(),
        ))
        .unwrap();
    let entry = outbox_entry(1);
    let mut g = c.benchmark_group("redb_outbox");
    g.measurement_time(Duration::from_secs(5));

    g.throughput(Throughput::Elements(1));
    g.bench_function("append_fsync_1_appender", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(outbox.append(&entry).await.unwrap()) });
    });

    const CONCURRENT: u64 = 8;
    g.throughput(Throughput::Elements(CONCURRENT));
    let shared = Arc::new(outbox.clone());
    g.bench_function("append_fsync_8_appenders", |b| {
        b.to_async(&rt).iter_batched(
            || entry.clone(),
            |entry| {
                let shared = shared.clone();
                async move {
                    let mut tasks = Vec::new();
                    for _ in 0..CONCURRENT {
                        let (o, e) = (shared.clone(), entry.clone());
                        tasks.push(tokio::spawn(async move { o.append(&e).await.unwrap() }));
                    }
                    for t in tasks {
                        black_box(t.await.unwrap());
                    }
                }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();

    // Keep the file small for the next run and report what is pending.
    rt.block_on(async {
        let start = Instant::now();
        let pending = outbox.len().await.unwrap();
        let last = outbox
            .peek(usize::MAX)
            .await
            .unwrap()
            .last()
            .map_or(0, |(s, _)| *s);
        outbox.ack(last).await.unwrap();
        eprintln!("outbox: acked {pending} entries in {:?}", start.elapsed());
    });
}

criterion_group!(benches, cache_benches, outbox_benches);
criterion_main!(benches);
