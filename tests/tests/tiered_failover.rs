//! Tiered storage over fault-injected durable layers: the tiered stack passes the conformance
//! suite; during an outage writes are journaled, acknowledged and readable; after recovery the
//! journal drains and every acknowledged write is present exactly once; cache failures never fail
//! an operation; concurrent misses share one durable read; random operation sequences with faults
//! agree with the in-memory model after sync and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use memory_core::{
    Cache, EpisodeQuery, EpisodeStore, Error, InMemoryStorage, LearnedQuery, LearningStore,
    MemoryConfig, Namespace, NewEpisode, Outbox, Outcome, SelfLearningMemory, StepBatchConfig,
    StepInput, Storage, StorageExt, TaskContext, TaskType,
};
use memory_testkit::{FaultInjecting, FaultMode, InMemoryCache, InMemoryOutbox};
use memory_tiered::{BreakerConfig, TieredConfig, TieredStorage};

fn fast_config() -> TieredConfig {
    TieredConfig {
        breaker: BreakerConfig {
            consecutive_failures: 2,
            failure_rate: 0.5,
            window: 10,
            open_for: Duration::from_millis(50),
            ..BreakerConfig::default()
        },
        replay_batch: 16,
        sync_interval: Duration::from_millis(20),
        replica_sync_interval: Duration::from_secs(3600),
        ..TieredConfig::default()
    }
}

struct Stack {
    durable: Arc<FaultInjecting<InMemoryStorage>>,
    cache: Arc<InMemoryCache>,
    outbox: Arc<InMemoryOutbox>,
    tiered: Arc<TieredStorage>,
}

async fn stack() -> Stack {
    let durable = Arc::new(FaultInjecting::new(
        Arc::new(InMemoryStorage::new()),
        FaultMode::Never,
    ));
    let cache = Arc::new(InMemoryCache::new());
    let outbox = Arc::new(InMemoryOutbox::new());
    let tiered = TieredStorage::builder(durable.clone(), outbox.clone())
        .cache(cache.clone() as Arc<dyn Cache>)
        .config(fast_config())
        .open()
        .await
        .unwrap();
    Stack {
        durable,
        cache,
        outbox,
        tiered,
    }
}

#[tokio::test]
async fn tiered_stack_passes_conformance() {
    memory_testkit::conformance::run_all(|| async {
        let s = stack().await;
        s.tiered as Arc<dyn Storage>
    })
    .await;
}

fn episode_config() -> MemoryConfig {
    MemoryConfig::default().with_steps(StepBatchConfig {
        max_batch: 1,
        flush_interval: Duration::from_secs(60),
    })
}

