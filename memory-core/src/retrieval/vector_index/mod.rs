//! The in-process vector index: an exact scan over int8-quantized vectors, per namespace (from
//! [`SIGN_STAGE_FROM`] vectors, over a pool a one-bit first stage chose).
//!
//! Why our own: at 384 dimensions libsql's DiskANN index inserted only 150-280 rows/s with
//! recall@10 of 0.47-0.83, and an exact `vector_distance_cos` in SQL took ~193 ms at 100k rows.
//! An exact scan over 1-byte codes touches 384 bytes per episode (38 MB at 100k), is exact up to
//! quantization (no recall loss), filters inside the scan, and needs no tuning. The HNSW crates
//! would add a graph to persist and keep consistent with deletions for a gain that only matters
//! far above the sizes measured here.
//!
//! Quantization is symmetric per vector: `code = round(x / scale)` with `scale = max|x| / 127`.
//! The query stays in f32 for the final scores, so the error is the document's rounding only
//! (below 0.01 in cosine for unit vectors of 384 dimensions).
//!
//! **Centering.** Sentence embeddings share a large common direction: any two texts of one
//! kind (say, coding tasks) have a cosine of 0.2-0.4 whatever they are about, which squeezes
//! the differences that matter. Ranking subtracts the namespace's mean vector `m` from the
//! documents and the query before the cosine (`cos(q - m, d - m)`), computed without touching
//! the codes: `(q_c . d - q_c . m) / |d - m|` with the centered unit query `q_c`, a constant
//! `q_c . m` per query and one stored `1 / |d - m|` per document. The mean is shrunk towards
//! zero for small namespaces (`sum / (n + CENTER_PRIOR)`, so one or two episodes are barely
//! centered) and recomputed once the namespace has grown or shrunk by a tenth since the last
//! time (a pass over the codes, about as costly as one search). On the retrieval eval this
//! lifted vector-only nDCG@10 on bare task text from 0.74 to 0.77, and to 0.81 with the
//! steps' text in the episode vector (see `Retriever`). Hits also carry the plain cosine with
//! the first query vector, which the confidence is calibrated on.
//!
//! From [`SIGN_STAGE_FROM`] vectors in a namespace (a million takes ~47 ms to scan on two
//! cores) a search first estimates every document from one-bit codes of its centered vector
//! (`sign_codes.rs`, 48 bytes instead of 384) and scans only the best
//! [`SIGN_POOL_FACTOR`] x `k` of them exactly. Below that size the scan is exact.
//!
//! **Rows.** An episode holds one or more vectors (rows 0, 1, ...), each scanned as a document
//! of its own and carrying the episode's summary (filters apply per row). A search and
//! [`VectorIndex::score`] give each episode its best row. The retriever keeps two indexes:
//! one of each episode's own vector (one row each) and one of the step windows of long
//! episodes (a row per window), each centered on its own mean.
//!
//! The vectors themselves are persisted in the durable layer (`EmbeddingStore`); a namespace's
//! index is loaded from there, page by page, the first time it is searched, never re-embedded.

mod quantize;
mod search;
mod snapshot;
mod space;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use quantize::quantize;
use space::Space;

use crate::episode::{EpisodeId, EpisodeSummary};
use crate::namespace::Namespace;

/// Pseudo-count that shrinks the namespace mean towards zero: the center is
/// `sum / (n + CENTER_PRIOR)`. At 20, a namespace of 240 episodes is centered at 92%, one of 2
/// episodes at 9% (centering two vectors on their exact mean would make them opposite).
pub const CENTER_PRIOR: usize = 20;

/// One scored candidate from the index: an episode, scored by the best of its rows.
#[derive(Debug, Clone)]
pub struct VectorHit {
    /// The episode's summary as indexed.
    pub summary: Arc<EpisodeSummary>,
    /// Centered cosine similarity to the (combined) query: what ranking uses.
    pub cosine: f32,
    /// Plain cosine similarity to the first query vector (vectors are unit length): the
    /// absolute measure the confidence is calibrated on.
    pub similarity: f32,
    /// Which of the episode's rows scored best (0 in an index of one vector per episode; in
    /// the step-window index, the number of the window).
    pub row: u16,
}

/// What a snapshot stores of one namespace's space besides its summaries: per row (in index
/// order) its number within its episode, the quantization scale, the codes and
/// `1 / |d - center|`; the sum of the vectors, the center and the size it was computed at.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct VectorParts {
    pub rows: Vec<u16>,
    pub scales: Vec<f32>,
    pub codes: Vec<i8>,
    pub inv_norms: Vec<f32>,
    pub sum: Vec<f64>,
    pub center: Vec<f32>,
    pub centered_at: usize,
}

