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

use std::collections::BTreeSet;

use libsql::Value;
use memory_core::{ExecutionStep, indexed_work_text, task_search_text};

use crate::codec::{Cols, EPISODE_COLUMNS, episode_from, text};
use crate::compressed_json::JsonFormat;
use crate::connection::Inner;
use crate::episode_rows::{INSERT_TAGS, add_step_count};
use crate::error::{DbResult, decode};
use crate::hrana::{BatchBuilder, HranaClient, Outcome, Statement, server_error};
use crate::sql::{ROWS_PER_INSERT, insert_statements, placeholders};
use crate::step_pages::{NewSteps, READ_PAGES, Stored, page_row, steps_of};
use crate::text_index::{PendingRows, WORK_PART};
use libsql_hrana::proto::BatchCond;

mod complete;

pub(crate) use complete::{Tried, try_complete};

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

fn ns_and(ns: &str, values: &[String]) -> Vec<Value> {
    let mut all = Vec::with_capacity(values.len() + 1);
    all.push(text(ns));
    all.extend(values.iter().map(|v| text(v)));
    all
}

/// Whether a statement's error is the write lock held elsewhere.
fn is_lock_error(message: &str) -> bool {
    message.contains("locked") || message.contains("busy")
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
            add_step_count(stamp),
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
    forgets: bool,
) -> DbResult<Written> {
    let ns = match &episode_values.first() {
        Some(Value::Text(ns)) => ns.clone(),
        _ => return Err(decode("episode", "the namespace is not the first value")),
    };
    let id = episode.id.to_string();
    // From schema v13 a forgotten id is never stored again (the episode's insert is ignored
    // by a trigger; the guard keeps its other rows out too).
    let guard = if forgets {
        "NOT EXISTS (SELECT 1 FROM episodes WHERE ns = ?1 AND id = ?2) AND NOT EXISTS \
         (SELECT 1 FROM forgotten_episodes WHERE ns = ?1 AND episode_id = ?2)"
    } else {
        "NOT EXISTS (SELECT 1 FROM episodes WHERE ns = ?1 AND id = ?2)"
    };
    let guard = guard_of(guard, vec![text(&ns), text(&id)]);
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
