//! Retrieval over past episodes: the in-process vector index, hybrid retrieval end to end on a
//! local libsql store, the first answer after a restart, and recommendations with the real model.
//!
//! - `retrieval/vector_index_search/{1000,10000,100000}`: `VectorIndex::search` over N random
//!   unit vectors of 384 dimensions (summaries spread over four domains / languages), k = 50:
//!   the candidates hybrid retrieval takes for a top-10 answer. Throughput in vectors scanned/s.
//!   `.../100000_filtered` filters on one domain (a quarter of the episodes).
//! - `retrieval/hybrid/{1000,10000,100000}`: `SelfLearningMemory::retrieve` (hybrid, limit 10,
//!   with a context; `.../100000_filtered` also filters on one domain, a quarter of the
//!   episodes) over a local libsql file holding N completed episodes (4-5 steps each, every
//!   eighth 28-29: those have step windows besides their own vector; the build prints the
//!   windows per episode and the vector rows' bytes per episode). The
//!   vectors come from [`BenchRandomEmbedder`], a stand-in that hashes the text to a
//!   pseudo-random unit vector: it costs nothing, so this measures the search (BM25 query, index
//!   scan, fusion, re-ranking), not the model. The query vector is cached after the first call,
//!   as for a repeated query.
//! - With `MEMORY_BENCH_1M=1`, both (the vector index search unfiltered) also run at 1,000,000
//!   episodes (`.../1000000`; the store takes a long time to build: keep it with
//!   `MEMORY_BENCH_DATA_DIR`). The resident set after each build is printed.
//! - `retrieval/cold_open_first_answer/{10000,100000}`: a restart: open the store (a new
//!   `TursoStorage` on the same file) and a new `SelfLearningMemory` inside the runtime (so its
//!   background tasks start, as in a real process, including the embedding task's check for
//!   unembedded episodes), then time until the first `retrieve` returns: it loads the namespace's
//!   vectors from the embeddings table into the index. The file stays in the OS page cache, so
//!   this is a process restart, not a cold disk.
//! - `retrieval/recommend_e2e_minilm/2000`: `SelfLearningMemory::recommend` with the real
//!   all-MiniLM-L6-v2 embedder over 2,000 completed episodes embedded by that model, a new task
//!   text every iteration so the query embedding (a model call) is included. Skips with a message
//!   when the model is not installed (`scripts/install-model.sh`, or `MEMORY_MODEL_DIR`).
//!
//! Stores are written through the storage traits (`EpisodeStore`), not episode by episode
//! through the memory API, which would take too long at 100k; then `embed_pending` embeds them
//! with a batch of 2,048 (fewer, larger embedder calls for the stand-in embedder; the drain
//! pages with a cursor, so the batch size does not change its complexity). Each store is built the first time a bench needs it (a
//! filter that skips a bench skips its setup) and kept for the run; build times are printed.
//!
//! Run: `cargo bench -p memory-benches --bench retrieval -- --quick`.

// Benchmark code: pedantic style lints that do not help here.
#![allow(
    clippy::items_after_statements,
    clippy::format_collect,
    clippy::redundant_closure_for_method_calls
)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use memory_core::retrieval::VectorIndex;
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    Clock, Complexity, Embedder, Episode, EpisodeCompletion, EpisodeFilter, EpisodeId,
    EpisodeStore, ExecutionStep, MemoryConfig, Namespace, Outcome, RetrievalConfig,
    RetrievalMethod, RetrievalQuery, RewardHistory, SelfLearningMemory, StepInput, SystemClock,
    TaskContext, TaskType, compute_reward, extract_learning, l2_normalize, reflect,
};
use memory_embed::{MiniLmEmbedder, default_model_dir, missing_model_files};
use memory_storage_turso::TursoStorage;
use tokio::runtime::Runtime;