async fn record(m: &SelfLearningMemory, ns: &Namespace, i: usize) -> memory_core::EpisodeId {
    let ctx = TaskContext::new("web_api").with_language("rust");
    let id = m
        .start_episode(
            ns,
            NewEpisode::new(format!("task {i}"), TaskType::Debugging, ctx),
        )
        .await
        .unwrap();
    m.log_step(
        ns,
        id,
        StepInput::error("cargo", "build", "error[E0425]: cannot find value"),
    )
    .await
    .unwrap();
    m.log_step(ns, id, StepInput::ok("edit_file", "fix", "ok"))
        .await
        .unwrap();
    m.log_step(ns, id, StepInput::ok("cargo", "build", "ok"))
        .await
        .unwrap();
    m.complete_episode(ns, id, Outcome::success("fixed"))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn outage_writes_are_journaled_readable_and_replayed_exactly_once() {
    let s = stack().await;
    let m = SelfLearningMemory::new(s.tiered.clone(), episode_config()).unwrap();
    let ns = Namespace::new("drill").unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(record(&m, &ns, i).await);
    }
    s.durable.set_mode(FaultMode::Always);
    for i in 5..15 {
        ids.push(record(&m, &ns, i).await);
    }
    assert!(
        s.outbox.len().await.unwrap() > 0,
        "outage writes are journaled"
    );
    // Reads during the outage see the journaled writes.
    let during = m.get_episode(&ns, ids[10]).await.unwrap();
    assert!(during.is_completed());
    assert_eq!(during.steps.len(), 3);
    let cached = m.get_episode(&ns, ids[1]).await.unwrap();
    assert!(
        cached.is_completed(),
        "episodes from before the outage served by the cache"
    );

    s.durable.set_mode(FaultMode::Never);
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.tiered.sync_now().await.unwrap();
    assert_eq!(s.outbox.len().await.unwrap(), 0, "journal drained");
    let status = s.tiered.status();
    assert_eq!(status.outbox_len, 0);
    assert_eq!(status.dead_letters, 0);
    assert!(status.replayed_total > 0);

    let stored = s
        .durable
        .inner()
        .query_episodes(
            &ns,
            &EpisodeQuery {
                limit: 1000,
                ..EpisodeQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(stored.len(), 15, "every acknowledged episode exactly once");
    for id in &ids {
        let e = s
            .durable
            .inner()
            .get_episode(&ns, *id)
            .await
            .unwrap()
            .unwrap();
        assert!(e.is_completed());
        assert_eq!(e.steps.len(), 3);
    }
    let lessons = s
        .durable
        .inner()
        .query_lessons(&ns, &LearnedQuery::default())
        .await
        .unwrap();
    assert_eq!(lessons.len(), 1);
    assert_eq!(
        lessons[0].occurrences, 15,
        "learning from journaled completions applied once each"
    );
    m.shutdown().await.unwrap();
    s.tiered.shutdown().await.unwrap();
}

/// An erasure during an outage is journaled (ids and reason only) and replayed in order after
/// the writes journaled before it: the episode started and completed during the outage, and one
/// from before it, are both gone once the storage answers, with what they taught, and the
/// replay of the journaled start does not bring one back.
#[tokio::test]
async fn an_erasure_during_an_outage_is_journaled_and_replayed_after_earlier_writes() {
    let s = stack().await;
    let m = SelfLearningMemory::new(s.tiered.clone(), episode_config()).unwrap();
    let ns = Namespace::new("forget-drill").unwrap();
    let before = record(&m, &ns, 0).await;
    let kept = record(&m, &ns, 1).await;
    s.durable.set_mode(FaultMode::Always);
    let during = record(&m, &ns, 2).await;
    let report = m
        .forget_episodes(&ns, &[before, during], "outage drill")
        .await
        .unwrap();
    assert!(report.journaled, "{report:?}");
    let journal = s.outbox.peek(100).await.unwrap();
    let forget = journal
        .last()
        .map(|(_, e)| serde_json::to_string(e).unwrap())
        .unwrap();
    assert!(
        forget.contains("ForgetEpisodes") && !forget.contains("task"),
        "{forget}"
    );
    assert!(
        m.get_episode(&ns, during).await.is_err(),
        "gone while journaled"
    );

    s.durable.set_mode(FaultMode::Never);
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.tiered.sync_now().await.unwrap();
    assert_eq!(s.outbox.len().await.unwrap(), 0, "journal drained");
    assert_eq!(s.tiered.status().dead_letters, 0);
    let durable = s.durable.inner();
    for id in [before, during] {
        assert!(durable.get_episode(&ns, id).await.unwrap().is_none());
    }
    assert!(durable.get_episode(&ns, kept).await.unwrap().is_some());
    let lessons = durable
        .query_lessons(&ns, &LearnedQuery::default())
        .await
        .unwrap();
    assert_eq!(
        lessons[0].occurrences, 1,
        "only the kept episode's evidence"
    );
    let records = durable.forgotten_episodes(&ns, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    m.shutdown().await.unwrap();
    s.tiered.shutdown().await.unwrap();
}

/// A server that stops or starts answers some calls with errors the driver calls permanent
/// (sqld's `404 Namespace doesn't exist`). A journaled write whose replay meets one used to be
/// dropped (dead-lettered) although it had been acknowledged; now it stays in the journal
/// and is replayed once the storage answers.
#[tokio::test]
async fn a_replay_that_meets_a_permanent_storage_failure_keeps_the_entry() {
    let s = stack().await;
    let m = SelfLearningMemory::new(s.tiered.clone(), episode_config()).unwrap();
    let ns = Namespace::new("drill").unwrap();
    s.durable.set_mode(FaultMode::Always);
    let id = record(&m, &ns, 0).await;
    let journaled = s.outbox.len().await.unwrap();
    assert!(journaled > 0);
    s.durable.set_transient(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.tiered.sync_now().await.is_err());
    let status = s.tiered.status();
    assert_eq!(status.dead_letters, 0, "{status:?}");
    assert_eq!(s.outbox.len().await.unwrap(), journaled, "nothing dropped");
    s.durable.set_mode(FaultMode::Never);
    s.tiered.sync_now().await.unwrap();
    assert_eq!(s.outbox.len().await.unwrap(), 0);
    let stored = s
        .durable
        .inner()
        .get_episode(&ns, id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.is_completed());
    assert_eq!(stored.steps.len(), 3);
    m.shutdown().await.unwrap();
    s.tiered.shutdown().await.unwrap();
}

#[tokio::test]
async fn crash_during_outage_replays_from_the_journal_in_a_new_process() {
    let durable = Arc::new(FaultInjecting::new(
        Arc::new(InMemoryStorage::new()),
        FaultMode::Always,
    ));
    let outbox = Arc::new(InMemoryOutbox::new());
    let ns = Namespace::default();
    let ids = {
        let tiered = TieredStorage::builder(durable.clone(), outbox.clone())
            .config(fast_config())
            .open()
            .await
            .unwrap();
        let m = SelfLearningMemory::new(tiered.clone(), episode_config()).unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(record(&m, &ns, i).await);
        }
        ids
        // dropped without shutdown: the "process" dies
    };
    let tiered = TieredStorage::builder(durable.clone(), outbox.clone())
        .config(fast_config())
        .open()
        .await
        .unwrap();
    let e = tiered.get_episode(&ns, ids[2]).await.unwrap().unwrap();
    assert!(e.is_completed(), "overlay rebuilt from the journal");
    durable.set_mode(FaultMode::Never);
    tokio::time::sleep(Duration::from_millis(100)).await;
    tiered.sync_now().await.unwrap();
    for id in ids {
        assert!(
            durable
                .inner()
                .get_episode(&ns, id)
                .await
                .unwrap()
                .unwrap()
                .is_completed()
        );
    }
    assert_eq!(outbox.len().await.unwrap(), 0);
    tiered.shutdown().await.unwrap();
}

#[tokio::test]
async fn cache_failures_never_fail_operations() {
    let s = stack().await;
    s.cache.set_failing(true);
    let m = SelfLearningMemory::new(s.tiered.clone(), episode_config()).unwrap();
    let ns = Namespace::default();
    let id = record(&m, &ns, 0).await;
    assert!(m.get_episode(&ns, id).await.unwrap().is_completed());
    assert!(
        s.tiered.status().cache_errors > 0,
        "cache errors are counted"
    );
}

#[tokio::test]
async fn permanent_errors_are_returned_not_journaled() {
    let durable = Arc::new(
        FaultInjecting::new(Arc::new(InMemoryStorage::new()), FaultMode::Always).permanent(),
    );
    let outbox = Arc::new(InMemoryOutbox::new());
    let tiered = TieredStorage::builder(durable.clone(), outbox.clone())
        .config(fast_config())
        .open()
        .await
        .unwrap();
    let e =
        memory_testkit::conformance::episode("x", TaskType::Other, "d", None, chrono::Utc::now());
    for _ in 0..10 {
        assert!(matches!(
            tiered.create_episode(&Namespace::default(), &e).await,
            Err(Error::Storage {
                transient: false,
                ..
            })
        ));
    }
    assert_eq!(outbox.len().await.unwrap(), 0);
    assert_eq!(
        tiered.status().breaker,
        memory_tiered::BreakerState::Closed,
        "permanent errors never trip the breaker"
    );
}

#[tokio::test]
async fn concurrent_misses_share_one_durable_read() {
    let s = stack().await;
    let ns = Namespace::default();
    let e =
        memory_testkit::conformance::episode("x", TaskType::Other, "d", None, chrono::Utc::now());
    s.durable.inner().create_episode(&ns, &e).await.unwrap();
    s.cache.clear().await.unwrap();
    s.durable.set_mode(FaultMode::Never); // resets the call counter
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let t = s.tiered.clone();
            let ns = ns.clone();
            tokio::spawn(async move { t.get_episode(&ns, e.id).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_some());
    }
    assert!(
        s.durable.calls() <= 2,
        "32 concurrent misses made {} durable reads",
        s.durable.calls()
    );
}

mod model {
    //! Random operation sequences with injected transient faults agree with the in-memory
    //! model once the journal is synced.
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Start,
        Step(usize, bool),
        Complete(usize, bool),
        Outage(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Start),
            5 => (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::Step(i, ok)),
            2 => (0usize..8, any::<bool>()).prop_map(|(i, ok)| Op::Complete(i, ok)),
            1 => any::<bool>().prop_map(Op::Outage),
        ]
    }

    /// Runs `op` again while it fails with a transient error (at most 50 times).
    async fn retry_transient<T, F, Fut>(op: F) -> Result<T, memory_core::Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, memory_core::Error>>,
    {
        let mut tries = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && tries < 50 => tries += 1,
                r => return r,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn tiered_with_faults_agrees_with_model(ops in proptest::collection::vec(op(), 1..40), seed in any::<u64>()) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let s = stack().await;
                s.durable.set_mode(FaultMode::Ratio { ratio: 0.2, seed });
                let model_store: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
                let real = SelfLearningMemory::new(s.tiered.clone(), episode_config()).unwrap();
                let model = SelfLearningMemory::new(model_store.clone(), episode_config()).unwrap();
                let ns = Namespace::default();
                let mut pairs = Vec::new(); // (real id, model id)
                for op in ops {
                    match op {
                        Op::Start => {
                            let new = NewEpisode::new(format!("t{}", pairs.len()), TaskType::Debugging, TaskContext::new("d"));
                            let r = real.start_episode(&ns, new.clone()).await.unwrap();
                            let m = model.start_episode(&ns, new).await.unwrap();
                            pairs.push((r, m));
                        }
                        Op::Step(i, ok) if !pairs.is_empty() => {
                            let (r, m) = pairs[i % pairs.len()];
                            let step = if ok { StepInput::ok("tool", "a", "o") } else { StepInput::error("tool", "a", "e") };
                            // A read the cache cannot serve may meet an injected fault: a typed,
                            // transient error that changed nothing, so the agent retries.
                            let a = retry_transient(|| real.log_step(&ns, r, step.clone())).await;
                            let b = model.log_step(&ns, m, step).await;
                            assert_eq!(a.is_ok(), b.is_ok(), "{a:?} vs {b:?}");
                        }
                        Op::Complete(i, ok) if !pairs.is_empty() => {
                            let (r, m) = pairs[i % pairs.len()];
                            let outcome = if ok { Outcome::success("y") } else { Outcome::failure("n") };
                            let a = retry_transient(|| real.complete_episode(&ns, r, outcome.clone())).await;
                            let b = model.complete_episode(&ns, m, outcome).await;
                            assert_eq!(a.is_ok(), b.is_ok(), "{a:?} vs {b:?}");
                        }
                        Op::Outage(on) => s.durable.set_mode(if on { FaultMode::Always } else { FaultMode::Ratio { ratio: 0.2, seed } }),
                        _ => {}
                    }
                }
                real.shutdown().await.unwrap();
                model.shutdown().await.unwrap();
                s.durable.set_mode(FaultMode::Never);
                tokio::time::sleep(Duration::from_millis(80)).await;
                s.tiered.sync_now().await.unwrap();
                s.tiered.shutdown().await.unwrap();
                assert_eq!(s.outbox.len().await.unwrap(), 0);
                for (r, m) in &pairs {
                    let a = s.durable.inner().get_episode(&ns, *r).await.unwrap().expect("acknowledged episode stored");
                    let b = model_store.get_episode(&ns, *m).await.unwrap().unwrap();
                    assert_eq!(a.steps.len(), b.steps.len());
                    assert_eq!(a.steps.iter().map(|s| (s.step_number, s.input.clone())).collect::<Vec<_>>(),
                               b.steps.iter().map(|s| (s.step_number, s.input.clone())).collect::<Vec<_>>());
                    assert_eq!(a.outcome, b.outcome);
                }
                let sa = s.durable.inner().namespace_stats(&ns).await.unwrap();
                let sb = model_store.namespace_stats(&ns).await.unwrap();
                assert_eq!((sa.episodes, sa.completed, sa.steps, sa.patterns, sa.lessons), (sb.episodes, sb.completed, sb.steps, sb.patterns, sb.lessons));
            });
        }
    }
}

