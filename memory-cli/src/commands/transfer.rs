//! `memory export FILE` and `memory import FILE`: full episodes as JSON lines.
//!
//! Export writes one [`Episode`] per line (task, context, every step, outcome, reward and
//! reflection), oldest first. Import replays each line through the normal API
//! (`start_episode`, `log_step`, `complete_episode`), so every limit, quota and redaction
//! applies and the memory learns from the episodes; the imported episodes get new ids and
//! keep their start and completion times (what they teach is dated from then).
//!
//! Import is safe to repeat:
//!
//! - **Validated whole first, streaming.** A first pass reads the file line by line, each line
//!   into a buffer bounded by the line limit (64 MiB; the environment variable
//!   `MEMORY_IMPORT_MAX_LINE_BYTES` overrides it): a longer line is rejected as soon as it
//!   passes the limit, without being read whole. Every line is checked against every limit
//!   the API would apply ([`memory_core::Limits::check_episode`]: task, context, step count,
//!   each step, outcome; and the total size after redaction), and the namespace's quotas
//!   against what the import would add. Invalid input (a line that is not UTF-8, not an
//!   episode, or over a limit) stores nothing and exits 2, naming the line number (and, for a
//!   limit, the field, the limit and the actual value). The second pass imports; a file that
//!   changed after it was validated (size, modification time, or a line's hash) is refused.
//! - **Idempotent and resumable.** Each imported episode carries one extra tag, its import
//!   marker `import:<content>:<origin>`: `<content>` is 16 hex digits of a stable hash
//!   (SHA-256) of the source episode's canonical JSON (task, type, context, step
//!   inputs, outcome; not its id or times), `<origin>` the source episode's id (32 hex digits;
//!   an episode that was itself imported keeps its first origin). Before importing, the
//!   namespace's episodes are listed once; a line whose origin is found there (as a marker's
//!   origin, or as an episode's own id: an export of this same namespace) or, failing that,
//!   whose content hash is found in a marker, is not imported again. A completed copy is skipped
//!   ("already present"); a copy left in progress by an interrupted import (a crash, a
//!   signal) is resumed: the source's steps after the stored count are logged and, if the
//!   source was completed, the copy is completed with its outcome ("resumed"). Re-running an
//!   interrupted import therefore ends with exactly one copy of each episode, learned from
//!   once. Two imports of the same file running at the same time are not coordinated.
//!
//! Because of the marker an imported episode needs room for one more tag: a line that already
//! has `max_tags` tags is refused. Tags of the form `import:<16 hex>:<32 hex>` are reserved.
//!
//! `export --encrypt` seals the file under the configured key, and import reads a sealed file
//! with it (see [`sealed`]): the first pass unseals and authenticates the whole file, so a
//! wrong key, a damaged or a cut-short file imports nothing. A plain export of an encrypted
//! memory is written as asked, with a warning on stderr.

mod lines;
mod plan;
mod records;
mod sealed;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use memory_core::{
    Episode, EpisodeId, Error, Limits, Namespace, NewEpisode, Outcome, Redactor,
    SelfLearningMemory, StepInput, TaskContext, TaskType, quote_value,
};
use memory_stack::Stack;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use self::lines::Next;
use self::plan::{Action, check_quotas, existing, plan};
use self::records::{Marker, Planned, list_ids};
use self::sealed::{ExportSink, ImportFile};
use crate::display_safe;
use crate::output;
use crate::settings::Settings;

