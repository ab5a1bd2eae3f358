//! Remote mode's episode reads and writes, each sent as whole Hrana batches
//! ([`crate::hrana`]) instead of a round trip per statement.
//!
//! - **Reading an episode**: the episode row and its steps in one request (one snapshot).
//! - **Creating an episode** and **appending steps**: one transaction in one request, whose
//!   first statement checks that the write applies as is (no such episode yet; the episode in
//!   progress and none of the steps stored). When it does not (a replay, a conflict), nothing
//!   is written and the caller runs the interactive transaction, which tells the cases apart.
//! - **Completing an episode** takes one request when the handle knows what the merge needs:
//!   the episode as the engine knows it (`expected_steps`) and every learned item the update
//!   names, as this handle last read or wrote it ([`crate::learned_bodies`]); otherwise, or
//!   when the guard finds something known stale, two. The first reads what the merge needs
//!   (the episode's state, its stored step keys and the learned items the update names); the
//!   merge runs here ([`memory_core::LearningUpdate::apply`], as in the local path); the
//!   second is one transaction that first checks, in SQL, that everything read is still as
//!   read (the episode still in progress, its step count, every item's stored body, the set
//!   of live heuristics of each condition key), then writes the outcome, the steps, the
//!   full-text rows and the merged items, stamps them with the next change-counter position,
//!   and commits. The written rows are exactly those of the local path. The one-request form
//!   is that transaction alone, guarded by what the handle knows.
//!
//!   Every try is optimistic: the read runs in a transaction of its own, so no lock is held
//!   between the requests, and a failed check (another writer changed something in between)
//!   rolls the write back whole and the completion starts over after a short random pause,
//!   up to [`ATTEMPTS`] tries (a failed check means another writer's write went through, so
//!   the writers as a whole always progress). No try holds the server's write lock across
//!   requests.

use std::collections::{BTreeMap, BTreeSet};

use libsql::Value;
use memory_core::{
    EpisodeCompletion, Error, ExecutionStep, ExistingLearned, FailureLesson, Heuristic,
    LearnedChanges, ObjectKind, Pattern, indexed_work_text, task_search_text,
};

use crate::codec::{Cols, EPISODE_COLUMNS, episode_from, from_json, text};
use crate::compressed_json::JsonFormat;
use crate::connection::Inner;
use crate::episode_rows::{CLOSE_ESTIMATE, INSERT_TAGS, close_estimate_values};
use crate::error::{DbResult, decode};
use crate::hrana::{BatchBuilder, HranaClient, Outcome, Statement, server_error};
use crate::learned::item_statements;
use crate::learned_bodies::LearnedBodies;
use crate::sql::{ROWS_PER_INSERT, insert_statements, placeholders};
use crate::step_pages::{
    NewSteps, READ_KEYS, READ_PAGES, STORED_COUNT, Stored, page_row, steps_of,
};
use crate::text_index::{PendingRows, WORK_PART};
use libsql_hrana::proto::BatchCond;

/// Tries of a one-request write (a completion overtaken by another writer, or any write that
/// found the write lock taken) before it runs as an interactive transaction, which holds the
/// server's write lock across its requests: the last resort, after about 2.5 s of tries (a
/// try that lost found another writer's write committed, so the writers as a whole progress).
const ATTEMPTS: u32 = 64;

/// The pause before try `attempt` (from 1): a random share of 2^attempt ms, at most 64 ms,
/// so writers that collided do not collide again in step.
fn backoff(attempt: u32) -> std::time::Duration {
    let ceiling = 1u64 << attempt.min(6);
    let random = (uuid::Uuid::new_v4().as_u128() % 1_000) as u64;
    std::time::Duration::from_micros(ceiling * random)
}

