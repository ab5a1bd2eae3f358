//! Retrieval: hybrid (lexical + semantic) search over past episodes, and the embedding queue.
//!
//! - **Lexical** candidates come from the backend's full-text index (FTS5/BM25 in libsql) over
//!   task descriptions, reflections and step text, filtered inside the query.
//! - **Semantic** candidates come from the in-process [`VectorIndex`] over episode embeddings,
//!   filtered inside the scan. An episode's vector is the normalized sum of two embeddings:
//!   its task text with its context words ([`embedding_text`]) and, at `work_weight`, what was
//!   done ([`work_text`]: the distinct step actions and errors). The index ranks by the cosine
//!   after centering on the namespace's mean vector (see [`vector_index`]).
//! - Both lists are min-max normalized over their union and fused as a weighted sum, then
//!   re-ranked by context match (the kind of work: domain and task type), outcome and
//!   recency. Every result carries its [`ScoreBreakdown`] and a one-line `why`.
//! - [`Retrieval::confidence`] is calibrated on the mean plain cosine similarity of the
//!   [`SUPPORT`] closest episodes (an absolute measure, not a score relative to the other
//!   results), so "no strong match" means the memory has nothing close, not that the list was
//!   short.
//!
//! Embeddings are computed off the write path: the durable queue is the set of episodes with no
//! embedding under the [`vector_key`] (the model and the embedded text's recipe)
//! ([`EmbeddingStore::episodes_missing_embedding`]), which is derived from the data and so
//! survives restarts; [`Retriever::embed_pending`] drains it in
//! batches. Without an embedder (model files missing), retrieval is lexical and says so in
//! [`Retrieval::degraded`].

pub mod lexical_index;
pub mod recommend;
mod scoring;
mod snapshot;
pub mod vector_index;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tracing::{debug, instrument, warn};

use crate::clock::SharedClock;
use crate::embedding::Embedder;
use crate::episode::{Episode, EpisodeId, EpisodeSummary, TaskContext, TaskType};
use crate::error::{Error, Result};
use crate::namespace::Namespace;
use crate::storage::{EpisodeFilter, IndexSnapshot, Storage, StoredEmbedding, TextHit, TextQuery};

use lexical_index::LexicalParts;
pub use lexical_index::{LexicalHit, LexicalIndex};
pub use scoring::ScoreBreakdown;
use vector_index::VectorParts;
pub use vector_index::{VectorHit, VectorIndex};

/// Which candidate sources a retrieval uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetrievalMethod {
    /// Full-text (BM25) only.
    Lexical,
    /// Embeddings only.
    Vector,
    /// Both, fused.
    #[default]
    Hybrid,
}

impl RetrievalMethod {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalMethod::Lexical => "lexical",
            RetrievalMethod::Vector => "vector",
            RetrievalMethod::Hybrid => "hybrid",
        }
    }
}

impl std::fmt::Display for RetrievalMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Retrieval settings.
///
/// # Default
/// 50 candidates from each source; dense weight 0.8 (1.0 for bare task text); context words
/// in the lexical query and the embedded text; the work text at weight 0.5 in the episode
/// vector; context weight 0.8; outcome weight 0.05; recency weight 0.05 with a 90-day
/// half-life; strong-match cosine (mean of the three best) 0.37 with context and 0.34
/// without (set on the retrieval eval's no-answer queries: see README); embedding batches of 32; 1,024 cached query
/// vectors; the in-process lexical index from 2,000 episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Candidates taken from each source before fusion.
    pub candidates: u32,
    /// Weight of the semantic score in the fused score (the lexical one gets `1 - w`), for
    /// queries with context.
    pub dense_weight: f64,
    /// The same for bare task text: with no context words to match, the lexical side only
    /// sees the paraphrased task and is much weaker (nDCG@10 0.62 against 0.80 for the
    /// embedding on the retrieval eval) and no longer improved the fused ranking (0.799 at
    /// 0.9, 0.801 at 1.0), so by default it only contributes candidates.
    pub dense_weight_bare: f64,
    /// Add the query's context words (domain, language, framework, tags) to the lexical query
    /// (episodes index theirs with the task text).
    pub lexical_context_terms: bool,
    /// Embed the task type and context words with the task text (episodes and queries).
    pub embed_context: bool,
    /// Weight of the work text ([`work_text`]: distinct step actions and errors) in an
    /// episode's vector, added to the task text's embedding before normalizing; 0 embeds the
    /// task text only. On the retrieval eval, 0.5 lifted hybrid nDCG@10 on bare task text
    /// from 0.77 to 0.80 and with context from 0.945 to 0.949 (a paraphrased symptom often
    /// matches what was done better than how the task was worded), at four times the
    /// embedding work: 15 instead of 63 episodes/s on two cores, off the write path.
    pub work_weight: f32,
    /// Re-rank boost for the same kind of work (the query's domain and task type), as a
    /// fraction. Language and framework are left out on purpose: boosting the same stack
    /// lifts same-stack look-alikes above the same task done on another stack (on the
    /// retrieval eval, nDCG@10 0.94 with them against 0.95 without, recall@5 0.88 against
    /// 0.91); the stack still counts through the embedded and lexical query text.
    pub context_weight: f64,
    /// Re-rank boost for a good outcome (reward above 0.5) or penalty below it.
    pub outcome_weight: f64,
    /// Re-rank penalty for age, reaching this fraction at infinite age.
    pub recency_weight: f64,
    /// Half-life of the recency decay, in days.
    pub recency_half_life_days: f64,
    /// Plain cosine similarity (the mean of the [`SUPPORT`] closest episodes) at which a
    /// match counts as strong (confidence 0.5), for queries with context (its words,
    /// embedded with the task, raise every cosine a little).
    pub strong_match_cosine: f32,
    /// The same for queries given as bare task text.
    pub strong_match_cosine_bare: f32,
    /// Episodes embedded per batch when draining the queue.
    pub embed_batch: u32,
    /// Query vectors kept in the cache.
    pub query_cache_entries: u64,
    /// From how many indexed episodes in a namespace the lexical side uses the in-process
    /// BM25 index (task text and context words) instead of the backend's FTS5 index (which
    /// also indexes step and reflection text). FTS5 scores every row matching any query word,
    /// so its cost grows with the store: 0.7-1.4 s per query at 100k episodes, against about a
    /// millisecond in process (hybrid retrieval measured 95 ms at 10k episodes through FTS5,
    /// 10 ms at 100k in process). Below this size FTS5 is fast (about 6 ms at 1k) and its
    /// extra text helps: on the retrieval eval it is worth 0.006 nDCG@10 on bare task text. `0` always uses the
    /// in-process index once available; `u32::MAX` never does.
    pub in_process_lexical_from: u32,
    /// Namespaces with at least this many indexed episodes keep a snapshot of their
    /// in-process index in the storage (written in the background after a load, and again
    /// once a twentieth of the namespace changed), so the next process loads one image and
    /// the changes after it instead of every embedding: at 100k episodes that is the
    /// difference between about 0.6 s and 0.2 s to the first answer. Below it a full load is
    /// fast (about 8 ms at 1k). `u32::MAX` never writes one (a stored one is still used).
    pub index_snapshot_from: u32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig {
            candidates: 50,
            dense_weight: 0.8,
            dense_weight_bare: 1.0,
            lexical_context_terms: true,
            embed_context: true,
            work_weight: 0.5,
            context_weight: 0.8,
            outcome_weight: 0.05,
            recency_weight: 0.05,
            recency_half_life_days: 90.0,
            strong_match_cosine: 0.37,
            strong_match_cosine_bare: 0.34,
            embed_batch: 32,
            query_cache_entries: 1024,
            in_process_lexical_from: 2_000,
            index_snapshot_from: 2_000,
        }
    }
}

