//! Which learned advice a recommendation gives: what the matched episodes taught, not what a
//! context has seen most; nothing dressed up as specific when nothing similar was found.
//! Runs on the real model (skips outside CI when it is not installed) and libsql in a temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use memory_core::retrieval::recommend::{RecommendRequest, Recommendation};
use memory_core::{
    Embedder, MemoryConfig, Namespace, NewEpisode, Outcome, RateLimitConfig, SelfLearningMemory,
    StepInput, SystemClock, TaskContext, TaskType,
};
use memory_storage_turso::TursoStorage;

async fn record(m: &SelfLearningMemory, ns: &Namespace, task: &str, tools: &[&str]) {
    let ctx = TaskContext::new("web_api").with_language("rust");
    let id = m
        .start_episode(ns, NewEpisode::new(task, TaskType::CodeGeneration, ctx))
        .await
        .unwrap();
    for tool in tools {
        m.log_step(ns, id, StepInput::ok(*tool, format!("run {tool}"), "ok"))
            .await
            .unwrap();
    }
    m.complete_episode(ns, id, Outcome::success("done"))
        .await
        .unwrap();
}

/// A memory on libsql in `dir`, with the rate limiter off.
async fn open(dir: &std::path::Path, embedder: Option<Arc<dyn Embedder>>) -> SelfLearningMemory {
    let storage = Arc::new(TursoStorage::open_in_data_dir(dir).await.unwrap());
    let config = MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..MemoryConfig::default()
    };
    SelfLearningMemory::with_embedder(storage, config, Arc::new(SystemClock), embedder).unwrap()
}

fn plan(rec: &Recommendation) -> Vec<&str> {
    rec.playbook.iter().map(|s| s.tool.as_str()).collect()
}

/// 420 episodes of 210 two-tool procedures seen twice each, and one kubectl -> helm episode,
/// all in `web_api/rust`: the kubernetes task gets the kubectl episode's own procedure although
/// its pattern is far outside the context's 200 most-seen; a task like nothing stored gets no
/// learned advice, or, with a context given, only that context's default, labeled as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_comes_from_what_the_matched_episodes_taught() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), Some(Arc::new(model))).await;
    let ns = Namespace::new("advice/scale").unwrap();
    let resources = [
        "orders", "invoices", "users", "carts", "reviews", "coupons", "refunds",
    ];
    for i in 0..210 {
        let (a, b) = (format!("tool{i}a"), format!("tool{i}b"));
        let resource = resources[i % resources.len()];
        for verb in ["add", "extend"] {
            let task = format!("{verb} the {resource} endpoint variant {i} with pagination");
            record(&m, &ns, &task, &[&a, &b]).await;
        }
    }
    record(
        &m,
        &ns,
        "move the nightly report cron job onto kubernetes",
        &["kubectl", "helm"],
    )
    .await;
    m.embed_pending(&ns).await.unwrap();

    let rec = m
        .recommend(
            &ns,
            &RecommendRequest::new("migrate the billing cron job to kubernetes"),
        )
        .await
        .unwrap();
    assert!(rec.strong_match, "{:?}", rec.confidence);
    assert_eq!(plan(&rec), ["kubectl", "helm"], "{:#?}", rec.playbook);
    assert!(
        rec.patterns[0]
            .why
            .contains("taught by the similar episodes"),
        "{}",
        rec.patterns[0].why
    );
    // The kubectl episode is the only close one: it taught nearly all of the evidence.
    let share = rec.patterns[0].taught_share;
    assert!(share > 0.5 && share <= 1.0, "{share}");
    assert!(
        rec.advice_basis.contains("similar episode"),
        "{}",
        rec.advice_basis
    );

    let haiku = RecommendRequest::new("write a haiku about autumn leaves");
    let rec = m.recommend(&ns, &haiku).await.unwrap();
    assert!(!rec.strong_match);
    assert!(
        rec.playbook.is_empty() && rec.patterns.is_empty() && rec.pitfalls.is_empty(),
        "{rec:#?}"
    );
    assert!(rec.heuristics.is_empty());
    assert!(
        rec.advice_basis.contains("no learned advice"),
        "{}",
        rec.advice_basis
    );

    let ctx = TaskContext::new("web_api").with_language("rust");
    let rec = m
        .recommend(
            &ns,
            &haiku.with_context(Some(TaskType::CodeGeneration), ctx),
        )
        .await
        .unwrap();
    assert!(!rec.strong_match);
    assert!(!rec.playbook.is_empty());
    assert!(
        rec.playbook
            .iter()
            .all(|s| s.why.starts_with("context default, nothing similar: ")),
        "{:#?}",
        rec.playbook
    );
    // Nothing similar taught the context's default.
    assert!(
        rec.patterns.iter().all(|p| p.taught_share == 0.0),
        "{:#?}",
        rec.patterns
    );
    assert!(
        rec.advice_basis.contains("as a default"),
        "{}",
        rec.advice_basis
    );
}

