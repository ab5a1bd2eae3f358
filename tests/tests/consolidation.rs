//! Consolidation, decay, pruning and restore, the schedule, estimate calibration and retention,
//! through `SelfLearningMemory`, on the in-memory reference backend and on a local libsql file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    ConsolidationConfig, EpisodeId, FeedbackTarget, Heuristic, HeuristicObservation,
    InMemoryStorage, LearnedItems, LearnedQuery, LearnedStatus, MemoryConfig, Namespace,
    NewEpisode, Outcome, Pattern, PatternKind, PatternObservation, RetentionConfig,
    SelfLearningMemory, StepInput, Storage, StorageExt, TaskContext, TaskType, TokioClock,
};
use memory_storage_turso::TursoStorage;
use tempfile::TempDir;

/// The backends every test runs on: in memory, and a libsql file (kept alive by the dir).
async fn backends() -> Vec<(&'static str, Arc<dyn Storage>, Option<TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let turso = TursoStorage::open_local(dir.path().join("memory.db"))
        .await
        .unwrap();
    vec![
        (
            "memory",
            Arc::new(InMemoryStorage::new()) as Arc<dyn Storage>,
            None,
        ),
        ("libsql", Arc::new(turso) as Arc<dyn Storage>, Some(dir)),
    ]
}

fn manual() -> MemoryConfig {
    MemoryConfig::default().with_consolidation(ConsolidationConfig::default().with_schedule(false))
}

/// Recent times (an old fixture would be pruned for age before it could merge).
fn at(secs: i64) -> DateTime<Utc> {
    memory_core::truncate_to_millis(Utc::now()) + chrono::Duration::seconds(secs - 1000)
}

fn decision(condition: &str, choice: &str, n: u64, start: i64) -> Pattern {
    let kind = PatternKind::DecisionPoint {
        condition: condition.to_owned(),
        choice: choice.to_owned(),
    };
    let obs = |i: u64| {
        PatternObservation::new(
            kind.clone(),
            memory_core::ContextKey::default(),
            EpisodeId::new(),
            true,
            at(start + i as i64),
        )
    };
    let mut p = Pattern::from_observation(&obs(0));
    for i in 1..n {
        p.absorb(&obs(i));
    }
    p
}

fn rule(condition: &str, action: &str, n: u64) -> Heuristic {
    let obs = || {
        HeuristicObservation::new(
            condition,
            action,
            memory_core::ContextKey::default(),
            EpisodeId::new(),
            true,
            Utc::now(),
        )
    };
    let mut h = Heuristic::from_observation(&obs());
    for _ in 1..n {
        h.absorb(&obs());
    }
    h
}

fn all() -> LearnedQuery {
    LearnedQuery {
        include_inactive: true,
        limit: 500,
        ..LearnedQuery::default()
    }
}

#[tokio::test]
async fn near_duplicates_merge_with_summed_evidence_and_distinct_ones_do_not() {
    for (name, storage, _dir) in backends().await {
        let memory = SelfLearningMemory::new(storage.clone(), manual()).unwrap();
        let ns = Namespace::new("merge/test").unwrap();
        // Same choice and context, trivially different wording.
        let a = decision("opening move of a testing task", "cargo", 3, 0);
        let b = decision("the opening move of testing task", "cargo", 2, 100);
        // Same choice, different meaning; and same wording, different choice.
        let c = decision("opening move of a debugging task", "cargo", 2, 0);
        let d = decision("opening move of a testing task", "pytest", 2, 0);
        let h1 = rule("cargo build fails", "run cargo clean", 3);
        let h2 = rule("the cargo build fails", "run cargo clean", 1);
        let h3 = rule("cargo test fails", "run cargo clean", 1);
        storage
            .put_learned(
                &ns,
                &LearnedItems {
                    patterns: vec![a.clone(), b.clone(), c.clone(), d.clone()],
                    heuristics: vec![h1.clone(), h2.clone(), h3.clone()],
                    lessons: vec![],
                },
            )
            .await
            .unwrap();

        let report = memory.consolidate(&ns).await.unwrap();
        assert_eq!(
            report.run.merged_patterns, 1,
            "{name}: {:?}",
            report.changes
        );
        assert_eq!(
            report.run.merged_heuristics, 1,
            "{name}: {:?}",
            report.changes
        );

        let survivor = memory.pattern(&ns, &a.id).await.unwrap();
        assert!(survivor.status.is_active(), "{name}");
        assert_eq!(survivor.occurrences, 5, "{name}: summed evidence");
        assert_eq!(survivor.successes, 5, "{name}");
        assert_eq!(survivor.first_seen, a.first_seen, "{name}");
        assert_eq!(survivor.last_seen, b.last_seen, "{name}");
        let loser = memory.pattern(&ns, &b.id).await.unwrap();
        assert!(
            matches!(&loser.status, LearnedStatus::Merged { into, .. } if *into == a.id.0),
            "{name}: {:?}",
            loser.status
        );
        assert_eq!(
            loser.recent_evidence, b.recent_evidence,
            "{name}: the merged item keeps its record"
        );
        assert_eq!(
            memory.pattern(&ns, &c.id).await.unwrap(),
            c,
            "{name}: distinct wording kept"
        );
        assert_eq!(
            memory.pattern(&ns, &d.id).await.unwrap(),
            d,
            "{name}: distinct choice kept"
        );

        let hs = memory.heuristic(&ns, &h1.id).await.unwrap();
        assert_eq!(hs.support, 4, "{name}");
        assert!(matches!(
            memory.heuristic(&ns, &h2.id).await.unwrap().status,
            LearnedStatus::Merged { .. }
        ));
        assert!(
            memory
                .heuristic(&ns, &h3.id)
                .await
                .unwrap()
                .status
                .is_active(),
            "{name}"
        );

        // Only active items rank.
        let active = memory
            .patterns(&ns, &LearnedQuery::default())
            .await
            .unwrap();
        assert!(!active.iter().any(|p| p.id == b.id), "{name}");
    }
}

