//! Prints the brief's performance targets next to what was measured, as one markdown table for
//! the Performance table of docs/PERFORMANCE.md.
//!
//! Reads criterion's output (`<target dir>/criterion/**/new/{benchmark,estimates,sample}.json`)
//! and, optionally, the JSON report of an `ingest` run:
//!
//! ```text
//! cargo run --release -p memory-benches --bin bench-summary -- [--criterion DIR] [--ingest FILE.json]...
//! ```
//!
//! The median is criterion's median of the per-sample means (`estimates.json`); the p95 is the
//! 95th percentile of the same per-sample means (`sample.json`: `times[i] / iters[i]`). For
//! throughput targets the figures are converted to elements per second, and the "p95" column is
//! then the rate of the slowest 5 % of samples.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;

/// Prints the performance targets next to the measured figures.
#[derive(Debug, Parser)]
#[command(name = "bench-summary", version)]
struct Args {
    /// Criterion's output directory (default: `$CARGO_TARGET_DIR/criterion`, else
    /// `target/criterion`).
    #[arg(long)]
    criterion: Option<PathBuf>,
    /// JSON reports of `ingest --json` runs (repeatable).
    #[arg(long)]
    ingest: Vec<PathBuf>,
}

/// One measured benchmark.
#[derive(Debug, Clone)]
struct Measured {
    /// Median of the per-sample means, in nanoseconds per iteration.
    median_ns: f64,
    /// 95th percentile of the per-sample means, in nanoseconds per iteration.
    p95_ns: f64,
    /// Elements (or bytes) per iteration, when the bench declares a throughput.
    elements: Option<f64>,
}

/// How a target is judged.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// Time per iteration at most this many nanoseconds, judged on the p95.
    P95AtMost(f64),
    /// Time per iteration at most this many nanoseconds, judged on the median.
    MedianAtMost(f64),
    /// Time per element at most this many nanoseconds (amortized), judged on the median.
    PerElementAtMost(f64),
    /// At least this many elements per second, judged on the median.
    RateAtLeast(f64),
    /// Not judged: shown for the curve.
    Info,
}

struct Row {
    target: &'static str,
    goal: &'static str,
    /// Criterion ids (`group/function`), first found wins.
    ids: &'static [&'static str],
    judge: Goal,
}