/// `recommend` then `start_episode` for the same task (wording folded as task fingerprints
/// fold it) records the estimate with the new episode without any extra call; completion
/// stores the actual figures beside it. An episode of another task claims nothing.
#[tokio::test]
async fn a_recommendations_estimate_follows_the_next_episode_of_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), None).await;
    let ns = Namespace::new("advice/estimates").unwrap();
    for _ in 0..3 {
        record(
            &m,
            &ns,
            "add pagination to the orders endpoint",
            &["edit_file", "cargo"],
        )
        .await;
    }
    let rec = m
        .recommend(
            &ns,
            &RecommendRequest::new("Add pagination to the orders endpoint!"),
        )
        .await
        .unwrap();
    assert!(rec.estimate.sample_size > 0, "{:?}", rec.estimate);

    let ctx = TaskContext::new("web_api").with_language("rust");
    let other = m
        .start_episode(
            &ns,
            NewEpisode::new("rotate the api keys", TaskType::Other, ctx.clone()),
        )
        .await
        .unwrap();
    assert!(m.estimate_record(&ns, other).await.unwrap().is_none());

    let next = NewEpisode::new(
        "add pagination to the orders endpoint",
        TaskType::CodeGeneration,
        ctx,
    );
    let id = m.start_episode(&ns, next.clone()).await.unwrap();
    let stored = m
        .estimate_record(&ns, id)
        .await
        .unwrap()
        .expect("recorded at start");
    assert_eq!(stored.estimate, rec.estimate);
    assert!(stored.actual.is_none());
    m.log_step(&ns, id, StepInput::ok("edit_file", "edit", "ok"))
        .await
        .unwrap();
    m.complete_episode(&ns, id, Outcome::success("done"))
        .await
        .unwrap();
    let closed = m.estimate_record(&ns, id).await.unwrap().unwrap();
    assert_eq!(closed.actual.map(|a| (a.steps, a.success)), Some((1, true)));

    // Claimed once: the next episode of the task has no estimate until another recommend.
    let again = m.start_episode(&ns, next).await.unwrap();
    assert!(m.estimate_record(&ns, again).await.unwrap().is_none());
}

