#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use memory_core::{Episode, NewEpisode, TaskContext, TaskType};
use memory_testkit::conformance;

use super::*;
use crate::tables::entry_key;

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn episode(task: &str) -> Episode {
    let at = DateTime::<Utc>::from_timestamp(1_750_000_000, 0).unwrap();
    let mut e = Episode::start(
        NewEpisode::new(task, TaskType::Testing, TaskContext::new("d")),
        at,
    );
    e.steps = conformance::steps(&[("cargo", true), ("edit", false)], 1, at);
    e
}

async fn open(dir: &Path, config: CacheConfig) -> RedbCache {
    RedbCache::open(dir.join("cache.redb"), config)
        .await
        .unwrap()
}

/// Rewrites the stored bytes of an entry behind the cache's back (the cache must be closed).
fn tamper(path: &Path, key: &[u8], f: impl FnOnce(&mut Vec<u8>)) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(ENTRIES).unwrap();
        let mut v = t.get(key).unwrap().unwrap().value().to_vec();
        f(&mut v);
        t.insert(key, v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_memory_hit_shares_the_episode_and_a_disk_hit_fills_the_front_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let shared = Arc::new(episode("t"));
    let key = CacheKey::Episode(shared.id);
    let c = open(dir.path(), CacheConfig::default()).await;
    c.put(&n, &CachedValue::Episode(Arc::clone(&shared)))
        .await
        .unwrap();
    let Some(CachedValue::Episode(hit)) = c.get(&n, &key).await.unwrap() else {
        panic!("episode cached");
    };
    assert!(
        Arc::ptr_eq(&hit, &shared),
        "the put's allocation, not a copy"
    );
    c.close().await.unwrap();

    // Reopened: the first hit decodes from the file, the next ones share that decode.
    let c = open(dir.path(), CacheConfig::default()).await;
    let mut hits = Vec::new();
    for _ in 0..2 {
        match c.get(&n, &key).await.unwrap() {
            Some(CachedValue::Episode(e)) => hits.push(e),
            other => panic!("episode cached, got {other:?}"),
        }
    }
    assert_eq!(*hits[0], *shared);
    assert!(Arc::ptr_eq(&hits[0], &hits[1]));
    assert_eq!(c.stats().disk_hits, 1);
    assert_eq!(c.stats().memory_hits, 1);
    c.close().await.unwrap();
}

#[tokio::test]
async fn clean_close_keeps_entries_and_unclean_file_is_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let e = episode("t");
    let key = CacheKey::Episode(e.id);
    let c = open(dir.path(), CacheConfig::default()).await;
    c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
        .await
        .unwrap();
    c.close().await.unwrap();

    let c = open(dir.path(), CacheConfig::default()).await;
    assert_eq!(c.stats().entries, 1);
    assert_eq!(
        c.get(&n, &key).await.unwrap(),
        Some(CachedValue::Episode(Arc::new(e)))
    );
    assert_eq!(c.stats().disk_hits, 1);
    c.close().await.unwrap();

    // Simulate a crash: the clean flag stays 0.
    {
        let db = Database::create(dir.path().join("cache.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(CACHE_INFO)
            .unwrap()
            .insert(INFO_CLEAN, 0)
            .unwrap();
        txn.commit().unwrap();
    }
    let c = open(dir.path(), CacheConfig::default()).await;
    assert_eq!(c.stats().entries, 0);
    assert_eq!(c.stats().bytes, 0);
    assert_eq!(c.get(&n, &key).await.unwrap(), None);
}

#[tokio::test]
async fn dropping_the_last_handle_closes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let e = episode("t");
    let c = open(dir.path(), CacheConfig::default()).await;
    let c2 = c.clone();
    c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
        .await
        .unwrap();
    drop(c);
    c2.close().await.unwrap();
    let c = open(dir.path(), CacheConfig::default()).await;
    assert!(c.get(&n, &CacheKey::Episode(e.id)).await.unwrap().is_some());
}

