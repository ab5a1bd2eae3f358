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

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use super::indexed_summaries::{FilterCheck, IndexedSummaries};
use super::sign_codes::{SignCodes, SignQuery};

use crate::episode::{EpisodeId, EpisodeSummary};
use crate::namespace::Namespace;
use crate::storage::EpisodeFilter;

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

/// A row of the index: an episode and the number of one of its vectors (0, 1, ...).
type RowKey = (EpisodeId, u16);

/// One namespace's rows. A document is one row (one vector); an episode has rows 0..m, m
/// at least 1, each carrying the episode's summary (so filters apply per row unchanged).
#[derive(Debug, Default)]
struct Space {
    summaries: IndexedSummaries,
    /// Per row, its number within its episode.
    rows: Vec<u16>,
    scales: Vec<f32>,
    codes: Vec<i8>,
    /// `1 / |d - center|` per document.
    inv_norms: Vec<f32>,
    position: HashMap<RowKey, usize>,
    /// Episodes held (rows numbered 0).
    episodes: usize,
    /// Sum of the (dequantized) vectors.
    sum: Vec<f64>,
    /// The mean the documents are currently centered on (empty: not yet centered).
    center: Vec<f32>,
    /// Documents counted when `center` was computed.
    centered_at: usize,
    /// One-bit codes of the centered documents, kept from [`SIGN_STAGE_FROM`] documents on.
    signs: Option<SignCodes>,
}

impl Space {
    fn code(&self, i: usize, dims: usize) -> &[i8] {
        &self.codes[i * dims..(i + 1) * dims]
    }

    /// `1 / |d - center|` of document `i`, from its codes (once the space is centered).
    fn inv_norm(&self, i: usize, dims: usize) -> f32 {
        let scale = self.scales[i];
        let code = self.code(i, dims);
        let n2: f32 = code
            .iter()
            .zip(&self.center)
            .map(|(&c, m)| (scale * f32::from(c) - m).powi(2))
            .sum();
        inv_sqrt(n2)
    }

    /// Document `i` minus the center, from its codes, into `out`.
    fn centered_doc(&self, i: usize, dims: usize, out: &mut Vec<f32>) {
        let scale = self.scales[i];
        out.clear();
        out.extend(
            self.code(i, dims)
                .iter()
                .zip(&self.center)
                .map(|(&c, m)| scale * f32::from(c) - m),
        );
    }

    /// Whether the one-bit codes must be (re)built before a search: the space holds at least
    /// `from` documents and they are missing or do not cover every document.
    fn signs_due(&self, from: usize) -> bool {
        let n = self.summaries.len();
        n >= from && self.signs.as_ref().is_none_or(|c| c.len() != n)
    }

    /// Codes every document against the current center.
    fn code_signs(&mut self, dims: usize) {
        let mut signs = SignCodes::new(dims);
        let mut centered = Vec::with_capacity(dims);
        for i in 0..self.summaries.len() {
            self.centered_doc(i, dims, &mut centered);
            signs.put(i, &centered);
        }
        self.signs = Some(signs);
    }

    fn add_to_sum(&mut self, i: usize, dims: usize, sign: f64) {
        if self.sum.len() != dims {
            self.sum = vec![0.0; dims];
        }
        let scale = f64::from(self.scales[i]);
        for j in 0..dims {
            self.sum[j] += sign * scale * f64::from(self.codes[i * dims + j]);
        }
    }

    /// Whether the center is stale: the namespace changed size by more than a tenth since it
    /// was computed.
    fn recenter_due(&self) -> bool {
        let n = self.summaries.len();
        n > 0
            && (self.centered_at == 0
                || n * 10 > self.centered_at * 11
                || n * 10 < self.centered_at * 9)
    }

    /// Centers on the current mean; from `sign_from` documents the one-bit codes follow.
    fn recenter(&mut self, dims: usize, sign_from: usize) {
        let n = self.summaries.len();
        let denom = (n + CENTER_PRIOR) as f64;
        self.center = self.sum.iter().map(|s| (s / denom) as f32).collect();
        self.centered_at = n;
        self.inv_norms = (0..n).map(|i| self.inv_norm(i, dims)).collect();
        self.signs = None;
        if n >= sign_from {
            self.code_signs(dims);
        }
    }

    /// The centered unit query combining `queries` (each centered and normalized, then summed
    /// and normalized), and its offset `q_c . center`. `None` when it vanishes.
    fn centered_query(&self, queries: &[&[f32]]) -> Option<(Vec<f32>, f32)> {
        let dims = self.center.len();
        let mut combined = vec![0.0f32; dims];
        for q in queries {
            let mut c: Vec<f32> = q.iter().zip(&self.center).map(|(x, m)| x - m).collect();
            crate::embedding::l2_normalize(&mut c);
            for (a, b) in combined.iter_mut().zip(&c) {
                *a += b;
            }
        }
        let norm: f32 = combined.iter().map(|x| x * x).sum::<f32>().sqrt();
        if !norm.is_normal() {
            return None;
        }
        for x in &mut combined {
            *x /= norm;
        }
        let offset = combined.iter().zip(&self.center).map(|(a, b)| a * b).sum();
        Some((combined, offset))
    }

