//! Forgetting: an erased episode leaves no row and no evidence, the learned counts are those of
//! a namespace that never recorded it, and its id is never stored again.

use super::*;

/// The episodes of the forgetting checks: tool sequences shared and not, a failure recovered
/// from (a lesson), a failure not, in two contexts. `(task, type, steps, success)`.
type Spec = (
    &'static str,
    TaskType,
    &'static [(&'static str, bool)],
    bool,
);

const RECORDED: [Spec; 6] = [
    (
        "add the login endpoint",
        TaskType::CodeGeneration,
        &[("read_file", true), ("edit_file", true), ("shell", true)],
        true,
    ),
    (
        "add the logout endpoint",
        TaskType::CodeGeneration,
        &[("read_file", true), ("edit_file", true), ("shell", true)],
        true,
    ),
    (
        "fix the build of the api",
        TaskType::Debugging,
        &[("shell", false), ("edit_file", true), ("shell", true)],
        true,
    ),
    (
        "fix the flaky api test",
        TaskType::Debugging,
        &[("shell", false), ("edit_file", true), ("shell", true)],
        true,
    ),
    (
        "migrate the user table",
        TaskType::CodeGeneration,
        &[("read_file", true), ("shell", false)],
        false,
    ),
    (
        "write the marker-zebra-quartz report",
        TaskType::Analysis,
        &[("web_search", true), ("write_file", true)],
        true,
    ),
];

/// Records `specs` in `n` (each at its index's time), returns the episodes as recorded.
async fn record_all(s: &dyn Storage, n: &Namespace, specs: &[(usize, Spec)]) -> Vec<Episode> {
    let mut out = Vec::new();
    for &(i, (task, kind, spec, success)) in specs {
        let mut e = rust_web(task, kind, i64::try_from(i).unwrap() * 10);
        e.id = fixed_id(i);
        let outcome = if success {
            ok()
        } else {
            Outcome::failure("gave up")
        };
        let (stored, _) = record(s, n, e, spec, outcome).await;
        out.push(stored);
    }
    out
}

/// The same id for the same fixture in every namespace, so two stores can be compared.
fn fixed_id(i: usize) -> EpisodeId {
    format!("0190f0f0-0000-7000-8000-{i:012}").parse().unwrap()
}

/// Every learned item of `n` with its counts, by id (status left out: a key's winner may be
/// decided by the order evidence came in).
async fn learned_counts(s: &dyn Storage, n: &Namespace) -> BTreeMap<String, Vec<u64>> {
    let all = LearnedQuery {
        limit: 1_000,
        include_inactive: true,
        ..LearnedQuery::default()
    };
    let mut out = BTreeMap::new();
    for p in s.query_patterns(n, &all).await.unwrap() {
        let counts = vec![
            p.occurrences,
            p.successes,
            p.total_steps,
            p.total_latency_ms,
        ];
        out.insert(format!("pattern {}", p.id), counts);
    }
    for h in s.query_heuristics(n, &all).await.unwrap() {
        out.insert(format!("heuristic {}", h.id), vec![h.support, h.against]);
    }
    for l in s.query_lessons(n, &all).await.unwrap() {
        let counts = vec![l.occurrences, l.recovered, l.episode_failures];
        out.insert(format!("lesson {}", l.id), counts);
    }
    out
}

