//! all-MiniLM-L6-v2 on candle (pure Rust, CPU).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use memory_core::{Embedder, Error, Result, l2_normalize};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use crate::location::missing_model_files;

/// Model id reported by [`MiniLmEmbedder::model_id`] and stored with every vector.
pub const MINILM_MODEL_ID: &str = "all-MiniLM-L6-v2";

/// Vector length of all-MiniLM-L6-v2.
pub const MINILM_DIMENSIONS: usize = 384;

/// Token limit per text, special tokens included (the model's `max_seq_length`); longer texts
/// are truncated, as sentence-transformers does.
pub const MAX_TOKENS: usize = 256;

/// Texts per forward pass. Larger batches waste work on padding and hold more memory; 32 is the
/// sentence-transformers default.
pub const BATCH_SIZE: usize = 32;

/// Bytes of each text handed to the tokenizer. 256 tokens of any natural text fit in far fewer
/// bytes, so cutting here changes nothing but spares the tokenizer megabyte-sized inputs whose
/// tail truncation would throw away anyway.
pub const MAX_INPUT_BYTES: usize = 16 * 1024;

/// Sentence embeddings with all-MiniLM-L6-v2: 384 dimensions, mean pooling over the attention
/// mask, L2-normalized (so cosine similarity is a dot product). Runs on the CPU with candle; no
/// network access, ever.
///
/// Cheap to clone (the weights are shared). [`Embedder::embed`] runs on tokio's blocking pool in
/// batches of [`BATCH_SIZE`] texts, grouped by length to keep padding small; texts longer than
/// [`MAX_TOKENS`] tokens are truncated.
///
/// ```
/// use memory_core::{Embedder, cosine};
/// use memory_embed::{MiniLmEmbedder, default_model_dir};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// // Install the files with `scripts/install-model.sh` (or set MEMORY_MODEL_DIR).
/// let Some(dir) = default_model_dir() else { return Ok(()) };
/// let embedder = MiniLmEmbedder::load(&dir)?;
/// let texts = ["fix a flaky test".to_owned(), "stabilise an intermittent test".to_owned()];
/// let vectors = embedder.embed(&texts).await?;
/// assert_eq!(vectors[0].len(), embedder.dimensions());
/// assert!(cosine(&vectors[0], &vectors[1]) > 0.5);
/// # Ok::<(), memory_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MiniLmEmbedder {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pad_id: u32,
    dimensions: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for MiniLmEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLmEmbedder")
            .field("model_id", &MINILM_MODEL_ID)
            .field("dimensions", &self.inner.dimensions)
            .field("dir", &self.inner.dir)
            .field("max_tokens", &MAX_TOKENS)
            .finish_non_exhaustive()
    }
}

