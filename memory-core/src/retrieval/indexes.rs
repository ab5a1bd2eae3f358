//! The in-process indexes of each namespace (vectors and BM25 postings) and how they are
//! loaded and kept fresh: from a stored snapshot or every embedding, then the storage's index
//! change log; a snapshot written again once a twentieth of the namespace changed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::lexical_index::{LexicalIndex, LexicalParts};
use super::query::IndexStatus;
use super::snapshot::{self, WindowParts};
use super::vector_index::{VectorIndex, VectorParts};
use crate::episode::{EpisodeId, EpisodeSummary};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::storage::{IndexSnapshot, Storage, StoredEmbedding};

/// Stored vectors read per page when a namespace's index is loaded.
const LOAD_PAGE: u32 = 2_000;

/// Change-log entries read per page when the index catches up with the storage.
const CHANGES_PAGE: u32 = 1_000;

/// A loaded namespace's position in the storage's index change log.
#[derive(Debug, Clone, Copy, Default)]
struct SyncState {
    /// Every change up to this log position is in the index.
    through: u64,
    /// Episode changes applied by catch-ups since the namespace was loaded.
    applied: usize,
    /// `applied` at the stored snapshot's position (`None`: no usable snapshot).
    snapshot_at: Option<usize>,
    /// The index took in vectors the storage could not be asked about (a catch-up failed,
    /// e.g. during an outage): its state may not match a log position, so it is not written
    /// as a snapshot by this process.
    diverged: bool,
    /// A snapshot of the namespace is being written.
    writing: bool,
    /// The index was loaded from a snapshot.
    restored: bool,
    /// `applied` when a snapshot write last failed: the next try waits for as many changes
    /// as a due snapshot does (a write that failed, say for its size, failed again at every
    /// search and kept a core busy rebuilding the image).
    failed_at: Option<usize>,
}

type SyncMap = Arc<Mutex<HashMap<Namespace, SyncState>>>;

