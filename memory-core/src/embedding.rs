//! Text embeddings: the interface retrieval uses, and vector helpers.

use async_trait::async_trait;

use crate::error::Result;

/// Turns texts into fixed-size vectors whose cosine similarity reflects meaning.
///
/// Implementations compute locally by default (no network); CPU-heavy work runs off the async
/// runtime (`spawn_blocking`). Vectors are L2-normalized, so cosine similarity is a dot product.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// A stable id of the model, stored with every vector (e.g. `all-MiniLM-L6-v2`).
    fn model_id(&self) -> &str;
    /// Vector length.
    fn dimensions(&self) -> usize;
    /// Embeds each text; the result has one vector per input, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// Cosine similarity of two vectors (0 when either is zero or lengths differ).
///
/// ```
/// use memory_core::cosine;
/// assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Scales a vector to unit length in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}