/// Where a tool reliably fails until a preparation runs (seen fixed twice), the playbook holds
/// the preparation before that tool, with the evidence, once a matched episode taught it (a
/// lesson of the stack alone is a warning on the step), and the rules that apply are named in
/// the steps' `why`. A tool tried once and abandoned (an exploration mistake) teaches nothing.
#[tokio::test]
async fn the_playbook_holds_the_fix_a_context_needs_and_the_rules_that_apply() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), None).await;
    let ns = Namespace::new("advice/fixes").unwrap();
    let ctx = TaskContext::new("web_api").with_language("rust");
    for _ in 0..3 {
        record(
            &m,
            &ns,
            "add pagination to the orders endpoint",
            &["edit_file", "cargo"],
        )
        .await;
    }
    // Tests in the same stack: cargo fails until rustup ran; grep was tried and abandoned.
    for _ in 0..2 {
        let id = m
            .start_episode(
                &ns,
                NewEpisode::new("run the test suite", TaskType::Testing, ctx.clone()),
            )
            .await
            .unwrap();
        for step in [
            StepInput::error("grep", "look", "grep does not apply here"),
            StepInput::error("cargo", "test", "error: toolchain missing"),
            StepInput::ok("rustup", "install", "ok"),
            StepInput::ok("cargo", "test", "ok"),
        ] {
            m.log_step(&ns, id, step).await.unwrap();
        }
        m.complete_episode(&ns, id, Outcome::success("green"))
            .await
            .unwrap();
    }
    let req = RecommendRequest::new("add pagination to the orders endpoint")
        .with_context(Some(TaskType::CodeGeneration), ctx.clone());
    // Learned in another kind of task of the stack only: a warning on the step, with the
    // recovery; the plan itself changes only on what the matched episodes taught.
    let rec = m.recommend(&ns, &req).await.unwrap();
    assert_eq!(plan(&rec), ["edit_file", "cargo"], "{:#?}", rec.playbook);
    let warned = &rec.playbook[1].why;
    assert!(
        warned.contains(
            "watch out: cargo failed with \"error: toolchain missing\", recover with rustup → cargo"
        ),
        "{warned}"
    );
    // Once a matched episode met it too, the preparation goes into the plan, with all the
    // evidence of the stack.
    let mut steps = vec![StepInput::ok("edit_file", "edit", "ok")];
    steps.extend(fixed_by("rustup"));
    let task = "add pagination to the orders endpoint";
    episode_in(&m, &ns, (&ctx, TaskType::CodeGeneration), task, steps).await;
    let rec = m.recommend(&ns, &req).await.unwrap();
    assert_eq!(
        plan(&rec),
        ["edit_file", "rustup", "cargo"],
        "{:#?}",
        rec.playbook
    );
    // Without the model nothing calibrated says how close the match is, and the advice says so.
    assert!(
        rec.advice_basis.starts_with("lexical matches only"),
        "{}",
        rec.advice_basis
    );
    assert!(
        rec.playbook
            .iter()
            .all(|s| s.why.starts_with("lexical match only: "))
    );
    let prep = &rec.playbook[1].why;
    assert!(
        prep.contains("prepare for cargo") && prep.contains("toolchain missing"),
        "{prep}"
    );
    assert!(
        rec.playbook[2].why.contains("rule: when cargo fails with"),
        "{}",
        rec.playbook[2].why
    );
    assert!(
        rec.playbook[0].why.contains(
            "agrees with the rule: starting a code_generation task, follow edit_file → cargo"
        ),
        "{}",
        rec.playbook[0].why
    );
    let lessons = m
        .lessons(&ns, &memory_core::LearnedQuery::default())
        .await
        .unwrap();
    assert!(
        lessons.iter().all(|l| l.failed_tool != "grep"),
        "{lessons:#?}"
    );
    assert!(lessons.iter().any(|l| l.failed_tool == "cargo"));
}

/// One episode of `steps` in `ctx`, completed as a success.
async fn episode_in(
    m: &SelfLearningMemory,
    ns: &Namespace,
    (ctx, kind): (&TaskContext, TaskType),
    task: &str,
    steps: Vec<StepInput>,
) {
    let new = NewEpisode::new(task, kind, ctx.clone());
    let id = m.start_episode(ns, new).await.unwrap();
    for step in steps {
        m.log_step(ns, id, step).await.unwrap();
    }
    m.complete_episode(ns, id, Outcome::success("green"))
        .await
        .unwrap();
}

/// Cargo fails until a preparation runs, then passes.
fn fixed_by(prep: &str) -> Vec<StepInput> {
    vec![
        StepInput::error("cargo", "test", "error: toolchain missing"),
        StepInput::ok(prep, "prepare", "ok"),
        StepInput::ok("cargo", "test", "ok"),
    ]
}

