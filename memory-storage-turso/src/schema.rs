//! The SQL schema, its version table, and the ordered forward migrations applied at open.
//!
//! `schema_version` holds one row per applied migration; the database's version is the
//! highest. Opening a database applies every missing migration up to the configured target in
//! one `BEGIN IMMEDIATE` transaction, so concurrent openers serialize and a failed migration
//! leaves the database as it was. A database newer than this build is refused (never
//! downgraded). The layout is documented in `SCHEMA.md` next to this crate's manifest.

use libsql::{Connection, TransactionBehavior};
use tracing::info;

use crate::error::{DbResult, DriverError};
use crate::sql::query_opt;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 6;

/// One forward migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The version the database has after it.
    pub version: u32,
    /// What it does, stored in `schema_version.description`.
    pub description: &'static str,
    /// The statements, run in order in the migration transaction.
    pub statements: &'static [&'static str],
    /// Work done in Rust after the statements, in the same transaction.
    pub then: Then,
}

/// What a migration does after its statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Nothing more.
    Nothing,
    /// Moves the version-1 full-text rows into the per-namespace term index and drops the
    /// old table (see [`crate::text_index::move_from_v1`]).
    MoveTextIndex,
}

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)";

/// Version 1: episodes, steps, tags, learned items, feedback and the full-text index.
const V1: &[&str] = &[
    // One row per episode. Timestamps are nanoseconds since the Unix epoch (UTC). JSON text
    // columns hold the parts that are read back whole; the filterable fields are columns.
    // Rows are kilobytes (reward, reflection), so tables with large rows keep a rowid (a
    // WITHOUT ROWID b-tree with such rows was 25x slower to list), and the big text columns
    // come last so summaries do not read their overflow pages.
    "CREATE TABLE episodes (
        ns               TEXT NOT NULL,
        id               TEXT NOT NULL,
        task_type        TEXT NOT NULL,
        domain           TEXT NOT NULL,
        language         TEXT,
        framework        TEXT,
        complexity       TEXT NOT NULL,
        started_at       INTEGER NOT NULL,
        completed_at     INTEGER,
        outcome_kind     TEXT,
        reward_total     REAL,
        step_count       INTEGER NOT NULL DEFAULT 0,
        tags             TEXT NOT NULL,
        task_description TEXT NOT NULL,
        outcome          TEXT,
        reward           TEXT,
        reflection       TEXT,
        PRIMARY KEY (ns, id)
    )",
    "CREATE INDEX episodes_by_start ON episodes (ns, started_at DESC, id DESC)",
    "CREATE INDEX episodes_by_context ON episodes (ns, task_type, domain, language, started_at DESC)",
    "CREATE INDEX episodes_by_outcome ON episodes (ns, outcome_kind, started_at DESC)",
    "CREATE TABLE episode_tags (
        ns         TEXT NOT NULL,
        tag        TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        PRIMARY KEY (ns, tag, episode_id),
        FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
    ) WITHOUT ROWID",
    // Steps are appended as rows, never by rewriting the episode.
    "CREATE TABLE steps (
        ns          TEXT NOT NULL,
        episode_id  TEXT NOT NULL,
        step_number INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        tool        TEXT NOT NULL,
        action      TEXT NOT NULL,
        parameters  TEXT NOT NULL,
        status      TEXT NOT NULL,
        result_text TEXT NOT NULL,
        latency_ms  INTEGER NOT NULL,
        tokens      INTEGER,
        PRIMARY KEY (ns, episode_id, step_number),
        FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
    )",
    // Learned items: the item as JSON in `body`, plus the columns queries filter and sort on.
    // Unset context fields are NULL and match any query value.
    "CREATE TABLE patterns (
        ns          TEXT NOT NULL,
        id          TEXT NOT NULL,
        kind        TEXT NOT NULL,
        task_type   TEXT,
        domain      TEXT,
        language    TEXT,
        status      TEXT NOT NULL,
        occurrences INTEGER NOT NULL,
        successes   INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    )",
    "CREATE INDEX patterns_by_occurrences ON patterns (ns, occurrences DESC, id)",
    "CREATE TABLE heuristics (
        ns            TEXT NOT NULL,
        id            TEXT NOT NULL,
        condition_key TEXT NOT NULL,
        task_type     TEXT,
        domain        TEXT,
        language      TEXT,
        status        TEXT NOT NULL,
        support       INTEGER NOT NULL,
        against       INTEGER NOT NULL,
        last_seen     INTEGER NOT NULL,
        body          TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    )",
    "CREATE INDEX heuristics_by_condition ON heuristics (ns, condition_key)",
    "CREATE INDEX heuristics_by_support ON heuristics (ns, support DESC, id)",
    "CREATE TABLE lessons (
        ns          TEXT NOT NULL,
        id          TEXT NOT NULL,
        task_type   TEXT,
        domain      TEXT,
        language    TEXT,
        status      TEXT NOT NULL,
        failed_tool TEXT NOT NULL,
        error_class TEXT NOT NULL,
        occurrences INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    )",
    "CREATE INDEX lessons_by_occurrences ON lessons (ns, occurrences DESC, id)",
    // Pattern-usage (feedback) events: one per (target, episode); `seq` is insertion order.
    "CREATE TABLE feedback (
        seq         INTEGER PRIMARY KEY,
        ns          TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target_id   TEXT NOT NULL,
        episode_id  TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        recorded_at INTEGER NOT NULL,
        UNIQUE (ns, target_kind, target_id, episode_id)
    )",
    "CREATE INDEX feedback_by_target ON feedback (ns, target_kind, target_id, seq)",
    // Full-text index: one row per episode part (`task`, each appended batch of `steps`,
    // `reflection`), written in the same transaction as the rows it indexes.
    "CREATE VIRTUAL TABLE episode_text USING fts5 (
        body,
        ns UNINDEXED,
        episode_id UNINDEXED,
        part UNINDEXED,
        tokenize = 'unicode61 remove_diacritics 0'
    )",
];

