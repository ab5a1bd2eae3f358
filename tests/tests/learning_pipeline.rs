//! The learning pipeline end to end through `SelfLearningMemory`: rewards, reflections,
//! pattern merging across episodes, confidence decay, contradiction handling, step flushing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use memory_core::{
    Complexity, InMemoryStorage, LearnedQuery, LearnedStatus, MemoryConfig, Namespace, NewEpisode,
    Outcome, PatternKind, SelfLearningMemory, StepBatchConfig, StepInput, Storage, TaskContext,
    TaskType, TokioClock, extract_learning, find_recoveries,
};

fn ctx() -> TaskContext {
    TaskContext::new("web_api")
        .with_language("rust")
        .with_framework("axum")
        .with_complexity(Complexity::Moderate)
}

fn memory(storage: Arc<dyn Storage>) -> SelfLearningMemory {
    SelfLearningMemory::new(storage, MemoryConfig::default()).unwrap()
}

#[tokio::test]
async fn same_tool_sequence_in_three_successes_is_one_pattern() {
    let m = memory(Arc::new(InMemoryStorage::new()));
    let ns = Namespace::default();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = m
            .start_episode(
                &ns,
                NewEpisode::new(
                    format!("add an endpoint #{i}"),
                    TaskType::CodeGeneration,
                    ctx(),
                ),
            )
            .await
            .unwrap();
        m.log_step(&ns, id, StepInput::ok("read_file", "read router", "ok"))
            .await
            .unwrap();
        m.log_step(&ns, id, StepInput::ok("edit_file", "add route", "ok"))
            .await
            .unwrap();
        m.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok"))
            .await
            .unwrap();
        m.complete_episode(&ns, id, Outcome::success("added"))
            .await
            .unwrap();
        ids.push(id);
    }
    let seqs = m
        .patterns(
            &ns,
            &LearnedQuery {
                kind: Some("tool_sequence".into()),
                ..LearnedQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs.len(), 1);
    let p = &seqs[0];
    assert_eq!(
        p.kind,
        PatternKind::ToolSequence {
            tools: vec!["read_file".into(), "edit_file".into(), "shell".into()]
        }
    );
    assert_eq!((p.occurrences, p.successes), (3, 3));
    let evidence: Vec<_> = p.recent_evidence.iter().map(|e| e.episode_id).collect();
    for id in &ids {
        assert!(evidence.contains(id), "evidence of every episode is merged");
    }
    m.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_names_failing_tool_and_recovering_step() {
    let m = memory(Arc::new(InMemoryStorage::new()));
    let ns = Namespace::default();
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new("fix the build", TaskType::Debugging, ctx()),
        )
        .await
        .unwrap();
    m.log_step(&ns, id, StepInput::ok("read_file", "read Cargo.toml", "ok"))
        .await
        .unwrap();
    m.log_step(
        &ns,
        id,
        StepInput::error(
            "cargo_build",
            "build",
            "error[E0432]: unresolved import `foo::bar`",
        ),
    )
    .await
    .unwrap();
    m.log_step(
        &ns,
        id,
        StepInput::ok("edit_file", "fix the import", "edit applied"),
    )
    .await
    .unwrap();
    m.log_step(&ns, id, StepInput::ok("cargo_build", "build", "Finished"))
        .await
        .unwrap();
    let report = m
        .complete_episode(&ns, id, Outcome::success("builds"))
        .await
        .unwrap();
    let text = report.reflection.text();
    assert!(
        text.contains("cargo_build"),
        "names the failing tool: {text}"
    );
    assert!(text.contains("step 2"), "names the failing step: {text}");
    assert!(
        text.contains("step 4"),
        "names the step that confirmed the recovery: {text}"
    );
    assert!(
        text.contains("edit_file → cargo_build"),
        "names the recovery: {text}"
    );
    assert!(
        report
            .lessons
            .iter()
            .any(|l| l.description.contains("do edit_file → cargo_build instead"))
    );
    assert!(report.patterns.iter().any(|p| p.kind == "error_recovery"));
    assert!(
        report.reward.learning_bonus > 0.0,
        "recovery earns the learning bonus"
    );
}

