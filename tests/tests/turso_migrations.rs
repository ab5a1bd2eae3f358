//! Pins the schema migrations of `TursoStorage`: a database at schema version 1 (the first
//! release: no embeddings table, no step keys) filled with episodes, steps, learned items and
//! feedback is upgraded in place to the current version when opened by the current code;
//! every row survives unchanged, the new table works, `schema_version` records each applied
//! migration once, reopening applies nothing, and a database from a newer build is refused
//! with a permanent error instead of being touched.
//!
//! The version-1 file is made by filling a current database through the memory and then
//! taking away everything a fresh version-1 database does not have (tables, indexes,
//! triggers, columns, version rows): the current write path needs the current schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use memory_core::{
    EmbeddingStore, Episode, EpisodeFilter, EpisodeQuery, EpisodeStore, FeedbackOutcome,
    FeedbackTarget, LearnedQuery, MemoryConfig, Namespace, NewEpisode, Outcome, PatternId,
    SelfLearningMemory, StepInput, StorageExt, TaskContext, TaskType, TextQuery,
};
use memory_storage_turso::{SCHEMA_VERSION, TursoConfig, TursoStorage};

async fn tables(path: &Path) -> Vec<String> {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    let mut rows = conn
        .query(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            (),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push(row.get::<String>(0).unwrap());
    }
    out
}

async fn versions(path: &Path) -> Vec<(i64, String)> {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    let mut rows = conn
        .query(
            "SELECT version, description FROM schema_version ORDER BY version",
            (),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push((row.get::<i64>(0).unwrap(), row.get::<String>(1).unwrap()));
    }
    out
}

async fn schema_objects(conn: &libsql::Connection) -> Vec<(String, String)> {
    let mut rows = conn
        .query(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE 'episode_text_%' ORDER BY type = 'table', name",
            (),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push((row.get::<String>(0).unwrap(), row.get::<String>(1).unwrap()));
    }
    out
}

async fn columns(conn: &libsql::Connection, table: &str) -> Vec<String> {
    let mut rows = conn
        .query(
            &format!("SELECT name FROM pragma_table_info('{table}')"),
            (),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push(row.get::<String>(0).unwrap());
    }
    out
}

/// The first column of every row `sql` selects, binding `?1` to `param`.
async fn strings(conn: &libsql::Connection, sql: &str, param: &str) -> Vec<String> {
    let mut rows = conn.query(sql, [param]).await.unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push(row.get::<String>(0).unwrap());
    }
    out
}

/// Recreates `steps` as the scratch database `like` defines it (its `CREATE TABLE` and
/// indexes) and fills it from `step_pages`, a row per step with the columns `like` has (a
/// step stored without a key gets none), then drops the pages: an older version's layout of
/// the same steps.
async fn unpack_steps(conn: &libsql::Connection, like: &libsql::Connection) {
    let create = strings(
        like,
        "SELECT sql FROM sqlite_master WHERE tbl_name = ?1 AND sql IS NOT NULL \
         ORDER BY type = 'index'",
        "steps",
    )
    .await;
    for sql in create {
        conn.execute(&sql, ()).await.unwrap();
    }
    // Version 10 stores large page bodies compressed: JSON text again first.
    let mut rows = conn
        .query(
            "SELECT rowid, body FROM step_pages WHERE typeof(body) = 'blob'",
            (),
        )
        .await
        .unwrap();
    let mut compressed = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        compressed.push((row.get::<i64>(0).unwrap(), row.get::<Vec<u8>>(1).unwrap()));
    }
    for (rowid, blob) in compressed {
        let json = String::from_utf8(zstd::bulk::decompress(&blob, 1 << 24).unwrap()).unwrap();
        conn.execute(
            "UPDATE step_pages SET body = ?1 WHERE rowid = ?2",
            (json, rowid),
        )
        .await
        .unwrap();
    }
    let old = columns(like, "steps").await;
    let (names, values): (Vec<&str>, Vec<&str>) = [
        ("ns", "p.ns"),
        ("episode_id", "p.episode_id"),
        ("step_number", "p.first_number + k.key"),
        ("at", "s.value ->> '$[0]'"),
        ("tool", "s.value ->> '$[1]'"),
        ("action", "s.value ->> '$[2]'"),
        ("parameters", "s.value -> '$[3]'"),
        ("status", "s.value ->> '$[4]'"),
        ("result_text", "s.value ->> '$[5]'"),
        ("latency_ms", "s.value ->> '$[6]'"),
        ("tokens", "s.value ->> '$[7]'"),
        ("step_key", "NULLIF(k.value, 0)"),
    ]
    .into_iter()
    .filter(|(name, _)| old.iter().any(|c| c == name))
    .unzip();
    conn.execute(
        &format!(
            "INSERT INTO steps ({}) SELECT {} FROM step_pages p, json_each(p.keys) k, \
             json_each(p.body) s WHERE s.key = k.key",
            names.join(", "),
            values.join(", ")
        ),
        (),
    )
    .await
    .unwrap();
    conn.execute("DROP TABLE step_pages", ()).await.unwrap();
}

