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
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use memory_core::*;

mod forget;
pub use forget::{
    forgetting_an_episode_is_as_if_never_recorded,
    forgetting_refuses_an_episode_changed_since_it_was_read,
    purging_a_namespace_removes_all_but_its_audit_records,
};

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
    completion_checks_the_expected_step_count(make().await.as_ref()).await;
    query_filters_order_and_paging(make().await.as_ref()).await;
    lexical_search(make().await.as_ref()).await;
    steps_are_searchable_once_completed(make().await.as_ref()).await;
    learning_merges_across_episodes(make().await.as_ref()).await;
    heuristics_contradictions_kept(make().await.as_ref()).await;
    learned_queries_by_context(make().await.as_ref()).await;
    learned_context_pages_small_and_large(make().await.as_ref()).await;
    put_learned_roundtrip(make().await.as_ref()).await;
    batched_reads_match_single_reads(make().await.as_ref()).await;
    guarded_put_writes_only_groups_stored_as_read(make().await.as_ref()).await;
    feedback_updates_effectiveness(make().await.as_ref()).await;
    embeddings(make().await.as_ref()).await;
    index_change_log_and_snapshots(make().await.as_ref()).await;
    stats_count(make().await.as_ref()).await;
    namespace_isolation(make().await.as_ref(), 7).await;
    maintenance_records(make().await.as_ref()).await;
    retention_compacts_only_old_successful_outputs(make().await.as_ref()).await;
    merged_patterns_without_evidence_compact(make().await.as_ref()).await;
    pruned_patterns_not_seen_since_compact(make().await.as_ref()).await;
    forgetting_an_episode_is_as_if_never_recorded(make().await.as_ref()).await;
    forgetting_refuses_an_episode_changed_since_it_was_read(make().await.as_ref()).await;
    purging_a_namespace_removes_all_but_its_audit_records(make().await.as_ref()).await;
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
    let actual = EstimateActual {
        steps: episode.steps.len() as u32,
        duration_ms: (at - episode.started_at).num_milliseconds().max(0) as f64,
        success: outcome.is_success(),
        completed_at: at,
    };
    EpisodeCompletion {
        episode_id: episode.id,
        outcome,
        reward,
        reflection,
        completed_at: at,
        learning,
        steps: Vec::new(),
        estimate_actual: Some(actual),
        expected_steps: None,
        indexed_work: memory_core::indexed_work_text(&episode.steps),
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
    e.steps = steps(spec, 1, e.started_at);
    s.append_steps(n, e.id, &e.steps).await.unwrap();
    let c = completion_for(&e, outcome, e.started_at + Duration::seconds(5));
    let changes = s.complete_episode(n, &c).await.unwrap();
    let changes = changes.expect("first completion applies");
    (get(s, n, e.id).await, changes)
}

/// The outcome most fixtures end with.
fn ok() -> Outcome {
    Outcome::success("ok")
}

/// A `web_api` episode in Rust, started `at` seconds after the fixture epoch.
fn rust_web(task: &str, task_type: TaskType, at: i64) -> Episode {
    episode(task, task_type, "web_api", Some("rust"), t(at))
}

/// A `general` episode of no particular type or language.
fn general(task: &str, at: i64) -> Episode {
    episode(task, TaskType::Other, "general", None, t(at))
}

/// Creates every episode in `n`.
async fn create(s: &dyn Storage, n: &Namespace, episodes: &[&Episode]) {
    for e in episodes {
        s.create_episode(n, e).await.unwrap();
    }
}

/// The episode as stored; it must exist.
async fn get(s: &dyn Storage, n: &Namespace, id: EpisodeId) -> Episode {
    let stored = s.get_episode(n, id).await.unwrap();
    Arc::unwrap_or_clone(stored.expect("stored episode readable"))
}

/// The pattern as stored; it must exist.
async fn pattern(s: &dyn Storage, n: &Namespace, id: &PatternId) -> Pattern {
    s.get_pattern(n, id).await.unwrap().unwrap()
}

/// The namespace's counts.
async fn stats(s: &dyn Storage, n: &Namespace) -> NamespaceStats {
    s.namespace_stats(n).await.unwrap()
}

/// The tools of the episode's steps, in order.
fn tools(e: &Episode) -> Vec<&str> {
    e.steps.iter().map(ExecutionStep::tool).collect()
}

/// The ids of listed episodes, in order.
fn ids_of(summaries: &[EpisodeSummary]) -> Vec<EpisodeId> {
    summaries.iter().map(|x| x.id).collect()
}

/// Sets fields of an episode filter.
type FilterEdit = fn(&mut EpisodeFilter);

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

/// The hits of a lexical query.
async fn search(s: &dyn Storage, n: &Namespace, query: &TextQuery) -> Vec<TextHit> {
    s.search_episodes(n, query).await.unwrap()
}