#[tokio::test(start_paused = true)]
async fn confidence_is_bounded_and_decays_with_age() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let clock = Arc::new(TokioClock::new());
    let m =
        SelfLearningMemory::with_clock(storage, MemoryConfig::default(), clock.clone()).unwrap();
    let ns = Namespace::default();
    for i in 0..5 {
        let id = m
            .start_episode(
                &ns,
                NewEpisode::new(format!("task {i}"), TaskType::Testing, ctx()),
            )
            .await
            .unwrap();
        m.log_step(&ns, id, StepInput::ok("shell", "cargo test", "ok"))
            .await
            .unwrap();
        m.complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
    }
    let p = m
        .patterns(
            &ns,
            &LearnedQuery {
                kind: Some("tool_sequence".into()),
                ..LearnedQuery::default()
            },
        )
        .await
        .unwrap()
        .remove(0);
    let half_life = m.config().learning.half_life_days;
    let fresh = p.confidence(memory_core::Clock::now(clock.as_ref()), half_life);
    assert!(fresh > 0.0 && fresh <= 1.0);
    tokio::time::advance(Duration::from_secs(30 * 86_400)).await;
    let later = p.confidence(memory_core::Clock::now(clock.as_ref()), half_life);
    assert!(
        (later - fresh / 2.0).abs() < 1e-6,
        "one half-life halves confidence: {fresh} -> {later}"
    );
    tokio::time::advance(Duration::from_secs(3_000 * 86_400)).await;
    let ancient = p.confidence(memory_core::Clock::now(clock.as_ref()), half_life);
    assert!((0.0..1e-6).contains(&ancient));
    m.shutdown().await.unwrap();
}

#[tokio::test]
async fn contradictory_heuristics_resolved_by_evidence_loser_kept() {
    let m = memory(Arc::new(InMemoryStorage::new()));
    let ns = Namespace::default();
    let run = |tools: Vec<&'static str>, ok: bool| {
        let m = &m;
        let ns = ns.clone();
        async move {
            let id = m
                .start_episode(
                    &ns,
                    NewEpisode::new("migrate schema", TaskType::Refactoring, ctx()),
                )
                .await
                .unwrap();
            for t in tools {
                m.log_step(&ns, id, StepInput::ok(t, "step", "ok"))
                    .await
                    .unwrap();
            }
            let outcome = if ok {
                Outcome::success("ok")
            } else {
                Outcome::failure("broke prod")
            };
            m.complete_episode(&ns, id, outcome).await.unwrap();
        }
    };
    // "follow psql" works once; "follow sqlx_migrate → shell" works three times.
    run(vec!["psql"], true).await;
    for _ in 0..3 {
        run(vec!["sqlx_migrate", "shell"], true).await;
    }
    run(vec!["psql"], false).await;
    let all = m
        .heuristics(
            &ns,
            &LearnedQuery {
                include_inactive: true,
                ..LearnedQuery::default()
            },
        )
        .await
        .unwrap();
    let active: Vec<_> = all.iter().filter(|h| h.status.is_active()).collect();
    assert_eq!(
        active.len(),
        1,
        "one condition, one active answer: {all:#?}"
    );
    assert_eq!(active[0].action, "follow sqlx_migrate → shell");
    let loser = all.iter().find(|h| h.action == "follow psql").unwrap();
    assert!(
        matches!(&loser.status, LearnedStatus::Superseded { reason, .. } if reason.contains("more evidence")),
        "loser kept with a reason: {:?}",
        loser.status
    );
    assert_eq!((loser.support, loser.against), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn flush_timer_writes_buffered_steps_without_a_further_call() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let config = MemoryConfig::default().with_steps(StepBatchConfig {
        max_batch: 100,
        flush_interval: Duration::from_millis(200),
    });
    let m = SelfLearningMemory::new(storage.clone(), config).unwrap();
    let ns = Namespace::default();
    let id = m
        .start_episode(&ns, NewEpisode::new("t", TaskType::Other, ctx()))
        .await
        .unwrap();
    for i in 0..3 {
        m.log_step(&ns, id, StepInput::ok("shell", format!("step {i}"), "ok"))
            .await
            .unwrap();
    }
    assert_eq!(
        storage
            .get_episode(&ns, id)
            .await
            .unwrap()
            .unwrap()
            .steps
            .len(),
        0,
        "buffered, not yet written"
    );
    assert_eq!(
        m.get_episode(&ns, id).await.unwrap().steps.len(),
        3,
        "reads see buffered steps"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        storage
            .get_episode(&ns, id)
            .await
            .unwrap()
            .unwrap()
            .steps
            .len(),
        3,
        "timer flushed"
    );
    m.shutdown().await.unwrap();
}