    fn hit(&self, i: usize, dims: usize, q: &[f32], offset: f32, first: &[f32]) -> VectorHit {
        let code = self.code(i, dims);
        VectorHit {
            summary: Arc::clone(&self.summaries[i]),
            cosine: (self.scales[i] * dot(q, code) - offset) * self.inv_norms[i],
            similarity: self.scales[i] * dot(first, code),
            row: self.rows[i],
        }
    }

    /// The row indices of episode `id`, in row order.
    fn rows_of(&self, id: EpisodeId) -> Vec<usize> {
        (0..=u16::MAX)
            .map_while(|r| self.position.get(&(id, r)).copied())
            .collect()
    }

    /// Takes out row `i`, moving the last row into its place.
    fn remove_row(&mut self, i: usize, dims: usize) {
        let key = (self.summaries[i].id, self.rows[i]);
        self.position.remove(&key);
        self.add_to_sum(i, dims, -1.0);
        let last = self.summaries.len() - 1;
        self.summaries.swap_remove(i);
        self.rows.swap_remove(i);
        self.scales.swap_remove(i);
        self.inv_norms.swap_remove(i);
        if let Some(signs) = self.signs.as_mut() {
            signs.swap_remove(i);
        }
        if i != last {
            self.codes
                .copy_within(last * dims..(last + 1) * dims, i * dims);
            let moved = (self.summaries[i].id, self.rows[i]);
            self.position.insert(moved, i);
        }
        self.codes.truncate(last * dims);
    }

    /// Takes out every row of episode `id`; false if it had none.
    fn remove_episode(&mut self, id: EpisodeId, dims: usize) -> bool {
        let mut rows = self.rows_of(id);
        if rows.is_empty() {
            return false;
        }
        // Highest index first: a swap moves only rows from above the ones still to go.
        rows.sort_unstable_by(|a, b| b.cmp(a));
        for i in rows {
            self.remove_row(i, dims);
        }
        self.episodes -= 1;
        true
    }
}