const ROWS: &[Row] = &[
    Row {
        target: "complete_episode, 50 steps (default stack)",
        goal: "p95 <= 2 ms",
        ids: &["lifecycle/complete_episode/50_steps"],
        judge: Goal::P95AtMost(2e6),
    },
    Row {
        target: "complete_episode, 50 steps (bare local libsql)",
        goal: "p95 <= 2 ms",
        ids: &["turso/complete_episode_50_steps/local"],
        judge: Goal::P95AtMost(2e6),
    },
    Row {
        target: "complete_episode, 50 steps (sqld over HTTP)",
        goal: "(for comparison)",
        ids: &["turso/complete_episode_50_steps/sqld"],
        judge: Goal::Info,
    },
    Row {
        target: "complete_episode, 10 steps",
        goal: "(curve)",
        ids: &["lifecycle/complete_episode/10_steps"],
        judge: Goal::Info,
    },
    Row {
        target: "complete_episode, 1,000 steps",
        goal: "(curve)",
        ids: &["lifecycle/complete_episode/1000_steps"],
        judge: Goal::Info,
    },
    Row {
        target: "log_step, amortized (batched writes included)",
        goal: "<= 2 µs per step",
        ids: &["lifecycle/log_step/amortized_1000_steps"],
        judge: Goal::PerElementAtMost(2e3),
    },
    Row {
        target: "steps ingested, batched (64 per write)",
        goal: ">= 20,000 steps/s",
        ids: &["lifecycle/steps/batched_64"],
        judge: Goal::RateAtLeast(20_000.0),
    },
    Row {
        target: "steps ingested, unbatched (1 per write)",
        goal: "(for comparison)",
        ids: &["lifecycle/steps/unbatched_1"],
        judge: Goal::Info,
    },
    Row {
        target: "episodes ingested (start, 10 steps, complete), sequential",
        goal: ">= 2,000 episodes/s",
        ids: &["turso/ingest_local/episodes_sequential"],
        judge: Goal::RateAtLeast(2_000.0),
    },
    Row {
        target: "episodes ingested, 8 concurrent streams",
        goal: ">= 2,000 episodes/s",
        ids: &["turso/ingest_local/episodes_concurrent8"],
        judge: Goal::RateAtLeast(2_000.0),
    },
    Row {
        target: "start_episode, 64 concurrent tasks",
        goal: "(throughput)",
        ids: &["lifecycle/start_episode_concurrent/64_tasks"],
        judge: Goal::Info,
    },
    Row {
        target: "retrieval top 10, hybrid, 1k episodes",
        goal: "(curve)",
        ids: &["retrieval/hybrid/1000"],
        judge: Goal::Info,
    },
    Row {
        target: "retrieval top 10, hybrid, 10k episodes",
        goal: "(curve)",
        ids: &["retrieval/hybrid/10000"],
        judge: Goal::Info,
    },
    Row {
        target: "retrieval top 10, hybrid, 100k episodes",
        goal: "p95 <= 10 ms",
        ids: &["retrieval/hybrid/100000"],
        judge: Goal::P95AtMost(10e6),
    },
    Row {
        target: "retrieval top 10, hybrid, 1M episodes",
        goal: "p95 <= 50 ms",
        ids: &["retrieval/hybrid/1000000"],
        judge: Goal::P95AtMost(50e6),
    },
    Row {
        target: "get_episode, cache hit in process",
        goal: "p50 <= 5 µs",
        ids: &["tiered/get_episode/tiered_cache_hit"],
        judge: Goal::MedianAtMost(5e3),
    },
    Row {
        target: "get_episode, cache hit from redb",
        goal: "p50 <= 50 µs",
        ids: &["tiered/get_episode/tiered_redb_hit"],
        judge: Goal::MedianAtMost(50e3),
    },
    Row {
        target: "cache miss (redb cache, both tiers)",
        goal: "(for comparison)",
        ids: &["redb_cache/get_miss"],
        judge: Goal::Info,
    },
    Row {
        target: "cold open of 100k episodes to first answer",
        goal: "<= 200 ms",
        ids: &["retrieval/cold_open_first_answer/100000"],
        judge: Goal::MedianAtMost(200e6),
    },
    Row {
        target: "recommend end to end with MiniLM query embedding",
        goal: "p95 <= 50 ms",
        ids: &["retrieval/recommend_e2e_minilm/2000"],
        judge: Goal::P95AtMost(50e6),
    },
    Row {
        target: "a context's learned items as recommend reads them, 100k patterns: context of ~500",
        goal: "(part of recommend)",
        ids: &["turso/context_items_100k/small_context"],
        judge: Goal::Info,
    },
    Row {
        target: "the same, the dominant context of 20,000",
        goal: "(part of recommend)",
        ids: &["turso/context_items_100k/large_context"],
        judge: Goal::Info,
    },
    Row {
        target: "the same, context of ~500, before schema v9 (counter index walked)",
        goal: "(for comparison)",
        ids: &["turso/context_items_100k/small_context_schema_v8"],
        judge: Goal::Info,
    },
    Row {
        target: "pattern extraction, 1,000-step episode (in process)",
        goal: "(no target)",
        ids: &["learning/extract/1000_steps"],
        judge: Goal::Info,
    },
    Row {
        target: "heuristic update: feedback vote (default stack)",
        goal: "(no target)",
        ids: &["learning/heuristic_update/feedback_vote"],
        judge: Goal::Info,
    },
    Row {
        target: "full learning cycle (recommend, record 20 steps, complete, feedback)",
        goal: "(no target)",
        ids: &["learning/full_cycle/20_steps"],
        judge: Goal::Info,
    },
];

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
}

/// One `<bench>/new` directory: its full id and what was measured.
fn read_bench(new: &Path) -> Result<Option<(String, Measured)>> {
    let (bench, estimates, sample) = (
        new.join("benchmark.json"),
        new.join("estimates.json"),
        new.join("sample.json"),
    );
    if !(bench.is_file() && estimates.is_file() && sample.is_file()) {
        return Ok(None);
    }
    let bench = read_json(&bench)?;
    let Some(id) = bench.get("full_id").and_then(Value::as_str) else {
        return Ok(None);
    };
    let elements = bench.get("throughput").and_then(|t| {
        t.get("Elements")
            .or_else(|| t.get("Bytes"))
            .and_then(Value::as_f64)
    });
    let estimates = read_json(&estimates)?;
    let sample = read_json(&sample)?;
    let nums = |v: &Value, key: &str| -> Vec<f64> {
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (iters, times) = (nums(&sample, "iters"), nums(&sample, "times"));
    let mut means: Vec<f64> = iters
        .iter()
        .zip(&times)
        .filter(|(i, _)| **i > 0.0)
        .map(|(i, t)| t / i)
        .collect();
    means.sort_by(f64::total_cmp);
    let median_ns = estimates
        .pointer("/median/point_estimate")
        .and_then(Value::as_f64)
        .unwrap_or_else(|| percentile(&means, 0.5));
    Ok(Some((
        id.to_owned(),
        Measured {
            median_ns,
            p95_ns: percentile(&means, 0.95),
            elements,
        },
    )))
}

/// Every benchmark under `root`, by full id.
fn collect(root: &Path, out: &mut BTreeMap<String, Measured>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some((id, m)) = read_bench(&path)? {
                out.insert(id, m);
            }
        } else {
            collect(&path, out)?;
        }
    }
    Ok(())
}

