//! `memory eval retrieval`: retrieval quality on a labeled dataset, in a fresh in-memory
//! libsql store (the data directory is not touched).

use std::sync::Arc;

use anyhow::{Context, Result};
use memory_core::retrieval::eval::{EvalDataset, QueryMode, RetrievalEval, format_report};
use memory_core::{MemoryConfig, Namespace, RateLimitConfig, SelfLearningMemory, SystemClock};
use memory_storage_turso::TursoStorage;

use crate::backend::load_embedder;
use crate::cli::{EvalCmd, EvalRetrievalArgs};
use crate::output;
use crate::settings::Settings;

pub async fn run(cmd: EvalCmd, s: &Settings) -> Result<()> {
    match cmd {
        EvalCmd::Retrieval(a) => retrieval(a, s).await,
    }
}

async fn retrieval(a: EvalRetrievalArgs, s: &Settings) -> Result<()> {
    let dataset = EvalDataset::load(&a.dataset)
        .with_context(|| format!("cannot load the dataset in {}", a.dataset.display()))?;
    let embedder = match load_embedder(&s.data_dir).await {
        Ok(e) => Some(e),
        Err(why) => {
            eprintln!("warning: {why}; evaluating lexical retrieval only");
            None
        }
    };
    let storage = Arc::new(TursoStorage::open_local(":memory:").await?);
    let config = MemoryConfig {
        rate_limit: RateLimitConfig::disabled(),
        ..s.memory.clone()
    };
    let memory =
        SelfLearningMemory::with_embedder(storage, config, Arc::new(SystemClock), embedder)?;
    let modes: &[QueryMode] = if a.both {
        &[QueryMode::WithContext, QueryMode::DescriptionOnly]
    } else if a.description_only {
        &[QueryMode::DescriptionOnly]
    } else {
        &[QueryMode::WithContext]
    };
    if !s.json {
        eprintln!(
            "importing {} episodes and running {} queries ...",
            dataset.episodes.len(),
            dataset.queries.len()
        );
    }
    let eval = RetrievalEval::new(&memory, Namespace::new("eval/retrieval")?);
    let report = eval.run_modes(&dataset, modes).await?;
    memory.shutdown().await?;
    if s.json {
        return output::json(&report);
    }
    print!("{}", format_report(&report));
    Ok(())
}