fn inv_sqrt(n2: f32) -> f32 {
    if n2 > 1e-12 { 1.0 / n2.sqrt() } else { 0.0 }
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

    /// A copy of the namespace's space: its summaries in index order and the parts a
    /// snapshot stores.
    pub(crate) fn export(&self, ns: &Namespace) -> (Vec<Arc<EpisodeSummary>>, VectorParts) {
        // Centered as a search would be: an image centered on a stale mean would make the
        // first search of every process that restores it recenter (35 ms at 100k).
        let space = self.fresh_space(ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let parts = VectorParts {
            rows: s.rows.clone(),
            scales: s.scales.clone(),
            codes: s.codes.clone(),
            inv_norms: s.inv_norms.clone(),
            sum: s.sum.clone(),
            center: s.center.clone(),
            centered_at: s.centered_at,
        };
        (s.summaries.to_vec(), parts)
    }

    /// Replaces the namespace's space with one restored from a snapshot (`summaries` per row,
    /// as [`export`](Self::export) gives them). Refused (false, the space unchanged) when the
    /// parts do not fit the summaries or the index's dimensions, or an episode's rows are not
    /// numbered 0, 1, ... without gaps.
    pub(crate) fn restore(
        &self,
        ns: &Namespace,
        summaries: Vec<Arc<EpisodeSummary>>,
        parts: VectorParts,
    ) -> bool {
        let n = summaries.len();
        let dims = self.dims;
        let centered = parts.center.is_empty() || parts.center.len() == dims;
        let summed = (n == 0 && parts.sum.is_empty()) || parts.sum.len() == dims;
        if parts.scales.len() != n
            || parts.rows.len() != n
            || parts.inv_norms.len() != n
            || parts.codes.len() != n * dims
            || !centered
            || !summed
            || parts.centered_at > n.saturating_mul(2).max(1)
        {
            return false;
        }
        let position: HashMap<RowKey, usize> = summaries
            .iter()
            .zip(&parts.rows)
            .enumerate()
            .map(|(i, (s, &r))| ((s.id, r), i))
            .collect();
        if position.len() != n {
            return false; // a row twice
        }
        // Every row r > 0 needs its row r - 1: removal walks an episode's rows from 0.
        if position
            .keys()
            .any(|&(id, r)| r > 0 && !position.contains_key(&(id, r - 1)))
        {
            return false;
        }
        let episodes = parts.rows.iter().filter(|&&r| r == 0).count();
        let mut restored = Space {
            summaries: IndexedSummaries::new(summaries),
            rows: parts.rows,
            episodes,
            scales: parts.scales,
            codes: parts.codes,
            inv_norms: parts.inv_norms,
            position,
            sum: parts.sum,
            center: parts.center,
            centered_at: parts.centered_at,
            signs: None,
        };
        // An image written before it was centered is centered here, on the restoring
        // thread, rather than by the first search; so are the one-bit codes of a large one.
        let from = self.sign_stage_from();
        if restored.recenter_due() {
            restored.recenter(dims, from);
        } else if restored.signs_due(from) {
            restored.code_signs(dims);
        }
        let space = self.space(ns);
        *space.write().unwrap_or_else(PoisonError::into_inner) = restored;
        true
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

    /// The `k` most similar episodes passing `filter`, each by its best row, best first by
    /// centered cosine (ties by id). `queries` are unit vectors of the same need (say, the task alone and the task with
    /// its context): each is centered and normalized, and their sum is the query; the first
    /// one gives the hits' plain `similarity`.
    ///
    /// Two stages: the query is quantized like the documents and every code is scored with
    /// integer dot products (`i16` products summed in `i32` lanes, which compile to packed
    /// multiply-adds), keeping a shortlist of [`SHORTLIST_FACTOR`] × `k`; the shortlist is then
    /// re-scored with the f32 query, so the returned cosines carry only the documents'
    /// rounding, as [`score`](Self::score) does. From 65,536 episodes in the namespace the
    /// first stage scans in parts, one thread per core (up to four); the result is the same.
    pub fn search(
        &self,
        ns: &Namespace,
        queries: &[&[f32]],
        filter: &EpisodeFilter,
        k: usize,
    ) -> Vec<VectorHit> {
        let Some(first) = queries.first().copied() else {
            return Vec::new();
        };
        if queries.iter().any(|q| q.len() != self.dims) || k == 0 {
            return Vec::new();
        }
        let dims = self.dims;
        let space = self.fresh_space(ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let Some((query, offset)) = s.centered_query(queries) else {
            return Vec::new();
        };
        let n = s.scales.len();
        let parts = if n >= PARALLEL_FROM {
            std::thread::available_parallelism().map_or(1, |p| p.get().min(MAX_PARTS))
        } else {
            1
        };
        let signs = s
            .signs
            .as_ref()
            .filter(|c| n >= self.sign_stage_from() && c.len() == n);
        // Rows are scored and the best row of each episode kept. An episode of several rows
        // can fill the shortlist with its own: while fewer than `k` episodes come out and
        // rows were left unscored, the shortlist widens (four times each round).
        let mut per_result = SHORTLIST_FACTOR;
        loop {
            let shortlist = k.saturating_mul(per_result);
            let scan = Scan::new(&s, dims, (&query, offset), filter, shortlist);
            let best = match signs {
                Some(signs) => {
                    let pool = k
                        .saturating_mul(SIGN_POOL_FACTOR)
                        .saturating_mul(per_result / SHORTLIST_FACTOR);
                    scan.shortlist_of(&scan.sign_pool(signs, &query, n, parts, pool), parts)
                }
                None => scan.in_parts(n, parts),
            };
            let exhausted = best.len() < shortlist || shortlist >= n;
            let mut by_episode: HashMap<EpisodeId, VectorHit> = HashMap::with_capacity(best.len());
            for (_, i) in best {
                let hit = s.hit(i, dims, &query, offset, first);
                match by_episode.entry(hit.summary.id) {
                    std::collections::hash_map::Entry::Occupied(mut kept) => {
                        if hit.cosine > kept.get().cosine {
                            kept.insert(hit);
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(hit);
                    }
                }
            }
            if by_episode.len() >= k || exhausted {
                let mut rescored: Vec<VectorHit> = by_episode.into_values().collect();
                rescored.sort_by(|a, b| {
                    b.cosine
                        .total_cmp(&a.cosine)
                        .then_with(|| a.summary.id.cmp(&b.summary.id))
                });
                rescored.truncate(k);
                return rescored;
            }
            per_result = per_result.saturating_mul(4);
        }
    }
}

/// From this many vectors in a namespace a search scans its codes in parts, one thread each
/// (the scan is bound by memory bandwidth and by one core's multiply-adds; a part per core
/// roughly divides its time by the cores there are, at a thread start per part).
const PARALLEL_FROM: usize = 65_536;

/// Most parts a scan is split into.
const MAX_PARTS: usize = 4;

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

/// `range` split into `parts` consecutive ranges, each mapped by `f` on a thread of its own
/// (inline when there is one part), the results concatenated in range order.
fn in_parts<T: Send>(
    range: std::ops::Range<usize>,
    parts: usize,
    f: impl Fn(std::ops::Range<usize>) -> Vec<T> + Sync,
) -> Vec<T> {
    if parts <= 1 {
        return f(range);
    }
    let (start, end) = (range.start, range.end);
    let step = (end - start).div_ceil(parts).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (start..end)
            .step_by(step)
            .map(|from| scope.spawn(move || f(from..(from + step).min(end))))
            .collect();
        // A part cannot panic (it reads only inside its range); if one did, it would be left
        // out rather than fail the search.
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// Best first, ties by the lower index.
fn best_first(a: &(f32, usize), b: &(f32, usize)) -> CmpOrdering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `n` of `candidates` (in no particular order) and returns the score of the
/// worst one kept (`-inf` when fewer than `n` are left).
fn keep_best(candidates: &mut Vec<(f32, usize)>, n: usize) -> f32 {
    if n == 0 {
        candidates.clear();
        return f32::INFINITY;
    }
    if candidates.len() > n {
        candidates.select_nth_unstable_by(n - 1, best_first);
        candidates.truncate(n);
    }
    if candidates.len() < n {
        return f32::NEG_INFINITY;
    }
    candidates.iter().fold(f32::INFINITY, |m, c| m.min(c.0))
}

/// The integer first stage of a search over one namespace's codes.
struct Scan<'a> {
    space: &'a Space,
    dims: usize,
    q_wide: Vec<i16>,
    q_scale: f32,
    offset: f32,
    /// `None` when nothing is filtered out.
    filter: Option<FilterCheck<'a>>,
    shortlist: usize,
}

impl<'a> Scan<'a> {
    /// The first stage for the centered `query` (and its offset) over `space`'s codes.
    fn new(
        space: &'a Space,
        dims: usize,
        (query, offset): (&[f32], f32),
        filter: &'a EpisodeFilter,
        shortlist: usize,
    ) -> Self {
        let (q_scale, q_codes) = quantize(query);
        Scan {
            space,
            dims,
            q_wide: q_codes.iter().map(|&c| i16::from(c)).collect(),
            q_scale,
            offset,
            filter: (*filter != EpisodeFilter::default()).then(|| space.summaries.check(filter)),
            shortlist,
        }
    }

    /// The best `shortlist` of the first `n` codes, scanned in `parts` parts on as many
    /// threads; the same as one scan: best first, ties by the lower index.
    fn in_parts(&self, n: usize, parts: usize) -> Vec<(f32, usize)> {
        let mut all = in_parts(0..n, parts, |range| self.shortlist(range));
        if parts > 1 {
            all.sort_by(best_first);
            all.truncate(self.shortlist);
        }
        all
    }

    /// The one-bit stage: the indices (ascending) of the `pool` documents of the first `n`
    /// that pass the filter with the best estimates from `signs`, scanned in `parts` parts;
    /// the same whatever the parts (ties by the lower index).
    fn sign_pool(
        &self,
        signs: &SignCodes,
        query: &[f32],
        n: usize,
        parts: usize,
        pool: usize,
    ) -> Vec<usize> {
        let estimator = SignQuery::new(query, self.dims);
        let s = self.space;
        let mut kept = in_parts(0..n, parts, |range| {
            // Candidates above the bar go into a buffer; when it holds twice the pool, the
            // best `pool` are kept and the worst of them becomes the bar (linear on average,
            // where a heap paid a logarithm per candidate).
            let mut buffer: Vec<(f32, usize)> = Vec::with_capacity(2 * pool);
            let mut bar = f32::NEG_INFINITY;
            for i in range {
                let estimate = estimator.estimate(signs, i);
                // Indices rise within a part, so an estimate equal to the bar is worse than
                // the kept candidate that set it.
                if estimate <= bar {
                    continue;
                }
                if self.filter.is_some_and(|f| !s.summaries.passes(&f, i)) {
                    continue;
                }
                buffer.push((estimate, i));
                if buffer.len() >= 2 * pool.max(1) {
                    bar = keep_best(&mut buffer, pool);
                }
            }
            keep_best(&mut buffer, pool);
            buffer
        });
        kept.sort_by(best_first);
        kept.truncate(pool);
        let mut indices: Vec<usize> = kept.into_iter().map(|(_, i)| i).collect();
        indices.sort_unstable();
        indices
    }

    /// The best `shortlist` of the documents at `indices` (ascending; already filtered), by
    /// the integer scores of their codes: best first, ties by the lower index.
    fn shortlist_of(&self, indices: &[usize], parts: usize) -> Vec<(f32, usize)> {
        let s = self.space;
        let mut scored = in_parts(0..indices.len(), parts, |range| {
            let mut part: Vec<(f32, usize)> = indices[range]
                .iter()
                .map(|&i| (self.integer_score(i, s.code(i, self.dims)), i))
                .collect();
            part.sort_by(best_first);
            part.truncate(self.shortlist);
            part
        });
        scored.sort_by(best_first);
        scored.truncate(self.shortlist);
        scored
    }

    /// The centered cosine of document `i` with the quantized query, from its `code`.
    fn integer_score(&self, i: usize, code: &[i8]) -> f32 {
        let s = self.space;
        let raw = s.scales[i] * self.q_scale * dot_i8(&self.q_wide, code) as f32;
        (raw - self.offset) * s.inv_norms[i]
    }

    /// The best `shortlist` (score, index) of the codes in `range`, best first, ties by the
    /// lower index.
    fn shortlist(&self, range: std::ops::Range<usize>) -> Vec<(f32, usize)> {
        let s = self.space;
        let (dims, shortlist) = (self.dims, self.shortlist);
        // Keep the best in a small sorted buffer: the shortlist is tiny next to n.
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(shortlist + 1);
        let codes = s
            .codes
            .get(range.start * dims..range.end * dims)
            .unwrap_or_default();
        for (i, code) in (range.start..).zip(codes.chunks_exact(dims)) {
            let score = self.integer_score(i, code);
            if best.len() == shortlist && best.last().is_some_and(|(w, _)| score <= *w) {
                continue;
            }
            if self.filter.is_some_and(|f| !s.summaries.passes(&f, i)) {
                continue;
            }
            let at = best.partition_point(|(b, _)| *b >= score);
            best.insert(at, (score, i));
            best.truncate(shortlist);
        }
        best
    }
}

/// How many candidates per requested result the integer first stage keeps for exact
/// re-scoring. The query's own rounding moves a cosine by well under 0.01, so the true top k
/// sits far inside a shortlist four times as long.
pub const SHORTLIST_FACTOR: usize = 4;

/// `sum(q[j] * code[j])` in integers. Codes lie in -127..=127, so one product fits in `i16`
/// but sums do not: products are summed in `i32`. Written as one plain sum over blocks of 32,
/// the compiler may reorder the integer additions, and it pairs neighbouring products into
/// the packed multiply-add instruction every x86-64 CPU has (`pmaddwd`: eight `i16` products
/// summed in pairs into four `i32` lanes). The earlier form, sixteen explicit lanes, compiled
/// to a multiply per product and three shuffles to widen it: this one computes the same sums
/// and halves the scan (`retrieval/vector_index_search/10000`: 0.745 -> 0.379 ms, 100000:
/// 3.20 -> 1.83 ms, same hour).
fn dot_i8(q: &[i16], code: &[i8]) -> i32 {
    let qc = q.chunks_exact(32);
    let cc = code.chunks_exact(32);
    let (qr, cr) = (qc.remainder(), cc.remainder());
    let mut sum = 0i32;
    for (a, b) in qc.zip(cc) {
        for j in 0..32 {
            sum += i32::from(a[j]) * i32::from(b[j]);
        }
    }
    for (a, b) in qr.iter().zip(cr) {
        sum += i32::from(*a) * i32::from(*b);
    }
    sum
}

/// Symmetric int8 quantization of one vector.
fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (0.0, vec![0; v.len()]);
    }
    let scale = max / 127.0;
    let inv = 1.0 / scale;
    // Round half away from zero by adding ±0.5 and truncating: `f32::round` is a library
    // call per element, this vectorizes (and `as` saturates).
    let codes = v
        .iter()
        .map(|x| {
            let y = (x * inv).clamp(-127.0, 127.0);
            (y + 0.5f32.copysign(y)) as i8
        })
        .collect();
    (scale, codes)
}

/// `sum(q[j] * code[j])`, in eight independent lanes so the compiler vectorizes it.
fn dot(q: &[f32], code: &[i8]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let qc = q.chunks_exact(8);
    let cc = code.chunks_exact(8);
    let (qr, cr) = (qc.remainder(), cc.remainder());
    for (a, b) in qc.zip(cc) {
        for j in 0..8 {
            lanes[j] += a[j] * f32::from(b[j]);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (a, b) in qr.iter().zip(cr) {
        sum += a * f32::from(*b);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{TaskContext, TaskType};
    use chrono::Utc;

    fn summary(domain: &str) -> EpisodeSummary {
        EpisodeSummary {
            id: EpisodeId::new(),
            task_description: format!("task in {domain}"),
            task_type: TaskType::Debugging,
            context: TaskContext::new(domain),
            step_count: 0,
            started_at: Utc::now(),
            completed_at: None,
            outcome: None,
            reward: None,
        }
    }

    fn unit(seed: u32, dims: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dims)
            .map(|j| ((seed as f32 * 12.9898 + j as f32 * 78.233).sin() * 43_758.547).fract())
            .collect();
        crate::embedding::l2_normalize(&mut v);
        v
    }

    fn centered_cosine(q: &[f32], v: &[f32], m: &[f32]) -> f32 {
        let a: Vec<f32> = q.iter().zip(m).map(|(x, y)| x - y).collect();
        let b: Vec<f32> = v.iter().zip(m).map(|(x, y)| x - y).collect();
        crate::embedding::cosine(&a, &b)
    }

    #[test]
    fn a_scan_in_parts_keeps_what_one_scan_keeps_ties_included() {
        let dims = 8;
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        for i in 0..3_001u32 {
            // Every third vector repeats an earlier one: equal scores, kept by lower index.
            let seed = if i % 3 == 0 { i / 3 + 1 } else { i + 1 };
            let domain = if i % 2 == 0 { "cli" } else { "web_api" };
            index.upsert(&ns, summary(domain), &unit(seed, dims));
        }
        let space = index.fresh_space(&ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let (query, offset) = s.centered_query(&[&unit(77, dims)]).unwrap();
        let cli = EpisodeFilter {
            domain: Some("cli".into()),
            ..EpisodeFilter::default()
        };
        for filter in [EpisodeFilter::default(), cli] {
            let scan = Scan::new(&s, dims, (&query, offset), &filter, 40);
            let one = scan.in_parts(3_001, 1);
            assert_eq!(one.len(), 40);
            for parts in [2, 3, 4, 7] {
                assert_eq!(scan.in_parts(3_001, parts), one, "{parts} parts");
            }
        }
    }

    /// `n` random unit vectors of `dims` dimensions, half in `cli`, half in `web_api`.
    fn filled(n: u32, dims: usize) -> (VectorIndex, Vec<EpisodeId>) {
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        let ids = (0..n)
            .map(|i| {
                let s = summary(if i % 2 == 0 { "cli" } else { "web_api" });
                let id = s.id;
                index.upsert(&ns, s, &unit(i + 1, dims));
                id
            })
            .collect();
        (index, ids)
    }

    #[test]
    fn the_sign_stage_keeps_the_exact_top_10_of_random_vectors() {
        let (index, _) = filled(5_000, 384);
        let ns = Namespace::default();
        let (mut found, mut wanted) = (0, 0);
        for seed in 0..10 {
            let q = unit(100_000 + seed, 384);
            index.set_sign_stage_from(usize::MAX);
            let exact = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
            index.set_sign_stage_from(0);
            let staged = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
            let got: Vec<EpisodeId> = staged.iter().map(|h| h.summary.id).collect();
            wanted += exact.len();
            found += exact.iter().filter(|h| got.contains(&h.summary.id)).count();
            // What both return is scored alike: the pool is re-scored exactly.
            for h in &staged {
                if let Some(e) = exact.iter().find(|e| e.summary.id == h.summary.id) {
                    assert!((e.cosine - h.cosine).abs() < 1e-6);
                }
            }
        }
        assert_eq!(wanted, 100);
        // The pool is 1,600 of 5,000; a pool drawn at random would keep ~32 of 100.
        assert!(found >= 95, "recall@10 {found}/100");
        let space = index.space(&ns);
        assert_eq!(
            space.read().unwrap().signs.as_ref().map(SignCodes::len),
            Some(5_000)
        );
    }

    #[test]
    fn a_sign_pool_in_parts_keeps_what_one_part_keeps_filtered_or_not() {
        let (index, _) = filled(3_001, 16);
        index.set_sign_stage_from(0);
        let ns = Namespace::default();
        let space = index.fresh_space(&ns);
        let s = space.read().unwrap_or_else(PoisonError::into_inner);
        let signs = s.signs.as_ref().unwrap();
        let (query, offset) = s.centered_query(&[&unit(77, 16)]).unwrap();
        let cli = EpisodeFilter {
            domain: Some("cli".into()),
            ..EpisodeFilter::default()
        };
        for filter in [EpisodeFilter::default(), cli] {
            let scan = Scan::new(&s, 16, (&query, offset), &filter, 40);
            let one = scan.sign_pool(signs, &query, 3_001, 1, 200);
            assert_eq!(one.len(), 200);
            assert!(one.windows(2).all(|w| w[0] < w[1]), "ascending indices");
            if filter.domain.is_some() {
                assert!(one.iter().all(|&i| s.summaries[i].context.domain == "cli"));
            }
            for parts in [2, 3, 4, 7] {
                assert_eq!(
                    scan.sign_pool(signs, &query, 3_001, parts, 200),
                    one,
                    "{parts} parts"
                );
            }
        }
    }

    #[test]
    fn sign_codes_follow_upserts_removals_and_restores() {
        let dims = 24;
        let (index, ids) = filled(400, dims);
        index.set_sign_stage_from(300);
        let ns = Namespace::default();
        let coded_afresh = |index: &VectorIndex| {
            let space = index.fresh_space(&ns);
            let mut s = space.write().unwrap();
            let kept = s.signs.clone();
            s.code_signs(dims);
            (kept, s.signs.clone())
        };
        let (kept, fresh) = coded_afresh(&index);
        assert!(kept.is_some());
        assert_eq!(kept, fresh);
        // Fewer changes than a tenth: no re-centering, so the codes are patched in place.
        index.upsert(&ns, summary("cli"), &unit(9_001, dims));
        index.upsert(&ns, summary("cli"), &unit(9_002, dims));
        assert!(index.remove(&ns, ids[3]));
        assert!(index.remove(&ns, ids[399]));
        let (kept, fresh) = coded_afresh(&index);
        assert_eq!(kept.as_ref().map(SignCodes::len), Some(400));
        assert_eq!(kept, fresh);
        // A restored image of a large namespace is coded as it is restored.
        let (summaries, parts) = index.export(&ns);
        let restored = VectorIndex::new(dims);
        restored.set_sign_stage_from(300);
        assert!(restored.restore(&ns, summaries, parts));
        let space = restored.space(&ns);
        assert_eq!(space.read().unwrap().signs, fresh);
        // Below the size, no codes are kept.
        let small = VectorIndex::new(dims);
        small.upsert(&ns, summary("cli"), &unit(1, dims));
        small.set_sign_stage_from(2);
        let (kept, _) = coded_afresh(&small);
        assert!(kept.is_none());
    }

    #[test]
    fn removing_an_episode_keeps_the_others_scored_as_before() {
        let dims = 32;
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        let docs: Vec<EpisodeSummary> = (0..5).map(|_| summary("cli")).collect();
        for (i, d) in docs.iter().enumerate() {
            index.upsert(&ns, d.clone(), &unit(i as u32 + 1, dims));
        }
        let q = unit(9, dims);
        let before = index.score(&ns, &[&q], docs[4].id).map(|h| h.similarity);
        assert!(index.remove(&ns, docs[1].id));
        assert!(!index.remove(&ns, docs[1].id), "already gone");
        assert_eq!(index.len(&ns), 4);
        assert!(!index.contains(&ns, docs[1].id));
        // The last document moved into the freed slot and keeps its vector.
        assert_eq!(
            index.score(&ns, &[&q], docs[4].id).map(|h| h.similarity),
            before
        );
        let hits = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
        assert_eq!(hits.len(), 4);
        assert!(hits.iter().all(|h| h.summary.id != docs[1].id));
        assert!(index.remove(&ns, docs[4].id), "the last one");
        assert_eq!(
            index
                .search(&ns, &[&q], &EpisodeFilter::default(), 10)
                .len(),
            3
        );
    }

    #[test]
    fn quantized_cosines_are_close_to_exact() {
        let dims = 384;
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        let q = unit(0, dims);
        let mut docs = Vec::new();
        for seed in 1..50 {
            let v = unit(seed, dims);
            let s = summary("web");
            docs.push((s.id, v.clone()));
            index.upsert(&ns, s, &v);
        }
        let m = index.center(&ns);
        assert_eq!(m.len(), dims);
        for (id, v) in docs {
            let hit = index.score(&ns, &[&q], id).unwrap();
            let exact = centered_cosine(&q, &v, &m);
            assert!(
                (exact - hit.cosine).abs() < 0.01,
                "{exact} vs {}",
                hit.cosine
            );
            let plain = crate::embedding::cosine(&q, &v);
            assert!(
                (plain - hit.similarity).abs() < 0.01,
                "{plain} vs {}",
                hit.similarity
            );
        }
    }

    #[test]
    fn the_center_is_the_shrunk_mean_and_follows_growth() {
        let index = VectorIndex::new(2);
        let ns = Namespace::default();
        index.upsert(&ns, summary("web"), &[1.0, 0.0]);
        index.upsert(&ns, summary("web"), &[0.0, 1.0]);
        // sum (1, 1) over n + CENTER_PRIOR = 22.
        let m = index.center(&ns);
        assert!((m[0] - 1.0 / 22.0).abs() < 1e-3 && (m[1] - 1.0 / 22.0).abs() < 1e-3);
        // Growing by more than a tenth re-centers on the next search.
        for _ in 0..8 {
            index.upsert(&ns, summary("web"), &[1.0, 0.0]);
        }
        let m = index.center(&ns);
        assert!((m[0] - 9.0 / 30.0).abs() < 1e-2, "{m:?}");
        // An exact copy of a document still scores 1 after centering.
        let hits = index.search(&ns, &[&[0.0, 1.0]], &EpisodeFilter::default(), 1);
        assert!((hits[0].cosine - 1.0).abs() < 0.02);
    }

    #[test]
    fn search_orders_by_cosine_and_applies_the_filter_inside() {
        let dims = 16;
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        let other = Namespace::new("other").unwrap();
        let q = unit(7, dims);
        // The best match of all lives in another namespace and in a filtered-out domain.
        index.upsert(&other, summary("web"), &q);
        let best_filtered_out = summary("db");
        index.upsert(&ns, best_filtered_out, &q);
        for seed in 0..20 {
            index.upsert(&ns, summary("web"), &unit(seed, dims));
        }
        let filter = EpisodeFilter {
            domain: Some("web".into()),
            ..EpisodeFilter::default()
        };
        let hits = index.search(&ns, &[&q], &filter, 5);
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|h| h.summary.context.domain == "web"));
        assert!(hits.windows(2).all(|w| w[0].cosine >= w[1].cosine));
        // Unfiltered, the exact copy of the query comes first.
        let hits = index.search(&ns, &[&q], &EpisodeFilter::default(), 3);
        assert_eq!(hits[0].summary.context.domain, "db");
        assert!(hits[0].cosine > 0.99);
        assert_eq!(index.len(&other), 1);
    }

    #[test]
    fn two_stage_search_returns_the_exact_top_k() {
        let dims = 384;
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        let q = unit(10_000, dims);
        let mut ids = Vec::new();
        for seed in 0..2_000 {
            let s = summary("web");
            ids.push(s.id);
            index.upsert(&ns, s, &unit(seed, dims));
        }
        let mut exact: Vec<(f32, EpisodeId)> = ids
            .iter()
            .map(|&id| (index.score(&ns, &[&q], id).unwrap().cosine, id))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let hits = index.search(&ns, &[&q], &EpisodeFilter::default(), 10);
        let got: Vec<EpisodeId> = hits.iter().map(|h| h.summary.id).collect();
        let want: Vec<EpisodeId> = exact.iter().take(10).map(|e| e.1).collect();
        assert_eq!(got, want);
        assert!((hits[0].cosine - exact[0].0).abs() < 1e-6);
    }

    #[test]
    fn integer_dot_matches_the_float_dot_of_the_codes() {
        let q: Vec<i16> = (0..37).map(|j| (j * 7 % 255 - 127) as i16).collect();
        let c: Vec<i8> = (0..37).map(|j| (j * 13 % 255 - 127) as i8).collect();
        let want: i32 = q
            .iter()
            .zip(&c)
            .map(|(a, b)| i32::from(*a) * i32::from(*b))
            .sum();
        assert_eq!(dot_i8(&q, &c), want);
        assert_eq!(dot_i8(&[127; 384], &[-127; 384]), -127 * 127 * 384);
    }

    #[test]
    fn episodes_of_several_rows_score_by_their_best_and_come_out_once() {
        let dims = 16;
        let index = VectorIndex::new(dims);
        let ns = Namespace::default();
        // Ten episodes of three rows each, one of which (row 2 of episode 4) is the query.
        let query = unit(7_777, dims);
        let mut ids = Vec::new();
        for e in 0..10u32 {
            let s = summary("chat");
            ids.push(s.id);
            let mut rows = Vec::new();
            for r in 0..3u32 {
                if e == 4 && r == 2 {
                    rows.extend_from_slice(&query);
                } else {
                    rows.extend(unit(e * 10 + r + 1, dims));
                }
            }
            index.upsert(&ns, s, &rows);
        }
        assert_eq!((index.len(&ns), index.rows(&ns)), (10, 30));
        let hits = index.search(&ns, &[&query], &EpisodeFilter::default(), 10);
        // Every episode once, however many of its rows made the shortlist.
        assert_eq!(hits.len(), 10);
        let mut seen: Vec<EpisodeId> = hits.iter().map(|h| h.summary.id).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 10);
        assert_eq!((hits[0].summary.id, hits[0].row), (ids[4], 2));
        let scored = index.score(&ns, &[&query], ids[4]).unwrap();
        assert_eq!(scored.row, 2);
        assert!((scored.cosine - hits[0].cosine).abs() < 1e-6);
        // Each hit's score is its episode's best row.
        for h in &hits {
            let best = index.score(&ns, &[&query], h.summary.id).unwrap();
            assert!((best.cosine - h.cosine).abs() < 1e-6);
        }
        // Fewer rows on the next upsert: the old extra rows go.
        index.upsert(&ns, summary_with(ids[4]), &unit(1, dims));
        assert_eq!((index.len(&ns), index.rows(&ns)), (10, 28));
        assert_eq!(index.score(&ns, &[&query], ids[4]).unwrap().row, 0);
        // Removal takes every row; the others keep theirs and their scores.
        let before = index.score(&ns, &[&query], ids[9]).unwrap().cosine;
        assert!(index.remove(&ns, ids[0]));
        assert!(!index.remove(&ns, ids[0]));
        assert_eq!((index.len(&ns), index.rows(&ns)), (9, 25));
        assert!(index.score(&ns, &[&query], ids[0]).is_none());
        let after = index.score(&ns, &[&query], ids[9]).unwrap().cosine;
        assert!((before - after).abs() < 0.05, "{before} vs {after}");
        // An image of rows restores the same answers; rows with a gap are refused.
        let (summaries, parts) = index.export(&ns);
        let restored = VectorIndex::new(dims);
        assert!(restored.restore(&ns, summaries.clone(), parts.clone()));
        let again = restored.search(&ns, &[&query], &EpisodeFilter::default(), 10);
        let key = |h: &[VectorHit]| -> Vec<(EpisodeId, u16)> {
            h.iter().map(|h| (h.summary.id, h.row)).collect()
        };
        assert_eq!(
            key(&again),
            key(&index.search(&ns, &[&query], &EpisodeFilter::default(), 10))
        );
        let mut gap = parts;
        if let Some(r) = gap.rows.iter_mut().find(|r| **r == 1) {
            *r = 5;
        }
        assert!(!VectorIndex::new(dims).restore(&ns, summaries, gap));
    }

    fn summary_with(id: EpisodeId) -> EpisodeSummary {
        EpisodeSummary {
            id,
            ..summary("chat")
        }
    }

    #[test]
    fn upsert_replaces_and_wrong_lengths_are_ignored() {
        let index = VectorIndex::new(4);
        let ns = Namespace::default();
        let s = summary("web");
        let id = s.id;
        index.upsert(&ns, s.clone(), &[1.0, 0.0, 0.0, 0.0]);
        index.upsert(&ns, s, &[0.0, 1.0, 0.0, 0.0]);
        index.upsert(&ns, summary("web"), &[1.0, 0.0]);
        assert_eq!(index.len(&ns), 1);
        let hit = index.score(&ns, &[&[0.0, 1.0, 0.0, 0.0]], id).unwrap();
        assert!((hit.similarity - 1.0).abs() < 0.01);
        assert!(
            index
                .search(&ns, &[&[1.0]], &EpisodeFilter::default(), 3)
                .is_empty()
        );
    }

    #[test]
    fn images_are_exported_and_restored_centered() {
        let index = VectorIndex::new(8);
        let ns = Namespace::default();
        for seed in 0..20 {
            index.upsert(&ns, summary("web"), &unit(seed, 8));
        }
        // Never searched, so never centered: the export centers first.
        let (summaries, parts) = index.export(&ns);
        assert_eq!(parts.centered_at, 20);
        // An image written uncentered (an older build) is centered by the restore.
        let stale = VectorParts {
            centered_at: 0,
            center: Vec::new(),
            ..parts.clone()
        };
        let restored = VectorIndex::new(8);
        assert!(restored.restore(&ns, summaries, stale));
        let (_, again) = restored.export(&ns);
        assert_eq!(again.centered_at, 20);
        assert_eq!(again.center, parts.center);
        assert_eq!(again.inv_norms, parts.inv_norms);
    }
}
