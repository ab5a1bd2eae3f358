//! Embedding cost of all-MiniLM-L6-v2 on candle (CPU): model load, one short text, a batch of 32
//! short texts, and texts of about 150 tokens (throughput in texts/s), all through the async
//! `Embedder::embed` path the memory uses. Skips with a message when the model is not installed
//! (`scripts/install-model.sh`, or `MEMORY_MODEL_DIR`).
//!
//! Run: `cargo bench -p memory-benches --bench embed -- --quick`.

// Benchmark code: pedantic style lints that do not help here.
#![allow(
    clippy::items_after_statements,
    clippy::format_collect,
    clippy::redundant_closure_for_method_calls
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memory_core::Embedder;
use memory_embed::{MiniLmEmbedder, default_model_dir, missing_model_files};

/// Short task descriptions, as agents write them.
const SHORT: &[&str] = &[
    "fix flaky test that fails near midnight",
    "add rate limiting middleware",
    "migrate the users table to a new schema",
    "inject a fake clock to stabilise a time-dependent test",
    "upgrade tokio and fix the breaking changes",
    "add retries with backoff to the http client",
    "parse the config file and validate required fields",
    "speed up the slow integration test suite",
];

/// A long episode text (task, steps, reflection): about 150 tokens after truncation checks.
const LONG: &str = "Task: the nightly CI job fails intermittently in the scheduler crate because \
    a test compares wall-clock timestamps across midnight. Steps: ran cargo test repeatedly to \
    reproduce the failure, read the failing assertion, grepped for SystemTime::now in the \
    scheduler module, introduced a Clock trait with a fake implementation for tests, replaced \
    direct calls with the injected clock, and reran the suite two hundred times without a \
    failure. Reflection: time-dependent tests should never read the real clock; injecting a \
    clock made the failure deterministic and the fix obvious. Next time, search for direct \
    clock reads first, and add a lint that forbids them outside the clock module so the \
    problem cannot come back unnoticed in a later change to the scheduler or its tests.";

fn short_texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{} (variant {i})", SHORT[i % SHORT.len()]))
        .collect()
}

fn bench_embed(c: &mut Criterion) {
    let Some(dir) = default_model_dir().filter(|d| missing_model_files(d).is_empty()) else {
        eprintln!("skipping embed benches: model not installed; run scripts/install-model.sh");
        return;
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skipping embed benches: no tokio runtime: {e}");
            return;
        }
    };

    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("load", |b| {
        b.iter(|| black_box(MiniLmEmbedder::load(&dir)));
    });

    let embedder = match MiniLmEmbedder::load(&dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("skipping embed benches: model failed to load: {e}");
            return;
        }
    };
    match embedder.token_count(LONG) {
        Ok(n) => eprintln!("long text: {n} tokens (special tokens included)"),
        Err(e) => eprintln!("long text: cannot count tokens: {e}"),
    }

    group.sample_size(30);
    let one = short_texts(1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_short", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(embedder.embed(&one).await) });
    });

    let batch = short_texts(32);
    group.throughput(Throughput::Elements(32));
    group.bench_function("batch32_short", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(embedder.embed(&batch).await) });
    });

    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let long_one = vec![LONG.to_owned()];
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_150_tokens", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(embedder.embed(&long_one).await) });
    });

    let long_batch: Vec<String> = (0..16).map(|i| format!("{LONG} ({i})")).collect();
    group.throughput(Throughput::Elements(16));
    group.bench_function("batch16_150_tokens", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(embedder.embed(&long_batch).await) });
    });
    group.finish();
}

criterion_group!(benches, bench_embed);
criterion_main!(benches);