/// A rule two rust contexts agree on becomes, at consolidation, a general rule for rust with
/// their evidence summed, and the playbook of a third rust context that never met the failure
/// names it at the step it concerns; a rust context with no episodes gets the general opening
/// rule's plan, labeled as such. When the third context learns another fix, the contexts no
/// longer agree: the general rule is pruned (with the reason) and the context's own rule is
/// the one named.
#[tokio::test]
async fn rules_that_agree_across_contexts_generalize_into_the_plan_of_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), None).await;
    let ns = Namespace::new("advice/general").unwrap();
    for domain in ["web_api", "cli"] {
        let ctx = TaskContext::new(domain).with_language("rust");
        for _ in 0..2 {
            let ctx = (&ctx, TaskType::Testing);
            episode_in(&m, &ns, ctx, "run the test suite", fixed_by("rustup")).await;
        }
    }
    let firmware = TaskContext::new("embedded").with_language("rust");
    let task = "bump the firmware loader's flash timeout";
    for _ in 0..3 {
        let steps = vec![
            StepInput::ok("edit_file", "edit", "ok"),
            StepInput::ok("cargo", "test", "ok"),
        ];
        episode_in(&m, &ns, (&firmware, TaskType::CodeGeneration), task, steps).await;
    }
    let req =
        RecommendRequest::new(task).with_context(Some(TaskType::CodeGeneration), firmware.clone());
    // A rust context with no episodes at all.
    let games = TaskContext::new("gamedev").with_language("rust");
    let new_context =
        RecommendRequest::new("run the test suite").with_context(Some(TaskType::Testing), games);
    let cargo_why = |rec: &Recommendation| {
        (rec.playbook.iter())
            .find(|s| s.tool == "cargo")
            .map(|s| s.why.clone())
            .unwrap()
    };
    let before = m.recommend(&ns, &req).await.unwrap();
    assert_eq!(plan(&before), ["edit_file", "cargo"]);
    assert!(
        !cargo_why(&before).contains("rule:"),
        "{}",
        cargo_why(&before)
    );
    assert!(plan(&m.recommend(&ns, &new_context).await.unwrap()).is_empty());

    let report = m.consolidate(&ns).await.unwrap();
    assert!(
        report.run.generalized_heuristics >= 1,
        "{:#?}",
        report.changes
    );
    let general = |rec: &Recommendation| {
        (rec.heuristics.iter())
            .map(|a| &a.item)
            .find(|h| h.is_general() && h.condition.starts_with("cargo fails"))
            .cloned()
    };
    let after = m.recommend(&ns, &req).await.unwrap();
    let rule = general(&after).expect("the general rule is advice here");
    assert_eq!((rule.support, rule.context.domain.as_deref()), (4, None));
    assert_eq!(rule.context.language.as_deref(), Some("rust"));
    let why = cargo_why(&after);
    assert!(
        why.contains(
            "rule: when cargo fails with \"error: toolchain missing\", recover with rustup"
        ) && why.contains("held 4 of 4 times in rust contexts that agree, a general rule"),
        "{why}"
    );
    // The new context's plan is the general opening rule of testing in rust, labeled so.
    let fresh = m.recommend(&ns, &new_context).await.unwrap();
    assert_eq!(plan(&fresh), ["rustup", "cargo"], "{:#?}", fresh.playbook);
    assert_eq!(fresh.playbook_pattern, None);
    let why = &fresh.playbook[0].why;
    assert!(
        why.starts_with("lexical match only: step 1 of rustup → cargo (no procedure of this context yet; the rule \"starting a testing task, follow rustup → cargo\" held 4 of 4 times in testing in rust contexts that agree, a general rule)"),
        "{why}"
    );
    assert!(
        m.consolidate(&ns).await.unwrap().run.generalized_heuristics == 0,
        "a second run changes nothing"
    );

    // The firmware context learns its own fix: rust no longer agrees.
    for _ in 0..2 {
        let ctx = (&firmware, TaskType::Testing);
        episode_in(&m, &ns, ctx, "run the test suite", fixed_by("nix_shell")).await;
    }
    let report = m.consolidate(&ns).await.unwrap();
    let pruned = (report.changes.iter())
        .find(|c| c.id == rule.id.0 && c.action == "pruned")
        .unwrap_or_else(|| panic!("{:#?}", report.changes));
    assert!(pruned.detail.contains("agree"), "{}", pruned.detail);
    let last = m.recommend(&ns, &req).await.unwrap();
    assert!(general(&last).is_none());
    let why = cargo_why(&last);
    assert!(
        why.contains("recover with nix_shell") && why.contains("in embedded/rust"),
        "{why}"
    );
    // Rust contexts no longer agree on how to start testing either.
    assert!(plan(&m.recommend(&ns, &new_context).await.unwrap()).is_empty());
}