/// Reads on the caller's thread stop at `INLINE_READ_BYTES`: an entry at the limit and one
/// past it both come back whole from the file (the second through the blocking pool).
#[tokio::test]
async fn entries_at_and_past_the_inline_read_size_are_served_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let stored_len = |e: &Episode| {
        HEADER_LEN + encode_cached_value_for_test(&CachedValue::Episode(Arc::new(e.clone()))).len()
    };
    let sized = |stored: usize| {
        let mut e = episode("big");
        e.task_description = "x".repeat(stored / 2);
        let short = stored - stored_len(&e);
        e.task_description.push_str(&"x".repeat(short));
        assert_eq!(stored_len(&e), stored);
        e
    };
    let (at, past) = (sized(INLINE_READ_BYTES), sized(INLINE_READ_BYTES + 1));
    let c = open(dir.path(), CacheConfig::default()).await;
    for e in [&at, &past] {
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
    }
    c.close().await.unwrap();
    let c = open(
        dir.path(),
        CacheConfig::default().with_memory_capacity(0, 0),
    )
    .await;
    for e in [&at, &past] {
        match c.get(&n, &CacheKey::Episode(e.id)).await.unwrap() {
            Some(CachedValue::Episode(got)) => assert_eq!(*got, *e),
            other => panic!("episode cached, got {other:?}"),
        }
    }
    assert_eq!(c.stats().disk_hits, 2);
    c.close().await.unwrap();
}

#[tokio::test]
async fn corrupt_and_foreign_entries_are_misses_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let n = ns("a");
    let (e1, e2, e3) = (episode("1"), episode("2"), episode("3"));
    let c = open(dir.path(), CacheConfig::default()).await;
    for e in [&e1, &e2, &e3] {
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
    }
    c.close().await.unwrap();
    // e1: garbage body; e2: another format version; e3: the body of e1 (wrong key).
    let k1 = entry_key(&n, &CacheKey::Episode(e1.id));
    let k2 = entry_key(&n, &CacheKey::Episode(e2.id));
    let k3 = entry_key(&n, &CacheKey::Episode(e3.id));
    tamper(&path, &k1, |v| {
        v.truncate(HEADER_LEN + 5);
        v.extend([0xff; 7]);
    });
    tamper(&path, &k2, |v| v[HEADER_LEN] = 99);
    let body1 = encode_cached_value_for_test(&CachedValue::Episode(Arc::new(e1.clone())));
    tamper(&path, &k3, |v| {
        v.truncate(HEADER_LEN);
        v.extend(body1);
    });

    let c = open(dir.path(), CacheConfig::default()).await;
    for e in [&e1, &e2, &e3] {
        assert_eq!(c.get(&n, &CacheKey::Episode(e.id)).await.unwrap(), None);
    }
    let s = c.stats();
    assert_eq!((s.corrupt, s.misses, s.disk_hits), (2, 3, 0), "{s:?}");
    assert_eq!((s.entries, s.bytes), (0, 0), "all three removed: {s:?}");
    // Gone for good: a second read is a plain miss.
    assert_eq!(c.get(&n, &CacheKey::Episode(e1.id)).await.unwrap(), None);
    assert_eq!(c.stats().corrupt, 2);
}

fn encode_cached_value_for_test(v: &CachedValue) -> Vec<u8> {
    crate::codec::encode_cached_value(v).unwrap()
}

/// A byte of a stored value changed in place (same length, still valid bincode and UTF-8)
/// is a miss and removed, never the changed text served; the value put back (as the
/// tiered layer does after reading the durable layer) round-trips.
#[tokio::test]
async fn a_changed_byte_in_a_stored_value_is_a_miss_not_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let n = ns("a");
    let mut e = episode("t");
    e.task_description = "fix the flaky test in the billing module".into();
    let key = CacheKey::Episode(e.id);
    let k = entry_key(&n, &key);
    // No moka front: every read decodes the file.
    let config = CacheConfig::default().with_memory_capacity(0, 0);
    let c = open(dir.path(), config.clone()).await;
    c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut len = 0;
    tamper(&path, &k, |v| {
        len = v.len();
        let at = v.windows(7).position(|w| w == b"billing").unwrap();
        v[at] = b'k'; // "killing": the same length, a valid string
    });

    let c = open(dir.path(), config.clone()).await;
    assert_eq!(c.stats().bytes, len as u64, "same length");
    assert_eq!(c.get(&n, &key).await.unwrap(), None, "served changed data");
    let s = c.stats();
    assert_eq!((s.corrupt, s.misses, s.disk_hits), (1, 1, 0), "{s:?}");
    assert_eq!(s.entries, 0, "the bad entry is removed: {s:?}");

    // The durable layer's value, put back, is served again.
    c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
        .await
        .unwrap();
    c.close().await.unwrap();
    let c = open(dir.path(), config).await;
    assert_eq!(
        c.get(&n, &key).await.unwrap(),
        Some(CachedValue::Episode(Arc::new(e)))
    );
    assert_eq!((c.stats().disk_hits, c.stats().corrupt), (1, 0));
}

