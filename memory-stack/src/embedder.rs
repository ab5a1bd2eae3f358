//! Finding and loading the embedding model.

use std::path::Path;
use std::sync::Arc;

use memory_core::Embedder;
use memory_embed::{MiniLmEmbedder, ModelLocation, missing_model_files};

/// Loads all-MiniLM-L6-v2 from the first place [`memory_embed::ModelLocation`] names
/// (`MEMORY_MODEL_DIR`, the data directory, the user's data directory, beside the executable,
/// the workspace's `.tools`). `Err` says why there is none and where it looked; the memory
/// then retrieves lexically and says so.
pub async fn load_embedder(data_dir: &Path) -> Result<Arc<dyn Embedder>, String> {
    let Some(location) = ModelLocation::resolve(Some(data_dir)) else {
        let tried: Vec<String> = ModelLocation::candidates(Some(data_dir))
            .iter()
            .map(|c| c.dir.display().to_string())
            .collect();
        return Err(format!(
            "embedding model not installed (looked in {}); run scripts/install-model.sh or set MEMORY_MODEL_DIR",
            tried.join(", ")
        ));
    };
    let missing = missing_model_files(&location.dir);
    if !missing.is_empty() {
        return Err(format!(
            "embedding model incomplete in {} (from {}): missing {}",
            location.dir.display(),
            location.source,
            missing.join(", ")
        ));
    }
    let dir = location.dir.clone();
    match tokio::task::spawn_blocking(move || MiniLmEmbedder::load(&dir)).await {
        Ok(Ok(e)) => {
            tracing::debug!(dir = %location.dir.display(), source = %location.source, "embedding model loaded");
            Ok(Arc::new(e))
        }
        Ok(Err(e)) => Err(format!(
            "embedding model in {} failed to load: {e}",
            location.dir.display()
        )),
        Err(e) => Err(format!("embedding model load panicked: {e}")),
    }
}
