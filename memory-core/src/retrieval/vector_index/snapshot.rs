//! What a snapshot keeps of a namespace's space: [`VectorIndex::export`] and
//! [`VectorIndex::restore`].

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use super::space::{RowKey, Space};
use super::{VectorIndex, VectorParts};
use crate::episode::EpisodeSummary;
use crate::namespace::Namespace;
use crate::retrieval::indexed_summaries::IndexedSummaries;

impl VectorIndex {
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
}
