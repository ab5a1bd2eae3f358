//! Background WAL checkpoints of a local libsql file: under a steady stream of commits the task
//! checkpoints and restarts the WAL, so it holds a fraction of what was written instead of all
//! of it (up to the writer's backstop, 10,000 pages); everything written reads back after a
//! reopen; turning the task off leaves SQLite's own checkpoints in charge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use memory_core::{EpisodeQuery, EpisodeStore, ExecutionStep, Namespace, StepInput, TaskType};
use memory_storage_turso::{TursoConfig, TursoStorage, WalCheckpoints};
use memory_testkit::conformance;

const EPISODES: usize = 400;
const STEPS: usize = 40;
/// Each step's output: 400 x 40 x 3 KiB = 46.9 MiB of step text alone (random letters and
/// digits: about three quarters of that stored where step pages are compressed), several times the restart size.
const OUTPUT_BYTES: usize = 3_072;

fn wal_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(&wal).map_or(0, |m| m.len())
}

/// `n` random letters and digits.
fn incompressible(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(rng.sample(rand::distr::Alphanumeric)))
        .collect()
}

/// Writes the episodes with one commit per episode and per step batch; returns the largest
/// WAL size seen.
async fn write_all(storage: &TursoStorage, db: &Path, ns: &Namespace) -> u64 {
    let at = chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap();
    let mut largest = 0;
    for i in 0..EPISODES {
        let e = conformance::episode(
            &format!("ingest the nightly export {i}"),
            TaskType::Analysis,
            "etl",
            Some("python"),
            at,
        );
        storage.create_episode(ns, &e).await.unwrap();
        for chunk in 0..4 {
            let steps: Vec<_> = (0..STEPS / 4)
                .map(|s| {
                    let n = u32::try_from(chunk * STEPS / 4 + s + 1).unwrap();
                    // Random text, so that the compression of step pages (schema v10) cannot
                    // shrink it away.
                    let output = incompressible(OUTPUT_BYTES);
                    ExecutionStep {
                        step_number: n,
                        key: memory_core::ExecutionStep::new_key(),
                        timestamp: at,
                        input: StepInput::ok("shell", "run the export", output),
                    }
                })
                .collect();
            storage.append_steps(ns, e.id, &steps).await.unwrap();
        }
        largest = largest.max(wal_bytes(db));
        // A pause between episodes, as real traffic has, gives the background task its turns
        // even on a loaded machine.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    largest
}

async fn stored_steps(storage: &TursoStorage, ns: &Namespace) -> usize {
    let query = EpisodeQuery {
        limit: 10_000,
        ..EpisodeQuery::default()
    };
    let summaries = storage.query_episodes(ns, &query).await.unwrap();
    summaries.iter().map(|s| s.step_count as usize).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_checkpoints_and_restarts_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("memory.db");
    let ns = Namespace::new("ckpt").unwrap();
    let storage = TursoStorage::open_local(&db).await.unwrap();
    assert_eq!(storage.wal_checkpoints(), Some(WalCheckpoints::default()));
    let largest = write_all(&storage, &db, &ns).await;
    let total = std::fs::metadata(&db).unwrap().len() + wal_bytes(&db);
    assert!(
        total > 48 * 1024 * 1024,
        "the data ({total} bytes) must be well above the restart size for this to mean anything"
    );
    // On a loaded machine the task may lag behind the writes; it catches up once they stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = storage.wal_checkpoints().unwrap();
        if done.passive > 0 && done.restarts > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no restart within 30 s: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without restarts the WAL would hold everything written, up to the writer's 40 MiB
    // backstop; the task restarts it from 4,000 pages (16 MiB).
    assert!(
        largest < total * 3 / 4,
        "the WAL grew to {largest} of {total} bytes; background checkpoints are not restarting it"
    );
    drop(storage);
    let again = TursoStorage::open_local(&db).await.unwrap();
    assert_eq!(stored_steps(&again, &ns).await, EPISODES * STEPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_background_task_sqlite_checkpoints_in_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("memory.db");
    let ns = Namespace::new("ckpt").unwrap();
    let config = TursoConfig::local(&db)
        .background_checkpoints(false)
        .build()
        .unwrap();
    assert!(!config.background_checkpoints());
    let storage = TursoStorage::open(config).await.unwrap();
    let largest = write_all(&storage, &db, &ns).await;
    // SQLite's default: a checkpoint in the commit that passes 1,000 pages.
    assert!(
        largest < 12 * 1024 * 1024,
        "the WAL grew to {largest} bytes"
    );
    assert_eq!(stored_steps(&storage, &ns).await, EPISODES * STEPS);
}
