//! Every input limit is enforced at the API boundary: accepted at the limit, a typed error at
//! limit + 1, and nothing partially stored. Quotas and the rate limit are per namespace.
//! Secrets are redacted before anything is stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use memory_core::{
    Error, InMemoryStorage, Limits, MemoryConfig, Namespace, NewEpisode, Outcome, QuotaConfig,
    RateLimitConfig, SelfLearningMemory, StepBatchConfig, StepInput, Storage, TaskContext,
    TaskType,
};

fn small_limits() -> Limits {
    Limits {
        max_description_bytes: 50,
        max_steps_per_episode: 5,
        max_tool_bytes: 10,
        max_action_bytes: 20,
        max_step_output_bytes: 30,
        max_parameters_bytes: 40,
        max_artifact_bytes: 8,
        max_artifacts: 3,
        max_verdict_bytes: 25,
        max_episode_bytes: 100_000,
        max_tags: 2,
        max_tag_bytes: 6,
        max_label_bytes: 12,
        max_results: 7,
    }
}

fn setup(limits: Limits) -> (SelfLearningMemory, Arc<dyn Storage>) {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let config = MemoryConfig::default()
        .with_limits(limits)
        .with_steps(StepBatchConfig {
            max_batch: 1,
            flush_interval: Duration::from_secs(60),
        });
    (
        SelfLearningMemory::new(storage.clone(), config).unwrap(),
        storage,
    )
}

fn assert_limit(r: Result<impl std::fmt::Debug, Error>, field: &str) {
    match r {
        Err(Error::LimitExceeded {
            field: f,
            limit,
            actual,
        }) => {
            assert_eq!(f, field);
            assert_eq!(actual, limit + 1, "reported size is the input's");
        }
        other => panic!("expected LimitExceeded on {field}, got {other:?}"),
    }
}

fn s(n: usize) -> String {
    "x".repeat(n)
}

#[tokio::test]
async fn episode_limits_at_and_over() {
    let (m, storage) = setup(small_limits());
    let ns = Namespace::default();
    let ok = |desc: String, ctx: TaskContext| NewEpisode::new(desc, TaskType::Other, ctx);
    // At the limit: accepted.
    let at = TaskContext {
        domain: s(12),
        language: Some(s(12)),
        framework: Some(s(12)),
        tags: vec![s(6), "b".into()],
        ..TaskContext::default()
    };
    m.start_episode(&ns, ok(s(50), at.clone())).await.unwrap();
    // Over: typed error, nothing stored.
    assert_limit(
        m.start_episode(&ns, ok(s(51), at.clone())).await,
        "task_description",
    );
    assert_limit(
        m.start_episode(
            &ns,
            ok(
                s(5),
                TaskContext {
                    domain: s(13),
                    ..at.clone()
                },
            ),
        )
        .await,
        "context.domain",
    );
    assert_limit(
        m.start_episode(
            &ns,
            ok(
                s(5),
                TaskContext {
                    language: Some(s(13)),
                    ..at.clone()
                },
            ),
        )
        .await,
        "context.language",
    );
    assert_limit(
        m.start_episode(
            &ns,
            ok(
                s(5),
                TaskContext {
                    framework: Some(s(13)),
                    ..at.clone()
                },
            ),
        )
        .await,
        "context.framework",
    );
    assert_limit(
        m.start_episode(
            &ns,
            ok(
                s(5),
                TaskContext {
                    tags: vec!["a".into(), "b".into(), "c".into()],
                    ..at.clone()
                },
            ),
        )
        .await,
        "context.tags",
    );
    assert_limit(
        m.start_episode(
            &ns,
            ok(
                s(5),
                TaskContext {
                    tags: vec![s(7)],
                    ..at.clone()
                },
            ),
        )
        .await,
        "context.tag",
    );
    assert!(matches!(
        m.start_episode(&ns, ok("  ".into(), at)).await,
        Err(Error::InvalidInput { .. })
    ));
    assert_eq!(
        storage.namespace_stats(&ns).await.unwrap().episodes,
        1,
        "only the in-limit episode stored"
    );
}