/// Version 2: embeddings, with a native libsql vector column.
const V2: &[&str] = &[
    // `vector` holds little-endian f32 values, libsql's `F32_BLOB` format, so libsql's vector
    // functions (`vector_distance_cos`, `vector_extract`, ...) work on it directly. No DiskANN
    // index yet: it inserts at ~150 rows/s; the retrieval layer decides when one pays off.
    "CREATE TABLE embeddings (
        ns         TEXT NOT NULL,
        episode_id TEXT NOT NULL,
        model      TEXT NOT NULL,
        dims       INTEGER NOT NULL,
        vector     F32_BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (ns, episode_id, model),
        FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
    )",
    "CREATE INDEX embeddings_by_model ON embeddings (ns, model, episode_id)",
];

/// Version 3: consolidation runs, learning-metrics snapshots, estimate records, restores.
const V3: &[&str] = &[
    // One row per consolidation run; `body` is the run (times and counts) as JSON.
    "CREATE TABLE consolidation_runs (
        ns         TEXT NOT NULL,
        id         TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        body       TEXT NOT NULL,
        PRIMARY KEY (ns, id)
    )",
    "CREATE INDEX consolidation_runs_by_start ON consolidation_runs (ns, started_at DESC, id DESC)",
    // One learning-metrics snapshot per (namespace, instant).
    "CREATE TABLE metrics_snapshots (
        ns       TEXT NOT NULL,
        taken_at INTEGER NOT NULL,
        body     TEXT NOT NULL,
        PRIMARY KEY (ns, taken_at)
    )",
    // A recommendation's estimate stored with the episode that followed it; `completed_at`
    // is set (and the actuals are in `body`) once the episode completes.
    "CREATE TABLE estimates (
        ns           TEXT NOT NULL,
        episode_id   TEXT NOT NULL,
        domain       TEXT NOT NULL,
        recorded_at  INTEGER NOT NULL,
        completed_at INTEGER,
        body         TEXT NOT NULL,
        PRIMARY KEY (ns, episode_id),
        FOREIGN KEY (ns, episode_id) REFERENCES episodes (ns, id)
    )",
    "CREATE INDEX estimates_by_domain ON estimates (ns, domain, completed_at DESC)",
    "CREATE INDEX estimates_by_completion ON estimates (ns, completed_at DESC)",
    // The latest restore of each pruned pattern or heuristic brought back by `restore`.
    "CREATE TABLE learned_restores (
        ns          TEXT NOT NULL,
        target_kind TEXT NOT NULL,
        target_id   TEXT NOT NULL,
        restored_at INTEGER NOT NULL,
        PRIMARY KEY (ns, target_kind, target_id)
    ) WITHOUT ROWID",
];

