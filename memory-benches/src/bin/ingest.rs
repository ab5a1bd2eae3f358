//! The ingest run: records N realistic episodes (default 10,000 of 50 steps) through the
//! default stack (libsql file + redb cache + redb outbox behind `TieredStorage`, as the `memory`
//! CLI opens it) and reports throughput, `complete_episode` latency, peak RSS, file sizes, and
//! how much was learned (patterns, heuristics, lessons) — at checkpoints and at the end.
//!
//! ```text
//! cargo run --release -p memory-benches --bin ingest -- --episodes 10000 --data-dir /tmp/ingest10k
//! cargo run --release -p memory-benches --bin ingest -- --episodes 100000 --data-dir /tmp/ingest100k --json
//! ```
//!
//! The episodes come from [`memory_benches::Workload`]: varied domains, languages, frameworks,
//! tags and task texts; a mix of successful, failing and recovered steps; outcomes that follow
//! from the steps. No embedding model is loaded (the write path does not use it).

/// The allocator the `memory` binary uses, so the run's RSS is the CLI's and the MCP server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use memory_benches::spans::{SpanTimes, SpanTotals};
use memory_benches::{DefaultStack, Workload, proc_status_mib, record_workload_episode};
use memory_core::{MemoryConfig, Namespace, NamespaceStats, OutcomeKind};
use memory_storage_redb::CacheConfig;
use memory_storage_turso::Synchronous;
use serde::Serialize;

/// Records realistic episodes through the default stack and reports how it went.
#[derive(Debug, Parser)]
#[command(name = "ingest", version)]
#[allow(clippy::struct_excessive_bools, reason = "command-line flags")]
struct Args {
    /// Episodes to record.
    #[arg(long, default_value_t = 10_000)]
    episodes: u64,
    /// Steps per episode.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Data directory (created if missing; should be empty for a clean measurement).
    #[arg(long)]
    data_dir: PathBuf,
    /// Namespace to record into.
    #[arg(long, default_value = "bench/ingest")]
    namespace: String,
    /// Workload seed (the same seed gives the same episodes).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Concurrent recording streams (agents).
    #[arg(long, default_value_t = 1)]
    concurrency: u64,
    /// Checkpoints (throughput, latency and learned counts per slice of the run).
    #[arg(long, default_value_t = 10)]
    checkpoints: u64,
    /// Record into a data directory that already holds a database.
    #[arg(long)]
    allow_existing: bool,
    /// Print one JSON document on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// Time the spans of the write path (debug-level `tracing` spans of the memory crates) and
    /// report, per slice, where completion time goes: mean time and count per span name.
    #[arg(long)]
    spans: bool,
    /// Run a consolidation after every checkpoint, as the background schedule would over a
    /// long run (outside the timed slices; its time is reported per checkpoint).
    #[arg(long)]
    consolidate: bool,
    /// With `--consolidate`: days a merged pattern row is kept once its evidence moved
    /// (`consolidation.merged_rows_kept_days`; the default is the library's, 7, which a run of
    /// minutes never reaches; 0 lets each run delete what the one before emptied).
    #[arg(long)]
    merged_rows_kept_days: Option<f64>,
    /// With `--consolidate`: days a pruned pattern row is kept while no evidence revives it
    /// (`consolidation.pruned_rows_kept_days`; the library's default, 90, is never reached by
    /// a run of minutes; 0 lets each run delete what the one before pruned).
    #[arg(long)]
    pruned_rows_kept_days: Option<f64>,
    /// Open the libsql file with `synchronous = FULL` (an fsync per commit) instead of NORMAL
    #[arg(long)]
    synchronous_full: bool,
    /// Encrypt the data directory at rest under a key generated for the run (database,
    /// cache, journals; needs a build with `--features encryption`)
    #[arg(long)]
    encrypt: bool,
}

/// Spans shown per slice with `--spans`.
const SPANS_SHOWN: usize = 14;

