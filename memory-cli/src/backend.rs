//! Opening the storage stack the settings ask for: libsql (local file, remote server or
//! embedded replica) behind the tiered composition with the redb cache and outbox.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use memory_core::{
    Cache, Embedder, SelfLearningMemory, Storage, SystemClock, TieredConfig, TieredStorage,
};
use memory_embed::{MiniLmEmbedder, ModelLocation, missing_model_files};
use memory_storage_redb::{CacheConfig, OutboxConfig, RedbCache, RedbOutbox};
use memory_storage_turso::{TursoConfig, TursoStorage};
use tracing::warn;

use crate::cli::Mode;
use crate::settings::Settings;

/// File names inside the data directory.
pub const CACHE_FILE: &str = "cache.redb";
/// The outbox journal.
pub const OUTBOX_FILE: &str = "outbox.redb";
/// The local replica of a remote primary.
pub const REPLICA_FILE: &str = "replica.db";

/// The opened stack.
pub struct Stack {
    pub memory: SelfLearningMemory,
    pub tiered: Arc<TieredStorage>,
    /// Why the cache is off, when it is.
    pub cache_problem: Option<String>,
    /// The embedding model, when the command needed one: `Ok(description)` when loaded,
    /// `Err(why not)` when missing or broken; `None` when the command did not load it.
    pub embedder: Option<std::result::Result<String, String>>,
}

impl Stack {
    /// Flushes buffered steps, replays what can be replayed, and closes everything.
    pub async fn shutdown(&self) -> Result<()> {
        self.memory.shutdown().await?;
        self.tiered.shutdown().await?;
        Ok(())
    }
}

fn server_url(s: &Settings) -> Result<String> {
    match &s.database_url {
        Some(u) => Ok(u.clone()),
        None => bail!(
            "storage mode {:?} needs a server: set TURSO_DATABASE_URL (or database_url in {}/memory.toml)",
            s.mode,
            s.data_dir.display()
        ),
    }
}

async fn open_durable(s: &Settings) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(open_turso(s).await?))
}

/// The libsql layer alone, as the settings configure it (no cache, no outbox).
pub async fn open_turso(s: &Settings) -> Result<TursoStorage> {
    let storage = match s.mode {
        Mode::Local => TursoStorage::open_in_data_dir(&s.data_dir).await?,
        Mode::Remote => {
            TursoStorage::open(TursoConfig::remote(server_url(s)?, s.auth_token.clone()).build()?)
                .await?
        }
        Mode::Replica => {
            let cfg = TursoConfig::replica(
                s.data_dir.join(REPLICA_FILE),
                server_url(s)?,
                s.auth_token.clone(),
            )
            .build()?;
            TursoStorage::open(cfg).await?
        }
    };
    Ok(storage)
}

/// The outbox file is locked by the process that has it open; concurrent CLI calls on one data
/// directory wait for it briefly rather than run without a journal.
async fn open_outbox(path: &Path) -> Result<RedbOutbox> {
    let mut delay = Duration::from_millis(20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RedbOutbox::open(path, OutboxConfig::default()).await {
            Ok(o) => return Ok(o),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "outbox busy; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot open the outbox {} (another memory process may hold it)",
                        path.display()
                    )
                });
            }
        }
    }
}

/// Loads the embedding model (`MEMORY_MODEL_DIR`, then `<data dir>/models/all-MiniLM-L6-v2`,
/// then the workspace's `.tools`). `Err` says why there is none; the memory then retrieves
/// lexically and says so.
pub async fn load_embedder(data_dir: &Path) -> std::result::Result<Arc<dyn Embedder>, String> {
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
        Ok(Ok(e)) => Ok(Arc::new(e)),
        Ok(Err(e)) => Err(format!(
            "embedding model in {} failed to load: {e}",
            location.dir.display()
        )),
        Err(e) => Err(format!("embedding model load panicked: {e}")),
    }
}

/// Opens the memory over the configured storage; loads the embedding model when
/// `semantic` (commands that retrieve), since loading it costs a few hundred milliseconds.
pub async fn open(s: &Settings, semantic: bool) -> Result<Stack> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("cannot create the data directory {}", s.data_dir.display()))?;
    let durable = open_durable(s).await?;
    let outbox = Arc::new(open_outbox(&s.data_dir.join(OUTBOX_FILE)).await?);
    // The cache holds copies: if it cannot be opened (e.g. another process holds it), run
    // without it and say so.
    let (cache, cache_problem) =
        match RedbCache::open(s.data_dir.join(CACHE_FILE), CacheConfig::default()).await {
            Ok(c) => (Some(Arc::new(c) as Arc<dyn Cache>), None),
            Err(e) => {
                warn!(error = %e, "cache unavailable; running without it");
                (None, Some(e.to_string()))
            }
        };
    let tiered = TieredStorage::open(
        durable,
        cache,
        outbox,
        TieredConfig::default(),
        Arc::new(SystemClock),
    )
    .await?;
    let (embedder, embedder_status) = if semantic {
        match load_embedder(&s.data_dir).await {
            Ok(e) => {
                let desc = format!("{} ({} dimensions)", e.model_id(), e.dimensions());
                (Some(e), Some(Ok(desc)))
            }
            Err(why) => {
                warn!("{why}; retrieval is lexical only");
                (None, Some(Err(why)))
            }
        }
    } else {
        (None, None)
    };
    let memory = SelfLearningMemory::with_embedder(
        tiered.clone(),
        s.memory.clone(),
        Arc::new(SystemClock),
        embedder,
    )?;
    Ok(Stack {
        memory,
        tiered,
        cache_problem,
        embedder: embedder_status,
    })
}
