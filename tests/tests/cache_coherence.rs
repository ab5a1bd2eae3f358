//! Two writers on one database, each with its own handle and cache, as two processes on one
//! data directory (or two machines on one server) have them.
//!
//! Before the change feed, a process served its cached copy of an episode or a learned item
//! for up to an hour after another process had changed it, and numbered steps from that
//! copy, so steps of two writers collided and one was dropped silently (`ON CONFLICT DO
//! NOTHING`). Now step numbers come from the durable layer, and every cached read first drops
//! the copies another writer changed: a read never returns data older than what the other
//! writer had committed before the read began.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use memory_core::{
    Cache, EpisodeId, EpisodeStore, FeedbackOutcome, FeedbackTarget, LearnedQuery, MemoryConfig,
    Namespace, NewEpisode, Outcome, PatternId, SelfLearningMemory, StepBatchConfig, StepInput,
    Storage, StorageExt, TaskContext, TaskType,
};
use memory_storage_turso::TursoStorage;
use memory_testkit::{InMemoryCache, InMemoryOutbox};
use memory_tiered::TieredStorage;

struct Writer {
    tiered: Arc<TieredStorage>,
    cache: Arc<InMemoryCache>,
    memory: SelfLearningMemory,
}

async fn writer(path: &std::path::Path) -> Writer {
    let durable = Arc::new(TursoStorage::open_local(path).await.unwrap());
    let cache = Arc::new(InMemoryCache::new());
    let tiered = TieredStorage::builder(durable, Arc::new(InMemoryOutbox::new()))
        .cache(cache.clone() as Arc<dyn Cache>)
        .open()
        .await
        .unwrap();
    let config = MemoryConfig::default().with_steps(StepBatchConfig {
        max_batch: 1,
        flush_interval: Duration::from_secs(60),
    });
    let memory = SelfLearningMemory::new(tiered.clone() as Arc<dyn Storage>, config).unwrap();
    Writer {
        tiered,
        cache,
        memory,
    }
}

/// Starts episode `task {i}` of a testing task in context `t`.
async fn start_task(memory: &SelfLearningMemory, ns: &Namespace, i: usize) -> EpisodeId {
    let task = NewEpisode::new(
        format!("task {i}"),
        TaskType::Testing,
        TaskContext::new("t"),
    );
    memory.start_episode(ns, task).await.unwrap()
}