const DIMS: usize = 384;
/// Candidates per source in hybrid retrieval (`RetrievalConfig::candidates`).
const CANDIDATES: usize = 50;
/// Episodes embedded per `embed_pending` batch while building a store.
const BUILD_EMBED_BATCH: u32 = 2_048;
/// Concurrent writers while populating a store (the writes themselves serialize on the writer
/// connection; the streams overlap building and encoding the rows).
const WRITE_STREAMS: usize = 4;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn namespace() -> Namespace {
    Namespace::new("bench/retrieval").unwrap()
}

/// `SplitMix64`: a small deterministic generator (the bench needs no statistical quality).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// The generator for episode `i` of a dataset (independent of the order of generation).
fn rng_for(dataset: u64, i: usize) -> Rng {
    let mut seed = Rng(dataset.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i as u64);
    Rng(seed.next_u64())
}

/// A pseudo-random unit vector (components roughly bell-shaped, so directions spread evenly).
fn random_unit(rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIMS)
        .map(|_| rng.unit() + rng.unit() + rng.unit() - 1.5)
        .collect();
    l2_normalize(&mut v);
    v
}

/// FNV-1a, so a text's stand-in vector is the same in every run and on every machine.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// A bench stand-in for the embedding model: each text maps to a fixed pseudo-random unit
/// vector derived from a hash of the text. The vectors carry no meaning; they cost nothing to
/// compute, so the benches that use it measure search, not the model.
#[derive(Debug)]
struct BenchRandomEmbedder;

impl Embedder for BenchRandomEmbedder {
    fn model_id(&self) -> &'static str {
        "bench-random-384"
    }

    fn dimensions(&self) -> usize {
        DIMS
    }

    // The signature `#[async_trait]` expands `async fn embed` to (this crate does not depend
    // on async-trait).
    fn embed<'s, 't, 'f>(
        &'s self,
        texts: &'t [String],
    ) -> Pin<Box<dyn Future<Output = memory_core::Result<Vec<Vec<f32>>>> + Send + 'f>>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        let vectors = texts
            .iter()
            .map(|t| random_unit(&mut Rng(fnv1a(t))))
            .collect();
        Box::pin(std::future::ready(Ok(vectors)))
    }
}

/// Domains with their language and framework: four contexts, a quarter of the episodes each.
const CONTEXTS: [(&str, &str, Option<&str>); 4] = [
    ("web_api", "rust", Some("axum")),
    ("databases", "python", Some("sqlalchemy")),
    ("cli", "go", None),
    ("frontend", "typescript", Some("react")),
];
const VERBS: [&str; 10] = [
    "fix", "add", "refactor", "speed up", "migrate", "test", "document", "debug", "remove",
    "upgrade",
];
const OBJECTS: [&str; 16] = [
    "the flaky test",
    "rate limiting",
    "retry logic",
    "the config parser",
    "the connection pool",
    "pagination",
    "error handling",
    "structured logging",
    "cache invalidation",
    "the auth middleware",
    "the schema migration",
    "the json serializer",
    "timeout handling",
    "a feature flag",
    "the health endpoint",
    "the metrics exporter",
];
const PLACES: [&str; 10] = [
    "scheduler",
    "billing service",
    "user module",
    "search endpoint",
    "importer",
    "admin panel",
    "payment worker",
    "session store",
    "report generator",
    "notification queue",
];
const READ_TOOLS: [&str; 3] = ["read_file", "grep", "list_dir"];
const CHECK_TOOLS: [&str; 2] = ["shell", "run_tests"];
const ERRORS: [&str; 4] = [
    "error[E0308]: mismatched types at src/lib.rs:42:9",
    "AssertionError: expected 200, got 500",
    "panic: runtime error: index out of range [3] with length 3",
    "TypeError: cannot read properties of undefined (reading 'id')",
];

fn task_type_for(verb: &str) -> TaskType {
    match verb {
        "fix" | "debug" => TaskType::Debugging,
        "add" | "upgrade" => TaskType::CodeGeneration,
        "refactor" | "remove" | "migrate" => TaskType::Refactoring,
        "test" => TaskType::Testing,
        "document" => TaskType::Documentation,
        _ => TaskType::Analysis,
    }
}

/// One episode in this many is a long session.
const LONG_EVERY: usize = 8;
/// The steps a long session adds.
const LONG_EXTRA_STEPS: usize = 24;