#[tokio::test]
async fn consolidation_is_idempotent() {
    for (name, storage, _dir) in backends().await {
        let memory = SelfLearningMemory::new(storage.clone(), manual()).unwrap();
        let ns = Namespace::new("idem/test").unwrap();
        let ctx = TaskContext::new("web_api").with_language("rust");
        for i in 0..4 {
            let id = memory
                .start_episode(
                    &ns,
                    NewEpisode::new(
                        format!("add endpoint {i}"),
                        TaskType::CodeGeneration,
                        ctx.clone(),
                    ),
                )
                .await
                .unwrap();
            memory
                .log_step(
                    &ns,
                    id,
                    StepInput::error("cargo", "cargo test", "error[E0277]: trait bound"),
                )
                .await
                .unwrap();
            memory
                .log_step(&ns, id, StepInput::ok("edit_file", "fix", "ok"))
                .await
                .unwrap();
            memory
                .log_step(&ns, id, StepInput::ok("cargo", "cargo test", "ok"))
                .await
                .unwrap();
            let report = memory
                .complete_episode(&ns, id, Outcome::success("done"))
                .await
                .unwrap();
            if i == 0 {
                let p = report.patterns[0].id.clone();
                memory
                    .record_feedback(
                        &ns,
                        FeedbackTarget::Pattern(memory_core::PatternId(p)),
                        id,
                        memory_core::FeedbackOutcome::Helped,
                    )
                    .await
                    .unwrap();
            }
        }
        storage
            .put_learned(
                &ns,
                &LearnedItems {
                    patterns: vec![
                        decision("opening move", "cargo", 2, 0),
                        decision("the opening move", "cargo", 1, 5),
                    ],
                    heuristics: vec![],
                    lessons: vec![],
                },
            )
            .await
            .unwrap();
        let first = memory.consolidate(&ns).await.unwrap();
        assert!(first.run.changed_anything(), "{name}: the first run merges");
        let patterns = memory.patterns(&ns, &all()).await.unwrap();
        let heuristics = memory.heuristics(&ns, &all()).await.unwrap();
        let second = memory.consolidate(&ns).await.unwrap();
        assert!(
            !second.run.changed_anything(),
            "{name}: {:?}",
            second.changes
        );
        assert!(second.changes.is_empty(), "{name}");
        assert_eq!(
            memory.patterns(&ns, &all()).await.unwrap(),
            patterns,
            "{name}"
        );
        assert_eq!(
            memory.heuristics(&ns, &all()).await.unwrap(),
            heuristics,
            "{name}"
        );
        let runs = memory.consolidation_runs(&ns, 10).await.unwrap();
        assert_eq!(runs.len(), 2, "{name}: each run is recorded");
        assert_eq!(runs[0], second.run, "{name}");
        let snaps = memory.metrics_history(&ns, 10).await.unwrap();
        assert_eq!(snaps[0].completed, 4, "{name}");
        assert_eq!(snaps[0].success_rate, Some(1.0), "{name}");
        assert!(
            snaps[0].pattern_reuse_rate.is_some_and(|r| r > 0.5),
            "{name}: {:?}",
            snaps[0]
        );
        memory.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn an_unused_pattern_decays_is_pruned_stops_ranking_and_restore_brings_it_back() {
    for (name, storage, _dir) in backends().await {
        let clock = Arc::new(TokioClock::new());
        let memory = SelfLearningMemory::with_clock(storage.clone(), manual(), clock).unwrap();
        let ns = Namespace::new("decay/test").unwrap();
        let ctx = TaskContext::new("data").with_language("python");
        let id = memory
            .start_episode(
                &ns,
                NewEpisode::new("load the csv export", TaskType::Analysis, ctx.clone()),
            )
            .await
            .unwrap();
        memory
            .log_step(&ns, id, StepInput::ok("read_file", "open export", "ok"))
            .await
            .unwrap();
        memory
            .log_step(&ns, id, StepInput::ok("python", "parse", "ok"))
            .await
            .unwrap();
        memory
            .complete_episode(&ns, id, Outcome::success("loaded"))
            .await
            .unwrap();
        let req = RecommendRequest::new("load the csv export")
            .with_context(Some(TaskType::Analysis), ctx.clone());
        let ranked = memory.recommend(&ns, &req).await.unwrap();
        let seq = ranked
            .patterns
            .iter()
            .find(|a| matches!(a.item.kind, PatternKind::ToolSequence { .. }))
            .expect("the tool sequence ranks while fresh")
            .item
            .id
            .clone();
        assert!(
            memory.consolidate(&ns).await.unwrap().run.pruned_patterns == 0,
            "{name}: fresh items stay"
        );

        // 20 half-lives (30 days each) without evidence.
        tokio::time::advance(Duration::from_secs(20 * 30 * 86_400)).await;
        let report = memory.consolidate(&ns).await.unwrap();
        assert!(report.run.pruned_patterns >= 1, "{name}: {:?}", report.run);
        assert_eq!(
            report.run.decayed, 0,
            "{name}: pruned items are not counted as merely decayed"
        );
        let pruned = memory.pattern(&ns, &seq).await.unwrap();
        match &pruned.status {
            LearnedStatus::Pruned { reason, .. } => {
                assert!(reason.contains("below floor"), "{name}: {reason}");
            }
            other => panic!("{name}: expected a tombstone, got {other:?}"),
        }
        assert_eq!(
            pruned.occurrences, 1,
            "{name}: the tombstone keeps the evidence"
        );
        let ranked = memory.recommend(&ns, &req).await.unwrap();
        assert!(
            !ranked.patterns.iter().any(|a| a.item.id == seq),
            "{name}: pruned items do not rank"
        );

        memory
            .restore(&ns, FeedbackTarget::Pattern(seq.clone()))
            .await
            .unwrap();
        assert!(
            memory.pattern(&ns, &seq).await.unwrap().status.is_active(),
            "{name}"
        );
        let ranked = memory.recommend(&ns, &req).await.unwrap();
        assert!(
            ranked.patterns.iter().any(|a| a.item.id == seq),
            "{name}: restored items rank again"
        );
        let again = memory.consolidate(&ns).await.unwrap();
        assert!(
            memory.pattern(&ns, &seq).await.unwrap().status.is_active(),
            "{name}: the restore holds for the grace period: {:?}",
            again.changes
        );
        let conflict = memory
            .restore(&ns, FeedbackTarget::Pattern(seq.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(conflict, memory_core::Error::Conflict { .. }),
            "{name}: {conflict:?}"
        );
        memory.shutdown().await.unwrap();
    }
}

async fn runs_reach(storage: &Arc<dyn Storage>, ns: &Namespace, n: usize) -> usize {
    for _ in 0..200 {
        let runs = storage.list_consolidations(ns, 100).await.unwrap();
        if runs.len() >= n {
            return runs.len();
        }
        tokio::task::yield_now().await;
    }
    storage.list_consolidations(ns, 100).await.unwrap().len()
}

/// The schedule catches up soon after a process starts when the namespace's last run (by any
/// process) is older than the interval, then runs once per interval; a second process over
/// the same store does not run what the first just ran (the claim is one atomic insert), and
/// nothing runs after shutdown.
#[tokio::test(start_paused = true)]
async fn the_schedule_catches_up_runs_on_its_interval_one_process_at_a_time_and_stops_on_shutdown()
{
    for (name, storage, _dir) in backends().await {
        let config = || {
            MemoryConfig::default().with_consolidation(
                ConsolidationConfig::default().with_interval(Duration::from_secs(60)),
            )
        };
        let clock = Arc::new(TokioClock::new());
        let first =
            SelfLearningMemory::with_clock(storage.clone(), config(), clock.clone()).unwrap();
        let ns = Namespace::new("schedule/test").unwrap();
        // Let the schedule's task start its wait now.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let id = first
            .start_episode(
                &ns,
                NewEpisode::new("t", TaskType::Testing, TaskContext::new("d")),
            )
            .await
            .unwrap();
        first
            .complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            runs_reach(&storage, &ns, 1).await,
            0,
            "{name}: nothing in the first seconds"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            runs_reach(&storage, &ns, 1).await,
            1,
            "{name}: never consolidated, so caught up at start"
        );

        let second =
            SelfLearningMemory::with_clock(storage.clone(), config(), clock.clone()).unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            runs_reach(&storage, &ns, 2).await,
            1,
            "{name}: the second process finds a run younger than the interval"
        );
        // The first process's interval ends at 70 s, the second's at 81 s.
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(
            runs_reach(&storage, &ns, 2).await,
            2,
            "{name}: one run per interval"
        );
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(
            runs_reach(&storage, &ns, 3).await,
            2,
            "{name}: not one per process"
        );
        let runs = storage.list_consolidations(&ns, 10).await.unwrap();
        assert!(runs.iter().all(|r| r.trigger == "scheduled"), "{name}");
        first.shutdown().await.unwrap();
        second.shutdown().await.unwrap();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            runs_reach(&storage, &ns, 3).await,
            2,
            "{name}: no run after shutdown"
        );
    }
}

