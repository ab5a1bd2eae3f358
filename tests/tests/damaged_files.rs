//! Damaged files never stop the memory.
//!
//! Before: a corrupt or truncated `outbox.redb` made every command (`health` and `sync
//! status` included) fail after 10 s with "another memory process may hold it"; a corrupt
//! `cache.redb` was never rebuilt (every later command warned and ran without a cache); three
//! overwritten pages in the middle of `memory.db` left `health` saying the database was fine,
//! and `export` stopped after 3 of 30 episodes with a partial file.
//!
//! Now (each drill runs the `memory` binary, as a user would):
//! - a damaged cache file is moved to `damaged/` and a new one started, with one warning, once;
//! - a damaged journal is moved to `journal/damaged/`, the entries its bytes still hold are
//!   replayed, and `health` and `sync status` name the file and count what was recovered and
//!   lost; commands keep working;
//! - `health` checks the database (`PRAGMA quick_check`) and reports the damage (exit code 1);
//!   `export` skips what it cannot read, exports everything else and lists what it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use memory_core::{
    EpisodeId, NewEpisode, Outbox, OutboxEntry, Outcome, StepInput, TaskContext, TaskType, WriteOp,
};
use memory_stack::{CACHE_FILE, DAMAGED_DIR, DATABASE_FILE, JOURNAL_DIR, StackBuilder};
use memory_storage_redb::{OutboxConfig, RedbOutbox};
use serde_json::Value;
use tests::procs::{CliRun, PidSlot, run_cli};

const NS: &str = "damage";

async fn cli(dir: &Path, args: &[&str]) -> CliRun {
    let mut all = vec!["--namespace", NS, "--json"];
    all.extend_from_slice(args);
    run_cli(dir, &all, &[], &PidSlot::default()).await.unwrap()
}

async fn record(dir: &Path, n: usize) -> Vec<EpisodeId> {
    let stack = StackBuilder::new(dir).open().await.unwrap();
    let ns = memory_core::Namespace::new(NS).unwrap();
    let m = stack.memory();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = m
            .start_episode(
                &ns,
                NewEpisode::new(
                    format!("damaged files drill {i} {}", "context ".repeat(40)),
                    TaskType::Debugging,
                    TaskContext::new("ops"),
                ),
            )
            .await
            .unwrap();
        for k in 0..4 {
            let out = format!("output {k} {}", "x".repeat(300));
            m.log_step(&ns, id, StepInput::ok("shell", format!("step {k}"), out))
                .await
                .unwrap();
        }
        m.complete_episode(&ns, id, Outcome::success("ok"))
            .await
            .unwrap();
        // Read back, so the cache file holds it: over a local file an episode is cached when
        // first read, and a damage drill needs pages in use to hit.
        m.get_episode(&ns, id).await.unwrap();
        ids.push(id);
    }
    stack.shutdown().await.unwrap();
    ids
}

/// The page numbers of the database's schema table (`dbstat`).
async fn schema_pages(db: &Path) -> Vec<usize> {
    let conn = libsql::Builder::new_local(db)
        .build()
        .await
        .unwrap()
        .connect()
        .unwrap();
    let mut rows = conn
        .query("SELECT pageno FROM dbstat WHERE name = 'sqlite_schema'", ())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push(usize::try_from(row.get::<i64>(0).unwrap()).unwrap());
    }
    assert!(out.contains(&1), "page 1 holds the schema's root");
    out
}

