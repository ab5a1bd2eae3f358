//! Learned items on libsql: one table per kind, read and written through one generic path;
//! the merge of an update runs in core, inside the caller's transaction; feedback events.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use libsql::Value;
use memory_core::{
    Error, ExistingLearned, FailureLesson, Feedback, FeedbackOutcome, FeedbackTarget, GuardedItems,
    Heuristic, Learned, LearnedChanges, LearnedId, LearnedItem, LearnedItems, LearnedKind,
    LearnedQuery, LearningStore, LearningUpdate, Namespace, ObjectKind, Pattern, Result, TaskType,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use crate::backend::TursoStorage;
use crate::codec::{Cols, count, from_json, nanos, nanos_clamped, opt_text, text, to_json};
use crate::connection::Inner;
use crate::error::DbResult;
use crate::prepared::Db;
use crate::sql::{
    CONTEXT_INDEXES, ROWS_PER_INSERT, Sql, context_page_sql, insert_statements, learned_sql,
    placeholders, query_all, query_opt,
};

/// How one kind of learned item is stored: its table, the columns of its own beside the
/// common ones (namespace, id, task type, domain, language, status, last seen, JSON body),
/// which of those own columns an update can change, whether its rows carry the change stamp
/// (the cached kinds), and how queries order it.
trait Stored: Learned + Serialize + DeserializeOwned {
    const TABLE: &'static str;
    const OWN_COLUMNS: [&'static str; 3];
    /// The own columns that are not part of the item's identity (the rest, like the context
    /// columns, are derived from what the id is a digest of, so a row never changes them).
    const COUNTERS: &'static [&'static str];
    const STAMPED: bool;
    /// The counter items are ranked by, most first (its index is `<table>_by_<rank>`).
    const RANK: &'static str;
    const ORDER: &'static str;
    fn own_values(&self) -> [Value; 3];
}

impl Stored for Pattern {
    const TABLE: &'static str = "patterns";
    const OWN_COLUMNS: [&'static str; 3] = ["kind", "occurrences", "successes"];
    const COUNTERS: &'static [&'static str] = &["occurrences", "successes"];
    const STAMPED: bool = true;
    const RANK: &'static str = "occurrences";
    const ORDER: &'static str = "occurrences DESC, id ASC";
    fn own_values(&self) -> [Value; 3] {
        [
            text(self.kind.name()),
            Value::Integer(count(self.occurrences)),
            Value::Integer(count(self.successes)),
        ]
    }
}

impl Stored for Heuristic {
    const TABLE: &'static str = "heuristics";
    const OWN_COLUMNS: [&'static str; 3] = ["condition_key", "support", "against"];
    const COUNTERS: &'static [&'static str] = &["support", "against"];
    const STAMPED: bool = true;
    const RANK: &'static str = "support";
    const ORDER: &'static str = "support DESC, id ASC";
    fn own_values(&self) -> [Value; 3] {
        [
            text(&self.condition_key),
            Value::Integer(count(self.support)),
            Value::Integer(count(self.against)),
        ]
    }
}

impl Stored for FailureLesson {
    const TABLE: &'static str = "lessons";
    const OWN_COLUMNS: [&'static str; 3] = ["failed_tool", "error_class", "occurrences"];
    const COUNTERS: &'static [&'static str] = &["occurrences"];
    const STAMPED: bool = false;
    const RANK: &'static str = "occurrences";
    const ORDER: &'static str = "occurrences DESC, id ASC";
    fn own_values(&self) -> [Value; 3] {
        [
            text(&self.failed_tool),
            text(&self.error_class),
            Value::Integer(count(self.occurrences)),
        ]
    }
}

/// The columns an upsert of `T` writes, in order.
fn columns<T: Stored>() -> Vec<&'static str> {
    let mut cols = vec!["ns", "id", "task_type", "domain", "language", "status"];
    cols.extend(T::OWN_COLUMNS);
    cols.extend(["last_seen", "body"]);
    if T::STAMPED {
        cols.push("changed_seq");
    }
    cols
}

/// The columns an update of an existing row of `T` sets: the identity columns (id, context,
/// kind, condition key, failed tool and error class) are left out. An index whose columns
/// are all left out is then not rewritten (SQLite rewrites an index entry whenever one of its
/// columns is assigned, even to the same value): a heuristic's update no longer deletes and
/// re-inserts its `heuristics_by_condition` entry.
fn changeable<T: Stored>() -> impl Iterator<Item = &'static str> {
    let stamp: &[&'static str] = if T::STAMPED { &["changed_seq"] } else { &[] };
    ["status"]
        .into_iter()
        .chain(T::COUNTERS.iter().copied())
        .chain(["last_seen", "body"])
        .chain(stamp.iter().copied())
}