#[tokio::test]
async fn calibration_moves_estimates_toward_actuals_in_a_domain_that_takes_twice_as_long() {
    for (name, storage, _dir) in backends().await {
        let memory = SelfLearningMemory::new(storage.clone(), manual()).unwrap();
        let ns = Namespace::new("calib/test").unwrap();
        let ctx = TaskContext::new("billing").with_language("sql");
        let task = "migrate the invoices schema";
        let run = |steps: usize| {
            let memory = &memory;
            let ns = &ns;
            let ctx = ctx.clone();
            async move {
                let id = memory
                    .start_episode(ns, NewEpisode::new(task, TaskType::CodeGeneration, ctx))
                    .await
                    .unwrap();
                for i in 0..steps {
                    memory
                        .log_step(ns, id, StepInput::ok(format!("tool{i}"), "step", "ok"))
                        .await
                        .unwrap();
                }
                id
            }
        };
        for _ in 0..6 {
            let id = run(3).await;
            memory
                .complete_episode(&ns, id, Outcome::success("ok"))
                .await
                .unwrap();
        }
        let req =
            RecommendRequest::new(task).with_context(Some(TaskType::CodeGeneration), ctx.clone());
        let first = memory.recommend(&ns, &req).await.unwrap().estimate;
        assert_eq!(first.expected_steps, Some(3.0), "{name}: {first:?}");
        assert!(first.correction.is_none(), "{name}");
        for _ in 0..3 {
            let estimate = memory.recommend(&ns, &req).await.unwrap().estimate;
            let id = run(6).await;
            memory.record_estimate(&ns, id, &estimate).await.unwrap();
            memory
                .complete_episode(&ns, id, Outcome::success("ok"))
                .await
                .unwrap();
            let record = memory.estimate_record(&ns, id).await.unwrap().unwrap();
            assert_eq!(record.actual.as_ref().map(|a| a.steps), Some(6), "{name}");
        }
        let later = memory.recommend(&ns, &req).await.unwrap().estimate;
        let correction = later
            .correction
            .clone()
            .expect("calibrated after 3 samples");
        let raw = correction.raw_expected_steps.unwrap();
        let calibrated = later.expected_steps.unwrap();
        assert!(
            correction.steps_ratio.is_some_and(|r| r > 1.2),
            "{name}: {correction:?}"
        );
        assert!(calibrated > raw, "{name}: {calibrated} vs {raw}");
        assert!(
            (6.0 - calibrated).abs() < (6.0 - raw).abs(),
            "{name}: calibrated {calibrated} is closer to 6 than raw {raw}"
        );
        let snapshot = memory.consolidate(&ns).await.unwrap().snapshot;
        assert_eq!(snapshot.estimates_compared, 3, "{name}");
        assert!(
            snapshot.estimate_error.is_some_and(|e| e > 0.2),
            "{name}: the uncalibrated estimates were off: {snapshot:?}"
        );
        memory.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn retention_compacts_what_it_reports_and_learned_items_survive() {
    for (name, storage, _dir) in backends().await {
        let config = manual().with_retention(RetentionConfig {
            compact_step_outputs_after_days: Some(30),
            ..RetentionConfig::default()
        });
        let memory =
            SelfLearningMemory::with_clock(storage.clone(), config, Arc::new(TokioClock::new()))
                .unwrap();
        let ns = Namespace::new("retention/test").unwrap();
        let ctx = TaskContext::new("web_api");
        let mut ids = Vec::new();
        for (ok, out) in [(true, "12345"), (false, "1234567")] {
            let id = memory
                .start_episode(
                    &ns,
                    NewEpisode::new("deploy", TaskType::CodeGeneration, ctx.clone()),
                )
                .await
                .unwrap();
            memory
                .log_step(&ns, id, StepInput::ok("shell", "build", out))
                .await
                .unwrap();
            memory
                .log_step(&ns, id, StepInput::error("shell", "deploy", "timeout"))
                .await
                .unwrap();
            memory
                .log_step(&ns, id, StepInput::ok("shell", "deploy", "ok"))
                .await
                .unwrap();
            let outcome = if ok {
                Outcome::success("ok")
            } else {
                Outcome::failure("no")
            };
            memory.complete_episode(&ns, id, outcome).await.unwrap();
            ids.push(id);
        }
        let young = memory.consolidate(&ns).await.unwrap();
        assert_eq!(
            young.run.compacted_steps, 0,
            "{name}: nothing is old enough yet"
        );
        let lessons = memory.lessons(&ns, &all()).await.unwrap();
        let patterns = memory.patterns(&ns, &all()).await.unwrap();
        let failed = memory.get_episode(&ns, ids[1]).await.unwrap();

        tokio::time::advance(Duration::from_secs(31 * 86_400)).await;
        let run = memory.consolidate(&ns).await.unwrap().run;
        assert_eq!(
            (
                run.compacted_episodes,
                run.compacted_steps,
                run.compacted_bytes
            ),
            (1, 2, 7),
            "{name}"
        );
        let e = memory.get_episode(&ns, ids[0]).await.unwrap();
        assert_eq!(
            e.steps
                .iter()
                .map(|s| s.input.result.text())
                .collect::<Vec<_>>(),
            ["", "timeout", ""],
            "{name}"
        );
        assert!(e.reward.is_some() && e.reflection.is_some(), "{name}");
        assert_eq!(
            memory.get_episode(&ns, ids[1]).await.unwrap(),
            failed,
            "{name}: failed episodes are kept whole"
        );
        assert_eq!(
            memory.lessons(&ns, &all()).await.unwrap(),
            lessons,
            "{name}: lessons survive"
        );
        let after: Vec<_> = memory
            .patterns(&ns, &all())
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.id, p.occurrences))
            .collect();
        let before: Vec<_> = patterns
            .into_iter()
            .map(|p| (p.id, p.occurrences))
            .collect();
        assert_eq!(after, before, "{name}: patterns survive");
        let again = memory.consolidate(&ns).await.unwrap().run;
        assert_eq!(again.compacted_steps, 0, "{name}");
        memory.shutdown().await.unwrap();
    }
}

