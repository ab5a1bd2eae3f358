//! Pins durability across restarts of `TursoStorage`: everything written through
//! `SelfLearningMemory` (episodes with their steps, outcomes, rewards and reflections,
//! learned patterns, heuristics and lessons, feedback, embeddings) is there, unchanged, after
//! the storage is dropped and the file reopened, and after the `sqld` server behind a remote
//! storage is restarted. An episode started before the restart gets steps and is completed
//! after it. A remote handle that lived through the server restart keeps working once the
//! server is back (its first calls may fail, but only with transient errors), and one that
//! sat idle longer than sqld keeps a stream open (about 10 s) works without an error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use memory_core::{
    EmbeddingStore, Episode, EpisodeId, EpisodeQuery, EpisodeStore, FailureLesson, FeedbackOutcome,
    FeedbackTarget, Heuristic, LearnedQuery, MemoryConfig, Namespace, NamespaceStats, NewEpisode,
    Outcome, Pattern, PatternId, SelfLearningMemory, StepInput, Storage, StorageExt, TaskContext,
    TaskType,
};
use memory_storage_turso::{TursoConfig, TursoStorage};
use tests::sqld::{SqldServer, require_sqld};

/// Everything a namespace holds, as read back through the traits.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: NamespaceStats,
    episodes: Vec<std::sync::Arc<Episode>>,
    patterns: Vec<Pattern>,
    heuristics: Vec<Heuristic>,
    lessons: Vec<FailureLesson>,
    feedback: Vec<memory_core::Feedback>,
    embeddings: Vec<Option<Vec<f32>>>,
}

async fn snapshot(s: &dyn Storage, ns: &Namespace) -> Snapshot {
    let all = LearnedQuery {
        include_inactive: true,
        limit: 10_000,
        ..LearnedQuery::default()
    };
    let summaries = s
        .query_episodes(
            ns,
            &EpisodeQuery {
                limit: 10_000,
                ..EpisodeQuery::default()
            },
        )
        .await
        .unwrap();
    let mut episodes = Vec::new();
    let mut embeddings = Vec::new();
    for summary in &summaries {
        episodes.push(s.get_episode(ns, summary.id).await.unwrap().unwrap());
        embeddings.push(s.get_embedding(ns, summary.id, "test-model").await.unwrap());
    }
    let patterns = s.query_patterns(ns, &all).await.unwrap();
    let mut feedback = Vec::new();
    for p in &patterns {
        feedback.extend(
            s.list_feedback(ns, &FeedbackTarget::Pattern(p.id.clone()))
                .await
                .unwrap(),
        );
    }
    Snapshot {
        stats: s.namespace_stats(ns).await.unwrap(),
        episodes,
        patterns,
        heuristics: s.query_heuristics(ns, &all).await.unwrap(),
        lessons: s.query_lessons(ns, &all).await.unwrap(),
        feedback,
        embeddings,
    }
}

/// Records a few completed episodes (with failures and recoveries, so every kind of learned
/// item exists), feedback and an embedding, and starts one more episode left open. Returns
/// the open episode.
async fn populate(storage: Arc<dyn Storage>, ns: &Namespace) -> EpisodeId {
    let memory = SelfLearningMemory::new(storage.clone(), MemoryConfig::default()).unwrap();
    let ctx = TaskContext::new("web_api")
        .with_language("rust")
        .with_tag("durable");
    let mut last = None;
    for i in 0..6 {
        let id = memory
            .start_episode(
                ns,
                NewEpisode::new(
                    format!("fix failing build {i}"),
                    TaskType::Debugging,
                    ctx.clone(),
                ),
            )
            .await
            .unwrap();
        memory
            .log_step(ns, id, StepInput::ok("read_file", "read Cargo.toml", "ok"))
            .await
            .unwrap();
        memory
            .log_step(
                ns,
                id,
                StepInput::error(
                    "shell",
                    "cargo build",
                    "error[E0432]: unresolved import `foo`",
                ),
            )
            .await
            .unwrap();
        memory
            .log_step(
                ns,
                id,
                StepInput::ok("edit_file", "fix the import", "applied").with_latency_ms(12),
            )
            .await
            .unwrap();
        memory
            .log_step(ns, id, StepInput::ok("shell", "cargo build", "Finished"))
            .await
            .unwrap();
        let outcome = if i % 3 == 2 {
            Outcome::failure("gave up")
        } else {
            Outcome::success("builds")
        };
        let report = memory.complete_episode(ns, id, outcome).await.unwrap();
        if let Some(p) = report.patterns.first() {
            memory
                .record_feedback(
                    ns,
                    FeedbackTarget::Pattern(PatternId(p.id.clone())),
                    id,
                    FeedbackOutcome::Helped,
                )
                .await
                .unwrap();
        }
        storage
            .put_embedding(ns, id, "test-model", &[i as f32, 0.5, -0.25])
            .await
            .unwrap();
        last = Some(id);
    }
    assert!(last.is_some());
    let open = memory
        .start_episode(
            ns,
            NewEpisode::new("left open across the restart", TaskType::Testing, ctx),
        )
        .await
        .unwrap();
    memory
        .log_step(ns, open, StepInput::ok("shell", "cargo test", "ok"))
        .await
        .unwrap();
    memory.shutdown().await.unwrap();
    open
}

