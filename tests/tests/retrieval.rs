//! Pins retrieval on the real stack (libsql file, real MiniLM model):
//! - the namespace and the filters are applied inside both candidate queries: the best match
//!   of all, in another namespace or outside the filter, never appears;
//! - the embedding queue is durable: episodes completed by a memory without the model are
//!   embedded by the next memory that has it, after a reopen, and then found semantically;
//! - degraded mode (no model) says so and still answers lexically;
//! - an episode embedded while in progress is embedded again, with all its steps, once it
//!   completes;
//! - the retrieval eval on the project's dataset (`eval/retrieval`): hybrid is at least as
//!   good as BM25 on recall@5 and nDCG@10, with and without the queries' context, and within
//!   the measured gap of the vector side (the fusion chosen over four sets, two of them public
//!   conversation benchmarks, gives up 0.013 / 0.028 nDCG@10 against the vector alone here;
//!   see docs/EVALUATION.md, "Retrieval on real text").
//!
//! Tests needing the model skip with a note outside CI and fail under CI without it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::retrieval::{embedding_text, step_windows, vector_key, work_text};
use memory_core::{
    Embedder, EmbeddingStore, EpisodeFilter, MemoryConfig, Namespace, NewEpisode, Outcome,
    RateLimitConfig, RetrievalMethod, RetrievalQuery, SelfLearningMemory, StepInput, SystemClock,
    TaskContext, TaskType,
};
use memory_eval::retrieval::{EvalDataset, RetrievalEval};
use memory_storage_turso::TursoStorage;

fn config() -> MemoryConfig {
    MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..MemoryConfig::default()
    }
}

async fn m_storage(dir: &std::path::Path) -> Arc<TursoStorage> {
    Arc::new(TursoStorage::open_in_data_dir(dir).await.unwrap())
}

async fn open(dir: &std::path::Path, embedder: Option<Arc<dyn Embedder>>) -> SelfLearningMemory {
    let storage = m_storage(dir).await;
    SelfLearningMemory::with_embedder(storage, config(), Arc::new(SystemClock), embedder).unwrap()
}

async fn record(
    m: &SelfLearningMemory,
    ns: &Namespace,
    task: &str,
    domain: &str,
    language: &str,
) -> memory_core::EpisodeId {
    let ctx = TaskContext::new(domain).with_language(language);
    let id = m
        .start_episode(ns, NewEpisode::new(task, TaskType::Debugging, ctx))
        .await
        .unwrap();
    m.log_step(ns, id, StepInput::ok("read_file", "inspect", "ok"))
        .await
        .unwrap();
    m.complete_episode(ns, id, Outcome::success("done"))
        .await
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_filters_apply_inside_the_query() {
    namespace_and_filters(u32::MAX).await;
}

/// The same with lexical candidates from the in-process BM25 index (used from
/// `in_process_lexical_from` episodes; forced here), plus: an episode completed after the
/// namespace was indexed is found lexically at once, before it is embedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_and_filters_apply_inside_the_in_process_lexical_index() {
    namespace_and_filters(0).await;
}

