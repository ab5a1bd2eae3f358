//! The conformance suite every storage backend must pass.
//!
//! Call [`run_all`] from a backend's tests with a factory that returns a fresh, empty store.
//! Each check panics with a message naming the broken rule.
//!
//! ```no_run
//! use std::sync::Arc;
//! use memory_core::{InMemoryStorage, Storage};
//! # async fn f() {
//! memory_testkit::conformance::run_all(|| async { Arc::new(InMemoryStorage::new()) as Arc<dyn Storage> }).await;
//! # }
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::many_single_char_names,
    clippy::wildcard_imports,
    clippy::missing_panics_doc,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use memory_core::*;

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Storage>>,
{
    episode_lifecycle(make().await.as_ref()).await;
    create_is_idempotent(make().await.as_ref()).await;
    steps_append_as_rows_idempotently(make().await.as_ref()).await;
    completion_writes_its_steps(make().await.as_ref()).await;
    query_filters_order_and_paging(make().await.as_ref()).await;
    lexical_search(make().await.as_ref()).await;
    learning_merges_across_episodes(make().await.as_ref()).await;
    heuristics_contradictions_kept(make().await.as_ref()).await;
    learned_queries_by_context(make().await.as_ref()).await;
    put_learned_roundtrip(make().await.as_ref()).await;
    feedback_updates_effectiveness(make().await.as_ref()).await;
    embeddings(make().await.as_ref()).await;
    index_change_log_and_snapshots(make().await.as_ref()).await;
    stats_count(make().await.as_ref()).await;
    namespace_isolation(make().await.as_ref(), 7).await;
    maintenance_records(make().await.as_ref()).await;
    retention_compacts_only_old_successful_outputs(make().await.as_ref()).await;
}

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn t(secs: i64) -> DateTime<Utc> {
    truncate_to_millis(DateTime::from_timestamp(1_750_000_000 + secs, 123_000_000).unwrap())
}

/// A fresh episode fixture.
pub fn episode(
    task: &str,
    task_type: TaskType,
    domain: &str,
    language: Option<&str>,
    at: DateTime<Utc>,
) -> Episode {
    let mut ctx = TaskContext::new(domain)
        .with_complexity(Complexity::Moderate)
        .with_tag("fixture");
    ctx.language = language.map(str::to_owned);
    Episode::start(NewEpisode::new(task, task_type, ctx), at)
}

/// Steps fixture: `spec` is a list of `(tool, ok)`.
pub fn steps(spec: &[(&str, bool)], first_number: u32, at: DateTime<Utc>) -> Vec<ExecutionStep> {
    spec.iter()
        .enumerate()
        .map(|(i, (tool, ok))| ExecutionStep {
            step_number: first_number + i as u32,
            key: ExecutionStep::new_key(),
            timestamp: at + Duration::milliseconds(i as i64),
            input: if *ok {
                StepInput::ok(*tool, format!("run {tool}"), format!("{tool} output ok"))
                    .with_parameters(serde_json::json!({"path": "src/lib.rs", "n": i}))
                    .with_latency_ms(10 + i as u64)
                    .with_tokens(5)
            } else {
                StepInput::error(
                    *tool,
                    format!("run {tool}"),
                    "error[E0308]: mismatched types at src/lib.rs:10",
                )
                .with_latency_ms(7)
            },
        })
        .collect()
}

/// The completion the facade would build for `episode` (which must hold its steps).
pub fn completion_for(episode: &Episode, outcome: Outcome, at: DateTime<Utc>) -> EpisodeCompletion {
    let reward = compute_reward(
        &episode.steps,
        episode.context.complexity,
        &outcome,
        RewardHistory::default(),
    );
    let reflection = reflect(episode, &outcome, &reward);
    let learning = extract_learning(episode, &outcome, at);
    EpisodeCompletion {
        episode_id: episode.id,
        outcome,
        reward,
        reflection,
        completed_at: at,
        learning,
        steps: Vec::new(),
    }
}

/// Creates, fills and completes an episode; returns it as stored.
pub async fn record(
    s: &dyn Storage,
    n: &Namespace,
    mut e: Episode,
    spec: &[(&str, bool)],
    outcome: Outcome,
) -> (Episode, LearnedChanges) {
    s.create_episode(n, &e).await.unwrap();
    let st = steps(spec, 1, e.started_at);
    s.append_steps(n, e.id, &st).await.unwrap();
    e.steps = st;
    let done_at = e.started_at + Duration::seconds(5);
    let c = completion_for(&e, outcome, done_at);
    let changes = s
        .complete_episode(n, &c)
        .await
        .unwrap()
        .expect("first completion applies");
    let stored = s
        .get_episode(n, e.id)
        .await
        .unwrap()
        .expect("episode stored");
    (stored, changes)
}

/// The outcome most fixtures end with.
fn ok() -> Outcome {
    Outcome::success("ok")
}

/// A `web_api` episode in Rust, started `at` seconds after the fixture epoch.
fn rust_web(task: &str, task_type: TaskType, at: i64) -> Episode {
    episode(task, task_type, "web_api", Some("rust"), t(at))
}

/// The episode as stored; it must exist.
async fn get(s: &dyn Storage, n: &Namespace, id: EpisodeId) -> Episode {
    s.get_episode(n, id).await.unwrap().unwrap()
}

/// Summaries of the episodes passing the filter `set` builds from the default one, at most 100.
async fn matching(
    s: &dyn Storage,
    n: &Namespace,
    set: impl FnOnce(&mut EpisodeFilter),
) -> Vec<EpisodeSummary> {
    let mut filter = EpisodeFilter::default();
    set(&mut filter);
    let query = EpisodeQuery {
        filter,
        limit: 100,
        offset: 0,
    };
    s.query_episodes(n, &query).await.unwrap()
}

/// An unfiltered lexical query.
fn text(text: &str, limit: u32) -> TextQuery {
    TextQuery {
        text: text.into(),
        filter: EpisodeFilter::default(),
        limit,
    }
}

/// The episodes an unfiltered lexical search (at most 10 hits) finds.
async fn found(s: &dyn Storage, n: &Namespace, words: &str) -> BTreeSet<EpisodeId> {
    let hits = s.search_episodes(n, &text(words, 10)).await.unwrap();
    hits.into_iter().map(|h| h.episode_id).collect()
}

/// The default learned-item query changed by `set`.
fn learned(set: impl FnOnce(&mut LearnedQuery)) -> LearnedQuery {
    let mut query = LearnedQuery::default();
    set(&mut query);
    query
}

/// Every learned item of a kind, inactive ones included, at most `limit`.
fn all_learned(limit: u32) -> LearnedQuery {
    learned(|q| {
        q.include_inactive = true;
        q.limit = limit;
    })
}

fn feedback(
    target: FeedbackTarget,
    episode_id: EpisodeId,
    outcome: FeedbackOutcome,
    at: i64,
) -> Feedback {
    Feedback {
        target,
        episode_id,
        outcome,
        recorded_at: t(at),
    }
}

fn restore(target: &FeedbackTarget, at: i64) -> RestoreRecord {
    RestoreRecord {
        target: target.clone(),
        restored_at: t(at),
    }
}

/// Panics unless `result` is `NotFound`.
fn assert_not_found<T: std::fmt::Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::NotFound { .. }) => {}
        other => panic!("{what} must be NotFound, got {other:?}"),
    }
}

