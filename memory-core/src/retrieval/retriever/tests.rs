//! Unit tests of the retriever.

use super::*;
use crate::episode::{TaskContext, TaskType};
use crate::error::Result;

fn hit(summary: &Arc<EpisodeSummary>, cosine: f32, similarity: f32, row: u16) -> VectorHit {
    VectorHit {
        summary: Arc::clone(summary),
        cosine,
        similarity,
        row,
    }
}

fn summary() -> Arc<EpisodeSummary> {
    Arc::new(EpisodeSummary {
        id: EpisodeId::new(),
        task_description: "a talk".into(),
        task_type: TaskType::Other,
        context: TaskContext::new("chat"),
        step_count: 40,
        started_at: chrono::Utc::now(),
        completed_at: None,
        outcome: None,
        reward: None,
    })
}

#[test]
fn an_episode_scores_by_its_own_vector_or_its_weighed_best_window() {
    let s = summary();
    // The window wins once weighed: its cosine, its number (from 1), the higher similarity.
    let own = hit(&s, 0.20, 0.30, 0);
    let best = best_of(Some(own.clone()), Some(hit(&s, 0.50, 0.55, 3)), 0.8).unwrap();
    assert!((best.cosine - 0.40).abs() < 1e-6);
    assert_eq!((best.row, best.similarity), (4, 0.55));
    // Weighed down below the episode's own: the own vector's score, row 0.
    let kept = best_of(Some(own.clone()), Some(hit(&s, 0.24, 0.25, 0)), 0.8).unwrap();
    assert_eq!((kept.cosine, kept.row, kept.similarity), (0.20, 0, 0.30));
    assert_eq!(best_of(Some(own), None, 0.8).unwrap().row, 0);
    assert!(best_of(None, None, 0.8).is_none());

    // Merged lists hold each episode once, by its best, best first, at most k.
    let (a, b, c) = (summary(), summary(), summary());
    let scores: HashMap<EpisodeId, VectorHit> = [
        (a.id, hit(&a, 0.3, 0.3, 0)),
        (b.id, hit(&b, 0.6, 0.6, 2)),
        (c.id, hit(&c, 0.1, 0.1, 0)),
    ]
    .into_iter()
    .collect();
    let merged = merge_windows(
        &[hit(&a, 0.3, 0.3, 0), hit(&c, 0.1, 0.1, 0)],
        &[hit(&b, 0.6, 0.6, 1), hit(&a, 0.1, 0.1, 0)],
        (&|id| scores.get(&id).cloned(), &|_| None),
        0.8,
        2,
    );
    let order: Vec<EpisodeId> = merged.iter().map(|h| h.summary.id).collect();
    assert_eq!(order, vec![b.id, a.id]);
}

#[test]
fn support_is_the_mean_of_the_three_best() {
    assert_eq!(support(std::iter::empty()), None);
    assert_eq!(support([0.5].into_iter()), Some(0.5));
    let s = support([0.2, 0.9, 0.4, 0.8, 0.7].into_iter()).unwrap();
    assert!((s - 0.8).abs() < 1e-6, "{s}");
}

/// Vectors from the text's bytes; counts calls and texts.
#[derive(Debug, Default)]
struct CountingEmbedder {
    calls: std::sync::atomic::AtomicUsize,
    texts: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Embedder for CountingEmbedder {
    fn model_id(&self) -> &'static str {
        "counting"
    }
    fn dimensions(&self) -> usize {
        8
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        self.texts.fetch_add(texts.len(), Relaxed);
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.1f32; 8];
                for (i, b) in t.bytes().enumerate() {
                    v[i % 8] += f32::from(b);
                }
                crate::embedding::l2_normalize(&mut v);
                v
            })
            .collect())
    }
}

#[tokio::test]
async fn a_query_with_context_embeds_its_two_texts_in_one_call_and_once() {
    use std::sync::atomic::Ordering::Relaxed;
    let embedder = Arc::new(CountingEmbedder::default());
    let retriever = Retriever::new(
        Arc::new(crate::InMemoryStorage::new()),
        Some(Arc::clone(&embedder) as Arc<dyn Embedder>),
        Arc::new(crate::clock::SystemClock),
        RetrievalConfig::default(),
    );
    let ns = Namespace::default();
    let query = RetrievalQuery::new("fix the flaky login test")
        .with_context(Some(TaskType::Debugging), TaskContext::new("web"));
    retriever.retrieve(&ns, &query).await.unwrap();
    assert_eq!(
        (embedder.calls.load(Relaxed), embedder.texts.load(Relaxed)),
        (1, 2)
    );
    // Both vectors are cached; the bare task alone is one of them.
    retriever.retrieve(&ns, &query).await.unwrap();
    retriever
        .retrieve(&ns, &RetrievalQuery::new("fix the flaky login test"))
        .await
        .unwrap();
    assert_eq!(
        (embedder.calls.load(Relaxed), embedder.texts.load(Relaxed)),
        (1, 2)
    );
    // A new context embeds only its own text.
    let other = RetrievalQuery::new("fix the flaky login test")
        .with_context(Some(TaskType::Testing), TaskContext::new("web"));
    retriever.retrieve(&ns, &other).await.unwrap();
    assert_eq!(
        (embedder.calls.load(Relaxed), embedder.texts.load(Relaxed)),
        (2, 3)
    );
}

