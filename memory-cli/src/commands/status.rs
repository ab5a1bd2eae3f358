//! `memory stats`, `memory health` and `memory sync`.

use anyhow::Result;
use memory_core::{MetricsSnapshot, trend};
use serde_json::json;

use memory_stack::{HEALTH_CHECK_DEADLINE, Stack};

use crate::cli::SyncCmd;
use crate::display_safe::{self, line};
use crate::output::{self, pct};
use crate::settings::Settings;

pub async fn stats(stack: &Stack, s: &Settings) -> Result<()> {
    let m = stack.memory();
    let st = m.stats(&s.namespace).await?;
    let sync = stack.tiered().status();
    let success_rate = if st.completed == 0 {
        0.0
    } else {
        st.successes as f64 / st.completed as f64
    };
    let hit_rate = sync.cache.map(|c| c.hit_rate());
    let series = m.metrics_history(&s.namespace, 20).await?;
    let runs = m.consolidation_runs(&s.namespace, 5).await?;
    if s.json {
        return output::json(&json!({
            "namespace": s.namespace,
            "counts": st,
            "success_rate": success_rate,
            "cache": sync.cache,
            "cache_hit_rate": hit_rate,
            "outbox_len": sync.outbox_len,
            "breaker": sync.breaker,
            "learning": {
                "current": series.first(),
                "series": series,
                "consolidation_runs": runs,
            },
        }));
    }
    println!("namespace   {}", s.namespace);
    println!(
        "episodes    {} ({} completed, {} in progress)",
        st.episodes,
        st.completed,
        st.episodes - st.completed
    );
    println!("success     {} of completed", pct(success_rate));
    println!("steps       {}", st.steps);
    println!(
        "patterns    {} active of {}",
        st.active_patterns, st.patterns
    );
    println!(
        "heuristics  {} active of {}",
        st.active_heuristics, st.heuristics
    );
    println!("lessons     {}", st.lessons);
    println!("feedback    {} events", st.feedback);
    match sync.cache {
        Some(c) => println!(
            "cache       {} entries, {} bytes; this process: hit rate {} ({} memory + {} disk hits, {} misses)",
            c.entries,
            c.bytes,
            pct(c.hit_rate()),
            c.memory_hits,
            c.disk_hits,
            c.misses
        ),
        None => println!("cache       off"),
    }
    println!("outbox      {} pending", sync.outbox_len);
    print_learning(&series, &runs);
    Ok(())
}

/// The latest learning-metrics snapshot and each metric's direction since the oldest shown.
fn print_learning(series: &[MetricsSnapshot], runs: &[memory_core::ConsolidationRun]) {
    let Some(now) = series.first() else {
        println!("learning    no snapshot yet (run `memory consolidate`)");
        return;
    };
    let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), pct);
    println!(
        "learning    snapshot {} ({} snapshots; trend since {})",
        now.taken_at.to_rfc3339(),
        series.len(),
        series
            .last()
            .map_or_else(String::new, |o| o.taken_at.to_rfc3339())
    );
    let rows: [(&str, String, &str); 6] = [
        (
            "success rate",
            opt(now.success_rate),
            trend(series, |x| x.success_rate),
        ),
        (
            "mean reward",
            now.mean_reward
                .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}")),
            trend(series, |x| x.mean_reward),
        ),
        (
            "pattern reuse",
            opt(now.pattern_reuse_rate),
            trend(series, |x| x.pattern_reuse_rate),
        ),
        (
            "repeated failures",
            opt(now.repeated_failure_rate),
            trend(series, |x| x.repeated_failure_rate),
        ),
        (
            "estimate error",
            format!(
                "{} ({} compared)",
                opt(now.estimate_error),
                now.estimates_compared
            ),
            trend(series, |x| x.estimate_error),
        ),
        (
            "learned items",
            format!(
                "{} / {} patterns, {} / {} heuristics active / pruned",
                now.patterns_active,
                now.patterns_pruned,
                now.heuristics_active,
                now.heuristics_pruned
            ),
            trend(series, |x| Some(x.patterns_active as f64)),
        ),
    ];
    for (name, value, dir) in rows {
        println!("  {name:<18} {value:<40} {dir}");
    }
    if let Some(r) = runs.first() {
        println!(
            "consolidate last run {}: {} merged, {} pruned, {} step outputs compacted",
            r.finished_at.to_rfc3339(),
            r.merged_patterns + r.merged_heuristics,
            r.pruned_patterns + r.pruned_heuristics,
            r.compacted_steps
        );
    }
}

pub async fn health(stack: &Stack, s: &Settings) -> Result<bool> {
    let report = stack.health(HEALTH_CHECK_DEADLINE).await;
    if s.json {
        output::json(&report)?;
    } else {
        for c in &report.components {
            println!(
                "{:<9} {:<9} {}",
                c.component,
                c.status.word(),
                line(&c.detail)
            );
        }
    }
    Ok(report.healthy)
}

pub async fn sync(cmd: SyncCmd, stack: &Stack, s: &Settings) -> Result<()> {
    let replayed = match cmd {
        SyncCmd::Status => None,
        SyncCmd::Now => Some(stack.tiered().sync_now().await?),
    };
    let st = stack.tiered().status();
    let journal = stack.journal();
    let others = journal.other_files();
    let damaged = journal.damaged();
    if s.json {
        return output::json(&json!({
            "status": st,
            "replayed": replayed,
            "other_journals": others,
            "damaged_journals": damaged,
        }));
    }
    if let Some(n) = replayed {
        println!("replayed    {n} journaled writes");
    }
    println!("breaker     {:?}", st.breaker);
    println!("outbox      {} pending", st.outbox_len);
    println!(
        "last sync   {}",
        st.last_successful_sync
            .map_or_else(|| "never (this process)".to_owned(), |t| t.to_rfc3339())
    );
    println!(
        "last error  {}",
        line(st.last_error.as_deref().unwrap_or("none"))
    );
    if !others.is_empty() {
        println!(
            "journals    {} of other processes (adopted and replayed once their process stops)",
            others.len()
        );
    }
    for d in damaged {
        println!(
            "damaged     {}: {} entries recovered, {} unreadable ({})",
            display_safe::path(&d.file),
            d.recovered,
            d.unreadable,
            line(&d.error)
        );
    }
    Ok(())
}
