//! What a retrieval is asked and what it answers, and its settings.

use serde::{Deserialize, Serialize};

use crate::episode::{EpisodeSummary, TaskContext, TaskType};
use crate::storage::EpisodeFilter;

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

/// How the lexical and the semantic candidate lists are fused into one score.
///
/// Every method keeps both signals as long as the weight of the semantic side
/// ([`RetrievalConfig::dense_weight`], [`RetrievalConfig::dense_weight_bare`]) lies strictly
/// between 0 and 1, which the defaults do: a candidate found by either list can then be
/// ranked first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMethod {
    /// Each list's scores min-max normalized over the candidates, then weighted: the top of
    /// each list maps to 1 however weak the list is.
    MinMax,
    /// Reciprocal rank fusion: `w / (k + semantic rank) + (1 - w) / (k + lexical rank)`, with
    /// `k` = [`RetrievalConfig::rank_constant`]; scores are ignored, only the order counts.
    ReciprocalRank,
    /// Each list's scores standardized over the candidates (z-scores), then weighted: a list
    /// whose best candidates stand out from the rest (an informative list for this query)
    /// moves the ranking more than a flat one, so the weights adapt per query. The default
    /// (the leave-one-dataset-out choice once episodes had step windows).
    #[default]
    ZScore,
}

impl FusionMethod {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FusionMethod::MinMax => "min_max",
            FusionMethod::ReciprocalRank => "reciprocal_rank",
            FusionMethod::ZScore => "z_score",
        }
    }
}

impl std::fmt::Display for FusionMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FusionMethod {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "min_max" => Ok(FusionMethod::MinMax),
            "reciprocal_rank" => Ok(FusionMethod::ReciprocalRank),
            "z_score" => Ok(FusionMethod::ZScore),
            other => Err(format!(
                "unknown fusion method {other:?} (min_max, reciprocal_rank or z_score)"
            )),
        }
    }
}

/// Retrieval settings.
///
/// # Default
/// 50 candidates from each source; z-score fusion with semantic weight 0.45 for a query
/// whose every word the lexical index knows, raised by 1.0 (with context) or 2.0 (bare task
/// text) times the share of its words it does not know, within 0.1-0.9; no semantic trust
/// ramp; context words in the lexical query and the embedded text; the work text at weight
/// 0.5 in the episode vector; up to 16 step windows per long episode, a window's match
/// counted at 0.8; context weight 0.8; outcome weight 0.05; recency weight 0.05 with a
/// 90-day half-life; strong-match cosine (mean of the three best) 0.425 with context and
/// 0.36 without; embedding batches of 32; 1,024 cached query vectors; the in-process lexical
/// index from 2,000 episodes.
///
/// The fusion settings and the window weight are the choice of leave-one-dataset-out over
/// four labeled sets (the two written for this project and two public conversation
/// benchmarks; `memory eval leave-one-out`, see docs/EVALUATION.md): chosen on all four,
/// where each set's reported figures come from the choice made on the other three, by the
/// setting's worst margin over the better of BM25 and the vector on any set. The work,
/// context and outcome weights are the choice of 5-fold cross-validation on the retrieval
/// eval (`memory eval retrieval --cross-validate`), and the thresholds the ones fitted there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Candidates taken from each source before fusion.
    pub candidates: u32,
    /// How the two candidate lists are fused ([`FusionMethod`]).
    pub fusion: FusionMethod,
    /// The `k` of reciprocal rank fusion: larger values flatten the difference between the
    /// first ranks.
    pub rank_constant: f64,
    /// Below this best centered cosine among the candidates the semantic list gets no weight
    /// in the fusion, and from it up to [`RetrievalConfig::semantic_trust_full`] its weight
    /// rises linearly to the configured one: a query that no episode is semantically close
    /// to (on long conversations, whose text the episode vector barely covers, the best
    /// centered cosine is ~0.1 against ~0.55 on coding tasks) is ranked by the words it
    /// shares. `semantic_trust_full <= semantic_trust_from` turns this off (the weight is
    /// always the configured one), which is the default since the weight follows the
    /// query's unknown words ([`RetrievalConfig::unknown_term_shift`]): with step windows and
    /// the shift, leave-one-dataset-out chose no ramp.
    pub semantic_trust_from: f32,
    /// The best centered cosine from which the semantic list gets its full weight.
    pub semantic_trust_full: f32,
    /// Weight of the semantic side in the fused score (the lexical one gets `1 - w`), for
    /// queries with context whose every word the lexical index knows (see
    /// [`RetrievalConfig::unknown_term_shift`]), before the trust ramp
    /// ([`RetrievalConfig::semantic_trust_from`]).
    pub dense_weight: f64,
    /// The same for bare task text. Neither weight should be 0 or 1: either drops a signal
    /// for every query (at 1.0 for bare text, the default until 11-28, hybrid retrieval on the
    /// public conversation benchmarks was the vector's R@5 0.39 where BM25 alone had 0.80).
    pub dense_weight_bare: f64,
    /// How far the semantic weight rises for a query whose words the lexical index has
    /// never seen: the weight is [`RetrievalConfig::dense_weight`] plus this times the share
    /// of the query's distinct words that no episode of the namespace holds, kept within
    /// 0.1-0.9. A paraphrase in words the memory does not use (BM25 is blind to them) leans
    /// on the vector; a question that names what the episodes say leans on BM25. For queries
    /// with context; 0 turns it off.
    pub unknown_term_shift: f64,
    /// The same for bare task text.
    pub unknown_term_shift_bare: f64,
    /// Add the query's context words (domain, language, framework, tags) to the lexical query
    /// (episodes index theirs with the task text).
    pub lexical_context_terms: bool,
    /// Embed the task type and context words with the task text (episodes and queries).
    pub embed_context: bool,
    /// Weight of the work text ([`work_text`](super::work_text): distinct step actions and errors) in an
    /// episode's vector, added to the task text's embedding before normalizing; 0 embeds the
    /// task text only. On the retrieval eval, 0.5 lifted hybrid nDCG@10 on bare task text
    /// from 0.77 to 0.80 and with context from 0.945 to 0.949 (a paraphrased symptom often
    /// matches what was done better than how the task was worded), at four times the
    /// embedding work: 15 instead of 63 episodes/s on two cores, off the write path.
    pub work_weight: f32,
    /// Most step windows ([`step_windows`](super::step_windows): consecutive steps of up to
    /// 480 characters) embedded per episode besides its own vector; 0 embeds none. An
    /// episode's own vector covers its task and the first ~320 characters of its actions;
    /// the windows let the vector side find the detail in the 30th turn of a conversation
    /// (on the public conversation benchmarks, vector R@5 0.39 -> 0.71 and 0.34 -> 0.51). An
    /// episode whose steps fit in one window gets none (its own vector covers them). Changing
    /// it re-embeds every episode (the vectors are stored under a key that names it).
    pub step_windows: u32,
    /// How much a step window's match counts against the episode's own: an episode's semantic
    /// score is the larger of its own vector's centered cosine and this times its best
    /// window's. 0 ignores the windows at query time.
    pub window_weight: f32,
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
    /// Plain cosine similarity (the mean of the [`SUPPORT`](super::SUPPORT) closest episodes) at which a
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
            fusion: FusionMethod::ZScore,
            rank_constant: 60.0,
            semantic_trust_from: 0.0,
            semantic_trust_full: 0.0,
            dense_weight: 0.45,
            dense_weight_bare: 0.45,
            unknown_term_shift: 1.0,
            unknown_term_shift_bare: 2.0,
            lexical_context_terms: true,
            embed_context: true,
            work_weight: 0.5,
            step_windows: 16,
            window_weight: 0.8,
            context_weight: 0.8,
            outcome_weight: 0.05,
            recency_weight: 0.05,
            recency_half_life_days: 90.0,
            strong_match_cosine: 0.425,
            strong_match_cosine_bare: 0.36,
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
    /// The step the query matched, when named: [`recommend`](crate::SelfLearningMemory::recommend)
    /// names it for the episodes it shows (a retrieval alone reads no steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_step: Option<super::MatchedStep>,
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
    /// What the confidence is calibrated on: the mean plain cosine of the
    /// [`SUPPORT`](super::SUPPORT) semantically closest episodes (`None` without a semantic
    /// side). A caller that wants its own abstention threshold compares this.
    #[serde(default)]
    pub support: Option<f64>,
    /// True when the best match is strong (`confidence >= 0.5`). False with no results, and
    /// false in lexical mode, where nothing calibrated backs it.
    pub strong_match: bool,
    /// Set when retrieval runs degraded, e.g. without the embedding model.
    pub degraded: Option<String>,
}