/// A run examines every item, not only the `max_items` most seen: with room for one pattern
/// per group, the stale tail is still decayed and pruned, page by page.
#[tokio::test(start_paused = true)]
async fn a_run_prunes_the_stale_tail_beyond_max_items() {
    for (name, storage, _dir) in backends().await {
        let mut consolidation = ConsolidationConfig::default().with_schedule(false);
        consolidation.max_items = 1;
        let config = MemoryConfig::default().with_consolidation(consolidation);
        let memory =
            SelfLearningMemory::with_clock(storage.clone(), config, Arc::new(TokioClock::new()))
                .unwrap();
        let ns = Namespace::new("decay/tail").unwrap();
        for tool in ["grep", "sed", "awk", "jq"] {
            let id = memory
                .start_episode(
                    &ns,
                    NewEpisode::new(
                        format!("tidy with {tool}"),
                        TaskType::Other,
                        TaskContext::new("ops"),
                    ),
                )
                .await
                .unwrap();
            memory
                .log_step(&ns, id, StepInput::ok(tool, "run", "ok"))
                .await
                .unwrap();
            memory
                .complete_episode(&ns, id, Outcome::success("done"))
                .await
                .unwrap();
        }
        let before = active_patterns(&memory, &ns).await;
        assert!(before > 4, "{name}: {before}");
        tokio::time::advance(Duration::from_secs(20 * 30 * 86_400)).await;
        let report = memory.consolidate(&ns).await.unwrap();
        assert_eq!(
            report.run.pruned_patterns as usize, before,
            "{name}: every stale pattern, not just the first max_items: {:?}",
            report.run
        );
        assert_eq!(active_patterns(&memory, &ns).await, 0, "{name}");
    }
}