/// The episodes an unfiltered lexical search (at most 10 hits) finds.
async fn found(s: &dyn Storage, n: &Namespace, words: &str) -> BTreeSet<EpisodeId> {
    let hits = search(s, n, &text(words, 10)).await;
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

/// The context of learned items about `web_api` work in `language` (any when `None`).
fn web_api(language: Option<&str>) -> ContextKey {
    ContextKey {
        task_type: None,
        domain: Some("web_api".into()),
        language: language.map(str::to_owned),
    }
}

/// The kind of a tool-sequence pattern over `tools`.
fn sequence(tools: &[&str]) -> PatternKind {
    let tools = tools.iter().map(|&x| x.to_owned()).collect();
    PatternKind::ToolSequence { tools }
}

/// Feedback on `target` from episode `ep`, recorded `at` seconds after the fixture epoch.
fn feedback(target: &FeedbackTarget, ep: EpisodeId, outcome: FeedbackOutcome, at: i64) -> Feedback {
    Feedback {
        target: target.clone(),
        episode_id: ep,
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
fn assert_not_found<T: Debug>(result: &Result<T>, what: &str) {
    let not_found = matches!(result, Err(Error::NotFound { .. }));
    assert!(not_found, "{what} must be NotFound, got {result:?}");
}

pub async fn episode_lifecycle(s: &dyn Storage) {
    let n = ns("conf/lifecycle");
    let task = "fix flaky login test";
    let e = episode(task, TaskType::Testing, "testing", Some("rust"), t(0));
    s.create_episode(&n, &e).await.unwrap();
    let got = get(s, &n, e.id).await;
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
    let mut full = e.clone();
    full.steps.clone_from(&st);
    assert_eq!(get(s, &n, e.id).await, full, "steps round-trip in order");

    let c = completion_for(&full, Outcome::success("stable now"), t(10));
    let changes = s.complete_episode(&n, &c).await.unwrap().expect("applied");
    assert!(!changes.patterns.is_empty(), "completion stores patterns");
    let done = get(s, &n, e.id).await;
    assert_eq!(done.outcome.as_ref(), Some(&c.outcome));
    assert_eq!(done.reward.as_ref(), Some(&c.reward));
    assert_eq!(done.reflection.as_ref(), Some(&c.reflection));
    assert_eq!(done.completed_at, Some(t(10)));
    assert_eq!(done.steps, st);

    let again = s.complete_episode(&n, &c).await.unwrap();
    assert!(again.is_none(), "completing twice is a no-op: None");
    let first = &changes.patterns[0].item;
    let p = pattern(s, &n, &first.id).await;
    assert_eq!(p.occurrences, first.occurrences, "replay adds no evidence");

    let late = steps(&[("shell", true)], 5, t(11));
    let r = s.append_steps(&n, e.id, &late).await;
    assert!(
        matches!(r, Err(Error::Conflict { .. })),
        "appending to a completed episode must be Conflict, got {r:?}"
    );
    let missing = EpisodeId::new();
    let none = s.get_episode(&n, missing).await.unwrap();
    assert!(none.is_none(), "unknown episode is Ok(None)");
    let r = s.append_steps(&n, missing, &st).await;
    assert_not_found(&r, "appending to an unknown episode");
    let mut ghost = full.clone();
    ghost.id = missing;
    let ghost_done = completion_for(&ghost, Outcome::failure("x"), t(12));
    let r = s.complete_episode(&n, &ghost_done).await;
    assert_not_found(&r, "completing an unknown episode");
    s.ping().await.unwrap();
}

pub async fn create_is_idempotent(s: &dyn Storage) {
    let n = ns("conf/create");
    let e = general("task", 0);
    let mut changed = e.clone();
    changed.task_description = "different".into();
    create(s, &n, &[&e, &changed]).await;
    let got = get(s, &n, e.id).await;
    assert_eq!(got.task_description, "task", "re-creating changes nothing");
    assert_eq!(stats(s, &n).await.episodes, 1);
}

pub async fn steps_append_as_rows_idempotently(s: &dyn Storage) {
    let n = ns("conf/steps");
    let numbers = |e: &Episode| e.steps.iter().map(|x| x.step_number).collect::<Vec<u32>>();
    let task = "many steps";
    let e = episode(task, TaskType::Debugging, "databases", Some("go"), t(0));
    s.create_episode(&n, &e).await.unwrap();
    let a = steps(&[("a", true), ("b", true)], 1, t(1));
    let b = steps(&[("c", false), ("d", true)], 3, t(2));
    // a, b, a replayed, and an empty batch.
    for batch in [&a[..], &b, &a, &[]] {
        s.append_steps(&n, e.id, batch).await.unwrap();
    }
    let got = get(s, &n, e.id).await;
    assert_eq!(numbers(&got), [1, 2, 3, 4], "ordered, replays skipped");
    assert_eq!(got.steps[2], b[0]);
    assert_eq!(stats(s, &n).await.steps, 4);
    let q = EpisodeQuery::default();
    let listed = s.query_episodes(&n, &q).await.unwrap();
    assert_eq!(listed[0].step_count, 4, "summary counts stored steps");

    // A second writer numbered its steps from an older copy (1 and 2 again): the store
    // numbers them after what it holds, and keeps both writers' steps.
    let other = steps(&[("e", true), ("f", true)], 1, t(3));
    s.append_steps(&n, e.id, &other).await.unwrap();
    s.append_steps(&n, e.id, &other[..1]).await.unwrap(); // a retry of part of it
    let got = get(s, &n, e.id).await;
    assert_eq!(numbers(&got), [1, 2, 3, 4, 5, 6], "none lost, none twice");
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
    assert_eq!(tools(&got), ["a", "b", "c", "d", "e", "f", "h"]);
    assert_eq!(got.steps[6].step_number, 7);
    assert_eq!(stats(s, &n).await.steps, 7);
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
    c.steps = [&first[..1], &late].concat();
    assert!(s.complete_episode(&n, &c).await.unwrap().is_some());
    let got = get(s, &n, e.id).await;
    let in_order = ["a", "b", "c", "d"];
    assert_eq!(tools(&got), in_order, "late steps stored once, in order");
    assert!(got.is_completed());
    assert_eq!(stats(s, &n).await.steps, 4);
    let mut replay = c;
    replay.steps = steps(&[("e", true)], 5, t(4));
    assert!(s.complete_episode(&n, &replay).await.unwrap().is_none());
    let kept = get(s, &n, e.id).await.steps.len();
    assert_eq!(kept, 4, "a replay adds no step");
}

/// A completion that says how many steps it learned from is refused, with nothing written,
/// when the store then holds another count (another writer added steps); a replayed step
/// counts once.
pub async fn completion_checks_the_expected_step_count(s: &dyn Storage) {
    let n = ns("conf/complete-expected");
    let e = rust_web("known steps", TaskType::Testing, 0);
    s.create_episode(&n, &e).await.unwrap();
    let first = steps(&[("a", true), ("b", true)], 1, t(1));
    s.append_steps(&n, e.id, &first).await.unwrap();
    // Another writer's step, which the completing process did not see.
    let elsewhere = steps(&[("x", true)], 3, t(2));
    s.append_steps(&n, e.id, &elsewhere).await.unwrap();
    let late = steps(&[("c", true)], 3, t(3));
    let mut known = get(s, &n, e.id).await;
    known.steps.truncate(2);
    known.steps.extend(late.iter().cloned());
    let mut c = completion_for(&known, Outcome::success("done"), t(4));
    c.steps = [&first[..1], &late].concat();
    c.expected_steps = Some(3);
    let refused = s.complete_episode(&n, &c).await;
    assert!(
        matches!(&refused, Err(e) if e.is_steps_changed()),
        "4 stored, 3 known: {refused:?}"
    );
    let got = get(s, &n, e.id).await;
    assert!(!got.is_completed(), "nothing written");
    assert_eq!(
        tools(&got),
        ["a", "b", "x"],
        "the late step not stored either"
    );
    c.expected_steps = Some(4);
    assert!(s.complete_episode(&n, &c).await.unwrap().is_some());
    let got = get(s, &n, e.id).await;
    assert!(got.is_completed());
    assert_eq!(tools(&got), ["a", "b", "x", "c"]);
    c.expected_steps = Some(1);
    assert!(
        s.complete_episode(&n, &c).await.unwrap().is_none(),
        "a replay of a completed episode is not checked"
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
    let newest_first: Vec<EpisodeId> = ids.iter().rev().copied().collect();
    assert_eq!(ids_of(&all), newest_first, "newest first");

    let page = EpisodeQuery {
        limit: 5,
        offset: 5,
        ..EpisodeQuery::default()
    };
    let page2 = s.query_episodes(&n, &page).await.unwrap();
    assert_eq!(ids_of(&page2), newest_first[5..10], "paging");

    // How many of the 12 episodes each filter passes.
    let counts: [(FilterEdit, usize); 6] = [
        (|f| f.domain = Some("web_api".into()), 8),
        (|f| f.language = Some("rust".into()), 4),
        (|f| f.task_type = Some(TaskType::Debugging), 4),
        (|f| f.status = Some(EpisodeStatus::AnyCompleted), 11),
        (|f| f.tag = Some("fixture".into()), 12),
        (|f| f.tag = Some("nope".into()), 0),
    ];
    for (set, count) in counts {
        let mut filter = EpisodeFilter::default();
        set(&mut filter);
        let passed = matching(s, &n, set).await.len();
        assert_eq!(passed, count, "episodes passing {filter:?}");
    }
    let failure = OutcomeKind::Failure;
    let status = Some(EpisodeStatus::Completed(failure));
    let failed = matching(s, &n, |f| f.status = status).await;
    assert_eq!(failed.len(), 3, "episodes 0, 4, 8 failed");
    assert!(failed.iter().all(|x| x.outcome == Some(failure)));
    let open = matching(s, &n, |f| f.status = Some(EpisodeStatus::InProgress)).await;
    assert_eq!(ids_of(&open), [ids[11]]);
    let window = matching(s, &n, |f| {
        f.started_after = Some(t(120));
        f.started_before = Some(t(300));
    })
    .await;
    assert_eq!(window.len(), 3, "after inclusive, before exclusive");
    let summary = all.iter().find(|x| x.id == ids[1]).unwrap();
    assert_eq!(summary.outcome, Some(OutcomeKind::Success));
    assert!(summary.reward.is_some());
    assert_eq!(summary.task_description, "task 1");
}

pub async fn lexical_search(s: &dyn Storage) {
    let n = ns("conf/search");
    let task = "add token bucket rate limiting to the axum API";
    let a = rust_web(task, TaskType::CodeGeneration, 0);
    let tools = [("edit_file", true), ("shell", true)];
    let (a, _) = record(s, &n, a, &tools, Outcome::success("rate limiter added")).await;
    let task = "fix postgres deadlock in the billing worker";
    let lang = Some("python");
    let b = episode(task, TaskType::Debugging, "databases", lang, t(10));
    let tools = [("shell", false), ("edit_file", true)];
    let (b, _) = record(s, &n, b, &tools, Outcome::success("deadlock gone")).await;
    let ids = |hits: &[TextHit]| hits.iter().map(|h| h.episode_id).collect::<Vec<_>>();
    let hits = search(s, &n, &text("rate limiting", 10)).await;
    assert_eq!(ids(&hits).first(), Some(&a.id), "best hit first");
    assert!(hits.iter().all(|h| h.score > 0.0));
    let hits = search(s, &n, &text("Deadlock", 10)).await;
    assert_eq!(ids(&hits), [b.id], "case-insensitive");
    let mut python = text("edit_file shell", 10);
    python.filter.language = Some("python".into());
    let filtered = search(s, &n, &python).await;
    assert_eq!(ids(&filtered), [b.id], "filters inside search");
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
    let limited = search(s, &n, &text("edit_file", 1)).await;
    assert_eq!(limited.len(), 1, "limit respected");

    // How much of a query the namespace knows: its distinct terms, and those some episode of
    // the namespace holds, whatever the filter; another namespace's words are not known.
    let other = ns("conf/search-other");
    s.create_episode(&other, &general("zebra census", 40))
        .await
        .unwrap();
    let mut query = text("Rate limiting rate zebra", 10);
    query.filter.language = Some("python".into());
    let known = s.search_text(&n, &query).await.unwrap();
    assert_eq!((known.terms, known.known_terms), (3, 2), "known terms");
    assert_eq!(known.known_share(), Some(2.0 / 3.0));
    let none = s.search_text(&n, &text("the", 10)).await.unwrap();
    assert_eq!(
        (none.terms, none.known_share()),
        (0, None),
        "stopwords only"
    );

    // Several parts indexed by one write: a completed episode created whole (as `import`
    // writes it), and a completion carrying its last steps and its reflection.
    let reflection = |word: &str| Reflection {
        insights: vec![format!("remember the {word}")],
        ..Reflection::default()
    };
    let mut whole = general("catalogue the quokka colony", 20);
    whole.steps = steps(&[("wombat_probe", true)], 1, t(21));
    let outcome = Outcome::success("counted");
    let done = completion_for(&whole, outcome, t(22));
    whole.outcome = Some(done.outcome);
    whole.reward = Some(done.reward);
    whole.reflection = Some(reflection("platypus"));
    whole.completed_at = Some(t(22));
    s.create_episode(&n, &whole).await.unwrap();
    let live = general("survey the estuary", 30);
    s.create_episode(&n, &live).await.unwrap();
    let mut carried = live.clone();
    carried.steps = steps(&[("heron_scan", true)], 1, t(31));
    let mut c = completion_for(&carried, Outcome::success("surveyed"), t(32));
    c.steps = carried.steps.clone();
    c.reflection = reflection("kingfisher");
    assert!(s.complete_episode(&n, &c).await.unwrap().is_some());
    for (words, id) in [
        ("quokka", whole.id),
        ("wombat_probe", whole.id),
        ("platypus", whole.id),
        ("estuary", live.id),
        ("heron_scan", live.id),
        ("kingfisher", live.id),
    ] {
        assert_eq!(found(s, &n, words).await, BTreeSet::from([id]), "{words}");
    }
}

/// Logged steps are not indexed until their episode is completed; then its tools, actions
/// and error messages are, and what its successful steps printed never is.
pub async fn steps_are_searchable_once_completed(s: &dyn Storage) {
    let n = ns("conf/work-text");
    let e = general("tend the greenhouse", 0);
    s.create_episode(&n, &e).await.unwrap();
    let mut logged = e.clone();
    for (i, input) in [
        StepInput::ok("loom_tool", "weave the tapestry", "marzipan printed"),
        StepInput::error("kiln_tool", "fire the kiln", "glaze cracked at cone six"),
    ]
    .into_iter()
    .enumerate()
    {
        logged.steps.push(ExecutionStep {
            step_number: i as u32 + 1,
            key: ExecutionStep::new_key(),
            timestamp: t(1 + i as i64),
            input,
        });
    }
    s.append_steps(&n, e.id, &logged.steps).await.unwrap();
    assert_eq!(found(s, &n, "greenhouse").await, BTreeSet::from([e.id]));
    for words in ["loom_tool", "tapestry", "glaze", "marzipan"] {
        assert!(
            found(s, &n, words).await.is_empty(),
            "{words} before completion"
        );
    }
    let c = completion_for(&logged, Outcome::success("tended"), t(5));
    assert!(s.complete_episode(&n, &c).await.unwrap().is_some());
    for words in ["loom_tool", "tapestry", "kiln_tool", "glaze cracked"] {
        assert_eq!(found(s, &n, words).await, BTreeSet::from([e.id]), "{words}");
    }
    assert!(
        found(s, &n, "marzipan").await.is_empty(),
        "a success's output"
    );
}

pub async fn learning_merges_across_episodes(s: &dyn Storage) {
    let n = ns("conf/merge");
    let spec = [("read_file", true), ("edit_file", true), ("shell", true)];
    let mut seq_ids = BTreeSet::new();
    for i in 0..3 {
        let task = format!("similar task {i}");
        let e = rust_web(&task, TaskType::CodeGeneration, i * 10);
        let (_, changes) = record(s, &n, e, &spec, ok()).await;
        for c in &changes.patterns {
            if c.item.kind.name() == "tool_sequence" {
                seq_ids.insert(c.item.id.clone());
                assert_eq!(c.created, i == 0, "created only by the first episode");
            }
        }
    }
    // One tool-sequence pattern for one sequence in one context.
    assert_eq!(seq_ids.len(), 1, "one pattern per sequence and context");
    let p = pattern(s, &n, seq_ids.first().unwrap()).await;
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
    // One lesson for one failing tool + error class in one context.
    assert_eq!(lessons.len(), 1, "one lesson per failure and context");
    let l = &lessons[0];
    assert_eq!((l.occurrences, l.recovered), (2, 2));
    let remedy = vec!["edit_file".to_owned(), "shell".to_owned()];
    assert_eq!(l.best_remedy().map(|r| r.tools.clone()), Some(remedy));
    let got = s.get_lesson(&n, &l.id).await.unwrap();
    assert_eq!(got.as_ref(), Some(l));

    // apply_learning merges outside a completion.
    let mut full = rust_web("extra", TaskType::CodeGeneration, 200);
    full.steps = steps(&spec, 1, t(200));
    let update = extract_learning(&full, &ok(), t(201));
    s.apply_learning(&n, &update).await.unwrap();
    assert_eq!(pattern(s, &n, &p.id).await.occurrences, 4);
}

pub async fn heuristics_contradictions_kept(s: &dyn Storage) {
    let n = ns("conf/heuristics");
    let ctx = web_api(Some("rust"));
    let condition = "cargo build fails with \"linker error\"";
    let lld = "install the lld linker";
    // One observation of one fix, then three of a contradicting one.
    for (action, i) in [("run cargo clean", 1), (lld, 10), (lld, 11), (lld, 12)] {
        let seen =
            HeuristicObservation::new(condition, action, ctx.clone(), EpisodeId::new(), true, t(i));
        let update = LearningUpdate {
            episode_id: EpisodeId::new(),
            observed_at: t(0),
            patterns: Vec::new(),
            heuristics: vec![seen],
            lessons: Vec::new(),
        };
        s.apply_learning(&n, &update).await.unwrap();
    }
    let all = s.query_heuristics(&n, &all_learned(50)).await.unwrap();
    assert_eq!(all.len(), 2, "both heuristics are kept");
    let active: Vec<&Heuristic> = all.iter().filter(|h| h.status.is_active()).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].action, lld, "more evidence wins");
    assert_eq!(active[0].support, 3);
    let loser = all.iter().find(|h| !h.status.is_active()).unwrap();
    let status = &loser.status;
    let LearnedStatus::Superseded { by, reason } = status else {
        panic!("loser must be superseded with a reason, got {status:?}");
    };
    assert_eq!(by, &active[0].id.0);
    assert!(!reason.is_empty());
    let visible = s.query_heuristics(&n, &LearnedQuery::default()).await;
    assert_eq!(visible.unwrap().len(), 1, "inactive hidden by default");
    let got = s.get_heuristic(&n, &loser.id).await.unwrap();
    assert_eq!(got.as_ref(), Some(loser));

    // Votes move a heuristic's rank, and its key is resolved again at once: after four
    // episodes where following the winner hindered, the other one is better evidenced.
    let winner = active[0].clone();
    let target = FeedbackTarget::Heuristic(winner.id.clone());
    for at in 20..24 {
        let fb = feedback(&target, EpisodeId::new(), FeedbackOutcome::Hindered, at);
        s.record_feedback(&n, &fb).await.unwrap();
    }
    let now = s
        .query_heuristics(&n, &LearnedQuery::default())
        .await
        .unwrap();
    let now: Vec<&str> = now.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(
        now,
        ["run cargo clean"],
        "the downvoted winner is set aside"
    );
    let set_aside = s.get_heuristic(&n, &winner.id).await.unwrap().unwrap();
    let by = match &set_aside.status {
        LearnedStatus::Superseded { by, .. } => by.clone(),
        other => panic!("superseded by the other, got {other:?}"),
    };
    assert_eq!(by, loser.id.0);
    // Evidence for it again: it outranks the other once more, which the merge finds even
    // though it reads only the active heuristic and the observed one first.
    let seen =
        HeuristicObservation::new(condition, lld, ctx.clone(), EpisodeId::new(), true, t(30));
    let update = LearningUpdate {
        episode_id: seen.episode_id,
        observed_at: t(30),
        patterns: Vec::new(),
        heuristics: vec![seen],
        lessons: Vec::new(),
    };
    let changes = s.apply_learning(&n, &update).await.unwrap();
    assert_eq!(
        changes.heuristics.len(),
        2,
        "both change status: {changes:?}"
    );
    let now = s
        .query_heuristics(&n, &LearnedQuery::default())
        .await
        .unwrap();
    let now: Vec<&str> = now.iter().map(|h| h.action.as_str()).collect();
    assert_eq!(now, [lld], "back in use");

    // A consolidation moves evidence into the one set aside (a merge, say): its guarded
    // write resolves the key again.
    let clean = s.get_heuristic(&n, &loser.id).await.unwrap().unwrap();
    let mut merged_into = clean.clone();
    merged_into.support += 10;
    let group = GuardedItems {
        read: vec![(
            LearnedId::Heuristic(clean.id.clone()),
            Some(LearnedItem::Heuristic(clean)),
        )],
        write: LearnedItems {
            heuristics: vec![merged_into],
            ..LearnedItems::default()
        },
    };
    let refused = s.put_learned_unless_changed(&n, &[group]).await.unwrap();
    assert!(refused.is_empty());
    let now = s
        .query_heuristics(&n, &LearnedQuery::default())
        .await
        .unwrap();
    let now: Vec<(&str, u64)> = now.iter().map(|h| (h.action.as_str(), h.support)).collect();
    assert_eq!(
        now,
        [("run cargo clean", 11)],
        "the better evidenced one is in use"
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
    assert_eq!(rust[0].kind, sequence(&["shell"]));
    let testing_db = q(Some(TaskType::Testing), Some("databases"), None);
    assert_eq!(patterns(testing_db).await.len(), 1);
    let testing_web = q(Some(TaskType::Testing), Some("web_api"), None);
    assert!(patterns(testing_web).await.is_empty());
    // A pattern with no language matches any language query.
    let grep = sequence(&["grep"]);
    let generic = PatternObservation::new(grep, web_api(None), EpisodeId::new(), true, t(3));
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
    let mut paged = q(None, None, None);
    (paged.limit, paged.offset) = (1, 1);
    assert_eq!(patterns(paged).await.len(), 1);
    let in_rust = learned(|q| q.language = Some("rust".into()));
    assert!(s.query_lessons(n, &in_rust).await.unwrap().is_empty());
    let debugging = learned(|q| q.task_type = Some(TaskType::Debugging));
    assert_eq!(s.query_heuristics(n, &debugging).await.unwrap().len(), 1);
}

/// Items of a context larger than a backend may sort in full ([`LARGE_CONTEXT`], beside a
/// small context and generic items): every page of a context query holds what the query's
/// own `matches` selects, most-seen first, ties by id, whichever way the backend reads it.
pub async fn learned_context_pages_small_and_large(s: &dyn Storage) {
    let n = &ns("conf/context-pages");
    let ctx = |d: Option<&str>, l: Option<&str>, tt: Option<TaskType>| ContextKey {
        task_type: tt,
        domain: d.map(str::to_owned),
        language: l.map(str::to_owned),
    };
    let big = ctx(Some("big"), Some("rust"), Some(TaskType::Debugging));
    let mut contexts: Vec<(ContextKey, usize)> = vec![
        (big, LARGE_CONTEXT),
        (ctx(Some("big"), Some("go"), None), 10),
        (ctx(Some("small"), Some("rust"), None), 30),
        (ctx(None, None, None), 20),
        (ctx(None, Some("rust"), Some(TaskType::Debugging)), 5),
    ];
    let mut stored: Vec<Pattern> = Vec::new();
    for (c, (context, count)) in contexts.drain(..).enumerate() {
        for i in 0..count {
            let tools = vec![format!("tool{c}_{i}")];
            let kind = PatternKind::ToolSequence { tools };
            let obs = PatternObservation::new(kind, context.clone(), EpisodeId::new(), true, t(1));
            let mut p = Pattern::from_observation(&obs);
            p.occurrences = 1 + (i as u64 * 7919) % 40;
            if i % 10 == 3 {
                p.status = LearnedStatus::Pruned {
                    reason: "conformance".into(),
                    at: t(2),
                };
            }
            stored.push(p);
        }
    }
    for chunk in stored.chunks(500) {
        let items = LearnedItems {
            patterns: chunk.to_vec(),
            ..LearnedItems::default()
        };
        s.put_learned(n, &items).await.unwrap();
    }
    let queries = [
        (Some("small"), None, None, false),
        (Some("small"), Some("rust"), Some(TaskType::Testing), false),
        (Some("big"), Some("rust"), None, false),
        (Some("big"), None, Some(TaskType::Debugging), true),
        (Some("big"), Some("go"), None, true),
        (None, Some("rust"), None, false),
    ];
    for (domain, language, task_type, include_inactive) in queries {
        for (limit, offset) in [(200, 0), (50, 150), (100, LARGE_CONTEXT as u32 - 60)] {
            let q = LearnedQuery {
                task_type,
                domain: domain.map(str::to_owned),
                language: language.map(str::to_owned),
                include_inactive,
                limit,
                offset,
                ..LearnedQuery::default()
            };
            let mut want: Vec<&Pattern> = stored.iter().filter(|p| q.matches(*p)).collect();
            want.sort_by(|a, b| b.occurrences.cmp(&a.occurrences).then(a.id.0.cmp(&b.id.0)));
            let want: Vec<&str> = want
                .iter()
                .skip(offset as usize)
                .take(limit as usize)
                .map(|p| p.id.0.as_str())
                .collect();
            let got = s.query_patterns(n, &q).await.unwrap();
            let got: Vec<&str> = got.iter().map(|p| p.id.0.as_str()).collect();
            assert_eq!(got, want, "{q:?}");
        }
    }
}

/// The size of the large context of [`learned_context_pages_small_and_large`]: above the
/// 4,096 items the libsql backend sorts in full, so it reads that context the other way.
pub const LARGE_CONTEXT: usize = 4_200;

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
    let by_default = learned(|q| q.limit = 100);
    let active = s.query_patterns(&n, &by_default).await.unwrap();
    assert!(active.iter().all(|x| x.id != p.id), "pruned items hidden");
    let all = s.query_patterns(&n, &all_learned(100)).await.unwrap();
    assert!(all.iter().any(|x| x.id == p.id));
}

/// `get_episodes` and `get_learned_many` return what one read at a time returns, in the
/// order asked, `None` for what the namespace does not hold (another namespace's included),
/// and repeated ids each time.
pub async fn batched_reads_match_single_reads(s: &dyn Storage) {
    let n = ns("conf/batch");
    let other = ns("conf/batch-other");
    let spec = [("shell", false), ("edit_file", true), ("shell", true)];
    let (a, changes) = record(s, &n, rust_web("a", TaskType::Debugging, 0), &spec, ok()).await;
    let (b, _) = record(
        s,
        &n,
        rust_web("b", TaskType::Debugging, 10),
        &spec[1..],
        ok(),
    )
    .await;
    let (elsewhere, _) = record(
        s,
        &other,
        rust_web("c", TaskType::Debugging, 20),
        &spec,
        ok(),
    )
    .await;
    let open = rust_web("d", TaskType::Debugging, 30);
    create(s, &n, &[&open]).await;
    let missing = EpisodeId::new();
    let ids = [b.id, missing, a.id, elsewhere.id, open.id, b.id];
    let batch = s.get_episodes(&n, &ids).await.unwrap();
    assert_eq!(batch.len(), ids.len());
    for (id, got) in ids.iter().zip(&batch) {
        let one = s.get_episode(&n, *id).await.unwrap();
        assert_eq!(got.as_deref(), one.as_deref(), "episode {id}");
    }
    assert!(
        batch[1].is_none() && batch[3].is_none(),
        "absent, and another namespace's"
    );
    assert_eq!(batch[0].as_ref().map(|e| e.steps.len()), Some(2));
    assert!(s.get_episodes(&n, &[]).await.unwrap().is_empty());

    let p = &changes.patterns[0].item;
    let h = &changes.heuristics[0].item;
    let l = &changes.lessons[0].item;
    let learned = [
        LearnedId::Lesson(l.id.clone()),
        LearnedId::Pattern(PatternId("no-such-pattern".into())),
        LearnedId::Pattern(p.id.clone()),
        LearnedId::Heuristic(h.id.clone()),
        LearnedId::Pattern(p.id.clone()),
    ];
    let batch = s.get_learned_many(&n, &learned).await.unwrap();
    assert_eq!(batch.len(), learned.len());
    for (id, got) in learned.iter().zip(&batch) {
        assert_eq!(got, &s.get_learned(&n, id).await.unwrap(), "item {id:?}");
    }
    assert!(batch[1].is_none());
    assert!(batch.iter().filter(|x| x.is_some()).count() == 4);
    let elsewhere = s.get_learned_many(&other, &learned[2..3]).await.unwrap();
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(
        elsewhere[0],
        s.get_learned(&other, &learned[2]).await.unwrap(),
        "another namespace's items are its own"
    );
    assert!(s.get_learned_many(&n, &[]).await.unwrap().is_empty());
}

/// `put_learned_unless_changed`: a group is written only when every item it read is stored as
/// read (absent for one read as absent); the groups refused are reported and left untouched.
pub async fn guarded_put_writes_only_groups_stored_as_read(s: &dyn Storage) {
    let n = ns("conf/guarded");
    let e = rust_web("x", TaskType::Debugging, 0);
    let spec = [("shell", false), ("edit_file", true), ("shell", true)];
    let (_, changes) = record(s, &n, e, &spec, ok()).await;
    let stored: Vec<Pattern> = changes.patterns.iter().map(|c| c.item.clone()).collect();
    assert!(stored.len() >= 2);
    let (a, b) = (stored[0].clone(), stored[1].clone());
    let bumped = |p: &Pattern| {
        let mut p = p.clone();
        p.occurrences += 10;
        p
    };
    let id = |p: &Pattern| LearnedId::Pattern(p.id.clone());
    let mut stale = b.clone();
    stale.occurrences += 1; // not what is stored
    let mut fresh = a.clone();
    fresh.id = PatternId("conf-guarded-new".into());
    let mut taken = fresh.clone();
    taken.id = b.id.clone(); // read as absent, but stored
    let group = |read: Vec<(LearnedId, Option<LearnedItem>)>, write: Vec<Pattern>| GuardedItems {
        read,
        write: LearnedItems {
            patterns: write,
            ..LearnedItems::default()
        },
    };
    let groups = [
        group(
            vec![(id(&a), Some(a.clone().into_item()))],
            vec![bumped(&a)],
        ),
        group(
            vec![(id(&b), Some(stale.clone().into_item()))],
            vec![bumped(&b)],
        ),
        group(vec![(id(&fresh), None)], vec![fresh.clone()]),
        group(
            vec![(id(&fresh), None), (id(&b), None)],
            vec![bumped(&fresh), bumped(&b)],
        ),
    ];
    let refused = s.put_learned_unless_changed(&n, &groups).await.unwrap();
    assert_eq!(refused, vec![1, 3]);
    assert_eq!(s.get_pattern(&n, &a.id).await.unwrap(), Some(bumped(&a)));
    assert_eq!(s.get_pattern(&n, &b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(s.get_pattern(&n, &fresh.id).await.unwrap(), Some(fresh));
    // Nothing else was written: a refused group leaves even its unchanged items alone.
    let again = s
        .put_learned_unless_changed(&n, &groups[..1])
        .await
        .unwrap();
    assert_eq!(again, vec![0], "a is no longer as read");
}

/// The patterns of one recorded episode (at least four) stored in `n` and `other`, for the
/// compaction checks; and the episode.
async fn compaction_case(
    s: &dyn Storage,
    n: &Namespace,
    other: &Namespace,
) -> (Vec<Pattern>, EpisodeId) {
    let e = rust_web("x", TaskType::Debugging, 0);
    let spec = [("shell", false), ("edit_file", true), ("shell", true)];
    let (_, changes) = record(s, n, e.clone(), &spec, ok()).await;
    record(s, other, e, &spec, ok()).await;
    let p: Vec<Pattern> = changes.patterns.iter().map(|c| c.item.clone()).collect();
    assert!(p.len() >= 4, "{p:?}");
    let episode = p[0].recent_evidence[0].episode_id;
    (p[..4].to_vec(), episode)
}

/// Stores `p` (as changed by the check) in both namespaces and feedback on `p[2]` in `n`.
async fn store_compaction_case(
    s: &dyn Storage,
    n: &Namespace,
    other: &Namespace,
    p: &[Pattern],
    episode: EpisodeId,
) {
    let items = LearnedItems {
        patterns: p.to_vec(),
        ..LearnedItems::default()
    };
    s.put_learned(n, &items).await.unwrap();
    s.put_learned(other, &items).await.unwrap();
    let target = FeedbackTarget::Pattern(p[2].id.clone());
    let fb = feedback(&target, episode, FeedbackOutcome::NoEffect, 100);
    s.record_feedback(n, &fb).await.unwrap();
}

/// After one compaction call: `p[0]` went from `n`, every other row stayed, and `other` kept
/// its copy.
async fn only_the_first_went(s: &dyn Storage, n: &Namespace, other: &Namespace, p: &[Pattern]) {
    assert_eq!(
        s.get_pattern(n, &p[0].id).await.unwrap(),
        None,
        "{:?}",
        p[0]
    );
    for kept in &p[1..] {
        assert!(
            s.get_pattern(n, &kept.id).await.unwrap().is_some(),
            "{kept:?}"
        );
    }
    assert!(s.get_pattern(other, &p[0].id).await.unwrap().is_some());
}

/// `compact_merged_patterns` deletes a merged pattern holding no evidence, and nothing else:
/// not one with evidence, feedback, another status, another namespace or an unknown id.
pub async fn merged_patterns_without_evidence_compact(s: &dyn Storage) {
    let (n, other) = (ns("conf/compact"), ns("conf/compact-other"));
    let (mut p, episode) = compaction_case(s, &n, &other).await;
    let into = LearnedStatus::Merged {
        into: p[3].id.0.clone(),
        at: t(99),
    };
    // 0: merged, empty; 1: merged, holding evidence; 2: merged, with feedback; 3: active.
    for (i, occurrences) in [(0, 0), (1, 2), (2, 0)] {
        p[i].status = into.clone();
        p[i].occurrences = occurrences;
        p[i].successes = 0;
    }
    p[3].occurrences = 0;
    store_compaction_case(s, &n, &other, &p, episode).await;
    let mut ids: Vec<PatternId> = p.iter().map(|x| x.id.clone()).collect();
    ids.push(PatternId("0".repeat(32)));
    assert_eq!(s.compact_merged_patterns(&n, &ids).await.unwrap(), 1);
    only_the_first_went(s, &n, &other, &p).await;
    assert_eq!(s.compact_merged_patterns(&n, &ids).await.unwrap(), 0);
}

/// `compact_pruned_patterns` deletes a pruned pattern not seen since it was pruned, and
/// nothing else: not one seen after its pruning, one with feedback, another status, another
/// namespace or an unknown id.
pub async fn pruned_patterns_not_seen_since_compact(s: &dyn Storage) {
    let (n, other) = (ns("conf/prune-compact"), ns("conf/prune-compact-other"));
    let (mut p, episode) = compaction_case(s, &n, &other).await;
    let seen = p[0].last_seen;
    let pruned = |at: DateTime<Utc>| LearnedStatus::Pruned {
        reason: "confidence 0.01 below floor 0.05".into(),
        at,
    };
    let later = seen + Duration::days(1);
    // 0: pruned after it was last seen; 1: seen after its pruning (the next run revives
    // it); 2: pruned but has feedback; 3: active.
    p[0].status = pruned(later);
    p[1].status = pruned(seen - Duration::days(1));
    p[2].status = pruned(later);
    store_compaction_case(s, &n, &other, &p, episode).await;
    let at_of = |x: &Pattern| match &x.status {
        LearnedStatus::Pruned { at, .. } => *at,
        _ => later,
    };
    let mut rows: Vec<(PatternId, DateTime<Utc>)> =
        p.iter().map(|x| (x.id.clone(), at_of(x))).collect();
    rows.push((PatternId("0".repeat(32)), later));
    assert_eq!(s.compact_pruned_patterns(&n, &rows).await.unwrap(), 1);
    only_the_first_went(s, &n, &other, &p).await;
    assert_eq!(s.compact_pruned_patterns(&n, &rows).await.unwrap(), 0);
}

pub async fn feedback_updates_effectiveness(s: &dyn Storage) {
    use FeedbackOutcome::{Helped, Hindered, NoEffect};
    let n = ns("conf/feedback");
    let shell = [("shell", true)];
    let (e, changes) = record(s, &n, rust_web("x", TaskType::Debugging, 0), &shell, ok()).await;
    let (e2, _) = record(s, &n, rust_web("y", TaskType::Debugging, 5), &shell, ok()).await;
    let pid = changes.patterns[0].item.id.clone();
    let target = FeedbackTarget::Pattern(pid.clone());
    for (ep, outcome, at) in [
        (e.id, Hindered, 10),
        (e.id, Helped, 11), // replaces
        (e2.id, NoEffect, 12),
    ] {
        let fb = feedback(&target, ep, outcome, at);
        s.record_feedback(&n, &fb).await.unwrap();
    }
    let eff = pattern(s, &n, &pid).await.effectiveness;
    let counts = (eff.helped, eff.no_effect, eff.hindered, eff.hindered_streak);
    assert_eq!(counts, (1, 1, 0, 0), "helped, no effect, hindered, streak");
    let events = s.list_feedback(&n, &target).await.unwrap();
    assert_eq!(events.len(), 2, "one event per (target, episode)");
    assert_eq!(events[0].recorded_at, t(11), "oldest first");
    assert_eq!(events[1].outcome, NoEffect);

    // Hindered events after the latest helped one make a streak; a later helped one ends it.
    let streak = |p: Pattern| (p.effectiveness.hindered, p.effectiveness.hindered_streak);
    let (e3, _) = record(s, &n, rust_web("z", TaskType::Debugging, 6), &shell, ok()).await;
    let mut streaks = Vec::new();
    for (ep, outcome, at) in [
        (e2.id, Hindered, 13), // replaces the no-effect event
        (e3.id, Hindered, 14),
        (e.id, Hindered, 15), // replaces the only helped event
        (e2.id, Helped, 16),
    ] {
        let fb = feedback(&target, ep, outcome, at);
        s.record_feedback(&n, &fb).await.unwrap();
        streaks.push(streak(pattern(s, &n, &pid).await));
    }
    assert_eq!(streaks, [(1, 1), (2, 2), (3, 3), (2, 0)]);
    // Hindered again, then seen in a new episode: the streak ends there.
    let fb = feedback(&target, e3.id, Hindered, 17);
    s.record_feedback(&n, &fb).await.unwrap();
    assert_eq!(streak(pattern(s, &n, &pid).await), (2, 1));
    record(s, &n, rust_web("w", TaskType::Debugging, 18), &shell, ok()).await;
    assert_eq!(streak(pattern(s, &n, &pid).await), (2, 0));

    let hid = changes.heuristics[0].item.id.clone();
    let ht = FeedbackTarget::Heuristic(hid.clone());
    for (ep, outcome, at) in [(e.id, Helped, 20), (e2.id, Hindered, 21)] {
        let fb = feedback(&ht, ep, outcome, at);
        s.record_feedback(&n, &fb).await.unwrap();
    }
    let h = s.get_heuristic(&n, &hid).await.unwrap().unwrap();
    assert_eq!((h.votes_up, h.votes_down), (1, 1));

    let missing = FeedbackTarget::Pattern(PatternId("0".repeat(32)));
    let fb = feedback(&missing, e.id, Helped, 30);
    let r = s.record_feedback(&n, &fb).await;
    assert_not_found(&r, "feedback on an unknown pattern");
}

pub async fn embeddings(s: &dyn Storage) {
    let n = &ns("conf/embeddings");
    let (a, b) = (general("a", 0), general("b", 1));
    create(s, n, &[&a, &b]).await;
    // Episodes without an embedding of model "m", after a cursor, at most `limit`.
    let missing = |after: Option<EpisodeId>, limit: u32| async move {
        s.episodes_missing_embedding(n, "m", after, limit)
            .await
            .unwrap()
    };
    let cov = |model: &'static str| async move { s.embedding_coverage(n, model).await.unwrap() };
    let coverage = |episodes, embedded| EmbeddingCoverage {
        episodes,
        embedded,
        last_episode: Some(b.id),
    };
    assert_eq!(missing(None, 10).await, [a.id, b.id], "oldest first");
    assert_eq!(cov("m").await, coverage(2, 0));
    let v: Vec<f32> = (0..384).map(|i| (i as f32 * 0.37).sin()).collect();
    s.put_embedding(n, a.id, "m", &v).await.unwrap();
    assert_eq!(cov("m").await, coverage(2, 1));
    assert!(!cov("m").await.complete());
    let got = s.get_embedding(n, a.id, "m").await.unwrap();
    assert_eq!(got, Some(v.clone()), "vector round-trips exactly");
    assert!(s.get_embedding(n, a.id, "other").await.unwrap().is_none());
    assert_eq!(missing(None, 10).await, [b.id]);
    // The cursor: only ids after it.
    assert_eq!(missing(Some(a.id), 10).await, [b.id]);
    assert!(missing(Some(b.id), 10).await.is_empty());
    assert_eq!(missing(None, 0).await, Vec::<EpisodeId>::new());
    let w: Vec<f32> = v.iter().map(|x| -x).collect();
    s.put_embedding(n, a.id, "m", &w).await.unwrap();
    let got = s.get_embedding(n, a.id, "m").await.unwrap();
    assert_eq!(got, Some(w), "put replaces");
    assert_eq!(cov("m").await, coverage(2, 1), "replaced: counted once");
    s.put_embedding(n, b.id, "m", &v).await.unwrap();
    assert!(cov("m").await.complete());
    assert_eq!(cov("other").await, coverage(2, 0), "per model");
    let empty = ns("conf/embeddings-empty");
    let none = s.embedding_coverage(&empty, "m").await.unwrap();
    assert_eq!(none, EmbeddingCoverage::default());
    let r = s.put_embedding(n, EpisodeId::new(), "m", &v).await;
    assert_not_found(&r, "embedding for an unknown episode");
}

/// The index change log names every episode whose embedding or (embedded) summary changed,
/// pages in order, reports removals per model; snapshots round-trip per model and are
/// size-checked at the API boundary.
pub async fn index_change_log_and_snapshots(s: &dyn Storage) {
    let n = &ns("conf/index-log");
    let other = &ns("conf/index-log-other");
    let head = || async move { s.index_log_head(n).await.unwrap() };
    // The changes for model "m" after a log position, at most `limit`.
    let changes = |after: u64, limit: u32| async move {
        s.index_changes(n, "m", after, limit).await.unwrap()
    };
    assert_eq!(head().await, 0, "empty log");
    let none = changes(0, 10).await;
    assert_eq!(none, IndexChanges::default(), "through stays at after");

    let (a, b) = (general("a", 0), general("b", 1));
    create(s, n, &[&a, &b]).await;
    create(s, other, &[&a]).await;
    assert_eq!(head().await, 0, "no embedding, not in the log");
    let v: Vec<f32> = (0..8).map(|i| i as f32 / 8.0).collect();
    s.put_embedding(n, a.id, "m", &v).await.unwrap();
    let after_a = head().await;
    assert!(after_a > 0, "an embedding write is logged");
    s.put_embedding(n, b.id, "other-model", &v).await.unwrap();
    s.put_embedding(other, a.id, "m", &v).await.unwrap();

    let all = changes(0, 100).await;
    assert_eq!(all.through, head().await);
    assert!(!all.more);
    assert_eq!(all.upserts.len(), 1, "{all:?}");
    assert_eq!(all.upserts[0].summary.id, a.id);
    assert_eq!(all.upserts[0].vector, v);
    assert_eq!(all.upserts[0].summary, a.summary());
    assert_eq!(all.removed, [b.id], "b changed, no vector for model m");

    // Paging: one entry per page, in log order.
    let first = changes(0, 1).await;
    assert_eq!(first.through, after_a);
    assert!(first.more);
    assert_eq!(first.upserts.len(), 1);
    let rest = changes(first.through, 10).await;
    assert!(!rest.more);
    assert_eq!(rest.removed, [b.id]);
    assert!(rest.upserts.is_empty());

    // Completing an embedded episode is logged with its new summary.
    let before = head().await;
    let mut stored = get(s, n, a.id).await;
    stored.steps = steps(&[("cargo", true)], 1, stored.started_at);
    s.append_steps(n, a.id, &stored.steps).await.unwrap();
    let c = completion_for(&stored, Outcome::success("done"), t(10));
    s.complete_episode(n, &c).await.unwrap();
    let done = changes(before, 100).await;
    assert!(done.through > before);
    assert_eq!(done.upserts.len(), 1);
    let summary = &done.upserts[0].summary;
    assert!(summary.completed_at.is_some(), "{summary:?}");
    assert_eq!(summary.step_count, 1);
    let caught_up = IndexChanges {
        through: done.through,
        ..IndexChanges::default()
    };
    assert_eq!(changes(done.through, 100).await, caught_up, "caught up");

    // Snapshots: absent, stored, replaced, per model and namespace.
    let snapshot = |model| async move { s.get_index_snapshot(n, model).await.unwrap() };
    assert_eq!(snapshot("m").await, None);
    let snap = IndexSnapshot::new(after_a, vec![1, 2, 3, 0, 255]);
    s.put_index_snapshot(n, "m", &snap).await.unwrap();
    assert_eq!(snapshot("m").await, Some(snap));
    assert_eq!(snapshot("other-model").await, None);
    assert_eq!(s.get_index_snapshot(other, "m").await.unwrap(), None);
    let newer = IndexSnapshot {
        as_of: after_a + 5,
        parts: vec![vec![9; 600], vec![8; 400]],
    };
    // Large images (stored in parts by some backends) and empty ones round-trip exactly.
    let image = (0..9 * 1024 * 1024 + 3).map(|i| (i % 251) as u8).collect();
    let large = IndexSnapshot::new(7, image);
    let empty = IndexSnapshot::new(8, Vec::new());
    for snap in [newer, large, empty] {
        s.put_index_snapshot(n, "m", &snap).await.unwrap();
        let as_of = snap.as_of;
        let got = snapshot("m").await;
        assert!(got == Some(snap), "snapshot {as_of} round-trips");
    }
}

pub async fn stats_count(s: &dyn Storage) {
    let n = ns("conf/stats");
    assert_eq!(stats(s, &n).await, NamespaceStats::default());
    let a = rust_web("a", TaskType::Debugging, 0);
    record(s, &n, a, &[("shell", false), ("edit_file", true)], ok()).await;
    let b = rust_web("b", TaskType::Debugging, 1);
    record(s, &n, b, &[("shell", false)], Outcome::failure("no")).await;
    let c = rust_web("c", TaskType::Debugging, 2);
    s.create_episode(&n, &c).await.unwrap();
    let st = stats(s, &n).await;
    let counts = (st.episodes, st.completed, st.successes, st.steps);
    // Episodes, completed ones, successes, steps.
    assert_eq!(counts, (3, 2, 1, 3), "namespace counts");
    let patterns = s.query_patterns(&n, &all_learned(1000)).await.unwrap();
    assert_eq!(st.patterns, patterns.len() as u64);
    let active = patterns.iter().filter(|p| p.status.is_active()).count();
    assert_eq!(st.active_patterns, active as u64);
    let heur = s.query_heuristics(&n, &all_learned(1000)).await.unwrap();
    assert_eq!(st.heuristics, heur.len() as u64);
    let active = heur.iter().filter(|h| h.status.is_active()).count();
    assert_eq!(st.active_heuristics, active as u64);
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
            let tool = tools[rng.random_range(0..tools.len())];
            spec.push((tool, rng.random::<f64>() > 0.3));
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
        assert_isolated(s, n, other, &owned).await;
    }
    // Changing one namespace leaves the other's counts untouched.
    let before = stats(s, &b).await;
    let late = rust_web("late", TaskType::Debugging, 1000);
    record(s, &a, late, &[("shell", true)], ok()).await;
    assert_eq!(stats(s, &b).await, before);
}

/// What `n` sees holds exactly the episodes `owned` assigns it and nothing of `other`.
async fn assert_isolated(
    s: &dyn Storage,
    n: &Namespace,
    other: &Namespace,
    owned: &BTreeMap<EpisodeId, Namespace>,
) {
    let mine = owned_by(owned, n);
    let everything = EpisodeQuery {
        limit: 1000,
        ..Default::default()
    };
    let listed = s.query_episodes(n, &everything).await.unwrap();
    let listed = BTreeSet::from_iter(ids_of(&listed));
    assert_eq!(listed, mine, "list sees exactly its own episodes");
    let hits = search(s, n, &text("shared isolation shell", 1000)).await;
    let inside = hits.iter().all(|h| mine.contains(&h.episode_id));
    assert!(inside, "search never crosses namespaces");
    let st = stats(s, n).await;
    assert_eq!(st.episodes, mine.len() as u64, "counts are per namespace");
    for id in owned_by(owned, other) {
        let got = s.get_episode(n, id).await.unwrap();
        assert!(got.is_none(), "get never crosses namespaces");
        let st = steps(&[("x", true)], 99, t(0));
        let r = s.append_steps(n, id, &st).await;
        assert_not_found(&r, "append across namespaces");
    }
    let theirs = s.query_patterns(other, &all_learned(1000)).await.unwrap();
    let mine_p = s.query_patterns(n, &all_learned(1000)).await.unwrap();
    for p in &theirs {
        // Same ids can exist in both (deterministic); their evidence must be separate.
        if let Some(m) = mine_p.iter().find(|m| m.id == p.id) {
            let own = m
                .recent_evidence
                .iter()
                .all(|ev| mine.contains(&ev.episode_id));
            assert!(own, "pattern evidence never crosses namespaces");
        } else {
            assert!(s.get_pattern(n, &p.id).await.unwrap().is_none());
            let target = FeedbackTarget::Pattern(p.id.clone());
            let fb = feedback(&target, *mine.first().unwrap(), FeedbackOutcome::Helped, 0);
            let r = s.record_feedback(n, &fb).await;
            assert_not_found(&r, "feedback on another namespace's pattern");
        }
    }
}

/// The episodes `owned` assigns to `n`.
fn owned_by(owned: &BTreeMap<EpisodeId, Namespace>, n: &Namespace) -> BTreeSet<EpisodeId> {
    owned
        .keys()
        .filter(|id| owned[*id] == *n)
        .copied()
        .collect()
}

/// Consolidation runs, metrics snapshots, estimate records and restores: stored per
/// namespace, listed newest first, idempotent on their keys.
pub async fn maintenance_records(s: &dyn Storage) {
    let a = ns("maint/a");
    let b = ns("maint/b");
    consolidation_runs(s, &a, &b).await;
    metrics_snapshots(s, &a, &b).await;
    estimate_records(s, &a, &b).await;
    completion_closes_its_open_estimate(s, &ns("conf/maint-close")).await;
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
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["run-2", "run-1", "run-0"], "newest first, one per id");
    assert_eq!(runs[0].merged_patterns, 2, "run counts round-trip");
    assert_eq!(runs[0].finished_at, t(21));
    assert_eq!(s.list_consolidations(a, 2).await.unwrap().len(), 2, "limit");
    let listed_in_b = s.list_consolidations(b, 10).await.unwrap();
    assert!(listed_in_b.is_empty(), "runs are per namespace");

    // Claims: a run is claimed only when none started after `not_before`.
    let claim = |id: &str, at: i64| ConsolidationRun {
        id: id.into(),
        trigger: "scheduled".into(),
        started_at: t(at),
        finished_at: t(at),
        ..ConsolidationRun::default()
    };
    // (namespace, run id, its start, not_before, claimed, the rule)
    let claims = [
        (a, "late", 30, 19, false, "run-2 started at 20, after 19"),
        (a, "mine", 30, 20, true, "at 20 is not after 20"),
        (a, "theirs", 31, 20, false, "a 2nd claim of a window loses"),
        (b, "b", 31, 20, true, "claims are per namespace"),
    ];
    for (n, id, at, not_before, claimed, rule) in claims {
        let run = claim(id, at);
        let won = s.claim_consolidation(n, &run, t(not_before)).await.unwrap();
        assert_eq!(won, claimed, "claim {id}: {rule}");
    }
    let runs = s.list_consolidations(a, 10).await.unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["mine", "run-2", "run-1", "run-0"], "no loser row");
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
fn estimate_fixture() -> Estimate {
    Estimate {
        expected_steps: Some(3.0),
        expected_duration_ms: Some(1000.0),
        success_chance: Some(0.75),
        sample_size: 2,
        why: "fixture".into(),
        correction: None,
    }
}

async fn estimate_records(s: &dyn Storage, a: &Namespace, b: &Namespace) {
    let e1 = episode("estimate one", TaskType::Testing, "web_api", None, t(0));
    let e2 = episode("estimate two", TaskType::Testing, "cli", None, t(1));
    create(s, a, &[&e1, &e2]).await;
    // The records of `a` with actuals, most recently completed first.
    let listed = |domain, limit| async move { s.query_estimates(a, domain, limit).await.unwrap() };
    let est = estimate_fixture();
    let mut r1 = EstimateRecord {
        episode_id: e1.id,
        domain: "web_api".into(),
        recorded_at: t(2),
        estimate: est.clone(),
        actual: None,
    };
    let r = s.put_estimate(b, &r1).await;
    assert_not_found(&r, "estimate for an episode of another namespace");
    s.put_estimate(a, &r1).await.unwrap();
    assert_eq!(s.get_estimate(a, e1.id).await.unwrap().as_ref(), Some(&r1));
    assert!(s.get_estimate(b, e1.id).await.unwrap().is_none());
    assert!(listed(None, 10).await.is_empty(), "no actuals yet");
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
    let all = listed(None, 10).await;
    let order: Vec<EpisodeId> = all.iter().map(|r| r.episode_id).collect();
    assert_eq!(order, [e2.id, e1.id], "most recently completed first");
    assert_eq!(listed(Some("web_api"), 10).await, [r1]);
    assert_eq!(listed(None, 1).await.len(), 1, "limit");
    assert!(s.query_estimates(b, None, 10).await.unwrap().is_empty());
}

/// A completion stores its actuals with the episode's estimate record when that one is open,
/// in its own transaction; it leaves a closed record as it is and makes none.
async fn completion_closes_its_open_estimate(s: &dyn Storage, a: &Namespace) {
    let e1 = episode("estimate open", TaskType::Testing, "web_api", None, t(0));
    let e2 = episode("estimate closed", TaskType::Testing, "web_api", None, t(1));
    let e3 = episode("no estimate", TaskType::Testing, "web_api", None, t(2));
    create(s, a, &[&e1, &e2, &e3]).await;
    let est = estimate_fixture();
    let open = EstimateRecord {
        episode_id: e1.id,
        domain: "web_api".into(),
        recorded_at: t(3),
        estimate: est.clone(),
        actual: None,
    };
    let closed = EstimateRecord {
        episode_id: e2.id,
        actual: Some(EstimateActual {
            steps: 7,
            duration_ms: 5.0,
            success: false,
            completed_at: t(4),
        }),
        ..open.clone()
    };
    s.put_estimate(a, &open).await.unwrap();
    s.put_estimate(a, &closed).await.unwrap();
    let mut actuals = Vec::new();
    for (e, at) in [(&e1, 60), (&e2, 61), (&e3, 62)] {
        let c = completion_for(e, Outcome::failure("tests still fail"), t(at));
        assert!(s.complete_episode(a, &c).await.unwrap().is_some());
        actuals.push(c.estimate_actual);
    }
    let stored = s.get_estimate(a, e1.id).await.unwrap().unwrap();
    assert_eq!(stored.actual, actuals[0], "the open record closed");
    assert_eq!(stored.estimate, est);
    let stored = s.get_estimate(a, e2.id).await.unwrap();
    assert_eq!(stored, Some(closed), "a closed record stays as it was");
    assert_eq!(s.get_estimate(a, e3.id).await.unwrap(), None);
    let listed = s.query_estimates(a, Some("web_api"), 10).await.unwrap();
    assert_eq!(
        listed.len(),
        2,
        "both closed records are listed: {listed:?}"
    );
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
/// items stay; a second pass finds nothing. Lexical search never held the successful outputs
/// (an episode's indexed work is its tools, actions and errors), and still finds the rest.
pub async fn retention_compacts_only_old_successful_outputs(s: &dyn Storage) {
    let n = ns("retention/a");
    let other = ns("retention/b");
    let [old_ok, old_failed, recent_ok, elsewhere] = retention_fixture(s, &n, &other).await;
    let all = all_learned(50);
    let patterns_before = s.query_patterns(&n, &all).await.unwrap();
    let lessons_before = s.query_lessons(&n, &all).await.unwrap();
    assert!(found(s, &n, "run zebrafish").await.contains(&old_ok.id));
    assert!(
        found(s, &n, "output").await.is_empty(),
        "outputs are not indexed"
    );

    let done = s.compact_step_outputs(&n, t(5_000), 10).await.unwrap();
    assert_eq!(done.episode_ids, [old_ok.id], "only the old success");
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
    let kept = |x: &StepInput| (x.tool.clone(), x.action.clone(), x.parameters.clone());
    for (a, b) in after.steps.iter().zip(&old_ok.steps) {
        let (a, b) = (&a.input, &b.input);
        assert_eq!(kept(a), kept(b), "tool, action and parameters are kept");
        if b.result.is_success() {
            assert_eq!(a.result.text(), "", "successful output emptied");
        } else {
            assert_eq!(a.result, b.result, "errors are kept");
        }
    }
    assert_eq!(
        (&after.outcome, &after.reward, &after.reflection),
        (&old_ok.outcome, &old_ok.reward, &old_ok.reflection)
    );
    for (space, e, what) in [
        (&n, &old_failed, "failed episodes"),
        (&n, &recent_ok, "recent episodes"),
        (&other, &elsewhere, "other namespaces"),
    ] {
        assert_eq!(&get(s, space, e.id).await, e, "{what} untouched");
    }
    assert_eq!(s.query_patterns(&n, &all).await.unwrap(), patterns_before);
    assert_eq!(s.query_lessons(&n, &all).await.unwrap(), lessons_before);
    let by_action = found(s, &n, "run zebrafish").await;
    let all = BTreeSet::from([old_ok.id, old_failed.id, recent_ok.id]);
    assert_eq!(by_action, all, "actions stay searchable");
    let by_error = found(s, &n, "mismatched types").await;
    let failing = BTreeSet::from([old_ok.id, old_failed.id]);
    assert_eq!(by_error, failing, "errors stay searchable");
    assert!(found(s, &n, "output").await.is_empty());

    let again = s.compact_step_outputs(&n, t(5_000), 10).await.unwrap();
    assert_eq!(again, StepCompaction::default(), "2nd pass finds nothing");
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