/// Runs `write`, a one-request write, until it goes through: `write` returns `None` when it
/// found the write lock taken or was overtaken by another writer (nothing written), and is
/// tried again after a [`backoff`] pause, up to [`ATTEMPTS`] tries. Every try holds this
/// handle's writer and the server's gate ([`Inner::writer`]), as the interactive path does.
/// `None` when every try came back empty: the caller runs the interactive transaction.
pub(crate) async fn until_written<T, F>(
    inner: &Inner,
    mut write: impl FnMut() -> F,
) -> DbResult<Option<T>>
where
    F: Future<Output = DbResult<Option<T>>>,
{
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let writer = inner.writer().await?;
        let tried = write().await;
        drop(writer);
        if let Some(done) = tried? {
            return Ok(Some(done));
        }
        tracing::debug!(
            attempt,
            "the write found the lock taken or was overtaken; again"
        );
    }
    Ok(None)
}

/// The change-counter position the batch's transaction took, as an SQL expression.
const POSITION: &str = "(SELECT seq FROM change_counter WHERE id = 1)";

/// The message of the guard's failure: `json()` of a text that is not JSON.
const STALE: &str = "malformed JSON";

/// The episode `id` with its steps, in one request ([`read_episodes`] of one).
pub(crate) async fn read_episode(
    client: &HranaClient,
    ns: &str,
    id: &str,
) -> DbResult<Option<memory_core::Episode>> {
    Ok(read_episodes(client, ns, &[id]).await?.pop().flatten())
}

/// The episodes `ids` name with their steps, in their order, in one request: one read
/// transaction holding two queries per episode (its row, its step pages).
pub(crate) async fn read_episodes(
    client: &HranaClient,
    ns: &str,
    ids: &[&str],
) -> DbResult<Vec<Option<memory_core::Episode>>> {
    let mut batch = BatchBuilder::default();
    let mut last = batch.step(Statement::exec("BEGIN", Vec::new()), None);
    let mut reads = Vec::with_capacity(ids.len());
    for id in ids {
        let key = || vec![text(ns), text(id)];
        let episode = batch.after(
            last,
            Statement::query(
                format!("SELECT {EPISODE_COLUMNS} FROM episodes WHERE ns = ?1 AND id = ?2"),
                key(),
            ),
        );
        let steps = batch.after(episode, Statement::query(READ_PAGES, key()));
        reads.push((episode, steps));
        last = steps;
    }
    batch.step(Statement::exec("COMMIT", Vec::new()), None);
    let outcome = client.batch(batch).await?;
    let mut out = Vec::with_capacity(ids.len());
    for (episode, steps) in reads {
        let Some(row) = outcome.rows(episode, "episode")?.into_iter().next() else {
            out.push(None);
            continue;
        };
        let mut found = episode_from(&Cols::values(&row, "episode"))?;
        let pages = outcome
            .rows(steps, "step page")?
            .iter()
            .map(|row| page_row(&Cols::values(row, "step page")))
            .collect::<DbResult<Vec<_>>>()?;
        found.steps = steps_of(&pages)?;
        out.push(Some(found));
    }
    Ok(out)
}

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