async fn active_patterns(memory: &SelfLearningMemory, ns: &Namespace) -> usize {
    let q = LearnedQuery {
        limit: 1000,
        ..LearnedQuery::default()
    };
    memory.patterns(ns, &q).await.unwrap().len()
}

/// The head a run merges in holds the items it acts on: pruned items without new evidence do
/// not take its places, so near-duplicates behind them still merge; a pruned item that an item
/// merged into it forwards evidence to is read by id and gets it.
#[tokio::test]
async fn pruned_items_do_not_crowd_the_head_and_still_receive_forwarded_evidence() {
    for (name, storage, _dir) in backends().await {
        let mut consolidation = ConsolidationConfig::default().with_schedule(false);
        consolidation.max_items = 2;
        let config = MemoryConfig::default().with_consolidation(consolidation);
        let memory = SelfLearningMemory::new(storage.clone(), config).unwrap();
        let ns = Namespace::new("merge/head").unwrap();
        let pruned_at = at(500);
        let prune = |mut p: Pattern| {
            p.status = LearnedStatus::Pruned {
                reason: "stale".into(),
                at: pruned_at,
            };
            p
        };
        // Most seen, but pruned: they sort first and would fill a head of two.
        let stale: Vec<Pattern> = ["make", "ninja", "bazel"]
            .iter()
            .map(|tool| prune(decision("opening move of a build task", tool, 9, 0)))
            .collect();
        // Merged into the first of them, holding one occurrence that arrived since.
        let mut late = decision("opening move of the build task", "make", 1, 600);
        late.status = LearnedStatus::Merged {
            into: stale[0].id.0.clone(),
            at: at(550),
        };
        let a = decision("opening move of a testing task", "cargo", 3, 0);
        let b = decision("the opening move of testing task", "cargo", 2, 100);
        let mut patterns = stale.clone();
        patterns.extend([late.clone(), a.clone(), b.clone()]);
        let items = LearnedItems {
            patterns,
            ..LearnedItems::default()
        };
        storage.put_learned(&ns, &items).await.unwrap();

        let report = memory.consolidate(&ns).await.unwrap();
        assert_eq!(
            report.run.merged_patterns, 1,
            "{name}: {:?}",
            report.changes
        );
        assert_eq!(report.run.forwarded, 1, "{name}: {:?}", report.changes);
        let all = storage.query_patterns(&ns, &all()).await.unwrap();
        let get = |id: &memory_core::PatternId| all.iter().find(|p| &p.id == id).unwrap();
        assert_eq!(get(&a.id).occurrences, 5, "{name}: near-duplicates merged");
        assert_eq!(
            get(&stale[0].id).occurrences,
            10,
            "{name}: evidence forwarded"
        );
        assert_eq!(get(&late.id).occurrences, 0, "{name}");
        assert_eq!(get(&stale[1].id), &stale[1], "{name}: untouched");
    }
}

