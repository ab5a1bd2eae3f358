//! The forget run: what `forget_episodes` removes from a store of many workload episodes, how
//! long it takes, and whether the learned counts then equal those of a store that never
//! recorded the episode.
//!
//! Two stores are ingested from the same workload in the default stack (libsql file, redb
//! cache, journal), with the background consolidation off (its merges would depend on when it
//! ran): one with every episode, one without episode `--forget-index`. That episode is then
//! forgotten in the first, and the rows of every table are counted before and after. The
//! learned items of both stores are compared by id and counts. Then `--more` other episodes
//! are forgotten one at a time, for the time an erasure takes (median and p95).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::ProgressBar;
use memory_benches::{DefaultStack, Workload, memory_config, record_workload_episode};
use memory_core::{
    ConsolidationConfig, EpisodeId, LearnedQuery, Namespace, SelfLearningMemory, StorageExt,
};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about = "Forget episodes in a large store: rows removed, time, learned counts")]
struct Args {
    /// Episodes in the store.
    #[arg(long, default_value_t = 10_000)]
    episodes: u64,
    /// Steps per episode.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The episode forgotten and compared with a store that never saw it.
    #[arg(long, default_value_t = 4_321)]
    forget_index: u64,
    /// Further episodes forgotten one at a time, for the timing.
    #[arg(long, default_value_t = 20)]
    more: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    episodes: u64,
    steps: usize,
    rows_before: BTreeMap<String, u64>,
    rows_after: BTreeMap<String, u64>,
    first_forget_ms: f64,
    forget_median_ms: f64,
    forget_p95_ms: f64,
    learned_items: usize,
    learned_items_differing: usize,
    differing_examples: Vec<String>,
    learned_removed: usize,
    learned_changed: u64,
    files_scrubbed: Option<bool>,
}

/// Ingests episodes `0..n` of `workload` into a new stack in `dir`, but `skip`; the ids by index.
async fn ingest(
    dir: &Path,
    workload: Workload,
    n: u64,
    skip: Option<u64>,
) -> Result<(DefaultStack, BTreeMap<u64, EpisodeId>)> {
    let config =
        memory_config().with_consolidation(ConsolidationConfig::default().with_schedule(false));
    let stack = DefaultStack::open(dir, config).await?;
    let ns = Namespace::default();
    let bar = ProgressBar::new(n);
    let mut ids = BTreeMap::new();
    for i in (0..n).filter(|i| Some(*i) != skip) {
        let (report, _) = record_workload_episode(&stack.memory, &ns, workload.episode(i)).await?;
        ids.insert(i, report.episode_id);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((stack, ids))
}

/// Rows of every table of the database in `dir` (FTS5 shadow tables included).
async fn rows_per_table(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let path = memory_stack::DataDir::new(dir).database();
    let db = libsql::Builder::new_local(&path).build().await?;
    let conn = db.connect()?;
    let mut tables = Vec::new();
    let mut rows = conn
        .query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
            (),
        )
        .await?;
    while let Some(row) = rows.next().await? {
        tables.push(row.get::<String>(0)?);
    }
    let mut out = BTreeMap::new();
    for t in tables {
        let mut r = conn
            .query(&format!("SELECT COUNT(*) FROM \"{t}\""), ())
            .await?;
        let n = match r.next().await? {
            Some(row) => row.get::<i64>(0)?,
            None => 0,
        };
        out.insert(t, u64::try_from(n).unwrap_or(0));
    }
    Ok(out)
}

/// Every learned item of the default namespace with its counts, by kind and id.
async fn learned_counts(m: &SelfLearningMemory) -> Result<BTreeMap<String, Vec<u64>>> {
    let storage = m.storage();
    let ns = Namespace::default();
    let mut out = BTreeMap::new();
    for offset in (0..).step_by(1_000) {
        let q = LearnedQuery {
            limit: 1_000,
            offset,
            include_inactive: true,
            ..LearnedQuery::default()
        };
        let (p, h, l) = (
            storage.query_patterns(&ns, &q).await?,
            storage.query_heuristics(&ns, &q).await?,
            storage.query_lessons(&ns, &q).await?,
        );
        if p.is_empty() && h.is_empty() && l.is_empty() {
            break;
        }
        for x in p {
            let counts = vec![
                x.occurrences,
                x.successes,
                x.total_steps,
                x.total_latency_ms,
            ];
            out.insert(format!("pattern {}", x.id), counts);
        }
        for x in h {
            out.insert(format!("heuristic {}", x.id), vec![x.support, x.against]);
        }
        for x in l {
            let counts = vec![x.occurrences, x.recovered, x.episode_failures];
            out.insert(format!("lesson {}", x.id), counts);
        }
    }
    Ok(out)
}