/// Latency figures of one set of `complete_episode` calls, in milliseconds.
// The unit in every JSON key is the point.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Clone, Serialize)]
struct Latency {
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

impl Latency {
    fn of(samples: &mut [f64]) -> Latency {
        samples.sort_by(f64::total_cmp);
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().sum::<f64>() / samples.len() as f64
        };
        Latency {
            p50_ms: percentile(samples, 0.50),
            p95_ms: percentile(samples, 0.95),
            p99_ms: percentile(samples, 0.99),
            max_ms: samples.last().copied().unwrap_or(0.0),
            mean_ms: mean,
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Learned items and sizes after a slice of the run.
#[derive(Debug, Clone, Serialize)]
struct Checkpoint {
    episodes: u64,
    elapsed_s: f64,
    /// Episodes per second within the slice.
    episodes_per_s: f64,
    /// `complete_episode` latency within the slice.
    complete: Latency,
    patterns: u64,
    active_patterns: u64,
    heuristics: u64,
    lessons: u64,
    /// With `--consolidate`: seconds the run after this slice took.
    #[serde(skip_serializing_if = "Option::is_none")]
    consolidation_s: Option<f64>,
    /// Consolidation runs of the background schedule that finished within the slice (a
    /// process's first look is 10 s after it starts): they share the machine with the
    /// timed writes, so a slice holding one is slower.
    background_consolidations: u64,
    rss_mib: f64,
    database_mib: f64,
    /// With `--spans`: the costliest spans of the slice (name, mean ms, count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spans: Vec<(String, f64, u64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Outcomes {
    success: u64,
    partial_success: u64,
    failure: u64,
    abstained: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    episodes: u64,
    steps_per_episode: usize,
    concurrency: u64,
    seed: u64,
    data_dir: String,
    /// Whether the data directory was encrypted at rest.
    encrypted: bool,
    elapsed_s: f64,
    episodes_per_s: f64,
    steps_per_s: f64,
    complete_episode: Latency,
    peak_rss_mib: f64,
    final_rss_mib: f64,
    database_bytes: u64,
    cache_bytes: u64,
    outbox_bytes: u64,
    /// Commits that concurrent completions and step batches shared, and the writes they held.
    shared_commits: u64,
    writes_in_shared_commits: u64,
    outcomes: Outcomes,
    stats: StatsOut,
    /// Patterns per completed episode: well below the patterns one episode yields means
    /// repeats merge.
    patterns_per_episode: f64,
    /// Active (not merged or pruned) patterns per completed episode.
    active_patterns_per_episode: f64,
    checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Clone, Serialize)]
struct StatsOut {
    episodes: u64,
    completed: u64,
    successes: u64,
    steps: u64,
    patterns: u64,
    active_patterns: u64,
    heuristics: u64,
    active_heuristics: u64,
    lessons: u64,
}

impl From<NamespaceStats> for StatsOut {
    fn from(s: NamespaceStats) -> Self {
        StatsOut {
            episodes: s.episodes,
            completed: s.completed,
            successes: s.successes,
            steps: s.steps,
            patterns: s.patterns,
            active_patterns: s.active_patterns,
            heuristics: s.heuristics,
            active_heuristics: s.active_heuristics,
            lessons: s.lessons,
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// What every stream appends to as it records.
#[derive(Default)]
struct Shared {
    latencies_ms: Vec<f64>,
    outcomes: Outcomes,
}

async fn record_slice(
    stack: &DefaultStack,
    ns: &Namespace,
    workload: Workload,
    range: std::ops::Range<u64>,
    concurrency: u64,
    shared: &Arc<Mutex<Shared>>,
    bar: &ProgressBar,
) -> Result<()> {
    let mut streams = tokio::task::JoinSet::new();
    for s in 0..concurrency {
        let memory = stack.memory.clone();
        let ns = ns.clone();
        let shared = shared.clone();
        let bar = bar.clone();
        let range = range.clone();
        streams.spawn(async move {
            let mut i = range.start + s;
            while i < range.end {
                let episode = workload.episode(i);
                let kind = episode.outcome.kind();
                let (_, took) = record_workload_episode(&memory, &ns, episode)
                    .await
                    .with_context(|| format!("recording episode {i}"))?;
                {
                    let mut sh = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    sh.latencies_ms.push(took.as_secs_f64() * 1e3);
                    match kind {
                        OutcomeKind::Success => sh.outcomes.success += 1,
                        OutcomeKind::PartialSuccess => sh.outcomes.partial_success += 1,
                        OutcomeKind::Failure => sh.outcomes.failure += 1,
                        OutcomeKind::Abstained => sh.outcomes.abstained += 1,
                    }
                }
                bar.inc(1);
                i += concurrency;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = streams.join_next().await {
        done.context("a recording stream panicked")??;
    }
    Ok(())
}

/// Refuses arguments the run cannot use, and a data directory that already holds a database
/// (unless `--allow-existing`).
fn check_args(args: &Args) -> Result<()> {
    if args.episodes == 0 || args.concurrency == 0 || args.checkpoints == 0 {
        bail!("--episodes, --concurrency and --checkpoints must be at least 1");
    }
    if !args.allow_existing
        && args
            .data_dir
            .join(memory_storage_turso::DATA_DIR_FILE)
            .exists()
    {
        bail!(
            "{} already holds a database; use an empty directory or pass --allow-existing",
            args.data_dir.display()
        );
    }
    Ok(())
}

/// The default stack in the data directory, with the run's configuration.
async fn open_stack(args: &Args) -> Result<DefaultStack> {
    let synchronous = if args.synchronous_full {
        Synchronous::Full
    } else {
        Synchronous::Normal
    };
    let mut config = MemoryConfig::default();
    if let Some(days) = args.merged_rows_kept_days {
        config.consolidation.merged_rows_kept_days = days;
    }
    if let Some(days) = args.pruned_rows_kept_days {
        config.consolidation.pruned_rows_kept_days = days;
    }
    let key = if args.encrypt {
        Some(memory_stack::MasterKey::generate()?)
    } else {
        None
    };
    DefaultStack::open_keyed(
        &args.data_dir,
        config,
        CacheConfig::default(),
        synchronous,
        key,
    )
    .await
}

/// The progress bar over the run's episodes (hidden with `--json`).
fn progress_bar(args: &Args) -> Result<ProgressBar> {
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.episodes)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} episodes ({per_sec}, eta {eta}) {msg}",
        )?
        .progress_chars("=> "),
    );
    Ok(bar)
}

/// The costliest spans since `mark` (name, mean ms, count); moves `mark` to now.
fn slice_spans(spans: Option<&SpanTimes>, mark: &mut SpanTotals) -> Vec<(String, f64, u64)> {
    match spans {
        Some(times) => {
            let now = times.totals();
            let top = now.since(mark).by_total();
            *mark = now;
            top.into_iter()
                .take(SPANS_SHOWN)
                .map(|(name, mean, n)| (name, mean.as_secs_f64() * 1e3, n))
                .collect()
        }
        None => Vec::new(),
    }
}

/// What every slice of the run records into and reads from.
struct Run<'a> {
    args: &'a Args,
    stack: &'a DefaultStack,
    ns: &'a Namespace,
    workload: Workload,
    shared: &'a Arc<Mutex<Shared>>,
    bar: &'a ProgressBar,
    spans: Option<&'a SpanTimes>,
    start: Instant,
}

impl Run<'_> {
    /// Records episodes `done..end` and takes the checkpoint after them; returns it with the
    /// time spent recording (checkpoint counting excluded).
    async fn slice(
        &self,
        done: u64,
        end: u64,
        span_mark: &mut SpanTotals,
    ) -> Result<(Checkpoint, Duration)> {
        let (stack, ns) = (self.stack, self.ns);
        let runs_before = stack.memory.consolidations_run();
        let slice_start = Instant::now();
        let before = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latencies_ms
            .len();
        record_slice(
            stack,
            ns,
            self.workload,
            done..end,
            self.args.concurrency,
            self.shared,
            self.bar,
        )
        .await?;
        let slice_time = slice_start.elapsed();
        let mut window: Vec<f64> = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .latencies_ms[before..]
            .to_vec();
        // Counting is outside the measured slice.
        let slice_spans = slice_spans(self.spans, span_mark);
        let background_consolidations = stack.memory.consolidations_run() - runs_before;
        let consolidation_s = if self.args.consolidate {
            let started = Instant::now();
            stack.memory.consolidate(ns).await?;
            Some(started.elapsed().as_secs_f64())
        } else {
            None
        };
        let stats = stack.memory.stats(ns).await?;
        let cp = Checkpoint {
            episodes: end,
            elapsed_s: self.start.elapsed().as_secs_f64(),
            episodes_per_s: (end - done) as f64 / slice_time.as_secs_f64(),
            complete: Latency::of(&mut window),
            patterns: stats.patterns,
            active_patterns: stats.active_patterns,
            heuristics: stats.heuristics,
            lessons: stats.lessons,
            consolidation_s,
            background_consolidations,
            rss_mib: proc_status_mib("VmRSS"),
            database_mib: stack.database_bytes() as f64 / MIB,
            spans: slice_spans,
        };
        Ok((cp, slice_time))
    }

    /// Records every episode, slice by slice; returns the checkpoints and the time spent
    /// recording (checkpoint counting excluded).
    async fn record_all(&self) -> Result<(Vec<Checkpoint>, Duration)> {
        let args = self.args;
        let mut checkpoints = Vec::new();
        let slice = args.episodes.div_ceil(args.checkpoints);
        let mut done = 0;
        let mut recorded = Duration::ZERO;
        let mut span_mark = self.spans.map(SpanTimes::totals).unwrap_or_default();
        while done < args.episodes {
            let end = (done + slice).min(args.episodes);
            let (cp, slice_time) = self.slice(done, end, &mut span_mark).await?;
            recorded += slice_time;
            self.bar.set_message(format!(
                "{} patterns, {} heuristics",
                cp.patterns, cp.heuristics
            ));
            checkpoints.push(cp);
            done = end;
        }
        self.bar.finish();
        Ok((checkpoints, recorded))
    }

    /// The report at the end of the run, from the final stats.
    fn report(
        &self,
        stats: NamespaceStats,
        checkpoints: Vec<Checkpoint>,
        recorded: Duration,
    ) -> Report {
        let (args, stack) = (self.args, self.stack);
        let (mut latencies, outcomes) = {
            let sh = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            (sh.latencies_ms.clone(), sh.outcomes.clone())
        };
        let peak_rss_mib = proc_status_mib("VmHWM");
        let final_rss_mib = proc_status_mib("VmRSS");
        Report {
            episodes: args.episodes,
            steps_per_episode: args.steps,
            concurrency: args.concurrency,
            seed: args.seed,
            data_dir: args.data_dir.display().to_string(),
            encrypted: args.encrypt,
            elapsed_s: recorded.as_secs_f64(),
            episodes_per_s: args.episodes as f64 / recorded.as_secs_f64(),
            steps_per_s: (args.episodes * args.steps as u64) as f64 / recorded.as_secs_f64(),
            complete_episode: Latency::of(&mut latencies),
            peak_rss_mib,
            final_rss_mib,
            database_bytes: stack.database_bytes(),
            cache_bytes: stack.cache_bytes(),
            outbox_bytes: stack.outbox_bytes(),
            shared_commits: stack.group_commits().commits,
            writes_in_shared_commits: stack.group_commits().writes,
            outcomes,
            patterns_per_episode: stats.patterns as f64 / stats.completed.max(1) as f64,
            active_patterns_per_episode: stats.active_patterns as f64
                / stats.completed.max(1) as f64,
            stats: stats.into(),
            checkpoints,
        }
    }
}

async fn run(args: &Args, spans: Option<&SpanTimes>) -> Result<Report> {
    check_args(args)?;
    let ns = Namespace::new(&args.namespace)?;
    let stack = open_stack(args).await?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let bar = progress_bar(args)?;
    let run = Run {
        args,
        stack: &stack,
        ns: &ns,
        workload: Workload::new(args.seed, args.steps),
        shared: &shared,
        bar: &bar,
        spans,
        start: Instant::now(),
    };
    let (checkpoints, recorded) = run.record_all().await?;
    stack.memory.flush().await?;
    let stats = stack.memory.stats(&ns).await?;
    let status = stack.tiered.status();
    if status.outbox_len > 0 {
        eprintln!(
            "warning: {} writes still journaled in the outbox (durable layer unavailable?)",
            status.outbox_len
        );
    }
    let report = run.report(stats, checkpoints, recorded);
    stack.shutdown().await?;
    Ok(report)
}

/// The summary rows of the table: label and value.
fn summary_rows(r: &Report) -> Vec<(&'static str, String)> {
    let s = &r.stats;
    let o = &r.outcomes;
    let c = &r.complete_episode;
    vec![
        (
            "episodes recorded",
            format!(
                "{} x {} steps, {} stream(s), seed {}{}",
                r.episodes,
                r.steps_per_episode,
                r.concurrency,
                r.seed,
                if r.encrypted {
                    ", encrypted at rest"
                } else {
                    ""
                }
            ),
        ),
        (
            "outcomes",
            format!(
                "{} success, {} partial, {} failure, {} abstained",
                o.success, o.partial_success, o.failure, o.abstained
            ),
        ),
        ("recording time", format!("{:.1} s", r.elapsed_s)),
        ("episodes/s", format!("{:.1}", r.episodes_per_s)),
        ("steps/s", format!("{:.0}", r.steps_per_s)),
        (
            "complete_episode p50 / p95",
            format!("{:.2} ms / {:.2} ms", c.p50_ms, c.p95_ms),
        ),
        (
            "complete_episode p99 / max / mean",
            format!(
                "{:.2} ms / {:.2} ms / {:.2} ms",
                c.p99_ms, c.max_ms, c.mean_ms
            ),
        ),
        (
            "peak RSS (VmHWM)",
            format!(
                "{:.1} MiB (at the end {:.1} MiB)",
                r.peak_rss_mib, r.final_rss_mib
            ),
        ),
        (
            "database (libsql + WAL)",
            format!("{:.1} MiB", r.database_bytes as f64 / MIB),
        ),
        (
            "cache (redb)",
            format!("{:.1} MiB", r.cache_bytes as f64 / MIB),
        ),
        (
            "outbox (redb)",
            format!("{:.1} MiB", r.outbox_bytes as f64 / MIB),
        ),
        (
            "shared commits",
            format!(
                "{} holding {} writes",
                r.shared_commits, r.writes_in_shared_commits
            ),
        ),
        ("stored steps", s.steps.to_string()),
        (
            "patterns",
            format!(
                "{} ({} active; {:.2} per episode, {:.3} active)",
                s.patterns,
                s.active_patterns,
                r.patterns_per_episode,
                r.active_patterns_per_episode
            ),
        ),
        (
            "heuristics",
            format!("{} ({} active)", s.heuristics, s.active_heuristics),
        ),
        ("failure lessons", s.lessons.to_string()),
    ]
}

/// The per-checkpoint table.
fn print_checkpoints(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:>9}  {:>8}  {:>11}  {:>11}  {:>9}  {:>8}  {:>10}  {:>8}  {:>9}  {:>8}  {:>9}  {:>7}",
        "episodes",
        "ep/s",
        "p50 ms",
        "p95 ms",
        "patterns",
        "active",
        "heuristics",
        "lessons",
        "RSS MiB",
        "db MiB",
        "consol s",
        "bg runs"
    )?;
    for cp in &r.checkpoints {
        writeln!(
            out,
            "  {:>9}  {:>8.1}  {:>11.2}  {:>11.2}  {:>9}  {:>8}  {:>10}  {:>8}  {:>9.1}  {:>8.1}  {:>9}  {:>7}",
            cp.episodes,
            cp.episodes_per_s,
            cp.complete.p50_ms,
            cp.complete.p95_ms,
            cp.patterns,
            cp.active_patterns,
            cp.heuristics,
            cp.lessons,
            cp.rss_mib,
            cp.database_mib,
            cp.consolidation_s
                .map_or("-".to_owned(), |t| format!("{t:.2}")),
            cp.background_consolidations
        )?;
    }
    Ok(())
}

/// With `--spans`: the costliest spans of each slice.
fn print_spans(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    for cp in r.checkpoints.iter().filter(|cp| !cp.spans.is_empty()) {
        writeln!(
            out,
            "\n  spans up to episode {} (mean ms x count):",
            cp.episodes
        )?;
        for (name, mean_ms, n) in &cp.spans {
            writeln!(out, "    {name:<32} {mean_ms:>9.3} x {n}")?;
        }
    }
    Ok(())
}

fn print_table(r: &Report, out: &mut impl Write) -> std::io::Result<()> {
    let rows = summary_rows(r);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    writeln!(out)?;
    for (k, v) in &rows {
        writeln!(out, "  {k:<width$}  {v}")?;
    }
    writeln!(out)?;
    print_checkpoints(r, out)?;
    print_spans(r, out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let times = args.spans.then(|| {
        use tracing_subscriber::Layer;
        use tracing_subscriber::layer::SubscriberExt;
        let times = SpanTimes::default();
        let filter = tracing_subscriber::EnvFilter::new("memory_core=debug,memory_storage_turso=debug,memory_storage_redb=debug,memory_stack=debug,warn");
        let subscriber = tracing_subscriber::registry().with(times.clone().with_filter(filter));
        tracing::subscriber::set_global_default(subscriber).map(|()| times)
    });
    let times = times.transpose().context("cannot install the span timer")?;
    let report = rt.block_on(run(&args, times.as_ref()))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_table(&report, &mut out)?;
    }
    Ok(())
}
