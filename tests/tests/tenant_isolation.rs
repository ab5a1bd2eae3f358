//! Tenant isolation, randomized: what namespace A observes is the same whether namespace B of
//! the same database is empty or full of look-alike episodes.
//!
//! Each seed draws A's episodes and B's (five times as many, written between A's, made of A's
//! words with A's query words repeated) and runs the same script twice on fresh databases:
//! once with A alone, once with B interleaved. The clock advances only on A's writes, so A's
//! timestamps are the same in both worlds. Compared, exactly:
//! - lexical scores: every hit of `search_episodes` for each query, as (task, score bits);
//! - retrieval: the results of `retrieve` (lexical, no model), as (task, score bits);
//! - counts: `namespace_stats` (episodes, steps, learned items, feedback) and listing sizes;
//! - errors: reading, logging to and completing an episode that exists only in B (so it
//!   exists in the database in one world and nowhere in the other) give the same error,
//!   and a bad query the same error.
//!
//! Query times of A are measured in both worlds and printed (medians, for the closing
//! note); they are not asserted: speed is measured in benchmarks, never in timed tests. What
//! makes them independent is structural: A's queries read only A's posting lists (terms are
//! indexed under a per-namespace prefix).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use memory_core::{
    Clock, EpisodeFilter, EpisodeId, EpisodeQuery, EpisodeStore, MemoryConfig, Namespace,
    NamespaceStats, NewEpisode, Outcome, RateLimitConfig, RetrievalMethod, RetrievalQuery,
    SelfLearningMemory, StepInput, TaskContext, TaskType, TextHit, TextQuery,
};
use memory_storage_turso::{TursoConfig, TursoStorage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tests::sqld::{SqldServer, require_sqld};

/// A clock the script moves: only A's writes advance it.
#[derive(Debug)]
struct ScriptClock(AtomicI64);

impl ScriptClock {
    fn advance(&self) {
        self.0.fetch_add(1_000, Ordering::Relaxed);
    }
}

impl Clock for ScriptClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.load(Ordering::Relaxed)).unwrap_or_default()
    }
}

const WORDS: &[&str] = &[
    "kerberos",
    "ticket",
    "login",
    "token",
    "refresh",
    "cache",
    "redis",
    "postgres",
    "index",
    "migration",
    "deadlock",
    "timeout",
    "retry",
    "queue",
    "worker",
    "upload",
    "image",
    "resize",
    "parser",
    "config",
    "yaml",
    "schema",
    "validate",
    "endpoint",
    "handler",
    "router",
    "flaky",
    "test",
    "build",
    "docker",
    "deploy",
    "rollback",
    "metrics",
    "latency",
    "memory",
    "leak",
];
const DOMAINS: &[&str] = &["web_api", "data", "infra", "cli"];
const LANGUAGES: &[&str] = &["rust", "python", "go"];
const TOOLS: &[&str] = &["shell", "read_file", "edit_file", "run_tests", "http"];

#[derive(Debug, Clone)]
struct Spec {
    task: String,
    domain: &'static str,
    language: &'static str,
    steps: Vec<(&'static str, String, String, bool)>,
    success: bool,
    complete: bool,
}

fn words(rng: &mut StdRng, count: std::ops::Range<usize>) -> String {
    let n = rng.random_range(count);
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn spec(rng: &mut StdRng, tenant: &str, i: usize, emphasis: &[&str]) -> Spec {
    let mut task = format!("{} {tenant}{i}", words(rng, 2..6));
    for w in emphasis {
        task.push(' ');
        task.push_str(w);
    }
    let steps = (0..rng.random_range(1..6))
        .map(|_| {
            (
                TOOLS[rng.random_range(0..TOOLS.len())],
                words(rng, 2..3),
                words(rng, 1..8),
                rng.random_bool(0.7),
            )
        })
        .collect();
    Spec {
        task,
        domain: DOMAINS[rng.random_range(0..DOMAINS.len())],
        language: LANGUAGES[rng.random_range(0..LANGUAGES.len())],
        steps,
        success: rng.random_bool(0.6),
        complete: rng.random_bool(0.9),
    }
}

/// A's episodes, B's (with A's query words stressed), and A's queries.
fn draw(seed: u64) -> (Vec<Spec>, Vec<Spec>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let a: Vec<Spec> = (0..30).map(|i| spec(&mut rng, "a", i, &[])).collect();
    let queries: Vec<String> = (0..10).map(|_| words(&mut rng, 2..3)).collect();
    let b = (0..150)
        .map(|i| {
            let q = &queries[i % queries.len()];
            let stress: Vec<&str> = q.split(' ').chain(q.split(' ')).collect();
            spec(&mut rng, "b", i, &stress)
        })
        .collect();
    (a, b, queries)
}

/// Runs `op` again (up to three times) while it fails with a transient error: a server may
/// interrupt a statement under load, and callers are told to retry those.
async fn retried<T, F: std::future::Future<Output = memory_core::Result<T>>>(
    mut op: impl FnMut() -> F,
) -> T {
    let mut tries = 0;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() && tries < 3 => {
                tries += 1;
                eprintln!("transient failure, retried: {e}");
            }
            Err(e) => panic!("{e}"),
        }
    }
}