pub async fn forgetting_an_episode_is_as_if_never_recorded(s: &dyn Storage) {
    let (n, never) = (ns("conf/forget"), ns("conf/forget-never"));
    let all: Vec<(usize, Spec)> = RECORDED.iter().copied().enumerate().collect();
    let recorded = record_all(s, &n, &all).await;
    // The same history without episodes 2 (a recovery) and 5 (the only one of its kind).
    let kept: Vec<(usize, Spec)> = all
        .iter()
        .copied()
        .filter(|(i, _)| ![2, 5].contains(i))
        .collect();
    record_all(s, &never, &kept).await;
    let forgotten = [&recorded[2], &recorded[5]];
    let vote = |e: &Episode, id: &PatternId| Feedback {
        target: FeedbackTarget::Pattern(id.clone()),
        episode_id: e.id,
        outcome: FeedbackOutcome::Hindered,
        recorded_at: t(500),
    };
    let sequences = learned(|q| q.kind = Some("tool_sequence".into()));
    let shared = s.query_patterns(&n, &sequences).await.unwrap();
    let target = shared
        .iter()
        .find(|p| p.occurrences == 2)
        .unwrap()
        .id
        .clone();
    s.record_feedback(&n, &vote(&recorded[5], &target))
        .await
        .unwrap();

    let ids: Vec<EpisodeId> = forgotten.iter().map(|e| e.id).collect();
    // One of them named twice (as a user might): forgotten and unlearned once, whether the
    // engine's preparation or the store meets the repetition.
    let twice = [ids.clone(), vec![ids[0]]].concat();
    let erasure = prepare_erasure(s, &n, &twice, "recorded by mistake", t(600));
    let mut erasure = erasure.await.unwrap();
    assert_eq!(erasure.episodes.len(), 2, "prepared once each");
    erasure.episodes.push(erasure.episodes[0].clone());
    let report = s.forget_episodes(&n, &erasure).await.unwrap();
    assert_eq!(report.forgotten, ids);
    assert!(report.missing.is_empty());
    assert_eq!(report.rows.episodes, 2);
    assert_eq!(report.rows.steps, 5);
    assert_eq!(report.rows.feedback_events, 1);
    assert!(
        !report.learned_removed.is_empty(),
        "what only episode 5 taught is gone"
    );
    assert_eq!(
        learned_counts(s, &n).await,
        learned_counts(s, &never).await,
        "learned counts equal those of a namespace that never saw the episodes"
    );
    assert!(
        pattern(s, &n, &target).await.effectiveness.hindered == 0,
        "its feedback is gone"
    );
    for e in forgotten {
        assert!(s.get_episode(&n, e.id).await.unwrap().is_none());
    }
    assert!(
        found(s, &n, "zebra quartz").await.is_empty(),
        "nothing found by its words"
    );
    let st = stats(s, &n).await;
    assert_eq!((st.episodes, st.steps), (4, 11));

    // The audit record remains; the id is never stored again, and forgetting again finds nothing.
    let records = s.forgotten_episodes(&n, 10).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.reason == "recorded by mistake" && r.at == t(600))
    );
    let refused = s.create_episode(&n, &recorded[5]).await.unwrap_err();
    assert!(refused.is_forgotten(), "{refused}");
    assert!(
        s.get_episode(&n, recorded[5].id).await.unwrap().is_none(),
        "a replayed start stores nothing"
    );
    let again = prepare_erasure(s, &n, &ids, "again", t(700)).await.unwrap();
    let report = s.forget_episodes(&n, &again).await.unwrap();
    assert_eq!((report.forgotten.len(), report.missing), (0, ids));
    assert!(
        s.forgotten_episodes(&never, 10).await.unwrap().is_empty(),
        "namespaces apart"
    );
}

pub async fn forgetting_refuses_an_episode_changed_since_it_was_read(s: &dyn Storage) {
    let n = ns("conf/forget-changed");
    let e = rust_web("in progress", TaskType::CodeGeneration, 0);
    s.create_episode(&n, &e).await.unwrap();
    let erasure = prepare_erasure(s, &n, &[e.id], "stale", t(10))
        .await
        .unwrap();
    s.append_steps(&n, e.id, &steps(&[("shell", true)], 1, t(1)))
        .await
        .unwrap();
    let refused = s.forget_episodes(&n, &erasure).await.unwrap_err();
    assert!(refused.is_steps_changed(), "{refused}");
    assert!(
        s.get_episode(&n, e.id).await.unwrap().is_some(),
        "nothing written"
    );
    let report = forget_in(s, &n, &[e.id], "read again", t(11))
        .await
        .unwrap();
    assert_eq!(report.forgotten, [e.id]);
}

pub async fn purging_a_namespace_removes_all_but_its_audit_records(s: &dyn Storage) {
    let (n, other) = (ns("conf/purge"), ns("conf/purge-other"));
    let all: Vec<(usize, Spec)> = RECORDED.iter().copied().enumerate().collect();
    let recorded = record_all(s, &n, &all).await;
    record_all(s, &other, &all[..2]).await;
    let kept = stats(s, &other).await;
    let refused = s.purge_namespace(&n).await.unwrap_err();
    assert!(matches!(refused, Error::Conflict { .. }), "{refused}");
    let ids: Vec<EpisodeId> = recorded.iter().map(|e| e.id).collect();
    forget_in(s, &n, &ids, "purge", t(900)).await.unwrap();
    // An item no episode stands behind (put by an import or a consolidation).
    let kind = PatternKind::ToolSequence {
        tools: vec!["plan".into(), "write".into()],
    };
    let obs = PatternObservation::new(kind, ContextKey::default(), EpisodeId::new(), true, t(901));
    let mut items = LearnedItems::default();
    items.push(Pattern::from_observation(&obs).into_item());
    s.put_learned(&n, &items).await.unwrap();
    let rows = s.purge_namespace(&n).await.unwrap();
    assert_eq!(rows.get("patterns"), Some(&1), "{rows:?}");
    let st = stats(s, &n).await;
    assert_eq!(
        (st.episodes, st.patterns, st.heuristics, st.lessons),
        (0, 0, 0, 0)
    );
    assert_eq!(
        s.forgotten_episodes(&n, 10).await.unwrap().len(),
        ids.len().min(10)
    );
    assert_eq!(
        stats(s, &other).await,
        kept,
        "another namespace keeps everything"
    );
    assert!(
        s.purge_namespace(&n)
            .await
            .unwrap()
            .values()
            .all(|n| *n == 0),
        "idempotent"
    );
}