/// Holds its first call until released, telling the test when it got there.
#[derive(Debug)]
struct GatedEmbedder {
    inner: CountingEmbedder,
    entered: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Embedder for GatedEmbedder {
    fn model_id(&self) -> &'static str {
        "gated"
    }
    fn dimensions(&self) -> usize {
        8
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let first = self.entered.lock().ok().and_then(|mut e| e.take());
        if let Some(entered) = first {
            let _ = entered.send(());
            self.release.notified().await;
        }
        self.inner.embed(texts).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_that_completes_while_a_drain_embeds_it_is_embedded_again() {
    use crate::episode::{Episode, NewEpisode};
    use crate::storage::EpisodeStore as _;
    let (entered, entered_rx) = tokio::sync::oneshot::channel();
    let embedder = Arc::new(GatedEmbedder {
        inner: CountingEmbedder::default(),
        entered: std::sync::Mutex::new(Some(entered)),
        release: tokio::sync::Notify::new(),
    });
    let storage = Arc::new(crate::InMemoryStorage::new());
    let retriever = Arc::new(Retriever::new(
        Arc::clone(&storage) as Arc<dyn Storage>,
        Some(Arc::clone(&embedder) as Arc<dyn Embedder>),
        Arc::new(crate::clock::SystemClock),
        RetrievalConfig::default(),
    ));
    let ns = Namespace::default();
    let new = NewEpisode::new(
        "fix the flaky date test",
        TaskType::Testing,
        TaskContext::new("testing"),
    );
    let running = Episode::start(new, chrono::Utc::now());
    storage.create_episode(&ns, &running).await.unwrap();
    // A drain reads the running episode and is held in the model; the episode completes
    // meanwhile.
    let drain = tokio::spawn({
        let (retriever, ns) = (Arc::clone(&retriever), ns.clone());
        async move { retriever.embed_pending(&ns).await }
    });
    entered_rx.await.unwrap();
    let mut done = running.summary();
    done.completed_at = Some(chrono::Utc::now());
    retriever.episode_changed(&ns, done);
    embedder.release.notify_one();
    assert_eq!(drain.await.unwrap().unwrap(), 1);
    // Its vector missed the completion: the next drain embeds it again, and only once.
    assert_eq!(retriever.embed_pending(&ns).await.unwrap(), 1);
    assert_eq!(retriever.embed_pending(&ns).await.unwrap(), 0);
}

/// Refuses every index snapshot (as a store does one over the size limit), counting tries.
#[derive(Debug)]
struct RefusesSnapshots {
    inner: Arc<dyn Storage>,
    tries: std::sync::atomic::AtomicUsize,
}

crate::forward_storage! { impl[] EpisodeStore for RefusesSnapshots => inner; forward all; {} }
crate::forward_storage! { impl[] LearningStore for RefusesSnapshots => inner; forward all; {} }
crate::forward_storage! { impl[] MaintenanceStore for RefusesSnapshots => inner; forward all; {} }
crate::forward_storage! {
    impl[] EmbeddingStore for RefusesSnapshots => inner;
    forward put_embedding, get_embedding, episodes_missing_embedding, scan_embeddings,
        embedding_coverage, index_log_head, index_changes, get_index_snapshot;
    {
        async fn put_index_snapshot(
            &self,
            _ns: &Namespace,
            _model: &str,
            _snapshot: &crate::IndexSnapshot,
        ) -> Result<()> {
            self.tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(crate::Error::invalid("index_snapshot", "over the limit"))
        }
    }
}
crate::forward_storage! {
    impl[] Storage for RefusesSnapshots => inner;
    forward may_have_changed, changes_since;
    { fn backend_name(&self) -> &'static str { "refuses-snapshots" } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_snapshot_is_not_tried_again_at_every_search() {
    use std::sync::atomic::Ordering::SeqCst;
    let storage = Arc::new(RefusesSnapshots {
        inner: Arc::new(crate::InMemoryStorage::new()),
        tries: std::sync::atomic::AtomicUsize::default(),
    });
    let mut config = crate::MemoryConfig::default();
    config.retrieval.index_snapshot_from = 2;
    let memory = crate::SelfLearningMemory::with_embedder(
        Arc::clone(&storage) as Arc<dyn Storage>,
        config,
        Arc::new(crate::clock::SystemClock),
        Some(Arc::new(CountingEmbedder::default())),
    )
    .unwrap();
    let ns = Namespace::default();
    for task in [
        "fix the login test",
        "add pagination",
        "speed up the report",
    ] {
        let new = crate::NewEpisode::new(task, TaskType::Testing, TaskContext::new("web"));
        let id = memory.start_episode(&ns, new).await.unwrap();
        memory
            .complete_episode(&ns, id, crate::Outcome::success("done"))
            .await
            .unwrap();
    }
    memory.embed_pending(&ns).await.unwrap();
    let query = RetrievalQuery::new("fix the login test");
    for _ in 0..5 {
        memory.retrieve(&ns, &query).await.unwrap();
        memory.retriever().finish_snapshots().await;
    }
    // Tried once when the namespace was loaded; the searches after it leave it alone
    // until a twentieth of the namespace (at least a page of the change log) changed.
    assert_eq!(storage.tries.load(SeqCst), 1);
    memory.shutdown().await.unwrap();
}
