//! Test helper for `tests/tiered_sqld_outage.rs`: the "process that dies during an outage".
//!
//! Opens the stack the CLI opens in remote mode (`memory-stack`: a remote `TursoStorage` on
//! `<url>`, the redb cache and this process's journal in `<dir>`, behind `TieredStorage`),
//! prints `ready`, and waits for a
//! line `go` on stdin (the parent stops sqld in between: a remote `TursoStorage` cannot be
//! opened while its server is down, because opening checks the schema over the network). Then
//! it records episodes forever (see `script::record`): start, steps, complete. After each
//! `complete_episode` returns `Ok` it prints `ack <episode id>` and flushes stdout, so every
//! complete line the parent reads is an acknowledged episode. Failed calls are reported on
//! stderr. The parent kills it with SIGKILL; as a safety net it exits on its own after 60 s.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use memory_stack::{StackBuilder, StorageMode};

mod script;

/// How long the child runs if nobody kills it.
const LIFETIME: Duration = Duration::from_secs(60);

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: tiered_child <sqld url> <data dir>";
    let url = args.next().context(usage)?;
    let dir = PathBuf::from(args.next().context(usage)?);

    let stack = StackBuilder::new(&dir)
        .mode(StorageMode::Remote {
            url,
            auth_token: None,
        })
        .configure_turso(|b| b.call_timeout(Duration::from_secs(3)))
        .tiered_config(script::tiered_config())
        .memory_config(script::memory_config())
        .open()
        .await?;
    let memory = stack.memory();
    say("ready")?;

    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    if line.trim() != "go" {
        bail!("expected `go` on stdin, got {line:?}");
    }

    let ns = script::namespace();
    let deadline = Instant::now() + LIFETIME;
    let mut i = 0u64;
    while Instant::now() < deadline {
        match script::record(memory, &ns, i, |_| {}).await {
            Ok(id) => say(&format!("ack {id}"))?,
            Err(f) => eprintln!(
                "tiered_child: episode {i} failed at {}: {}",
                f.stage, f.error
            ),
        }
        i += 1;
    }
    eprintln!("tiered_child: not killed within {LIFETIME:?}; exiting");
    Ok(())
}