pub async fn episode_lifecycle(s: &dyn Storage) {
    let n = ns("conf/lifecycle");
    let e = episode(
        "fix flaky login test",
        TaskType::Testing,
        "testing",
        Some("rust"),
        t(0),
    );
    s.create_episode(&n, &e).await.unwrap();
    let got = s.get_episode(&n, e.id).await.unwrap();
    let got = got.expect("created episode readable");
    assert_eq!(got, e, "episode round-trips exactly");
    assert!(!got.is_completed());

    let spec = [
        ("read_file", true),
        ("shell", false),
        ("edit_file", true),
        ("shell", true),
    ];
    let st = steps(&spec, 1, t(1));
    s.append_steps(&n, e.id, &st).await.unwrap();
    let mut with_steps = e.clone();
    with_steps.steps.clone_from(&st);
    assert_eq!(
        get(s, &n, e.id).await,
        with_steps,
        "steps round-trip in order"
    );

    let c = completion_for(&with_steps, Outcome::success("stable now"), t(10));
    let changes = s.complete_episode(&n, &c).await.unwrap().expect("applied");
    assert!(
        !changes.patterns.is_empty(),
        "completion stores learned patterns"
    );
    let done = get(s, &n, e.id).await;
    assert_eq!(done.outcome.as_ref(), Some(&c.outcome));
    assert_eq!(done.reward.as_ref(), Some(&c.reward));
    assert_eq!(done.reflection.as_ref(), Some(&c.reflection));
    assert_eq!(done.completed_at, Some(t(10)));
    assert_eq!(done.steps, st);

    assert!(
        s.complete_episode(&n, &c).await.unwrap().is_none(),
        "completing twice is a harmless no-op returning None"
    );
    let first = &changes.patterns[0].item;
    let again = s.get_pattern(&n, &first.id).await.unwrap().unwrap();
    assert_eq!(
        again.occurrences, first.occurrences,
        "replayed completion adds no evidence"
    );

    match s
        .append_steps(&n, e.id, &steps(&[("shell", true)], 5, t(11)))
        .await
    {
        Err(Error::Conflict { .. }) => {}
        other => panic!("appending to a completed episode must be Conflict, got {other:?}"),
    }
    let missing = EpisodeId::new();
    assert!(
        s.get_episode(&n, missing).await.unwrap().is_none(),
        "unknown episode is Ok(None)"
    );
    let appended = s.append_steps(&n, missing, &st).await;
    assert_not_found(appended, "appending to an unknown episode");
    let mut ghost = with_steps.clone();
    ghost.id = missing;
    let ghost_done = completion_for(&ghost, Outcome::failure("x"), t(12));
    assert_not_found(
        s.complete_episode(&n, &ghost_done).await,
        "completing an unknown episode",
    );
    s.ping().await.unwrap();
}

pub async fn create_is_idempotent(s: &dyn Storage) {
    let n = ns("conf/create");
    let e = episode("task", TaskType::Other, "general", None, t(0));
    s.create_episode(&n, &e).await.unwrap();
    let mut changed = e.clone();
    changed.task_description = "different".into();
    s.create_episode(&n, &changed).await.unwrap();
    assert_eq!(
        get(s, &n, e.id).await.task_description,
        "task",
        "re-creating an existing id changes nothing"
    );
    assert_eq!(s.namespace_stats(&n).await.unwrap().episodes, 1);
}

pub async fn steps_append_as_rows_idempotently(s: &dyn Storage) {
    let n = ns("conf/steps");
    let numbers = |e: &Episode| e.steps.iter().map(|x| x.step_number).collect::<Vec<u32>>();
    let e = episode(
        "many steps",
        TaskType::Debugging,
        "databases",
        Some("go"),
        t(0),
    );
    s.create_episode(&n, &e).await.unwrap();
    let a = steps(&[("a", true), ("b", true)], 1, t(1));
    let b = steps(&[("c", false), ("d", true)], 3, t(2));
    s.append_steps(&n, e.id, &a).await.unwrap();
    s.append_steps(&n, e.id, &b).await.unwrap();
    s.append_steps(&n, e.id, &a).await.unwrap(); // replay
    s.append_steps(&n, e.id, &[]).await.unwrap();
    let got = get(s, &n, e.id).await;
    assert_eq!(
        numbers(&got),
        vec![1, 2, 3, 4],
        "steps ordered by number, replays skipped"
    );
    assert_eq!(got.steps[2], b[0]);
    assert_eq!(s.namespace_stats(&n).await.unwrap().steps, 4);
    let listed = s
        .query_episodes(&n, &EpisodeQuery::default())
        .await
        .unwrap();
    assert_eq!(listed[0].step_count, 4, "summary counts stored steps");

    // A second writer numbered its steps from an older copy (1 and 2 again): the store
    // numbers them after what it holds, and keeps both writers' steps.
    let other = steps(&[("e", true), ("f", true)], 1, t(3));
    s.append_steps(&n, e.id, &other).await.unwrap();
    s.append_steps(&n, e.id, &other[..1]).await.unwrap(); // a retry of part of it
    let got = get(s, &n, e.id).await;
    assert_eq!(
        numbers(&got),
        vec![1, 2, 3, 4, 5, 6],
        "no step lost, none twice"
    );
    assert_eq!(got.steps[4].key, other[0].key);
    assert_eq!(got.steps[4].input, other[0].input);
    assert_eq!(got.steps[5].key, other[1].key);

    // Steps journaled by an earlier version (no key) keep their numbers; a number already
    // stored is a replay.
    let mut legacy = steps(&[("g", true), ("h", true)], 6, t(4));
    for st in &mut legacy {
        st.key = 0;
    }
    s.append_steps(&n, e.id, &legacy).await.unwrap();
    let got = get(s, &n, e.id).await;
    let tools: Vec<&str> = got.steps.iter().map(ExecutionStep::tool).collect();
    assert_eq!(tools, ["a", "b", "c", "d", "e", "f", "h"]);
    assert_eq!(got.steps[6].step_number, 7);
    assert_eq!(s.namespace_stats(&n).await.unwrap().steps, 7);
}

/// A completion carries the steps logged since the last append: they are stored with it (a
/// key already stored is skipped), and a replay of the completion adds nothing.
pub async fn completion_writes_its_steps(s: &dyn Storage) {
    let n = ns("conf/complete-steps");
    let e = rust_web("one transaction", TaskType::Testing, 0);
    s.create_episode(&n, &e).await.unwrap();
    let first = steps(&[("a", true), ("b", true)], 1, t(1));
    s.append_steps(&n, e.id, &first).await.unwrap();
    let late = steps(&[("c", false), ("d", true)], 3, t(2));
    let mut whole = get(s, &n, e.id).await;
    whole.steps.extend(late.iter().cloned());
    let mut c = completion_for(&whole, Outcome::success("done"), t(3));
    // The first step again (a retry of a batch that did commit) and the late ones.
    c.steps = std::iter::once(first[0].clone())
        .chain(late.iter().cloned())
        .collect();
    assert!(s.complete_episode(&n, &c).await.unwrap().is_some());
    let got = get(s, &n, e.id).await;
    let tools: Vec<&str> = got.steps.iter().map(ExecutionStep::tool).collect();
    assert_eq!(
        tools,
        ["a", "b", "c", "d"],
        "late steps stored once, in order"
    );
    assert!(got.is_completed());
    assert_eq!(s.namespace_stats(&n).await.unwrap().steps, 4);
    let mut replay = c.clone();
    replay.steps = steps(&[("e", true)], 5, t(4));
    assert!(s.complete_episode(&n, &replay).await.unwrap().is_none());
    assert_eq!(
        get(s, &n, e.id).await.steps.len(),
        4,
        "a replay adds no step"
    );
}

