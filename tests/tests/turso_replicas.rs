//! Pins the embedded-replica mode of `TursoStorage` against a real `sqld` primary: two
//! replicas of one primary each complete episodes through `SelfLearningMemory`; a writer
//! reads its own writes at once; the other replica sees them after `sync()` (and not before:
//! reads are local); learning merges through the primary (the second replica's completion
//! adds to the pattern the first one created, even though its local copy was stale); writes
//! reach the primary (a remote client sees both replicas' episodes); and a replica with a
//! background `sync_interval` catches up on its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use memory_core::{
    EpisodeId, EpisodeQuery, EpisodeStore, LearnedQuery, MemoryConfig, Namespace, NewEpisode,
    Outcome, SelfLearningMemory, StepInput, StorageExt, TaskContext, TaskType,
};
use memory_storage_turso::{TursoConfig, TursoStorage};
use tests::sqld::{SqldServer, require_sqld};

async fn record(storage: Arc<TursoStorage>, ns: &Namespace, task: &str) -> EpisodeId {
    let memory = SelfLearningMemory::new(storage, MemoryConfig::default()).unwrap();
    let ctx = TaskContext::new("web_api").with_language("rust");
    let id = memory
        .start_episode(ns, NewEpisode::new(task, TaskType::CodeGeneration, ctx))
        .await
        .unwrap();
    memory
        .log_step(ns, id, StepInput::ok("read_file", "read the handler", "ok"))
        .await
        .unwrap();
    memory
        .log_step(
            ns,
            id,
            StepInput::ok("edit_file", "add middleware", "applied"),
        )
        .await
        .unwrap();
    memory
        .log_step(ns, id, StepInput::ok("shell", "cargo test", "ok"))
        .await
        .unwrap();
    memory
        .complete_episode(ns, id, Outcome::success("done"))
        .await
        .unwrap();
    // Read-your-writes: the writer sees its completed episode immediately.
    let episode = memory.get_episode(ns, id).await.unwrap();
    assert!(episode.is_completed(), "a replica reads its own writes");
    assert_eq!(episode.steps.len(), 3);
    memory.shutdown().await.unwrap();
    id
}

fn sequence_occurrences(patterns: &[memory_core::Pattern]) -> u64 {
    patterns
        .iter()
        .filter(|p| p.kind.name() == "tool_sequence")
        .map(|p| p.occurrences)
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_see_each_others_completed_episodes_after_sync() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = |name: &str| {
        let config = TursoConfig::replica(dir.path().join(name), server.url(), None)
            .build()
            .unwrap();
        async move { Arc::new(TursoStorage::open(config).await.unwrap()) }
    };
    let a = open("a.db").await;
    let b = open("b.db").await;
    let ns = Namespace::new("replicas/shared").unwrap();

    let from_a = record(a.clone(), &ns, "add rate limiting to the API").await;
    assert!(
        b.get_episode(&ns, from_a).await.unwrap().is_none(),
        "replica reads are local: b has not synced yet"
    );
    b.sync().await.unwrap();
    let seen_by_b = b
        .get_episode(&ns, from_a)
        .await
        .unwrap()
        .expect("b sees a's episode after sync");
    assert_eq!(Some(seen_by_b), a.get_episode(&ns, from_a).await.unwrap());

    let from_b = record(b.clone(), &ns, "add rate limiting to the admin API").await;
    a.sync().await.unwrap();
    let seen_by_a = a
        .get_episode(&ns, from_b)
        .await
        .unwrap()
        .expect("a sees b's episode after sync");
    assert!(seen_by_a.is_completed());
    assert_eq!(Some(seen_by_a), b.get_episode(&ns, from_b).await.unwrap());

    // Both episodes taught the same tool sequence: b's completion merged into a's pattern.
    let all = LearnedQuery {
        include_inactive: true,
        limit: 1_000,
        ..LearnedQuery::default()
    };
    assert_eq!(
        sequence_occurrences(&a.query_patterns(&ns, &all).await.unwrap()),
        2
    );
    assert_eq!(
        a.namespace_stats(&ns).await.unwrap(),
        b.namespace_stats(&ns).await.unwrap()
    );

    // The writes reached the primary.
    let remote = TursoStorage::open(TursoConfig::remote(server.url(), None).build().unwrap())
        .await
        .unwrap();
    let on_primary = remote
        .query_episodes(&ns, &EpisodeQuery::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect::<Vec<_>>();
    assert_eq!(
        on_primary,
        vec![from_b, from_a],
        "the primary holds both, newest first"
    );
    assert_eq!(
        remote.namespace_stats(&ns).await.unwrap(),
        a.namespace_stats(&ns).await.unwrap()
    );

    // A third replica with a background sync interval catches up without an explicit sync.
    let config = TursoConfig::replica(dir.path().join("c.db"), server.url(), None)
        .sync_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let c = TursoStorage::open(config).await.unwrap();
    let from_a_again = record(a.clone(), &ns, "rate limit the websocket endpoint").await;
    let mut seen = false;
    for _ in 0..100 {
        if c.get_episode(&ns, from_a_again).await.unwrap().is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "background sync brings the new episode to replica c");
    server.stop().await;
}