/// The `CREATE TABLE` statement of `table` and the names of its automatic indexes.
async fn table_shape(path: &Path, table: &str) -> (String, Vec<String>) {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    let mut rows = conn
        .query(
            "SELECT type, name, COALESCE(sql, '') FROM sqlite_master WHERE tbl_name = ?1",
            [table],
        )
        .await
        .unwrap();
    let (mut create, mut auto) = (String::new(), Vec::new());
    while let Some(row) = rows.next().await.unwrap() {
        let (kind, name) = (row.get::<String>(0).unwrap(), row.get::<String>(1).unwrap());
        if kind == "table" {
            create = row.get::<String>(2).unwrap();
        } else if name.starts_with("sqlite_autoindex") {
            auto.push(name);
        }
    }
    (create, auto)
}

/// Turns the database at `path` into a version-1 database: drops every trigger, index, table
/// and column that a fresh version-1 database lacks, and the later version rows.
async fn downgrade_to_version_1(path: &Path, scratch: &Path) {
    drop(
        TursoStorage::open(
            TursoConfig::local(scratch)
                .schema_version(1)
                .build()
                .unwrap(),
        )
        .await
        .unwrap(),
    );
    let v1 = libsql::Builder::new_local(scratch).build().await.unwrap();
    let v1 = v1.connect().unwrap();
    let keep = schema_objects(&v1).await;
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    // Version 8 stores steps in pages: back to version 1's table, a row per step.
    unpack_steps(&conn, &v1).await;
    for (kind, name) in schema_objects(&conn).await {
        if !keep.contains(&(kind.clone(), name.clone())) {
            // IF EXISTS: dropping a table also drops its triggers and an FTS5 table its
            // shadow tables.
            conn.execute(
                &format!("DROP {} IF EXISTS {name}", kind.to_uppercase()),
                (),
            )
            .await
            .unwrap();
        }
    }
    for (kind, table) in keep {
        if kind != "table" || table == "episode_text" {
            continue;
        }
        let wanted = columns(&v1, &table).await;
        for column in columns(&conn, &table).await {
            if !wanted.contains(&column) {
                conn.execute(&format!("ALTER TABLE {table} DROP COLUMN {column}"), ())
                    .await
                    .unwrap();
            }
        }
    }
    // Version 1's full-text table (version 6 moved its rows and dropped it), filled as the
    // version-1 code did: the task text, one row of all steps, the reflection.
    let mut rows = v1
        .query(
            "SELECT sql FROM sqlite_master WHERE name = 'episode_text'",
            (),
        )
        .await
        .unwrap();
    let create: String = rows.next().await.unwrap().unwrap().get(0).unwrap();
    conn.execute(&create, ()).await.unwrap();
    conn.execute(
        "INSERT INTO episode_text (body, ns, episode_id, part) \
         SELECT task_description || ' ' || domain || ' ' || COALESCE(language, ''), ns, id, 'task' \
         FROM episodes",
        (),
    )
    .await
    .unwrap();
    conn.execute(
        "INSERT INTO episode_text (body, ns, episode_id, part) \
         SELECT group_concat(tool || ' ' || action || ' ' || result_text, char(10)), ns, \
         episode_id, 'steps' FROM steps GROUP BY ns, episode_id",
        (),
    )
    .await
    .unwrap();
    conn.execute("DELETE FROM schema_version WHERE version > 1", ())
        .await
        .unwrap();
}