/// Evidence forwarded along a chain of merges reaches a pruned item at its end, though neither
/// the pruned item nor the evidence-free link between is in the head.
#[tokio::test]
async fn forwarded_evidence_follows_a_merge_chain_to_a_pruned_end() {
    for (name, storage, _dir) in backends().await {
        let mut consolidation = ConsolidationConfig::default().with_schedule(false);
        consolidation.max_items = 1;
        let config = MemoryConfig::default().with_consolidation(consolidation);
        let memory = SelfLearningMemory::new(storage.clone(), config).unwrap();
        let ns = Namespace::new("merge/chain").unwrap();
        let merged = |mut p: Pattern, into: &Pattern| {
            p.status = LearnedStatus::Merged {
                into: into.id.0.clone(),
                at: at(550),
            };
            p
        };
        let mut end = decision("opening move of a deploy task", "helm", 9, 0);
        end.status = LearnedStatus::Pruned {
            reason: "stale".into(),
            at: at(500),
        };
        let mut link = merged(
            decision("opening move of the deploy task", "helm", 1, 0),
            &end,
        );
        link.occurrences = 0;
        link.successes = 0;
        let late = merged(
            decision("deploy task: the opening move", "helm", 2, 600),
            &link,
        );
        let items = LearnedItems {
            patterns: vec![end.clone(), link.clone(), late.clone()],
            ..LearnedItems::default()
        };
        storage.put_learned(&ns, &items).await.unwrap();

        let report = memory.consolidate(&ns).await.unwrap();
        assert_eq!(report.run.forwarded, 1, "{name}: {:?}", report.changes);
        let all = storage.query_patterns(&ns, &all()).await.unwrap();
        let get = |id: &memory_core::PatternId| all.iter().find(|p| &p.id == id).unwrap();
        assert_eq!(
            get(&end.id).occurrences,
            11,
            "{name}: evidence at the chain's end"
        );
        assert_eq!(get(&late.id).occurrences, 0, "{name}");
    }
}

/// Stores `patterns` and a no-effect feedback event on `rated`.
async fn store_with_feedback_on(
    storage: &Arc<dyn Storage>,
    ns: &Namespace,
    patterns: Vec<Pattern>,
    rated: &Pattern,
) {
    let items = LearnedItems {
        patterns,
        ..LearnedItems::default()
    };
    storage.put_learned(ns, &items).await.unwrap();
    let fb = memory_core::Feedback {
        target: FeedbackTarget::Pattern(rated.id.clone()),
        episode_id: rated.recent_evidence[0].episode_id,
        outcome: memory_core::FeedbackOutcome::NoEffect,
        recorded_at: at(560),
    };
    storage.record_feedback(ns, &fb).await.unwrap();
}

/// A merged pattern row whose evidence moved goes once it is older than
/// `merged_rows_kept_days`, unless it holds feedback or a merged row points into it; a chain
/// is taken down from its first link, run by run, and the evidence stays at its end.
#[tokio::test]
async fn emptied_merged_rows_are_compacted_and_merge_chains_stay_whole() {
    for (name, storage, _dir) in backends().await {
        let memory_with = |days: f64| {
            let mut consolidation = ConsolidationConfig::default().with_schedule(false);
            consolidation.merged_rows_kept_days = days;
            let config = MemoryConfig::default().with_consolidation(consolidation);
            SelfLearningMemory::new(storage.clone(), config).unwrap()
        };
        let ns = Namespace::new("merge/compact").unwrap();
        let merged = |mut p: Pattern, into: &Pattern, evidence: u64| {
            p.status = LearnedStatus::Merged {
                into: into.id.0.clone(),
                at: at(550),
            };
            (p.occurrences, p.successes) = (evidence, evidence);
            p
        };
        let end = decision("opening move of a deploy task", "helm", 9, 0);
        let link = merged(
            decision("opening move of the deploy task", "helm", 1, 0),
            &end,
            0,
        );
        let first = merged(
            decision("deploy task: opening move", "helm", 1, 0),
            &link,
            0,
        );
        let rated = merged(decision("opening move: deploy task", "helm", 1, 0), &end, 0);
        store_with_feedback_on(
            &storage,
            &ns,
            vec![end.clone(), link.clone(), first.clone(), rated.clone()],
            &rated,
        )
        .await;
        let present = async |p: &Pattern| storage.get_pattern(&ns, &p.id).await.unwrap().is_some();

        // Merged 450 s ago: kept for the default 7 days.
        let kept = memory_with(ConsolidationConfig::default().merged_rows_kept_days);
        assert_eq!(
            kept.consolidate(&ns).await.unwrap().run.compacted_merged,
            0,
            "{name}"
        );
        let memory = memory_with(0.0);
        let report = memory.consolidate(&ns).await.unwrap();
        assert_eq!(report.run.compacted_merged, 1, "{name}: {:?}", report.run);
        assert!(!present(&first).await, "{name}: the chain's first link");
        assert!(
            present(&link).await,
            "{name}: pointed into by the first link until now"
        );
        assert!(present(&rated).await, "{name}: has feedback");
        let again = memory.consolidate(&ns).await.unwrap();
        assert_eq!(again.run.compacted_merged, 1, "{name}");
        assert!(!present(&link).await && present(&rated).await, "{name}");
        assert_eq!(
            memory.consolidate(&ns).await.unwrap().run.compacted_merged,
            0
        );
        let survivor = storage.get_pattern(&ns, &end.id).await.unwrap().unwrap();
        assert_eq!(survivor.occurrences, 9, "{name}: the evidence stays");
        assert!(survivor.status.is_active(), "{name}");
    }
}