#[tokio::test]
async fn step_limits_at_and_over() {
    let (m, storage) = setup(small_limits());
    let ns = Namespace::default();
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new("t", TaskType::Other, TaskContext::new("d")),
        )
        .await
        .unwrap();
    let params_at = serde_json::json!({ "k": s(32) }); // {"k":"…"} = 8 + 32 = 40 bytes
    assert_eq!(serde_json::to_string(&params_at).unwrap().len(), 40);
    m.log_step(
        &ns,
        id,
        StepInput::ok(s(10), s(20), s(30)).with_parameters(params_at),
    )
    .await
    .unwrap();
    m.log_step(&ns, id, StepInput::error("t", "a", s(30)))
        .await
        .unwrap();
    assert_limit(
        m.log_step(&ns, id, StepInput::ok(s(11), "a", "o")).await,
        "step.tool",
    );
    assert_limit(
        m.log_step(&ns, id, StepInput::ok("t", s(21), "o")).await,
        "step.action",
    );
    assert_limit(
        m.log_step(&ns, id, StepInput::ok("t", "a", s(31))).await,
        "step.output",
    );
    assert_limit(
        m.log_step(&ns, id, StepInput::error("t", "a", s(31))).await,
        "step.output",
    );
    assert_limit(
        m.log_step(
            &ns,
            id,
            StepInput::ok("t", "a", "o").with_parameters(serde_json::json!({ "k": s(33) })),
        )
        .await,
        "step.parameters",
    );
    // Step count: 5 allowed in total.
    for _ in 0..3 {
        m.log_step(&ns, id, StepInput::ok("t", "a", "o"))
            .await
            .unwrap();
    }
    match m.log_step(&ns, id, StepInput::ok("t", "a", "o")).await {
        Err(Error::LimitExceeded {
            field: "steps_per_episode",
            limit: 5,
            actual: 6,
        }) => {}
        other => panic!("expected step-count limit, got {other:?}"),
    }
    let stored = storage.get_episode(&ns, id).await.unwrap().unwrap();
    assert_eq!(stored.steps.len(), 5, "rejected steps were not stored");
    assert_eq!(
        stored
            .steps
            .iter()
            .map(|s| s.step_number)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "no gaps"
    );
}

#[tokio::test]
async fn outcome_limits_at_and_over() {
    let (m, storage) = setup(small_limits());
    let ns = Namespace::default();
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new("t", TaskType::Other, TaskContext::new("d")),
        )
        .await
        .unwrap();
    assert_limit(
        m.complete_episode(&ns, id, Outcome::success(s(26))).await,
        "outcome.verdict",
    );
    assert_limit(
        m.complete_episode(&ns, id, Outcome::failure(s(26))).await,
        "outcome.verdict",
    );
    let arts = |n: usize, len: usize| Outcome::Success {
        verdict: "v".into(),
        artifacts: vec![s(len); n],
    };
    assert_limit(
        m.complete_episode(&ns, id, arts(4, 1)).await,
        "outcome.artifacts",
    );
    assert_limit(
        m.complete_episode(&ns, id, arts(1, 9)).await,
        "outcome.artifact",
    );
    assert!(
        storage
            .get_episode(&ns, id)
            .await
            .unwrap()
            .unwrap()
            .outcome
            .is_none(),
        "nothing completed"
    );
    m.complete_episode(&ns, id, arts(3, 8)).await.unwrap();
    let id2 = m
        .start_episode(
            &ns,
            NewEpisode::new("t", TaskType::Other, TaskContext::new("d")),
        )
        .await
        .unwrap();
    m.complete_episode(&ns, id2, Outcome::success(s(25)))
        .await
        .unwrap();
}

#[tokio::test]
async fn retrieval_limits_at_and_over() {
    use memory_core::retrieval::recommend::RecommendRequest;
    use memory_core::{RetrievalQuery, TaskContext};
    let (m, _) = setup(small_limits());
    let ns = Namespace::default();
    // Result count: 7 is the limit.
    let q = RetrievalQuery::new("find").with_limit(7);
    m.retrieve(&ns, &q).await.unwrap();
    assert_limit(m.retrieve(&ns, &q.clone().with_limit(8)).await, "limit");
    m.recommend(&ns, &RecommendRequest::new("find").with_limit(7))
        .await
        .unwrap();
    assert_limit(
        m.recommend(&ns, &RecommendRequest::new("find").with_limit(8))
            .await,
        "limit",
    );
    // Task text: like a description (50 bytes).
    m.retrieve(&ns, &RetrievalQuery::new(s(50)).with_limit(5))
        .await
        .unwrap();
    assert_limit(m.retrieve(&ns, &RetrievalQuery::new(s(51))).await, "task");
    assert_limit(
        m.recommend(&ns, &RecommendRequest::new(s(51))).await,
        "task",
    );
    // Context labels (12 bytes).
    let at = TaskContext::new(s(12));
    m.retrieve(
        &ns,
        &RetrievalQuery::new("find")
            .with_limit(5)
            .with_context(None, at),
    )
    .await
    .unwrap();
    let over = TaskContext::new(s(13));
    assert_limit(
        m.retrieve(&ns, &RetrievalQuery::new("find").with_context(None, over))
            .await,
        "context.domain",
    );
    // An empty task is invalid input.
    assert!(matches!(
        m.retrieve(&ns, &RetrievalQuery::new("  ")).await,
        Err(Error::InvalidInput { .. })
    ));
    m.shutdown().await.unwrap();
}

#[tokio::test]
async fn whole_episode_size_limit() {
    let limits = Limits {
        max_episode_bytes: 2_000,
        max_step_output_bytes: 10_000,
        ..Limits::default()
    };
    let (m, storage) = setup(limits);
    let ns = Namespace::default();
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new("t", TaskType::Other, TaskContext::new("d")),
        )
        .await
        .unwrap();
    let mut accepted = 0;
    let err = loop {
        match m
            .log_step(&ns, id, StepInput::ok("tool", "act", s(300)))
            .await
        {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "limit never hit");
    };
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                field: "episode",
                limit: 2_000,
                ..
            }
        ),
        "{err:?}"
    );
    let e = storage.get_episode(&ns, id).await.unwrap().unwrap();
    assert_eq!(e.steps.len(), accepted);
    assert!(e.approx_size() <= 2_000);
}