/// The row of an item, stamped with `position` when its kind is.
fn row<T: Stored>(ns: &str, item: &T, position: i64) -> DbResult<Vec<Value>> {
    let ctx = item.context();
    let mut row = vec![
        text(ns),
        text(&item.id().to_string()),
        opt_text(ctx.task_type.map(TaskType::as_str)),
        opt_text(ctx.domain.as_deref()),
        opt_text(ctx.language.as_deref()),
        text(item.status().name()),
    ];
    row.extend(item.own_values());
    row.push(Value::Integer(nanos_clamped(item.last_seen())));
    row.push(Value::Text(to_json(T::KIND.name(), item)?));
    if T::STAMPED {
        row.push(Value::Integer(position));
    }
    Ok(row)
}

/// Upserts `items` by (namespace, id).
async fn upsert<'a, T: Stored>(
    conn: &Db<'_>,
    ns: &str,
    position: i64,
    items: impl Iterator<Item = &'a T>,
) -> DbResult<()> {
    for (sql, values) in upsert_statements(ns, position, items)? {
        conn.exec(&sql, values).await?;
    }
    Ok(())
}

/// The statements that upsert `items` by (namespace, id).
fn upsert_statements<'a, T: Stored>(
    ns: &str,
    position: i64,
    items: impl Iterator<Item = &'a T>,
) -> DbResult<Vec<(String, Vec<Value>)>> {
    let rows = items
        .map(|x| row(ns, x, position))
        .collect::<DbResult<Vec<_>>>()?;
    let cols = columns::<T>();
    let head = format!("INSERT INTO {} ({})", T::TABLE, cols.join(", "));
    Ok(insert_statements(
        &head,
        cols.len(),
        rows,
        &on_conflict::<T>(),
    ))
}

/// The conflict clause of `T`'s upsert: an existing row gets the [`changeable`] columns.
fn on_conflict<T: Stored>() -> String {
    let set: Vec<String> = changeable::<T>()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!("ON CONFLICT (ns, id) DO UPDATE SET {}", set.join(", "))
}

/// The items of `T` whose `column` is one of `keys`, by id.
async fn load_where<T: Stored>(
    conn: &Db<'_>,
    ns: &str,
    column: &str,
    keys: Vec<String>,
) -> DbResult<Vec<T>> {
    let filter = format!("{column} IN ({})", placeholders(2, keys.len()));
    load_filtered(conn, ns, &filter, keys).await
}

/// The heuristics `update` merges with: the active one of each of its condition keys (a
/// partial index holds only those) and the observed ones whatever their status; then, for
/// the keys where that is not enough ([`LearningUpdate::keys_needing_whole_group`]), every
/// one that is not pruned (pruned ones take no part in resolving contradictions). Indexed
/// reads each (one `OR` would scan the namespace's heuristics).
async fn load_heuristics(
    conn: &Db<'_>,
    ns: &str,
    update: &LearningUpdate,
) -> DbResult<Vec<Heuristic>> {
    let of_keys = |status: &str, keys: &[String]| {
        format!(
            "condition_key IN ({}) AND {status}",
            placeholders(2, keys.len())
        )
    };
    let keys = update.condition_keys();
    let active = of_keys("status = 'active'", &keys);
    let mut by_id: BTreeMap<String, Heuristic> = BTreeMap::new();
    for h in load_filtered::<Heuristic>(conn, ns, &active, keys).await? {
        by_id.insert(h.id.0.clone(), h);
    }
    let observed: Vec<String> = (update.heuristics.iter())
        .map(|o| o.id.0.clone())
        .filter(|id| !by_id.contains_key(id))
        .collect();
    for h in load_where::<Heuristic>(conn, ns, "id", observed).await? {
        by_id.insert(h.id.0.clone(), h);
    }
    let whole: Vec<String> = (update.keys_needing_whole_group(by_id.values()))
        .into_iter()
        .collect();
    let live = of_keys("status <> 'pruned'", &whole);
    // No statement when every key's active heuristic is enough.
    for h in load_filtered::<Heuristic>(conn, ns, &live, whole).await? {
        by_id.insert(h.id.0.clone(), h);
    }
    Ok(by_id.into_values().collect())
}