/// Longest line accepted on import (an episode at the default limits is far smaller).
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Environment variable that overrides [`MAX_LINE_BYTES`] (bytes).
const MAX_LINE_ENV: &str = "MEMORY_IMPORT_MAX_LINE_BYTES";
/// `memory export FILE [--encrypt]`: the namespace's episodes as JSON lines, sealed under
/// the configured key with `encrypt` (see [`sealed`]).
pub async fn export(file: &Path, encrypt: bool, stack: &Stack, s: &Settings) -> Result<()> {
    let m = stack.memory();
    let ns = &s.namespace;
    // The key is checked before the file is created: a refusal leaves nothing behind.
    let sealer = sealed::export_sealer(encrypt, stack.encryption(), file, s)?;
    let key = sealer.as_ref().map(|k| k.fingerprint().to_owned());
    // 0600: the export holds everything the namespace stores.
    let out = memory_stack::private_fs::create_new(file).with_context(|| {
        format!(
            "cannot create {} (it must not exist yet; export never overwrites)",
            file.display()
        )
    })?;
    // Sealed: the header is written now, and every byte after it is sealed.
    let mut out =
        ExportSink::new(out, sealer).with_context(|| format!("cannot write {}", file.display()))?;
    let mut skipped = Vec::new();
    let ids = export_ids(stack, ns, &mut skipped).await?;
    let bar = crate::progress::bar(ids.len() as u64, "exporting", s);
    let (written, skipped_episodes) =
        write_episodes(m, ns, ids, &mut out, &mut skipped, &bar).await?;
    let sealed = out.is_sealed();
    out.finish()
        .with_context(|| format!("cannot write {}", file.display()))?;
    bar.finish_and_clear();
    let stopped = crate::signals::stop_requested();
    if s.json {
        return output::json(&json!({
            "namespace": ns,
            "file": file,
            "episodes": written,
            "encrypted": sealed,
            "key_fingerprint": key,
            "skipped_episodes": skipped_episodes,
            "skipped": skipped,
            "stopped_by_signal": stopped,
        }));
    }
    let how = key.map_or_else(String::new, |k| format!(" (sealed under key {k})"));
    outln!(
        "exported {written} episodes of {ns} to {}{how}",
        display_safe::path(file)
    );
    if !skipped.is_empty() {
        outln!(
            "skipped what could not be read ({skipped_episodes} episodes); run `memory health` to check the database:"
        );
        for line in &skipped {
            outln!("  {}", display_safe::line(line));
        }
    }
    if stopped {
        outln!("stopped by a signal: the file holds the episodes written before it");
    }
    Ok(())
}

/// The ids to export, oldest first. A damaged database fails the listing: the ids are then
/// read row range by row range, and what cannot be read is noted in `skipped`.
async fn export_ids(
    stack: &Stack,
    ns: &Namespace,
    skipped: &mut Vec<String>,
) -> Result<Vec<EpisodeId>> {
    match list_ids(stack.memory(), ns).await {
        Ok(ids) => Ok(ids),
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
            Ok(salvaged.ids)
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the episodes `ids` as JSON lines into `out` (until a signal asks to stop); returns
/// how many were written and how many could not be read (the first 20 noted in `skipped`).
async fn write_episodes(
    m: &SelfLearningMemory,
    ns: &Namespace,
    ids: Vec<EpisodeId>,
    out: &mut impl Write,
    skipped: &mut Vec<String>,
    bar: &indicatif::ProgressBar,
) -> Result<(u64, u64)> {
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
        serde_json::to_writer(&mut *out, &episode).context("cannot write the export")?;
        out.write_all(b"\n").context("cannot write the export")?;
        written += 1;
        bar.inc(1);
    }
    Ok((written, skipped_episodes))
}

/// The longest import line: [`MAX_LINE_BYTES`] unless [`MAX_LINE_ENV`] sets another.
fn max_line_bytes() -> Result<usize> {
    match std::env::var(MAX_LINE_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::invalid(
                    MAX_LINE_ENV,
                    format!(
                        "expected a positive number of bytes, got {}",
                        quote_value(&v)
                    ),
                )
                .into()
            }),
        _ => Ok(MAX_LINE_BYTES),
    }
}

/// The first 128 bits of a SHA-256: stable across versions and platforms (no random seed).
fn first_128(hasher: Sha256) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&hasher.finalize()[..16]);
    u128::from_be_bytes(first)
}

/// The first 128 bits of the SHA-256 of a line's bytes.
fn line_hash(bytes: &[u8]) -> u128 {
    first_128(Sha256::new_with_prefix(bytes))
}

/// The parts of an episode its content hash covers (not its id, times, reward or reflection).
#[derive(Serialize)]
struct Canonical<'a> {
    task_description: &'a str,
    task_type: TaskType,
    context: &'a TaskContext,
    steps: Vec<&'a StepInput>,
    outcome: Option<&'a Outcome>,
}

