//! Pins `TursoStorage` under write contention on one local database file: 100
//! `SelfLearningMemory` handles, each over its own `TursoStorage` (its own writer and reader
//! connections) on the same file, and 1,000 concurrent tasks that each start an episode, log
//! five steps and complete it. No call fails (`busy_timeout` plus IMMEDIATE transactions turn
//! lock contention into waiting), and no write is lost: the counts are exact, every episode
//! has its own steps in order with its own text, and the tool-sequence pattern all 1,000
//! episodes share was merged exactly 1,000 times (every read-modify-write of the learned
//! state saw the previous one).
//!
//! The same runs on one `sqld` from eight handles (`eight_handles_on_one_sqld_lose_no_merge`),
//! where completions are optimistic batches that must not merge from a stale read.
//!
//! The main test writes every step as it is logged (`max_batch = 1`: 5,000 step
//! transactions under contention). The batching variant flushes on a 1 ms timer, so timer
//! flushes race `complete_episode` all the time: it pins the fix for a race that lost steps
//! (the timer took an episode's pending steps, the completion landed before the timer's
//! write, and the late write was rejected as a conflict and dropped). Each episode's writes
//! now hold that episode's write lock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use memory_core::{
    EpisodeStore, LearnedQuery, MemoryConfig, Namespace, NewEpisode, Outcome, SelfLearningMemory,
    StepBatchConfig, StepInput, StorageExt, TaskContext, TaskType,
};
use memory_storage_turso::{TursoConfig, TursoStorage};
use tests::sqld::{SqldServer, require_sqld};
use tokio::task::JoinSet;

