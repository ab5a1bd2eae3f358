//! `memory consolidate`.

use anyhow::Result;
use memory_core::SelfLearningMemory;

use crate::output::{self, clip, short_id};
use crate::settings::Settings;

pub async fn run(m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let spinner = crate::progress::spinner(&format!("consolidating {}", s.namespace), s);
    let report = m.consolidate(&s.namespace).await;
    spinner.finish_and_clear();
    let report = report?;
    if s.json {
        return output::json(&report);
    }
    let r = &report.run;
    let ms = (r.finished_at - r.started_at).num_milliseconds();
    outln!("namespace    {}", s.namespace);
    outln!("run          {} ({ms} ms)", r.id);
    let (patterns, heuristics) = (r.merged_patterns, r.merged_heuristics);
    outln!("merged       {patterns} patterns, {heuristics} heuristics");
    let general = r.generalized_heuristics;
    outln!("generalized  {general} rules made or re-summed from contexts that agree");
    let (patterns, heuristics) = (r.pruned_patterns, r.pruned_heuristics);
    outln!(
        "pruned       {patterns} patterns, {heuristics} heuristics (tombstoned; restorable until compacted)"
    );
    let compacted = r.compacted_merged;
    outln!("compacted    {compacted} rows of merged patterns holding no evidence");
    let pruned = r.compacted_pruned;
    outln!("             {pruned} rows of patterns pruned long ago and not seen since");
    let decayed = r.decayed;
    outln!("decayed      {decayed} items at least one half-life old");
    let (revived, forwarded, recomputed) = (r.revived, r.forwarded, r.effectiveness_updated);
    outln!(
        "other        {revived} revived, {forwarded} forwarded, {recomputed} effectiveness recomputed"
    );
    let (steps, episodes, bytes) = (r.compacted_steps, r.compacted_episodes, r.compacted_bytes);
    outln!("retention    {steps} step outputs of {episodes} episodes compacted ({bytes} bytes)");
    if r.left_to_next_run > 0 {
        let left = r.left_to_next_run;
        outln!(
            "left         {left} items another writer changed during the run, for the next run (counted above)"
        );
    }
    if !report.changes.is_empty() {
        outln!();
        outln!("{:<10} {:<13} {:<13} detail", "kind", "id", "action");
        for c in &report.changes {
            outln!(
                "{:<10} {:<13} {:<13} {}",
                c.kind,
                short_id(&c.id),
                c.action,
                clip(&c.detail, 90)
            );
        }
    }
    Ok(())
}