/// Vectors of many namespaces, each searched only within itself.
#[derive(Debug)]
pub struct VectorIndex {
    dims: usize,
    spaces: RwLock<HashMap<Namespace, Arc<RwLock<Space>>>>,
    /// From how many documents a namespace's search starts with the one-bit stage.
    sign_stage_from: AtomicUsize,
}

impl VectorIndex {
    /// An empty index for vectors of `dims` dimensions.
    pub fn new(dims: usize) -> Self {
        VectorIndex {
            dims,
            spaces: RwLock::new(HashMap::new()),
            sign_stage_from: AtomicUsize::new(SIGN_STAGE_FROM),
        }
    }

    /// From how many vectors a namespace's search takes its candidates from one-bit codes
    /// first ([`SIGN_STAGE_FROM`] by default; `usize::MAX` keeps every search exact). The codes
    /// are built on the next search of a namespace that reached the size.
    ///
    /// ```
    /// use memory_core::retrieval::VectorIndex;
    /// let index = VectorIndex::new(384);
    /// index.set_sign_stage_from(usize::MAX); // exact scans only, whatever the size
    /// assert_eq!(index.sign_stage_from(), usize::MAX);
    /// ```
    pub fn set_sign_stage_from(&self, n: usize) {
        self.sign_stage_from.store(n, Ordering::Relaxed);
    }

    /// See [`set_sign_stage_from`](Self::set_sign_stage_from).
    pub fn sign_stage_from(&self) -> usize {
        self.sign_stage_from.load(Ordering::Relaxed)
    }

    /// Vector length.
    pub fn dims(&self) -> usize {
        self.dims
    }

    fn space(&self, ns: &Namespace) -> Arc<RwLock<Space>> {
        if let Some(s) = self
            .spaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(ns)
        {
            return Arc::clone(s);
        }
        let mut spaces = self.spaces.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(spaces.entry(ns.clone()).or_default())
    }

    /// The namespace's space, re-centered first if its size moved by a tenth, with its
    /// one-bit codes complete once it is large enough for them.
    fn fresh_space(&self, ns: &Namespace) -> Arc<RwLock<Space>> {
        let space = self.space(ns);
        let from = self.sign_stage_from();
        let due = |s: &Space| s.recenter_due() || s.signs_due(from);
        if due(&space.read().unwrap_or_else(PoisonError::into_inner)) {
            let mut s = space.write().unwrap_or_else(PoisonError::into_inner);
            if s.recenter_due() {
                s.recenter(self.dims, from);
            } else if s.signs_due(from) {
                s.code_signs(self.dims);
            }
        }
        space
    }

    /// Adds or replaces an episode's vectors: `vector` holds one row per `dims` values (rows
    /// it had beyond them go). A length that is not a whole number of rows is ignored (the
    /// caller checks lengths; the index never mixes models).
    pub fn upsert(&self, ns: &Namespace, summary: impl Into<Arc<EpisodeSummary>>, vector: &[f32]) {
        self.upsert_many(ns, [(summary.into(), vector)]);
    }

    /// [`upsert`](Self::upsert) of many vectors under one lock (how a namespace is loaded).
    pub fn upsert_many<'v>(
        &self,
        ns: &Namespace,
        items: impl IntoIterator<Item = (Arc<EpisodeSummary>, &'v [f32])>,
    ) {
        let space = self.space(ns);
        let mut s = space.write().unwrap_or_else(PoisonError::into_inner);
        for (summary, vector) in items {
            self.upsert_locked(&mut s, &summary, vector);
        }
    }

    fn upsert_locked(&self, s: &mut Space, summary: &Arc<EpisodeSummary>, vector: &[f32]) {
        let dims = self.dims;
        let rows = vector.len() / dims.max(1);
        if dims == 0
            || !vector.len().is_multiple_of(dims)
            || rows == 0
            || rows > usize::from(u16::MAX)
        {
            return;
        }
        s.remove_episode(summary.id, dims);
        s.episodes += 1;
        for (r, row) in (0u16..).zip(vector.chunks_exact(dims)) {
            let (scale, codes) = quantize(row);
            let i = s.summaries.len();
            s.position.insert((summary.id, r), i);
            s.summaries.push(Arc::clone(summary));
            s.rows.push(r);
            s.scales.push(scale);
            s.codes.extend_from_slice(&codes);
            s.inv_norms.push(0.0);
            s.add_to_sum(i, dims, 1.0);
        }
        // A space due for re-centering recomputes every norm (and code) before its next search.
        if s.recenter_due() {
            s.signs = None;
            return;
        }
        let mut centered = Vec::with_capacity(dims);
        for i in s.summaries.len() - rows..s.summaries.len() {
            s.inv_norms[i] = s.inv_norm(i, dims);
            if s.signs.is_some() {
                s.centered_doc(i, dims, &mut centered);
                if let Some(signs) = s.signs.as_mut() {
                    signs.put(i, &centered);
                }
            }
        }
    }