/// Episode `i` of a dataset, still in progress: a task in one of the four contexts, 4-5 steps
/// (sometimes a failed check and a fix; every eighth episode 24 more), started in the last 180
/// days.
fn started_episode(rng: &mut Rng, i: usize) -> Episode {
    let (domain, language, framework) = CONTEXTS[i % CONTEXTS.len()];
    let verb = rng.pick(&VERBS);
    let object = rng.pick(&OBJECTS);
    let place = rng.pick(&PLACES);
    let mut context = TaskContext::new(domain)
        .with_language(language)
        .with_complexity(Complexity::Moderate)
        .with_tag(place.replace(' ', "-"));
    if let Some(f) = framework {
        context = context.with_framework(f);
    }
    let started_at =
        SystemClock.now() - Duration::from_secs(rng.below(180 * 86_400) as u64 + 3_600);
    let file = format!("src/{}.rs", place.replace(' ', "_"));
    let mut inputs = vec![
        StepInput::ok(
            rng.pick(&READ_TOOLS),
            format!("look for {object} in {file}"),
            format!("found {object} handling in {file}"),
        ),
        StepInput::ok(
            "edit_file",
            format!("{verb} {object}"),
            "edit applied: 1 file changed",
        )
        .with_parameters(serde_json::json!({ "path": file })),
    ];
    if rng.below(3) == 0 {
        inputs.push(StepInput::error(
            rng.pick(&CHECK_TOOLS),
            "run the tests",
            rng.pick(&ERRORS),
        ));
        inputs.push(StepInput::ok(
            "edit_file",
            "fix the failing case",
            "edit applied",
        ));
    }
    // Every eighth episode is a long session: 24 more steps of reading and checking, whose
    // text takes several step windows.
    if i % LONG_EVERY == LONG_EVERY - 1 {
        for k in 0..LONG_EXTRA_STEPS {
            let other = rng.pick(&PLACES);
            inputs.push(StepInput::ok(
                rng.pick(&READ_TOOLS),
                format!("trace {object} through the {other} (pass {k})"),
                format!(
                    "the {other} calls into {file} at line {}; {} looks unrelated",
                    rng.below(900) + 10,
                    rng.pick(&OBJECTS)
                ),
            ));
        }
    }
    inputs.push(StepInput::ok(
        rng.pick(&CHECK_TOOLS),
        "run the tests",
        "test result: ok. 48 passed; 0 failed",
    ));
    let steps = inputs
        .into_iter()
        .enumerate()
        .map(|(k, input)| ExecutionStep {
            step_number: k as u32 + 1,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: started_at + Duration::from_secs(30 * (k as u64 + 1)),
            input: input.with_latency_ms(20).with_tokens(150),
        })
        .collect();
    Episode {
        id: EpisodeId::new(),
        task_description: format!("{verb} {object} in the {place}, ticket {}", i % 997),
        task_type: task_type_for(verb),
        context,
        steps,
        started_at,
        completed_at: None,
        outcome: None,
        reward: None,
        reflection: None,
    }
}

fn outcome(rng: &mut Rng) -> Outcome {
    match rng.below(10) {
        0 | 1 => Outcome::failure("the tests still fail"),
        2 => Outcome::partial("works for the common case"),
        _ => Outcome::success("done, tests pass"),
    }
}

/// Episode `i` with its completion (reward, reflection and learning as the memory computes
/// them, without the history-based reward baseline).
fn completed_episode(dataset: u64, i: usize) -> (Episode, EpisodeCompletion) {
    let mut rng = rng_for(dataset, i);
    let episode = started_episode(&mut rng, i);
    let outcome = outcome(&mut rng);
    let completed_at = episode.started_at + Duration::from_secs(60 + rng.below(3_600) as u64);
    let reward = compute_reward(
        &episode.steps,
        episode.context.complexity,
        &outcome,
        RewardHistory::default(),
    );
    let reflection = reflect(&episode, &outcome, &reward);
    let learning = extract_learning(&episode, &outcome, completed_at);
    let completion = EpisodeCompletion {
        episode_id: episode.id,
        outcome,
        reward,
        reflection,
        completed_at,
        learning,
        steps: Vec::new(),
        estimate_actual: None,
        expected_steps: None,
        indexed_work: memory_core::indexed_work_text(&episode.steps),
    };
    (episode, completion)
}