/// A duration in nanoseconds, in the unit that reads best.
fn time(ns: f64) -> String {
    if !ns.is_finite() {
        "n/a".to_owned()
    } else if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e4 {
        format!("{:.0}k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0}/s")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// Median, p95 and verdict cells of a row.
fn cells(m: &Measured, judge: Goal) -> (String, String, &'static str) {
    let per_element = |ns: f64| m.elements.map_or(ns, |e| ns / e.max(1.0));
    let per_s = |ns: f64| m.elements.unwrap_or(1.0) * 1e9 / ns;
    match judge {
        Goal::P95AtMost(limit) => (
            time(m.median_ns),
            time(m.p95_ns),
            verdict(m.p95_ns <= limit),
        ),
        Goal::MedianAtMost(limit) => (
            time(m.median_ns),
            time(m.p95_ns),
            verdict(m.median_ns <= limit),
        ),
        Goal::PerElementAtMost(limit) => (
            format!("{} per step", time(per_element(m.median_ns))),
            format!("{} per step", time(per_element(m.p95_ns))),
            verdict(per_element(m.median_ns) <= limit),
        ),
        Goal::RateAtLeast(min) => (
            rate(per_s(m.median_ns)),
            rate(per_s(m.p95_ns)),
            verdict(per_s(m.median_ns) >= min),
        ),
        Goal::Info => {
            if m.elements.is_some() {
                (rate(per_s(m.median_ns)), rate(per_s(m.p95_ns)), "")
            } else {
                (time(m.median_ns), time(m.p95_ns), "")
            }
        }
    }
}

fn ingest_rows(path: &Path, table: &mut String) -> Result<()> {
    let r = read_json(path)?;
    let f = |p: &str| r.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let n = f("/episodes");
    let label = format!(
        "ingest run, {n:.0} x {:.0}-step episodes",
        f("/steps_per_episode")
    );
    let eps = f("/episodes_per_s");
    let p50 = f("/complete_episode/p50_ms") * 1e6;
    let p95 = f("/complete_episode/p95_ms") * 1e6;
    let rss = f("/peak_rss_mib");
    let patterns = f("/stats/patterns");
    let heuristics = f("/stats/heuristics");
    let _ = writeln!(
        table,
        "| {label}: episodes/s | >= 2,000/s | {eps:.0}/s | | {} |",
        verdict(eps >= 2_000.0)
    );
    let _ = writeln!(
        table,
        "| {label}: steps/s | >= 20,000/s | {:.0}/s | | {} |",
        f("/steps_per_s"),
        verdict(f("/steps_per_s") >= 20_000.0)
    );
    let _ = writeln!(
        table,
        "| {label}: complete_episode | p95 <= 2 ms | {} | {} | {} |",
        time(p50),
        time(p95),
        verdict(p95 <= 2e6)
    );
    let rss_goal = if n >= 100_000.0 {
        format!(
            "<= 300 MB at 100k | {rss:.0} MiB | | {}",
            verdict(rss * 1.048_576 <= 300.0)
        )
    } else {
        format!("<= 300 MB at 100k | {rss:.0} MiB | | (at {n:.0})")
    };
    let _ = writeln!(table, "| {label}: peak RSS | {rss_goal} |");
    let _ = writeln!(
        table,
        "| {label}: patterns / heuristics at the end | grow by merging | {patterns:.0} / {heuristics:.0} ({:.2} patterns per episode) | | |",
        patterns / n
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = args.criterion.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("criterion")
    });
    let mut measured = BTreeMap::new();
    collect(&root, &mut measured)?;

    let mut table = String::new();
    table.push_str("| target | goal | median | p95 | verdict |\n|---|---|---|---|---|\n");
    let mut missing = Vec::new();
    for row in ROWS {
        let found = row
            .ids
            .iter()
            .find_map(|id| measured.get(*id).map(|m| (*id, m)));
        if let Some((id, m)) = found {
            let (median, p95, verdict) = cells(m, row.judge);
            let _ = writeln!(
                table,
                "| {} (`{id}`) | {} | {median} | {p95} | {verdict} |",
                row.target, row.goal
            );
        } else {
            let _ = writeln!(
                table,
                "| {} | {} | not measured | | |",
                row.target, row.goal
            );
            missing.extend(row.ids.iter().copied());
        }
    }
    for path in &args.ingest {
        ingest_rows(path, &mut table)?;
    }
    print!("{table}");
    if !missing.is_empty() {
        eprintln!(
            "{} benchmark(s) not found under {}: {}",
            missing.len(),
            root.display(),
            missing.join(", ")
        );
    }
    Ok(())
}
