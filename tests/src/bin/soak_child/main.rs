//! Test helper for `tests/multi_process_soak.rs`: the participant that uses the library.
//!
//! Opens the default stack (`memory-stack`, as any application embedding the memory would) on
//! a data directory that other processes use at the same time, and records `<episodes>`
//! episodes of `<steps>` steps each. After each call returns `Ok` it prints one line and
//! flushes stdout, so every complete line the parent reads is an acknowledged write:
//!
//! - `ack start <episode id>`
//! - `try step <episode id> <marker>`: a step is about to be written (it may be stored even
//!   if the process is killed before it is acknowledged)
//! - `ack step <episode id> <marker>` (the marker is the step's action text)
//! - `ack complete <episode id>`
//! - `wait <microseconds>`: the longest a write transaction has waited to begin so far
//! - `error <call> <message>`: a call failed (the parent counts these)
//!
//! Steps are flushed before they are acknowledged (`flush_episode`), as the MCP server does.
//! With `--continue <episode id> <steps done>` it first finishes an episode a killed run left
//! in progress. The parent kills it with SIGKILL at random moments and starts it again.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use memory_core::{EpisodeId, Namespace, NewEpisode, Outcome, StepInput, TaskContext, TaskType};
use memory_stack::StackBuilder;

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// The context every soak participant records in (one context pattern counts them all).
fn context() -> TaskContext {
    TaskContext::new("soak").with_language("rust")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: soak_child <data dir> <namespace> <tag> <episodes> <steps> [--continue <id> <done>]";
    let dir = PathBuf::from(args.first().context(usage)?);
    let ns = Namespace::new(args.get(1).context(usage)?.as_str())?;
    let tag = args.get(2).context(usage)?.clone();
    let episodes: usize = args.get(3).context(usage)?.parse()?;
    let steps: usize = args.get(4).context(usage)?.parse()?;
    let resume = match args.get(5).map(String::as_str) {
        Some("--continue") => Some((
            args.get(6).context(usage)?.parse::<EpisodeId>()?,
            args.get(7).context(usage)?.parse::<usize>()?,
        )),
        _ => None,
    };

    // The key of an encrypted run, from the environment as the CLI reads it.
    let key = memory_stack::KeySource::from_env()
        .map(|source| source.load())
        .transpose()?;
    let stack = StackBuilder::new(&dir).encryption_key(key).open().await?;
    let m = stack.memory();
    let started = Instant::now();
    let report_wait = || {
        say(&format!(
            "wait {}",
            stack.durable().longest_lock_wait().as_micros()
        ))
    };
    let step = |id: EpisodeId, e: usize, k: usize| {
        let marker = format!("{tag}-e{e}-s{k}-{}", uuid::Uuid::new_v4().simple());
        let input = if k % 3 == 1 {
            StepInput::error("cargo", marker.clone(), "error[E0308]: mismatched types")
        } else {
            StepInput::ok("cargo", marker.clone(), "ok")
        };
        (id, marker, input)
    };

    let mut todo: Vec<(Option<EpisodeId>, usize)> = Vec::new();
    if let Some((id, done)) = resume {
        todo.push((Some(id), done));
    }
    todo.extend((0..episodes).map(|_| (None, 0)));
    for (e, (resume_id, done)) in todo.into_iter().enumerate() {
        let id = if let Some(id) = resume_id {
            id
        } else {
            let task = NewEpisode::new(
                format!("{tag} soak episode {e}"),
                TaskType::Testing,
                context(),
            );
            match m.start_episode(&ns, task).await {
                Ok(id) => {
                    say(&format!("ack start {id}"))?;
                    id
                }
                Err(err) => {
                    say(&format!("error start {err}"))?;
                    continue;
                }
            }
        };
        for k in done..steps {
            let (id, marker, input) = step(id, e, k);
            say(&format!("try step {id} {marker}"))?;
            let logged = async {
                m.log_step(&ns, id, input).await?;
                m.flush_episode(&ns, id).await
            };
            match logged.await {
                Ok(()) => say(&format!("ack step {id} {marker}"))?,
                Err(err) => say(&format!("error step {err}"))?,
            }
        }
        match m.complete_episode(&ns, id, Outcome::success("soak")).await {
            Ok(_) => say(&format!("ack complete {id}"))?,
            Err(err) => say(&format!("error complete {err}"))?,
        }
        report_wait()?;
    }
    stack.shutdown().await?;
    report_wait()?;
    say(&format!("done {:.1}", started.elapsed().as_secs_f64()))?;
    Ok(())
}