/// The episode with its completion folded in, as stored once completed.
fn finished(mut episode: Episode, completion: EpisodeCompletion) -> Episode {
    episode.completed_at = Some(completion.completed_at);
    episode.outcome = Some(completion.outcome);
    episode.reward = Some(completion.reward);
    episode.reflection = Some(completion.reflection);
    episode
}

/// Writes `n` completed episodes of `dataset`: each stored complete in one `create_episode`
/// (fast), or with `learn`, created then completed through `EpisodeStore::complete_episode`,
/// which also merges what it teaches into patterns, heuristics and lessons.
async fn populate(
    storage: &Arc<TursoStorage>,
    ns: &Namespace,
    dataset: u64,
    n: usize,
    learn: bool,
) {
    let mut streams = tokio::task::JoinSet::new();
    for s in 0..WRITE_STREAMS {
        let storage = Arc::clone(storage);
        let ns = ns.clone();
        streams.spawn(async move {
            for i in (s..n).step_by(WRITE_STREAMS) {
                let (episode, completion) = completed_episode(dataset, i);
                if learn {
                    storage.create_episode(&ns, &episode).await.unwrap();
                    storage.complete_episode(&ns, &completion).await.unwrap();
                } else {
                    let episode = finished(episode, completion);
                    storage.create_episode(&ns, &episode).await.unwrap();
                }
            }
        });
    }
    while let Some(done) = streams.join_next().await {
        done.unwrap();
    }
}

/// The memory over `storage` with `embedder`, built outside the runtime so that it starts no
/// background tasks (no embedding task racing an explicit `embed_pending`).
fn memory_without_tasks(
    storage: Arc<TursoStorage>,
    embedder: Arc<dyn Embedder>,
    config: MemoryConfig,
) -> SelfLearningMemory {
    SelfLearningMemory::with_embedder(storage, config, Arc::new(SystemClock), Some(embedder))
        .unwrap()
}

/// `sizes`, and 1,000,000 when `MEMORY_BENCH_1M` is set.
fn with_1m(sizes: &[usize]) -> Vec<usize> {
    let mut out = sizes.to_vec();
    if std::env::var_os("MEMORY_BENCH_1M").is_some() {
        out.push(1_000_000);
    }
    out
}

fn build_config() -> MemoryConfig {
    MemoryConfig::default().with_retrieval(RetrievalConfig {
        embed_batch: BUILD_EMBED_BATCH,
        ..RetrievalConfig::default()
    })
}

/// A local store of `n` completed episodes, embedded with the stand-in, and the memory over it
/// (its index built by `embed_pending`).
struct Store {
    memory: SelfLearningMemory,
    dir: StoreDir,
}

/// Where a store lives: a temporary directory, or a kept one under `MEMORY_BENCH_DATA_DIR`
/// (reused by later runs, so a 100k store is built once per machine, not once per run).
enum StoreDir {
    Temporary(tempfile::TempDir),
    Kept(std::path::PathBuf),
}

impl StoreDir {
    fn for_size(n: usize) -> Self {
        match std::env::var_os("MEMORY_BENCH_DATA_DIR") {
            Some(root) => {
                let dir = Path::new(&root).join(format!("retrieval-{n}"));
                std::fs::create_dir_all(&dir).unwrap();
                StoreDir::Kept(dir)
            }
            None => StoreDir::Temporary(tempfile::tempdir().unwrap()),
        }
    }

    fn path(&self) -> &Path {
        match self {
            StoreDir::Temporary(dir) => dir.path(),
            StoreDir::Kept(dir) => dir,
        }
    }
}