fn ns_and(ns: &str, values: &[String]) -> Vec<Value> {
    let mut all = Vec::with_capacity(values.len() + 1);
    all.push(text(ns));
    all.extend(values.iter().map(|v| text(v)));
    all
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

/// Whether a statement's error is the write lock held elsewhere.
fn is_lock_error(message: &str) -> bool {
    message.contains("locked") || message.contains("busy")
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

/// The statements that write the `steps` the store does not hold yet (`stored`) and their
/// step count (stamping the episode with `stamp`, an SQL expression), as
/// `Inner::append_step_rows` does (no full-text row: the completion indexes the work), with
/// page bodies in `format`.
fn step_statements(
    ns: &str,
    id: &str,
    steps: &[ExecutionStep],
    stored: &Stored,
    stamp: &str,
    format: JsonFormat,
) -> DbResult<(Vec<Statement>, i64)> {
    let new = NewSteps::of(steps, stored);
    let mut out: Vec<Statement> = new
        .statements(ns, id, format)?
        .into_iter()
        .map(|(sql, values)| Statement::exec(sql, values))
        .collect();
    let inserted = new.count();
    if inserted > 0 {
        out.push(Statement::exec(
            format!(
                "UPDATE episodes SET step_count = step_count + ?3, changed_seq = {stamp} \
                 WHERE ns = ?1 AND id = ?2"
            ),
            vec![text(ns), text(id), Value::Integer(inserted)],
        ));
    }
    Ok((out, inserted))
}

/// The statements that write a batch's full-text rows, after its other writes (see
/// [`PendingRows`]).
fn text_statements(text: PendingRows) -> impl Iterator<Item = Statement> {
    text.statements()
        .into_iter()
        .map(|(sql, values)| Statement::exec(sql, values))
}

/// `UPDATE table SET changed_seq = <position>` for the rows of `ids`.
fn restamp(table: &str, ns: &str, ids: &[String]) -> Vec<Statement> {
    ids.chunks(ROWS_PER_INSERT)
        .map(|chunk| {
            let sql = format!(
                "UPDATE {table} SET changed_seq = {POSITION} WHERE ns = ?1 AND id IN ({})",
                placeholders(2, chunk.len())
            );
            Statement::exec(sql, ns_and(ns, chunk))
        })
        .collect()
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
    let mut writes = vec![Statement::exec(
        format!(
            "UPDATE episodes SET outcome_kind = ?3, outcome = ?4, reward_total = ?5, \
             reward = ?6, reflection = ?7, completed_at = ?8, changed_seq = {POSITION} \
             WHERE ns = ?1 AND id = ?2 AND outcome_kind IS NULL"
        ),
        update.to_vec(),
    )];
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

/// What a one-request write came to.
pub(crate) enum Written {
    /// Committed; the change-counter position it took, if it took one.
    Committed(Option<i64>),
    /// Its guard did not hold: nothing was written.
    Refused,
    /// The write lock was not to be had: nothing was written.
    Busy,
}

/// One request: `BEGIN IMMEDIATE`, `guard` (a statement that fails with [`STALE`] unless the
/// write may go ahead), optionally the next change-counter position, `writes`, `COMMIT`.
async fn guarded_write(
    client: &HranaClient,
    guard: Statement,
    stamped: bool,
    writes: Vec<Statement>,
) -> DbResult<Written> {
    let (written, _, ()) =
        guarded_batch(client, |_, begin| ((), begin), guard, stamped, writes).await?;
    Ok(written)
}

/// [`guarded_write`] with reads between `BEGIN IMMEDIATE` and the guard, which `reads` adds
/// after the step it is given (returning its own result and its last step): they see what
/// the guard checks, and their rows come back whether or not the guard held.
async fn guarded_batch<R>(
    client: &HranaClient,
    reads: impl FnOnce(&mut BatchBuilder, u32) -> (R, u32),
    guard: Statement,
    stamped: bool,
    writes: Vec<Statement>,
) -> DbResult<(Written, Outcome, R)> {
    let mut batch = BatchBuilder::default();
    let begin = batch.step(Statement::exec("BEGIN IMMEDIATE", Vec::new()), None);
    let (read, last_read) = reads(&mut batch, begin);
    let check = batch.after(last_read, guard);
    let mut last = check;
    if stamped {
        last = batch.after(
            last,
            Statement::exec(
                "UPDATE change_counter SET seq = seq + 1 WHERE id = 1",
                Vec::new(),
            ),
        );
    }
    for w in writes {
        last = batch.after(last, w);
    }
    let position = stamped.then(|| {
        batch.after(
            last,
            Statement::query(format!("SELECT {POSITION}"), Vec::new()),
        )
    });
    let commit = batch.after(
        position.unwrap_or(last),
        Statement::exec("COMMIT", Vec::new()),
    );
    batch.step(
        Statement::exec("ROLLBACK", Vec::new()),
        Some(BatchCond::Not {
            cond: Box::new(BatchCond::Ok { step: commit }),
        }),
    );
    let outcome = client.batch(batch).await?;
    let written = if outcome.succeeded(commit) {
        let position = match position {
            Some(step) => Some(
                outcome
                    .rows(step, "change counter")?
                    .first()
                    .map(|r| Cols::values(r, "change counter").i64(0))
                    .transpose()?
                    .ok_or_else(|| decode("change counter", "no position returned"))?,
            ),
            None => None,
        };
        Written::Committed(position)
    } else if outcome.error(check).is_some_and(|e| e.contains(STALE)) {
        Written::Refused
    } else if outcome.error(begin).is_some_and(is_lock_error) {
        Written::Busy
    } else {
        return Err(server_error(
            outcome
                .first_error()
                .unwrap_or("the batch stopped without an error"),
        ));
    };
    Ok((written, outcome, read))
}

/// `SELECT json(CASE WHEN <condition> THEN '1' ELSE 'stale' END)`: fails unless `condition`.
fn guard_of(condition: &str, values: Vec<Value>) -> Statement {
    Statement::exec(
        format!("SELECT json(CASE WHEN {condition} THEN '1' ELSE 'stale' END)"),
        values,
    )
}

/// A new episode in one request: its row, tags, full-text rows and steps, as the local path
/// writes them; refused (nothing written) when the episode exists, which makes a replay a
/// no-op; busy when the write lock was not to be had. `episode` binds `?1..?16` of `insert_episode`.
pub(crate) async fn create_episode(
    client: &HranaClient,
    insert_episode: &str,
    episode_values: Vec<Value>,
    episode: &memory_core::Episode,
    format: JsonFormat,
) -> DbResult<Written> {
    let ns = match &episode_values.first() {
        Some(Value::Text(ns)) => ns.clone(),
        _ => return Err(decode("episode", "the namespace is not the first value")),
    };
    let id = episode.id.to_string();
    let guard = guard_of(
        "NOT EXISTS (SELECT 1 FROM episodes WHERE ns = ?1 AND id = ?2)",
        vec![text(&ns), text(&id)],
    );
    let mut writes = vec![Statement::exec(insert_episode, episode_values)];
    let tags: Vec<Vec<Value>> = episode
        .context
        .tags
        .iter()
        .map(|tag| vec![text(&ns), text(tag), text(&id)])
        .collect();
    let tags = insert_statements(INSERT_TAGS, 3, tags, "ON CONFLICT DO NOTHING");
    writes.extend(tags.into_iter().map(|(sql, v)| Statement::exec(sql, v)));
    let mut text = PendingRows::default();
    text.add(
        &task_search_text(&episode.task_description, &episode.context),
        &ns,
        &id,
        "task",
    );
    // A new row is in no cache: it needs no change stamp.
    let (steps, stored) = (&episode.steps, &Stored::default());
    writes.extend(step_statements(&ns, &id, steps, stored, "0", format)?.0);
    if episode.outcome.is_some() {
        // Completed already (an import): its work is indexed now.
        text.add(&indexed_work_text(steps), &ns, &id, WORK_PART);
    }
    if let Some(r) = &episode.reflection {
        text.add(&r.text(), &ns, &id, "reflection");
    }
    writes.extend(text_statements(text));
    guarded_write(client, guard, false, writes).await
}

/// Steps of an in-progress episode in one request, when none of them is stored yet (the
/// usual case); refused otherwise, or when the episode is missing or completed, or a step has
/// no key (journaled by an earlier version), for the interactive path to sort out; busy when
/// the write lock was not to be had.
pub(crate) async fn append_steps(
    client: &HranaClient,
    ns: &str,
    id: &str,
    steps: &[ExecutionStep],
    format: JsonFormat,
) -> DbResult<Written> {
    if steps.iter().any(|s| s.key == 0) {
        return Ok(Written::Refused);
    }
    let mut values = vec![text(ns), text(id)];
    let mut condition =
        "(SELECT outcome_kind IS NULL FROM episodes WHERE ns = ?1 AND id = ?2) IS 1".to_owned();
    let keys: BTreeSet<i64> = steps.iter().map(|s| s.key as i64).collect();
    if !keys.is_empty() {
        values.extend(keys.iter().map(|v| Value::Integer(*v)));
        condition = format!(
            "{condition} AND NOT EXISTS (SELECT 1 FROM step_pages p, json_each(p.keys) k \
             WHERE p.ns = ?1 AND p.episode_id = ?2 AND k.value IN ({}))",
            placeholders(3, keys.len())
        );
    }
    let (writes, _) = step_statements(ns, id, steps, &Stored::default(), POSITION, format)?;
    guarded_write(client, guard_of(&condition, values), true, writes).await
}