/// A task no one has finished yet: the playbook is the steps that worked in the similar
/// attempt that got furthest (labeled, with that episode), so the next try starts where it
/// stopped; once a try succeeds, the playbook is what succeeded. Without a context, lexical
/// hits teach nothing and no plan is given.
#[tokio::test]
async fn a_task_no_one_has_finished_gets_the_furthest_attempt_as_its_playbook() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), None).await;
    let ns = Namespace::new("advice/attempt").unwrap();
    let ctx = TaskContext::new("web_api").with_language("rust");
    let task = "move the ledger service from mysql to postgres";
    let attempt = |worked: &'static [&'static str]| {
        let mut steps: Vec<StepInput> = worked
            .iter()
            .map(|t| StepInput::ok(*t, format!("run {t}"), "ok"))
            .collect();
        steps.push(StepInput::error("cargo", "test", "error: relation missing"));
        steps
    };
    let mut ids = Vec::new();
    for worked in [
        &["pg_dump"][..],
        &["pg_dump", "edit_file", "sqlx_migrate"][..],
        &["pg_dump", "edit_file"][..],
    ] {
        let new = NewEpisode::new(task, TaskType::Refactoring, ctx.clone());
        let id = m.start_episode(&ns, new).await.unwrap();
        for step in attempt(worked) {
            m.log_step(&ns, id, step).await.unwrap();
        }
        let outcome = Outcome::failure("tests still fail");
        m.complete_episode(&ns, id, outcome).await.unwrap();
        ids.push(id);
    }
    let req = RecommendRequest::new(task).with_context(Some(TaskType::Refactoring), ctx.clone());

    let rec = m.recommend(&ns, &req).await.unwrap();
    assert_eq!(plan(&rec), ["pg_dump", "edit_file", "sqlx_migrate"]);
    assert_eq!(rec.playbook_attempt, Some(ids[1]));
    assert_eq!(rec.playbook_pattern, None);
    let why = &rec.playbook[0].why;
    let expected = format!(
        "lexical match only: step 1 of pg_dump → edit_file → sqlx_migrate (no similar task finished yet: the steps that worked in the similar attempt that got furthest, episode {} (refactoring in web_api/rust), which failed after 4 step(s), its last failure cargo with \"error: relation missing\"; go on from there)",
        ids[1]
    );
    assert!(why.starts_with(&expected), "{why}");
    let bare = m
        .recommend(&ns, &RecommendRequest::new(task))
        .await
        .unwrap();
    assert!(bare.playbook.is_empty() && bare.playbook_attempt.is_none());

    let steps = ["pg_dump", "edit_file", "sqlx_migrate", "cargo"];
    let done = NewEpisode::new(task, TaskType::Refactoring, ctx.clone());
    let id = m.start_episode(&ns, done).await.unwrap();
    for t in steps {
        m.log_step(&ns, id, StepInput::ok(t, format!("run {t}"), "ok"))
            .await
            .unwrap();
    }
    m.complete_episode(&ns, id, Outcome::success("green"))
        .await
        .unwrap();
    let rec = m.recommend(&ns, &req).await.unwrap();
    assert_eq!(plan(&rec), steps);
    assert_eq!(rec.playbook_attempt, None);
    assert!(rec.playbook_pattern.is_some());
}

/// A weak match (one close episode among unrelated ones) with a context given: the near
/// miss's furthest attempt is the playbook, every step labeled as weak; with no context given
/// there is no plan at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_miss_attempt_is_a_labeled_plan_only_when_a_context_is_given() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), Some(Arc::new(model))).await;
    let ns = Namespace::new("advice/near-miss").unwrap();
    record(
        &m,
        &ns,
        "write a haiku generator for the docs site",
        &["edit_file"],
    )
    .await;
    let chart = "render the quarterly sales chart as svg";
    record(&m, &ns, chart, &["edit_file", "plot"]).await;
    let ctx = TaskContext::new("payments").with_language("go");
    let task = "move the refund worker from polling to the event queue";
    let new = NewEpisode::new(task, TaskType::Refactoring, ctx.clone());
    let id = m.start_episode(&ns, new).await.unwrap();
    for t in ["read_code", "edit_file"] {
        let step = StepInput::ok(t, format!("run {t}"), "ok");
        m.log_step(&ns, id, step).await.unwrap();
    }
    let deploy = StepInput::error("deploy", "deploy", "queue not provisioned");
    m.log_step(&ns, id, deploy).await.unwrap();
    let outcome = Outcome::failure("queue missing");
    m.complete_episode(&ns, id, outcome).await.unwrap();
    m.embed_pending(&ns).await.unwrap();
    let paraphrase = "make the refund worker consume queue events instead of polling";

    let req = RecommendRequest::new(paraphrase).with_context(Some(TaskType::Refactoring), ctx);
    let rec = m.recommend(&ns, &req).await.unwrap();
    assert!(!rec.strong_match, "the precondition: a weak match");
    assert_eq!(rec.playbook_attempt, Some(id), "{:#?}", rec.playbook);
    assert_eq!(plan(&rec), ["read_code", "edit_file"]);
    for step in &rec.playbook {
        let why = &step.why;
        assert!(
            why.starts_with("no strong match, only a near miss tried this: step"),
            "{why}"
        );
    }
    let bare = m.recommend(&ns, &RecommendRequest::new(paraphrase)).await;
    let bare = bare.unwrap();
    assert!(bare.playbook.is_empty() && bare.playbook_attempt.is_none());
}