async fn write(m: &SelfLearningMemory, ns: &Namespace, s: &Spec) -> EpisodeId {
    let ctx = TaskContext::new(s.domain).with_language(s.language);
    let new = NewEpisode::new(&s.task, TaskType::Debugging, ctx);
    let id = retried(|| m.start_episode(ns, new.clone())).await;
    for (tool, action, output, ok) in &s.steps {
        let step = if *ok {
            StepInput::ok(*tool, action, output)
        } else {
            StepInput::error(*tool, action, output)
        };
        retried(|| m.log_step(ns, id, step.clone())).await;
    }
    if s.complete {
        let outcome = if s.success {
            Outcome::success("done")
        } else {
            Outcome::failure("still failing")
        };
        retried(|| m.complete_episode(ns, id, outcome.clone())).await;
    } else {
        retried(|| m.flush_episode(ns, id)).await;
    }
    id
}

/// Everything A observes, with episode ids replaced by task texts (ids are drawn afresh in
/// each world).
#[derive(Debug, PartialEq)]
struct Observed {
    search: Vec<Vec<(String, u64)>>,
    filtered: Vec<Vec<(String, u64)>>,
    retrieve: Vec<Vec<(String, u64)>>,
    stats: NamespaceStats,
    listed: usize,
    errors: Vec<String>,
}

struct World {
    observed: Observed,
    /// Median time of one `search_episodes` call of A.
    search_median: Duration,
}

/// Every hit of `q` in `ns` (the query, the hits, the time the call took).
async fn timed_search(
    m: &SelfLearningMemory,
    ns: &Namespace,
    q: &str,
) -> (TextQuery, Vec<TextHit>, Duration) {
    let query = TextQuery {
        text: q.to_owned(),
        filter: EpisodeFilter::default(),
        limit: 1_000,
    };
    let started = Instant::now();
    let hits = m.search_episodes(ns, &query).await.unwrap();
    (query, hits, started.elapsed())
}

fn config() -> MemoryConfig {
    let mut c = MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..MemoryConfig::default()
    };
    // One step batch per episode whatever the timing: batches are index rows.
    c.steps.max_batch = 1_000;
    c.steps.flush_interval = Duration::from_secs(3_600);
    // No background consolidation: it looks 10 s (real time) after start, so a slow run
    // would consolidate A in one world and not in the other.
    c.consolidation.schedule = false;
    c
}