/// 16 hex digits of the content hash of `e` (its context without import markers).
fn content_key(e: &Episode) -> Result<String> {
    // Fed through `Write`: the episode is hashed without being serialized into memory first.
    let mut h = Sha256::new();
    serde_json::to_writer(
        &mut h,
        &Canonical {
            task_description: &e.task_description,
            task_type: e.task_type,
            context: &e.context,
            steps: e.steps.iter().map(|s| &s.input).collect(),
            outcome: e.outcome.as_ref(),
        },
    )?;
    Ok(format!("{:016x}", first_128(h) >> 64))
}

/// Parses one line: the source episode with its import markers removed, and the marker the
/// import records for it.
fn parse_line(bytes: &[u8], number: usize, file: &Path) -> Result<(Episode, Marker)> {
    let at = || format!("{}:{number}", file.display());
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::invalid(
            at(),
            format!(
                "not UTF-8 (invalid byte at offset {} of the line); nothing was imported",
                e.valid_up_to()
            ),
        )
    })?;
    let mut episode: Episode = serde_json::from_str(text).map_err(|e| {
        Error::invalid(
            at(),
            format!("not an exported episode ({e}); nothing was imported"),
        )
    })?;
    let origin = episode
        .context
        .tags
        .iter()
        .find_map(|t| Marker::parse(t))
        .map_or_else(|| episode.id.0.simple().to_string(), |m| m.origin);
    episode.context.tags.retain(|t| Marker::parse(t).is_none());
    let key = content_key(&episode)?;
    Ok((episode, Marker { key, origin }))
}

/// Parses one line and checks it against every limit the API applies; returns the episode
/// to replay (its marker tag added) and the marker.
fn prepare(
    bytes: &[u8],
    number: usize,
    file: &Path,
    limits: &Limits,
    redactor: &Redactor,
) -> Result<(Episode, Marker)> {
    let at = || format!("{}:{number}", file.display());
    let (mut episode, marker) = parse_line(bytes, number, file)?;
    let tag = marker.tag();
    if tag.len() > limits.max_tag_bytes {
        return Err(Error::invalid(
            at(),
            format!(
                "import records each episode with a marker tag of {} bytes, and limits.max_tag_bytes is {}; nothing was imported",
                tag.len(),
                limits.max_tag_bytes
            ),
        )
        .into());
    }
    if episode.context.tags.len() >= limits.max_tags {
        return Err(Error::invalid(
            at(),
            format!(
                "the episode has {} tags, the most allowed (limits.max_tags {}); import adds one (its marker), so remove a tag from this line; nothing was imported",
                episode.context.tags.len(),
                limits.max_tags
            ),
        )
        .into());
    }
    episode.context.tags.push(tag.clone());
    let over = |e: Error| {
        anyhow::Error::new(e).context(format!("{}: over a limit; nothing was imported", at()))
    };
    limits.check_episode(&episode).map_err(over)?;
    let stored = as_stored(&episode, redactor);
    if !stored.context.tags.contains(&tag) {
        return Err(Error::invalid(
            at(),
            format!(
                "redaction (redaction.extra_patterns) would change the import marker tag {tag}; nothing was imported"
            ),
        )
        .into());
    }
    limits
        .check_episode_bytes(stored.approx_size())
        .map_err(over)?;
    Ok((episode, marker))
}

/// The episode as the API would store it (redacted and normalized by the same calls
/// `start_episode`, `log_step` and `complete_episode` make), to measure its size.
fn as_stored(e: &Episode, r: &Redactor) -> Episode {
    let mut s = e.clone();
    r.redact_new_episode(&mut s.task_description, &mut s.context);
    s.context.normalize();
    for step in &mut s.steps {
        r.redact_step(&mut step.input);
    }
    if let Some(outcome) = &mut s.outcome {
        r.redact_outcome(outcome);
    }
    s
}

/// What identifies the file's contents between the two passes.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(file: &Path) -> Result<Stamp> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// The error for a file that changed after it was validated.
fn changed(file: &Path, number: Option<usize>, imported: u64) -> anyhow::Error {
    let at = number.map_or_else(
        || file.display().to_string(),
        |n| format!("{}:{n}", file.display()),
    );
    Error::invalid(
        at,
        format!(
            "the file changed after it was validated; {imported} episodes were written before this point. Run the import again on a file that no longer changes: what was imported is skipped"
        ),
    )
    .into()
}