pub async fn query_filters_order_and_paging(s: &dyn Storage) {
    let n = ns("conf/query");
    let mut ids = Vec::new();
    for i in 0..12 {
        let (tt, dom, lang) = match i % 3 {
            0 => (TaskType::Debugging, "web_api", Some("rust")),
            1 => (TaskType::Testing, "testing", Some("python")),
            _ => (TaskType::CodeGeneration, "web_api", None),
        };
        let e = episode(&format!("task {i}"), tt, dom, lang, t(i * 60));
        let outcome = if i % 4 == 0 {
            Outcome::failure("broke")
        } else {
            ok()
        };
        if i == 11 {
            s.create_episode(&n, &e).await.unwrap(); // left in progress
        } else {
            record(s, &n, e.clone(), &[("shell", true)], outcome).await;
        }
        ids.push(e.id);
    }
    let all = matching(s, &n, |_| ()).await;
    assert_eq!(all.len(), 12);
    let order: Vec<EpisodeId> = all.iter().map(|x| x.id).collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(order, expected, "newest first");

    let page = EpisodeQuery {
        limit: 5,
        offset: 5,
        ..EpisodeQuery::default()
    };
    let page2 = s.query_episodes(&n, &page).await.unwrap();
    let page2: Vec<EpisodeId> = page2.iter().map(|x| x.id).collect();
    assert_eq!(page2, expected[5..10].to_vec(), "paging");

    let web = matching(s, &n, |f| f.domain = Some("web_api".into())).await;
    assert_eq!(web.len(), 8);
    let rust = matching(s, &n, |f| f.language = Some("rust".into())).await;
    assert_eq!(rust.len(), 4);
    let dbg = matching(s, &n, |f| f.task_type = Some(TaskType::Debugging)).await;
    assert_eq!(dbg.len(), 4);
    let failure = Some(EpisodeStatus::Completed(OutcomeKind::Failure));
    let failed = matching(s, &n, |f| f.status = failure).await;
    assert_eq!(failed.len(), 3, "episodes 0, 4, 8 failed");
    assert!(
        failed
            .iter()
            .all(|x| x.outcome == Some(OutcomeKind::Failure))
    );
    let open = matching(s, &n, |f| f.status = Some(EpisodeStatus::InProgress)).await;
    assert_eq!(open.iter().map(|x| x.id).collect::<Vec<_>>(), vec![ids[11]]);
    let done = matching(s, &n, |f| f.status = Some(EpisodeStatus::AnyCompleted)).await;
    assert_eq!(done.len(), 11);
    let window = matching(s, &n, |f| {
        f.started_after = Some(t(120));
        f.started_before = Some(t(300));
    })
    .await;
    assert_eq!(
        window.len(),
        3,
        "started_after inclusive, started_before exclusive"
    );
    let tagged = matching(s, &n, |f| f.tag = Some("fixture".into())).await;
    assert_eq!(tagged.len(), 12);
    let none = matching(s, &n, |f| f.tag = Some("nope".into())).await;
    assert!(none.is_empty());
    let summary = all.iter().find(|x| x.id == ids[1]).unwrap();
    assert_eq!(summary.outcome, Some(OutcomeKind::Success));
    assert!(summary.reward.is_some());
    assert_eq!(summary.task_description, "task 1");
}

pub async fn lexical_search(s: &dyn Storage) {
    let n = ns("conf/search");
    let (a, _) = record(
        s,
        &n,
        rust_web(
            "add token bucket rate limiting to the axum API",
            TaskType::CodeGeneration,
            0,
        ),
        &[("edit_file", true), ("shell", true)],
        Outcome::success("rate limiter added"),
    )
    .await;
    let (b, _) = record(
        s,
        &n,
        episode(
            "fix postgres deadlock in the billing worker",
            TaskType::Debugging,
            "databases",
            Some("python"),
            t(10),
        ),
        &[("shell", false), ("edit_file", true)],
        Outcome::success("deadlock gone"),
    )
    .await;
    let ids = |hits: &[TextHit]| hits.iter().map(|h| h.episode_id).collect::<Vec<_>>();
    let hits = s
        .search_episodes(&n, &text("rate limiting", 10))
        .await
        .unwrap();
    assert_eq!(
        hits.first().map(|h| h.episode_id),
        Some(a.id),
        "best hit first"
    );
    assert!(hits.iter().all(|h| h.score > 0.0));
    let hits = s.search_episodes(&n, &text("Deadlock", 10)).await.unwrap();
    assert_eq!(ids(&hits), vec![b.id], "case-insensitive");
    let mut python = text("edit_file shell", 10);
    python.filter.language = Some("python".into());
    let filtered = s.search_episodes(&n, &python).await.unwrap();
    assert_eq!(ids(&filtered), vec![b.id], "filters inside search");
    for weird in [
        "",
        "   ",
        "\"",
        "*",
        "NEAR(",
        "a AND OR NOT b",
        "'; DROP TABLE episodes; --",
        "ünïcödé",
    ] {
        s.search_episodes(&n, &text(weird, 5))
            .await
            .unwrap_or_else(|e| panic!("search for {weird:?} must not fail: {e}"));
    }
    let limited = s.search_episodes(&n, &text("edit_file", 1)).await.unwrap();
    assert_eq!(limited.len(), 1, "limit respected");
}

pub async fn learning_merges_across_episodes(s: &dyn Storage) {
    let n = ns("conf/merge");
    let spec = [("read_file", true), ("edit_file", true), ("shell", true)];
    let mut seq_ids = BTreeSet::new();
    for i in 0..3 {
        let task = format!("similar task {i}");
        let e = rust_web(&task, TaskType::CodeGeneration, i * 10);
        let (_, changes) = record(s, &n, e, &spec, ok()).await;
        for c in changes
            .patterns
            .iter()
            .filter(|c| c.item.kind.name() == "tool_sequence")
        {
            seq_ids.insert(c.item.id.clone());
            assert_eq!(c.created, i == 0, "created only by the first episode");
        }
    }
    assert_eq!(
        seq_ids.len(),
        1,
        "one tool-sequence pattern for one sequence in one context"
    );
    let p = s
        .get_pattern(&n, seq_ids.iter().next().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.occurrences, 3);
    assert_eq!(p.successes, 3);
    assert_eq!(p.recent_evidence.len(), 3, "evidence merged");
    assert_eq!(p.total_steps, 9);
    assert_eq!(p.first_seen, t(5));
    assert_eq!(p.last_seen, t(25));
    let q = learned(|q| q.kind = Some("tool_sequence".into()));
    assert_eq!(s.query_patterns(&n, &q).await.unwrap().len(), 1);

    // Lessons with remedies merge too.
    for i in 0..2 {
        let e = rust_web(&format!("compile fix {i}"), TaskType::Debugging, 100 + i);
        let fix = [("shell", false), ("edit_file", true), ("shell", true)];
        record(s, &n, e, &fix, Outcome::success("compiles")).await;
    }
    let lessons = s.query_lessons(&n, &LearnedQuery::default()).await.unwrap();
    assert_eq!(
        lessons.len(),
        1,
        "one lesson for one failing tool + error class in one context"
    );
    assert_eq!(lessons[0].occurrences, 2);
    assert_eq!(lessons[0].recovered, 2);
    assert_eq!(
        lessons[0].best_remedy().map(|r| r.tools.clone()),
        Some(vec!["edit_file".to_owned(), "shell".to_owned()])
    );
    let got = s.get_lesson(&n, &lessons[0].id).await.unwrap().unwrap();
    assert_eq!(got, lessons[0]);

    // apply_learning merges outside a completion.
    let mut full = rust_web("extra", TaskType::CodeGeneration, 200);
    full.steps = steps(&spec, 1, t(200));
    let update = extract_learning(&full, &ok(), t(201));
    s.apply_learning(&n, &update).await.unwrap();
    let p = s.get_pattern(&n, &p.id).await.unwrap().unwrap();
    assert_eq!(p.occurrences, 4);
}

