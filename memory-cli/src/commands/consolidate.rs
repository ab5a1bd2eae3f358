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
    println!("namespace    {}", s.namespace);
    println!(
        "run          {} ({} ms)",
        r.id,
        (r.finished_at - r.started_at).num_milliseconds()
    );
    println!(
        "merged       {} patterns, {} heuristics",
        r.merged_patterns, r.merged_heuristics
    );
    println!(
        "pruned       {} patterns, {} heuristics (tombstoned, restorable)",
        r.pruned_patterns, r.pruned_heuristics
    );
    println!(
        "decayed      {} items at least one half-life old",
        r.decayed
    );
    println!(
        "other        {} revived, {} forwarded, {} effectiveness recomputed",
        r.revived, r.forwarded, r.effectiveness_updated
    );
    println!(
        "retention    {} step outputs of {} episodes compacted ({} bytes)",
        r.compacted_steps, r.compacted_episodes, r.compacted_bytes
    );
    if !report.changes.is_empty() {
        println!();
        println!("{:<10} {:<13} {:<13} detail", "kind", "id", "action");
        for c in &report.changes {
            println!(
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
