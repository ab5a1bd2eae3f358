//! An embedder that remembers what it embedded ([`Remembering`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use memory_core::{Embedder, Error, Result};

/// An embedder that embeds each distinct text once, however many retrievers and stores ask.
#[derive(Debug)]
pub(crate) struct Remembering {
    inner: Arc<dyn Embedder>,
    seen: Mutex<HashMap<String, Vec<f32>>>,
}

impl Remembering {
    /// `inner`, remembering what it embedded.
    pub(crate) fn new(inner: Arc<dyn Embedder>) -> Self {
        Remembering {
            inner,
            seen: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Embedder for Remembering {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let missing: Vec<String> = {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let mut missing: Vec<String> = texts
                .iter()
                .filter(|t| !seen.contains_key(*t))
                .cloned()
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        let vectors = if missing.is_empty() {
            Vec::new()
        } else {
            self.inner.embed(&missing).await?
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.extend(missing.into_iter().zip(vectors));
        texts
            .iter()
            .map(|t| {
                seen.get(t)
                    .cloned()
                    .ok_or_else(|| Error::invalid("embedder", "returned fewer vectors than texts"))
            })
            .collect()
    }
}
