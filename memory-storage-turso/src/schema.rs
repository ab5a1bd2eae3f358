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
use crate::prepared::Db;
use crate::sql::query_opt;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 13;

/// The version from which the change feed is read from `change_log` (the per-table change
/// indexes are gone; see `migrations/v11.sql`).
pub(crate) const CHANGE_LOG: u32 = 11;

/// One forward migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// The version the database has after it.
    pub version: u32,
    /// What it does, stored in `schema_version.description`.
    pub description: &'static str,
    /// Its file, `migrations/v<version>.sql`: the statements, run in order in the migration
    /// transaction (see [`statements`]).
    pub sql: &'static str,
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
    /// Copies every episode's step rows into pages and drops the old table (see
    /// [`crate::step_pages::pack_v7_steps`]).
    PackSteps,
    /// Nothing to run: the version marks values written in a form older builds cannot read,
    /// so that they refuse the database instead of failing on those values.
    NewFormat,
}

const CREATE_VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)";

/// Every migration, in order. Never edit a released one: add a new version instead.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "episodes, steps, tags, patterns, heuristics, lessons, feedback, fts5 index",
        sql: include_str!("../migrations/v1.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 2,
        description: "embeddings with an F32_BLOB vector column",
        sql: include_str!("../migrations/v2.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 3,
        description: "consolidation runs, metrics snapshots, estimate records, restores",
        sql: include_str!("../migrations/v3.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 4,
        description: "index change log (triggers) and index snapshots",
        sql: include_str!("../migrations/v4.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 5,
        description: "step keys with store-assigned numbers, change counter and stamps",
        sql: include_str!("../migrations/v5.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 6,
        description: "per-namespace full-text index and statistics",
        sql: include_str!("../migrations/v6.sql"),
        then: Then::MoveTextIndex,
    },
    Migration {
        version: 7,
        description: "steps clustered by (ns, episode_id, step_number): no separate key index",
        sql: include_str!("../migrations/v7.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 8,
        description: "steps stored in pages of up to 64 (one row per batch)",
        sql: include_str!("../migrations/v8.sql"),
        then: Then::PackSteps,
    },
    Migration {
        version: 9,
        description: "learned items indexed by their context (domain, language, task type)",
        sql: include_str!("../migrations/v9.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 10,
        description: "step page bodies and reflections of 256 bytes or more stored zstd-compressed",
        sql: include_str!("../migrations/v10.sql"),
        then: Then::NewFormat,
    },
    Migration {
        version: 11,
        description: "the change feed as an append-only log written by triggers",
        sql: include_str!("../migrations/v11.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 12,
        description: "the active heuristic of each condition key indexed on its own",
        sql: include_str!("../migrations/v12.sql"),
        then: Then::Nothing,
    },
    Migration {
        version: 13,
        description: "forgotten episodes: audit records, and their ids never stored again",
        sql: include_str!("../migrations/v13.sql"),
        then: Then::Nothing,
    },
];

/// The database's schema version (0 for a new database).
pub(crate) async fn current_version(conn: &Connection) -> DbResult<u32> {
    let conn = &Db::plain(conn);
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
        for stmt in statements(m.sql) {
            tx.execute(stmt, ()).await?;
        }
        if m.then == Then::MoveTextIndex {
            crate::text_index::move_from_v1(&Db::plain(&tx)).await?;
        }
        if m.then == Then::PackSteps {
            crate::step_pages::pack_v7_steps(&Db::plain(&tx)).await?;
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

/// The statements of a migration file. A `;` ending a line ends a statement, except inside
/// a trigger's body (from a line ending in `BEGIN` to the line `END;`); `--` comment lines
/// and blank lines between statements are left out.
pub(crate) fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    let mut in_body = false;
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        let trimmed = line.trim();
        if start.is_none() && !trimmed.is_empty() && !trimmed.starts_with("--") {
            start = Some(offset);
        }
        let comment = trimmed.starts_with("--");
        in_body |= start.is_some() && !comment && trimmed.ends_with("BEGIN");
        if let Some(from) = start
            && !comment
            && trimmed.ends_with(';')
            && (!in_body || trimmed == "END;")
        {
            let end = offset + line.trim_end().len() - 1;
            out.push(&sql[from..end]);
            start = None;
            in_body = false;
        }
        offset += line.len();
    }
    out
}

/// Fails, naming both versions, when `found` is newer than this build's schema.
pub(crate) fn check_not_newer(found: u32) -> DbResult<()> {
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
        assert!(
            MIGRATIONS
                .iter()
                .all(|m| statements(m.sql).is_empty() == (m.then == Then::NewFormat)),
            "a migration runs statements unless it only marks a new format"
        );
    }

    /// The text of `sql` without comment lines and whitespace.
    fn code(sql: &str) -> String {
        let lines = sql.lines().filter(|l| !l.trim_start().starts_with("--"));
        lines
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect()
    }

    #[test]
    fn every_line_of_a_migration_file_is_in_a_statement_or_a_comment() {
        for m in MIGRATIONS {
            let split = statements(m.sql);
            let joined = if split.is_empty() {
                String::new()
            } else {
                split.join(";\n") + ";"
            };
            assert_eq!(code(&joined), code(m.sql), "v{}", m.version);
        }
        let trigger =
            "CREATE TRIGGER t AFTER INSERT ON a BEGIN\n  INSERT INTO b VALUES (1);\nEND;\n";
        let two = format!("-- c;\nCREATE TABLE a (x);\n\n{trigger}");
        assert_eq!(
            statements(&two),
            [
                "CREATE TABLE a (x)",
                trigger.trim_end().trim_end_matches(';')
            ]
        );
    }
}