fn build_store(rt: &Runtime, n: usize) -> Store {
    let ns = namespace();
    let dir = StoreDir::for_size(n);
    let start = Instant::now();
    let storage = Arc::new(
        rt.block_on(TursoStorage::open_in_data_dir(dir.path()))
            .unwrap(),
    );
    let present = rt.block_on(storage.namespace_stats(&ns)).unwrap().episodes;
    if present == 0 {
        rt.block_on(populate(&storage, &ns, n as u64, n, false));
    } else {
        assert_eq!(
            present,
            n as u64,
            "{} holds another dataset",
            dir.path().display()
        );
    }
    let written = start.elapsed();
    let memory = memory_without_tasks(storage, Arc::new(BenchRandomEmbedder), build_config());
    rt.block_on(memory.embed_pending(&ns)).unwrap();
    let total = start.elapsed();
    eprintln!(
        "retrieval: built a {n}-episode store in {:.1} s (writes {:.1} s, embed_pending {:.1} s); \
         resident {:.0} MiB (peak {:.0} MiB)",
        total.as_secs_f64(),
        written.as_secs_f64(),
        total.saturating_sub(written).as_secs_f64(),
        memory_benches::proc_status_mib("VmRSS"),
        memory_benches::proc_status_mib("VmHWM"),
    );
    // Checks the answer once, and caches the query vector as for a repeated query.
    let first = rt.block_on(memory.retrieve(&ns, &hybrid_query())).unwrap();
    assert_eq!(first.results.len(), 10);
    assert_eq!(first.method, RetrievalMethod::Hybrid);
    assert_eq!(memory.retriever().indexed(&ns), n);
    if let Some(status) = memory.retriever().index_status(&ns) {
        // Per row: the int8 codes, a scale, an inverse norm and the row's number.
        let rows = status.episodes + status.step_windows;
        let bytes = rows * (DIMS + 4 + 4 + 2);
        eprintln!(
            "retrieval: {n} episodes, {} step windows ({:.2} per episode); vector rows hold \
             {:.0} bytes per episode ({:.0} MiB)",
            status.step_windows,
            status.step_windows as f64 / n as f64,
            bytes as f64 / n as f64,
            bytes as f64 / (1024.0 * 1024.0)
        );
    }
    // The load may start an index snapshot write in the background; the searches are timed
    // after it, as in a process that has been up for a while.
    rt.block_on(memory.retriever().finish_snapshots());
    Store { memory, dir }
}

/// Stores built so far in this run, by size.
struct Stores<'r> {
    rt: &'r Runtime,
    built: HashMap<usize, Store>,
}

impl Stores<'_> {
    fn get(&mut self, n: usize) -> &Store {
        let rt = self.rt;
        self.built.entry(n).or_insert_with(|| build_store(rt, n))
    }

    fn shutdown(self) {
        for store in self.built.into_values() {
            self.rt.block_on(store.memory.shutdown()).unwrap();
        }
    }
}

fn query_context() -> TaskContext {
    TaskContext::new("web_api")
        .with_language("rust")
        .with_framework("axum")
}

fn hybrid_query() -> RetrievalQuery {
    RetrievalQuery::new("fix the retry logic in the payment worker")
        .with_context(Some(TaskType::Debugging), query_context())
        .with_limit(10)
        .with_method(RetrievalMethod::Hybrid)
}

fn vector_index(n: usize) -> VectorIndex {
    let ns = namespace();
    let index = VectorIndex::new(DIMS);
    for i in 0..n {
        let (episode, completion) = completed_episode(1, i);
        let summary = finished(episode, completion).summary();
        index.upsert(&ns, summary, &random_unit(&mut rng_for(2, i)));
    }
    index
}

