//! Security of the cache and outbox decoders: an episode whose encoding is exactly at the decode
//! limit round-trips (directly and through the cache), one byte more is a typed error, truncated
//! and random bytes fail safely, forged length prefixes fail without allocating, and a bounded
//! proptest of random and mutated bytes never panics.
//!
//! Pins the bincode hazard this crate guards against: decoding with no limit aborts the process
//! on a forged length prefix (it tries to allocate what the prefix claims).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use memory_core::{
    Cache, CacheKey, CachedValue, Episode, Error, InMemoryStorage, Namespace, OutboxEntry, Outcome,
    TaskType, WriteOp,
};
use memory_storage_redb::{
    CACHE_FORMAT_VERSION, CacheConfig, DecodeLimits, Decoded, RedbCache, decode_cached_value,
    decode_outbox_entry, encode_cached_value,
};
use memory_testkit::conformance;
use proptest::prelude::*;

const LIMIT: usize = 10 * 1024 * 1024;

fn at() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_750_000_000, 0).unwrap()
}

/// A realistic completed episode (steps with JSON parameters, outcome, reward, reflection).
async fn realistic_episode() -> Episode {
    let store = InMemoryStorage::new();
    let e = conformance::episode(
        "fix the flaky test",
        TaskType::Debugging,
        "web_api",
        Some("rust"),
        at(),
    );
    conformance::record(
        &store,
        &Namespace::new("fixture").unwrap(),
        e,
        &[("cargo", false), ("edit_file", true), ("cargo", true)],
        Outcome::success("fixed"),
    )
    .await
    .0
}

/// An episode whose encoding is exactly `target` bytes.
fn episode_of_encoded_size(target: usize) -> Episode {
    let mut e = conformance::episode("", TaskType::Testing, "d", None, at());
    let base = encode_cached_value(&CachedValue::Episode(Arc::new(e.clone())))
        .unwrap()
        .len();
    // The empty description costs a 1-byte length; a description of n >= 65,536 bytes costs
    // n bytes plus a 5-byte length.
    e.task_description = "d".repeat(target - base + 1 - 5);
    let len = encode_cached_value(&CachedValue::Episode(Arc::new(e.clone())))
        .unwrap()
        .len();
    assert_eq!(len, target, "fixture arithmetic");
    e
}

fn decoded(bytes: &[u8]) -> CachedValue {
    match decode_cached_value(bytes, DecodeLimits::default()).unwrap() {
        Decoded::Value(v) => v,
        Decoded::OtherVersion(v) => panic!("other version {v}"),
    }
}

#[test]
fn defaults_are_ten_mib_for_episodes() {
    assert_eq!(DecodeLimits::default().episode_bytes, LIMIT);
    assert_eq!(CacheConfig::default().max_episode_bytes, LIMIT);
}

#[test]
fn episode_with_parameters_round_trips() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt.block_on(realistic_episode());
    assert!(
        e.steps.iter().any(|s| !s.input.parameters.is_null()),
        "fixture has parameters"
    );
    assert!(e.outcome.is_some() && e.reflection.is_some());
    let v = CachedValue::Episode(Arc::new(e));
    assert_eq!(decoded(&encode_cached_value(&v).unwrap()), v);
}

#[tokio::test]
async fn an_episode_exactly_at_the_limit_round_trips() {
    let e = episode_of_encoded_size(LIMIT);
    let v = CachedValue::Episode(Arc::new(e.clone()));
    let bytes = encode_cached_value(&v).unwrap();
    assert_eq!(bytes.len(), LIMIT);
    assert_eq!(decoded(&bytes), v);

    // And through the cache, from the file (no in-process front).
    let dir = tempfile::tempdir().unwrap();
    let c = RedbCache::open(
        dir.path().join("c.redb"),
        CacheConfig::default().with_memory_capacity(0, 0),
    )
    .await
    .unwrap();
    let ns = Namespace::new("big").unwrap();
    c.put(&ns, &v).await.unwrap();
    c.settle().await; // until then the queued value would be served
    assert_eq!(c.get(&ns, &CacheKey::Episode(e.id)).await.unwrap(), Some(v));
    assert_eq!(c.stats().disk_hits, 1);
}

#[tokio::test]
async fn one_byte_over_the_limit_is_a_typed_error() {
    let e = episode_of_encoded_size(LIMIT + 1);
    let v = CachedValue::Episode(Arc::new(e));
    let bytes = encode_cached_value(&v).unwrap();
    assert_eq!(bytes.len(), LIMIT + 1);
    match decode_cached_value(&bytes, DecodeLimits::default()) {
        Err(Error::Decode { what, reason }) => {
            assert_eq!(what, "cached episode");
            assert!(
                reason.contains("exceed the decode limit of 10485760"),
                "{reason}"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }

    // The cache refuses to store what it could not read back.
    let dir = tempfile::tempdir().unwrap();
    let c = RedbCache::open(dir.path().join("c.redb"), CacheConfig::default())
        .await
        .unwrap();
    let err = c
        .put(&Namespace::new("big").unwrap(), &v)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LimitExceeded { field: "cache entry", limit, actual } if limit == LIMIT as u64 && actual == LIMIT as u64 + 1),
        "{err}"
    );
    assert_eq!(c.stats().entries, 0);
}