async fn namespace_and_filters(in_process_lexical_from: u32) {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.retrieval.in_process_lexical_from = in_process_lexical_from;
    let m = SelfLearningMemory::with_embedder(
        m_storage(dir.path()).await,
        cfg,
        Arc::new(SystemClock),
        Some(Arc::new(model)),
    )
    .unwrap();
    let mine = Namespace::new("team/a").unwrap();
    let theirs = Namespace::new("team/b").unwrap();
    let task = "fix the Postgres deadlock between two workers updating orders";
    // The exact task lives in the other namespace and, in mine, only outside the filter.
    let other_ns = record(&m, &theirs, task, "databases", "rust").await;
    let filtered_out = record(&m, &mine, task, "databases", "python").await;
    let kept = record(
        &m,
        &mine,
        "resolve intermittent deadlocks when workers update rows concurrently",
        "databases",
        "rust",
    )
    .await;
    record(
        &m,
        &mine,
        "add a dark mode toggle to the settings page",
        "frontend",
        "rust",
    )
    .await;
    m.embed_pending(&mine).await.unwrap();
    m.embed_pending(&theirs).await.unwrap();

    let filter = EpisodeFilter {
        language: Some("rust".into()),
        ..EpisodeFilter::default()
    };
    for method in [
        RetrievalMethod::Lexical,
        RetrievalMethod::Vector,
        RetrievalMethod::Hybrid,
    ] {
        let q = RetrievalQuery::new(task)
            .with_filter(filter.clone())
            .with_method(method);
        let got = m.retrieve(&mine, &q).await.unwrap();
        let ids: Vec<_> = got.results.iter().map(|r| r.episode.id).collect();
        assert!(!ids.contains(&other_ns), "{method}: other namespace leaked");
        assert!(!ids.contains(&filtered_out), "{method}: filter not applied");
        assert_eq!(ids.first(), Some(&kept), "{method}: {ids:?}");
        assert!(
            got.results
                .iter()
                .all(|r| r.episode.context.language.as_deref() == Some("rust"))
        );
        // Every result explains itself.
        assert!(got.results.iter().all(|r| !r.why.is_empty()));
    }
    // Unfiltered, the exact match in my namespace comes first, with a strong match.
    let got = m.retrieve(&mine, &RetrievalQuery::new(task)).await.unwrap();
    assert_eq!(got.results[0].episode.id, filtered_out);
    assert!(got.strong_match && got.confidence.unwrap() > 0.9, "{got:?}");
    // The episode was embedded with its context words and its steps, the bare query without:
    // still close in plain cosine, and the closest after centering.
    let best = &got.results[0].breakdown;
    assert!(best.similarity.unwrap() > 0.7, "{best:?}");
    assert!(
        got.results[1..]
            .iter()
            .all(|r| r.breakdown.cosine < best.cosine),
        "{got:?}"
    );

    // Completed after the drain: found lexically before any embedding of it.
    let late = record(
        &m,
        &mine,
        "rotate the expired TLS certificate of the billing gateway",
        "web_api",
        "rust",
    )
    .await;
    let q = RetrievalQuery::new("expired TLS certificate").with_method(RetrievalMethod::Lexical);
    let got = m.retrieve(&mine, &q).await.unwrap();
    assert_eq!(got.results.first().map(|r| r.episode.id), Some(late));
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_queue_survives_a_restart_and_degraded_mode_stays_lexical() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::default();
    // First run: no model. Retrieval is lexical and says so; nothing is embedded.
    let m = open(dir.path(), None).await;
    assert!(m.retrieval_degraded().is_some());
    record(
        &m,
        &ns,
        "speed up the slow product search query",
        "databases",
        "go",
    )
    .await;
    record(
        &m,
        &ns,
        "write release notes for version two",
        "documentation",
        "go",
    )
    .await;
    let got = m
        .retrieve(&ns, &RetrievalQuery::new("slow search query"))
        .await
        .unwrap();
    assert_eq!(got.method, RetrievalMethod::Lexical);
    assert!(got.degraded.is_some() && got.confidence.is_none() && !got.strong_match);
    assert_eq!(got.results.len(), 1, "lexical results still come back");
    let rec = m
        .recommend(&ns, &RecommendRequest::new("slow search query"))
        .await
        .unwrap();
    assert!(rec.degraded.is_some());
    assert_eq!(rec.episodes.len(), 1);
    m.shutdown().await.unwrap();

    // Second run, with the model: the queue (episodes without an embedding) is in storage.
    let model: Arc<dyn Embedder> = Arc::new(model);
    let model_id = vector_key(model.model_id(), &config().retrieval);
    let storage = m_storage(dir.path()).await;
    assert_eq!(
        storage
            .episodes_missing_embedding(&ns, &model_id, None, 10)
            .await
            .unwrap()
            .len(),
        2,
        "the queue is in storage"
    );
    let m = SelfLearningMemory::with_embedder(
        storage.clone(),
        config(),
        Arc::new(SystemClock),
        Some(model),
    )
    .unwrap();
    // The background task may drain it first; either way, once this returns it is empty.
    m.embed_pending(&ns).await.unwrap();
    assert!(
        storage
            .episodes_missing_embedding(&ns, &model_id, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A paraphrase sharing no words with the task is found semantically.
    let got = m
        .retrieve(
            &ns,
            &RetrievalQuery::new("make the catalogue lookup faster")
                .with_method(RetrievalMethod::Vector),
        )
        .await
        .unwrap();
    assert!(got.degraded.is_none());
    assert_eq!(
        got.results[0].episode.task_description,
        "speed up the slow product search query"
    );
    m.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_embedded_in_progress_is_embedded_again_once_complete() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let model = Arc::new(model);
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::default();
    let storage = m_storage(dir.path()).await;
    let m = SelfLearningMemory::with_embedder(
        storage.clone(),
        config(),
        Arc::new(SystemClock),
        Some(model.clone() as Arc<dyn Embedder>),
    )
    .unwrap();
    let key = vector_key(model.model_id(), &config().retrieval);
    let dims = model.dimensions();
    // The stored value is the episode's own vector, then one per step window.
    let stored_all = || async {
        let page = storage.scan_embeddings(&ns, &key, None, 10).await.unwrap();
        assert_eq!(page.len(), 1);
        page[0].vector.clone()
    };
    let stored = || async { stored_all().await[..dims].to_vec() };
    let ctx = TaskContext::new("testing").with_language("go");
    let id = m
        .start_episode(
            &ns,
            NewEpisode::new("fix the flaky date test", TaskType::Testing, ctx),
        )
        .await
        .unwrap();
    m.log_step(&ns, id, StepInput::ok("shell", "run the tests", "ok"))
        .await
        .unwrap();
    m.flush().await.unwrap();
    // Embedded in progress: by this drain, or by the background task just before it (a full
    // test run showed that race once); `stored` checks the vector is there either way.
    assert!(m.embed_pending(&ns).await.unwrap() <= 1);
    let partial = stored().await;

    m.log_step(
        &ns,
        id,
        StepInput::error(
            "shell",
            "run the tests at midnight",
            "expected 23:59, got 00:00",
        ),
    )
    .await
    .unwrap();
    m.log_step(
        &ns,
        id,
        StepInput::ok("edit_file", "inject a fake clock", "ok"),
    )
    .await
    .unwrap();
    m.complete_episode(&ns, id, Outcome::success("fixed"))
        .await
        .unwrap();
    // The background task may re-embed it first; either way it is done once this returns.
    m.embed_pending(&ns).await.unwrap();
    let full = stored().await;

    let episode = m.get_episode(&ns, id).await.unwrap();
    let texts = vec![
        embedding_text(
            &episode.task_description,
            Some(episode.task_type),
            Some(&episode.context),
        ),
        work_text(&episode),
    ];
    let v = model.embed(&texts).await.unwrap();
    let mut want: Vec<f32> = v[0].iter().zip(&v[1]).map(|(a, b)| a + 0.5 * b).collect();
    memory_core::l2_normalize(&mut want);
    let close = memory_core::cosine(&full, &want);
    assert!(
        close > 0.999,
        "the stored vector is the completed episode's: {close}"
    );
    assert!(
        memory_core::cosine(&partial, &want) < close - 0.001,
        "and differs from the one made in progress"
    );
    // Its three short steps fit in one window, which its own vector covers: none stored.
    let windows = step_windows(&episode, config().retrieval.step_windows as usize);
    assert_eq!(windows.len(), 1);
    assert_eq!(stored_all().await.len(), dims);
    m.shutdown().await.unwrap();
}

/// Filler turns of a long conversation about `topic` (no pets in any of them).
fn chatter(topic: &str, n: usize) -> Vec<String> {
    let lines = [
        "I spent the weekend reading about {t} and it was more fun than I expected.",
        "My sister keeps asking me about {t}, she wants to try it too.",
        "Honestly {t} takes a lot of patience, but I am getting better at it.",
        "We should plan a day around {t} next month, what do you think?",
        "I found an old notebook full of my notes on {t} from years ago.",
        "The people at the club were talking about {t} all evening.",
        "I bought a new book on {t}; the chapter on beginners is great.",
        "Work was busy this week, so {t} had to wait until Sunday.",
    ];
    (0..n)
        .map(|i| {
            let who = if i % 2 == 0 { "Caroline" } else { "Melanie" };
            let line = lines[i % lines.len()].replace("{t}", topic);
            format!("{who}: {line} ({})", i / lines.len() + 1)
        })
        .collect()
}

/// A detail said in the 33rd turn of a 40-turn conversation, far past what an episode's own
/// vector covers, is found by its meaning alone (vector retrieval, the question shares almost
/// no words with the turn) through the episode's step windows; `recommend` names the turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_deep_in_a_long_episode_is_found_by_its_step_window() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path(), Some(Arc::new(model))).await;
    let ns = Namespace::new("retrieval/long").unwrap();
    let topics = [
        "pottery",
        "hiking",
        "chess",
        "baking",
        "gardening",
        "painting",
        "running",
        "cycling",
        "photography",
        "knitting",
        "swimming",
        "guitar",
    ];
    let mut target = None;
    for (n, topic) in topics.iter().enumerate() {
        let task = format!(
            "conversation between Caroline and Melanie, sitting {}",
            n + 1
        );
        let id = m
            .start_episode(
                &ns,
                NewEpisode::new(task, TaskType::Other, TaskContext::new("conversation")),
            )
            .await
            .unwrap();
        let mut turns = chatter(topic, 40);
        if n == 7 {
            turns[32] = "Caroline: Last spring I adopted a greyhound from the shelter, \
                         he is called Biscuit and sleeps on my feet."
                .to_owned();
            target = Some(id);
        }
        for turn in turns {
            m.log_step(&ns, id, StepInput::ok("message", turn, ""))
                .await
                .unwrap();
        }
        m.complete_episode(&ns, id, Outcome::success("the conversation ended"))
            .await
            .unwrap();
    }
    let target = target.unwrap();
    m.embed_pending(&ns).await.unwrap();
    let question = "What kind of pet does Caroline have at home?";
    let got = m
        .retrieve(
            &ns,
            &RetrievalQuery::new(question)
                .with_method(RetrievalMethod::Vector)
                .with_limit(3),
        )
        .await
        .unwrap();
    let first = &got.results[0];
    assert_eq!(first.episode.id, target, "{:#?}", got.results);
    let window = first.breakdown.window.expect("a step window matched");
    let episode = m.get_episode(&ns, target).await.unwrap();
    let named = memory_core::retrieval::matched_step(&episode, question, Some(window), 16);
    assert_eq!(named.map(|s| s.step_number), Some(33));

    // `recommend` shows only episodes close in meaning (centered cosine within 0.1 of the
    // strong-match line); the question above sits at that edge (0.26), so this one asks about
    // the turn more directly.
    let asked = "Which dog did Caroline adopt from the shelter?";
    let advice = m
        .recommend(&ns, &RecommendRequest::new(asked).with_limit(3))
        .await
        .unwrap();
    let shown = advice
        .episodes
        .iter()
        .find(|e| e.retrieved.episode.id == target)
        .expect("the conversation is among the similar episodes");
    let step = shown.retrieved.matched_step.as_ref().expect("a step named");
    assert_eq!(step.step_number, 33);
    assert!(step.excerpt.contains("greyhound"), "{step:?}");
    assert!(
        shown
            .retrieved
            .why
            .contains("matched step 33: \"Caroline: Last spring"),
        "{}",
        shown.retrieved.why
    );
    m.shutdown().await.unwrap();
}

/// A namespace's index is written as a snapshot once it is large enough; the next process
/// restores it, takes in what changed after it from the change log (episodes recorded and
/// completed by another process), and answers exactly as a process that read every
/// embedding; a damaged snapshot is passed over for the embeddings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_snapshot_is_restored_and_caught_up_with_later_changes() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let model: Arc<dyn Embedder> = Arc::new(model);
    let dir = tempfile::tempdir().unwrap();
    let ns = Namespace::new("snapshots").unwrap();
    let mut cfg = config();
    cfg.retrieval.index_snapshot_from = 8;
    let open_with = |cfg: MemoryConfig| {
        let model = Arc::clone(&model);
        let dir = dir.path().to_path_buf();
        async move {
            SelfLearningMemory::with_embedder(
                m_storage(&dir).await,
                cfg,
                Arc::new(SystemClock),
                Some(model),
            )
            .unwrap()
        }
    };
    let tasks = [
        ("fix the flaky date test", "testing", "go"),
        ("add pagination to the orders endpoint", "web_api", "python"),
        ("speed up the slow report query", "databases", "sql"),
        ("retry failed payment webhooks", "payments", "rust"),
        ("parse the new config file format", "cli", "rust"),
        ("upgrade the logging library", "infra", "java"),
        ("fix the memory leak in the image cache", "mobile", "kotlin"),
        ("add a dark mode toggle", "frontend", "typescript"),
        ("document the deploy steps", "infra", "bash"),
        ("migrate the users table to uuid keys", "databases", "sql"),
    ];
    let writer = open_with(cfg.clone()).await;
    for (task, domain, language) in tasks {
        record(&writer, &ns, task, domain, language).await;
    }
    writer.embed_pending(&ns).await.unwrap();
    let query = RetrievalQuery::new("the payment webhook retries fail").with_limit(5);
    writer.retrieve(&ns, &query).await.unwrap();
    let status = writer.retriever().index_status(&ns).unwrap();
    assert_eq!(status.episodes, 10);
    assert!(
        !status.restored_from_snapshot,
        "the first load reads the embeddings"
    );

    // Started in the background by the load; `finish_snapshots` (which `shutdown` calls)
    // waits for it.
    writer.retriever().finish_snapshots().await;
    let storage = m_storage(dir.path()).await;
    let key = vector_key(model.model_id(), &cfg.retrieval);
    let snapshot = storage
        .get_index_snapshot(&ns, &key)
        .await
        .unwrap()
        .expect("the snapshot is stored once finish_snapshots returns");

    // Written after the snapshot: a new episode, found by the next process.
    let late = record(
        &writer,
        &ns,
        "rotate the expired TLS certificate on the gateway",
        "infra",
        "bash",
    )
    .await;
    writer.embed_pending(&ns).await.unwrap();

    let reader = open_with(cfg.clone()).await;
    let found = reader
        .retrieve(
            &ns,
            &RetrievalQuery::new("the gateway TLS certificate expired").with_limit(3),
        )
        .await
        .unwrap();
    assert_eq!(found.results[0].episode.id, late, "{found:?}");
    let status = reader.retriever().index_status(&ns).unwrap();
    assert!(status.restored_from_snapshot);
    assert_eq!(status.episodes, 11);
    assert!(status.log_position > snapshot.as_of);

    // The same episodes, the same best one, scores within a hair: the namespace's mean vector
    // (what cosines are centered on) is kept from when it was last computed, which may be
    // one episode earlier in one process than in the other.
    let same = |a: &memory_core::retrieval::Retrieval, b: &memory_core::retrieval::Retrieval| {
        let ids = |r: &memory_core::retrieval::Retrieval| -> Vec<_> {
            let mut ids: Vec<_> = r.results.iter().map(|h| h.episode.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(a), ids(b), "{a:?}\n{b:?}");
        assert_eq!(a.results[0].episode.id, b.results[0].episode.id);
        for x in &a.results {
            let y = b
                .results
                .iter()
                .find(|y| y.episode.id == x.episode.id)
                .unwrap();
            assert!((x.score - y.score).abs() < 0.05, "{x:?}\n{y:?}");
        }
    };
    same(
        &writer.retrieve(&ns, &query).await.unwrap(),
        &reader.retrieve(&ns, &query).await.unwrap(),
    );

    // A damaged snapshot is passed over: the next process reads the embeddings.
    storage
        .put_index_snapshot(
            &ns,
            &key,
            &memory_core::IndexSnapshot::new(snapshot.as_of, vec![b'M', b'I', b'D', b'X', 9, 9]),
        )
        .await
        .unwrap();
    let fallback = open_with(cfg).await;
    same(
        &writer.retrieve(&ns, &query).await.unwrap(),
        &fallback.retrieve(&ns, &query).await.unwrap(),
    );
    let status = fallback.retriever().index_status(&ns).unwrap();
    assert!(!status.restored_from_snapshot);
    assert_eq!(status.episodes, 11);
    for m in [writer, reader, fallback] {
        m.shutdown().await.unwrap();
    }
}

fn dataset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../eval/retrieval")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_ranks_above_both_its_parts_on_the_project_dataset() {
    let Some(model) = tests::model::minilm().unwrap() else {
        return;
    };
    let ds = EvalDataset::load(&dataset_dir()).unwrap();
    let storage = Arc::new(TursoStorage::open_local(":memory:").await.unwrap());
    let m = SelfLearningMemory::with_embedder(
        storage,
        config(),
        Arc::new(SystemClock),
        Some(Arc::new(model)),
    )
    .unwrap();
    let report = RetrievalEval::new(&m, Namespace::new("eval").unwrap())
        .run(&ds)
        .await
        .unwrap();
    assert_eq!(report.episodes, ds.episodes.len());
    for mode in &report.modes {
        let score = |method| {
            mode.methods
                .iter()
                .find(|s| s.method == method)
                .map(|s| (s.recall_at_5, s.ndcg_at_10))
                .unwrap()
        };
        let hybrid = score(RetrievalMethod::Hybrid);
        let lexical = score(RetrievalMethod::Lexical);
        let vector = score(RetrievalMethod::Vector);
        eprintln!(
            "{:?}: (R@5, nDCG@10) hybrid {hybrid:.3?}, lexical {lexical:.3?}, vector {vector:.3?}",
            mode.mode
        );
        // The goal: never below the better part. Measured with the defaults on 11-29:
        // +0.030 / +0.018 over the vector with context, +0.011 / +0.006 on bare task text;
        // 0.003 of room for the model's arithmetic on another machine.
        let best = (lexical.0.max(vector.0), lexical.1.max(vector.1));
        assert!(
            hybrid.0 >= best.0 - 0.003 && hybrid.1 >= best.1 - 0.003,
            "{:?}: hybrid {hybrid:?} below the better part: lexical {lexical:?}, vector {vector:?}",
            mode.mode
        );
    }
    m.shutdown().await.unwrap();
}