fn component<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cache_is_moved_aside_and_rebuilt_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    record(dir, 3).await;
    assert!(dir.join(CACHE_FILE).exists());
    for (case, damage) in [
        ("truncated", Damage::Truncate),
        ("overwritten", Damage::OverwriteData),
        ("not redb", Damage::Garbage),
    ] {
        damage.apply(&dir.join(CACHE_FILE));
        let run = cli(dir, &["health"]).await;
        assert_eq!(run.code, Some(0), "{case}: {run:?}");
        let health = run.json().unwrap();
        let cache = component(&health, "cache");
        assert_eq!(cache["status"], "degraded", "{case}: {cache}");
        assert!(
            cache["detail"].as_str().unwrap().contains("moved to"),
            "{case}: {cache}"
        );
        assert_eq!(
            run.stderr.matches("cache file was damaged").count(),
            1,
            "{case}: one warning: {}",
            run.stderr
        );
        // The next command finds a good cache file: no warning, no degradation.
        let again = cli(dir, &["health"]).await;
        let health = again.json().unwrap();
        assert_eq!(component(&health, "cache")["status"], "ok", "{case}");
        assert!(
            !again.stderr.contains("damaged"),
            "{case}: {}",
            again.stderr
        );
        let listed = cli(dir, &["episode", "list"]).await;
        assert_eq!(listed.code, Some(0), "{case}");
    }
    let aside = std::fs::read_dir(dir.join(DAMAGED_DIR)).unwrap().count();
    assert_eq!(aside, 3, "each damaged file kept, none deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_is_moved_aside_and_its_readable_entries_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    record(dir, 1).await;
    // A journal a process left behind: 30 episodes created while the durable layer was
    // unreachable (and the single-file outbox of an earlier version, truncated).
    let ns = memory_core::Namespace::new(NS).unwrap();
    let mut ids = Vec::new();
    let mut entries = Vec::new();
    for i in 0..30 {
        let e = memory_core::Episode::start(
            NewEpisode::new(
                format!("journaled {i}"),
                TaskType::Testing,
                TaskContext::new("ops"),
            ),
            chrono::Utc::now(),
        );
        ids.push(e.id);
        entries.push(OutboxEntry {
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            namespace: ns.clone(),
            op: WriteOp::CreateEpisode(e),
        });
    }
    let journal = dir.join(JOURNAL_DIR).join("4242-left-behind.redb");
    {
        let o = RedbOutbox::open(&journal, OutboxConfig::default())
            .await
            .unwrap();
        o.append_many(&entries).await.unwrap();
    }
    Damage::Overwrite.apply(&journal);

    let run = cli(dir, &["health"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let health = run.json().unwrap();
    let j = component(&health, "journal");
    assert_eq!(j["status"], "degraded", "{j}");
    let damaged = &j["damaged"][0];
    let recovered = damaged["recovered"].as_u64().unwrap();
    // The overwritten pages may or may not have held entries: what is readable is
    // recovered, and nothing that was not written.
    assert!(recovered > 0 && recovered <= 30, "{damaged}");
    assert!(damaged["file"].as_str().unwrap().contains("left-behind"));
    assert!(!journal.exists(), "moved aside");
    // The recovered entries were replayed; the commands work.
    let listed = cli(dir, &["episode", "list", "--limit", "100"]).await;
    assert_eq!(listed.code, Some(0));
    let present = listed.json().unwrap()["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["task_description"]
                .as_str()
                .unwrap()
                .starts_with("journaled")
        })
        .count();
    assert_eq!(present as u64, recovered, "every recovered entry replayed");
    let status = cli(dir, &["sync", "status"]).await;
    assert_eq!(status.code, Some(0));
    let st = status.json().unwrap();
    assert_eq!(st["damaged_journals"][0]["recovered"], recovered);
    eprintln!("damaged journal: {damaged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_legacy_outbox_does_not_stop_any_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    record(dir, 1).await;
    let legacy = dir.join(memory_stack::LEGACY_OUTBOX_FILE);
    {
        let o = RedbOutbox::open(&legacy, OutboxConfig::default())
            .await
            .unwrap();
        let e = memory_core::Episode::start(
            NewEpisode::new(
                "from the old outbox",
                TaskType::Testing,
                TaskContext::new("ops"),
            ),
            chrono::Utc::now(),
        );
        o.append(&OutboxEntry {
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            namespace: memory_core::Namespace::new(NS).unwrap(),
            op: WriteOp::CreateEpisode(e),
        })
        .await
        .unwrap();
    }
    Damage::Truncate.apply(&legacy);
    let started = std::time::Instant::now();
    for args in [&["health"][..], &["sync", "status"], &["episode", "list"]] {
        let run = cli(dir, args).await;
        assert_eq!(run.code, Some(0), "{args:?}: {run:?}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let status = cli(dir, &["sync", "status"]).await.json().unwrap();
    assert_eq!(status["damaged_journals"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_reported_and_export_keeps_what_can_be_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ids = record(dir, 30).await;
    let healthy = cli(dir, &["health"]).await;
    assert_eq!(healthy.code, Some(0));
    assert_eq!(
        component(&healthy.json().unwrap(), "durable")["status"],
        "ok"
    );
    // Three pages in the middle of the (checkpointed) file.
    let db = dir.join(DATABASE_FILE);
    let wal = dir.join(format!("{DATABASE_FILE}-wal"));
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    // Not pages of the schema table itself: with it damaged SQLite opens nothing at all, and
    // what it lands on depends on the file's size (pages numbered from 1, offsets from 0).
    let schema_pages = schema_pages(&db).await;
    for mut p in [pages * 2 / 5, pages / 2, pages * 3 / 5] {
        while schema_pages.contains(&(p + 1)) {
            p += 1;
        }
        bytes[p * 4096..(p + 1) * 4096].fill(0x5A);
    }
    std::fs::write(&db, &bytes).unwrap();

    let run = cli(dir, &["health"]).await;
    assert_eq!(run.code, Some(1), "unhealthy: {run:?}");
    let durable = component(&run.json().unwrap(), "durable").clone();
    assert_eq!(durable["status"], "corrupt", "{durable}");
    eprintln!("health on the damaged database: {}", durable["detail"]);

    let file = dir.join("export.jsonl");
    let run = cli(dir, &["export", file.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.json().unwrap();
    let exported = report["episodes"].as_u64().unwrap();
    let lines = std::fs::read_to_string(&file).unwrap().lines().count() as u64;
    assert_eq!(lines, exported, "the file holds what the report says");
    let skipped = report["skipped"].as_array().unwrap();
    assert!(
        exported + report["skipped_episodes"].as_u64().unwrap() <= ids.len() as u64,
        "{report}"
    );
    assert!(exported > 3, "more than the 3 of 30 before: {report}");
    if exported < ids.len() as u64 {
        assert!(!skipped.is_empty(), "what was skipped is listed: {report}");
    }
    eprintln!(
        "export of the damaged database: {exported} of {} episodes, skipped: {skipped:?}",
        ids.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_damaged_in_its_schema_is_refused_with_a_hint_to_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ids = record(dir, 3).await;
    let backup = tmp.path().join("backup");
    let run = cli(dir, &["backup", backup.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let db = dir.join(DATABASE_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    // Page 1 past its 100-byte header: the root of the schema table.
    bytes[100..4096].fill(0x5A);
    std::fs::write(&db, &bytes).unwrap();
    for args in [&["health"][..], &["episode", "list"][..]] {
        let run = cli(dir, args).await;
        assert_eq!(run.code, Some(1), "{args:?}: {run:?}");
        let error = run.json().unwrap()["error"].clone();
        assert_eq!(error["kind"], "storage", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("malformed"),
            "{error}"
        );
        assert!(
            error["hint"].as_str().unwrap().contains("restore"),
            "{error}"
        );
    }
    // What the hint says works.
    let run = cli(dir, &["restore", backup.to_str().unwrap(), "--force"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let run = cli(dir, &["episode", "list"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let listed = run.json().unwrap();
    let listed = listed["episodes"].as_array().unwrap().len();
    assert_eq!(listed, ids.len(), "the backup's episodes are back");
}

/// Ways to damage a file.
#[derive(Clone, Copy)]
enum Damage {
    /// Cut short inside its second page: the header survives, every table's pages are gone.
    /// (Cut to half its length, a file whose pages in use all sat in the first half was
    /// not damaged at all, and one run in many found the cache file that way.)
    Truncate,
    /// Three pages in the middle overwritten (they may be free pages: a file that does not
    /// need them is not damaged).
    Overwrite,
    /// Every page after the first overwritten: whatever the layout, the pages in use are hit.
    OverwriteData,
    /// Not a redb file at all.
    Garbage,
}

impl Damage {
    fn apply(self, path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        match self {
            Damage::Truncate => bytes.truncate(bytes.len().min(4096 + 2048)),
            Damage::Overwrite => {
                let mid = (bytes.len() / 2) & !4095;
                let end = (mid + 3 * 4096).min(bytes.len());
                bytes[mid..end].fill(0xAB);
            }
            Damage::OverwriteData => {
                let start = 4096.min(bytes.len());
                bytes[start..].fill(0xAB);
            }
            Damage::Garbage => bytes = b"this is not a database".repeat(100),
        }
        std::fs::write(path, bytes).unwrap();
    }
}
