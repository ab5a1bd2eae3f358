//! The memory embedded in an application, on a local libsql file: record three runs of a task
//! (one failing before it recovers), then ask what the memory knows before a similar task.
//!
//! ```text
//! cargo run -p memory-examples --example embed_local
//! ```

use std::sync::Arc;

use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{
    MemoryConfig, Namespace, NewEpisode, Outcome, SelfLearningMemory, StepInput, TaskContext,
    TaskType,
};
use memory_storage_turso::TursoStorage;

/// Records the episodes and prints the recommendation; returns the playbook's tools.
pub async fn run(db: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let storage = Arc::new(TursoStorage::open_local(db).await?);
    let memory = SelfLearningMemory::new(storage, MemoryConfig::default())?;
    let ns = Namespace::new("acme/billing")?;
    let ctx = TaskContext::new("billing")
        .with_language("python")
        .with_framework("pytest");
    for attempt in 0..3 {
        let task = NewEpisode::new("fix the flaky invoice test", TaskType::Testing, ctx.clone());
        let id = memory.start_episode(&ns, task).await?;
        if attempt == 0 {
            let failed = StepInput::error("pytest", "run tests", "AssertionError: due date");
            memory.log_step(&ns, id, failed).await?;
        }
        let fix = StepInput::ok("edit_file", "freeze time with a fake clock", "edit applied");
        memory.log_step(&ns, id, fix).await?;
        let pass = StepInput::ok("pytest", "run tests", "14 passed");
        memory.log_step(&ns, id, pass).await?;
        let report = memory
            .complete_episode(&ns, id, Outcome::success("stable"))
            .await?;
        println!("episode {attempt}: reward {:.2}", report.reward.total);
    }

    let ask = RecommendRequest::new("the invoice test fails at midnight")
        .with_context(Some(TaskType::Testing), ctx);
    let advice = memory.recommend(&ns, &ask).await?;
    println!("strong match: {}", advice.strong_match);
    for step in &advice.playbook {
        println!("{}. {} ({})", step.order, step.tool, step.why);
    }
    for pitfall in &advice.pitfalls {
        println!("pitfall: {}", pitfall.why);
    }
    memory.shutdown().await?;
    Ok(advice.playbook.into_iter().map(|s| s.tool).collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    run(&dir.path().join("memory.db")).await?;
    Ok(())
}