async fn all_episodes(s: &TursoStorage, ns: &Namespace) -> Vec<Episode> {
    let mut out = Vec::new();
    for summary in s
        .query_episodes(
            ns,
            &EpisodeQuery {
                limit: 1_000,
                ..EpisodeQuery::default()
            },
        )
        .await
        .unwrap()
    {
        out.push(std::sync::Arc::unwrap_or_clone(
            s.get_episode(ns, summary.id).await.unwrap().unwrap(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_database_is_upgraded_in_place() {
    const {
        assert!(
            SCHEMA_VERSION >= 2,
            "the upgrade path needs a previous version"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let ns = Namespace::new("migrations/v1").unwrap();

    // A database filled by the memory, then taken back to version 1.
    let old = Arc::new(TursoStorage::open_local(&path).await.unwrap());
    let memory = SelfLearningMemory::new(old.clone(), MemoryConfig::default()).unwrap();
    let ctx = TaskContext::new("databases")
        .with_language("go")
        .with_tag("legacy");
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = memory
            .start_episode(
                &ns,
                NewEpisode::new(
                    format!("migrate the orders table {i}"),
                    TaskType::Refactoring,
                    ctx.clone(),
                ),
            )
            .await
            .unwrap();
        memory
            .log_step(
                &ns,
                id,
                StepInput::error("psql", "run migration", "ERROR: deadlock detected"),
            )
            .await
            .unwrap();
        memory
            .log_step(
                &ns,
                id,
                StepInput::ok("edit_file", "split the migration", "ok"),
            )
            .await
            .unwrap();
        memory
            .log_step(
                &ns,
                id,
                StepInput::ok("psql", "run migration", "ALTER TABLE"),
            )
            .await
            .unwrap();
        let report = memory
            .complete_episode(&ns, id, Outcome::success("migrated"))
            .await
            .unwrap();
        memory
            .record_feedback(
                &ns,
                FeedbackTarget::Pattern(PatternId(report.patterns[0].id.clone())),
                id,
                FeedbackOutcome::Helped,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    memory.shutdown().await.unwrap();
    let all = LearnedQuery {
        include_inactive: true,
        limit: 1_000,
        ..LearnedQuery::default()
    };
    let mut episodes = all_episodes(&old, &ns).await;
    for e in &mut episodes {
        for st in &mut e.steps {
            st.key = 0; // version 1 stored no step keys
        }
    }
    let patterns = old.query_patterns(&ns, &all).await.unwrap();
    let heuristics = old.query_heuristics(&ns, &all).await.unwrap();
    let lessons = old.query_lessons(&ns, &all).await.unwrap();
    let stats = old.namespace_stats(&ns).await.unwrap();
    assert!(!lessons.is_empty() && !heuristics.is_empty() && stats.feedback == 4);
    drop(memory);
    drop(old);
    downgrade_to_version_1(&path, &dir.path().join("fresh-v1.db")).await;
    assert!(
        !tables(&path).await.contains(&"embeddings".to_owned()),
        "version 1 has no embeddings table"
    );
    assert_eq!(versions(&path).await.len(), 1);
    let old = TursoStorage::open(TursoConfig::local(&path).schema_version(1).build().unwrap())
        .await
        .unwrap();
    assert_eq!(old.schema_version(), 1);
    let err = old
        .put_embedding(&ns, ids[0], "m", &[1.0])
        .await
        .unwrap_err();
    assert!(
        !err.is_transient(),
        "a missing table is not transient: {err}"
    );
    drop(old);

    // The current code upgrades it in place.
    let new = TursoStorage::open_local(&path).await.unwrap();
    assert_eq!(new.schema_version(), SCHEMA_VERSION);
    assert!(tables(&path).await.contains(&"embeddings".to_owned()));
    let applied = versions(&path).await;
    assert_eq!(
        applied.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (1..=i64::from(SCHEMA_VERSION)).collect::<Vec<_>>(),
        "each migration recorded once: {applied:?}"
    );
    assert_eq!(
        all_episodes(&new, &ns).await,
        episodes,
        "episodes survive the upgrade"
    );
    assert_eq!(new.query_patterns(&ns, &all).await.unwrap(), patterns);
    assert_eq!(new.query_heuristics(&ns, &all).await.unwrap(), heuristics);
    assert_eq!(new.query_lessons(&ns, &all).await.unwrap(), lessons);
    assert_eq!(new.namespace_stats(&ns).await.unwrap(), stats);
    // The version-1 full-text rows were moved to the per-namespace index: task words and
    // step words both find every episode, and the old table is gone.
    for words in ["orders table", "deadlock detected"] {
        let hits = new
            .search_episodes(
                &ns,
                &TextQuery {
                    text: words.to_owned(),
                    filter: EpisodeFilter::default(),
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            hits.iter().map(|h| h.episode_id).collect::<BTreeSet<_>>(),
            ids.iter().copied().collect::<BTreeSet<_>>(),
            "{words}"
        );
    }
    assert!(!tables(&path).await.contains(&"episode_text".to_owned()));
    assert_eq!(
        new.episodes_missing_embedding(&ns, "m", None, 10)
            .await
            .unwrap(),
        {
            let mut sorted = ids.clone();
            sorted.sort();
            sorted
        }
    );
    new.put_embedding(&ns, ids[0], "m", &[1.0, 2.0])
        .await
        .unwrap();
    assert_eq!(
        new.get_embedding(&ns, ids[0], "m").await.unwrap(),
        Some(vec![1.0, 2.0])
    );
    drop(new);

    // Reopening applies nothing more.
    let again = TursoStorage::open_local(&path).await.unwrap();
    assert_eq!(again.schema_version(), SCHEMA_VERSION);
    assert_eq!(versions(&path).await, applied);
    assert_eq!(
        again.get_embedding(&ns, ids[0], "m").await.unwrap(),
        Some(vec![1.0, 2.0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.db");
    drop(TursoStorage::open_local(&path).await.unwrap());
    {
        let db = libsql::Builder::new_local(&path).build().await.unwrap();
        let conn = db.connect().unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, 'from the future', 'later')",
            [i64::from(SCHEMA_VERSION) + 1],
        )
        .await
        .unwrap();
    }
    let err = TursoStorage::open_local(&path).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
    assert_eq!(
        versions(&path).await.len(),
        SCHEMA_VERSION as usize + 1,
        "nothing was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_6_steps_move_into_pages_with_their_keys() {
    const {
        assert!(SCHEMA_VERSION >= 8, "version 8 stores steps in pages");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v6.db");
    let ns = Namespace::new("migrations/v6").unwrap();
    let storage = Arc::new(TursoStorage::open_local(&path).await.unwrap());
    let memory = SelfLearningMemory::new(storage.clone(), MemoryConfig::default()).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = memory
            .start_episode(
                &ns,
                NewEpisode::new(
                    format!("rotate the signing keys {i}"),
                    TaskType::Refactoring,
                    TaskContext::new("security").with_language("go"),
                ),
            )
            .await
            .unwrap();
        for (tool, ok) in [("vault", false), ("edit_file", true), ("vault", true)] {
            let step = if ok {
                StepInput::ok(tool, "rotate", "done")
            } else {
                StepInput::error(tool, "rotate", "permission denied")
            };
            memory.log_step(&ns, id, step).await.unwrap();
        }
        memory.flush().await.unwrap();
        if i < 2 {
            memory
                .complete_episode(&ns, id, Outcome::success("rotated"))
                .await
                .unwrap();
        }
        ids.push(id);
    }
    memory.shutdown().await.unwrap();
    let episodes = all_episodes(&storage, &ns).await;
    assert!(episodes.iter().all(|e| e.steps.iter().all(|s| s.key != 0)));
    drop(memory);
    drop(storage);

    // Back to version 6's layout: a rowid table with its primary key in its own index.
    let scratch = dir.path().join("fresh-v6.db");
    drop(
        TursoStorage::open(
            TursoConfig::local(&scratch)
                .schema_version(6)
                .build()
                .unwrap(),
        )
        .await
        .unwrap(),
    );
    {
        let v6 = libsql::Builder::new_local(&scratch).build().await.unwrap();
        let v6 = v6.connect().unwrap();
        let db = libsql::Builder::new_local(&path).build().await.unwrap();
        let conn = db.connect().unwrap();
        unpack_steps(&conn, &v6).await;
        conn.execute("DELETE FROM schema_version WHERE version > 6", ())
            .await
            .unwrap();
        // Version 9's context indexes, which the migrations create again.
        for table in ["patterns", "heuristics", "lessons"] {
            let drop = format!("DROP INDEX {table}_by_context");
            conn.execute(&drop, ()).await.unwrap();
        }
        // Version 11's change log, and the change indexes it replaced.
        let undo_v11 = "DROP TABLE change_log; \
             DROP TRIGGER change_log_prune; \
             DROP TRIGGER change_log_episode_insert; DROP TRIGGER change_log_episode_update; \
             DROP TRIGGER change_log_pattern_insert; DROP TRIGGER change_log_pattern_update; \
             DROP TRIGGER change_log_heuristic_insert; DROP TRIGGER change_log_heuristic_update; \
             ALTER TABLE change_counter DROP COLUMN log_from; \
             CREATE INDEX episodes_by_change ON episodes (changed_seq, ns, id); \
             CREATE INDEX patterns_by_change ON patterns (changed_seq, ns, id); \
             CREATE INDEX heuristics_by_change ON heuristics (changed_seq, ns, id);";
        conn.execute_batch(undo_v11).await.unwrap();
        // Version 12's index of active heuristics.
        let undo_v12 = "DROP INDEX heuristics_active_by_condition";
        conn.execute(undo_v12, ()).await.unwrap();
        // Version 13's audit records of forgotten episodes.
        let undo_v13 = "DROP TRIGGER episodes_forgotten_stay_gone; DROP TABLE forgotten_episodes;";
        conn.execute_batch(undo_v13).await.unwrap();
    }
    let (create, auto) = table_shape(&path, "steps").await;
    assert!(
        !create.contains("WITHOUT ROWID") && auto.len() == 1,
        "{create} {auto:?}"
    );

    let new = TursoStorage::open_local(&path).await.unwrap();
    assert_eq!(new.schema_version(), SCHEMA_VERSION);
    let (steps, _) = table_shape(&path, "steps").await;
    assert!(steps.is_empty(), "the step rows are gone: {steps}");
    let (pages, _) = table_shape(&path, "step_pages").await;
    assert!(pages.contains("first_number"), "{pages}");
    assert_eq!(
        all_episodes(&new, &ns).await,
        episodes,
        "steps survive with numbers and keys"
    );
    // Keys still make appends idempotent; new steps are numbered after the stored ones.
    let open = episodes.iter().find(|e| e.id == ids[2]).unwrap();
    new.append_steps(&ns, open.id, &open.steps).await.unwrap();
    let again = new.get_episode(&ns, open.id).await.unwrap().unwrap();
    assert_eq!(again.steps, open.steps, "a replayed append adds nothing");
    let mut extra = open.steps[0].clone();
    extra.key = open.steps.iter().map(|s| s.key).max().unwrap() + 1;
    new.append_steps(&ns, open.id, std::slice::from_ref(&extra))
        .await
        .unwrap();
    let grown = new.get_episode(&ns, open.id).await.unwrap().unwrap();
    assert_eq!(grown.steps.len(), 4);
    assert_eq!(grown.steps[3].step_number, 4);
    assert_eq!(grown.steps[3].key, extra.key);
}

/// The stored types of what `sql` (binding `?1` to the episode's id) selects of an episode.
async fn stored_types(path: &Path, sql: &str, id: memory_core::EpisodeId) -> Vec<String> {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    strings(&db.connect().unwrap(), sql, &id.to_string()).await
}

/// The stored type of an episode's reflection (`text`, `blob` or `null`).
async fn reflection_type(path: &Path, id: memory_core::EpisodeId) -> String {
    let sql = "SELECT typeof(reflection) FROM episodes WHERE id = ?1";
    stored_types(path, sql, id).await.remove(0)
}

/// The type of each stored page body of an episode, in step order (`text` or `blob`).
async fn page_body_types(path: &Path, id: memory_core::EpisodeId) -> Vec<String> {
    let sql = "SELECT typeof(body) FROM step_pages WHERE episode_id = ?1 ORDER BY first_number";
    stored_types(path, sql, id).await
}

/// 40 steps with outputs like a test run's, every fifth a compile error the next one fixes:
/// a page of them, and the reflection of an episode of them, are well over the size from
/// which version 10 compresses a value.
fn test_run_steps(from: usize) -> Vec<StepInput> {
    (from..from + 40)
        .map(|i| {
            if i % 5 == 0 {
                StepInput::error(
                    "cargo",
                    format!("build --package crate{i}"),
                    format!("error[E0425]: cannot find value `total{i}` in this scope"),
                )
            } else {
                StepInput::ok(
                    if i % 5 == 1 { "edit_file" } else { "cargo" },
                    format!("test --package crate{i}"),
                    format!("test result: ok. {i} passed; 0 failed; finished in 0.{i}s"),
                )
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_10_compresses_new_pages_and_reflections_and_reads_what_version_9_wrote() {
    const {
        assert!(SCHEMA_VERSION >= 10, "version 10 compresses page bodies");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v9.db");
    let ns = Namespace::new("migrations/v10").unwrap();
    let v9 = TursoConfig::local(&path).schema_version(9).build().unwrap();
    let storage = Arc::new(TursoStorage::open(v9).await.unwrap());
    assert_eq!(storage.schema_version(), 9);
    let memory = SelfLearningMemory::new(storage.clone(), MemoryConfig::default()).unwrap();
    let id = memory
        .start_episode(
            &ns,
            NewEpisode::new(
                "run the workspace tests",
                TaskType::Testing,
                TaskContext::new("tooling").with_language("rust"),
            ),
        )
        .await
        .unwrap();
    let mut logged = test_run_steps(0);
    for step in logged.clone() {
        memory.log_step(&ns, id, step).await.unwrap();
    }
    memory.flush().await.unwrap();
    // An episode completed under version 9: its reflection is JSON text.
    let done9 = memory
        .start_episode(
            &ns,
            NewEpisode::new(
                "run the crate tests",
                TaskType::Testing,
                TaskContext::new("tooling").with_language("rust"),
            ),
        )
        .await
        .unwrap();
    for step in test_run_steps(100) {
        memory.log_step(&ns, done9, step).await.unwrap();
    }
    let report9 = memory
        .complete_episode(&ns, done9, Outcome::success("green"))
        .await
        .unwrap();
    memory.shutdown().await.unwrap();
    drop(memory);
    drop(storage);
    assert_eq!(
        page_body_types(&path, id).await,
        ["text"],
        "a store kept at version 9 is written as version 9 reads it"
    );
    assert_eq!(reflection_type(&path, done9).await, "text");

    // The current build upgrades the file: nothing is rewritten, new pages are compressed.
    let storage = Arc::new(TursoStorage::open_local(&path).await.unwrap());
    assert_eq!(storage.schema_version(), SCHEMA_VERSION);
    assert_eq!(page_body_types(&path, id).await, ["text"]);
    let memory = SelfLearningMemory::new(storage.clone(), MemoryConfig::default()).unwrap();
    let more = test_run_steps(40);
    for step in more.clone() {
        memory.log_step(&ns, id, step).await.unwrap();
    }
    memory.flush().await.unwrap();
    // A short batch stays text even now.
    let last = StepInput::ok("git", "status", "clean");
    memory.log_step(&ns, id, last.clone()).await.unwrap();
    let report = memory
        .complete_episode(&ns, id, Outcome::success("all green"))
        .await
        .unwrap();
    assert_eq!(reflection_type(&path, id).await, "blob");
    assert_eq!(reflection_type(&path, done9).await, "text", "not rewritten");
    logged.extend(more);
    logged.push(last);
    assert_eq!(page_body_types(&path, id).await, ["text", "blob", "text"]);
    let read = storage.get_episode(&ns, id).await.unwrap().unwrap();
    let inputs: Vec<StepInput> = read.steps.iter().map(|s| s.input.clone()).collect();
    assert_eq!(
        inputs, logged,
        "every step reads back, from both kinds of page"
    );
    let numbers: Vec<u32> = read.steps.iter().map(|s| s.step_number).collect();
    assert_eq!(numbers, (1..=81).collect::<Vec<u32>>());
    assert_eq!(read.reflection.as_ref(), Some(&report.reflection));
    let read9 = storage.get_episode(&ns, done9).await.unwrap().unwrap();
    assert_eq!(read9.reflection.as_ref(), Some(&report9.reflection));
    memory.shutdown().await.unwrap();
    drop(memory);
    drop(storage);

    // A damaged compressed body is a clear error for that episode, not a panic or a wrong
    // answer, and leaves the rest of the store readable.
    {
        let db = libsql::Builder::new_local(&path).build().await.unwrap();
        let conn = db.connect().unwrap();
        conn.execute(
            "UPDATE step_pages SET body = substr(body, 1, length(body) / 2) \
             WHERE typeof(body) = 'blob'",
            (),
        )
        .await
        .unwrap();
        // The other episode's reflection gets a blob that is no zstd frame.
        conn.execute(
            "UPDATE episodes SET reflection = x'00ff00ff' WHERE id = ?1",
            [done9.to_string()],
        )
        .await
        .unwrap();
    }
    let storage = TursoStorage::open_local(&path).await.unwrap();
    for (episode, column) in [(id, "step page body"), (done9, "episode reflection")] {
        let err = storage.get_episode(&ns, episode).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains(column), "{err}");
    }
    let listed = storage
        .query_episodes(&ns, &EpisodeQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "the episodes' summaries still list");
}