#[tokio::test]
async fn namespace_rules() {
    for bad in ["", "a b", "../etc", "x/"] {
        assert!(
            matches!(Namespace::new(bad), Err(Error::InvalidInput { .. })),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn quotas_are_typed_and_per_namespace() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let config = MemoryConfig::default()
        .with_quotas(QuotaConfig {
            max_episodes: 2,
            max_steps: 3,
        })
        .with_steps(StepBatchConfig {
            max_batch: 1,
            flush_interval: Duration::from_secs(60),
        });
    let m = SelfLearningMemory::new(storage.clone(), config).unwrap();
    let a = Namespace::new("tenant-a").unwrap();
    let b = Namespace::new("tenant-b").unwrap();
    let new = || NewEpisode::new("t", TaskType::Other, TaskContext::new("d"));
    let e1 = m.start_episode(&a, new()).await.unwrap();
    m.start_episode(&a, new()).await.unwrap();
    match m.start_episode(&a, new()).await {
        Err(Error::QuotaExceeded {
            namespace,
            resource: "episodes",
            limit: 2,
        }) => assert_eq!(namespace, "tenant-a"),
        other => panic!("expected episode quota, got {other:?}"),
    }
    for _ in 0..3 {
        m.log_step(&a, e1, StepInput::ok("t", "a", "o"))
            .await
            .unwrap();
    }
    assert!(matches!(
        m.log_step(&a, e1, StepInput::ok("t", "a", "o")).await,
        Err(Error::QuotaExceeded {
            resource: "steps",
            limit: 3,
            ..
        })
    ));
    assert_eq!(storage.namespace_stats(&a).await.unwrap().episodes, 2);
    assert_eq!(storage.namespace_stats(&a).await.unwrap().steps, 3);
    // Another namespace is unaffected.
    let eb = m.start_episode(&b, new()).await.unwrap();
    m.log_step(&b, eb, StepInput::ok("t", "a", "o"))
        .await
        .unwrap();
    // A new instance over the same storage sees the stored counts.
    let m2 = SelfLearningMemory::new(
        storage,
        MemoryConfig::default().with_quotas(QuotaConfig {
            max_episodes: 2,
            max_steps: 3,
        }),
    )
    .unwrap();
    assert!(matches!(
        m2.start_episode(&a, new()).await,
        Err(Error::QuotaExceeded { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_is_typed_per_namespace_and_refills() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryStorage::new());
    let config = MemoryConfig::default().with_rate_limit(RateLimitConfig {
        enabled: true,
        burst: 3,
        per_second: 2.0,
    });
    let m = SelfLearningMemory::new(storage.clone(), config).unwrap();
    let a = Namespace::new("a").unwrap();
    let b = Namespace::new("b").unwrap();
    let new = || NewEpisode::new("t", TaskType::Other, TaskContext::new("d"));
    for _ in 0..3 {
        m.start_episode(&a, new()).await.unwrap();
    }
    match m.start_episode(&a, new()).await {
        Err(Error::RateLimited { retry_after }) => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
                "{retry_after:?}"
            );
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(
        storage.namespace_stats(&a).await.unwrap().episodes,
        3,
        "the limited call stored nothing"
    );
    m.start_episode(&b, new()).await.unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    m.start_episode(&a, new()).await.unwrap();
}

#[tokio::test]
async fn secrets_are_redacted_before_storage() {
    let (m, storage) = setup(Limits::default());
    let ns = Namespace::default();
    let aws = format!("AKIA{}", "ABCDEFGHIJKLMNOP");
    let gh = format!("ghp_{}", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8");
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new(
                format!("rotate key {aws}"),
                TaskType::Other,
                TaskContext::new("security"),
            ),
        )
        .await
        .unwrap();
    m.log_step(
        &ns,
        id,
        StepInput::ok(
            "shell",
            format!("curl -H 'Authorization: token {gh}'"),
            "postgres://admin:hunter2secret@db:5432/app",
        )
        .with_parameters(serde_json::json!({"password": "hunter2", "path": "src/main.rs"})),
    )
    .await
    .unwrap();
    m.complete_episode(
        &ns,
        id,
        Outcome::success(format!(
            "done; api_key={}",
            "sk_live_abcdefghijklmnop123456"
        )),
    )
    .await
    .unwrap();
    let e = storage.get_episode(&ns, id).await.unwrap().unwrap();
    let all = serde_json::to_string(&e).unwrap();
    for secret in [
        aws.as_str(),
        gh.as_str(),
        "hunter2",
        "sk_live_abcdefghijklmnop123456",
    ] {
        assert!(!all.contains(secret), "{secret} leaked into storage: {all}");
    }
    assert!(all.contains("[REDACTED:"), "{all}");
    assert!(all.contains("src/main.rs"), "ordinary values kept");
}