/// A new episode is cached, and a step batch patches the cached in-progress episode, only over
/// a durable layer whose reads need a server (here the fault-injecting wrapper, which answers
/// `true` by default); over one read locally (`InMemoryStorage`) nothing is cached until the
/// next read fills it with every step.
/// A durable layer whose reads are local, and one whose reads need a server (the fault
/// injector says so), each with that answer.
fn local_and_served() -> [(Arc<dyn Storage>, bool); 2] {
    let local: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let served: Arc<dyn Storage> = Arc::new(FaultInjecting::new(
        Arc::new(InMemoryStorage::new()),
        FaultMode::Never,
    ));
    for (durable, remote) in [(&local, false), (&served, true)] {
        assert_eq!(durable.reads_need_a_server(), remote);
    }
    [(local, false), (served, true)]
}

/// Tiered storage over `durable` with an in-memory cache, which is returned too.
async fn cached_tiered(durable: Arc<dyn Storage>) -> (Arc<InMemoryCache>, Arc<TieredStorage>) {
    let cache = Arc::new(InMemoryCache::new());
    let tiered = TieredStorage::builder(durable, Arc::new(InMemoryOutbox::new()))
        .cache(cache.clone() as Arc<dyn Cache>)
        .config(fast_config())
        .open()
        .await
        .unwrap();
    (cache, tiered)
}