pub async fn heuristics_contradictions_kept(s: &dyn Storage) {
    let n = ns("conf/heuristics");
    let ctx = ContextKey {
        task_type: None,
        domain: Some("web_api".into()),
        language: Some("rust".into()),
    };
    let mk = |action: &str, ok: bool, i: i64| {
        HeuristicObservation::new(
            "cargo build fails with \"linker error\"",
            action,
            ctx.clone(),
            EpisodeId::new(),
            ok,
            t(i),
        )
    };
    let upd = |h: Vec<HeuristicObservation>| LearningUpdate {
        episode_id: EpisodeId::new(),
        observed_at: t(0),
        patterns: Vec::new(),
        heuristics: h,
        lessons: Vec::new(),
    };
    s.apply_learning(&n, &upd(vec![mk("run cargo clean", true, 1)]))
        .await
        .unwrap();
    for i in 0..3 {
        s.apply_learning(&n, &upd(vec![mk("install the lld linker", true, 10 + i)]))
            .await
            .unwrap();
    }
    let all = s.query_heuristics(&n, &all_learned(50)).await.unwrap();
    assert_eq!(all.len(), 2, "both heuristics are kept");
    let active: Vec<&Heuristic> = all.iter().filter(|h| h.status.is_active()).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(
        active[0].action, "install the lld linker",
        "more evidence wins"
    );
    assert_eq!(active[0].support, 3);
    let loser = all.iter().find(|h| !h.status.is_active()).unwrap();
    match &loser.status {
        LearnedStatus::Superseded { by, reason } => {
            assert_eq!(by, &active[0].id.0);
            assert!(!reason.is_empty());
        }
        other => panic!("loser must be superseded with a reason, got {other:?}"),
    }
    let visible = s
        .query_heuristics(&n, &LearnedQuery::default())
        .await
        .unwrap();
    assert_eq!(visible.len(), 1, "inactive hidden by default");
    assert_eq!(
        s.get_heuristic(&n, &loser.id).await.unwrap().as_ref(),
        Some(loser)
    );
}

pub async fn learned_queries_by_context(s: &dyn Storage) {
    let n = &ns("conf/context");
    let a = rust_web("a", TaskType::Debugging, 0);
    record(s, n, a, &[("shell", true)], ok()).await;
    let b = episode("b", TaskType::Testing, "databases", Some("go"), t(1));
    record(s, n, b, &[("psql", true)], ok()).await;
    let q = |tt: Option<TaskType>, d: Option<&str>, l: Option<&str>| LearnedQuery {
        task_type: tt,
        domain: d.map(str::to_owned),
        language: l.map(str::to_owned),
        kind: Some("tool_sequence".into()),
        ..LearnedQuery::default()
    };
    let patterns = |q: LearnedQuery| async move { s.query_patterns(n, &q).await.unwrap() };
    assert_eq!(patterns(q(None, None, None)).await.len(), 2);
    let rust = patterns(q(None, None, Some("rust"))).await;
    assert_eq!(rust.len(), 1);
    assert_eq!(
        rust[0].kind,
        PatternKind::ToolSequence {
            tools: vec!["shell".into()]
        }
    );
    let testing_db = q(Some(TaskType::Testing), Some("databases"), None);
    assert_eq!(patterns(testing_db).await.len(), 1);
    assert!(
        patterns(q(Some(TaskType::Testing), Some("web_api"), None))
            .await
            .is_empty()
    );
    // A pattern with no language matches any language query.
    let ctx = ContextKey {
        task_type: None,
        domain: Some("web_api".into()),
        language: None,
    };
    let grep = PatternKind::ToolSequence {
        tools: vec!["grep".into()],
    };
    let generic = PatternObservation::new(grep, ctx, EpisodeId::new(), true, t(3));
    let update = LearningUpdate {
        episode_id: generic.episode_id,
        observed_at: t(3),
        patterns: vec![generic],
        heuristics: vec![],
        lessons: vec![],
    };
    s.apply_learning(n, &update).await.unwrap();
    let web_rust = patterns(q(None, Some("web_api"), Some("rust"))).await;
    assert_eq!(web_rust.len(), 2, "unset context fields match any value");
    let paged = patterns(learned(|q| {
        q.limit = 1;
        q.offset = 1;
        q.kind = Some("tool_sequence".into());
    }))
    .await;
    assert_eq!(paged.len(), 1);
    let in_rust = learned(|q| q.language = Some("rust".into()));
    assert!(s.query_lessons(n, &in_rust).await.unwrap().is_empty());
    let debugging = learned(|q| q.task_type = Some(TaskType::Debugging));
    assert_eq!(s.query_heuristics(n, &debugging).await.unwrap().len(), 1);
}