fn ns() -> Namespace {
    Namespace::new("coherence").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_from_two_writers_are_all_kept_and_each_sees_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (a, b) = (writer(&path).await, writer(&path).await);
    let ns = ns();
    let id = a
        .memory
        .start_episode(
            &ns,
            NewEpisode::new("shared task", TaskType::Debugging, TaskContext::new("web")),
        )
        .await
        .unwrap();
    // Both writers cache the episode, then add steps in turn: each numbers from its copy.
    for round in 0..4 {
        a.memory
            .log_step(&ns, id, StepInput::ok("a", format!("a{round}"), "ok"))
            .await
            .unwrap();
        b.memory
            .log_step(&ns, id, StepInput::ok("b", format!("b{round}"), "ok"))
            .await
            .unwrap();
        let seen_by_a = a.memory.get_episode(&ns, id).await.unwrap();
        let seen_by_b = b.memory.get_episode(&ns, id).await.unwrap();
        assert_eq!(seen_by_a.steps.len(), 2 * (round + 1), "a sees b's steps");
        assert_eq!(seen_by_a, seen_by_b, "both read the same episode");
    }
    // And concurrently.
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..20 {
                a.memory
                    .log_step(&ns, id, StepInput::ok("a", format!("ca{i}"), "ok"))
                    .await
                    .unwrap();
            }
        },
        async {
            for i in 0..20 {
                b.memory
                    .log_step(&ns, id, StepInput::ok("b", format!("cb{i}"), "ok"))
                    .await
                    .unwrap();
            }
        }
    );
    let ((), ()) = (ra, rb);
    let episode = b.memory.get_episode(&ns, id).await.unwrap();
    assert_eq!(episode.steps.len(), 48, "no acknowledged step lost");
    let numbers: Vec<u32> = episode.steps.iter().map(|s| s.step_number).collect();
    assert_eq!(
        numbers,
        (1..=48).collect::<Vec<u32>>(),
        "numbers dense, unique"
    );
    let mut actions: Vec<&str> = episode
        .steps
        .iter()
        .map(|s| s.input.action.as_str())
        .collect();
    actions.sort_unstable();
    actions.dedup();
    assert_eq!(actions.len(), 48, "each step stored once");

    // One completes it; the other's cached copy does not hide that, and its late step is a
    // conflict, not a silent drop.
    a.memory
        .complete_episode(&ns, id, Outcome::success("done"))
        .await
        .unwrap();
    let seen = b.tiered.get_episode(&ns, id).await.unwrap().unwrap();
    assert!(seen.is_completed(), "b sees a's completion at once");
    let late = b
        .memory
        .log_step(&ns, id, StepInput::ok("b", "late", "ok"))
        .await;
    assert!(
        matches!(late, Err(memory_core::Error::Conflict { .. })),
        "{late:?}"
    );
    assert!(a.cache.stats().entries > 0 && b.cache.stats().entries > 0);
    a.memory.shutdown().await.unwrap();
    b.memory.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_learned_items_follow_the_other_writers_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let (a, b) = (writer(&path).await, writer(&path).await);
    let ns = ns();
    let ctx = TaskContext::new("web").with_language("rust");
    let mut last = None;
    for round in 0..3 {
        let w = if round % 2 == 0 { &a } else { &b };
        let id = w
            .memory
            .start_episode(
                &ns,
                NewEpisode::new("add a route", TaskType::CodeGeneration, ctx.clone()),
            )
            .await
            .unwrap();
        w.memory
            .log_step(&ns, id, StepInput::ok("edit_file", "add route", "ok"))
            .await
            .unwrap();
        w.memory
            .log_step(&ns, id, StepInput::ok("cargo", "cargo test", "ok"))
            .await
            .unwrap();
        let report = w
            .memory
            .complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
        let pattern = PatternId(report.patterns[0].id.clone());
        // The other writer reads the pattern through its cache: it sees every completion.
        let other = if round % 2 == 0 { &b } else { &a };
        let seen = other
            .tiered
            .get_pattern(&ns, &pattern)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.occurrences, round + 1, "round {round}");
        last = Some((id, pattern));
    }
    // Feedback through one writer changes the pattern the other has cached.
    let (id, pattern) = last.unwrap();
    let cached = a.tiered.get_pattern(&ns, &pattern).await.unwrap().unwrap();
    assert_eq!(cached.effectiveness.helped, 0);
    b.memory
        .record_feedback(
            &ns,
            FeedbackTarget::Pattern(pattern.clone()),
            id,
            FeedbackOutcome::Helped,
        )
        .await
        .unwrap();
    let seen = a.tiered.get_pattern(&ns, &pattern).await.unwrap().unwrap();
    assert_eq!(seen.effectiveness.helped, 1);
    let listed = a
        .tiered
        .query_patterns(&ns, &LearnedQuery::default())
        .await
        .unwrap();
    assert!(listed.iter().any(|p| p.id == pattern));
    a.memory.shutdown().await.unwrap();
    b.memory.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_cache_file_drops_only_what_changed_while_it_was_closed() {
    use memory_storage_redb::{CacheConfig, RedbCache};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let cache_path = dir.path().join("cache.redb");
    let ns = ns();
    let open = |cache: RedbCache| {
        let path = path.clone();
        async move {
            let durable = Arc::new(TursoStorage::open_local(&path).await.unwrap());
            let tiered = TieredStorage::builder(durable, Arc::new(InMemoryOutbox::new()))
                .cache(Arc::new(cache) as Arc<dyn Cache>)
                .open()
                .await
                .unwrap();
            let memory = SelfLearningMemory::new(
                tiered.clone() as Arc<dyn Storage>,
                MemoryConfig::default(),
            )
            .unwrap();
            (tiered, memory)
        }
    };
    let (tiered, memory) = open(
        RedbCache::open(&cache_path, CacheConfig::default())
            .await
            .unwrap(),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let id = start_task(&memory, &ns, i).await;
        memory
            .log_step(&ns, id, StepInput::ok("pytest", "run", "ok"))
            .await
            .unwrap();
        memory.flush().await.unwrap();
        assert_eq!(
            tiered
                .get_episode(&ns, id)
                .await
                .unwrap()
                .unwrap()
                .steps
                .len(),
            1
        );
        ids.push(id);
    }
    memory.shutdown().await.unwrap();
    tiered.shutdown().await.unwrap();
    drop(memory);
    drop(tiered); // the last handle closes the cache file cleanly, with its mark

    // Another writer adds a step to the first episode while the cache file is closed.
    let other = writer(&path).await;
    other
        .memory
        .log_step(&ns, ids[0], StepInput::ok("edit", "fix", "ok"))
        .await
        .unwrap();
    other.memory.shutdown().await.unwrap();

    let cache = RedbCache::open(&cache_path, CacheConfig::default())
        .await
        .unwrap();
    assert!(cache.opened_mark().is_some(), "closed with a mark");
    assert_eq!(cache.stats().entries, 2, "both copies kept on disk");
    let (tiered, memory) = open(cache.clone()).await;
    let changed = tiered.get_episode(&ns, ids[0]).await.unwrap().unwrap();
    assert_eq!(
        changed.steps.len(),
        2,
        "the changed copy was dropped and read again"
    );
    let before = cache.stats();
    let unchanged = tiered.get_episode(&ns, ids[1]).await.unwrap().unwrap();
    assert_eq!(unchanged.steps.len(), 1);
    let after = cache.stats();
    assert_eq!(
        after.memory_hits + after.disk_hits,
        before.memory_hits + before.disk_hits + 1,
        "the unchanged copy is still served from the cache"
    );
    memory.shutdown().await.unwrap();
    tiered.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_cache_puts_queued_behind_their_callers() {
    use memory_storage_redb::{CacheConfig, RedbCache};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let ns = ns();
    let b = writer(&path).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(start_task(&b.memory, &ns, i).await);
    }
    b.memory.shutdown().await.unwrap();
    let cache = RedbCache::open(dir.path().join("cache.redb"), CacheConfig::default())
        .await
        .unwrap();
    let durable = Arc::new(TursoStorage::open_local(&path).await.unwrap());
    let tiered = TieredStorage::builder(durable, Arc::new(InMemoryOutbox::new()))
        .cache(Arc::new(cache.clone()) as Arc<dyn Cache>)
        .open()
        .await
        .unwrap();
    // Each read fills the cache behind the caller: the put is queued and the read returns.
    for id in &ids {
        tiered.get_episode(&ns, *id).await.unwrap().unwrap();
    }
    tiered.shutdown().await.unwrap();
    // Counted once committed to the file: all of them, as soon as shutdown returned (a
    // process may end right then, dropping whatever its runtime still held).
    assert_eq!(cache.stats().entries, ids.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_steps_refused_at_a_timer_flush_are_reported_not_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let b = writer(&path).await;
    // Writer a buffers its steps and writes them on a short timer.
    let durable = Arc::new(TursoStorage::open_local(&path).await.unwrap());
    let tiered = TieredStorage::builder(durable, Arc::new(InMemoryOutbox::new()))
        .open()
        .await
        .unwrap();
    let config = MemoryConfig::default().with_steps(StepBatchConfig {
        max_batch: 64,
        flush_interval: Duration::from_millis(50),
    });
    let a = SelfLearningMemory::new(tiered as Arc<dyn Storage>, config).unwrap();
    let ns = ns();
    let id = b
        .memory
        .start_episode(
            &ns,
            NewEpisode::new("race", TaskType::Testing, TaskContext::new("web")),
        )
        .await
        .unwrap();
    a.log_step(&ns, id, StepInput::ok("a", "first", "ok"))
        .await
        .unwrap();
    a.flush().await.unwrap();
    a.log_step(&ns, id, StepInput::ok("a", "buffered", "ok"))
        .await
        .unwrap();
    // b completes the episode before a's timer writes the buffered step.
    b.memory
        .complete_episode(&ns, id, Outcome::success("done"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = a.log_step(&ns, id, StepInput::ok("a", "next", "ok")).await;
    match next {
        Err(memory_core::Error::Conflict { reason, .. }) => {
            assert!(
                reason.contains("1 steps logged earlier were refused"),
                "{reason}"
            );
        }
        other => panic!("expected a conflict naming the refused step: {other:?}"),
    }
    a.shutdown().await.unwrap();
    b.memory.shutdown().await.unwrap();
}