/// A pruned pattern row not seen since goes once it was pruned more than
/// `pruned_rows_kept_days` ago, unless it holds feedback or a merged row points into it (that
/// one goes the run after the row pointing into it went); the default keeps it 90 days.
#[tokio::test]
async fn pruned_rows_not_seen_since_are_compacted_after_the_kept_days() {
    for (name, storage, _dir) in backends().await {
        let memory_with = |days: f64| {
            let mut consolidation = ConsolidationConfig::default().with_schedule(false);
            consolidation.merged_rows_kept_days = days;
            consolidation.pruned_rows_kept_days = days;
            let config = MemoryConfig::default().with_consolidation(consolidation);
            SelfLearningMemory::new(storage.clone(), config).unwrap()
        };
        let ns = Namespace::new("prune/compact").unwrap();
        let pruned = |mut p: Pattern| {
            p.status = LearnedStatus::Pruned {
                reason: "confidence 0.010 below floor 0.05".into(),
                at: at(500),
            };
            p
        };
        let gone = pruned(decision("first build of a crate", "cargo", 1, 0));
        let target = pruned(decision("a flaky network test", "retry", 1, 0));
        let rated = pruned(decision("a lint run on ci", "clippy", 1, 0));
        let mut pointer = decision("the flaky network tests", "retry", 1, 0);
        pointer.status = LearnedStatus::Merged {
            into: target.id.0.clone(),
            at: at(550),
        };
        (pointer.occurrences, pointer.successes) = (0, 0);
        store_with_feedback_on(
            &storage,
            &ns,
            vec![gone.clone(), target.clone(), rated.clone(), pointer.clone()],
            &rated,
        )
        .await;
        let present = async |p: &Pattern| storage.get_pattern(&ns, &p.id).await.unwrap().is_some();

        // Pruned 500 s ago: kept for the default 90 days (restorable).
        let kept = memory_with(ConsolidationConfig::default().pruned_rows_kept_days);
        let report = kept.consolidate(&ns).await.unwrap();
        assert_eq!(report.run.compacted_pruned, 0, "{name}: {:?}", report.run);
        assert!(present(&gone).await && present(&pointer).await, "{name}");

        let memory = memory_with(0.0);
        let report = memory.consolidate(&ns).await.unwrap();
        assert_eq!(report.run.compacted_pruned, 1, "{name}: {:?}", report.run);
        assert!(!present(&gone).await, "{name}: pruned, not seen since");
        assert!(
            present(&target).await,
            "{name}: a merged row pointed into it"
        );
        assert!(present(&rated).await, "{name}: has feedback");
        assert_eq!(report.run.compacted_merged, 1, "{name}: the pointer");
        assert!(!present(&pointer).await, "{name}");
        let again = memory.consolidate(&ns).await.unwrap();
        assert_eq!(again.run.compacted_pruned, 1, "{name}: {:?}", again.run);
        assert!(!present(&target).await && present(&rated).await, "{name}");
        let last = memory.consolidate(&ns).await.unwrap();
        assert_eq!(last.run.compacted_pruned, 0, "{name}");
        assert!(!last.run.changed_anything(), "{name}: {:?}", last.run);
    }
}

/// A storage that records one completion's learning right before the first write of learned
/// items (guarded or not), as another process would between a read and its write.
#[derive(Debug)]
struct SightingBeforeWrite {
    inner: Arc<dyn Storage>,
    sighting: std::sync::Mutex<Option<memory_core::LearningUpdate>>,
}

impl SightingBeforeWrite {
    /// `storage`, with one successful sighting of a pattern of `kind` (no context) to record.
    fn of(storage: &Arc<dyn Storage>, kind: &PatternKind) -> Arc<dyn Storage> {
        let seen = PatternObservation::new(
            kind.clone(),
            memory_core::ContextKey::default(),
            EpisodeId::new(),
            true,
            at(200),
        );
        let update = memory_core::LearningUpdate {
            episode_id: seen.episode_id,
            observed_at: seen.observed_at,
            patterns: vec![seen],
            heuristics: vec![],
            lessons: vec![],
        };
        Arc::new(SightingBeforeWrite {
            inner: storage.clone(),
            sighting: std::sync::Mutex::new(Some(update)),
        })
    }