/// The `q` quantile of `times`, in ms.
fn quantile(times: &mut [Duration], q: f64) -> f64 {
    times.sort_unstable();
    let i = ((times.len() as f64 - 1.0) * q).round() as usize;
    times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1_000.0)
}

async fn run(args: &Args) -> Result<Report> {
    let workload = Workload::new(args.seed, args.steps);
    let (all_dir, never_dir) = (tempdir()?, tempdir()?);
    let (all, ids) = ingest(all_dir.path(), workload, args.episodes, None).await?;
    let (never, _) = ingest(
        never_dir.path(),
        workload,
        args.episodes,
        Some(args.forget_index),
    )
    .await?;
    let ns = Namespace::default();
    let target = *ids
        .get(&args.forget_index)
        .context("--forget-index is past --episodes")?;
    let rows_before = rows_per_table(all_dir.path()).await?;
    let started = Instant::now();
    let first = all
        .memory
        .forget_episodes(&ns, &[target], "forget run")
        .await?;
    let first_forget = started.elapsed();
    let rows_after = rows_per_table(all_dir.path()).await?;
    let (a, b) = (
        learned_counts(&all.memory).await?,
        learned_counts(&never.memory).await?,
    );
    let differing: Vec<String> = (a.keys().chain(b.keys()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {:?} after forgetting, {:?} never seen",
                a.get(k),
                b.get(k)
            )
        })
        .collect();
    let mut times = Vec::new();
    let others = ids.iter().filter(|(i, _)| **i != args.forget_index);
    for (_, id) in others
        .step_by(ids.len() / args.more.max(1) as usize)
        .take(args.more as usize)
    {
        let started = Instant::now();
        all.memory
            .forget_episodes(&ns, &[*id], "forget run")
            .await?;
        times.push(started.elapsed());
    }
    all.shutdown().await?;
    never.shutdown().await?;
    let (p, h, l) = first.learned_changed;
    Ok(Report {
        episodes: args.episodes,
        steps: args.steps,
        rows_before,
        rows_after,
        first_forget_ms: first_forget.as_secs_f64() * 1_000.0,
        forget_median_ms: quantile(&mut times, 0.5),
        forget_p95_ms: quantile(&mut times, 0.95),
        learned_items: a.len().max(b.len()),
        learned_items_differing: differing.len(),
        differing_examples: differing.into_iter().take(5).collect(),
        learned_removed: first.learned_removed.len(),
        learned_changed: p + h + l,
        files_scrubbed: first.files_scrubbed,
    })
}

fn tempdir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().context("cannot create a temporary directory")
}

fn print_table(r: &Report, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "{} episodes of {} steps; one forgotten",
        r.episodes, r.steps
    )?;
    writeln!(out, "{:<28} {:>10} {:>10}", "table", "before", "after")?;
    for (t, before) in &r.rows_before {
        let after = r.rows_after.get(t).copied().unwrap_or(0);
        writeln!(out, "{t:<28} {before:>10} {after:>10}")?;
    }
    writeln!(
        out,
        "first erasure: {:.1} ms (with the scrub)",
        r.first_forget_ms
    )?;
    writeln!(
        out,
        "erasures: median {:.1} ms, p95 {:.1} ms",
        r.forget_median_ms, r.forget_p95_ms
    )?;
    writeln!(
        out,
        "learned items: {} ({} changed, {} removed); differing from the store that never saw it: {}",
        r.learned_items, r.learned_changed, r.learned_removed, r.learned_items_differing
    )?;
    for d in &r.differing_examples {
        writeln!(out, "  {d}")?;
    }
    writeln!(out, "freed bytes overwritten: {:?}", r.files_scrubbed)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = memory_benches::runtime();
    let report = rt.block_on(run(&args))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&report, &mut out)?;
    }
    Ok(())
}