/// What to look for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalQuery {
    /// The new task, in the agent's words.
    pub task: String,
    /// Its kind, when known (used in the context match, not as a filter).
    #[serde(default)]
    pub task_type: Option<TaskType>,
    /// Its context, when known: embedded with the task and used to re-rank.
    #[serde(default)]
    pub context: Option<TaskContext>,
    /// Hard filters, applied inside both candidate queries.
    #[serde(default)]
    pub filter: EpisodeFilter,
    /// Most results.
    pub limit: u32,
    /// Candidate sources.
    #[serde(default)]
    pub method: RetrievalMethod,
}

impl RetrievalQuery {
    /// A hybrid query for `task` returning up to 10 results.
    pub fn new(task: impl Into<String>) -> Self {
        RetrievalQuery {
            task: task.into(),
            task_type: None,
            context: None,
            filter: EpisodeFilter::default(),
            limit: 10,
            method: RetrievalMethod::Hybrid,
        }
    }

    /// With the task's context.
    #[must_use]
    pub fn with_context(mut self, task_type: Option<TaskType>, context: TaskContext) -> Self {
        self.task_type = task_type;
        self.context = Some(context);
        self
    }

    /// With these filters.
    #[must_use]
    pub fn with_filter(mut self, filter: EpisodeFilter) -> Self {
        self.filter = filter;
        self
    }

    /// With this many results at most.
    #[must_use]
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// With these candidate sources.
    #[must_use]
    pub fn with_method(mut self, method: RetrievalMethod) -> Self {
        self.method = method;
        self
    }
}

/// One retrieved episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievedEpisode {
    /// The episode.
    pub episode: EpisodeSummary,
    /// Final score (higher is better; comparable within one retrieval only).
    pub score: f64,
    /// How the score came about.
    pub breakdown: ScoreBreakdown,
    /// Why it was returned, in one line.
    pub why: String,
}

/// The answer to a [`RetrievalQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    /// Best first.
    pub results: Vec<RetrievedEpisode>,
    /// The sources actually used (hybrid degrades to lexical without an embedder).
    pub method: RetrievalMethod,
    /// Calibrated confidence (0..1) that the best result is a real match; `None` when no
    /// semantic score is available (lexical scores are not comparable across queries).
    pub confidence: Option<f64>,
    /// True when the best match is strong (`confidence >= 0.5`). False with no results, and
    /// false in lexical mode, where nothing calibrated backs it.
    pub strong_match: bool,
    /// Set when retrieval runs degraded, e.g. without the embedding model.
    pub degraded: Option<String>,
}