    async fn sight(&self, ns: &Namespace) -> memory_core::Result<()> {
        let sighting = self.sighting.lock().unwrap().take();
        match sighting {
            Some(update) => self.inner.apply_learning(ns, &update).await.map(|_| ()),
            None => Ok(()),
        }
    }
}

memory_core::forward_storage! {
    impl[] LearningStore for SightingBeforeWrite => inner;
    forward apply_learning, record_feedback, list_feedback, get_learned, query_learned;
    {
        async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> memory_core::Result<()> {
            self.sight(ns).await?;
            self.inner.put_learned(ns, items).await
        }

        async fn put_learned_unless_changed(
            &self,
            ns: &Namespace,
            groups: &[memory_core::GuardedItems],
        ) -> memory_core::Result<Vec<usize>> {
            self.sight(ns).await?;
            self.inner.put_learned_unless_changed(ns, groups).await
        }
    }
}
memory_core::forward_storage! { impl[] EpisodeStore for SightingBeforeWrite => inner; forward all; {} }
memory_core::forward_storage! { impl[] EmbeddingStore for SightingBeforeWrite => inner; forward all; {} }
memory_core::forward_storage! { impl[] MaintenanceStore for SightingBeforeWrite => inner; forward all; {} }
memory_core::forward_storage! {
    impl[] Storage for SightingBeforeWrite => inner;
    forward;
    {
        fn backend_name(&self) -> &'static str {
            self.inner.backend_name()
        }
    }
}

async fn total_occurrences(storage: &Arc<dyn Storage>, ns: &Namespace) -> u64 {
    let all = storage.query_patterns(ns, &all()).await.unwrap();
    all.iter().map(|p| p.occurrences).sum()
}

#[tokio::test]
async fn a_completion_between_a_runs_read_and_its_write_keeps_its_evidence() {
    for (name, storage, _dir) in backends().await {
        let ns = Namespace::new("race/test").unwrap();
        // Two near-duplicates the run merges, with 3 + 2 occurrences.
        let a = decision("opening move of a testing task", "cargo", 3, 0);
        let b = decision("the opening move of testing task", "cargo", 2, 100);
        storage
            .put_learned(
                &ns,
                &LearnedItems {
                    patterns: vec![a.clone(), b.clone()],
                    ..LearnedItems::default()
                },
            )
            .await
            .unwrap();
        // One more sighting of the loser lands after the run read it.
        let racing = SightingBeforeWrite::of(&storage, &b.kind);
        let memory = SelfLearningMemory::new(racing, manual()).unwrap();
        let first = memory.consolidate(&ns).await.unwrap();
        assert_eq!(
            first.run.merged_patterns, 1,
            "{name}: the run decided the merge"
        );
        assert_eq!(
            first.run.left_to_next_run, 2,
            "{name}: loser and survivor left"
        );
        assert!(first.changes.is_empty(), "{name}: {:?}", first.changes);
        assert_eq!(
            total_occurrences(&storage, &ns).await,
            6,
            "{name}: 3 + 2 + 1"
        );
        let stored_b = storage.get_pattern(&ns, &b.id).await.unwrap().unwrap();
        assert_eq!(stored_b.occurrences, 3, "{name}: the sighting stands");

        // The next run, with nobody writing, merges them with every occurrence.
        let second = memory.consolidate(&ns).await.unwrap();
        assert_eq!(second.run.merged_patterns, 1, "{name}");
        assert_eq!(second.run.left_to_next_run, 0, "{name}");
        assert_eq!(total_occurrences(&storage, &ns).await, 6, "{name}");
        let survivor = storage.get_pattern(&ns, &a.id).await.unwrap().unwrap();
        assert_eq!(
            survivor.occurrences, 6,
            "{name}: the survivor holds all of it"
        );
    }
}

#[tokio::test]
async fn a_completion_between_a_restores_read_and_its_write_keeps_its_evidence() {
    for (name, storage, _dir) in backends().await {
        let ns = Namespace::new("race/restore").unwrap();
        let mut p = decision("a pruned opening move", "cargo", 2, 0);
        p.status = LearnedStatus::Pruned {
            reason: "test".into(),
            at: at(50),
        };
        let items = LearnedItems {
            patterns: vec![p.clone()],
            ..LearnedItems::default()
        };
        storage.put_learned(&ns, &items).await.unwrap();
        // A sighting of the pruned pattern lands after the restore read it.
        let racing = SightingBeforeWrite::of(&storage, &p.kind);
        let memory = SelfLearningMemory::new(racing, manual()).unwrap();
        memory
            .restore(&ns, FeedbackTarget::Pattern(p.id.clone()))
            .await
            .unwrap();
        let stored = storage.get_pattern(&ns, &p.id).await.unwrap().unwrap();
        assert_eq!(stored.status, LearnedStatus::Active, "{name}: restored");
        assert_eq!(stored.occurrences, 3, "{name}: the sighting stands");
    }
}