/// Version 4: the index change log (filled by triggers) and the index snapshots.
const V4: &[&str] = &[
    // One row per change to an embedding (any model) or to the summary of an episode that has
    // an embedding, so a process holding the in-process index (or a snapshot of it) at
    // position `seq` re-reads only the episodes changed after it. Written by the triggers
    // below, in the transaction of the change itself.
    "CREATE TABLE index_changes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        ns         TEXT NOT NULL,
        episode_id TEXT NOT NULL
    )",
    "CREATE INDEX index_changes_by_ns ON index_changes (ns, seq)",
    "CREATE TRIGGER index_log_embedding_insert AFTER INSERT ON embeddings BEGIN
        INSERT INTO index_changes (ns, episode_id) VALUES (NEW.ns, NEW.episode_id);
    END",
    "CREATE TRIGGER index_log_embedding_update AFTER UPDATE ON embeddings BEGIN
        INSERT INTO index_changes (ns, episode_id) VALUES (NEW.ns, NEW.episode_id);
    END",
    "CREATE TRIGGER index_log_embedding_delete AFTER DELETE ON embeddings BEGIN
        INSERT INTO index_changes (ns, episode_id) VALUES (OLD.ns, OLD.episode_id);
    END",
    // Summary columns only, and only for embedded episodes: an episode is usually embedded
    // after it completes, so its step appends log nothing.
    "CREATE TRIGGER index_log_episode_update
        AFTER UPDATE OF task_description, task_type, domain, language, framework, complexity,
            tags, step_count, started_at, completed_at, outcome_kind, reward_total ON episodes
        WHEN EXISTS (SELECT 1 FROM embeddings WHERE ns = NEW.ns AND episode_id = NEW.id)
    BEGIN
        INSERT INTO index_changes (ns, episode_id) VALUES (NEW.ns, NEW.id);
    END",
    "CREATE TRIGGER index_log_episode_delete AFTER DELETE ON episodes BEGIN
        INSERT INTO index_changes (ns, episode_id) VALUES (OLD.ns, OLD.id);
    END",
    // The encoded in-process index of a namespace for one vector key, current as of the log
    // position `as_of` (derived data: the retrieval layer writes and reads it whole). The
    // bytes are stored in parts of at most 1 MiB, each tagged with the write they belong to,
    // so a reader can fetch them on two connections at once.
    "CREATE TABLE index_snapshots (
        ns         TEXT NOT NULL,
        model      TEXT NOT NULL,
        as_of      INTEGER NOT NULL,
        written_at INTEGER NOT NULL,
        parts      INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,
        PRIMARY KEY (ns, model)
    )",
    "CREATE TABLE index_snapshot_parts (
        ns         TEXT NOT NULL,
        model      TEXT NOT NULL,
        part       INTEGER NOT NULL,
        written_at INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (ns, model, part)
    )",
];

/// Version 5: step keys with store-assigned numbers, and the change counter that keeps the
/// caches of several processes and machines coherent.
const V5: &[&str] = &[
    // The key the facade drew when the step was logged; the number is assigned inside the
    // append transaction (after the highest stored). Rows of earlier versions have no key.
    "ALTER TABLE steps ADD COLUMN step_key INTEGER",
    "CREATE UNIQUE INDEX steps_by_key ON steps (ns, episode_id, step_key) \
        WHERE step_key IS NOT NULL",
    // One row: the position of the last write that changed a cacheable row, and the identity
    // of this database (a restore gives the database a new one).
    "CREATE TABLE change_counter (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        seq     INTEGER NOT NULL,
        db_id   TEXT NOT NULL
    )",
    "INSERT INTO change_counter (id, seq, db_id) VALUES (1, 0, lower(hex(randomblob(16))))",
    // Every write that changes one of these rows takes the next counter value and stamps it
    // here; a cache at position p drops exactly the rows stamped after p. The indexes are
    // across namespaces: a process's cache holds every namespace it serves.
    "ALTER TABLE episodes ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE patterns ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE heuristics ADD COLUMN changed_seq INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX episodes_by_change ON episodes (changed_seq, ns, id)",
    "CREATE INDEX patterns_by_change ON patterns (changed_seq, ns, id)",
    "CREATE INDEX heuristics_by_change ON heuristics (changed_seq, ns, id)",
];