/// Continues the open episode through a fresh memory over `storage`.
async fn finish_open_episode(storage: Arc<dyn Storage>, ns: &Namespace, open: EpisodeId) {
    let memory = SelfLearningMemory::new(storage, MemoryConfig::default()).unwrap();
    memory
        .log_step(ns, open, StepInput::ok("edit_file", "after restart", "ok"))
        .await
        .unwrap();
    let report = memory
        .complete_episode(ns, open, Outcome::success("done after restart"))
        .await
        .unwrap();
    assert!(report.reward.total > 0.0);
    let episode = memory.get_episode(ns, open).await.unwrap();
    assert_eq!(
        episode.steps.len(),
        2,
        "the step from before the restart is kept"
    );
    assert_eq!(
        episode.steps[1].step_number, 2,
        "numbering continues after the restart"
    );
    memory.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join(".memory");
    let ns = Namespace::new("reopen/local").unwrap();

    let storage = Arc::new(TursoStorage::open_in_data_dir(&data_dir).await.unwrap());
    let open = populate(storage.clone(), &ns).await;
    let before = snapshot(storage.as_ref(), &ns).await;
    assert_eq!(before.stats.episodes, 7);
    assert_eq!(before.stats.completed, 6);
    assert!(before.stats.patterns > 0 && before.stats.heuristics > 0 && before.stats.lessons > 0);
    assert!(before.stats.feedback > 0);
    drop(storage);

    let reopened = Arc::new(TursoStorage::open_in_data_dir(&data_dir).await.unwrap());
    assert!(data_dir.join(memory_storage_turso::DATA_DIR_FILE).is_file());
    assert_eq!(
        snapshot(reopened.as_ref(), &ns).await,
        before,
        "everything is there after reopening"
    );
    assert_eq!(reopened.list_namespaces().await.unwrap(), vec![ns.clone()]);

    finish_open_episode(reopened.clone(), &ns, open).await;
    drop(reopened);
    let third = TursoStorage::open_in_data_dir(&data_dir).await.unwrap();
    let after = snapshot(&third, &ns).await;
    assert_eq!(after.stats.completed, 7);
    assert_eq!(after.stats.steps, before.stats.steps + 1);
}

/// Retries `f` while it fails with a transient error (at most ~10 s).
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = memory_core::Result<T>>,
{
    for _ in 0..100 {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("a call after the server restart failed with a permanent error: {e}"),
        }
    }
    panic!("the remote storage did not recover after the server restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_sqld_survives_a_server_restart() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let ns = Namespace::new("reopen/remote").unwrap();
    let config = TursoConfig::remote(server.url(), None)
        .call_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let storage = Arc::new(TursoStorage::open(config.clone()).await.unwrap());
    let open = populate(storage.clone(), &ns).await;
    let before = snapshot(storage.as_ref(), &ns).await;
    assert_eq!(before.stats.episodes, 7);

    server.restart().await.unwrap();
    let config = TursoConfig::remote(server.url(), None).build().unwrap();

    // The handle that lived through the restart recovers (if the server kept its port, which
    // the harness does unless someone took it meanwhile).
    if server.url() == config_url(&storage) {
        let survivor = storage.clone();
        let stats = eventually(|| {
            let s = survivor.clone();
            let ns = ns.clone();
            async move { s.namespace_stats(&ns).await }
        })
        .await;
        assert_eq!(stats, before.stats);
    }

    // A new handle sees everything.
    let fresh = Arc::new(TursoStorage::open(config).await.unwrap());
    assert_eq!(
        snapshot(fresh.as_ref(), &ns).await,
        before,
        "everything is there after the restart"
    );
    finish_open_episode(fresh.clone(), &ns, open).await;

    // And it is still there after one more restart.
    server.restart().await.unwrap();
    let again = TursoStorage::open(TursoConfig::remote(server.url(), None).build().unwrap())
        .await
        .unwrap();
    assert_eq!(again.namespace_stats(&ns).await.unwrap().completed, 7);
    server.stop().await;
}

fn config_url(s: &TursoStorage) -> String {
    match s.config().mode() {
        memory_storage_turso::TursoMode::Remote { url, .. } => url.clone(),
        other => panic!("not remote: {other:?}"),
    }
}

/// sqld expires an idle Hrana stream after about 10 s; a storage must not keep using one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_storage_outlives_server_stream_expiry() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let ns = Namespace::new("reopen/idle").unwrap();
    let storage = Arc::new(
        TursoStorage::open(TursoConfig::remote(server.url(), None).build().unwrap())
            .await
            .unwrap(),
    );
    let open = populate(storage.clone(), &ns).await;
    let before = snapshot(storage.as_ref(), &ns).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    // Reads, a write transaction and a single-statement write all succeed at once.
    assert_eq!(snapshot(storage.as_ref(), &ns).await, before);
    finish_open_episode(storage.clone(), &ns, open).await;
    storage
        .put_embedding(&ns, open, "test-model", &[1.0])
        .await
        .unwrap();
    server.stop().await;
}