fn bench_vector_index(c: &mut Criterion) {
    let ns = namespace();
    let query = random_unit(&mut Rng(7));
    let web_api = EpisodeFilter {
        domain: Some("web_api".into()),
        ..EpisodeFilter::default()
    };
    // Criterion calls a bench's closure many times: indexes are built once, on first use.
    let mut indexes: HashMap<usize, VectorIndex> = HashMap::new();
    let mut group = c.benchmark_group("retrieval/vector_index_search");
    let mut cases = vec![
        (1_000, "1000", EpisodeFilter::default()),
        (10_000, "10000", EpisodeFilter::default()),
        (100_000, "100000", EpisodeFilter::default()),
        (100_000, "100000_filtered", web_api.clone()),
    ];
    if with_1m(&[]).contains(&1_000_000) {
        cases.push((1_000_000, "1000000", EpisodeFilter::default()));
        cases.push((1_000_000, "1000000_filtered", web_api.clone()));
        cases.push((1_000_000, "1000000_exact", EpisodeFilter::default()));
    }
    for (n, name, filter) in cases {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(name, |b| {
            let index = indexes.entry(n).or_insert_with(|| {
                let index = vector_index(n);
                assert_eq!(index.len(&ns), n);
                if n >= index.sign_stage_from() {
                    report_sign_stage_recall(&index, &ns, n);
                }
                index
            });
            let exact = name.ends_with("_exact");
            let from = index.sign_stage_from();
            if exact {
                index.set_sign_stage_from(usize::MAX);
            }
            b.iter(|| black_box(index.search(&ns, &[&query], &filter, CANDIDATES)));
            index.set_sign_stage_from(from);
        });
    }
    group.finish();
}

/// Prints how much of the exact scan's answer the one-bit first stage keeps at this size:
/// recall of the exact top 10 and top 50 (the candidates hybrid retrieval takes) over 50
/// random queries, unfiltered and filtered to a quarter of the episodes.
fn report_sign_stage_recall(index: &VectorIndex, ns: &Namespace, n: usize) {
    let web_api = EpisodeFilter {
        domain: Some("web_api".into()),
        ..EpisodeFilter::default()
    };
    let from = index.sign_stage_from();
    for (label, filter) in [
        ("unfiltered", EpisodeFilter::default()),
        ("filtered", web_api),
    ] {
        let (mut at10, mut at50) = (0usize, 0usize);
        let queries = 50u64;
        for seed in 0..queries {
            let q = random_unit(&mut Rng(1_000 + seed));
            index.set_sign_stage_from(usize::MAX);
            let exact = index.search(ns, &[&q], &filter, CANDIDATES);
            index.set_sign_stage_from(from);
            let staged = index.search(ns, &[&q], &filter, CANDIDATES);
            let got: std::collections::HashSet<_> = staged.iter().map(|h| h.summary.id).collect();
            at10 += exact
                .iter()
                .take(10)
                .filter(|h| got.contains(&h.summary.id))
                .count();
            at50 += exact.iter().filter(|h| got.contains(&h.summary.id)).count();
        }
        eprintln!(
            "retrieval: one-bit first stage at {n} ({label}, pool {} per search): recall of the exact top 10 {:.3}, top 50 {:.3} ({queries} queries)",
            CANDIDATES * memory_core::retrieval::vector_index::SIGN_POOL_FACTOR,
            at10 as f64 / (10 * queries) as f64,
            at50 as f64 / (CANDIDATES as u64 * queries) as f64,
        );
    }
}

/// Opens the store in `dir` as a restarted process would and answers one query.
async fn cold_first_answer(dir: &Path, ns: &Namespace, query: &RetrievalQuery) -> Duration {
    let start = Instant::now();
    let storage = TursoStorage::open_in_data_dir(dir).await.unwrap();
    let memory = SelfLearningMemory::with_embedder(
        Arc::new(storage),
        MemoryConfig::default(),
        Arc::new(SystemClock),
        Some(Arc::new(BenchRandomEmbedder)),
    )
    .unwrap();
    let answer = memory.retrieve(ns, query).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(answer.results.len(), 10);
    black_box(answer);
    memory.shutdown().await.unwrap();
    elapsed
}