/// The items of `T` matching `filter` (an SQL condition whose placeholders start at `?2` and
/// take `params`), by id. `+id` keeps SQLite from walking the primary key for the order
/// (it would then scan the whole namespace instead of searching the filter's index).
#[tracing::instrument(level = "debug", skip_all)]
async fn load_filtered<T: Stored>(
    conn: &Db<'_>,
    ns: &str,
    filter: &str,
    keys: Vec<String>,
) -> DbResult<Vec<T>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT body FROM {} WHERE ns = ?1 AND {filter} ORDER BY +id",
        T::TABLE,
    );
    let mut params = Vec::with_capacity(keys.len() + 1);
    params.push(text(ns));
    params.extend(keys.into_iter().map(Value::Text));
    query_all(conn, &sql, params, |row| {
        from_json(T::KIND.name(), &Cols::new(row, "learned item").text(0)?)
    })
    .await
}

/// The statements that upsert every item, stamping patterns and heuristics with `position`.
pub(crate) fn item_statements<'a>(
    ns: &str,
    position: i64,
    patterns: impl Iterator<Item = &'a Pattern>,
    heuristics: impl Iterator<Item = &'a Heuristic>,
    lessons: impl Iterator<Item = &'a FailureLesson>,
) -> DbResult<Vec<(String, Vec<Value>)>> {
    let mut statements = upsert_statements(ns, position, patterns)?;
    statements.extend(upsert_statements(ns, position, heuristics)?);
    statements.extend(upsert_statements(ns, position, lessons)?);
    Ok(statements)
}

impl Inner {
    /// Upserts every item, stamping patterns and heuristics with `position`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn write_items<'a>(
        conn: &Db<'_>,
        ns: &str,
        position: i64,
        patterns: impl Iterator<Item = &'a Pattern>,
        heuristics: impl Iterator<Item = &'a Heuristic>,
        lessons: impl Iterator<Item = &'a FailureLesson>,
    ) -> DbResult<()> {
        let statements = item_statements(ns, position, patterns, heuristics, lessons)?;
        for (sql, values) in statements {
            conn.exec(&sql, values).await?;
        }
        Ok(())
    }

    /// Loads, merges (in core) and writes back a learning update, inside the caller's
    /// transaction.
    pub(crate) async fn merge_learning(
        conn: &Db<'_>,
        ns: &str,
        update: &LearningUpdate,
        position: i64,
    ) -> DbResult<LearnedChanges> {
        let pattern_ids = update.pattern_ids().into_iter().map(|p| p.0).collect();
        let lesson_ids = update.lesson_ids().into_iter().map(|l| l.0).collect();
        let existing = ExistingLearned {
            patterns: load_where(conn, ns, "id", pattern_ids).await?,
            heuristics: load_heuristics(conn, ns, update).await?,
            lessons: load_where(conn, ns, "id", lesson_ids).await?,
        };
        let changes = update.apply(existing);
        Self::write_items(
            conn,
            ns,
            position,
            changes.patterns.iter().map(|c| &c.item),
            changes.heuristics.iter().map(|c| &c.item),
            changes.lessons.iter().map(|c| &c.item),
        )
        .await?;
        Ok(changes)
    }

    /// A page of the learned items of `kind` matching `q`, in the order the storage contract
    /// gives (most occurrences, or support, first; ties by id).
    async fn query_learned(
        &self,
        kind: LearnedKind,
        ns: &Namespace,
        q: &LearnedQuery,
    ) -> DbResult<Vec<LearnedItem>> {
        let (order, key) = match kind {
            LearnedKind::Pattern => (Pattern::ORDER, Pattern::RANK),
            LearnedKind::Heuristic => (Heuristic::ORDER, Heuristic::RANK),
            LearnedKind::Lesson => (FailureLesson::ORDER, FailureLesson::RANK),
        };
        let of_kind = |sql: &mut Sql| {
            if let (LearnedKind::Pattern, Some(k)) = (kind, q.kind.as_deref()) {
                sql.push(" AND kind").cond(" = ", text(k), "");
            }
        };
        let indexed = self.schema_version.load(Ordering::Acquire) >= CONTEXT_INDEXES;
        let sql = if indexed && q.domain.is_some() {
            context_page_sql(table(kind), key, ns.as_str(), q, &of_kind)
        } else {
            let mut sql = Sql::default();
            sql.push("SELECT body FROM ").push(table(kind)).cond(
                " WHERE ns = ",
                text(ns.as_str()),
                "",
            );
            learned_sql(q, &mut sql);
            of_kind(&mut sql);
            sql.push(" ORDER BY ").push(order).page(q.limit, q.offset);
            sql
        };
        self.read(async |conn| {
            query_all(conn, &sql.text, sql.values, |row| {
                decode_learned(kind, &Cols::new(row, "learned item").text(0)?)
            })
            .await
        })
        .await
    }
}

