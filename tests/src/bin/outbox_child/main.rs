//! Test helper for `tests/redb_outbox_crash.rs`: opens the outbox at the given path and appends
//! [`entry::entry`]s numbered from the given start, from `concurrency` tasks, forever. After each
//! `append` returns it prints `<seq> <index>` on its own line and flushes stdout, so every
//! complete line the parent reads is an acknowledged append. The parent kills it with SIGKILL.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use memory_core::Outbox;
use memory_storage_redb::{OutboxConfig, RedbOutbox};

mod entry;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: outbox_child <path> <start-index> <concurrency>";
    let path = args.next().context(usage)?;
    let start: u64 = args.next().context(usage)?.parse()?;
    let concurrency: usize = args.next().context(usage)?.parse()?;

    let outbox = RedbOutbox::open(&path, OutboxConfig::default()).await?;
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    {
        let mut o = out
            .lock()
            .map_err(|_| anyhow::anyhow!("stdout lock poisoned"))?;
        writeln!(o, "ready")?;
        o.flush()?;
    }
    let next = Arc::new(AtomicU64::new(start));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (outbox, out, next) = (outbox.clone(), out.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let seq = outbox.append(&entry::entry(i)).await?;
                let mut o = out
                    .lock()
                    .map_err(|_| anyhow::anyhow!("stdout lock poisoned"))?;
                writeln!(o, "{seq} {i}")?;
                o.flush()?;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