/// Version 6: the full-text index keeps each namespace's statistics apart. FTS5's `bm25()`
/// computes document frequencies, the document count and the average length over the whole
/// table, so one namespace's episodes changed another's scores (and the time its queries
/// took). Every indexed term now carries a prefix derived from its namespace, so each
/// namespace has its own posting lists; the scores are computed from per-namespace counts
/// (see [`crate::text_index`]).
const V6: &[&str] = &[
    // Contentless: the terms are only indexed, never stored a second time.
    "CREATE VIRTUAL TABLE episode_terms USING fts5 (
        terms,
        content = '',
        contentless_delete = 1,
        tokenize = 'ascii'
    )",
    // One row per occurrence of a term: the postings a query reads.
    "CREATE VIRTUAL TABLE episode_terms_hits USING fts5vocab (episode_terms, 'instance')",
    // What each index row belongs to, and its length in terms.
    "CREATE TABLE text_rows (
        id          INTEGER PRIMARY KEY,
        ns          TEXT NOT NULL,
        episode_id  TEXT NOT NULL,
        part        TEXT NOT NULL,
        len         INTEGER NOT NULL
    )",
    "CREATE INDEX text_rows_by_episode ON text_rows (ns, episode_id, part)",
    // Per namespace: its index rows and their total length (BM25's N and average length).
    "CREATE TABLE text_stats (
        ns      TEXT PRIMARY KEY,
        rows    INTEGER NOT NULL,
        terms   INTEGER NOT NULL
    )",
    // The one way rows are written: insert into this view; the trigger keeps the three
    // tables in step in the writer's transaction.
    "CREATE VIEW text_in (terms, len, ns, episode_id, part) AS \
        SELECT NULL, NULL, NULL, NULL, NULL WHERE 0",
    "CREATE TRIGGER text_in_insert INSTEAD OF INSERT ON text_in BEGIN
        INSERT INTO text_rows (ns, episode_id, part, len)
            VALUES (NEW.ns, NEW.episode_id, NEW.part, NEW.len);
        INSERT INTO episode_terms (rowid, terms) VALUES (last_insert_rowid(), NEW.terms);
        INSERT INTO text_stats (ns, rows, terms) VALUES (NEW.ns, 1, NEW.len)
            ON CONFLICT (ns) DO UPDATE SET rows = rows + 1, terms = terms + excluded.terms;
    END",
    "CREATE TRIGGER text_rows_delete AFTER DELETE ON text_rows BEGIN
        DELETE FROM episode_terms WHERE rowid = OLD.id;
        UPDATE text_stats SET rows = rows - 1, terms = terms - OLD.len WHERE ns = OLD.ns;
    END",
];

/// Every migration, in order. Never edit a released one: add a new version instead.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "episodes, steps, tags, patterns, heuristics, lessons, feedback, fts5 index",
        statements: V1,
        then: Then::Nothing,
    },
    Migration {
        version: 2,
        description: "embeddings with an F32_BLOB vector column",
        statements: V2,
        then: Then::Nothing,
    },
    Migration {
        version: 3,
        description: "consolidation runs, metrics snapshots, estimate records, restores",
        statements: V3,
        then: Then::Nothing,
    },
    Migration {
        version: 4,
        description: "index change log (triggers) and index snapshots",
        statements: V4,
        then: Then::Nothing,
    },
    Migration {
        version: 5,
        description: "step keys with store-assigned numbers, change counter and stamps",
        statements: V5,
        then: Then::Nothing,
    },
    Migration {
        version: 6,
        description: "per-namespace full-text index and statistics",
        statements: V6,
        then: Then::MoveTextIndex,
    },
];

/// The database's schema version (0 for a new database).
pub(crate) async fn current_version(conn: &Connection) -> DbResult<u32> {
    let table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'";
    if query_opt(conn, table, (), |_| Ok(())).await?.is_none() {
        return Ok(0);
    }
    let sql = "SELECT COALESCE(MAX(version), 0) FROM schema_version";
    let version = query_opt(conn, sql, (), |row| Ok(row.get::<i64>(0)?)).await?;
    let version = version.unwrap_or(0);
    u32::try_from(version)
        .map_err(|_| DriverError::Schema(format!("invalid schema version {version}")).into())
}

/// Brings the database to `target`: applies the missing migrations in one IMMEDIATE
/// transaction. Returns the version the database has afterwards.
pub(crate) async fn migrate(conn: &Connection, target: u32) -> DbResult<u32> {
    let found = current_version(conn).await?;
    check_not_newer(found)?;
    if found >= target {
        return Ok(found);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .await?;
    tx.execute(CREATE_VERSION_TABLE, ()).await?;
    // Re-read under the write lock: another opener may have migrated meanwhile.
    let found = current_version(&tx).await?;
    check_not_newer(found)?;
    let mut version = found;
    for m in MIGRATIONS
        .iter()
        .filter(|m| m.version > found && m.version <= target)
    {
        for stmt in m.statements {
            tx.execute(stmt, ()).await?;
        }
        if m.then == Then::MoveTextIndex {
            crate::text_index::move_from_v1(&tx).await?;
        }
        tx.execute(
            "INSERT INTO schema_version (version, description, applied_at) \
             VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (i64::from(m.version), m.description),
        )
        .await?;
        info!(
            version = m.version,
            description = m.description,
            "applied schema migration"
        );
        version = m.version;
    }
    tx.commit().await?;
    Ok(version)
}

fn check_not_newer(found: u32) -> DbResult<()> {
    if found > SCHEMA_VERSION {
        return Err(DriverError::Schema(format!(
            "database schema version {found} is newer than this build supports ({SCHEMA_VERSION}); upgrade the memory"
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_end_at_the_current_version() {
        let versions: Vec<u32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<u32> = (1..=SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
        assert!(MIGRATIONS.iter().all(|m| !m.statements.is_empty()));
    }
}