/// First pass: every line read (bounded) and checked; nothing is written. A sealed file is
/// read to its last chunk here, so every chunk is authenticated before anything is imported.
fn validate(
    src: &ImportFile<'_>,
    limits: &Limits,
    redactor: &Redactor,
    max_line: usize,
) -> Result<(Vec<Planned>, Stamp)> {
    let file = src.path;
    let before = stamp(file)?;
    let mut lines = src.lines(max_line)?;
    let mut planned = Vec::new();
    loop {
        let next = lines.next_line().map_err(|e| src.read_error(e))?;
        match next {
            Next::End => break,
            Next::TooLong { number, seen } => {
                return Err(anyhow::Error::new(Error::LimitExceeded {
                    field: "import line",
                    limit: max_line as u64,
                    actual: seen as u64,
                })
                .context(format!(
                    "{}:{number}: the line is longer than {max_line} bytes (reading stopped at byte {seen}); nothing was imported",
                    file.display()
                )));
            }
            Next::Line { number, bytes } => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line_hash = line_hash(bytes);
                let (episode, marker) = prepare(bytes, number, file, limits, redactor)?;
                planned.push(Planned {
                    number,
                    line_hash,
                    marker,
                    steps: episode.steps.len(),
                    completed: episode.outcome.is_some(),
                });
            }
        }
    }
    if stamp(file)? != before {
        return Err(changed(file, None, 0));
    }
    Ok((planned, before))
}