async fn run(storage: TursoStorage, seed: u64, with_b: bool) -> World {
    let (a, b, queries) = draw(seed);
    let storage = Arc::new(storage);
    let clock = Arc::new(ScriptClock(AtomicI64::new(1_767_225_600_000)));
    let m = SelfLearningMemory::with_clock(storage.clone(), config(), clock.clone()).unwrap();
    let (ns_a, ns_b) = (
        Namespace::new("tenant-a").unwrap(),
        Namespace::new("tenant-b").unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut b_left = b.iter();
    let mut foreign = EpisodeId::new();
    let mut tasks: BTreeMap<EpisodeId, String> = BTreeMap::new();
    for s in &a {
        if with_b {
            for s in b_left.by_ref().take(rng.random_range(2..9)) {
                foreign = write(&m, &ns_b, s).await;
            }
        }
        clock.advance();
        tasks.insert(write(&m, &ns_a, s).await, s.task.clone());
    }
    if with_b {
        for s in b_left {
            foreign = write(&m, &ns_b, s).await;
        }
    }
    let named = |hits: Vec<(EpisodeId, f64)>| -> Vec<(String, u64)> {
        hits.into_iter()
            .map(|(id, score)| (tasks[&id].clone(), score.to_bits()))
            .collect()
    };

    let mut observed = Observed {
        search: Vec::new(),
        filtered: Vec::new(),
        retrieve: Vec::new(),
        stats: storage.namespace_stats(&ns_a).await.unwrap(),
        listed: storage
            .query_episodes(
                &ns_a,
                &EpisodeQuery {
                    limit: 1_000,
                    ..EpisodeQuery::default()
                },
            )
            .await
            .unwrap()
            .len(),
        errors: Vec::new(),
    };
    let mut times = Vec::new();
    for q in &queries {
        let (query, hits, took) = timed_search(&m, &ns_a, q).await;
        times.push(took);
        observed.search.push(named(
            hits.into_iter().map(|h| (h.episode_id, h.score)).collect(),
        ));
        let filtered = TextQuery {
            filter: EpisodeFilter {
                domain: Some("web_api".into()),
                ..EpisodeFilter::default()
            },
            limit: 3,
            ..query
        };
        let hits = m.search_episodes(&ns_a, &filtered).await.unwrap();
        observed.filtered.push(named(
            hits.into_iter().map(|h| (h.episode_id, h.score)).collect(),
        ));
        let mut rq = RetrievalQuery::new(q.clone());
        rq.limit = 30;
        rq.method = RetrievalMethod::Hybrid;
        let got = m.retrieve(&ns_a, &rq).await.unwrap();
        observed.retrieve.push(named(
            got.results
                .into_iter()
                .map(|r| (r.episode.id, r.score))
                .collect(),
        ));
    }
    for _ in 0..4 {
        for q in &queries {
            times.push(timed_search(&m, &ns_a, q).await.2);
        }
    }
    times.sort();

    // An id that is B's in one world and nobody's in the other.
    let id = foreign.to_string();
    let mut errors = vec![
        m.get_episode(&ns_a, foreign).await.unwrap_err().to_string(),
        m.log_step(&ns_a, foreign, StepInput::ok("shell", "ls", "ok"))
            .await
            .map_or_else(|e| e.to_string(), |()| "accepted".to_owned()),
        m.complete_episode(&ns_a, foreign, Outcome::success("x"))
            .await
            .map_or_else(|e| e.to_string(), |_| "accepted".to_owned()),
    ];
    let mut huge = RetrievalQuery::new("x".repeat(100_000));
    huge.limit = 10;
    errors.push(m.retrieve(&ns_a, &huge).await.unwrap_err().to_string());
    observed.errors = errors.iter().map(|e| e.replace(&id, "<id>")).collect();
    m.shutdown().await.unwrap();
    World {
        observed,
        search_median: times[times.len() / 2],
    }
}

fn check(seed: u64, alone: &World, shared: &World) {
    let o = &alone.observed;
    assert!(
        o.search.iter().filter(|h| !h.is_empty()).count() >= 5,
        "seed {seed}: the queries match A's episodes: {:?}",
        o.search
    );
    assert!(o.retrieve.iter().any(|r| r.len() >= 3), "seed {seed}");
    assert_eq!(
        o, &shared.observed,
        "seed {seed}: A observes B (left: A alone, right: with B)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_observes_nothing_of_another_on_a_local_file() {
    let seeds: Vec<u64> = (0..4).map(|k| 0x7e4a_0000 + k).collect();
    let dir = tempfile::tempdir().unwrap();
    for seed in seeds {
        let open = |name: String| {
            let path = dir.path().join(name);
            async move { TursoStorage::open_local(&path).await.unwrap() }
        };
        let alone = run(open(format!("alone-{seed}.db")).await, seed, false).await;
        let shared = run(open(format!("shared-{seed}.db")).await, seed, true).await;
        check(seed, &alone, &shared);
        println!(
            "seed {seed:#x}: A's search median {:?} alone, {:?} beside B (30 vs 30 + 150 episodes)",
            alone.search_median, shared.search_median
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_observes_nothing_of_another_on_sqld() {
    if require_sqld().is_none() {
        return;
    }
    let seed = 0x7e4a_1000;
    let mut alone_server = SqldServer::start().await.unwrap();
    let mut shared_server = SqldServer::start().await.unwrap();
    let remote = |url: String| async move {
        TursoStorage::open(TursoConfig::remote(url, None).build().unwrap())
            .await
            .unwrap()
    };
    let alone = run(remote(alone_server.url()).await, seed, false).await;
    let shared = run(remote(shared_server.url()).await, seed, true).await;
    check(seed, &alone, &shared);
    println!(
        "sqld seed {seed:#x}: A's search median {:?} alone, {:?} beside B",
        alone.search_median, shared.search_median
    );
    alone_server.stop().await;
    shared_server.stop().await;
}
