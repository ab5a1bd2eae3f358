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
    let success_rate = st.successes as f64 / st.completed.max(1) as f64;
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
    outln!("namespace   {}", s.namespace);
    let (episodes, completed, open) = (st.episodes, st.completed, st.episodes - st.completed);
    outln!("episodes    {episodes} ({completed} completed, {open} in progress)");
    outln!("success     {} of completed", pct(success_rate));
    outln!("steps       {}", st.steps);
    let (active, all) = (st.active_patterns, st.patterns);
    outln!("patterns    {active} active of {all}");
    let (active, all) = (st.active_heuristics, st.heuristics);
    outln!("heuristics  {active} active of {all}");
    outln!("lessons     {}", st.lessons);
    outln!("feedback    {} events", st.feedback);
    match sync.cache {
        Some(c) => outln!(
            "cache       {} entries, {} bytes; this process: hit rate {} ({} memory + {} disk hits, {} misses)",
            c.entries,
            c.bytes,
            pct(c.hit_rate()),
            c.memory_hits,
            c.disk_hits,
            c.misses
        ),
        None => outln!("cache       off"),
    }
    outln!("outbox      {} pending", sync.outbox_len);
    print_learning(&series, &runs);
    Ok(())
}

/// One learning metric of a snapshot.
type Metric = fn(&MetricsSnapshot) -> Option<f64>;

/// The latest learning-metrics snapshot and each metric's direction since the oldest shown.
fn print_learning(series: &[MetricsSnapshot], runs: &[memory_core::ConsolidationRun]) {
    let Some(now) = series.first() else {
        outln!("learning    no snapshot yet (run `memory consolidate`)");
        return;
    };
    let (n, oldest) = (series.len(), series.last().unwrap_or(now));
    let (taken, since) = (now.taken_at.to_rfc3339(), oldest.taken_at.to_rfc3339());
    outln!("learning    snapshot {taken} ({n} snapshots; trend since {since})");
    let row = |name: &str, value: String, metric: Metric| {
        outln!("  {name:<18} {value:<40} {}", trend(series, metric));
    };
    let opt = |v: Option<f64>, show: fn(f64) -> String| v.map_or_else(|| "n/a".to_owned(), show);
    let rate = |name: &str, metric: Metric| row(name, opt(metric(now), pct), metric);
    rate("success rate", |x| x.success_rate);
    let reward = opt(now.mean_reward, |r| format!("{r:.2}"));
    row("mean reward", reward, |x| x.mean_reward);
    rate("pattern reuse", |x| x.pattern_reuse_rate);
    rate("repeated failures", |x| x.repeated_failure_rate);
    let (error, compared) = (opt(now.estimate_error, pct), now.estimates_compared);
    let estimate = format!("{error} ({compared} compared)");
    row("estimate error", estimate, |x| x.estimate_error);
    let (pa, pp) = (now.patterns_active, now.patterns_pruned);
    let (ha, hp) = (now.heuristics_active, now.heuristics_pruned);
    let learned = format!("{pa} / {pp} patterns, {ha} / {hp} heuristics active / pruned");
    row("learned items", learned, |x| Some(x.patterns_active as f64));
    if let Some(r) = runs.first() {
        outln!(
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
            let (name, status) = (c.component, c.status.word());
            outln!("{name:<9} {status:<9} {}", line(&c.detail));
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
    let refused = memory_core::Outbox::refused(journal.as_ref()).await?;
    if s.json {
        return output::json(&json!({
            "status": st,
            "replayed": replayed,
            "other_journals": others,
            "damaged_journals": damaged,
            "refused_over_quota": refused,
        }));
    }
    if let Some(n) = replayed {
        outln!("replayed    {n} journaled writes");
    }
    outln!("breaker     {:?}", st.breaker);
    outln!("outbox      {} pending", st.outbox_len);
    outln!(
        "last sync   {}",
        st.last_successful_sync
            .map_or_else(|| "never (this process)".to_owned(), |t| t.to_rfc3339())
    );
    let error = st.last_error.as_deref().unwrap_or("none");
    outln!("last error  {}", line(error));
    if !others.is_empty() {
        outln!(
            "journals    {} of other processes (adopted and replayed once their process stops)",
            others.len()
        );
    }
    if let Some(last) = refused.last() {
        let path = journal.dir().join(memory_stack::REFUSED_FILE);
        outln!(
            "refused     {} journaled writes would have crossed a quota (listed in {}); last: {} in namespace {}, {} quota {}",
            refused.len(),
            display_safe::path(&path),
            last.write,
            line(last.namespace.as_str()),
            last.resource,
            last.limit
        );
    }
    for d in damaged {
        outln!(
            "damaged     {}: {} entries recovered, {} unreadable ({})",
            display_safe::path(&d.file),
            d.recovered,
            d.unreadable,
            line(&d.error)
        );
    }
    Ok(())
}