fn new_episode(e: &Episode) -> NewEpisode {
    NewEpisode::new(e.task_description.clone(), e.task_type, e.context.clone())
        .with_started_at(e.started_at)
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

/// Logs `e`'s steps from `from` on into `id`, then completes it (true) or writes the steps
/// (false, the source was in progress). The completion keeps `e`'s time when the stored
/// episode kept its start (always, except for one an earlier version began importing).
async fn replay(
    m: &SelfLearningMemory,
    ns: &Namespace,
    id: EpisodeId,
    e: &Episode,
    from: usize,
    resumed: bool,
) -> memory_core::Result<bool> {
    for step in e.steps.iter().skip(from) {
        paced(|| m.log_step(ns, id, step.input.clone())).await?;
    }
    if let Some(outcome) = &e.outcome {
        let kept_start = !resumed || m.get_episode(ns, id).await?.started_at == e.started_at;
        match e.completed_at.filter(|_| kept_start) {
            Some(at) => paced(|| m.complete_episode_at(ns, id, outcome.clone(), at)).await?,
            None => paced(|| m.complete_episode(ns, id, outcome.clone())).await?,
        };
        Ok(true)
    } else {
        m.flush_episode(ns, id).await?;
        Ok(false)
    }
}

/// What one import run did.
#[derive(Debug, Default)]
struct Counts {
    imported: u64,
    present: u64,
    resumed: u64,
    completed: u64,
    in_progress: u64,
    steps: u64,
}

/// Imports one validated line as `action` says (skipped, a new episode, or the rest of one
/// left in progress), counting it in `c`.
async fn import_line(
    m: &SelfLearningMemory,
    ns: &Namespace,
    file: &Path,
    (number, bytes): (usize, &[u8]),
    action: Action,
    c: &mut Counts,
) -> Result<()> {
    let written = c.imported + c.resumed;
    let stopped_here = || {
        format!(
            "{}:{number}: import stopped here; {written} episodes were written before this line. Run the import again: what was imported is skipped and an episode left in progress is resumed",
            file.display()
        )
    };
    let (resume, from) = match action {
        Action::Present => {
            c.present += 1;
            return Ok(());
        }
        Action::New => (None, 0),
        Action::Resume { id, stored_steps } => (Some(id), stored_steps),
    };
    let (mut episode, marker) = parse_line(bytes, number, file).with_context(stopped_here)?;
    episode.context.tags.push(marker.tag());
    let id = match resume {
        Some(id) => id,
        None => paced(|| m.start_episode(ns, new_episode(&episode)))
            .await
            .with_context(stopped_here)?,
    };
    let done = replay(m, ns, id, &episode, from, resume.is_some())
        .await
        .with_context(stopped_here)?;
    if resume.is_some() {
        c.resumed += 1;
    } else {
        c.imported += 1;
    }
    c.steps += episode.steps.len().saturating_sub(from) as u64;
    if done {
        c.completed += 1;
    } else {
        c.in_progress += 1;
    }
    Ok(())
}

/// Second pass: the same lines again (each checked against its pass-1 plan), imported.
/// Returns what was done and the line a signal stopped the import before.
async fn import_pass(
    src: &ImportFile<'_>,
    m: &SelfLearningMemory,
    ns: &Namespace,
    (planned, actions): (&[Planned], &[Action]),
    max_line: usize,
    bar: &indicatif::ProgressBar,
) -> Result<(Counts, Option<usize>)> {
    let file = src.path;
    let mut c = Counts::default();
    let mut stopped_at = None;
    let mut lines = src.lines(max_line)?;
    let mut next_planned = planned.iter().zip(actions);
    loop {
        let next = lines
            .next_line()
            .with_context(|| format!("cannot read {}", file.display()))?;
        let written = c.imported + c.resumed;
        let (number, bytes) = match next {
            Next::End => break,
            Next::TooLong { number, .. } => return Err(changed(file, Some(number), written)),
            Next::Line { number, bytes } => (number, bytes),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // Each line must be the one validated at its place.
        let Some((_, action)) = next_planned
            .next()
            .filter(|(p, _)| p.number == number && p.line_hash == line_hash(bytes))
        else {
            return Err(changed(file, Some(number), written));
        };
        if crate::signals::stop_requested() {
            stopped_at = Some(number);
            break;
        }
        import_line(m, ns, file, (number, bytes), *action, &mut c).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if stopped_at.is_none() && next_planned.next().is_some() {
        return Err(changed(file, None, c.imported + c.resumed));
    }
    Ok((c, stopped_at))
}

/// Reports what the import did.
fn print_import(
    src: &ImportFile<'_>,
    ns: &Namespace,
    c: &Counts,
    stopped_at: Option<usize>,
    s: &Settings,
) -> Result<()> {
    if s.json {
        return output::json(&json!({
            "namespace": ns,
            "file": src.path,
            "encrypted": src.key().is_some(),
            "key_fingerprint": src.key(),
            "episodes": c.imported + c.resumed,
            "imported": c.imported,
            "already_present": c.present,
            "resumed": c.resumed,
            "completed": c.completed,
            "in_progress": c.in_progress,
            "steps": c.steps,
            "stopped_by_signal_at_line": stopped_at,
        }));
    }
    outln!(
        "imported {} episodes into {ns} and resumed {} left in progress by an interrupted import ({} completed and learned from, {} in progress), {} steps; {} already present (skipped)",
        c.imported,
        c.resumed,
        c.completed,
        c.in_progress,
        c.steps,
        c.present
    );
    if let Some(n) = stopped_at {
        outln!(
            "stopped by a signal before line {n}: the episodes before it are imported; run the import again to continue"
        );
    }
    Ok(())
}

/// `memory import FILE`: a file written by `memory export`, plain or sealed (read with the
/// configured key).
pub async fn import(file: &Path, m: &SelfLearningMemory, s: &Settings) -> Result<()> {
    let ns = &s.namespace;
    let max_line = max_line_bytes()?;
    let limits = &m.config().limits;
    let redactor = Redactor::new(&m.config().redaction)?;
    let src = ImportFile::open(file, s)?;
    // Pass 1: the whole file against every limit (a sealed one unsealed and authenticated to
    // its last chunk); nothing is written.
    let (planned, validated) = validate(&src, limits, &redactor, max_line)?;
    let found = existing(m, ns).await?;
    let actions = plan(&planned, &found);
    check_quotas(m, ns, &planned, &actions).await?;

    // Pass 2: the same lines again (checked against pass 1), imported.
    if stamp(file)? != validated {
        return Err(changed(file, None, 0));
    }
    let bar = crate::progress::bar(planned.len() as u64, "importing", s);
    let (c, stopped_at) = import_pass(&src, m, ns, (&planned, &actions), max_line, &bar).await?;
    print_import(&src, ns, &c, stopped_at, s)
}