fn bench_hybrid(c: &mut Criterion) {
    let rt = runtime();
    let ns = namespace();
    let query = hybrid_query();
    let mut stores = Stores {
        rt: &rt,
        built: HashMap::new(),
    };

    let mut group = c.benchmark_group("retrieval/hybrid");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(10));
    for n in with_1m(&[1_000, 10_000, 100_000]) {
        group.bench_function(n.to_string(), |b| {
            let memory = &stores.get(n).memory;
            b.to_async(&rt)
                .iter(|| async { black_box(memory.retrieve(&ns, &query).await.unwrap()) });
        });
    }
    let filtered = hybrid_query().with_filter(EpisodeFilter {
        domain: Some("web_api".into()),
        ..EpisodeFilter::default()
    });
    for n in with_1m(&[100_000]) {
        group.bench_function(format!("{n}_filtered"), |b| {
            let memory = &stores.get(n).memory;
            b.to_async(&rt).iter(|| async {
                let answer = memory.retrieve(&ns, &filtered).await.unwrap();
                assert!(
                    answer
                        .results
                        .iter()
                        .all(|r| r.episode.context.domain == "web_api")
                );
                black_box(answer)
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("retrieval/cold_open_first_answer");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    for n in with_1m(&[10_000, 100_000]) {
        group.bench_function(n.to_string(), |b| {
            let dir = stores.get(n).dir.path().to_path_buf();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += rt.block_on(cold_first_answer(&dir, &ns, &query));
                }
                total
            });
        });
    }
    group.finish();
    stores.shutdown();
}

fn bench_recommend_minilm(c: &mut Criterion) {
    const N: usize = 2_000;
    let Some(dir) = default_model_dir().filter(|d| missing_model_files(d).is_empty()) else {
        eprintln!(
            "skipping retrieval/recommend_e2e_minilm: model not installed; run \
             scripts/install-model.sh or set MEMORY_MODEL_DIR"
        );
        return;
    };
    let rt = runtime();
    let ns = namespace();
    let mut group = c.benchmark_group("retrieval/recommend_e2e_minilm");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));
    let mut built: Option<(SelfLearningMemory, tempfile::TempDir)> = None;
    // Outside the closure, which criterion calls many times: every text stays new.
    let mut iteration = 0u64;
    group.bench_function(N.to_string(), |b| {
        let (memory, _) = built.get_or_insert_with(|| {
            let embedder = match MiniLmEmbedder::load(&dir) {
                Ok(e) => e,
                Err(e) => panic!("the MiniLM model at {} failed to load: {e}", dir.display()),
            };
            let data = tempfile::tempdir().unwrap();
            let start = Instant::now();
            let storage = Arc::new(
                rt.block_on(TursoStorage::open_in_data_dir(data.path()))
                    .unwrap(),
            );
            rt.block_on(populate(&storage, &ns, 3, N, true));
            let written = start.elapsed();
            let memory = memory_without_tasks(storage, Arc::new(embedder), MemoryConfig::default());
            assert_eq!(rt.block_on(memory.embed_pending(&ns)).unwrap(), N);
            let embedding = start.elapsed().saturating_sub(written).as_secs_f64();
            // Loads the index, for its count of step windows.
            rt.block_on(memory.retrieve(&ns, &hybrid_query())).unwrap();
            let windows = memory
                .retriever()
                .index_status(&ns)
                .map_or(0, |s| s.step_windows);
            eprintln!(
                "retrieval: built a {N}-episode store with learning in {:.1} s, embedded it \
                 with MiniLM in {embedding:.1} s ({:.1} episodes/s; {windows} step windows of \
                 the {} long episodes)",
                written.as_secs_f64(),
                N as f64 / embedding,
                N / LONG_EVERY,
            );
            (memory, data)
        });
        let memory = &*memory;
        b.to_async(&rt).iter(|| {
            // A new text every time: the query embedding is never cached.
            iteration += 1;
            let request = RecommendRequest::new(format!(
                "fix the retry logic in the payment worker, attempt {iteration}"
            ))
            .with_context(Some(TaskType::Debugging), query_context());
            let ns = &ns;
            async move { black_box(memory.recommend(ns, &request).await.unwrap()) }
        });
    });
    group.finish();
    if let Some((memory, _data)) = built {
        rt.block_on(memory.shutdown()).unwrap();
    }
}

criterion_group!(
    benches,
    bench_vector_index,
    bench_hybrid,
    bench_recommend_minilm
);
criterion_main!(benches);
