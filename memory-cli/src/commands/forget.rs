//! `memory episode forget` and `memory episode forgotten`.

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use memory_core::{EpisodeFilter, EpisodeId, ErasureReport, Namespace, SelfLearningMemory};
use serde_json::json;

use crate::cli::{ForgetArgs, NamespaceCmd};
use crate::display_safe::line;
use crate::output;
use crate::progress;
use crate::settings::Settings;

/// A time given as a date (midnight UTC) or in RFC 3339.
fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) => Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()),
        Err(_) => bail!(
            "--before {}: expected a date (2026-01-31) or an RFC 3339 time (2026-01-31T12:00:00Z)",
            line(text)
        ),
    }
}

pub async fn forget(a: ForgetArgs, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let report = if let Some(before) = &a.before {
        if !a.yes {
            bail!(
                "forgetting every episode started before {} cannot be undone; add --yes to go ahead",
                line(before)
            );
        }
        let filter = EpisodeFilter {
            started_before: Some(parse_time(before)?),
            domain: a.domain.clone(),
            task_type: a.task_type.as_deref().map(str::parse).transpose()?,
            tag: a.tag.clone(),
            ..EpisodeFilter::default()
        };
        let bar = progress::spinner("forgetting", s);
        let report = m
            .forget_matching(&s.namespace, &filter, &a.reason, |n| {
                bar.set_message(format!("forgetting: {n} so far"));
            })
            .await;
        bar.finish_and_clear();
        report?
    } else {
        let ids = (a.ids.iter())
            .map(|id| id.parse::<EpisodeId>())
            .collect::<Result<Vec<EpisodeId>, _>>()?;
        m.forget_episodes(&s.namespace, &ids, &a.reason).await?
    };
    if s.json {
        return output::json(&json!({ "namespace": s.namespace, "report": report }));
    }
    print_report(&report, s);
    Ok(())
}

fn print_report(r: &ErasureReport, s: &Settings) {
    if r.journaled {
        outln!(
            "the store is unreachable: the erasure of {} episode(s) is journaled and runs once it answers",
            r.forgotten.len()
        );
        return;
    }
    outln!(
        "forgot {} episode(s) in namespace {}",
        r.forgotten.len(),
        s.namespace
    );
    for id in &r.missing {
        outln!("  not found: {id}");
    }
    let rows = &r.rows;
    outln!(
        "  removed: {} steps, {} text rows, {} embeddings, {} feedback events, {} estimates",
        rows.steps,
        rows.text_rows,
        rows.embeddings,
        rows.feedback_events,
        rows.estimates
    );
    let (p, h, l) = r.learned_changed;
    let gone = &r.learned_removed;
    outln!(
        "  learned: {p} patterns, {h} heuristics, {l} lessons lost evidence; removed {} patterns, {} heuristics, {} lessons",
        gone.patterns.len(),
        gone.heuristics.len(),
        gone.lessons.len()
    );
    match r.files_scrubbed {
        Some(true) => outln!("  freed bytes overwritten in the data files"),
        Some(false) => {
            outln!(
                "  the write-ahead log was busy: its old frames are overwritten by later writes"
            );
        }
        None => {}
    }
}

pub async fn forgotten(limit: u32, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let records = m.forgotten_episodes(&s.namespace, limit).await?;
    if s.json {
        return output::json(&json!({ "namespace": s.namespace, "forgotten": records }));
    }
    if records.is_empty() {
        outln!("no episodes forgotten in namespace {}", s.namespace);
    }
    for r in records {
        let at = r.at.format("%Y-%m-%d %H:%M:%S");
        outln!("{}  {at}  {}", r.episode_id, line(&r.reason));
    }
    Ok(())
}

pub async fn namespace(cmd: NamespaceCmd, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let NamespaceCmd::Purge {
        namespace,
        reason,
        yes,
    } = cmd;
    let ns = Namespace::new(&namespace)?;
    if !yes {
        bail!(
            "purging namespace {ns} forgets every episode and learned item in it and cannot be undone; add --yes to go ahead"
        );
    }
    let bar = progress::spinner("purging", s);
    let purged = m
        .purge_namespace(&ns, &reason, |n| {
            bar.set_message(format!("purging: {n} episodes forgotten"));
        })
        .await;
    bar.finish_and_clear();
    let (report, rows) = purged?;
    if s.json {
        return output::json(&json!({ "namespace": ns, "report": report, "rows": rows }));
    }
    outln!(
        "purged namespace {ns}: {} episode(s) forgotten",
        report.forgotten.len()
    );
    for (kind, n) in rows.iter().filter(|(_, n)| **n > 0) {
        outln!("  removed {n} {kind}");
    }
    Ok(())
}