/// Hybrid retrieval over a storage backend, with an optional embedder.
pub struct Retriever {
    storage: Arc<dyn Storage>,
    embedder: Option<Arc<dyn Embedder>>,
    index: Arc<VectorIndex>,
    /// BM25 over the same episodes' task text, searched instead of the backend's full-text
    /// index once the namespace has no episode waiting for an embedding (see `lexical_ready`).
    lexical: Arc<LexicalIndex>,
    loaded: Mutex<HashSet<Namespace>>,
    loading: tokio::sync::Mutex<()>,
    /// Where each loaded namespace's index stands in the storage's index change log.
    sync: Arc<Mutex<std::collections::HashMap<Namespace, SyncState>>>,
    /// One catch-up with the change log at a time (and none while a snapshot is taken).
    syncing: Arc<tokio::sync::Mutex<()>>,
    /// Snapshot writes started in the background, awaited by `finish_snapshots`.
    snapshot_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One drain of the embedding queue at a time: a second caller (the background task and
    /// an explicit `embed_pending`) waits and then finds the work done instead of repeating it.
    draining: tokio::sync::Mutex<()>,
    /// Per namespace drained in this process, the last episode id a drain reached (`None`:
    /// the queue was empty from the start).
    drained_up_to: Arc<Mutex<std::collections::HashMap<Namespace, Option<EpisodeId>>>>,
    /// Namespaces whose embedding coverage this process has read once (by the first drain
    /// or beside the first load, whichever comes first: the other waits and reuses it).
    coverage_probed: Arc<tokio::sync::Mutex<HashSet<Namespace>>>,
    /// Episodes embedded before they completed (their work text was partial), per namespace.
    partial: Mutex<std::collections::HashMap<Namespace, HashSet<EpisodeId>>>,
    /// Episodes of `partial` that have completed since: re-embedded by the next drain.
    stale: Mutex<std::collections::HashMap<Namespace, HashSet<EpisodeId>>>,
    queries: moka::sync::Cache<String, Arc<Vec<f32>>>,
    clock: SharedClock,
    config: RetrievalConfig,
    degraded_reason: Option<String>,
}

impl std::fmt::Debug for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field("embedder", &self.embedder.as_ref().map(|e| e.model_id()))
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The text embedded for an episode or a query: the task, then its context in words. Only
/// this short text is embedded (not the steps): it is what a new task is compared by, and it
/// keeps the embedder at ~40-70 texts/s on two cores instead of ~8 for step-length texts.
///
/// ```
/// use memory_core::{retrieval::embedding_text, TaskContext, TaskType};
/// let ctx = TaskContext::new("web_api").with_language("python").with_framework("fastapi");
/// assert_eq!(
///     embedding_text("add rate limiting", Some(TaskType::CodeGeneration), Some(&ctx)),
///     "add rate limiting (code generation; web api; python; fastapi)"
/// );
/// assert_eq!(embedding_text("add rate limiting", None, None), "add rate limiting");
/// ```
pub fn embedding_text(
    task: &str,
    task_type: Option<TaskType>,
    context: Option<&TaskContext>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(t) = task_type {
        parts.push(t.as_str().replace('_', " "));
    }
    if let Some(c) = context {
        if !c.domain.is_empty() {
            parts.push(c.domain.replace('_', " "));
        }
        parts.extend(c.language.iter().cloned());
        parts.extend(c.framework.iter().cloned());
        parts.extend(c.descriptive_tags().cloned());
    }
    let mut text = task.trim().to_owned();
    if !parts.is_empty() {
        let _ = write!(text, " ({})", parts.join("; "));
    }
    text
}

/// The key episode vectors made with `model` under `config` are stored under (see
/// [`Retriever::vector_key`]).
///
/// ```
/// use memory_core::retrieval::{RetrievalConfig, vector_key};
/// let default = RetrievalConfig::default();
/// assert_eq!(vector_key("all-MiniLM-L6-v2", &default), "all-MiniLM-L6-v2;ctx;work=0.50");
/// let config = RetrievalConfig { work_weight: 0.0, ..RetrievalConfig::default() };
/// assert_eq!(vector_key("all-MiniLM-L6-v2", &config), "all-MiniLM-L6-v2;ctx");
/// ```
pub fn vector_key(model: &str, config: &RetrievalConfig) -> String {
    let mut key = model.to_owned();
    if config.embed_context {
        key.push_str(";ctx");
    }
    if config.work_weight > 0.0 {
        let _ = write!(key, ";work={:.2}", config.work_weight);
    }
    key
}

/// Stored vectors read per page when a namespace's index is loaded.
const LOAD_PAGE: u32 = 2_000;

/// Change-log entries read per page when the index catches up with the storage.
const CHANGES_PAGE: u32 = 1_000;

/// Where a namespace's in-process index stands ([`Retriever::index_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStatus {
    /// Episodes with a vector in the index.
    pub episodes: usize,
    /// The storage's index change-log position the index has caught up with.
    pub log_position: u64,
    /// Whether this process loaded the index from a stored snapshot (else from the
    /// embeddings).
    pub restored_from_snapshot: bool,
    /// Episode changes applied since the stored snapshot's position (`None`: no snapshot
    /// stored yet by or for this process).
    pub changes_since_snapshot: Option<usize>,
}

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
}

/// Whether a snapshot of `n` episodes with `since` changes applied after it (`None`: no
/// snapshot) is due to be written again: none yet, or a twentieth of the namespace changed
/// (replaying a change costs about as much as loading ten episodes from the image).
fn snapshot_due(n: usize, since: Option<usize>) -> bool {
    since.is_none_or(|c| c >= (n / 20).max(CHANGES_PAGE as usize))
}

/// Embeds `texts`; an embedder that answers with a different number of vectors is an error
/// (pairing vectors with texts by position would then mislabel them).
async fn embed_all(embedder: &Arc<dyn Embedder>, texts: &[String]) -> Result<Vec<Vec<f32>>> {
    let vectors = embedder.embed(texts).await?;
    if vectors.len() != texts.len() {
        return Err(Error::storage(
            "embedder",
            "embed",
            false,
            format!(
                "returned {} vectors for {} texts",
                vectors.len(),
                texts.len()
            ),
        ));
    }
    Ok(vectors)
}

/// How many of the closest episodes back the confidence.
pub const SUPPORT: usize = 3;

/// The mean of the [`SUPPORT`] highest plain cosines (fewer when fewer are given), the
/// measure the confidence is calibrated on: a real match is usually backed by more than one
/// close episode, where a chance look-alike stands alone. On the retrieval eval, at
/// thresholds that flag every no-answer query, it wrongly flagged 2 of 76 answerable queries
/// with context and 4 on bare task text, against 2-3 and 5 for the single best cosine.
fn support(similarities: impl Iterator<Item = f32>) -> Option<f32> {
    let mut top: Vec<f32> = similarities.collect();
    if top.is_empty() {
        return None;
    }
    top.sort_by(|a, b| b.total_cmp(a));
    top.truncate(SUPPORT);
    Some(top.iter().sum::<f32>() / top.len() as f32)
}

