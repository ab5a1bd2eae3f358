//! What the embedding store keeps for the in-process indexes: stored vectors with their
//! summaries, coverage counts, the change log's pages and index snapshots.

use std::fmt::Debug;

use crate::episode::{EpisodeId, EpisodeSummary};
use crate::error::{Error, Result};

/// A stored embedding with the summary of its episode: what the in-process vector index loads
/// (the summary carries the fields its filters and re-ranking use).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    /// The episode.
    pub summary: EpisodeSummary,
    /// Its vector (L2-normalized by the embedder).
    pub vector: Vec<f32>,
}

/// How far a namespace's episodes are embedded for one model: two counts and the newest
/// episode id, which tell in one cheap read whether the "needs embedding" queue is empty
/// (every embedding belongs to a stored episode, one per episode and model, so equal counts
/// mean every episode has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddingCoverage {
    /// Episodes in the namespace.
    pub episodes: u64,
    /// Of them, embedded for the model.
    pub embedded: u64,
    /// The newest (largest) episode id, if any.
    pub last_episode: Option<EpisodeId>,
}

impl EmbeddingCoverage {
    /// True when every episode has an embedding for the model.
    pub fn complete(&self) -> bool {
        self.embedded >= self.episodes
    }
}

/// The largest index snapshot a backend stores: a namespace of about 1.5 million episodes
/// (some 650 bytes each at 384 dimensions: the int8 codes, the summary and its postings; a
/// million took 0.65 GB, over the 512 MiB this was before). Larger snapshots are refused
/// with `InvalidInput`; the index then loads from the embeddings as it would without one,
/// and the process tries again only after a twentieth of the namespace changed.
pub const MAX_INDEX_SNAPSHOT_BYTES: usize = 1024 * 1024 * 1024;

/// `InvalidInput` when an index snapshot of `len` bytes is over [`MAX_INDEX_SNAPSHOT_BYTES`].
///
/// ```
/// use memory_core::{MAX_INDEX_SNAPSHOT_BYTES, check_index_snapshot_size};
/// assert!(check_index_snapshot_size(MAX_INDEX_SNAPSHOT_BYTES).is_ok());
/// assert!(check_index_snapshot_size(MAX_INDEX_SNAPSHOT_BYTES + 1).is_err());
/// ```
pub fn check_index_snapshot_size(len: usize) -> Result<()> {
    if len > MAX_INDEX_SNAPSHOT_BYTES {
        return Err(Error::invalid(
            "index_snapshot",
            format!("{len} bytes is over the limit of {MAX_INDEX_SNAPSHOT_BYTES}"),
        ));
    }
    Ok(())
}

/// What changed among a namespace's indexed episodes after a position of its change log.
///
/// The log records every change to an embedding (any model) and to the summary of an episode
/// that has an embedding; each entry names the episode only, and this reports the episode's
/// state when it was read, so applying it is idempotent and a reader that applies pages in
/// order converges on the stored data.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndexChanges {
    /// Changed episodes that have an embedding for the model: their current summary and
    /// vector.
    pub upserts: Vec<StoredEmbedding>,
    /// Changed episodes with no embedding for the model (any more).
    pub removed: Vec<EpisodeId>,
    /// The log position this page runs through: pass it as `after` for the next page. Equal
    /// to `after` when nothing changed.
    pub through: u64,
    /// Whether to read another page: the page was full, so the log may hold entries after
    /// `through` (the next page may then be empty). False when the log held none after it.
    pub more: bool,
}

/// A persisted image of a namespace's in-process index (opaque bytes to storage), with the
/// change-log position it reflects: every change up to `as_of` is in it, so loading it and
/// applying [`IndexChanges`] after `as_of` gives the stored state without reading every
/// embedding.
///
/// The bytes are held in parts, in order: a backend may store and return them split
/// differently from how it was given them (two snapshots are equal when their bytes are), so
/// a large image is never joined into one buffer on its way from storage to the decoder.
///
/// ```
/// use memory_core::IndexSnapshot;
/// let whole = IndexSnapshot::new(7, vec![1, 2, 3]);
/// let split = IndexSnapshot { as_of: 7, parts: vec![vec![1], vec![2, 3]] };
/// assert_eq!(whole, split);
/// assert_eq!(split.len(), 3);
/// assert_eq!(split.pieces(2), vec![vec![1, 2], vec![3]]);
/// assert!(IndexSnapshot::new(0, Vec::new()).pieces(2).is_empty());
/// ```
#[derive(Debug, Clone, Eq)]
pub struct IndexSnapshot {
    /// The change-log position the image reflects.
    pub as_of: u64,
    /// The encoded index, in order.
    pub parts: Vec<Vec<u8>>,
}

impl IndexSnapshot {
    /// A snapshot of one buffer.
    pub fn new(as_of: u64, data: Vec<u8>) -> Self {
        IndexSnapshot {
            as_of,
            parts: vec![data],
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }

    /// True when it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes in `size`-byte pieces (the last may be shorter; none when it is empty), across
    /// part boundaries: how a backend with a row-size limit stores it.
    pub fn pieces(&self, size: usize) -> Vec<Vec<u8>> {
        let size = size.max(1);
        let total = self.len();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for part in &self.parts {
            let mut rest = part.as_slice();
            while !rest.is_empty() {
                let room = match out.last() {
                    Some(piece) if piece.len() < size => size - piece.len(),
                    _ => {
                        out.push(Vec::with_capacity(size.min(total)));
                        size
                    }
                };
                let (head, tail) = rest.split_at(room.min(rest.len()));
                if let Some(piece) = out.last_mut() {
                    piece.extend_from_slice(head);
                }
                rest = tail;
            }
        }
        out
    }
}

impl PartialEq for IndexSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.as_of == other.as_of
            && self.len() == other.len()
            && self.parts.iter().flatten().eq(other.parts.iter().flatten())
    }
}