/// The table a kind of learned item is stored in.
pub(crate) fn table(kind: LearnedKind) -> &'static str {
    match kind {
        LearnedKind::Pattern => Pattern::TABLE,
        LearnedKind::Heuristic => Heuristic::TABLE,
        LearnedKind::Lesson => FailureLesson::TABLE,
    }
}

/// The item stored under `id`, if any.
async fn stored_item(conn: &Db<'_>, ns: &str, id: &LearnedId) -> DbResult<Option<LearnedItem>> {
    let kind = id.kind();
    let sql = format!("SELECT body FROM {} WHERE ns = ?1 AND id = ?2", table(kind));
    query_opt(conn, &sql, (ns, id.as_str()), |row| {
        decode_learned(kind, &Cols::new(row, "learned item").text(0)?)
    })
    .await
}

/// The items stored under `ids` (any kinds), read a few hundred per statement.
async fn stored_items(
    conn: &Db<'_>,
    ns: &str,
    ids: &[&LearnedId],
) -> DbResult<HashMap<LearnedId, LearnedItem>> {
    let mut by_kind: BTreeMap<&'static str, (LearnedKind, Vec<String>)> = BTreeMap::new();
    for id in ids {
        let kind = id.kind();
        let entry = by_kind.entry(kind.name()).or_insert((kind, Vec::new()));
        entry.1.push(id.as_str().to_owned());
    }
    let mut out = HashMap::new();
    for (kind, mut keys) in by_kind.into_values() {
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT id, body FROM {} WHERE ns = ?1 AND id IN ({})",
                table(kind),
                placeholders(2, chunk.len())
            );
            let mut params = Vec::with_capacity(chunk.len() + 1);
            params.push(text(ns));
            params.extend(chunk.iter().map(|k| text(k)));
            let rows = query_all(conn, &sql, params, |row| {
                let cols = Cols::new(row, "learned item");
                Ok((cols.text(0)?, decode_learned(kind, &cols.text(1)?)?))
            })
            .await?;
            for (id, item) in rows {
                out.insert(learned_id(kind, id), item);
            }
        }
    }
    Ok(out)
}

/// A kind-tagged id from its text.
fn learned_id(kind: LearnedKind, id: String) -> LearnedId {
    match kind {
        LearnedKind::Pattern => LearnedId::Pattern(memory_core::PatternId(id)),
        LearnedKind::Heuristic => LearnedId::Heuristic(memory_core::HeuristicId(id)),
        LearnedKind::Lesson => LearnedId::Lesson(memory_core::LessonId(id)),
    }
}

/// A stored JSON body as an item of `kind`.
fn decode_learned(kind: LearnedKind, body: &str) -> DbResult<LearnedItem> {
    fn decode<T: Stored>(body: &str) -> DbResult<LearnedItem> {
        Ok(from_json::<T>(T::KIND.name(), body)?.into_item())
    }
    match kind {
        LearnedKind::Pattern => decode::<Pattern>(body),
        LearnedKind::Heuristic => decode::<Heuristic>(body),
        LearnedKind::Lesson => decode::<FailureLesson>(body),
    }
}

/// The stored body of a feedback target, `None` when it is not stored.
async fn stored_body(tx: &Db<'_>, ns: &str, target: &FeedbackTarget) -> DbResult<Option<String>> {
    let select = match target {
        FeedbackTarget::Pattern(_) => "SELECT body FROM patterns WHERE ns = ?1 AND id = ?2",
        FeedbackTarget::Heuristic(_) => "SELECT body FROM heuristics WHERE ns = ?1 AND id = ?2",
    };
    query_opt(tx, select, (ns, target.id()), |row| {
        Cols::new(row, "learned item").text(0)
    })
    .await
}

