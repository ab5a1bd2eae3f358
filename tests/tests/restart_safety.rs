//! Restart safety: an episode started by one `SelfLearningMemory` can receive steps and be
//! completed by a new instance over the same storage, and learned state comes from storage,
//! not from process maps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use memory_core::{
    Error, InMemoryStorage, LearnedQuery, MemoryConfig, Namespace, NewEpisode, Outcome,
    SelfLearningMemory, StepInput, Storage, TaskContext, TaskType,
};

#[tokio::test]
async fn start_in_a_complete_in_b() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let ns = Namespace::new("proj/agent").unwrap();
    let ctx = TaskContext::new("web_api").with_language("rust");

    let a = SelfLearningMemory::new(storage.clone(), MemoryConfig::default()).unwrap();
    let id = a
        .start_episode(
            &ns,
            NewEpisode::new("add caching", TaskType::CodeGeneration, ctx.clone()),
        )
        .await
        .unwrap();
    a.log_step(&ns, id, StepInput::ok("read_file", "read", "ok"))
        .await
        .unwrap();
    a.log_step(
        &ns,
        id,
        StepInput::error("shell", "cargo test", "test cache::hit ... FAILED"),
    )
    .await
    .unwrap();
    a.shutdown().await.unwrap();
    drop(a);

    let b = SelfLearningMemory::new(storage.clone(), MemoryConfig::default()).unwrap();
    b.log_step(&ns, id, StepInput::ok("edit_file", "fix", "ok"))
        .await
        .unwrap();
    b.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok"))
        .await
        .unwrap();
    let report = b
        .complete_episode(&ns, id, Outcome::success("cached"))
        .await
        .unwrap();
    assert!(!report.patterns.is_empty());

    let e = b.get_episode(&ns, id).await.unwrap();
    assert_eq!(
        e.steps.iter().map(|s| s.step_number).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "numbering continues"
    );
    assert!(e.is_completed());
    b.shutdown().await.unwrap();

    // A third instance sees the learned state without having learned anything itself.
    let c = SelfLearningMemory::new(storage, MemoryConfig::default()).unwrap();
    let lessons = c.lessons(&ns, &LearnedQuery::default()).await.unwrap();
    assert_eq!(lessons.len(), 1);
    assert_eq!(lessons[0].recovered, 1);
    let patterns = c.patterns(&ns, &LearnedQuery::default()).await.unwrap();
    assert_eq!(patterns.len(), report.patterns.len());
    assert!(
        matches!(
            c.log_step(&ns, id, StepInput::ok("x", "y", "z")).await,
            Err(Error::Conflict { .. })
        ),
        "a completed episode takes no more steps, in any instance"
    );
    assert!(matches!(
        c.complete_episode(&ns, id, Outcome::success("again")).await,
        Err(Error::Conflict { .. })
    ));
    let unknown = memory_core::EpisodeId::new();
    assert!(matches!(
        c.log_step(&ns, unknown, StepInput::ok("x", "y", "z")).await,
        Err(Error::NotFound { .. })
    ));
}