#[tokio::test]
async fn every_truncation_fails_safely() {
    let bytes =
        encode_cached_value(&CachedValue::Episode(Arc::new(realistic_episode().await))).unwrap();
    for n in 0..bytes.len() {
        let r = decode_cached_value(&bytes[..n], DecodeLimits::default());
        assert!(
            matches!(r, Err(Error::Decode { .. })),
            "prefix of {n} bytes: {r:?}"
        );
    }
}

#[test]
fn other_format_versions_are_not_errors() {
    for version in [0u8, CACHE_FORMAT_VERSION + 1, 255] {
        assert_eq!(
            decode_cached_value(&[version, 1, 2, 3], DecodeLimits::default()).unwrap(),
            Decoded::OtherVersion(version)
        );
    }
}

/// Forged lengths far beyond the input (up to 2^62) for a string, the step list and the tag
/// list. A decoder that allocated what a prefix claims would abort the test process here.
#[test]
fn forged_length_prefixes_fail_without_allocating() {
    let varint_u64 = |n: u64| {
        let mut v = vec![0xfd];
        v.extend(n.to_le_bytes());
        v
    };
    for claimed in [1u64 << 24, 1 << 36, 1 << 48, 1 << 62, u64::MAX] {
        // task_description length.
        let mut a = vec![CACHE_FORMAT_VERSION, 0];
        a.extend([9u8; 16]);
        a.extend(varint_u64(claimed));
        a.extend(b"abc");
        // A valid episode prefix up to the step list, then a forged step count.
        let mut b = vec![CACHE_FORMAT_VERSION, 0];
        b.extend([9u8; 16]);
        b.extend([1, b't', 0]); // description "t", task type 0
        b.extend([1, b'd', 0, 0, 1]); // context: domain "d", no language/framework, moderate, then
        b.extend(varint_u64(claimed)); // ...a forged tag count
        let mut c = b.clone();
        c.truncate(c.len() - 9);
        c.push(0); // no tags
        c.extend(varint_u64(claimed)); // a forged step count
        c.push(1);
        for bytes in [a, b, c] {
            let r = decode_cached_value(&bytes, DecodeLimits::default());
            assert!(
                matches!(r, Err(Error::Decode { .. })),
                "claimed {claimed}: {r:?}"
            );
        }
    }
}

fn arb_decode_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Anything at all.
        proptest::collection::vec(any::<u8>(), 0..2048),
        // Past the version and kind gates, so the bincode decoder itself is exercised.
        (0u8..3, proptest::collection::vec(any::<u8>(), 0..2048)).prop_map(|(tag, rest)| {
            let mut v = vec![CACHE_FORMAT_VERSION, tag];
            v.extend(rest);
            v
        }),
    ]
}

fn valid_encodings() -> &'static [Vec<u8>] {
    static CELL: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = InMemoryStorage::new();
        let e = conformance::episode(
            "mutate me",
            TaskType::Debugging,
            "web_api",
            Some("rust"),
            at(),
        );
        let (episode, changes) = rt.block_on(conformance::record(
            &store,
            &Namespace::new("fixture").unwrap(),
            e,
            &[("cargo", false), ("edit_file", true), ("cargo", true)],
            Outcome::success("fixed"),
        ));
        let mut values = vec![CachedValue::Episode(Arc::new(episode))];
        values.extend(
            changes
                .patterns
                .into_iter()
                .map(|c| CachedValue::Pattern(c.item)),
        );
        values.extend(
            changes
                .heuristics
                .into_iter()
                .map(|c| CachedValue::Heuristic(c.item)),
        );
        values
            .iter()
            .map(|v| encode_cached_value(v).unwrap())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in arb_decode_input()) {
        match decode_cached_value(&bytes, DecodeLimits::default()) {
            Ok(_) | Err(Error::Decode { .. }) => {}
            Err(other) => prop_assert!(false, "untyped failure: {other:?}"),
        }
        match decode_outbox_entry(&bytes, 1 << 20) {
            Ok(_) | Err(Error::Decode { .. }) => {}
            Err(other) => prop_assert!(false, "untyped failure: {other:?}"),
        }
    }

    #[test]
    fn mutated_encodings_never_panic(
        which in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let all = valid_encodings();
        let mut bytes = all[which % all.len()].clone();
        for (at, value) in flips {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        match decode_cached_value(&bytes, DecodeLimits::default()) {
            Ok(_) | Err(Error::Decode { .. }) => {}
            Err(other) => prop_assert!(false, "untyped failure: {other:?}"),
        }
    }
}

#[test]
fn outbox_decoder_rejects_garbage_with_typed_errors() {
    let entry = OutboxEntry {
        idempotency_key: "k".into(),
        namespace: Namespace::new("a").unwrap(),
        op: WriteOp::PutEmbedding {
            episode_id: memory_core::EpisodeId::new(),
            model: "m".into(),
            vector: vec![0.25; 4],
        },
    };
    let bytes = memory_storage_redb::encode_outbox_entry(&entry, 1 << 20).unwrap();
    assert_eq!(decode_outbox_entry(&bytes, 1 << 20).unwrap(), entry);
    for n in 0..bytes.len() {
        assert!(
            matches!(
                decode_outbox_entry(&bytes[..n], 1 << 20),
                Err(Error::Decode { .. })
            ),
            "prefix {n}"
        );
    }
    assert!(matches!(
        decode_outbox_entry(&bytes, bytes.len() - 1),
        Err(Error::Decode { .. })
    ));
}
