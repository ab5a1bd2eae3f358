//! The real embedding model for tests: all-MiniLM-L6-v2, found through `MEMORY_MODEL_DIR` or
//! the workspace's `.tools/models/all-MiniLM-L6-v2` (`scripts/install-model.sh`).

use memory_embed::{MiniLmEmbedder, default_model_dir, missing_model_files};

/// Printed when a test skips for want of the model.
pub const SKIP_MESSAGE: &str = "skipping: model not installed; run scripts/install-model.sh";

/// The embedder, or `None` (after a note on stderr) when the model is missing outside CI; an
/// error when an installed model fails to load.
///
/// # Panics
/// Under CI (`CI` set) when the model is missing, so CI never silently skips.
pub fn minilm() -> anyhow::Result<Option<MiniLmEmbedder>> {
    let dir = default_model_dir().filter(|d| missing_model_files(d).is_empty());
    let Some(dir) = dir else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{SKIP_MESSAGE} (CI is set, so this fails)"
        );
        eprintln!("{SKIP_MESSAGE}");
        return Ok(None);
    };
    let embedder = MiniLmEmbedder::load(&dir)
        .map_err(|e| anyhow::anyhow!("model at {} failed to load: {e}", dir.display()))?;
    Ok(Some(embedder))
}
