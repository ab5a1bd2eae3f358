//! A completion's optimistic write over Hrana: what it reads before its merge (the
//! [`Snapshot`]), the guard that checks the read still holds, and the tries
//! ([`try_complete`]); see the parent module for the protocol.

use std::collections::{BTreeMap, BTreeSet};

use libsql::Value;
use memory_core::{
    EpisodeCompletion, Error, ExecutionStep, ExistingLearned, FailureLesson, Heuristic,
    LearnedChanges, ObjectKind, Pattern,
};

use crate::codec::{Cols, from_json, text};
use crate::compressed_json::JsonFormat;
use crate::episode_rows::{CLOSE_ESTIMATE, close_estimate_values, complete_outcome};
use crate::error::{DbResult, decode};
use crate::hrana::{BatchBuilder, HranaClient, Outcome, Statement};
use crate::learned::item_statements;
use crate::learned_bodies::LearnedBodies;
use crate::sql::placeholders;
use crate::step_pages::{NewSteps, READ_KEYS, STORED_COUNT, Stored};
use crate::text_index::{PendingRows, WORK_PART};

use super::{
    POSITION, Written, guard_of, guarded_batch, ns_and, restamp, step_statements, text_statements,
};

/// What a completion read before its merge, and checks again before it writes.
struct Snapshot {
    /// `None`: no such episode; `Some(true)`: in progress.
    in_progress: Option<bool>,
    /// What the episode's pages hold.
    stored: Stored,
    /// Every learned item read by id: its table, id and stored body (`None`: absent).
    bodies: Vec<(&'static str, String, Option<String>)>,
    /// Live heuristics of the update's condition keys (ids).
    keyed: BTreeSet<String>,
    existing: ExistingLearned,
}

/// The ids the update names, deduplicated and ordered.
struct Names {
    patterns: Vec<String>,
    keys: Vec<String>,
    heuristics: Vec<String>,
    lessons: Vec<String>,
}

impl Names {
    fn of(c: &EpisodeCompletion) -> Self {
        let set = |ids: Vec<String>| -> Vec<String> {
            ids.into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let u = &c.learning;
        Names {
            patterns: set(u.pattern_ids().into_iter().map(|p| p.0).collect()),
            keys: set(u.condition_keys()),
            heuristics: set(u.heuristic_ids().into_iter().map(|h| h.0).collect()),
            lessons: set(u.lesson_ids().into_iter().map(|l| l.0).collect()),
        }
    }
}

impl Names {
    /// The ids by table, as [`LearnedBodies`] keeps them.
    fn by_table(&self) -> [(&'static str, &[String]); 3] {
        [
            ("patterns", &self.patterns),
            ("heuristics", &self.heuristics),
            ("lessons", &self.lessons),
        ]
    }
}

/// `SELECT id, body FROM table WHERE ns = ?1 AND id IN (...)`, or `None` without ids.
fn by_ids(table: &str, ns: &str, ids: &[String]) -> Option<Statement> {
    if ids.is_empty() {
        return None;
    }
    let sql = format!(
        "SELECT id, body FROM {table} WHERE ns = ?1 AND id IN ({})",
        placeholders(2, ids.len())
    );
    Some(Statement::query(sql, ns_and(ns, ids)))
}

/// The live heuristics of `keys`, as the local path loads them.
fn of_keys(what: &str, ns: &str, keys: &[String]) -> Statement {
    let sql = format!(
        "SELECT {what} FROM heuristics WHERE ns = ?1 AND condition_key IN ({}) \
         AND status <> 'pruned'",
        placeholders(2, keys.len())
    );
    Statement::query(sql, ns_and(ns, keys))
}

/// The `(id, body)` rows of a step.
fn id_bodies(outcome: &Outcome, step: Option<u32>) -> DbResult<Vec<(String, String)>> {
    let Some(step) = step else {
        return Ok(Vec::new());
    };
    outcome
        .rows(step, "learned item")?
        .iter()
        .map(|row| {
            let c = Cols::values(row, "learned item");
            Ok((c.text(0)?, c.text(1)?))
        })
        .collect()
}

/// The steps of a batch that read what a completion's merge starts from.
struct SnapshotReads {
    state: u32,
    steps: u32,
    patterns: Option<u32>,
    keyed: Option<u32>,
    heuristics: Option<u32>,
    lessons: Option<u32>,
}

/// Adds the reads of what the merge starts from (the episode's state, its stored step keys,
/// the learned items the update names) after step `after`; the reads' steps and the last.
fn add_snapshot_reads(
    batch: &mut BatchBuilder,
    after: u32,
    ns: &str,
    id: &str,
    names: &Names,
) -> (SnapshotReads, u32) {
    let key = || vec![text(ns), text(id)];
    let state = batch.after(
        after,
        Statement::query(
            "SELECT outcome_kind IS NULL FROM episodes WHERE ns = ?1 AND id = ?2",
            key(),
        ),
    );
    let steps = batch.after(state, Statement::query(READ_KEYS, key()));
    let mut last = steps;
    let mut add = |batch: &mut BatchBuilder, stmt: Option<Statement>| {
        stmt.map(|s| {
            last = batch.after(last, s);
            last
        })
    };
    let patterns = add(batch, by_ids("patterns", ns, &names.patterns));
    let keyed = (!names.keys.is_empty())
        .then(|| of_keys("id, body, condition_key", ns, &names.keys))
        .and_then(|s| add(batch, Some(s)));
    let heuristics = add(batch, by_ids("heuristics", ns, &names.heuristics));
    let lessons = add(batch, by_ids("lessons", ns, &names.lessons));
    let reads = SnapshotReads {
        state,
        steps,
        patterns,
        keyed,
        heuristics,
        lessons,
    };
    (reads, last)
}

/// A read-only request: the state the merge starts from, read in one transaction.
async fn read_snapshot(
    client: &HranaClient,
    ns: &str,
    id: &str,
    names: &Names,
    remembered: &LearnedBodies,
) -> DbResult<Snapshot> {
    let mut batch = BatchBuilder::default();
    let begin = batch.step(Statement::exec("BEGIN", Vec::new()), None);
    let (reads, _) = add_snapshot_reads(&mut batch, begin, ns, id, names);
    batch.step(Statement::exec("COMMIT", Vec::new()), None);
    let outcome = client.batch(batch).await?;
    snapshot_read(&outcome, &reads, ns, names, remembered)
}

/// The snapshot `reads` returned in `outcome`, remembered in `remembered`.
fn snapshot_read(
    outcome: &Outcome,
    reads: &SnapshotReads,
    ns: &str,
    names: &Names,
    remembered: &LearnedBodies,
) -> DbResult<Snapshot> {
    let in_progress = match outcome.rows(reads.state, "episode")?.first() {
        None => None,
        Some(row) => Some(Cols::values(row, "episode").i64(0)? == 1),
    };
    let pages = outcome
        .rows(reads.steps, "step page")?
        .iter()
        .map(|row| Stored::row(&Cols::values(row, "step page")))
        .collect::<DbResult<Vec<_>>>()?;
    let stored = Stored::of(&pages)?;
    let keyed_rows = match reads.keyed {
        Some(step) => outcome.rows(step, "heuristic")?,
        None => Vec::new(),
    };
    let keyed_rows = keyed_rows
        .iter()
        .map(|row| {
            let c = Cols::values(row, "heuristic");
            Ok((c.text(0)?, c.text(1)?, c.text(2)?))
        })
        .collect::<DbResult<Vec<(String, String, String)>>>()?;
    let items = ReadItems {
        patterns: id_bodies(outcome, reads.patterns)?,
        lessons: id_bodies(outcome, reads.lessons)?,
        keyed: keyed_rows
            .iter()
            .map(|(i, b, _)| (i.clone(), b.clone()))
            .collect(),
        heuristics: id_bodies(outcome, reads.heuristics)?,
    };
    let snap = assemble(names, items, in_progress, stored)?;
    remembered.read(ns, &snap.bodies, &names.keys, &keyed_rows);
    Ok(snap)
}

/// The learned items a completion's merge starts from: `(id, body)` rows.
struct ReadItems {
    patterns: Vec<(String, String)>,
    lessons: Vec<(String, String)>,
    /// The live heuristics of the update's condition keys.
    keyed: Vec<(String, String)>,
    /// The heuristics the update names, by id (whatever their status).
    heuristics: Vec<(String, String)>,
}

/// The snapshot of `items` (read, or known from earlier reads and writes) and the episode's
/// stored steps.
fn assemble(
    names: &Names,
    items: ReadItems,
    in_progress: Option<bool>,
    stored: Stored,
) -> DbResult<Snapshot> {
    let mut bodies = Vec::new();
    let mut record = |table: &'static str, wanted: &[String], found: &[(String, String)]| {
        let found: BTreeMap<&str, &str> = found
            .iter()
            .map(|(i, b)| (i.as_str(), b.as_str()))
            .collect();
        for id in wanted {
            let body = found.get(id.as_str()).map(|b| (*b).to_owned());
            bodies.push((table, id.clone(), body));
        }
    };
    record("patterns", &names.patterns, &items.patterns);
    record("lessons", &names.lessons, &items.lessons);
    // Heuristics: the live ones of the keys, then the observed ones not among them, by id
    // (as `learned::load_heuristics`).
    let mut heuristic_rows: BTreeMap<String, String> = items.keyed.iter().cloned().collect();
    for (hid, body) in items.heuristics {
        heuristic_rows.entry(hid).or_insert(body);
    }
    let mut heuristic_ids: BTreeSet<String> = names.heuristics.iter().cloned().collect();
    heuristic_ids.extend(heuristic_rows.keys().cloned());
    let heuristic_ids: Vec<String> = heuristic_ids.into_iter().collect();
    let all: Vec<(String, String)> = heuristic_rows
        .iter()
        .map(|(i, b)| (i.clone(), b.clone()))
        .collect();
    record("heuristics", &heuristic_ids, &all);

