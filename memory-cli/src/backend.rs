//! Opening the storage stack the settings ask for.

use std::sync::Arc;

use anyhow::Result;
use memory_core::{InMemoryStorage, SelfLearningMemory, Storage};

use crate::cli::Mode;
use crate::settings::Settings;

/// Opens the memory over the configured storage.
pub async fn open(settings: &Settings) -> Result<SelfLearningMemory> {
    let storage: Arc<dyn Storage> = match settings.mode {
        Mode::Local => Arc::new(InMemoryStorage::new()),
        Mode::Remote | Mode::Replica => {
            anyhow::bail!(
                "storage mode {:?} is not available in this build yet",
                settings.mode
            )
        }
    };
    Ok(SelfLearningMemory::new(storage, settings.memory.clone())?)
}