/// The transaction of [`LearningStore::record_feedback`]: replaces the event of (target,
/// episode) and recomputes the target's effectiveness or votes from all its events.
async fn feedback_in_tx(
    tx: &Db<'_>,
    ns: &str,
    fb: &Feedback,
    recorded_at: i64,
    position: i64,
) -> DbResult<()> {
    let (kind, target_id) = (fb.target.kind(), fb.target.id());
    let Some(body) = stored_body(tx, ns, &fb.target).await? else {
        let object = match fb.target {
            FeedbackTarget::Pattern(_) => ObjectKind::Pattern,
            FeedbackTarget::Heuristic(_) => ObjectKind::Heuristic,
        };
        return Err(Error::not_found(object, target_id).into());
    };

    let key = || vec![text(ns), text(kind), text(target_id)];
    let mut params = key();
    params.push(Value::Text(fb.episode_id.to_string()));
    tx.exec(
        "DELETE FROM feedback \
         WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 AND episode_id = ?4",
        params.clone(),
    )
    .await?;
    params.push(text(fb.outcome.as_str()));
    params.push(Value::Integer(recorded_at));
    tx.exec(
        "INSERT INTO feedback (ns, target_kind, target_id, episode_id, outcome, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params,
    )
    .await?;

    refresh_feedback(tx, ns, &fb.target, body, position).await
}

/// Sets what the feedback events of `target` (stored as `body`) say on it: a pattern's
/// effectiveness, a heuristic's votes (its key is then resolved again).
async fn refresh_feedback(
    tx: &Db<'_>,
    ns: &str,
    target: &FeedbackTarget,
    body: String,
    position: i64,
) -> DbResult<()> {
    let (kind, target_id) = (target.kind(), target.id());
    let key = || vec![text(ns), text(kind), text(target_id)];
    // The item as stored: a pattern's streak only counts what came after it was last seen.
    let pattern: Option<Pattern> = match target {
        FeedbackTarget::Pattern(_) => Some(from_json("pattern", &body)?),
        FeedbackTarget::Heuristic(_) => None,
    };
    let seen = pattern
        .as_ref()
        .map_or(i64::MIN, |p| p.last_seen.timestamp_millis());
    // Per outcome: how many, and how many came after the latest helped event and after the
    // item was last seen (the streak).
    let mut params = key();
    params.push(text(FeedbackOutcome::Helped.as_str()));
    params.push(Value::Integer(seen));
    let counts = query_all(
        tx,
        "SELECT outcome, COUNT(*), SUM(recorded_at > MAX(?5, COALESCE((SELECT MAX(recorded_at) \
         FROM feedback WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 AND outcome = ?4), \
         ?5))) FROM feedback \
         WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 GROUP BY outcome",
        params,
        |row| {
            let c = Cols::new(row, "feedback");
            Ok((
                c.parse::<FeedbackOutcome>(0)?,
                c.i64(1)? as u64,
                c.i64(2)? as u64,
            ))
        },
    )
    .await?;
    let mut eff = memory_core::Effectiveness::default();
    for (outcome, n, after_helped) in counts {
        match outcome {
            FeedbackOutcome::Helped => eff.helped = n,
            FeedbackOutcome::NoEffect => eff.no_effect = n,
            FeedbackOutcome::Hindered => (eff.hindered, eff.hindered_streak) = (n, after_helped),
        }
    }

    if let Some(mut p) = pattern {
        p.effectiveness = eff;
        upsert(tx, ns, position, std::iter::once(&p)).await
    } else {
        let mut h: Heuristic = from_json("heuristic", &body)?;
        h.votes_up = eff.helped;
        h.votes_down = eff.hindered;
        upsert(tx, ns, position, std::iter::once(&h)).await?;
        resolve_keys(tx, ns, std::iter::once(&h), position).await
    }
}

/// Resolves again the condition keys of `written` ([`memory_core::keys_to_resolve`]),
/// writing the heuristics whose status that changes. A write that moves evidence or votes between heuristics (feedback, consolidation)
/// calls it, so every key stays as a completion's merge expects: one active heuristic that
/// outranks the others ([`LearningUpdate::keys_needing_whole_group`]).
async fn resolve_keys<'a>(
    tx: &Db<'_>,
    ns: &str,
    written: impl Iterator<Item = &'a Heuristic>,
    position: i64,
) -> DbResult<()> {
    for key in memory_core::keys_to_resolve(written) {
        let live = "condition_key = ?2 AND status <> 'pruned'";
        let mut group = load_filtered::<Heuristic>(tx, ns, live, vec![key]).await?;
        let changed = memory_core::resolve_contradictions(&mut group);
        upsert(tx, ns, position, changed.iter().map(|&i| &group[i])).await?;
    }
    Ok(())
}