#[tokio::test]
async fn new_episodes_are_cached_and_step_batches_patched_only_when_reads_need_a_server() {
    use chrono::Utc;
    use memory_core::{CacheKey, CachedValue};
    use memory_testkit::conformance::{episode, steps};

    let ns = Namespace::new("t").unwrap();
    for (durable, patched) in local_and_served() {
        let (cache, tiered) = cached_tiered(durable).await;
        let e = episode("task", TaskType::Debugging, "web_api", None, Utc::now());
        tiered.create_episode(&ns, &e).await.unwrap();
        let key = CacheKey::Episode(e.id);
        assert_eq!(
            cache.get(&ns, &key).await.unwrap().is_some(),
            patched,
            "a new episode is cached only where reads need a server"
        );
        let batch = steps(&[("cargo", true), ("edit_file", false)], 1, Utc::now());
        tiered.append_steps(&ns, e.id, &batch).await.unwrap();
        let cached = cache.get(&ns, &key).await.unwrap();
        match (&cached, patched) {
            (Some(CachedValue::Episode(c)), true) => assert_eq!(c.steps.len(), 2),
            (None, false) => {}
            _ => panic!("patched: {patched}, cached: {cached:?}"),
        }
        let read = tiered.get_episode(&ns, e.id).await.unwrap().unwrap();
        assert_eq!(read.steps.len(), 2);
        let Some(CachedValue::Episode(filled)) = cache.get(&ns, &key).await.unwrap() else {
            panic!("the read did not fill the cache");
        };
        assert_eq!(filled.steps.len(), 2);
        tiered.shutdown().await.unwrap();
    }
}