/// A procedure that changed is unlearned from what agents did, with no feedback at all: once
/// an episode shows a step of the playbook giving way (it failed, nothing fixed it, another
/// tool did its work and the task succeeded), the playbook follows the procedure as done since,
/// and the old sequence, however often it succeeded, is marked as contradicted. A step that
/// failed once and worked on a retry (a flaky runner) changes nothing; a procedure that
/// changes back is followed back.
#[tokio::test]
async fn a_step_that_gave_way_since_the_procedure_was_last_done_leaves_the_playbook() {
    use memory_core::PatternKind;

    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), None).await;
    let ns = Namespace::new("advice/drift").unwrap();
    let ctx = TaskContext::new("databases").with_language("python");
    let kind = (&ctx, TaskType::CodeGeneration);
    let ok = |t: &str| StepInput::ok(t, format!("run {t}"), "ok");
    let failed = |t: &str, e: &str| StepInput::error(t, format!("run {t}"), e);
    let task = "migrate the billing schema";
    let old = ["snapshot", "migrate", "verify"];
    let req = RecommendRequest::new(task)
        .with_context(Some(TaskType::CodeGeneration), ctx.clone())
        .with_limit(30);
    // Evidence is ordered by time: let each episode complete in a later millisecond.
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(5));
    for _ in 0..5 {
        episode_in(&m, &ns, kind, task, old.iter().map(|t| ok(t)).collect()).await;
        tick().await;
    }
    assert_eq!(plan(&m.recommend(&ns, &req).await.unwrap()), old);

    let flaky = vec![
        ok("snapshot"),
        failed("migrate", "connection reset by the runner"),
        ok("migrate"),
        ok("verify"),
    ];
    episode_in(&m, &ns, kind, task, flaky).await;
    tick().await;
    assert_eq!(plan(&m.recommend(&ns, &req).await.unwrap()), old);

    let changed = vec![
        ok("snapshot"),
        failed("migrate", "migrate: not applicable here"),
        failed("verify", "verify: not ready"),
        ok("backfill"),
        ok("verify"),
    ];
    episode_in(&m, &ns, kind, task, changed).await;
    tick().await;
    let rec = m.recommend(&ns, &req).await.unwrap();
    assert_eq!(plan(&rec), ["snapshot", "backfill", "verify"]);
    let why = &rec.playbook[0].why;
    assert!(why.contains("migrate gave way after snapshot"), "{why}");
    assert!(why.contains("100% success over 6 episodes"), "{why}");
    let sequence = |tools: &[&str]| {
        rec.patterns
            .iter()
            .find(|a| matches!(&a.item.kind, PatternKind::ToolSequence { tools: t } if t == tools))
            .unwrap_or_else(|| panic!("{tools:?} among {:#?}", rec.patterns))
    };
    let set_aside = &sequence(&old).why;
    assert!(
        set_aside.contains("contradicted by newer evidence"),
        "{set_aside}"
    );
    assert!(
        !sequence(&["snapshot", "backfill", "verify"])
            .why
            .contains("contradicted")
    );

    // It changes back: the old procedure done again is newer than what contradicted it.
    episode_in(&m, &ns, kind, task, old.iter().map(|t| ok(t)).collect()).await;
    assert_eq!(plan(&m.recommend(&ns, &req).await.unwrap()), old);
}