    /// Removes an episode's vectors; false if it was not indexed.
    pub fn remove(&self, ns: &Namespace, id: EpisodeId) -> bool {
        let space = self.space(ns);
        let mut s = space.write().unwrap_or_else(PoisonError::into_inner);
        s.remove_episode(id, self.dims)
    }

    /// Replaces the summary of an indexed episode (e.g. once it completes), keeping its
    /// vectors.
    pub fn update_summary(&self, ns: &Namespace, summary: impl Into<Arc<EpisodeSummary>>) {
        let summary = summary.into();
        let space = self.space(ns);
        let mut s = space.write().unwrap_or_else(PoisonError::into_inner);
        for i in s.rows_of(summary.id) {
            s.summaries.set(i, Arc::clone(&summary));
        }
    }

    /// How many episodes the namespace holds.
    pub fn len(&self, ns: &Namespace) -> usize {
        self.space(ns)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .episodes
    }

    /// How many vectors (rows) the namespace holds: [`len`](Self::len) when every episode
    /// has one.
    ///
    /// ```
    /// use chrono::Utc;
    /// use memory_core::{retrieval::VectorIndex, EpisodeId, EpisodeSummary, Namespace, TaskContext, TaskType};
    /// let index = VectorIndex::new(2);
    /// let ns = Namespace::default();
    /// let summary = EpisodeSummary {
    ///     id: EpisodeId::new(), task_description: "a long talk".into(), task_type: TaskType::Other,
    ///     context: TaskContext::new("chat"), step_count: 40, started_at: Utc::now(),
    ///     completed_at: None, outcome: None, reward: None,
    /// };
    /// // Three rows of two dimensions each: one episode.
    /// index.upsert(&ns, summary, &[1.0, 0.0, 0.0, 1.0, 0.6, 0.8]);
    /// assert_eq!((index.len(&ns), index.rows(&ns)), (1, 3));
    /// ```
    pub fn rows(&self, ns: &Namespace) -> usize {
        self.space(ns)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .summaries
            .len()
    }

    /// True when the namespace holds no vectors.
    pub fn is_empty(&self, ns: &Namespace) -> bool {
        self.len(ns) == 0
    }

    /// Whether the episode has a vector in the index.
    pub fn contains(&self, ns: &Namespace, id: EpisodeId) -> bool {
        self.space(ns)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .position
            .contains_key(&(id, 0))
    }

    /// The mean the namespace's vectors are centered on (empty before the first search).
    pub fn center(&self, ns: &Namespace) -> Vec<f32> {
        self.fresh_space(ns)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .center
            .clone()
    }

    /// The indexed summary and scores of one episode (its best row), if indexed. `queries`
    /// as in [`search`](Self::search).
    pub fn score(&self, ns: &Namespace, queries: &[&[f32]], id: EpisodeId) -> Option<VectorHit> {
        let first = *queries.first()?;
        if queries.iter().any(|q| q.len() != self.dims) {
            return None;
        }
        let space = self.fresh_space(ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let (q, offset) = s.centered_query(queries)?;
        s.rows_of(id)
            .into_iter()
            .map(|i| s.hit(i, self.dims, &q, offset, first))
            .reduce(|best, h| if h.cosine > best.cosine { h } else { best })
    }
}

/// From this many vectors in a namespace a search starts with the one-bit stage (see the
/// module docs). Every size measured below it (up to 100k) keeps the exact scan.
pub const SIGN_STAGE_FROM: usize = 262_144;

/// How many candidates per requested result the one-bit stage hands to the exact scan: 8,000
/// for the 50 candidates of a hybrid top-10. The retrieval bench reports the recall this keeps
/// at 1M: on random unit vectors (the hard case: the closest of a million are at a cosine of
/// ~0.25) 0.98 of the exact top 10 and 0.94 of the top 50 in 10 ms, against 0.89 / 0.78 with
/// 2,000 (9 ms) and 0.996 / 0.984 with 20,000 (16 ms); the exact scan took 97 ms then (11-25),
/// 47 ms since its multiply-adds are packed (11-27, a slower hour: 15 ms with the pool).
pub const SIGN_POOL_FACTOR: usize = 160;

/// How many candidates per requested result the integer first stage keeps for exact
/// re-scoring. The query's own rounding moves a cosine by well under 0.01, so the true top k
/// sits far inside a shortlist four times as long.
pub const SHORTLIST_FACTOR: usize = 4;

#[cfg(test)]
mod tests;