#[async_trait]
impl LearningStore for TursoStorage {
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %update.episode_id))]
    async fn apply_learning(
        &self,
        ns: &Namespace,
        update: &LearningUpdate,
    ) -> Result<LearnedChanges> {
        self.inner
            .call_write_stamped("apply_learning", async |tx, position| {
                Inner::merge_learning(tx, ns.as_str(), update, position).await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, patterns = items.patterns.len(), heuristics = items.heuristics.len(), lessons = items.lessons.len()))]
    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        self.inner
            .call_write_stamped("put_learned", async |tx, position| {
                Inner::write_items(
                    tx,
                    ns.as_str(),
                    position,
                    items.patterns.iter(),
                    items.heuristics.iter(),
                    items.lessons.iter(),
                )
                .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, groups = groups.len()))]
    async fn put_learned_unless_changed(
        &self,
        ns: &Namespace,
        groups: &[GuardedItems],
    ) -> Result<Vec<usize>> {
        // Not the handle's own position: resolving a key again may change heuristics the
        // caller does not write through to its cache.
        self.inner
            .call_write_stamped_unowned("put_learned_unless_changed", async |tx, position| {
                let ids: Vec<&LearnedId> = (groups.iter())
                    .flat_map(|g| g.read.iter().map(|(id, _)| id))
                    .collect();
                let now = stored_items(tx, ns.as_str(), &ids).await?;
                let mut refused = Vec::new();
                let (mut patterns, mut heuristics, mut lessons) =
                    (Vec::new(), Vec::new(), Vec::new());
                for (i, g) in groups.iter().enumerate() {
                    let stored: Vec<Option<LearnedItem>> =
                        g.read.iter().map(|(id, _)| now.get(id).cloned()).collect();
                    if g.unchanged(&stored) {
                        patterns.extend(&g.write.patterns);
                        heuristics.extend(&g.write.heuristics);
                        lessons.extend(&g.write.lessons);
                    } else {
                        refused.push(i);
                    }
                }
                Inner::write_items(
                    tx,
                    ns.as_str(),
                    position,
                    patterns.into_iter(),
                    heuristics.iter().copied(),
                    lessons.into_iter(),
                )
                .await?;
                // Merges, forwarded evidence and recomputed votes move ranks.
                resolve_keys(tx, ns.as_str(), heuristics.into_iter(), position).await?;
                Ok(refused)
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, kind = id.kind().name(), id = id.as_str()))]
    async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>> {
        self.inner
            .call_read("get_learned", async |conn| {
                stored_item(conn, ns.as_str(), id).await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, items = ids.len()))]
    async fn get_learned_many(
        &self,
        ns: &Namespace,
        ids: &[LearnedId],
    ) -> Result<Vec<Option<LearnedItem>>> {
        let refs: Vec<&LearnedId> = ids.iter().collect();
        let found = self
            .inner
            .call_read("get_learned_many", async |conn| {
                stored_items(conn, ns.as_str(), &refs).await
            })
            .await?;
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    #[instrument(skip_all, fields(namespace = %ns, kind = kind.name()))]
    async fn query_learned(
        &self,
        ns: &Namespace,
        kind: LearnedKind,
        query: &LearnedQuery,
    ) -> Result<Vec<LearnedItem>> {
        let inner = &*self.inner;
        inner
            .call("query_learned", inner.query_learned(kind, ns, query))
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, target = %feedback.target.id(), episode_id = %feedback.episode_id))]
    async fn record_feedback(&self, ns: &Namespace, feedback: &Feedback) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("record_feedback", async {
                let fb = feedback;
                let ns = ns.as_str();
                let recorded_at = nanos("feedback.recorded_at", fb.recorded_at)?;
                // Not the handle's own position: resolving a heuristic's key again may
                // change its competitors, which the caller's cache does not know of.
                inner
                    .write_tx_stamped_unowned(async |tx, position| {
                        feedback_in_tx(tx, ns, fb, recorded_at, position).await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, target = %target.id()))]
    async fn list_feedback(
        &self,
        ns: &Namespace,
        target: &FeedbackTarget,
    ) -> Result<Vec<Feedback>> {
        self.inner
            .call_rows(
                "list_feedback",
                "feedback",
                "SELECT episode_id, outcome, recorded_at FROM feedback \
                 WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 ORDER BY seq",
                (ns.as_str(), target.kind(), target.id()),
                |c| {
                    Ok(Feedback {
                        target: target.clone(),
                        episode_id: c.episode_id(0)?,
                        outcome: c.parse(1)?,
                        recorded_at: crate::codec::from_nanos(c.i64(2)?),
                    })
                },
            )
            .await
    }
}

mod unlearn;

#[cfg(test)]
mod tests;