/// The learned items a completion changes are written to the cache only where reads need a
/// server (they stay readable through an outage there). Over a local durable layer they are
/// dropped from it instead, so a copy an earlier read filled is never served stale.
#[tokio::test]
async fn learned_items_a_completion_changes_are_cached_only_when_reads_need_a_server() {
    use memory_core::CacheKey;

    let ns = Namespace::new("t").unwrap();
    for (durable, written) in local_and_served() {
        let (cache, tiered) = cached_tiered(durable.clone()).await;
        let m = SelfLearningMemory::new(tiered.clone(), episode_config()).unwrap();
        record(&m, &ns, 0).await;
        let all = LearnedQuery {
            limit: 100,
            ..LearnedQuery::default()
        };
        let patterns = durable.query_patterns(&ns, &all).await.unwrap();
        let heuristics = durable.query_heuristics(&ns, &all).await.unwrap();
        assert!(!patterns.is_empty() && !heuristics.is_empty());
        let keys = patterns.iter().map(|p| CacheKey::Pattern(p.id.clone()));
        let keys = keys.chain(heuristics.iter().map(|h| CacheKey::Heuristic(h.id.clone())));
        for key in keys {
            assert_eq!(
                cache.get(&ns, &key).await.unwrap().is_some(),
                written,
                "{key:?} cached after the completion: {written} expected"
            );
        }

        // A read fills the cache; a completion that changes the item again must not leave
        // the copy the read put there.
        let id = patterns[0].id.clone();
        let before = tiered.get_pattern(&ns, &id).await.unwrap().unwrap();
        let key = CacheKey::Pattern(id.clone());
        assert!(
            cache.get(&ns, &key).await.unwrap().is_some(),
            "the read fills"
        );
        record(&m, &ns, 1).await;
        let stored = durable.get_pattern(&ns, &id).await.unwrap().unwrap();
        assert!(
            stored.occurrences > before.occurrences,
            "the same work, seen again"
        );
        assert_eq!(tiered.get_pattern(&ns, &id).await.unwrap().unwrap(), stored);
        m.shutdown().await.unwrap();
        tiered.shutdown().await.unwrap();
    }
}