/// A memory over in-memory storage that writes steps in batches of `max_batch` (no timer
/// flush: an hour), with one episode started.
async fn batching(
    max_batch: usize,
) -> (
    Arc<dyn Storage>,
    SelfLearningMemory,
    Namespace,
    memory_core::EpisodeId,
) {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let m = SelfLearningMemory::new(storage.clone(), batched_config(max_batch)).unwrap();
    let ns = Namespace::default();
    let id = m
        .start_episode(&ns, NewEpisode::new("t", TaskType::Other, ctx()))
        .await
        .unwrap();
    (storage, m, ns, id)
}

fn batched_config(max_batch: usize) -> MemoryConfig {
    MemoryConfig::default().with_steps(StepBatchConfig {
        max_batch,
        flush_interval: Duration::from_secs(3600),
    })
}

/// Stored step numbers of the episode, straight from storage.
async fn stored_steps(
    storage: &Arc<dyn Storage>,
    ns: &Namespace,
    id: memory_core::EpisodeId,
) -> Vec<u32> {
    let e = storage.get_episode(ns, id).await.unwrap().unwrap();
    e.steps.iter().map(|s| s.step_number).collect()
}

/// Lets the runtime run spawned tasks until at least `at_least` steps are stored (at most
/// 10,000 turns).
async fn until_stored(
    storage: &Arc<dyn Storage>,
    ns: &Namespace,
    id: memory_core::EpisodeId,
    at_least: usize,
) -> Vec<u32> {
    for _ in 0..10_000 {
        let stored = stored_steps(storage, ns, id).await;
        if stored.len() >= at_least {
            return stored;
        }
        tokio::task::yield_now().await;
    }
    panic!("the background write never stored {at_least} steps");
}

#[tokio::test]
async fn a_full_batch_is_written_in_the_background_and_shutdown_flushes_the_rest() {
    let (storage, m, ns, id) = batching(4).await;
    for i in 0..6 {
        m.log_step(&ns, id, StepInput::ok("shell", format!("step {i}"), "ok"))
            .await
            .unwrap();
    }
    // No flush and no timer (an hour): the full batch goes to storage by itself, with the
    // steps logged while its write was waiting.
    let stored = until_stored(&storage, &ns, id, 4).await;
    assert_eq!(stored, (1..=stored.len() as u32).collect::<Vec<_>>());
    m.log_step(&ns, id, StepInput::ok("shell", "step 6", "ok"))
        .await
        .unwrap();
    m.shutdown().await.unwrap();
    assert_eq!(
        stored_steps(&storage, &ns, id).await,
        vec![1, 2, 3, 4, 5, 6, 7]
    );
    assert!(matches!(
        m.log_step(&ns, id, StepInput::ok("x", "y", "z")).await,
        Err(memory_core::Error::Shutdown)
    ));
}

