//! Search: the integer first stage over a namespace's codes (exact, or over a pool the one-bit
//! stage chose), in parts on several threads for large namespaces, then the exact re-scoring.

use std::cmp::Ordering as CmpOrdering;
use std::collections::HashMap;
use std::sync::PoisonError;

use super::quantize::{dot_i8, quantize};
use super::space::Space;
use super::{SHORTLIST_FACTOR, SIGN_POOL_FACTOR, VectorHit, VectorIndex};
use crate::episode::EpisodeId;
use crate::namespace::Namespace;
use crate::retrieval::indexed_summaries::FilterCheck;
use crate::retrieval::sign_codes::{SignCodes, SignQuery};
use crate::storage::EpisodeFilter;

impl VectorIndex {
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
pub(super) struct Scan<'a> {
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
    pub(super) fn new(
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
    pub(super) fn in_parts(&self, n: usize, parts: usize) -> Vec<(f32, usize)> {
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
    pub(super) fn sign_pool(
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
    pub(super) fn shortlist_of(&self, indices: &[usize], parts: usize) -> Vec<(f32, usize)> {
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