/// A restore needs the durable layer (its record is never journaled, and comes first):
/// during an outage it fails with a transient error and changes nothing; once the layer is
/// back it succeeds.
#[tokio::test]
async fn a_restore_during_an_outage_fails_and_changes_nothing() {
    let s = stack().await;
    let m = SelfLearningMemory::new(s.tiered.clone(), episode_config()).unwrap();
    let ns = Namespace::new("drill/restore").unwrap();
    record(&m, &ns, 0).await;
    let mut patterns = s
        .tiered
        .query_patterns(&ns, &LearnedQuery::default())
        .await
        .unwrap();
    let mut p = patterns.remove(0);
    p.status = memory_core::LearnedStatus::Pruned {
        reason: "test".into(),
        at: chrono::Utc::now(),
    };
    let items = memory_core::LearnedItems {
        patterns: vec![p.clone()],
        ..memory_core::LearnedItems::default()
    };
    s.tiered.put_learned(&ns, &items).await.unwrap();
    let target = memory_core::FeedbackTarget::Pattern(p.id.clone());
    let journaled = s.outbox.len().await.unwrap();

    s.durable.set_mode(FaultMode::Always);
    let err = m.restore(&ns, target.clone()).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        s.outbox.len().await.unwrap(),
        journaled,
        "nothing journaled"
    );

    s.durable.set_mode(FaultMode::Never);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let inner = s.durable.inner();
    let stored = inner.get_pattern(&ns, &p.id).await.unwrap().unwrap();
    assert_eq!(stored.status, p.status, "still pruned");
    m.restore(&ns, target).await.unwrap();
    let stored = inner.get_pattern(&ns, &p.id).await.unwrap().unwrap();
    assert_eq!(stored.status, memory_core::LearnedStatus::Active);
    m.shutdown().await.unwrap();
    s.tiered.shutdown().await.unwrap();
}

/// A running process keeps the episode quota through an outage: once its counts are stale and
/// the durable layer does not answer, the last counts read plus the episodes it started since
/// (journaled) stand for them. (Before, a failed read counted as an empty namespace.)
#[tokio::test(start_paused = true)]
async fn a_running_process_keeps_its_quota_through_an_outage() {
    let s = stack().await;
    let mut config = episode_config();
    config.quotas.max_episodes = 5;
    let clock = Arc::new(memory_core::TokioClock::new());
    let m = SelfLearningMemory::with_clock(s.tiered.clone(), config, clock).unwrap();
    let ns = Namespace::new("quota/outage").unwrap();
    let start = |i: usize| {
        m.start_episode(
            &ns,
            NewEpisode::new(
                format!("task {i}"),
                TaskType::Debugging,
                TaskContext::new("ops"),
            ),
        )
    };
    for i in 0..2 {
        start(i).await.unwrap();
    }
    // The counts go stale; the durable layer stops answering.
    tokio::time::advance(Duration::from_secs(11)).await;
    s.durable.set_mode(FaultMode::Always);
    for i in 2..5 {
        start(i).await.unwrap();
    }
    assert!(
        s.outbox.len().await.unwrap() >= 3,
        "the starts were journaled"
    );
    match start(5).await {
        Err(Error::QuotaExceeded { limit: 5, .. }) => {}
        other => panic!("the sixth start during the outage: {other:?}"),
    }
}