#[tokio::test]
async fn entries_of_the_previous_format_are_plain_misses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.redb");
    let n = ns("a");
    let e = episode("t");
    let key = CacheKey::Episode(e.id);
    let c = open(dir.path(), CacheConfig::default()).await;
    c.put(&n, &CachedValue::Episode(Arc::new(e))).await.unwrap();
    c.close().await.unwrap();
    // An entry written by the previous version: version byte 2, no checksum.
    tamper(&path, &entry_key(&n, &key), |v| {
        v.drain(HEADER_LEN + 1..HEADER_LEN + 5);
        v[HEADER_LEN] = 2;
    });
    let c = open(dir.path(), CacheConfig::default()).await;
    assert_eq!(c.get(&n, &key).await.unwrap(), None);
    let s = c.stats();
    assert_eq!((s.corrupt, s.misses, s.entries), (0, 1, 0), "{s:?}");
}

#[tokio::test]
async fn moka_hits_count_as_memory_hits_and_keep_lru_order() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let c = open(dir.path(), CacheConfig::default().with_max_entries(3)).await;
    let es: Vec<Episode> = (0..4).map(|i| episode(&i.to_string())).collect();
    for e in &es[..3] {
        c.put(&n, &CachedValue::Episode(Arc::new(e.clone())))
            .await
            .unwrap();
    }
    // Served from the front, but the access still counts for LRU.
    assert!(
        c.get(&n, &CacheKey::Episode(es[0].id))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(c.stats().memory_hits, 1);
    c.put(&n, &CachedValue::Episode(Arc::new(es[3].clone())))
        .await
        .unwrap();
    c.flush().await.unwrap(); // evictions happen when the put commits
    assert_eq!(c.stats().evictions, 1);
    assert_eq!(
        c.get(&n, &CacheKey::Episode(es[1].id)).await.unwrap(),
        None,
        "LRU entry evicted"
    );
    for e in [&es[0], &es[2], &es[3]] {
        assert!(c.get(&n, &CacheKey::Episode(e.id)).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn oversized_entries_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let c = open(
        dir.path(),
        CacheConfig::default().with_max_episode_bytes(300),
    )
    .await;
    let mut e = episode("t");
    e.task_description = "x".repeat(1_000);
    let err = c
        .put(&n, &CachedValue::Episode(Arc::new(e)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                field: "cache entry",
                limit: 300,
                ..
            }
        ),
        "{err}"
    );
    let c2 = RedbCache::open(
        dir.path().join("other.redb"),
        CacheConfig::default().with_max_bytes(100),
    )
    .await
    .unwrap();
    let err = c2
        .put(&n, &CachedValue::Episode(Arc::new(episode("t"))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LimitExceeded { limit: 100, .. }),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn expired_entries_are_swept_by_writes() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let config = CacheConfig::default()
        .with_ttl(Some(Duration::from_secs(10)))
        .with_memory_capacity(0, 0);
    let c = open(dir.path(), config).await;
    let old = episode("old");
    c.put(&n, &CachedValue::Episode(Arc::new(old.clone())))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    c.put(&n, &CachedValue::Episode(Arc::new(episode("new"))))
        .await
        .unwrap();
    c.flush().await.unwrap();
    let s = c.stats();
    assert_eq!((s.expirations, s.entries), (1, 1), "{s:?}");
}

#[tokio::test]
async fn clear_then_compact_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = ns("a");
    let c = open(
        dir.path(),
        CacheConfig::default().with_memory_capacity(0, 0),
    )
    .await;
    for i in 0..300 {
        let mut e = episode(&i.to_string());
        e.task_description.push_str(&"x".repeat(20_000));
        c.put(&n, &CachedValue::Episode(Arc::new(e))).await.unwrap();
    }
    c.flush().await.unwrap();
    let full = std::fs::metadata(c.path()).unwrap().len();
    c.clear().await.unwrap();
    c.flush().await.unwrap();
    assert!(c.compact().await.unwrap());
    let after = std::fs::metadata(c.path()).unwrap().len();
    assert_eq!(c.stats().entries, 0);
    assert!(after * 4 < full, "{full} -> {after}");
}