/// Most characters of step actions in a [`work_text`] (whole actions only).
pub const WORK_ACTION_CHARS: usize = 320;
/// Most distinct error messages in a [`work_text`], each cut to [`WORK_ERROR_CHARS`].
pub const WORK_ERRORS: usize = 3;
/// Longest error message kept in a [`work_text`], in characters.
pub const WORK_ERROR_CHARS: usize = 120;

/// What was done in an episode, as embedded with its task: the distinct step actions in
/// order (up to [`WORK_ACTION_CHARS`]), then the distinct error messages of failed steps (at
/// most [`WORK_ERRORS`], each cut to [`WORK_ERROR_CHARS`]). Tool names and outputs are left
/// out: they are shared by every kind of task and would pull all vectors together. The caps
/// bound the embedding cost of a long episode at about 170 tokens. Empty for an episode
/// without steps.
///
/// ```
/// use chrono::Utc;
/// use memory_core::{
///     retrieval::work_text, Episode, ExecutionStep, NewEpisode, StepInput, TaskContext, TaskType,
/// };
/// let new = NewEpisode::new("fix the flaky test", TaskType::Testing, TaskContext::new("testing"));
/// let mut e = Episode::start(new, Utc::now());
/// for (n, input) in [
///     StepInput::ok("shell", "run the tests", "ok"),
///     StepInput::error("shell", "run the tests", "assertion failed at midnight"),
///     StepInput::ok("edit_file", "inject a fake clock", "edit applied"),
/// ]
/// .into_iter()
/// .enumerate()
/// {
///     e.steps.push(ExecutionStep { step_number: n as u32 + 1, key: ExecutionStep::new_key(), timestamp: Utc::now(), input });
/// }
/// assert_eq!(
///     work_text(&e),
///     "run the tests; inject a fake clock. errors: assertion failed at midnight"
/// );
/// ```
pub fn work_text(episode: &Episode) -> String {
    let mut actions: Vec<&str> = Vec::new();
    let mut action_chars = 0;
    let mut errors: Vec<&str> = Vec::new();
    for step in &episode.steps {
        let action = step.input.action.trim();
        let chars = action.chars().count() + 2;
        if !action.is_empty()
            && action_chars + chars <= WORK_ACTION_CHARS
            && !actions.contains(&action)
        {
            actions.push(action);
            action_chars += chars;
        }
        let result = &step.input.result;
        let error = result.text().trim();
        if !result.is_success()
            && !error.is_empty()
            && errors.len() < WORK_ERRORS
            && !errors.contains(&error)
        {
            errors.push(error);
        }
    }
    let mut text = actions.join("; ");
    if !errors.is_empty() {
        let cut: Vec<String> = errors
            .iter()
            .map(|e| e.chars().take(WORK_ERROR_CHARS).collect())
            .collect();
        if !text.is_empty() {
            text.push_str(". ");
        }
        let _ = write!(text, "errors: {}", cut.join("; "));
    }
    text
}

/// Reads once per process whether every episode of `ns` has a vector under `key` (two
/// counts) and, when so, records the newest episode in `drained`: a drain then starts after
/// it, and lexical candidates may come from the in-process index.
async fn probe_coverage(
    storage: &dyn Storage,
    drained: &Mutex<std::collections::HashMap<Namespace, Option<EpisodeId>>>,
    probed: &tokio::sync::Mutex<HashSet<Namespace>>,
    ns: &Namespace,
    key: &str,
) -> Result<()> {
    let mut probed = probed.lock().await;
    if probed.contains(ns) || lock(drained).contains_key(ns) {
        return Ok(());
    }
    let coverage = storage.embedding_coverage(ns, key).await?;
    if coverage.complete() {
        lock(drained)
            .entry(ns.clone())
            .or_insert(coverage.last_episode);
    }
    probed.insert(ns.clone());
    Ok(())
}