impl MiniLmEmbedder {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir` (see
    /// [`crate::ModelLocation`] for where to find it). Takes a few hundred milliseconds and
    /// about 90 MB of memory; blocking, so call it from `spawn_blocking` (or at start-up).
    ///
    /// Fails with [`Error::InvalidInput`] (field `model_dir`) when a file is missing or is not
    /// a 384-d BERT model.
    pub fn load(dir: &Path) -> Result<Self> {
        let started = Instant::now();
        let missing = missing_model_files(dir);
        if !missing.is_empty() {
            return Err(invalid_dir(
                dir,
                format!(
                    "missing {}; run scripts/install-model.sh or set MEMORY_MODEL_DIR",
                    missing.join(", ")
                ),
            ));
        }

        let config_bytes = std::fs::read(dir.join("config.json"))
            .map_err(|e| invalid_dir(dir, format!("cannot read config.json: {e}")))?;
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid_dir(dir, format!("config.json is not a BERT config: {e}")))?;
        if config.hidden_size != MINILM_DIMENSIONS {
            return Err(invalid_dir(
                dir,
                format!(
                    "config.json has hidden_size {}, expected {MINILM_DIMENSIONS} for {MINILM_MODEL_ID}",
                    config.hidden_size
                ),
            ));
        }

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| invalid_dir(dir, format!("cannot load tokenizer.json: {e}")))?;
        // The shipped tokenizer.json pads every text to a fixed 128 and truncates there;
        // the model was trained with 256. Pad per batch ourselves, truncate at 256.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| invalid_dir(dir, format!("cannot set truncation: {e}")))?;
        let pad_id = tokenizer
            .token_to_id("[PAD]")
            .unwrap_or(config.pad_token_id as u32);

        // Read the weights into memory rather than mmap them: mmap needs `unsafe`, which this
        // workspace forbids. The buffer is dropped once the tensors are built.
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| invalid_dir(dir, format!("cannot read model.safetensors: {e}")))?;
        let device = Device::Cpu;
        let model = {
            let vb = VarBuilder::from_slice_safetensors(&weights, DType::F32, &device)
                .map_err(|e| invalid_dir(dir, format!("model.safetensors: {e}")))?;
            BertModel::load(vb, &config)
                .map_err(|e| invalid_dir(dir, format!("model.safetensors: {e}")))?
        };
        drop(weights);

        tracing::info!(
            model = MINILM_MODEL_ID,
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "embedding model loaded"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                device,
                pad_id,
                dimensions: config.hidden_size,
                dir: dir.to_path_buf(),
            }),
        })
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many tokens `text` is fed to the model as, special tokens included, after
    /// truncation (so at most [`MAX_TOKENS`]). Inference cost grows with this count.
    pub fn token_count(&self, text: &str) -> Result<usize> {
        let encoding = self
            .inner
            .tokenizer
            .encode(clip(text, MAX_INPUT_BYTES), true)
            .map_err(inference_error)?;
        Ok(encoding.get_ids().len())
    }

    /// Embeds `texts` on the calling thread (what [`Embedder::embed`] runs on the blocking
    /// pool). For use from synchronous code such as benchmarks and batch jobs.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.inner.embed_all(texts)
    }
}

#[async_trait]
impl Embedder for MiniLmEmbedder {
    fn model_id(&self) -> &str {
        MINILM_MODEL_ID
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || inner.embed_all(&texts))
            .await
            .map_err(inference_error)?
    }
}

impl Inner {
    /// Tokenizes everything, then runs batches of texts of similar length.
    fn embed_all(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let inputs: Vec<&str> = texts.iter().map(|t| clip(t, MAX_INPUT_BYTES)).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(inference_error)?;

        // Longest first, so each batch pads to a similar length.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH_SIZE) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let vectors = self.forward(&batch).map_err(inference_error)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// One forward pass: pad to the batch's longest text, run BERT, mean-pool over the
    /// attention mask, L2-normalize.
    fn forward(&self, batch: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let n = batch.len();
        let len = batch.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(n * len);
        let mut mask = Vec::with_capacity(n * len);
        for e in batch {
            let real = e.get_ids();
            ids.extend_from_slice(real);
            ids.extend(std::iter::repeat_n(self.pad_id, len - real.len()));
            mask.extend(std::iter::repeat_n(1u32, real.len()));
            mask.extend(std::iter::repeat_n(0u32, len - real.len()));
        }
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let type_ids = ids.zeros_like()?;

        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (n, len, dims)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, dims)
        let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
        let mut rows = summed.broadcast_div(&counts)?.to_vec2::<f32>()?;
        for row in &mut rows {
            l2_normalize(row);
        }
        Ok(rows)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn invalid_dir(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidInput {
        field: "model_dir".to_owned(),
        reason: format!("{}: {reason}", dir.display()),
    }
}

fn inference_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::Storage {
        backend: "candle",
        operation: "embed",
        transient: false,
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        // 'é' is two bytes: cutting inside it backs off to the boundary.
        assert_eq!(clip("aéb", 2), "a");
        assert_eq!(clip("aéb", 3), "aé");
    }

    #[test]
    fn missing_dir_is_invalid_input() {
        let err = MiniLmEmbedder::load(Path::new("/nonexistent/model")).err();
        match err {
            Some(Error::InvalidInput { field, reason }) => {
                assert_eq!(field, "model_dir");
                assert!(reason.contains("model.safetensors"), "{reason}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
}