/// A tag that changes the procedure keeps its variant apart: in one context, the build of the
/// `openssl`-tagged tasks fails until `install_deps` ran, the plain tasks' build does not. A
/// plain task's plan has no `install_deps` (the lesson warns, says it struck only with the tag,
/// and prepares nothing); a tagged task's plan has it before the build. Once the tagged
/// tasks' build works without it (the environment was repaired), the lesson is contradicted by
/// that newer evidence, with no feedback given: demoted, and out of the plan.
#[tokio::test]
async fn a_tag_that_changes_the_procedure_keeps_its_variant_apart_and_a_repaired_lesson_leaves() {
    use memory_core::PatternKind;

    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), None).await;
    let ns = Namespace::new("advice/variants").unwrap();
    let mut plain = TaskContext::new("web_api").with_language("rust");
    plain.framework = Some("axum".into());
    let mut tagged = plain.clone();
    tagged.tags = vec!["openssl".into()];
    let ok = |t: &str| StepInput::ok(t, format!("run {t}"), "ok");
    let linker = "linker `cc` failed: cannot find -lssl";
    let task = "add rate limiting to the orders endpoint";
    let kind = TaskType::CodeGeneration;
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(5));
    // The tagged tasks' build fails until install_deps ran.
    let trapped = || {
        vec![
            ok("edit_file"),
            StepInput::error("build", "cargo build", linker),
            ok("install_deps"),
            ok("build"),
            ok("run_tests"),
        ]
    };
    // Six plain tasks and five tagged ones: that all five of the tagged procedure's episodes
    // had the tag is no chance (2% at this share of the context).
    for i in 0..6 {
        let steps = ["edit_file", "build", "run_tests"].map(ok).to_vec();
        episode_in(&m, &ns, (&plain, kind), task, steps).await;
        tick().await;
        if i < 5 {
            episode_in(&m, &ns, (&tagged, kind), task, trapped()).await;
            tick().await;
        }
    }
    let req = |ctx: &TaskContext| {
        RecommendRequest::new(task)
            .with_context(Some(kind), ctx.clone())
            .with_limit(30)
    };
    let rec = m.recommend(&ns, &req(&plain)).await.unwrap();
    assert_eq!(
        plan(&rec),
        ["edit_file", "build", "run_tests"],
        "{:#?}",
        rec.playbook
    );
    let build = &rec.playbook[1].why;
    assert!(build.contains("watch out: build failed"), "{build}");
    let lesson = |rec: &Recommendation| {
        rec.pitfalls
            .iter()
            .find(|a| a.item.failed_tool == "build")
            .map_or_else(
                || panic!("no build lesson among {:#?}", rec.pitfalls),
                |a| a.why.clone(),
            )
    };
    let why = lesson(&rec);
    assert!(
        why.contains("struck only with tag=openssl (this task has not)"),
        "{why}"
    );
    let variant = (rec.patterns.iter())
        .find(|a| matches!(&a.item.kind, PatternKind::ToolSequence { tools } if tools.len() == 4))
        .map(|a| a.why.clone())
        .unwrap_or_default();
    assert!(
        variant.contains("another variant of its context: its episodes all had tag=openssl"),
        "{variant}"
    );

    let rec = m.recommend(&ns, &req(&tagged)).await.unwrap();
    assert_eq!(
        plan(&rec),
        ["edit_file", "install_deps", "build", "run_tests"],
        "{:#?}",
        rec.playbook
    );

    // Repaired: the tagged tasks' build works without the preparation now.
    for _ in 0..5 {
        let steps = ["edit_file", "build", "run_tests"].map(ok).to_vec();
        episode_in(&m, &ns, (&tagged, kind), task, steps).await;
        tick().await;
    }
    // The plan is the sequence the tagged tasks now do, and the lesson no longer prepares it.
    let rec = m.recommend(&ns, &req(&tagged)).await.unwrap();
    assert_eq!(
        plan(&rec),
        ["edit_file", "build", "run_tests"],
        "{:#?}",
        rec.playbook
    );
    let why = lesson(&rec);
    assert!(
        why.contains("contradicted by newer evidence: build without install_deps worked"),
        "{why}"
    );
    // It strikes again: the lesson is no longer contradicted.
    episode_in(&m, &ns, (&tagged, kind), task, trapped()).await;
    let rec = m.recommend(&ns, &req(&tagged)).await.unwrap();
    let why = lesson(&rec);
    assert!(!why.contains("contradicted"), "{why}");
}
