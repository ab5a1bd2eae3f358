//! The learning evaluation at a small size: 150 tasks, a fixed seed, each arm on a fresh
//! in-memory libsql store with lexical retrieval (no embedding model needed).
//!
//! Only robust orderings are asserted: with memory the agent succeeds more often in the last
//! window than without, needs fewer steps per success, and reuses plans from memory; and the
//! report is well-formed; in the tuning world and in the holdout world (other families, tools
//! and traps), with the drift of three families' procedures in the holdout run, and for the
//! literal agent with flaky tools. The 500-task
//! run is a benchmark (`memory eval learning`), not a test.
#![allow(clippy::expect_used)]

use std::sync::Arc;

use memory_eval::learning::{AgentStyle, Arm, LearningEval, LearningEvalConfig, WorldName};
use memory_storage_turso::TursoStorage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_memory_beats_no_memory_and_the_report_is_well_formed() -> anyhow::Result<()> {
    let config = LearningEvalConfig::default().with_tasks(150).with_seed(7);
    check(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holdout_world_with_drift_shows_the_same_orderings() -> anyhow::Result<()> {
    let config = LearningEvalConfig::default()
        .with_tasks(150)
        .with_seed(11)
        .with_world(WorldName::Holdout)
        .with_drift(true);
    check(config).await
}

/// The agent most agents are: it follows the plan to the letter, explores only when the plan
/// is exhausted, retries a transient failure once and never gives feedback; with flaky tools
/// and the drift. The memory alone has to keep up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_agent_with_flaky_tools_shows_the_same_orderings() -> anyhow::Result<()> {
    let config = LearningEvalConfig::default()
        .with_tasks(150)
        .with_seed(13)
        .with_drift(true)
        .with_agent(AgentStyle::Literal)
        .with_flaky(0.1);
    check(config).await
}

async fn check(config: LearningEvalConfig) -> anyhow::Result<()> {
    let eval = LearningEval::new(config.clone())?;
    let mut arms = Vec::new();
    for arm in Arm::ALL {
        let storage = Arc::new(TursoStorage::open_local(":memory:").await?);
        arms.push(eval.run_arm(arm, storage, None, &mut |_| {}).await?);
    }
    let report = eval.report("lexical".into(), "libsql :memory:".into(), arms);

    // Well-formed: every arm, every task, three windows of 50, rates in [0, 1].
    assert_eq!(report.arms.len(), Arm::ALL.len());
    for (a, want) in report.arms.iter().zip(Arm::ALL) {
        assert_eq!(a.arm, want);
        assert_eq!(a.tasks.len(), 150);
        assert_eq!(a.windows.len(), 3);
        assert_eq!((a.windows[0].first, a.windows[2].last), (1, 150));
        for w in &a.windows {
            for r in [
                w.success_rate,
                w.repeated_failure_rate,
                w.pattern_reuse_rate,
            ] {
                assert!((0.0..=1.0).contains(&r), "{r} out of range in {w:?}");
            }
            if let Some(s) = w.steps_per_success {
                assert!(s >= 1.0 && s <= f64::from(config.max_steps), "{s}");
            }
        }
        assert!(a.tasks.iter().all(|t| t.steps <= config.max_steps));
    }
    assert_eq!(report.arms[0].drift.change_at, 75);
    assert_eq!(report.arms[0].drift.applied, config.drift);
    let json = serde_json::to_value(&report)?;
    assert_eq!(json["arms"][2]["arm"], "full_memory");
    assert!(json["comparison"]["steps_per_success_cut"].is_number());

    let none = report.arm(Arm::NoMemory).expect("no-memory arm ran");
    let full = report.arm(Arm::FullMemory).expect("full-memory arm ran");
    let last = |a: &memory_eval::learning::ArmReport| a.windows[2].success_rate;
    assert!(
        last(full) > last(none),
        "full memory {} vs no memory {} in the last window",
        last(full),
        last(none)
    );
    // The arms are honest: without memory nothing is reused; with it, plans come from memory.
    assert!(none.overall.pattern_reuse_rate.abs() < f64::EPSILON);
    assert!(full.windows[2].pattern_reuse_rate > 0.5);
    assert!(
        full.overall.steps_per_success < none.overall.steps_per_success,
        "{:?} vs {:?}",
        full.overall.steps_per_success,
        none.overall.steps_per_success
    );
    Ok(())
}