/// Where a namespace's in-process index stands ([`Retriever::index_status`](super::Retriever::index_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStatus {
    /// Episodes with a vector in the index.
    pub episodes: usize,
    /// Step windows with a vector in the index (of the episodes longer than one window).
    #[serde(default)]
    pub step_windows: usize,
    /// The storage's index change-log position the index has caught up with.
    pub log_position: u64,
    /// Whether this process loaded the index from a stored snapshot (else from the
    /// embeddings).
    pub restored_from_snapshot: bool,
    /// Episode changes applied since the stored snapshot's position (`None`: no snapshot
    /// stored yet by or for this process).
    pub changes_since_snapshot: Option<usize>,
}

/// How a result's score came about. Normalized parts are in 0..1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreBreakdown {
    /// Raw BM25 score, when the lexical index matched.
    pub bm25: Option<f64>,
    /// BM25 min-max normalized over the candidates.
    pub lexical: f64,
    /// Cosine similarity to the query after centering both on the namespace's mean vector
    /// (what ranks), when the episode is embedded.
    pub cosine: Option<f64>,
    /// Plain cosine similarity to the query as embedded (what the confidence is calibrated
    /// on), when the episode is embedded.
    #[serde(default)]
    pub similarity: Option<f64>,
    /// The step window ([`step_windows`](super::step_windows), numbered from 0) whose vector
    /// gave the semantic score, when it beat the episode's own vector;
    /// [`matched_step`](super::matched_step) names the step in it.
    #[serde(default)]
    pub window: Option<u16>,
    /// Cosine min-max normalized over the candidates.
    pub semantic: f64,
    /// The two sources fused by [`RetrievalConfig::fusion`] (or the single source),
    /// min-max normalized over the candidates.
    pub fused: f64,
    /// Share of the query's kind of work (domain, task type) the episode shares; 0 when the
    /// query gave neither.
    pub context_match: f64,
    /// The episode's reward (0..1), when completed.
    pub reward: Option<f64>,
    /// Recency factor in `1 - recency_weight ..= 1`.
    pub recency: f64,
    /// `fused * (1 + context) * (1 + outcome) * recency`.
    pub score: f64,
}
