//! `memory export FILE` and `memory import FILE`: full episodes as JSON lines.
//!
//! Export writes one [`Episode`] per line (task, context, every step, outcome, reward and
//! reflection), oldest first. Import replays each line through the normal API
//! (`start_episode`, `log_step`, `complete_episode`), so every limit, quota and redaction
//! applies and the memory learns from the episodes as if they had just happened; the
//! imported episodes get new ids and times. The whole file is parsed and checked against the
//! limits before anything is written, so a bad line stores nothing.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use memory_core::{
    Episode, EpisodeId, EpisodeQuery, Error, Namespace, NewEpisode, SelfLearningMemory,
};
use memory_stack::Stack;
use serde_json::json;

use crate::display_safe;
use crate::output;
use crate::settings::Settings;

/// Episodes read per page while exporting.
const PAGE: u32 = 200;
/// Longest line accepted on import (an episode at the default limits is far smaller).
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

pub async fn export(file: &Path, stack: &Stack, s: &Settings) -> Result<()> {
    let m = stack.memory();
    let ns = &s.namespace;
    // 0600: the export holds everything the namespace stores.
    let out = memory_stack::private_fs::create_new(file).with_context(|| {
        format!(
            "cannot create {} (it must not exist yet; export never overwrites)",
            file.display()
        )
    })?;
    let mut out = BufWriter::new(out);
    // Collect the ids first (pages of summaries), then write oldest first. A damaged
    // database fails the listing: the ids are then read row range by row range, skipping
    // what cannot be read.
    let mut skipped: Vec<String> = Vec::new();
    let ids = match list_ids(m, ns).await {
        Ok(ids) => ids,
        Err(e) if !e.is_transient() => {
            tracing::warn!(error = %e, "listing failed; reading the episodes table row by row");
            let salvaged = stack.durable().salvage_episode_ids(ns).await?;
            if salvaged.unreadable_rows > 0 {
                skipped.push(format!(
                    "{} unreadable rows of the episodes table ({})",
                    salvaged.unreadable_rows,
                    salvaged.problems.join("; ")
                ));
            }
            salvaged.ids
        }
        Err(e) => return Err(e.into()),
    };
    let bar = crate::progress::bar(ids.len() as u64, "exporting", s);
    let mut written = 0u64;
    let mut skipped_episodes = 0u64;
    for id in ids {
        if crate::signals::stop_requested() {
            break;
        }
        let episode = match m.get_episode(ns, id).await {
            Ok(e) => e,
            Err(Error::NotFound { .. }) => continue, // removed meanwhile
            Err(e) if !e.is_transient() => {
                skipped_episodes += 1;
                if skipped.len() < 20 {
                    skipped.push(format!("episode {id}: {e}"));
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::to_writer(&mut out, &episode)?;
        out.write_all(b"\n")?;
        written += 1;
        bar.inc(1);
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    bar.finish_and_clear();
    let stopped = crate::signals::stop_requested();
    if s.json {
        return output::json(&json!({
            "namespace": ns,
            "file": file,
            "episodes": written,
            "skipped_episodes": skipped_episodes,
            "skipped": skipped,
            "stopped_by_signal": stopped,
        }));
    }
    println!(
        "exported {written} episodes of {ns} to {}",
        display_safe::path(file)
    );
    if !skipped.is_empty() {
        println!(
            "skipped what could not be read ({skipped_episodes} episodes); run `memory health` to check the database:"
        );
        for line in &skipped {
            println!("  {}", display_safe::line(line));
        }
    }
    if stopped {
        println!("stopped by a signal: the file holds the episodes written before it");
    }
    Ok(())
}

/// The namespace's episode ids, oldest first, through the ordinary listing.
async fn list_ids(m: &SelfLearningMemory, ns: &Namespace) -> memory_core::Result<Vec<EpisodeId>> {
    let mut ids = Vec::new();
    let mut offset = 0u32;
    loop {
        let page = m
            .list_episodes(
                ns,
                &EpisodeQuery {
                    limit: PAGE,
                    offset,
                    ..EpisodeQuery::default()
                },
            )
            .await?;
        let n = page.len() as u32;
        ids.extend(page.into_iter().map(|e| e.id));
        if n < PAGE {
            break;
        }
        offset += n;
    }
    ids.sort_unstable(); // UUID v7: time order
    ids.dedup();
    Ok(ids)
}

/// One parsed line of an import file.
struct Line {
    number: usize,
    episode: Episode,
}

fn read_all(file: &Path, m: &SelfLearningMemory) -> Result<Vec<Line>> {
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let limits = &m.config().limits;
    let mut lines = Vec::new();
    for (i, line) in BufReader::new(input).lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("{}:{number}: unreadable", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::LimitExceeded {
                field: "import line",
                limit: MAX_LINE_BYTES as u64,
                actual: line.len() as u64,
            })
            .with_context(|| format!("{}:{number}: nothing was imported", file.display()));
        }
        let episode: Episode = serde_json::from_str(&line).map_err(|e| Error::InvalidInput {
            field: format!("{}:{number}", file.display()),
            reason: format!("not an exported episode ({e}); nothing was imported"),
        })?;
        let check = limits
            .check_new_episode(&new_episode(&episode))
            .and_then(|()| {
                episode
                    .steps
                    .iter()
                    .try_for_each(|st| limits.check_step(&st.input))
            })
            .and_then(|()| {
                episode
                    .outcome
                    .as_ref()
                    .map_or(Ok(()), |o| limits.check_outcome(o))
            });
        if let Err(e) = check {
            return Err(anyhow::Error::new(e).context(format!(
                "{}:{number}: over a limit; nothing was imported",
                file.display()
            )));
        }
        lines.push(Line { number, episode });
    }
    Ok(lines)
}

fn new_episode(e: &Episode) -> NewEpisode {
    NewEpisode {
        task_description: e.task_description.clone(),
        task_type: e.task_type,
        context: e.context.clone(),
    }
}

/// Runs `call` again while the namespace's rate limiter says to wait: an import is one
/// client sending many writes, so it paces itself instead of failing.
async fn paced<T, F, Fut>(mut call: F) -> memory_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = memory_core::Result<T>>,
{
    loop {
        match call().await {
            Err(Error::RateLimited { retry_after }) => {
                tokio::time::sleep(retry_after.max(Duration::from_millis(1))).await;
            }
            other => return other,
        }
    }
}

async fn import_one(m: &SelfLearningMemory, s: &Settings, e: &Episode) -> Result<bool> {
    let ns = &s.namespace;
    let id = paced(|| m.start_episode(ns, new_episode(e))).await?;
    for step in &e.steps {
        paced(|| m.log_step(ns, id, step.input.clone())).await?;
    }
    if let Some(outcome) = &e.outcome {
        paced(|| m.complete_episode(ns, id, outcome.clone())).await?;
        Ok(true)
    } else {
        m.flush().await?;
        Ok(false)
    }
}

pub async fn import(file: &Path, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let lines = read_all(file, m)?;
    let bar = crate::progress::bar(lines.len() as u64, "importing", s);
    let (mut completed, mut in_progress, mut steps) = (0u64, 0u64, 0u64);
    let mut stopped_at = None;
    for line in &lines {
        if crate::signals::stop_requested() {
            stopped_at = Some(line.number);
            break;
        }
        let done = import_one(m, s, &line.episode).await.with_context(|| {
            format!(
                "{}:{}: import stopped here; the {} episodes before this line were imported",
                file.display(),
                line.number,
                completed + in_progress
            )
        })?;
        if done {
            completed += 1;
        } else {
            in_progress += 1;
        }
        steps += line.episode.steps.len() as u64;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if s.json {
        return output::json(&json!({
            "namespace": s.namespace,
            "file": file,
            "episodes": completed + in_progress,
            "completed": completed,
            "in_progress": in_progress,
            "steps": steps,
            "stopped_by_signal_at_line": stopped_at,
        }));
    }
    println!(
        "imported {} episodes into {} ({completed} completed and learned from, {in_progress} in progress), {steps} steps",
        completed + in_progress,
        s.namespace
    );
    if let Some(n) = stopped_at {
        println!(
            "stopped by a signal before line {n}: the episodes before it are imported, the rest is not"
        );
    }
    Ok(())
}
