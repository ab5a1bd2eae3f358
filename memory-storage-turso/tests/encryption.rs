//! The database file encrypted at rest (feature `encryption`): no plaintext in the file or its
//! WAL, a wrong or missing key fails at open with a message saying so, and a file copied under
//! another key (`reencrypt_file`) opens only under it.

#![cfg(feature = "encryption")]
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;

use memory_core::{Episode, EpisodeStore, Namespace, NewEpisode, TaskContext, TaskType};
use memory_seal::MasterKey;
use memory_storage_turso::{TursoConfig, TursoStorage, reencrypt_file};

const MARKER: &[u8] = b"ZQXMARKER";

async fn open(path: &Path, key: Option<&MasterKey>) -> memory_core::Result<TursoStorage> {
    TursoStorage::open(
        TursoConfig::local(path)
            .encryption(key.cloned())
            .background_checkpoints(false)
            .build()?,
    )
    .await
}

fn holds_marker(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.windows(MARKER.len()).any(|w| w == MARKER))
}

async fn write(store: &TursoStorage, n: usize) {
    let ns = Namespace::new("enc").unwrap();
    for i in 0..n {
        let task = format!("ZQXMARKER task {i}");
        let episode = Episode::start(
            NewEpisode::new(task, TaskType::Testing, TaskContext::new("zqxmarker")),
            chrono::Utc::now(),
        );
        store.create_episode(&ns, &episode).await.unwrap();
    }
}

async fn count(store: &TursoStorage) -> u64 {
    let ns = Namespace::new("enc").unwrap();
    store.namespace_stats(&ns).await.unwrap().episodes
}

#[tokio::test]
async fn the_file_and_its_wal_hold_no_plaintext_and_open_only_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.db");
    let key = MasterKey::generate().unwrap();
    let store = open(&path, Some(&key)).await.unwrap();
    write(&store, 20).await;
    // Read while the writes are still in the WAL.
    assert!(std::fs::metadata(dir.path().join("memory.db-wal")).is_ok_and(|m| m.len() > 0));
    assert!(!holds_marker(&path));
    assert!(!holds_marker(&dir.path().join("memory.db-wal")));
    drop(store);
    assert!(!holds_marker(&path));

    let err = open(&path, None).await.unwrap_err().to_string();
    assert!(err.contains("is encrypted"), "{err}");
    let other = MasterKey::generate().unwrap();
    let err = open(&path, Some(&other)).await.unwrap_err().to_string();
    assert!(
        err.contains("does not open with this encryption key"),
        "{err}"
    );
    assert_eq!(count(&open(&path, Some(&key)).await.unwrap()).await, 20);

    // The same writes without a key hold the marker: the check above can fail.
    let plain = dir.path().join("plain.db");
    let store = open(&plain, None).await.unwrap();
    write(&store, 1).await;
    drop(store);
    assert!(holds_marker(&plain) || holds_marker(&dir.path().join("plain.db-wal")));
}

#[tokio::test]
async fn a_copy_under_a_new_key_opens_only_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    let store = open(&plain, None).await.unwrap();
    write(&store, 7).await;
    drop(store);

    let a = MasterKey::generate().unwrap();
    let under_a = dir.path().join("a.db");
    reencrypt_file(&plain, None, &under_a, &a).await.unwrap();
    assert!(!holds_marker(&under_a));
    assert_eq!(count(&open(&under_a, Some(&a)).await.unwrap()).await, 7);

    let b = MasterKey::generate().unwrap();
    let under_b = dir.path().join("b.db");
    reencrypt_file(&under_a, Some(&a), &under_b, &b)
        .await
        .unwrap();
    assert_eq!(count(&open(&under_b, Some(&b)).await.unwrap()).await, 7);
    assert!(open(&under_b, Some(&a)).await.is_err());
    // The source is only read.
    assert_eq!(count(&open(&under_a, Some(&a)).await.unwrap()).await, 7);
    // An existing destination is refused.
    assert!(
        reencrypt_file(&under_a, Some(&a), &under_b, &b)
            .await
            .is_err()
    );
}
