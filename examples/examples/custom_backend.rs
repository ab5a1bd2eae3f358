//! A storage backend of your own, checked with the conformance suite every backend passes.
//!
//! This one wraps another backend and counts the writes that reach it, written with
//! `forward_storage!`: only the methods it changes are written out, the others forward. A
//! backend from scratch implements the same four traits; `memory_testkit::conformance` is what
//! tells you it can stand in for any other.
//!
//! ```text
//! cargo run -p memory-examples --example custom_backend
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memory_core::{
    Episode, EpisodeCompletion, EpisodeId, Erasure, ErasureReport, ExecutionStep, InMemoryStorage,
    LearnedChanges, Namespace, Result, Storage, forward_storage,
};

/// Counts episode writes (create, steps, completion, erasure) on their way to `inner`.
#[derive(Debug)]
pub struct CountingWrites {
    inner: Arc<dyn Storage>,
    writes: AtomicU64,
}

impl CountingWrites {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        CountingWrites {
            inner,
            writes: AtomicU64::new(0),
        }
    }

    /// Episode writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

forward_storage! {
    impl[] EpisodeStore for CountingWrites => inner;
    forward get_episode, query_episodes, search_text, namespace_stats, list_namespaces,
        ping, sync, forgotten_episodes;
    {
        async fn forget_episodes(&self, ns: &Namespace, erasure: &Erasure) -> Result<ErasureReport> {
            self.count();
            self.inner.forget_episodes(ns, erasure).await
        }

        async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
            self.count();
            self.inner.create_episode(ns, episode).await
        }

        async fn append_steps(
            &self,
            ns: &Namespace,
            episode_id: EpisodeId,
            steps: &[ExecutionStep],
        ) -> Result<()> {
            self.count();
            self.inner.append_steps(ns, episode_id, steps).await
        }

        async fn complete_episode(
            &self,
            ns: &Namespace,
            completion: &EpisodeCompletion,
        ) -> Result<Option<LearnedChanges>> {
            self.count();
            self.inner.complete_episode(ns, completion).await
        }
    }
}

forward_storage! { impl[] LearningStore for CountingWrites => inner; forward all; {} }
forward_storage! { impl[] EmbeddingStore for CountingWrites => inner; forward all; {} }
forward_storage! { impl[] MaintenanceStore for CountingWrites => inner; forward all; {} }
forward_storage! {
    impl[] Storage for CountingWrites => inner;
    forward may_have_changed, changes_since;
    {
        fn backend_name(&self) -> &'static str {
            "counting"
        }
    }
}

/// Runs the conformance suite on the backend (it panics, naming the broken rule, if one is
/// broken); returns the writes the last fresh store counted.
pub async fn run() -> u64 {
    let last = Arc::new(std::sync::Mutex::new(None::<Arc<CountingWrites>>));
    let factory = {
        let last = Arc::clone(&last);
        move || {
            let store = Arc::new(CountingWrites::new(Arc::new(InMemoryStorage::new())));
            if let Ok(mut l) = last.lock() {
                *l = Some(Arc::clone(&store));
            }
            async move { store as Arc<dyn Storage> }
        }
    };
    memory_testkit::conformance::run_all(factory).await;
    let writes = last
        .lock()
        .ok()
        .and_then(|l| l.as_ref().map(|s| s.writes()))
        .unwrap_or(0);
    println!("conformance passed; the last store saw {writes} episode writes");
    writes
}

#[tokio::main]
async fn main() {
    run().await;
}
