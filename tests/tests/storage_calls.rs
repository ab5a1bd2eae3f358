//! How many storage calls a recommendation makes: each is a round trip over a server
//! (remote mode, or a tiered cache that misses), so `recommend` reads what it needs in batches.
//! Counted by a decorator over the reference backend, on a namespace whose similar episodes
//! taught sequences, rules and failure lessons.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    InMemoryStorage, MemoryConfig, Namespace, NewEpisode, Outcome, SelfLearningMemory, StepInput,
    Storage, TaskContext, TaskType, forward_storage,
};

/// Forwards every call to `inner`, counting them by method.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Storage>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl Counting {
    async fn counted<T>(&self, method: &'static str, call: impl Future<Output = T>) -> T {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
        call.await
    }

    fn take(&self) -> BTreeMap<&'static str, usize> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

forward_storage! { impl[] EpisodeStore for Counting => inner, wrap counted; forward all; {} }
forward_storage! { impl[] LearningStore for Counting => inner, wrap counted; forward all; {} }
forward_storage! { impl[] EmbeddingStore for Counting => inner, wrap counted; forward all; {} }
forward_storage! { impl[] MaintenanceStore for Counting => inner, wrap counted; forward all; {} }
forward_storage! {
    impl[] Storage for Counting => inner, wrap counted;
    forward may_have_changed, changes_since;
    { fn backend_name(&self) -> &'static str { "counting" } }
}

fn ctx(tag: Option<&str>) -> TaskContext {
    let c = TaskContext::new("web_api")
        .with_language("rust")
        .with_framework("axum");
    match tag {
        Some(t) => c.with_tag(t),
        None => c,
    }
}

async fn record(m: &SelfLearningMemory, ns: &Namespace, i: usize) {
    let failing = i % 3 == 2;
    let task = format!("add a health endpoint to the billing service, variant {i}");
    let id = m
        .start_episode(
            ns,
            NewEpisode::new(
                task,
                TaskType::CodeGeneration,
                ctx(i.is_multiple_of(2).then_some("ci")),
            ),
        )
        .await
        .unwrap();
    m.log_step(ns, id, StepInput::ok("read_file", "read the router", "ok"))
        .await
        .unwrap();
    m.log_step(ns, id, StepInput::ok("edit_file", "add the route", "ok"))
        .await
        .unwrap();
    if failing {
        m.log_step(
            ns,
            id,
            StepInput::error(
                "build",
                "cargo build",
                "linker `cc` failed: cannot find -lssl",
            ),
        )
        .await
        .unwrap();
        m.complete_episode(ns, id, Outcome::failure("the build failed"))
            .await
            .unwrap();
    } else {
        m.log_step(ns, id, StepInput::ok("build", "cargo build", "ok"))
            .await
            .unwrap();
        m.log_step(ns, id, StepInput::ok("run_tests", "cargo test", "ok"))
            .await
            .unwrap();
        m.complete_episode(ns, id, Outcome::success("endpoint added"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_recommendation_reads_in_a_handful_of_calls() {
    let counting = Arc::new(Counting {
        inner: Arc::new(InMemoryStorage::new()),
        calls: Mutex::default(),
    });
    let m = SelfLearningMemory::new(counting.clone(), MemoryConfig::default()).unwrap();
    let ns = Namespace::default();
    for i in 0..12 {
        record(&m, &ns, i).await;
    }
    counting.take();
    let req = RecommendRequest::new("add a health endpoint to the billing service")
        .with_context(Some(TaskType::CodeGeneration), ctx(None));
    let rec = m.recommend(&ns, &req).await.unwrap();
    let calls = counting.take();
    let total: usize = calls.values().sum();
    assert!(!rec.episodes.is_empty(), "similar episodes were found");
    assert!(
        !rec.playbook.is_empty(),
        "the episodes taught a procedure: {rec:?}"
    );
    // The similar episodes in one read, what they taught in one more, the context's items of
    // each kind, the estimate calibration and the lexical search: 7 (14 with one read per
    // episode and per item).
    assert!(
        !calls.contains_key("get_episode") && !calls.contains_key("get_learned"),
        "no read of one episode or item at a time: {calls:?}"
    );
    assert!(total <= 7, "{total} storage calls: {calls:?}");
    m.shutdown().await.unwrap();
}
