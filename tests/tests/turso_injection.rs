//! Pins that no stored text can act as SQL or FTS5 syntax in `TursoStorage`: every text field
//! (task description, domain, language, framework, tags, step tool / action / parameters /
//! output / error, outcome verdict / reason / artifacts, the reflection built from them,
//! pattern / heuristic / lesson ids and texts, embedding model names, feedback targets)
//! carries each of 40+ hostile payloads (`'; DROP TABLE episodes; --`, `" OR 1=1`, FTS5
//! syntax such as `NEAR(`, `*`, `"`, `-`, `AND OR NOT`, column filters, NUL bytes, unicode,
//! very long strings). Everything comes back verbatim, filters on those values find exactly
//! the right episode, lexical search with each payload returns without error, and afterwards
//! every table is present, the counts are exact, and SQLite's and FTS5's integrity checks
//! pass. Runs on a local file and (when sqld is installed) on a remote sqld, whose Hrana
//! JSON encoding is a separate path for the same text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use memory_core::{
    ContextKey, EmbeddingStore, Episode, EpisodeFilter, EpisodeQuery, EpisodeStore, ExecutionStep,
    Feedback, FeedbackOutcome, FeedbackTarget, HeuristicObservation, LearnedItems, LearnedQuery,
    LearningStore, LearningUpdate, Namespace, NewEpisode, Outcome, PatternId, PatternKind,
    PatternObservation, StepInput, StorageExt, TaskContext, TaskType, TextQuery,
};
use memory_storage_turso::{TursoConfig, TursoStorage};
use memory_testkit::conformance::completion_for;
use tests::sqld::{SqldServer, require_sqld};

fn payloads() -> Vec<String> {
    let mut p: Vec<String> = [
        "'; DROP TABLE episodes; --",
        "\" OR 1=1",
        "' OR '1'='1",
        "1; DELETE FROM steps WHERE 1=1; --",
        "') ON CONFLICT DO NOTHING; --",
        "Robert'); DROP TABLE patterns;--",
        "' UNION SELECT sql FROM sqlite_master --",
        "'; ATTACH DATABASE '/tmp/evil.db' AS evil; --",
        "'; PRAGMA writable_schema = ON; --",
        "%' AND 1=0 UNION SELECT NULL, NULL --",
        "*/ SELECT 1; /*",
        "?1 ?2 :name @p $x ?",
        "NEAR(",
        "NEAR(rate limiting, 3)",
        "*",
        "\"",
        "\"\"",
        "-",
        "-rate -limiting",
        "AND OR NOT",
        "rate AND OR NOT limiting",
        "^start",
        "body: rate",
        "{body ns episode_id}: x",
        "(((",
        ")",
        "+ + +",
        "rate*",
        "text\0with\0nuls",
        "\0",
        "ünïcödé façade",
        "日本語のテキスト 検索",
        "emoji 🦀🔥 crab",
        "مرحبا بالعالم",
        "zero\u{200b}width\u{feff}bom",
        "e\u{301} combining",
        "line\r\nbreak\ttab",
        "C:\\path\\to\\file \\' \\\"",
        "%_ like wildcards",
        "0x414243 X'4142'",
        "NULL",
        "'",
        ";",
        "--",
        "/*",
        "{\"a\": \"b\\\"}",
        "SELECT * FROM episodes",
        "episode_text MATCH '*'",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    p.push("'".repeat(5_000));
    p.push(format!("{}\0{}", "x".repeat(3_000), "🦀".repeat(500)));
    p
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + secs, 987_654_321).unwrap()
}

fn episode_with(payload: &str, i: i64) -> Episode {
    let ctx = TaskContext {
        domain: payload.to_owned(),
        language: Some(payload.to_owned()),
        framework: Some(payload.to_owned()),
        tags: vec![payload.to_owned(), format!("tag-{i}")],
        ..TaskContext::default()
    };
    let mut e = Episode::start(
        NewEpisode::new(payload, TaskType::Debugging, ctx),
        t(i * 10),
    );
    let params =
        serde_json::json!({ payload: payload, "list": [payload, i], "nested": { "k": payload } });
    e.steps = vec![
        ExecutionStep {
            step_number: 1,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: t(i * 10 + 1),
            input: StepInput::error(payload, payload, payload).with_parameters(params.clone()),
        },
        ExecutionStep {
            step_number: 2,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: t(i * 10 + 2),
            input: StepInput::ok(payload, payload, payload)
                .with_parameters(params)
                .with_latency_ms(7)
                .with_tokens(3),
        },
    ];
    e
}