const HANDLES: usize = 100;
const TASKS: usize = 1_000;
const STEPS: usize = 5;
/// Completions in turns by two handles (two each, then the other's turn).
const TURNS: usize = 12;
const TOOLS: [&str; STEPS] = ["read_file", "grep", "edit_file", "shell", "git"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_handles_thousand_tasks_one_file() {
    let steps = StepBatchConfig {
        max_batch: 1,
        ..StepBatchConfig::default()
    };
    run(MemoryConfig::default().with_steps(steps)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_handles_thousand_tasks_one_file_timer_flushes_race_completion() {
    let steps = StepBatchConfig {
        flush_interval: std::time::Duration::from_millis(1),
        ..StepBatchConfig::default()
    };
    run(MemoryConfig::default().with_steps(steps)).await;
}

async fn run(config: MemoryConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");

    // Open every handle concurrently, as separate processes would. Waiting for the write
    // lock polls (async pauses of 1-8 ms), which is not fair: on a loaded machine (the rest
    // of the suite runs beside this test) one of 100 handles can wait longer than the
    // default 5 s. This test is about losing nothing under contention, so it waits longer.
    let mut opening = JoinSet::new();
    for _ in 0..HANDLES {
        let config = TursoConfig::local(&path)
            .readers(1)
            .busy_timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        opening.spawn(async move { TursoStorage::open(config).await });
    }
    let mut storages = Vec::with_capacity(HANDLES);
    while let Some(opened) = opening.join_next().await {
        storages.push(opened.unwrap().unwrap());
    }
    let check = move || async move { TursoStorage::open_local(&path).await.unwrap() };
    run_on(config, storages, TASKS, check).await;
}

/// Eight handles on one `sqld` (each its own HTTP clients, as eight processes or machines),
/// 120 concurrent tasks. Every completion shares the tool-sequence pattern, so the
/// completions' optimistic batches (read, then a guarded write) collide all the time: a
/// guard that let a stale merge through would lose counts here. A handle sends one write at
/// a time, so its 15 completions queue behind each other inside their calls: on a loaded
/// machine (the rest of the suite beside it) the last of them waited over the default 30-s
/// call timeout, so the calls here get 120 s. This test is about losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_handles_on_one_sqld_lose_no_merge() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let url = server.url();
    let mut storages = Vec::new();
    for _ in 0..8 {
        let config = TursoConfig::remote(url.clone(), None)
            .call_timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap();
        storages.push(TursoStorage::open(config).await.unwrap());
    }
    let check = move || async move {
        let config = TursoConfig::remote(url, None).build().unwrap();
        TursoStorage::open(config).await.unwrap()
    };
    run_on(MemoryConfig::default(), storages, 120, check).await;
    server.stop().await;
}

/// Two machines on one `sqld` taking turns completing episodes of one context. A remote
/// handle merges from the learned items as it last read or wrote them, in the same request
/// as the write; after the other machine's turn they are stale, so the first write of the
/// turn is refused, and its own reads give the state the second write merges from. Every
/// merge is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_taking_turns_on_one_sqld_merge_from_fresh_items() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let url = server.url();
    let mut memories = Vec::new();
    for _ in 0..2 {
        let config = TursoConfig::remote(url.clone(), None).build().unwrap();
        let storage = TursoStorage::open(config).await.unwrap();
        memories.push(SelfLearningMemory::new(Arc::new(storage), MemoryConfig::default()).unwrap());
    }
    let ns = Namespace::new("concurrency/turns").unwrap();
    for i in 0..TURNS {
        // Two in a row on one machine (its items known and fresh), then the other's turn.
        let memory = &memories[(i / 2) % 2];
        let ctx = TaskContext::new("web_api").with_language("rust");
        let id = memory
            .start_episode(
                &ns,
                NewEpisode::new(format!("turn {i}"), TaskType::CodeGeneration, ctx),
            )
            .await
            .unwrap();
        for tool in TOOLS {
            memory
                .log_step(&ns, id, StepInput::ok(tool, format!("turn {i}"), "ok"))
                .await
                .unwrap();
        }
        memory
            .complete_episode(&ns, id, Outcome::success(format!("done {i}")))
            .await
            .unwrap();
    }
    for memory in &memories {
        memory.shutdown().await.unwrap();
    }
    let config = TursoConfig::remote(url, None).build().unwrap();
    let storage = TursoStorage::open(config).await.unwrap();
    assert_one_tool_sequence_counted(&storage, &ns, TURNS).await;
    let stats = storage.namespace_stats(&ns).await.unwrap();
    assert_eq!(stats.completed, TURNS as u64);
    assert_eq!(stats.steps, (TURNS * STEPS) as u64);
    server.stop().await;
}

async fn run_on<F: Future<Output = TursoStorage>>(
    config: MemoryConfig,
    storages: Vec<TursoStorage>,
    tasks_n: usize,
    check: impl FnOnce() -> F,
) {
    let handles = storages.len();
    let memories: Vec<Arc<SelfLearningMemory>> = storages
        .into_iter()
        .map(|s| Arc::new(SelfLearningMemory::new(Arc::new(s), config.clone()).unwrap()))
        .collect();

    let ns = Namespace::new("concurrency/shared").unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..tasks_n {
        let memory = memories[i % handles].clone();
        let ns = ns.clone();
        tasks.spawn(async move {
            let ctx = TaskContext::new("web_api").with_language("rust");
            let id = memory
                .start_episode(
                    &ns,
                    NewEpisode::new(
                        format!("concurrent task {i}"),
                        TaskType::CodeGeneration,
                        ctx,
                    ),
                )
                .await?;
            for (k, tool) in TOOLS.iter().enumerate() {
                memory
                    .log_step(
                        &ns,
                        id,
                        StepInput::ok(*tool, format!("task {i} step {k}"), format!("out {i}/{k}")),
                    )
                    .await?;
                tokio::task::yield_now().await;
            }
            memory
                .complete_episode(&ns, id, Outcome::success(format!("done {i}")))
                .await?;
            Ok::<_, memory_core::Error>((i, id))
        });
    }
    let mut ids = Vec::with_capacity(tasks_n);
    while let Some(done) = tasks.join_next().await {
        ids.push(
            done.unwrap()
                .unwrap_or_else(|e| panic!("a concurrent task failed: {e}")),
        );
    }
    assert_eq!(ids.len(), tasks_n);
    for memory in &memories {
        memory.shutdown().await.unwrap();
    }
    drop(memories);

    // Check through a fresh handle.
    let storage = check().await;
    let stats = storage.namespace_stats(&ns).await.unwrap();
    assert_eq!(stats.episodes, tasks_n as u64, "no episode lost");
    assert_eq!(stats.completed, tasks_n as u64, "every completion stored");
    assert_eq!(stats.successes, tasks_n as u64);
    assert_eq!(stats.steps, (tasks_n * STEPS) as u64, "no step lost");
    for (i, id) in ids {
        let episode = storage.get_episode(&ns, id).await.unwrap().unwrap();
        assert_eq!(episode.task_description, format!("concurrent task {i}"));
        assert!(episode.is_completed());
        assert_eq!(episode.steps.len(), STEPS);
        for (k, step) in episode.steps.iter().enumerate() {
            assert_eq!(step.step_number as usize, k + 1);
            assert_eq!(step.input.tool, TOOLS[k]);
            assert_eq!(
                step.input.action,
                format!("task {i} step {k}"),
                "episode {i} holds its own steps"
            );
            assert_eq!(step.input.result.text(), format!("out {i}/{k}"));
        }
        assert_eq!(
            episode.outcome.as_ref().map(Outcome::summary),
            Some(format!("done {i}").as_str())
        );
    }
    assert_one_tool_sequence_counted(&storage, &ns, tasks_n).await;
}

/// The namespace holds one tool sequence, with `n` successful occurrences: every merge of it
/// counted once.
async fn assert_one_tool_sequence_counted(storage: &TursoStorage, ns: &Namespace, n: usize) {
    let patterns = storage
        .query_patterns(
            ns,
            &LearnedQuery {
                kind: Some("tool_sequence".into()),
                include_inactive: true,
                ..LearnedQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patterns.len(), 1, "one shared tool sequence: {patterns:#?}");
    assert_eq!(
        patterns[0].occurrences, n as u64,
        "every merge of the shared pattern counted"
    );
    assert_eq!(patterns[0].successes, n as u64);
}

/// A hundred handles opening one new file at the same moment all succeed. Switching a new
/// file to WAL needs an exclusive lock, and SQLite answers a contended switch with "database
/// is locked" at once (no busy handler), which failed about one round in seven before the
/// switch was retried. Twenty rounds catch that with high probability.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_handles_open_one_new_file_at_once() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let mut opening = JoinSet::new();
        for _ in 0..HANDLES {
            let config = TursoConfig::local(&path).readers(1).build().unwrap();
            opening.spawn(async move { TursoStorage::open(config).await });
        }
        while let Some(opened) = opening.join_next().await {
            if let Err(e) = opened.unwrap() {
                panic!("round {round}: open failed: {e}");
            }
        }
    }
}
