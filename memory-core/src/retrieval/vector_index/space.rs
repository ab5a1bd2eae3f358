//! One namespace's rows: the codes, scales and norms of its documents, the running sum and the
//! center they are scored against, and the one-bit codes of a large namespace.

use std::collections::HashMap;
use std::sync::Arc;

use super::quantize::dot;
use super::{CENTER_PRIOR, VectorHit};
use crate::episode::EpisodeId;
use crate::retrieval::indexed_summaries::IndexedSummaries;
use crate::retrieval::sign_codes::SignCodes;

/// A row of the index: an episode and the number of one of its vectors (0, 1, ...).
pub(super) type RowKey = (EpisodeId, u16);

/// One namespace's rows. A document is one row (one vector); an episode has rows 0..m, m
/// at least 1, each carrying the episode's summary (so filters apply per row unchanged).
#[derive(Debug, Default)]
pub(super) struct Space {
    pub(super) summaries: IndexedSummaries,
    /// Per row, its number within its episode.
    pub(super) rows: Vec<u16>,
    pub(super) scales: Vec<f32>,
    pub(super) codes: Vec<i8>,
    /// `1 / |d - center|` per document.
    pub(super) inv_norms: Vec<f32>,
    pub(super) position: HashMap<RowKey, usize>,
    /// Episodes held (rows numbered 0).
    pub(super) episodes: usize,
    /// Sum of the (dequantized) vectors.
    pub(super) sum: Vec<f64>,
    /// The mean the documents are currently centered on (empty: not yet centered).
    pub(super) center: Vec<f32>,
    /// Documents counted when `center` was computed.
    pub(super) centered_at: usize,
    /// One-bit codes of the centered documents, kept from
    /// [`SIGN_STAGE_FROM`](super::SIGN_STAGE_FROM) documents on.
    pub(super) signs: Option<SignCodes>,
}

impl Space {
    pub(super) fn code(&self, i: usize, dims: usize) -> &[i8] {
        &self.codes[i * dims..(i + 1) * dims]
    }

    /// `1 / |d - center|` of document `i`, from its codes (once the space is centered).
    pub(super) fn inv_norm(&self, i: usize, dims: usize) -> f32 {
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
    pub(super) fn centered_doc(&self, i: usize, dims: usize, out: &mut Vec<f32>) {
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
    pub(super) fn signs_due(&self, from: usize) -> bool {
        let n = self.summaries.len();
        n >= from && self.signs.as_ref().is_none_or(|c| c.len() != n)
    }

    /// Codes every document against the current center.
    pub(super) fn code_signs(&mut self, dims: usize) {
        let mut signs = SignCodes::new(dims);
        let mut centered = Vec::with_capacity(dims);
        for i in 0..self.summaries.len() {
            self.centered_doc(i, dims, &mut centered);
            signs.put(i, &centered);
        }
        self.signs = Some(signs);
    }

    pub(super) fn add_to_sum(&mut self, i: usize, dims: usize, sign: f64) {
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
    pub(super) fn recenter_due(&self) -> bool {
        let n = self.summaries.len();
        n > 0
            && (self.centered_at == 0
                || n * 10 > self.centered_at * 11
                || n * 10 < self.centered_at * 9)
    }

    /// Centers on the current mean; from `sign_from` documents the one-bit codes follow.
    pub(super) fn recenter(&mut self, dims: usize, sign_from: usize) {
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
    pub(super) fn centered_query(&self, queries: &[&[f32]]) -> Option<(Vec<f32>, f32)> {
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

    pub(super) fn hit(
        &self,
        i: usize,
        dims: usize,
        q: &[f32],
        offset: f32,
        first: &[f32],
    ) -> VectorHit {
        let code = self.code(i, dims);
        VectorHit {
            summary: Arc::clone(&self.summaries[i]),
            cosine: (self.scales[i] * dot(q, code) - offset) * self.inv_norms[i],
            similarity: self.scales[i] * dot(first, code),
            row: self.rows[i],
        }
    }

    /// The row indices of episode `id`, in row order.
    pub(super) fn rows_of(&self, id: EpisodeId) -> Vec<usize> {
        (0..=u16::MAX)
            .map_while(|r| self.position.get(&(id, r)).copied())
            .collect()
    }

    /// Takes out row `i`, moving the last row into its place.
    pub(super) fn remove_row(&mut self, i: usize, dims: usize) {
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
    pub(super) fn remove_episode(&mut self, id: EpisodeId, dims: usize) -> bool {
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