async fn exercise(s: &TursoStorage) {
    let ns = Namespace::new("inj/ection").unwrap();
    let payloads = payloads();
    assert!(payloads.len() >= 32, "at least 32 payloads");
    let mut ids = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let i = i as i64;
        let full = episode_with(payload, i);
        let mut bare = full.clone();
        let steps = std::mem::take(&mut bare.steps);
        s.create_episode(&ns, &bare).await.unwrap();
        s.append_steps(&ns, bare.id, &steps).await.unwrap();
        let outcome = if i % 2 == 0 {
            Outcome::Success {
                verdict: payload.clone(),
                artifacts: vec![payload.clone()],
            }
        } else {
            Outcome::Failure {
                reason: payload.clone(),
            }
        };
        let completion = completion_for(&full, outcome.clone(), t(i * 10 + 5));
        let changes = s.complete_episode(&ns, &completion).await.unwrap().unwrap();

        let mut expected = full.clone();
        expected.outcome = Some(outcome);
        expected.reward = Some(completion.reward.clone());
        expected.reflection = Some(completion.reflection.clone());
        expected.completed_at = Some(completion.completed_at);
        let got = s.get_episode(&ns, full.id).await.unwrap().unwrap();
        assert_eq!(
            *got, expected,
            "episode with payload {payload:?} round-trips verbatim"
        );

        // Filters on the payload values find exactly this episode.
        let filter = EpisodeFilter {
            domain: Some(payload.clone()),
            language: Some(payload.clone()),
            framework: Some(payload.clone()),
            tag: Some(payload.clone()),
            ..EpisodeFilter::default()
        };
        let found = s
            .query_episodes(
                &ns,
                &EpisodeQuery {
                    filter: filter.clone(),
                    limit: 10,
                    offset: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![full.id],
            "filter by {payload:?}"
        );
        assert_eq!(found[0].task_description, *payload);
        assert_eq!(found[0].context, full.context);

        // Lexical search with the payload as query text never fails.
        for filter in [EpisodeFilter::default(), filter] {
            let hits = s
                .search_episodes(
                    &ns,
                    &TextQuery {
                        text: payload.clone(),
                        filter,
                        limit: 100,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("search for {payload:?} failed: {e}"));
            assert!(hits.iter().all(|h| h.score > 0.0));
        }

        // Embedding model names are text too.
        let v = vec![0.25_f32, -1.5, 3.0];
        s.put_embedding(&ns, full.id, payload, &v).await.unwrap();
        assert_eq!(
            s.get_embedding(&ns, full.id, payload).await.unwrap(),
            Some(v)
        );
        assert!(
            !s.episodes_missing_embedding(&ns, payload, None, 1_000)
                .await
                .unwrap()
                .contains(&full.id)
        );

        // Learned items with hostile ids and texts.
        let ctx = ContextKey {
            task_type: Some(TaskType::Debugging),
            domain: Some(payload.clone()),
            language: Some(payload.clone()),
        };
        let mut pattern = changes.patterns[0].item.clone();
        pattern.id = PatternId(payload.clone());
        pattern.kind = PatternKind::DecisionPoint {
            condition: payload.clone(),
            choice: payload.clone(),
        };
        pattern.context = ctx.clone();
        s.put_learned(
            &ns,
            &LearnedItems {
                patterns: vec![pattern.clone()],
                ..LearnedItems::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            s.get_pattern(&ns, &pattern.id).await.unwrap().as_ref(),
            Some(&pattern)
        );
        let q = LearnedQuery {
            domain: Some(payload.clone()),
            language: Some(payload.clone()),
            kind: Some(payload.clone()),
            include_inactive: true,
            ..LearnedQuery::default()
        };
        assert!(
            s.query_patterns(&ns, &q).await.unwrap().is_empty(),
            "kind is never a payload"
        );
        let fb = Feedback {
            target: FeedbackTarget::Pattern(pattern.id.clone()),
            episode_id: full.id,
            outcome: FeedbackOutcome::Helped,
            recorded_at: t(i * 10 + 6),
        };
        s.record_feedback(&ns, &fb).await.unwrap();
        assert_eq!(s.list_feedback(&ns, &fb.target).await.unwrap(), vec![fb]);

        let obs = HeuristicObservation::new(
            payload.clone(),
            payload.clone(),
            ctx.clone(),
            full.id,
            true,
            t(i),
        );
        let pobs = PatternObservation::new(
            PatternKind::ToolSequence {
                tools: vec![payload.clone()],
            },
            ctx,
            full.id,
            true,
            t(i),
        );
        let learned = s
            .apply_learning(
                &ns,
                &LearningUpdate {
                    episode_id: full.id,
                    observed_at: t(i),
                    patterns: vec![pobs],
                    heuristics: vec![obs.clone()],
                    lessons: Vec::new(),
                },
            )
            .await
            .unwrap();
        let h = s.get_heuristic(&ns, &obs.id).await.unwrap().unwrap();
        assert_eq!(
            (h.condition.as_str(), h.action.as_str()),
            (payload.as_str(), payload.as_str())
        );
        assert_eq!(h, learned.heuristics[0].item);
        let by_ctx = s
            .query_heuristics(
                &ns,
                &LearnedQuery {
                    task_type: Some(TaskType::Debugging),
                    domain: Some(payload.clone()),
                    language: Some(payload.clone()),
                    limit: 1_000,
                    ..LearnedQuery::default()
                },
            )
            .await
            .unwrap();
        assert!(
            by_ctx.iter().any(|x| x.id == obs.id),
            "heuristic found by its payload context"
        );
        for lesson in &changes.lessons {
            assert_eq!(
                s.get_lesson(&ns, &lesson.item.id).await.unwrap().as_ref(),
                Some(&lesson.item)
            );
        }
        ids.push(full.id);
    }

    let stats = s.namespace_stats(&ns).await.unwrap();
    assert_eq!(
        stats.episodes,
        payloads.len() as u64,
        "no episode lost or added"
    );
    assert_eq!(stats.completed, payloads.len() as u64);
    assert_eq!(stats.steps, 2 * payloads.len() as u64);
    assert_eq!(stats.feedback, payloads.len() as u64);
    let listed = s
        .query_episodes(
            &ns,
            &EpisodeQuery {
                limit: 1_000,
                ..EpisodeQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|x| x.id).collect::<BTreeSet<_>>(),
        ids.iter().copied().collect::<BTreeSet<_>>()
    );
    assert_eq!(s.list_namespaces().await.unwrap(), vec![ns]);
}

const TABLES: &[&str] = &[
    "embeddings",
    "episode_tags",
    "episode_terms",
    "episodes",
    "feedback",
    "heuristics",
    "lessons",
    "patterns",
    "schema_version",
    "step_pages",
    "text_rows",
    "text_stats",
];

async fn check_integrity(conn: &libsql::Connection) {
    let mut rows = conn
        .query(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            (),
        )
        .await
        .unwrap();
    let mut names = BTreeSet::new();
    while let Some(row) = rows.next().await.unwrap() {
        names.insert(row.get::<String>(0).unwrap());
    }
    for table in TABLES {
        assert!(
            names.contains(*table),
            "table {table} is intact (found {names:?})"
        );
    }
    let mut rows = conn.query("PRAGMA integrity_check", ()).await.unwrap();
    let row = rows.next().await.unwrap().unwrap();
    assert_eq!(row.get::<String>(0).unwrap(), "ok");
    drop(rows);
    conn.execute(
        "INSERT INTO episode_terms (episode_terms, rank) VALUES ('integrity-check', 1)",
        (),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_round_trip_on_a_local_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inject.db");
    let s = TursoStorage::open_local(&path).await.unwrap();
    exercise(&s).await;
    drop(s);
    let db = libsql::Builder::new_local(&path).build().await.unwrap();
    check_integrity(&db.connect().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_round_trip_on_remote_sqld() {
    if require_sqld().is_none() {
        return;
    }
    let mut server = SqldServer::start().await.unwrap();
    let s = TursoStorage::open(TursoConfig::remote(server.url(), None).build().unwrap())
        .await
        .unwrap();
    exercise(&s).await;
    let db = libsql::Builder::new_remote(server.url(), String::new())
        .build()
        .await
        .unwrap();
    check_integrity(&db.connect().unwrap()).await;
    server.stop().await;
}

#[test]
fn there_are_enough_distinct_payloads() {
    let p = payloads();
    assert_eq!(p.iter().collect::<BTreeSet<_>>().len(), p.len());
    assert!(p.len() >= 32);
}