pub async fn put_learned_roundtrip(s: &dyn Storage) {
    let n = ns("conf/put");
    let e = rust_web("x", TaskType::Debugging, 0);
    let spec = [("shell", false), ("edit_file", true), ("shell", true)];
    let (_, changes) = record(s, &n, e, &spec, ok()).await;
    let mut p = changes.patterns[0].item.clone();
    p.status = LearnedStatus::Pruned {
        reason: "confidence 0.01 below floor 0.05".into(),
        at: t(99),
    };
    let mut h = changes.heuristics[0].item.clone();
    h.status = LearnedStatus::Merged {
        into: "abc".into(),
        at: t(99),
    };
    let mut l = changes.lessons[0].item.clone();
    l.occurrences = 42;
    let items = LearnedItems {
        patterns: vec![p.clone()],
        heuristics: vec![h.clone()],
        lessons: vec![l.clone()],
    };
    s.put_learned(&n, &items).await.unwrap();
    s.put_learned(&n, &items).await.unwrap();
    assert_eq!(s.get_pattern(&n, &p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(s.get_heuristic(&n, &h.id).await.unwrap(), Some(h));
    assert_eq!(s.get_lesson(&n, &l.id).await.unwrap(), Some(l));
    let active = s
        .query_patterns(&n, &learned(|q| q.limit = 100))
        .await
        .unwrap();
    assert!(
        active.iter().all(|x| x.id != p.id),
        "pruned patterns hidden by default"
    );
    let all = s.query_patterns(&n, &all_learned(100)).await.unwrap();
    assert!(all.iter().any(|x| x.id == p.id));
}

pub async fn feedback_updates_effectiveness(s: &dyn Storage) {
    let n = ns("conf/feedback");
    let shell = [("shell", true)];
    let (e, changes) = record(s, &n, rust_web("x", TaskType::Debugging, 0), &shell, ok()).await;
    let (e2, _) = record(s, &n, rust_web("y", TaskType::Debugging, 5), &shell, ok()).await;
    let pid = changes.patterns[0].item.id.clone();
    let target = FeedbackTarget::Pattern(pid.clone());
    for (ep, outcome, at) in [
        (e.id, FeedbackOutcome::Hindered, 10),
        (e.id, FeedbackOutcome::Helped, 11), // replaces
        (e2.id, FeedbackOutcome::NoEffect, 12),
    ] {
        let fb = feedback(target.clone(), ep, outcome, at);
        s.record_feedback(&n, &fb).await.unwrap();
    }
    let p = s.get_pattern(&n, &pid).await.unwrap().unwrap();
    assert_eq!(
        p.effectiveness,
        Effectiveness {
            helped: 1,
            no_effect: 1,
            hindered: 0,
            hindered_streak: 0,
        }
    );
    let events = s.list_feedback(&n, &target).await.unwrap();
    assert_eq!(events.len(), 2, "one event per (target, episode)");
    assert_eq!(events[0].recorded_at, t(11), "oldest first");
    assert_eq!(events[1].outcome, FeedbackOutcome::NoEffect);

    // Hindered events after the latest helped one make a streak; a later helped one ends it.
    let (e3, _) = record(s, &n, rust_web("z", TaskType::Debugging, 6), &shell, ok()).await;
    let mut streaks = Vec::new();
    for (ep, outcome, at) in [
        (e2.id, FeedbackOutcome::Hindered, 13), // replaces the no-effect event
        (e3.id, FeedbackOutcome::Hindered, 14),
        (e.id, FeedbackOutcome::Hindered, 15), // replaces the only helped event
        (e2.id, FeedbackOutcome::Helped, 16),
    ] {
        let fb = feedback(target.clone(), ep, outcome, at);
        s.record_feedback(&n, &fb).await.unwrap();
        let p = s.get_pattern(&n, &pid).await.unwrap().unwrap();
        streaks.push((p.effectiveness.hindered, p.effectiveness.hindered_streak));
    }
    assert_eq!(streaks, [(1, 1), (2, 2), (3, 3), (2, 0)]);
    // Hindered again, then seen in a new episode: the streak ends there.
    let fb = feedback(target.clone(), e3.id, FeedbackOutcome::Hindered, 17);
    s.record_feedback(&n, &fb).await.unwrap();
    let streak = |p: Pattern| (p.effectiveness.hindered, p.effectiveness.hindered_streak);
    let p = s.get_pattern(&n, &pid).await.unwrap().unwrap();
    assert_eq!(streak(p), (2, 1));
    record(s, &n, rust_web("w", TaskType::Debugging, 18), &shell, ok()).await;
    let p = s.get_pattern(&n, &pid).await.unwrap().unwrap();
    assert_eq!(streak(p), (2, 0));

    let hid = changes.heuristics[0].item.id.clone();
    let ht = FeedbackTarget::Heuristic(hid.clone());
    let helped = feedback(ht.clone(), e.id, FeedbackOutcome::Helped, 20);
    s.record_feedback(&n, &helped).await.unwrap();
    let hindered = feedback(ht, e2.id, FeedbackOutcome::Hindered, 21);
    s.record_feedback(&n, &hindered).await.unwrap();
    let h = s.get_heuristic(&n, &hid).await.unwrap().unwrap();
    assert_eq!((h.votes_up, h.votes_down), (1, 1));

    let missing = FeedbackTarget::Pattern(PatternId("0".repeat(32)));
    let fb = feedback(missing, e.id, FeedbackOutcome::Helped, 30);
    assert_not_found(
        s.record_feedback(&n, &fb).await,
        "feedback on an unknown pattern",
    );
}

/// The ids of episodes without an embedding of model `m`, after `after`, at most `limit`.
async fn unembedded(
    s: &dyn Storage,
    n: &Namespace,
    after: Option<EpisodeId>,
    limit: u32,
) -> Vec<EpisodeId> {
    s.episodes_missing_embedding(n, "m", after, limit)
        .await
        .unwrap()
}

pub async fn embeddings(s: &dyn Storage) {
    let n = ns("conf/embeddings");
    let a = episode("a", TaskType::Other, "general", None, t(0));
    let b = episode("b", TaskType::Other, "general", None, t(1));
    s.create_episode(&n, &a).await.unwrap();
    s.create_episode(&n, &b).await.unwrap();
    assert_eq!(
        unembedded(s, &n, None, 10).await,
        vec![a.id, b.id],
        "oldest first"
    );
    let coverage = |episodes, embedded| EmbeddingCoverage {
        episodes,
        embedded,
        last_episode: Some(b.id),
    };
    assert_eq!(s.embedding_coverage(&n, "m").await.unwrap(), coverage(2, 0));
    let v: Vec<f32> = (0..384).map(|i| (i as f32 * 0.37).sin()).collect();
    s.put_embedding(&n, a.id, "m", &v).await.unwrap();
    assert_eq!(s.embedding_coverage(&n, "m").await.unwrap(), coverage(2, 1));
    assert!(!s.embedding_coverage(&n, "m").await.unwrap().complete());
    assert_eq!(
        s.get_embedding(&n, a.id, "m").await.unwrap(),
        Some(v.clone()),
        "vector round-trips exactly"
    );
    assert!(s.get_embedding(&n, a.id, "other").await.unwrap().is_none());
    assert_eq!(unembedded(s, &n, None, 10).await, vec![b.id]);
    // The cursor: only ids after it.
    assert_eq!(unembedded(s, &n, Some(a.id), 10).await, vec![b.id]);
    assert!(unembedded(s, &n, Some(b.id), 10).await.is_empty());
    assert_eq!(unembedded(s, &n, None, 0).await, Vec::<EpisodeId>::new());
    let w: Vec<f32> = v.iter().map(|x| -x).collect();
    s.put_embedding(&n, a.id, "m", &w).await.unwrap();
    assert_eq!(
        s.get_embedding(&n, a.id, "m").await.unwrap(),
        Some(w),
        "put replaces"
    );
    assert_eq!(
        s.embedding_coverage(&n, "m").await.unwrap(),
        coverage(2, 1),
        "a replaced embedding counts once"
    );
    s.put_embedding(&n, b.id, "m", &v).await.unwrap();
    assert!(s.embedding_coverage(&n, "m").await.unwrap().complete());
    assert_eq!(
        s.embedding_coverage(&n, "other").await.unwrap(),
        coverage(2, 0),
        "per model"
    );
    let empty = ns("conf/embeddings-empty");
    assert_eq!(
        s.embedding_coverage(&empty, "m").await.unwrap(),
        EmbeddingCoverage::default()
    );
    assert_not_found(
        s.put_embedding(&n, EpisodeId::new(), "m", &v).await,
        "embedding for an unknown episode",
    );
}

/// The index change log names every episode whose embedding or (embedded) summary changed,
/// pages in order, reports removals per model; snapshots round-trip per model and are
/// size-checked at the API boundary.
pub async fn index_change_log_and_snapshots(s: &dyn Storage) {
    let n = ns("conf/index-log");
    let other = ns("conf/index-log-other");
    assert_eq!(s.index_log_head(&n).await.unwrap(), 0, "empty log");
    let empty = s.index_changes(&n, "m", 0, 10).await.unwrap();
    assert_eq!(
        empty,
        IndexChanges::default(),
        "nothing changed: through stays at after"
    );

    let a = episode("a", TaskType::Other, "general", None, t(0));
    let b = episode("b", TaskType::Other, "general", None, t(1));
    s.create_episode(&n, &a).await.unwrap();
    s.create_episode(&n, &b).await.unwrap();
    s.create_episode(&other, &a).await.unwrap();
    assert_eq!(
        s.index_log_head(&n).await.unwrap(),
        0,
        "an episode without an embedding is not in the log"
    );
    let v: Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
    s.put_embedding(&n, a.id, "m", &v).await.unwrap();
    let after_a = s.index_log_head(&n).await.unwrap();
    assert!(after_a > 0, "an embedding write is logged");
    s.put_embedding(&n, b.id, "other-model", &v).await.unwrap();
    s.put_embedding(&other, a.id, "m", &v).await.unwrap();

    let all = s.index_changes(&n, "m", 0, 100).await.unwrap();
    assert_eq!(all.through, s.index_log_head(&n).await.unwrap());
    assert!(!all.more);
    assert_eq!(all.upserts.len(), 1, "{all:?}");
    assert_eq!(all.upserts[0].summary.id, a.id);
    assert_eq!(all.upserts[0].vector, v);
    assert_eq!(all.upserts[0].summary, a.summary());
    assert_eq!(
        all.removed,
        vec![b.id],
        "b changed but has no vector for this model"
    );

    // Paging: one entry per page, in log order.
    let first = s.index_changes(&n, "m", 0, 1).await.unwrap();
    assert_eq!(first.through, after_a);
    assert!(first.more);
    assert_eq!(first.upserts.len(), 1);
    let rest = s.index_changes(&n, "m", first.through, 10).await.unwrap();
    assert!(!rest.more);
    assert_eq!(rest.removed, vec![b.id]);
    assert!(rest.upserts.is_empty());

    // Completing an embedded episode is logged with its new summary.
    let head = s.index_log_head(&n).await.unwrap();
    let mut stored = s.get_episode(&n, a.id).await.unwrap().unwrap();
    let st = steps(&[("cargo", true)], 1, stored.started_at);
    s.append_steps(&n, a.id, &st).await.unwrap();
    stored.steps = st;
    let c = completion_for(&stored, Outcome::success("done"), t(10));
    s.complete_episode(&n, &c).await.unwrap();
    let after_completion = s.index_changes(&n, "m", head, 100).await.unwrap();
    assert!(after_completion.through > head);
    assert_eq!(after_completion.upserts.len(), 1);
    let summary = &after_completion.upserts[0].summary;
    assert!(summary.completed_at.is_some(), "{summary:?}");
    assert_eq!(summary.step_count, 1);
    assert_eq!(
        s.index_changes(&n, "m", after_completion.through, 100)
            .await
            .unwrap(),
        IndexChanges {
            through: after_completion.through,
            ..IndexChanges::default()
        },
        "caught up"
    );

    // Snapshots: absent, stored, replaced, per model and namespace.
    assert_eq!(s.get_index_snapshot(&n, "m").await.unwrap(), None);
    let snap = IndexSnapshot::new(after_a, vec![1, 2, 3, 0, 255]);
    s.put_index_snapshot(&n, "m", &snap).await.unwrap();
    assert_eq!(
        s.get_index_snapshot(&n, "m").await.unwrap(),
        Some(snap.clone())
    );
    assert_eq!(s.get_index_snapshot(&n, "other-model").await.unwrap(), None);
    assert_eq!(s.get_index_snapshot(&other, "m").await.unwrap(), None);
    let newer = IndexSnapshot {
        as_of: after_a + 5,
        parts: vec![vec![9; 600], vec![8; 400]],
    };
    s.put_index_snapshot(&n, "m", &newer).await.unwrap();
    assert_eq!(s.get_index_snapshot(&n, "m").await.unwrap(), Some(newer));
    // Large images (stored in parts by some backends) and empty ones round-trip exactly.
    let large = IndexSnapshot::new(
        7,
        (0..9 * 1024 * 1024 + 3).map(|i| (i % 251) as u8).collect(),
    );
    s.put_index_snapshot(&n, "m", &large).await.unwrap();
    assert!(s.get_index_snapshot(&n, "m").await.unwrap() == Some(large));
    let empty = IndexSnapshot::new(8, Vec::new());
    s.put_index_snapshot(&n, "m", &empty).await.unwrap();
    assert_eq!(s.get_index_snapshot(&n, "m").await.unwrap(), Some(empty));
}

pub async fn stats_count(s: &dyn Storage) {
    let n = ns("conf/stats");
    assert_eq!(
        s.namespace_stats(&n).await.unwrap(),
        NamespaceStats::default()
    );
    let a = rust_web("a", TaskType::Debugging, 0);
    record(s, &n, a, &[("shell", false), ("edit_file", true)], ok()).await;
    let b = rust_web("b", TaskType::Debugging, 1);
    record(s, &n, b, &[("shell", false)], Outcome::failure("no")).await;
    let c = rust_web("c", TaskType::Debugging, 2);
    s.create_episode(&n, &c).await.unwrap();
    let st = s.namespace_stats(&n).await.unwrap();
    assert_eq!(
        (st.episodes, st.completed, st.successes, st.steps),
        (3, 2, 1, 3)
    );
    let patterns = s.query_patterns(&n, &all_learned(1000)).await.unwrap();
    assert_eq!(st.patterns, patterns.len() as u64);
    assert_eq!(
        st.active_patterns,
        patterns.iter().filter(|p| p.status.is_active()).count() as u64
    );
    let heur = s.query_heuristics(&n, &all_learned(1000)).await.unwrap();
    assert_eq!(st.heuristics, heur.len() as u64);
    assert_eq!(
        st.active_heuristics,
        heur.iter().filter(|h| h.status.is_active()).count() as u64
    );
    let lessons = s.query_lessons(&n, &all_learned(1000)).await.unwrap();
    assert_eq!(st.lessons, lessons.len() as u64);
    assert!(s.list_namespaces().await.unwrap().contains(&n));
}

/// Random operations in two namespaces; nothing of one is ever visible in or changed by the
/// other.
pub async fn namespace_isolation(s: &dyn Storage, seed: u64) {
    let a = ns("iso/a");
    let b = ns("iso/b");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut owned: BTreeMap<EpisodeId, Namespace> = BTreeMap::new();
    let tools = ["shell", "edit_file", "read_file", "grep"];
    for i in 0..40 {
        let n = if rng.random::<bool>() { &a } else { &b };
        let mut spec = Vec::new();
        for _ in 0..rng.random_range(1..5) {
            spec.push((
                tools[rng.random_range(0..tools.len())],
                rng.random::<f64>() > 0.3,
            ));
        }
        let outcome = if rng.random::<bool>() {
            ok()
        } else {
            Outcome::failure("no")
        };
        // Same description and context in both namespaces: the best match always exists in both.
        let e = rust_web("shared words for isolation check", TaskType::Debugging, i);
        owned.insert(e.id, n.clone());
        record(s, n, e, &spec, outcome).await;
    }
    for (n, other) in [(&a, &b), (&b, &a)] {
        let mine: BTreeSet<EpisodeId> = owned
            .iter()
            .filter(|(_, o)| *o == n)
            .map(|(id, _)| *id)
            .collect();
        assert_isolated(s, n, other, &owned, &mine).await;
    }
    // Changing one namespace leaves the other's counts untouched.
    let before = s.namespace_stats(&b).await.unwrap();
    let late = rust_web("late", TaskType::Debugging, 1000);
    record(s, &a, late, &[("shell", true)], ok()).await;
    assert_eq!(s.namespace_stats(&b).await.unwrap(), before);
}

/// What `n` sees holds exactly `mine` and nothing of `other`.
async fn assert_isolated(
    s: &dyn Storage,
    n: &Namespace,
    other: &Namespace,
    owned: &BTreeMap<EpisodeId, Namespace>,
    mine: &BTreeSet<EpisodeId>,
) {
    let everything = EpisodeQuery {
        limit: 1000,
        ..Default::default()
    };
    let listed = s.query_episodes(n, &everything).await.unwrap();
    assert_eq!(
        &listed.iter().map(|x| x.id).collect::<BTreeSet<_>>(),
        mine,
        "list sees exactly its own episodes"
    );
    let hits = s
        .search_episodes(n, &text("shared isolation shell", 1000))
        .await
        .unwrap();
    assert!(
        hits.iter().all(|h| mine.contains(&h.episode_id)),
        "search never crosses namespaces"
    );
    let st = s.namespace_stats(n).await.unwrap();
    assert_eq!(st.episodes, mine.len() as u64, "counts are per namespace");
    for (id, o) in owned {
        if o == other {
            assert!(
                s.get_episode(n, *id).await.unwrap().is_none(),
                "get never crosses namespaces"
            );
            assert!(
                matches!(
                    s.append_steps(n, *id, &steps(&[("x", true)], 99, t(0)))
                        .await,
                    Err(Error::NotFound { .. })
                ),
                "append never crosses namespaces"
            );
        }
    }
    let theirs = s.query_patterns(other, &all_learned(1000)).await.unwrap();
    let mine_p = s.query_patterns(n, &all_learned(1000)).await.unwrap();
    for p in &theirs {
        // Same ids can exist in both (deterministic); their evidence must be separate.
        if let Some(m) = mine_p.iter().find(|m| m.id == p.id) {
            assert!(
                m.recent_evidence
                    .iter()
                    .all(|ev| mine.contains(&ev.episode_id)),
                "pattern evidence never crosses namespaces"
            );
        } else {
            assert!(s.get_pattern(n, &p.id).await.unwrap().is_none());
            let target = FeedbackTarget::Pattern(p.id.clone());
            let episode_id = *mine.iter().next().unwrap();
            let fb = feedback(target, episode_id, FeedbackOutcome::Helped, 0);
            assert!(
                matches!(s.record_feedback(n, &fb).await, Err(Error::NotFound { .. })),
                "feedback cannot reach another namespace's pattern"
            );
        }
    }
}

/// Consolidation runs, metrics snapshots, estimate records and restores: stored per
/// namespace, listed newest first, idempotent on their keys.
pub async fn maintenance_records(s: &dyn Storage) {
    let a = ns("maint/a");
    let b = ns("maint/b");
    consolidation_runs(s, &a, &b).await;
    metrics_snapshots(s, &a, &b).await;
    estimate_records(s, &a, &b).await;
    restore_records(s, &a, &b).await;
}

async fn consolidation_runs(s: &dyn Storage, a: &Namespace, b: &Namespace) {
    for i in 0..3 {
        let run = ConsolidationRun {
            id: format!("run-{i}"),
            trigger: "manual".into(),
            started_at: t(i * 10),
            finished_at: t(i * 10 + 1),
            merged_patterns: i as u64,
            ..ConsolidationRun::default()
        };
        s.record_consolidation(a, &run).await.unwrap();
        s.record_consolidation(a, &run).await.unwrap(); // replay
    }
    let runs = s.list_consolidations(a, 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["run-2", "run-1", "run-0"],
        "runs newest first, one row per id"
    );
    assert_eq!(runs[0].merged_patterns, 2, "run counts round-trip");
    assert_eq!(runs[0].finished_at, t(21));
    assert_eq!(s.list_consolidations(a, 2).await.unwrap().len(), 2, "limit");
    assert!(
        s.list_consolidations(b, 10).await.unwrap().is_empty(),
        "runs are per namespace"
    );

    // Claims: a run is claimed only when none started after `not_before`.
    let claim = |id: &str, at: i64| ConsolidationRun {
        id: id.into(),
        trigger: "scheduled".into(),
        started_at: t(at),
        finished_at: t(at),
        ..ConsolidationRun::default()
    };
    assert!(
        !s.claim_consolidation(a, &claim("late", 30), t(19))
            .await
            .unwrap(),
        "run-2 started at 20, after 19: not claimed"
    );
    assert!(
        s.claim_consolidation(a, &claim("mine", 30), t(20))
            .await
            .unwrap(),
        "nothing started after 20 (at 20 is not after): claimed"
    );
    assert!(
        !s.claim_consolidation(a, &claim("theirs", 31), t(20))
            .await
            .unwrap(),
        "a second claimant over the same window loses"
    );
    assert!(
        s.claim_consolidation(b, &claim("b", 31), t(20))
            .await
            .unwrap(),
        "per namespace"
    );
    let ids: Vec<String> = s
        .list_consolidations(a, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        ["mine", "run-2", "run-1", "run-0"],
        "the loser left no row"
    );
}

async fn metrics_snapshots(s: &dyn Storage, a: &Namespace, b: &Namespace) {
    for i in 0..3 {
        let snap = MetricsSnapshot {
            taken_at: t(i),
            episodes: i as u64,
            success_rate: Some(0.5),
            estimate_error: None,
            ..MetricsSnapshot::default()
        };
        s.put_metrics_snapshot(a, &snap).await.unwrap();
    }
    let snaps = s.list_metrics_snapshots(a, 2).await.unwrap();
    assert_eq!(snaps.iter().map(|x| x.episodes).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(snaps[0].success_rate, Some(0.5));
    assert!(s.list_metrics_snapshots(b, 5).await.unwrap().is_empty());
}

/// Estimates: only for episodes of the namespace; listed once they have actuals.
async fn estimate_records(s: &dyn Storage, a: &Namespace, b: &Namespace) {
    let e1 = episode("estimate one", TaskType::Testing, "web_api", None, t(0));
    let e2 = episode("estimate two", TaskType::Testing, "cli", None, t(1));
    s.create_episode(a, &e1).await.unwrap();
    s.create_episode(a, &e2).await.unwrap();
    let est = Estimate {
        expected_steps: Some(3.0),
        expected_duration_ms: Some(1000.0),
        success_chance: Some(0.75),
        sample_size: 2,
        why: "fixture".into(),
        correction: None,
    };
    let mut r1 = EstimateRecord {
        episode_id: e1.id,
        domain: "web_api".into(),
        recorded_at: t(2),
        estimate: est.clone(),
        actual: None,
    };
    let missing = s.put_estimate(b, &r1).await.unwrap_err();
    assert!(
        matches!(missing, Error::NotFound { .. }),
        "estimate for an episode of another namespace: {missing:?}"
    );
    s.put_estimate(a, &r1).await.unwrap();
    assert_eq!(s.get_estimate(a, e1.id).await.unwrap().as_ref(), Some(&r1));
    assert!(s.get_estimate(b, e1.id).await.unwrap().is_none());
    assert!(
        s.query_estimates(a, None, 10).await.unwrap().is_empty(),
        "no actuals yet"
    );
    r1.actual = Some(EstimateActual {
        steps: 6,
        duration_ms: 2000.0,
        success: true,
        completed_at: t(5),
    });
    s.put_estimate(a, &r1).await.unwrap();
    s.put_estimate(a, &r1).await.unwrap(); // replay
    let r2 = EstimateRecord {
        episode_id: e2.id,
        domain: "cli".into(),
        recorded_at: t(3),
        estimate: est,
        actual: Some(EstimateActual {
            steps: 2,
            duration_ms: 10.0,
            success: false,
            completed_at: t(9),
        }),
    };
    s.put_estimate(a, &r2).await.unwrap();
    let all = s.query_estimates(a, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.episode_id).collect::<Vec<_>>(),
        [e2.id, e1.id],
        "most recently completed first"
    );
    assert_eq!(
        s.query_estimates(a, Some("web_api"), 10).await.unwrap(),
        vec![r1.clone()]
    );
    assert_eq!(
        s.query_estimates(a, None, 1).await.unwrap().len(),
        1,
        "limit"
    );
    assert!(s.query_estimates(b, None, 10).await.unwrap().is_empty());
}

/// Restores: the latest per item, filtered by time.
async fn restore_records(s: &dyn Storage, a: &Namespace, b: &Namespace) {
    let target = FeedbackTarget::Pattern(PatternId("p1".into()));
    let h = FeedbackTarget::Heuristic(HeuristicId("h1".into()));
    for (item, at) in [(&target, 1), (&target, 50), (&h, 20)] {
        s.record_restore(a, &restore(item, at)).await.unwrap();
    }
    let mut since = s.list_restores(a, t(10)).await.unwrap();
    since.sort_by_key(|r| r.restored_at);
    assert_eq!(since, vec![restore(&h, 20), restore(&target, 50)]);
    assert_eq!(s.list_restores(a, t(51)).await.unwrap(), vec![]);
    assert!(s.list_restores(b, t(0)).await.unwrap().is_empty());
}

/// Retention empties the outputs of the successful steps of old successful episodes, and
/// nothing else: errors, failed episodes, recent episodes, rewards, reflections and learned
/// items stay; a second pass finds nothing; lexical search no longer finds the removed text.
pub async fn retention_compacts_only_old_successful_outputs(s: &dyn Storage) {
    let n = ns("retention/a");
    let other = ns("retention/b");
    let [old_ok, old_failed, recent_ok, elsewhere] = retention_fixture(s, &n, &other).await;
    let patterns_before = s.query_patterns(&n, &all_learned(50)).await.unwrap();
    let lessons_before = s.query_lessons(&n, &all_learned(50)).await.unwrap();
    assert!(found(s, &n, "zebrafish output").await.contains(&old_ok.id));

    let done = s.compact_step_outputs(&n, t(5_000), 10).await.unwrap();
    assert_eq!(
        done.episode_ids,
        vec![old_ok.id],
        "only the old successful episode"
    );
    assert_eq!(done.steps, 2, "its two successful steps");
    let expected_bytes: usize = old_ok
        .steps
        .iter()
        .filter(|st| st.input.result.is_success())
        .map(|st| st.input.result.text().len())
        .sum();
    assert_eq!(done.bytes, expected_bytes as u64);

    let after = get(s, &n, old_ok.id).await;
    assert_eq!(after.steps.len(), old_ok.steps.len(), "steps are kept");
    for (a, b) in after.steps.iter().zip(&old_ok.steps) {
        assert_eq!(
            (&a.input.tool, &a.input.action, &a.input.parameters),
            (&b.input.tool, &b.input.action, &b.input.parameters)
        );
        if b.input.result.is_success() {
            assert_eq!(a.input.result.text(), "", "successful output emptied");
        } else {
            assert_eq!(a.input.result, b.input.result, "errors are kept");
        }
    }
    assert_eq!(
        (&after.outcome, &after.reward, &after.reflection),
        (&old_ok.outcome, &old_ok.reward, &old_ok.reflection)
    );
    assert_eq!(
        get(s, &n, old_failed.id).await,
        old_failed,
        "failed episodes untouched"
    );
    assert_eq!(
        get(s, &n, recent_ok.id).await,
        recent_ok,
        "recent episodes untouched"
    );
    assert_eq!(
        get(s, &other, elsewhere.id).await,
        elsewhere,
        "other namespaces untouched"
    );
    assert_eq!(
        s.query_patterns(&n, &all_learned(50)).await.unwrap(),
        patterns_before
    );
    assert_eq!(
        s.query_lessons(&n, &all_learned(50)).await.unwrap(),
        lessons_before
    );
    let found_ok = found(s, &n, "zebrafish output ok").await;
    assert!(found_ok.contains(&old_failed.id) && found_ok.contains(&recent_ok.id));
    let action_hits = found(s, &n, "run zebrafish").await;
    assert!(
        action_hits.contains(&old_ok.id),
        "the actions stay searchable"
    );
    let output_hits = found(s, &n, "output").await;
    assert!(
        !output_hits.contains(&old_ok.id) && output_hits.contains(&recent_ok.id),
        "removed output text is no longer indexed: {output_hits:?}"
    );

    let again = s.compact_step_outputs(&n, t(5_000), 10).await.unwrap();
    assert_eq!(
        again,
        StepCompaction::default(),
        "a second pass finds nothing"
    );
}

/// An old success, an old failure and a recent success in `n`, an old success in `other`.
async fn retention_fixture(s: &dyn Storage, n: &Namespace, other: &Namespace) -> [Episode; 4] {
    let ep = |task: &str, at| episode(task, TaskType::Testing, "web_api", None, t(at));
    let done = || Outcome::success("done");
    let mixed = [("zebrafish", true), ("cargo", false), ("cargo", true)];
    let (old_ok, _) = record(s, n, ep("old success", 0), &mixed, done()).await;
    let failing = [("zebrafish", true), ("cargo", false)];
    let failure = Outcome::failure("broke");
    let (old_failed, _) = record(s, n, ep("old failure", 10), &failing, failure).await;
    let zebrafish = [("zebrafish", true)];
    let (recent_ok, _) = record(s, n, ep("recent success", 10_000), &zebrafish, done()).await;
    let elsewhere = ep("old success elsewhere", 0);
    let (elsewhere, _) = record(s, other, elsewhere, &zebrafish, done()).await;
    [old_ok, old_failed, recent_ok, elsewhere]
}