/// Whether a snapshot of `n` episodes with `since` changes applied after it (`None`: no
/// snapshot) is due to be written again: none yet, or a twentieth of the namespace changed
/// (replaying a change costs about as much as loading ten episodes from the image).
fn snapshot_due(n: usize, since: Option<usize>) -> bool {
    since.is_none_or(|c| c >= (n / 20).max(CHANGES_PAGE as usize))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The vector and lexical indexes of every namespace this process searched.
#[derive(Debug)]
pub(crate) struct Indexes {
    storage: Arc<dyn Storage>,
    /// Each episode's own vector (its task and the gist of its work) per namespace.
    pub(crate) vectors: Arc<VectorIndex>,
    /// The vectors of episodes' step windows (stored after the episode's own vector), per
    /// namespace; an episode has as many rows as windows, none when it has no steps.
    pub(crate) windows: Arc<VectorIndex>,
    /// BM25 over the same episodes' task text, searched instead of the backend's full-text
    /// index once the namespace has no episode waiting for an embedding.
    pub(crate) lexical: Arc<LexicalIndex>,
    loaded: Mutex<HashSet<Namespace>>,
    loading: tokio::sync::Mutex<()>,
    /// Where each loaded namespace's index stands in the storage's index change log.
    sync: SyncMap,
    /// One catch-up with the change log at a time (and none while a snapshot is taken).
    syncing: Arc<tokio::sync::Mutex<()>>,
    /// Snapshot writes started in the background, awaited by `finish_snapshots`.
    snapshot_tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Namespaces of fewer episodes are not snapshotted.
    snapshot_from: usize,
}

impl Indexes {
    /// Empty indexes of vectors of `dims` dimensions.
    pub(crate) fn new(storage: Arc<dyn Storage>, dims: usize, snapshot_from: u32) -> Self {
        Indexes {
            storage,
            vectors: Arc::new(VectorIndex::new(dims)),
            windows: Arc::new(VectorIndex::new(dims)),
            lexical: Arc::new(LexicalIndex::new()),
            loaded: Mutex::new(HashSet::new()),
            loading: tokio::sync::Mutex::new(()),
            sync: Arc::new(Mutex::new(HashMap::new())),
            syncing: Arc::new(tokio::sync::Mutex::new(())),
            snapshot_tasks: Mutex::new(Vec::new()),
            snapshot_from: snapshot_from as usize,
        }
    }

    /// Whether the namespace's index is loaded in this process.
    pub(crate) fn is_loaded(&self, ns: &Namespace) -> bool {
        lock(&self.loaded).contains(ns)
    }

    /// Where the namespace's index stands; `None` before it is loaded.
    pub(crate) fn status(&self, ns: &Namespace) -> Option<IndexStatus> {
        if !self.is_loaded(ns) {
            return None;
        }
        let state = lock(&self.sync).get(ns).copied()?;
        Some(IndexStatus {
            episodes: self.vectors.len(ns),
            step_windows: self.windows.rows(ns),
            log_position: state.through,
            restored_from_snapshot: state.restored,
            changes_since_snapshot: state.snapshot_at.map(|at| state.applied.saturating_sub(at)),
        })
    }

    /// A changed summary (e.g. the episode completed) into both indexes of a loaded namespace;
    /// the BM25 index takes a newly completed episode at once (lexical search finds it before
    /// it is embedded). A namespace not loaded is left alone: its load reads the summaries as
    /// stored, and the change log only from the load's start, so an episode put in before the
    /// load and forgotten by another process meanwhile would stay.
    pub(crate) fn update_summary(&self, ns: &Namespace, summary: EpisodeSummary) {
        if !self.is_loaded(ns) {
            return;
        }
        let summary = Arc::new(summary);
        self.vectors.update_summary(ns, Arc::clone(&summary));
        self.windows.update_summary(ns, Arc::clone(&summary));
        self.lexical.upsert(ns, summary);
    }

    /// Marks the namespace's index as holding vectors the storage could not confirm: it is
    /// not written as a snapshot by this process.
    pub(crate) fn diverged(&self, ns: &Namespace) {
        if let Some(state) = lock(&self.sync).get_mut(ns) {
            state.diverged = true;
        }
    }

    /// Loads the namespace's stored vectors (key `key`) into the indexes, once per process;
    /// `beside` starts work to run during the load (it is awaited before this returns).
    pub(crate) async fn ensure_loaded(
        &self,
        ns: &Namespace,
        key: &str,
        beside: impl FnOnce() -> Option<JoinHandle<()>>,
    ) -> Result<()> {
        if self.is_loaded(ns) {
            return Ok(());
        }
        let _loading = self.loading.lock().await;
        if self.is_loaded(ns) {
            return Ok(());
        }
        let beside = beside();
        let (through, snapshot_at) = match self.restore_snapshot(ns, key).await {
            Some(as_of) => (as_of, Some(0)),
            None => (self.load_embeddings(ns, key).await?, None),
        };
        lock(&self.sync).insert(
            ns.clone(),
            SyncState {
                through,
                snapshot_at,
                restored: snapshot_at.is_some(),
                ..SyncState::default()
            },
        );
        self.catch_up(ns, key).await?;
        if let Some(beside) = beside {
            // Its outcome is its own business; a failure only means asking again later.
            let _ = beside.await;
        }
        lock(&self.loaded).insert(ns.clone());
        self.write_snapshot_if_due(ns, key);
        Ok(())
    }

    /// Restores the namespace's index from its stored snapshot; the snapshot's log position,
    /// or `None` when there is no usable one (then the caller reads the embeddings).
    async fn restore_snapshot(&self, ns: &Namespace, key: &str) -> Option<u64> {
        let snapshot = match self.storage.get_index_snapshot(ns, key).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                warn!(error = %e, "index snapshot unreadable; loading from the embeddings");
                return None;
            }
        };
        let as_of = snapshot.as_of;
        let (index, windows, lexical, space) = (
            Arc::clone(&self.vectors),
            Arc::clone(&self.windows),
            Arc::clone(&self.lexical),
            ns.clone(),
        );
        // Decoding and rebuilding the lookup tables is CPU work: off the async workers, and
        // the two indexes on two threads.
        let restored = tokio::task::spawn_blocking(move || -> Result<usize> {
            let image = snapshot::decode(&snapshot.parts, index.dims())?;
            drop(snapshot);
            let n = image.summaries.len();
            let summaries = image.summaries.clone();
            let window_rows = image.windows.row_summaries(&image.summaries);
            let (vectors_fit, windows_fit, lexical_fit) = std::thread::scope(|scope| {
                let vectors = scope.spawn(|| index.restore(&space, summaries, image.vectors));
                let windows_fit = window_rows
                    .is_some_and(|rows| windows.restore(&space, rows, image.windows.vectors));
                let lexical_fit = lexical.restore(&space, image.summaries, image.lexical);
                (vectors.join().unwrap_or(false), windows_fit, lexical_fit)
            });
            if vectors_fit && windows_fit && lexical_fit {
                return Ok(n);
            }
            // No index keeps part of an image.
            index.restore(&space, Vec::new(), VectorParts::default());
            windows.restore(&space, Vec::new(), VectorParts::default());
            lexical.restore(&space, Vec::new(), LexicalParts::default());
            Err(Error::storage(
                "retrieval",
                "restore index snapshot",
                false,
                "its parts do not fit together",
            ))
        })
        .await;
        match restored {
            Ok(Ok(n)) => {
                debug!(episodes = n, as_of, "index restored from its snapshot");
                Some(as_of)
            }
            Ok(Err(e)) => {
                warn!(error = %e, "index snapshot unusable; loading from the embeddings");
                None
            }
            Err(e) => {
                warn!(error = %e, "index snapshot restore failed; loading from the embeddings");
                None
            }
        }
    }

    /// Reads every stored vector of the namespace into the index; returns the change-log
    /// position read before the scan (changes after it may or may not be in the pages: the
    /// catch-up that follows re-reads them).
    async fn load_embeddings(&self, ns: &Namespace, key: &str) -> Result<u64> {
        let head = self.storage.index_log_head(ns).await?;
        // Pages are read by a task of their own while this one indexes the previous page, so
        // the database reads and the indexing overlap (they take about equal time).
        let (pages, mut received) = tokio::sync::mpsc::channel(2);
        let reader = {
            let (storage, ns, key) = (Arc::clone(&self.storage), ns.clone(), key.to_owned());
            async move {
                let mut after = None;
                loop {
                    let page = storage.scan_embeddings(&ns, &key, after, LOAD_PAGE).await;
                    after = page
                        .as_ref()
                        .ok()
                        .and_then(|p| p.last())
                        .map(|e| e.summary.id);
                    // Stops after an error or an empty page, or when the indexer gave up.
                    if pages.send(page).await.is_err() || after.is_none() {
                        return;
                    }
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(reader)),
            Err(_) => {
                return Err(Error::storage(
                    "retrieval",
                    "load",
                    false,
                    "no tokio runtime",
                ));
            }
        }
        let mut loaded = 0usize;
        while let Some(page) = received.recv().await {
            loaded += self.index_stored(ns, page?);
        }
        debug!(loaded, "vector index loaded from the embeddings");
        Ok(head)
    }

    /// Applies the storage's index changes after the namespace's log position (other
    /// processes' writes, completions, this process's embeddings). Returns how many episodes
    /// were updated.
    pub(crate) async fn catch_up(&self, ns: &Namespace, key: &str) -> Result<usize> {
        let _syncing = self.syncing.lock().await;
        let Some(mut through) = lock(&self.sync).get(ns).map(|s| s.through) else {
            return Ok(0);
        };
        let mut applied = 0;
        loop {
            let page = self
                .storage
                .index_changes(ns, key, through, CHANGES_PAGE)
                .await?;
            let count = page.upserts.len() + page.removed.len();
            self.apply(ns, page.upserts, &page.removed);
            applied += count;
            through = page.through;
            if let Some(state) = lock(&self.sync).get_mut(ns) {
                state.through = through;
                state.applied += count;
            }
            if !page.more {
                break;
            }
        }
        if applied > 0 {
            debug!(applied, through, "index caught up with the change log");
        }
        Ok(applied)
    }

    /// Puts stored vectors and summaries into both indexes and takes out removed episodes.
    fn apply(&self, ns: &Namespace, upserts: Vec<StoredEmbedding>, removed: &[EpisodeId]) {
        self.index_stored(ns, upserts);
        for &id in removed {
            self.vectors.remove(ns, id);
            self.windows.remove(ns, id);
            self.lexical.remove(ns, id);
        }
    }

    /// Puts vectors with their summaries into the indexes (one lock each for the batch): the
    /// first `dims` values of a stored vector are the episode's own, the rest its step
    /// windows, `dims` each. A vector whose length is not a whole number of the model's is
    /// skipped with a warning. Returns how many episodes went in.
    pub(crate) fn index_stored(&self, ns: &Namespace, stored: Vec<StoredEmbedding>) -> usize {
        let dims = self.vectors.dims();
        let mut fitting = Vec::with_capacity(stored.len());
        for e in stored {
            if dims > 0 && !e.vector.is_empty() && e.vector.len().is_multiple_of(dims) {
                fitting.push((Arc::new(e.summary), e.vector));
            } else {
                warn!(
                    episode_id = %e.summary.id,
                    dims = e.vector.len(),
                    "stored embedding has the wrong length for the model; skipped"
                );
            }
        }
        let count = fitting.len();
        self.vectors
            .upsert_many(ns, fitting.iter().map(|(s, v)| (Arc::clone(s), &v[..dims])));
        // An episode stored without windows (no steps) loses any it had.
        for (s, v) in &fitting {
            if v.len() == dims {
                self.windows.remove(ns, s.id);
            }
        }
        self.windows.upsert_many(
            ns,
            fitting
                .iter()
                .filter(|(_, v)| v.len() > dims)
                .map(|(s, v)| (Arc::clone(s), &v[dims..])),
        );
        self.lexical
            .upsert_many(ns, fitting.into_iter().map(|(s, _)| s));
        count
    }

    /// Catches up with the change log before a search (a failure is logged: the search then
    /// runs on the index as it is).
    pub(crate) async fn refresh(&self, ns: &Namespace, key: &str) {
        if let Err(e) = self.catch_up(ns, key).await {
            warn!(error = %e, "index could not catch up with the storage; searching it as it is");
        }
        self.write_snapshot_if_due(ns, key);
    }

    /// Starts writing a snapshot of the namespace's index in the background when one is
    /// due (see [`snapshot_due`]) and the namespace holds at least `index_snapshot_from`
    /// episodes. The image is taken under the catch-up lock, so it matches its log position.
    fn write_snapshot_if_due(&self, ns: &Namespace, key: &str) {
        let n = self.vectors.len(ns);
        if n < self.snapshot_from {
            return;
        }
        {
            let mut sync = lock(&self.sync);
            let Some(state) = sync.get_mut(ns) else {
                return;
            };
            let since = state.snapshot_at.map(|at| state.applied.saturating_sub(at));
            let since_failure = state.failed_at.map(|at| state.applied.saturating_sub(at));
            if state.diverged
                || state.writing
                || !snapshot_due(n, since)
                || !snapshot_due(n, since_failure)
            {
                return;
            }
            state.writing = true;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            if let Some(state) = lock(&self.sync).get_mut(ns) {
                state.writing = false;
            }
            return;
        };
        let (storage, index, windows, sync, syncing) = (
            Arc::clone(&self.storage),
            Arc::clone(&self.vectors),
            Arc::clone(&self.windows),
            Arc::clone(&self.sync),
            Arc::clone(&self.syncing),
        );
        let (ns, key) = (ns.clone(), key.to_owned());
        let task = rt.spawn(async move {
            let indexes = (&*index, &*windows);
            let written = write_snapshot(&*storage, indexes, &sync, &syncing, &ns, &key).await;
            let mut sync = lock(&sync);
            if let Some(state) = sync.get_mut(&ns) {
                state.writing = false;
                match written {
                    Ok(applied_at_image) => {
                        state.snapshot_at = Some(applied_at_image);
                        state.failed_at = None;
                    }
                    Err(e) => {
                        state.failed_at = Some(state.applied);
                        warn!(namespace = %ns, error = %e, "index snapshot not written; tried again once a twentieth of the namespace changed");
                    }
                }
            }
        });
        let mut tasks = lock(&self.snapshot_tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits for the index snapshots being written in the background.
    pub(crate) async fn finish_snapshots(&self) {
        let tasks: Vec<_> = lock(&self.snapshot_tasks).drain(..).collect();
        for task in tasks {
            if let Err(e) = task.await {
                warn!(error = %e, "index snapshot task stopped");
            }
        }
    }
}

/// Takes an image of the namespace's index at its log position (under the catch-up lock),
/// encodes it off the async workers and stores it. Returns the namespace's `applied` count
/// at the image.
async fn write_snapshot(
    storage: &dyn Storage,
    (index, windows): (&VectorIndex, &VectorIndex),
    sync: &Mutex<HashMap<Namespace, SyncState>>,
    syncing: &tokio::sync::Mutex<()>,
    ns: &Namespace,
    key: &str,
) -> Result<usize> {
    let (summaries, parts, (window_rows, window_parts), state) = {
        let _syncing = syncing.lock().await;
        let (summaries, parts) = index.export(ns);
        let window_image = windows.export(ns);
        let state = lock(sync).get(ns).copied().unwrap_or_default();
        (summaries, parts, window_image, state)
    };
    if state.diverged {
        return Err(Error::storage(
            "retrieval",
            "snapshot",
            false,
            "the index diverged from the change log in this process",
        ));
    }
    let dims = index.dims();
    let n = summaries.len();
    let data = tokio::task::spawn_blocking(move || {
        let lexical = LexicalParts::build(&summaries);
        let at: HashMap<EpisodeId, u32> =
            (0u32..).zip(&summaries).map(|(i, s)| (s.id, i)).collect();
        // Every windowed episode has its own vector (both come from one stored value).
        let owners = window_rows
            .iter()
            .map(|s| at.get(&s.id).copied())
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| {
                Error::storage(
                    "retrieval",
                    "snapshot",
                    false,
                    "a step window's episode has no vector of its own",
                )
            })?;
        let windows = WindowParts {
            owners,
            vectors: window_parts,
        };
        snapshot::encode(dims, &summaries, &parts, &lexical, &windows)
    })
    .await
    .map_err(|e| Error::storage("retrieval", "snapshot", false, e.to_string()))??;
    let bytes = data.len();
    storage
        .put_index_snapshot(ns, key, &IndexSnapshot::new(state.through, data))
        .await?;
    debug!(
        episodes = n,
        bytes,
        as_of = state.through,
        "index snapshot written"
    );
    Ok(state.applied)
}