/// Takes an image of the namespace's index at its log position (under the catch-up lock),
/// encodes it off the async workers and stores it. Returns the namespace's `applied` count
/// at the image.
async fn write_snapshot(
    storage: &dyn Storage,
    index: &VectorIndex,
    sync: &Mutex<std::collections::HashMap<Namespace, SyncState>>,
    syncing: &tokio::sync::Mutex<()>,
    ns: &Namespace,
    key: &str,
) -> Result<usize> {
    let (summaries, parts, state) = {
        let _syncing = syncing.lock().await;
        let (summaries, parts) = index.export(ns);
        let state = lock(sync).get(ns).copied().unwrap_or_default();
        (summaries, parts, state)
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
        let lexical = lexical_index::LexicalParts::build(&summaries);
        snapshot::encode(dims, &summaries, &parts, &lexical)
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

impl Retriever {
    /// A retriever over `storage`; lexical only when `embedder` is `None`.
    pub fn new(
        storage: Arc<dyn Storage>,
        embedder: Option<Arc<dyn Embedder>>,
        clock: SharedClock,
        config: RetrievalConfig,
    ) -> Self {
        let dims = embedder.as_ref().map_or(0, |e| e.dimensions());
        let degraded_reason = embedder.is_none().then(|| {
            "no embedding model loaded: retrieval is lexical only (BM25); install the model \
             (scripts/install-model.sh) or set MEMORY_MODEL_DIR"
                .to_owned()
        });
        Retriever {
            storage,
            embedder,
            index: Arc::new(VectorIndex::new(dims)),
            lexical: Arc::new(LexicalIndex::new()),
            loaded: Mutex::new(HashSet::new()),
            loading: tokio::sync::Mutex::new(()),
            sync: Arc::new(Mutex::new(std::collections::HashMap::new())),
            syncing: Arc::new(tokio::sync::Mutex::new(())),
            snapshot_tasks: Mutex::new(Vec::new()),
            draining: tokio::sync::Mutex::new(()),
            drained_up_to: Arc::new(Mutex::new(std::collections::HashMap::new())),
            coverage_probed: Arc::new(tokio::sync::Mutex::new(HashSet::new())),
            partial: Mutex::new(std::collections::HashMap::new()),
            stale: Mutex::new(std::collections::HashMap::new()),
            queries: moka::sync::Cache::new(config.query_cache_entries),
            clock,
            config,
            degraded_reason,
        }
    }

    /// The embedder, if one is loaded.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// Why retrieval is degraded, if it is.
    pub fn degraded(&self) -> Option<&str> {
        self.degraded_reason.as_deref()
    }

    /// The settings.
    pub fn config(&self) -> &RetrievalConfig {
        &self.config
    }

    /// Where the namespace's in-process index stands (`None` before it is first searched, or
    /// without an embedder).
    pub fn index_status(&self, ns: &Namespace) -> Option<IndexStatus> {
        if !lock(&self.loaded).contains(ns) {
            return None;
        }
        let state = lock(&self.sync).get(ns).copied()?;
        Some(IndexStatus {
            episodes: self.index.len(ns),
            log_position: state.through,
            restored_from_snapshot: state.restored,
            changes_since_snapshot: state.snapshot_at.map(|at| state.applied.saturating_sub(at)),
        })
    }

    /// Vectors indexed in process for `ns` (0 before the namespace is first searched).
    pub fn indexed(&self, ns: &Namespace) -> usize {
        self.index.len(ns)
    }

    /// The key the episode vectors are stored under: the model, and how the embedded text
    /// was made (a change re-queues every episode for embedding; old vectors stay stored
    /// under their key).
    pub fn vector_key(&self, embedder: &Arc<dyn Embedder>) -> String {
        vector_key(embedder.model_id(), &self.config)
    }

    /// Tells the index that an episode's summary changed (e.g. it completed). An episode
    /// embedded before it completed is queued to be embedded again with all its steps.
    pub fn episode_changed(&self, ns: &Namespace, summary: EpisodeSummary) {
        if self.embedder.is_some() {
            if summary.completed_at.is_some()
                && lock(&self.partial)
                    .get_mut(ns)
                    .is_some_and(|p| p.remove(&summary.id))
            {
                lock(&self.stale)
                    .entry(ns.clone())
                    .or_default()
                    .insert(summary.id);
            }
            let summary = Arc::new(summary);
            self.index.update_summary(ns, Arc::clone(&summary));
            self.lexical.upsert(ns, summary);
        }
    }

    /// Episodes of `ns` with no embedding for the model yet (0 without an embedder).
    pub async fn embedding_backlog(&self, ns: &Namespace) -> Result<u64> {
        let Some(embedder) = &self.embedder else {
            return Ok(0);
        };
        let key = self.vector_key(embedder);
        let c = self.storage.embedding_coverage(ns, &key).await?;
        Ok(c.episodes.saturating_sub(c.embedded))
    }

    /// Embeds every episode of `ns` that has no embedding for the model yet, in batches, and
    /// stores and indexes the vectors. Returns how many were embedded (0 without an embedder).
    ///
    /// Safe to run concurrently with itself and after a crash: the queue is derived from the
    /// stored data, and storing an embedding is idempotent.
    #[instrument(skip_all, fields(namespace = %ns))]
    pub async fn embed_pending(&self, ns: &Namespace) -> Result<usize> {
        self.embed_pending_reporting(ns, &|_| {}).await
    }

    /// [`Retriever::embed_pending`], calling `progress` with the number embedded so far after
    /// each batch (for a progress bar over a large backlog).
    pub async fn embed_pending_reporting(
        &self,
        ns: &Namespace,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<usize> {
        let Some(embedder) = &self.embedder else {
            return Ok(0);
        };
        let _draining = self.draining.lock().await;
        let key = self.vector_key(embedder);
        let mut done = 0;
        // Episodes that completed after they were embedded: their vector missed the steps.
        let stale: Vec<EpisodeId> = lock(&self.stale)
            .remove(ns)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        for ids in stale.chunks(self.config.embed_batch.max(1) as usize) {
            done += self.embed_episodes(ns, embedder, &key, ids).await?;
            progress(done);
        }
        // Page with a cursor, from where the last full drain of this namespace ended: ids are
        // time-ordered (UUID v7), so what is new lies after it, and a drain never rescans what
        // it has embedded. The first drain of a process starts from the beginning, unless two
        // counts show every episode embedded (the scan probes each episode: ~0.1-0.2 s at
        // 100k, at start-up, when the first query is loading the index).
        if !lock(&self.drained_up_to).contains_key(ns) {
            probe_coverage(
                &*self.storage,
                &self.drained_up_to,
                &self.coverage_probed,
                ns,
                &key,
            )
            .await?;
            if lock(&self.drained_up_to).contains_key(ns) {
                return Ok(done);
            }
        }
        let mut after = lock(&self.drained_up_to).get(ns).copied().flatten();
        loop {
            let batch = self.config.embed_batch.max(1);
            let ids = self
                .storage
                .episodes_missing_embedding(ns, &key, after, batch)
                .await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            done += self.embed_episodes(ns, embedder, &key, &ids).await?;
            progress(done);
        }
        lock(&self.drained_up_to).insert(ns.clone(), after);
        if done > 0 {
            debug!(embedded = done, "embedding queue drained");
        }
        Ok(done)
    }

    /// Embeds, stores and indexes one batch of episodes (those that vanished meanwhile are
    /// passed over). Returns how many were stored.
    async fn embed_episodes(
        &self,
        ns: &Namespace,
        embedder: &Arc<dyn Embedder>,
        key: &str,
        ids: &[EpisodeId],
    ) -> Result<usize> {
        let mut episodes = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(e) = self.storage.get_episode(ns, id).await? {
                episodes.push(e);
            }
        }
        // One embedder call for the batch: each episode's task text, then its work text
        // when it has one and the work counts.
        let mut texts: Vec<String> = Vec::with_capacity(episodes.len() * 2);
        let mut work_at: Vec<Option<usize>> = Vec::with_capacity(episodes.len());
        for e in &episodes {
            texts.push(self.episode_text(&e.summary()));
        }
        for e in &episodes {
            let work = if self.config.work_weight > 0.0 {
                work_text(e)
            } else {
                String::new()
            };
            if work.is_empty() {
                work_at.push(None);
            } else {
                work_at.push(Some(texts.len()));
                texts.push(work);
            }
        }
        let vectors = embed_all(embedder, &texts).await?;
        let mut done = 0;
        let mut stored = Vec::with_capacity(episodes.len());
        for (i, e) in episodes.into_iter().enumerate() {
            let mut vector = vectors[i].clone();
            if let Some(w) = work_at[i] {
                for (a, b) in vector.iter_mut().zip(&vectors[w]) {
                    *a += self.config.work_weight * b;
                }
                crate::embedding::l2_normalize(&mut vector);
            }
            let summary = e.summary();
            match self
                .storage
                .put_embedding(ns, summary.id, key, &vector)
                .await
            {
                Ok(()) => {
                    if summary.completed_at.is_none() {
                        lock(&self.partial)
                            .entry(ns.clone())
                            .or_default()
                            .insert(summary.id);
                    }
                    stored.push(StoredEmbedding { summary, vector });
                    done += 1;
                }
                Err(Error::NotFound { .. }) => {} // vanished meanwhile
                Err(e) => return Err(e),
            }
        }
        // A loaded namespace takes the new vectors from the change log, with the summaries
        // as stored now (an episode may have completed while it was embedded). When the
        // storage cannot answer, they go in directly and the index is marked diverged.
        let caught_up = if lock(&self.loaded).contains(ns) {
            match self.catch_up(ns, key).await {
                Ok(_) => true,
                Err(e) => {
                    warn!(error = %e, "index could not catch up after embedding; indexing directly");
                    if let Some(state) = lock(&self.sync).get_mut(ns) {
                        state.diverged = true;
                    }
                    false
                }
            }
        } else {
            false
        };
        if !caught_up {
            // Not loaded yet: indexed now, and replaced by the load's full read.
            self.index_stored(ns, stored);
        }
        Ok(done)
    }

    /// Loads the namespace's stored vectors into the index the first time it is searched.
    async fn ensure_loaded(&self, ns: &Namespace) -> Result<()> {
        let Some(embedder) = &self.embedder else {
            return Ok(());
        };
        if lock(&self.loaded).contains(ns) {
            return Ok(());
        }
        let _loading = self.loading.lock().await;
        if lock(&self.loaded).contains(ns) {
            return Ok(());
        }
        let key = self.vector_key(embedder);
        // Whether every episode is embedded decides where lexical candidates come from; the
        // two counts that tell run beside the load instead of after it.
        let coverage = (!lock(&self.drained_up_to).contains_key(ns))
            .then(|| tokio::runtime::Handle::try_current().ok())
            .flatten()
            .map(|rt| {
                let (storage, drained, probed, ns, key) = (
                    Arc::clone(&self.storage),
                    Arc::clone(&self.drained_up_to),
                    Arc::clone(&self.coverage_probed),
                    ns.clone(),
                    key.clone(),
                );
                rt.spawn(async move {
                    if let Err(e) = probe_coverage(&*storage, &drained, &probed, &ns, &key).await {
                        debug!(error = %e, "embedding coverage not read at load");
                    }
                })
            });
        let (through, snapshot_at) = match self.restore_snapshot(ns, &key).await {
            Some(as_of) => (as_of, Some(0)),
            None => (self.load_embeddings(ns, &key).await?, None),
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
        self.catch_up(ns, &key).await?;
        if let Some(coverage) = coverage {
            // Its outcome is in `drained_up_to`; a failure only means asking again later.
            let _ = coverage.await;
        }
        lock(&self.loaded).insert(ns.clone());
        self.write_snapshot_if_due(ns, &key);
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
        let (index, lexical, space) = (
            Arc::clone(&self.index),
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
            let (vectors_fit, lexical_fit) = std::thread::scope(|scope| {
                let vectors = scope.spawn(|| index.restore(&space, summaries, image.vectors));
                let lexical_fit = lexical.restore(&space, image.summaries, image.lexical);
                (vectors.join().unwrap_or(false), lexical_fit)
            });
            if vectors_fit && lexical_fit {
                return Ok(n);
            }
            // Neither index keeps half an image.
            index.restore(&space, Vec::new(), VectorParts::default());
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
        let key = key.to_owned();
        // Pages are read by a task of their own while this one indexes the previous page, so
        // the database reads and the indexing overlap (they take about equal time).
        let (pages, mut received) = tokio::sync::mpsc::channel(2);
        let reader = {
            let (storage, ns, key) = (Arc::clone(&self.storage), ns.clone(), key.clone());
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
    async fn catch_up(&self, ns: &Namespace, key: &str) -> Result<usize> {
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
            self.index.remove(ns, id);
            self.lexical.remove(ns, id);
        }
    }

    /// Puts vectors with their summaries into both indexes (one lock each for the batch); a
    /// vector of the wrong length for the model is skipped with a warning. Returns how many
    /// went in.
    fn index_stored(&self, ns: &Namespace, stored: Vec<StoredEmbedding>) -> usize {
        let mut fitting = Vec::with_capacity(stored.len());
        for e in stored {
            if e.vector.len() == self.index.dims() {
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
        self.index.upsert_many(
            ns,
            fitting.iter().map(|(s, v)| (Arc::clone(s), v.as_slice())),
        );
        self.lexical
            .upsert_many(ns, fitting.into_iter().map(|(s, _)| s));
        count
    }

    /// Catches up with the change log before a search (a failure is logged: the search then
    /// runs on the index as it is).
    async fn refresh(&self, ns: &Namespace, key: &str) {
        if let Err(e) = self.catch_up(ns, key).await {
            warn!(error = %e, "index could not catch up with the storage; searching it as it is");
        }
        self.write_snapshot_if_due(ns, key);
    }

    /// Starts writing a snapshot of the namespace's index in the background when one is
    /// due (see [`snapshot_due`]) and the namespace holds at least `index_snapshot_from`
    /// episodes. The image is taken under the catch-up lock, so it matches its log position.
    fn write_snapshot_if_due(&self, ns: &Namespace, key: &str) {
        let n = self.index.len(ns);
        if n < self.config.index_snapshot_from as usize {
            return;
        }
        {
            let mut sync = lock(&self.sync);
            let Some(state) = sync.get_mut(ns) else {
                return;
            };
            let since = state.snapshot_at.map(|at| state.applied.saturating_sub(at));
            if state.diverged || state.writing || !snapshot_due(n, since) {
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
        let (storage, index, sync, syncing) = (
            Arc::clone(&self.storage),
            Arc::clone(&self.index),
            Arc::clone(&self.sync),
            Arc::clone(&self.syncing),
        );
        let (ns, key) = (ns.clone(), key.to_owned());
        let task = rt.spawn(async move {
            let written = write_snapshot(&*storage, &index, &sync, &syncing, &ns, &key).await;
            let mut sync = lock(&sync);
            if let Some(state) = sync.get_mut(&ns) {
                state.writing = false;
                match written {
                    Ok(applied_at_image) => state.snapshot_at = Some(applied_at_image),
                    Err(e) => warn!(namespace = %ns, error = %e, "index snapshot not written"),
                }
            }
        });
        let mut tasks = lock(&self.snapshot_tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits for the index snapshots being written in the background (what `shutdown` does,
    /// so a short-lived process, like one CLI command, leaves its snapshot for the next one
    /// instead of abandoning it half-written).
    pub async fn finish_snapshots(&self) {
        let tasks: Vec<_> = lock(&self.snapshot_tasks).drain(..).collect();
        for task in tasks {
            if let Err(e) = task.await {
                warn!(error = %e, "index snapshot task stopped");
            }
        }
    }

    /// Whether lexical candidates come from the in-process index: an embedder is loaded, the
    /// namespace's vectors are loaded (which indexes their summaries), it holds at least
    /// `in_process_lexical_from` episodes, and no episode waits for an embedding (a drain
    /// finished in this process, or the queue is empty now). Otherwise they come from the
    /// backend's full-text index, which sees every stored episode.
    async fn lexical_ready(&self, ns: &Namespace) -> Result<bool> {
        let Some(embedder) = &self.embedder else {
            return Ok(false);
        };
        self.ensure_loaded(ns).await?;
        if self.lexical.len(ns) < self.config.in_process_lexical_from as usize {
            return Ok(false);
        }
        if lock(&self.drained_up_to).contains_key(ns) {
            return Ok(true);
        }
        let coverage = self
            .storage
            .embedding_coverage(ns, &self.vector_key(embedder))
            .await?;
        if coverage.complete() {
            lock(&self.drained_up_to)
                .entry(ns.clone())
                .or_insert(coverage.last_episode);
            return Ok(true);
        }
        Ok(false)
    }

    /// The vectors of a query's texts, in order: from the cache, and those not cached from
    /// one embedder call (a query with context has two texts, and one batch of two costs
    /// less than two calls).
    async fn query_vectors(
        &self,
        embedder: &Arc<dyn Embedder>,
        texts: Vec<String>,
    ) -> Result<Vec<Arc<Vec<f32>>>> {
        let mut vectors: Vec<Option<Arc<Vec<f32>>>> =
            texts.iter().map(|t| self.queries.get(t)).collect();
        let missing: Vec<String> = texts
            .iter()
            .zip(&vectors)
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        if !missing.is_empty() {
            let embedded = embed_all(embedder, &missing).await?;
            let mut fresh = missing.into_iter().zip(embedded);
            for slot in vectors.iter_mut().filter(|v| v.is_none()) {
                if let Some((text, vector)) = fresh.next() {
                    let vector = Arc::new(vector);
                    self.queries.insert(text, Arc::clone(&vector));
                    *slot = Some(vector);
                }
            }
        }
        Ok(vectors.into_iter().flatten().collect())
    }

    /// The texts a query is embedded as: with context, the task with its context words
    /// first (its plain cosine backs the confidence) and the bare task second; the index
    /// combines them. On the retrieval eval the pair ranked better than either alone (the
    /// context words alone pull same-stack look-alikes up, the bare task loses the stack).
    fn query_texts(&self, query: &RetrievalQuery) -> Vec<String> {
        let bare = query.task.trim().to_owned();
        if self.config.embed_context && (query.context.is_some() || query.task_type.is_some()) {
            let full = embedding_text(&query.task, query.task_type, query.context.as_ref());
            if full != bare {
                return vec![full, bare];
            }
        }
        vec![bare]
    }

    fn episode_text(&self, s: &EpisodeSummary) -> String {
        if self.config.embed_context {
            embedding_text(&s.task_description, Some(s.task_type), Some(&s.context))
        } else {
            s.task_description.clone()
        }
    }

    fn lexical_text(&self, query: &RetrievalQuery) -> String {
        let mut text = query.task.clone();
        if self.config.lexical_context_terms
            && let Some(c) = &query.context
        {
            for w in [Some(&c.domain), c.language.as_ref(), c.framework.as_ref()]
                .into_iter()
                .flatten()
                .chain(c.descriptive_tags())
            {
                text.push(' ');
                text.push_str(&w.replace('_', " "));
            }
        }
        text
    }

    /// Finds the past episodes most relevant to `query`.
    #[instrument(skip_all, fields(namespace = %ns, method = %query.method, limit = query.limit))]
    pub async fn retrieve(&self, ns: &Namespace, query: &RetrievalQuery) -> Result<Retrieval> {
        let mut method = query.method;
        let mut degraded = None;
        // Lexical retrieval does not embed the query (so it has no calibrated confidence).
        let embedder = match (&self.embedder, method) {
            (_, RetrievalMethod::Lexical) => None,
            (Some(e), _) => Some(e),
            (None, _) => {
                method = RetrievalMethod::Lexical;
                degraded.clone_from(&self.degraded_reason);
                None
            }
        };
        if query.limit == 0 {
            return Ok(Retrieval {
                results: Vec::new(),
                method,
                confidence: None,
                strong_match: false,
                degraded,
            });
        }
        let candidates = self.config.candidates.max(query.limit);
        if let Some(embedder) = embedder {
            // Loaded once per namespace; then each search first takes in what other
            // processes (and this one's completions and embeddings) changed.
            self.ensure_loaded(ns).await?;
            self.refresh(ns, &self.vector_key(embedder)).await;
        }

        let lexical = if method == RetrievalMethod::Vector {
            Vec::new()
        } else if self.lexical_ready(ns).await? {
            self.lexical
                .search(
                    ns,
                    &self.lexical_text(query),
                    &query.filter,
                    candidates as usize,
                )
                .into_iter()
                .map(|h| TextHit {
                    episode_id: h.summary.id,
                    score: f64::from(h.score),
                    summary: (*h.summary).clone(),
                })
                .collect()
        } else {
            self.storage
                .search_episodes(
                    ns,
                    &TextQuery {
                        text: self.lexical_text(query),
                        filter: query.filter.clone(),
                        limit: candidates,
                    },
                )
                .await?
        };

        let mut semantic: Vec<VectorHit> = Vec::new();
        let mut query_vectors: Vec<Arc<Vec<f32>>> = Vec::new();
        if let Some(embedder) = embedder {
            self.ensure_loaded(ns).await?;
            query_vectors = self
                .query_vectors(embedder, self.query_texts(query))
                .await?;
        }
        let queries: Vec<&[f32]> = query_vectors.iter().map(|v| v.as_slice()).collect();
        if !queries.is_empty() {
            semantic = self
                .index
                .search(ns, &queries, &query.filter, candidates as usize);
        }

        // The plain cosines of the closest semantic candidates back the confidence, whatever
        // the method ranked by (they are the one absolute similarity available).
        let best_similarity = support(semantic.iter().map(|h| h.similarity));
        let fused = scoring::fuse(
            &self.config,
            method,
            &lexical,
            &semantic,
            |id| {
                if queries.is_empty() {
                    None
                } else {
                    self.index.score(ns, &queries, id)
                }
            },
            query.context.is_some(),
        );
        let now = self.clock.now();
        let mut results: Vec<RetrievedEpisode> = fused
            .into_iter()
            .map(|c| {
                let breakdown = scoring::rerank(&self.config, query, &c.summary, &c, now);
                RetrievedEpisode {
                    why: scoring::why(query, &c.summary, &breakdown),
                    score: breakdown.score,
                    breakdown,
                    episode: (*c.summary).clone(),
                }
            })
            .collect();
        results.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.episode.id.cmp(&b.episode.id))
        });
        results.truncate(query.limit as usize);

        // Context words embedded with the task raise every cosine a little.
        let threshold = if query.context.is_some() || query.task_type.is_some() {
            self.config.strong_match_cosine
        } else {
            self.config.strong_match_cosine_bare
        };
        let confidence = best_similarity.map(|c| scoring::confidence(c, threshold));
        Ok(Retrieval {
            strong_match: !results.is_empty() && confidence.is_some_and(|c| c >= 0.5),
            results,
            method,
            confidence,
            degraded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{ExecutionStep, NewEpisode, StepInput};
    use chrono::Utc;

    fn episode(steps: Vec<StepInput>) -> Episode {
        let new = NewEpisode::new("task", TaskType::Other, TaskContext::new("general"));
        let mut e = Episode::start(new, Utc::now());
        for (n, input) in steps.into_iter().enumerate() {
            e.steps.push(ExecutionStep {
                step_number: n as u32 + 1,
                key: ExecutionStep::new_key(),
                timestamp: Utc::now(),
                input,
            });
        }
        e
    }

    #[test]
    fn work_text_of_a_long_episode_stays_within_its_caps() {
        let mut steps = Vec::new();
        for i in 0..200 {
            steps.push(StepInput::ok(
                "shell",
                format!("run step number {i} of the plan"),
                "ok",
            ));
            steps.push(StepInput::error(
                "shell",
                format!("retry step {i}"),
                format!("error {i}: {}", "x".repeat(500)),
            ));
        }
        let text = work_text(&episode(steps));
        let bound = WORK_ACTION_CHARS + ". errors: ".len() + WORK_ERRORS * (WORK_ERROR_CHARS + 2);
        assert!(text.chars().count() <= bound, "{} > {bound}", text.len());
        assert!(text.starts_with("run step number 0 of the plan; retry step 0"));
        assert_eq!(text.matches("error ").count(), WORK_ERRORS, "{text}");
        // Repeated actions and errors count once.
        let same = vec![StepInput::error("shell", "build", "boom"); 5];
        assert_eq!(work_text(&episode(same)), "build. errors: boom");
        assert_eq!(work_text(&episode(Vec::new())), "");
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
}