    let existing = ExistingLearned {
        patterns: decode_all::<Pattern>("pattern", &items.patterns)?,
        heuristics: decode_all::<Heuristic>("heuristic", &all)?,
        lessons: decode_all::<FailureLesson>("lesson", &items.lessons)?,
    };
    Ok(Snapshot {
        in_progress,
        stored,
        bodies,
        keyed: items.keyed.into_iter().map(|(i, _)| i).collect(),
        existing,
    })
}

/// The snapshot a completion assumes without a read: the episode in progress with `stored`
/// steps, none of the completion's own among them; every learned item as this handle last
/// read or wrote it, an item it never saw absent, a condition key it never read without live
/// heuristics. The guard checks every assumption; the write's own reads correct a wrong one.
fn assumed_snapshot(
    ns: &str,
    names: &Names,
    remembered: &LearnedBodies,
    stored: usize,
) -> DbResult<Snapshot> {
    let known = remembered.assumed(ns, &names.by_table(), &names.keys);
    let rows = |table: &str| -> Vec<(String, String)> {
        known
            .bodies
            .iter()
            .filter(|(t, _, _)| *t == table)
            .filter_map(|(_, i, b)| b.clone().map(|b| (i.clone(), b)))
            .collect()
    };
    let items = ReadItems {
        patterns: rows("patterns"),
        lessons: rows("lessons"),
        heuristics: rows("heuristics"),
        keyed: known.keyed,
    };
    let stored = Stored {
        count: i64::try_from(stored).unwrap_or(i64::MAX),
        ..Stored::default()
    };
    assemble(names, items, Some(true), stored)
}

/// Decodes bodies in id order (the order the local path loads them in).
fn decode_all<T: serde::de::DeserializeOwned>(
    what: &'static str,
    rows: &[(String, String)],
) -> DbResult<Vec<T>> {
    let mut sorted: Vec<&(String, String)> = rows.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .iter()
        .map(|(_, body)| from_json(what, body))
        .collect()
}

/// The guard: a statement that fails (with [`STALE`]) unless everything `snap` read is still
/// as read.
fn guard(ns: &str, id: &str, names: &Names, snap: &Snapshot) -> Statement {
    let mut values = vec![text(ns), text(id)];
    let mut bind = |v: Value| {
        values.push(v);
        format!("?{}", values.len())
    };
    let mut conds = vec![
        "(SELECT outcome_kind IS NULL FROM episodes WHERE ns = ?1 AND id = ?2) IS 1".to_owned(),
        format!(
            "{STORED_COUNT} = {}",
            bind(Value::Integer(snap.stored.count))
        ),
    ];
    for (table, item, body) in &snap.bodies {
        let item = bind(text(item));
        let body = bind(body.as_deref().map_or(Value::Null, text));
        conds.push(format!(
            "(SELECT body FROM {table} WHERE ns = ?1 AND id = {item}) IS {body}"
        ));
    }
    if !names.keys.is_empty() {
        // The same set of live heuristics per key: as many, and all of them among those read.
        let keys: Vec<String> = names.keys.iter().map(|k| bind(text(k))).collect();
        let read: Vec<String> = snap.keyed.iter().map(|k| bind(text(k))).collect();
        let live = format!(
            "SELECT COUNT(*) FROM heuristics WHERE ns = ?1 AND condition_key IN ({}) \
             AND status <> 'pruned'",
            keys.join(", ")
        );
        let count = bind(Value::Integer(snap.keyed.len() as i64));
        conds.push(format!("({live}) = {count}"));
        if !read.is_empty() {
            conds.push(format!(
                "({live} AND id IN ({})) = {count}",
                read.join(", ")
            ));
        }
    }
    guard_of(&conds.join(" AND "), values)
}

/// What one optimistic try came to.
pub(crate) enum Tried {
    /// Committed at this change-counter position.
    Done(i64, LearnedChanges),
    /// The episode is completed already: a replay, nothing changed.
    AlreadyCompleted,
    /// Something read changed before the write, or the write lock was not to be had: try
    /// again.
    Stale,
}

/// One try of a completion, usually one request: the guarded write, merged from what this
/// handle knows ([`assumed_snapshot`]), carrying the reads of everything the merge starts
/// from. When the guard refuses (an item changed or appeared since this handle saw it), those
/// reads are the truth as of the refusal, and the write is sent once more, merged from them.
/// Without the episode's step count as the engine knows it (`expected_steps`: a journaled
/// completion), a read comes first. `update` binds `?1..?8` of the outcome's `UPDATE`, as in
/// the local path. Step pages are written in `format`.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn try_complete(
    client: &HranaClient,
    ns: &str,
    id: &str,
    c: &EpisodeCompletion,
    update: &[Value],
    remembered: &LearnedBodies,
    format: JsonFormat,
) -> DbResult<Tried> {
    let names = Names::of(c);
    // Assumed: the episode holds `expected - pending` steps, none of the pending ones (all
    // keyed, so one stored already is caught by the guard's count, never inserted twice).
    let assumed = c
        .expected_steps
        .filter(|_| c.steps.iter().all(|s| s.key != 0))
        .and_then(|e| (e as usize).checked_sub(c.steps.len()));
    let (mut snap, mut from_read) = match assumed {
        Some(stored) => (assumed_snapshot(ns, &names, remembered, stored)?, false),
        None => (
            read_snapshot(client, ns, id, &names, remembered).await?,
            true,
        ),
    };
    for _ in 0..2 {
        if from_read && let Some(done) = settled(c, &snap, &c.steps)? {
            return Ok(done);
        }
        let (written, changes, fresh) =
            write_completion(client, ns, id, c, update, &names, snap, remembered, format).await?;
        match written {
            Written::Committed(Some(position)) => {
                remembered.wrote(ns, &changes)?;
                return Ok(Tried::Done(position, changes));
            }
            Written::Committed(None) => {
                return Err(decode("change counter", "no position returned"));
            }
            // Another machine's transaction held the write lock past the server's wait.
            Written::Busy => return Ok(Tried::Stale),
            Written::Refused => match fresh {
                Some(fresh) => {
                    tracing::debug!("the completion's assumptions were stale; merging again");
                    (snap, from_read) = (fresh, true);
                }
                None => return Ok(Tried::Stale),
            },
        }
    }
    // Refused twice: another writer changed something between the two requests.
    Ok(Tried::Stale)
}

/// What a read snapshot says before any write: the episode missing or completed, or holding
/// other steps than the engine learned from (with `steps` appended); `None` to go ahead.
fn settled(
    c: &EpisodeCompletion,
    snap: &Snapshot,
    steps: &[ExecutionStep],
) -> DbResult<Option<Tried>> {
    match snap.in_progress {
        None => Err(Error::not_found(ObjectKind::Episode, c.episode_id).into()),
        Some(false) => Ok(Some(Tried::AlreadyCompleted)),
        Some(true) => {
            let inserted = NewSteps::of(steps, &snap.stored).count();
            let stored = snap.stored.count + inserted;
            // The learning was computed from other steps than the store holds.
            match c.expected_steps.filter(|&e| i64::from(e) != stored) {
                Some(e) => {
                    let stored = u64::try_from(stored).unwrap_or(0);
                    Err(Error::steps_changed(c.episode_id, u64::from(e), stored).into())
                }
                None => Ok(None),
            }
        }
    }
}

/// The write of a completion merged from `snap`: one request, guarded by what `snap` holds,
/// that first reads what the merge starts from (returned when the guard refused).
#[allow(clippy::too_many_arguments)]
async fn write_completion(
    client: &HranaClient,
    ns: &str,
    id: &str,
    c: &EpisodeCompletion,
    update: &[Value],
    names: &Names,
    mut snap: Snapshot,
    remembered: &LearnedBodies,
    format: JsonFormat,
) -> DbResult<(Written, LearnedChanges, Option<Snapshot>)> {
    let mut text = PendingRows::default();
    let (step_writes, _) = step_statements(ns, id, &c.steps, &snap.stored, POSITION, format)?;
    let changes = c.learning.apply(std::mem::take(&mut snap.existing));
    let mut writes = vec![Statement::exec(complete_outcome(POSITION), update.to_vec())];
    writes.extend(step_writes);
    text.add(&c.indexed_work, ns, id, WORK_PART);
    text.add(&c.reflection.text(), ns, id, "reflection");
    if let Some(actual) = &c.estimate_actual {
        let values = close_estimate_values(ns, id, actual)?;
        writes.push(Statement::exec(CLOSE_ESTIMATE, values));
    }
    let items = item_statements(
        ns,
        0,
        changes.patterns.iter().map(|x| &x.item),
        changes.heuristics.iter().map(|x| &x.item),
        changes.lessons.iter().map(|x| &x.item),
    )?;
    writes.extend(items.into_iter().map(|(sql, v)| Statement::exec(sql, v)));
    let pattern_ids: Vec<String> = changes
        .patterns
        .iter()
        .map(|x| x.item.id.0.clone())
        .collect();
    writes.extend(restamp("patterns", ns, &pattern_ids));
    let heuristic_ids: Vec<String> = changes
        .heuristics
        .iter()
        .map(|x| x.item.id.0.clone())
        .collect();
    writes.extend(restamp("heuristics", ns, &heuristic_ids));
    writes.extend(text_statements(text));
    let guard = guard(ns, id, names, &snap);
    let (written, outcome, reads) = guarded_batch(
        client,
        |batch, begin| add_snapshot_reads(batch, begin, ns, id, names),
        guard,
        true,
        writes,
    )
    .await?;
    let fresh = match written {
        Written::Refused => Some(snapshot_read(&outcome, &reads, ns, names, remembered)?),
        _ => None,
    };
    Ok((written, changes, fresh))
}