#[tokio::test]
async fn a_batch_of_one_is_stored_before_log_step_returns() {
    let (storage, m, ns, id) = batching(1).await;
    for i in 1..=3u32 {
        m.log_step(&ns, id, StepInput::ok("shell", format!("step {i}"), "ok"))
            .await
            .unwrap();
        // No yield in between: nothing else could have written it.
        assert_eq!(
            stored_steps(&storage, &ns, id).await,
            (1..=i).collect::<Vec<_>>()
        );
    }
    m.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_background_write_refused_by_the_store_is_reported_by_the_next_call() {
    let (storage, here, ns, id) = batching(2).await;
    let elsewhere = SelfLearningMemory::new(storage.clone(), batched_config(2)).unwrap();
    here.log_step(&ns, id, StepInput::ok("shell", "step 1", "ok"))
        .await
        .unwrap();
    elsewhere
        .complete_episode(&ns, id, Outcome::success("done elsewhere"))
        .await
        .unwrap();
    // Fills the batch: acknowledged into the buffer, refused when written behind.
    here.log_step(&ns, id, StepInput::ok("shell", "step 2", "ok"))
        .await
        .unwrap();
    let mut reported = None;
    for _ in 0..10_000 {
        match here
            .log_step(&ns, id, StepInput::ok("shell", "step 3", "ok"))
            .await
        {
            Err(e) => {
                reported = Some(e);
                break;
            }
            Ok(()) => tokio::task::yield_now().await,
        }
    }
    let e = reported.expect("the refusal is reported");
    assert!(
        matches!(&e, memory_core::Error::Conflict { reason, .. } if reason.contains("refused when written")),
        "{e:?}"
    );
    assert!(
        stored_steps(&storage, &ns, id).await.is_empty(),
        "nothing was added to the completed episode"
    );
}

mod properties {
    use chrono::DateTime;
    use memory_core::{Episode, ExecutionStep, LearningUpdate, Pattern};
    use proptest::prelude::*;

    use super::*;

    fn episode_from(spec: &[(u8, bool)]) -> Episode {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut e = Episode::start(NewEpisode::new("p", TaskType::Debugging, ctx()), at);
        let tools = ["shell", "edit_file", "read_file", "grep"];
        e.steps = spec
            .iter()
            .enumerate()
            .map(|(i, (t, ok))| ExecutionStep {
                step_number: i as u32 + 1,
                key: memory_core::ExecutionStep::new_key(),
                timestamp: at,
                input: if *ok {
                    StepInput::ok(tools[*t as usize % 4], "a", "ok")
                } else {
                    StepInput::error(tools[*t as usize % 4], "a", format!("error code {t}"))
                },
            })
            .collect();
        e
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn extraction_is_deterministic(spec in proptest::collection::vec((0u8..4, any::<bool>()), 0..30), ok in any::<bool>()) {
            let e = episode_from(&spec);
            let outcome = if ok { Outcome::success("y") } else { Outcome::failure("n") };
            let at = e.started_at;
            prop_assert_eq!(extract_learning(&e, &outcome, at), extract_learning(&e.clone(), &outcome, at));
            for r in find_recoveries(&e.steps) {
                prop_assert!(r.failed_index < r.recovered_index);
                prop_assert!(e.steps[r.recovered_index].result().is_success());
            }
        }

        #[test]
        fn merging_updates_is_order_independent(specs in proptest::collection::vec(proptest::collection::vec((0u8..4, any::<bool>()), 1..8), 1..6)) {
            let updates: Vec<LearningUpdate> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let e = episode_from(s);
                    let at = e.started_at + chrono::Duration::seconds(i as i64);
                    extract_learning(&e, &Outcome::success("y"), at)
                })
                .collect();
            let fold = |order: Vec<&LearningUpdate>| {
                let mut known = std::collections::BTreeMap::<String, Pattern>::new();
                for u in order {
                    let existing = memory_core::ExistingLearned {
                        patterns: u.pattern_ids().iter().filter_map(|id| known.get(&id.0).cloned()).collect(),
                        ..Default::default()
                    };
                    for c in u.apply(existing).patterns {
                        known.insert(c.item.id.0.clone(), c.item);
                    }
                }
                known
            };
            let forward = fold(updates.iter().collect());
            let backward = fold(updates.iter().rev().collect());
            prop_assert_eq!(forward, backward);
        }
    }
}
