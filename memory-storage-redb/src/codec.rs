//! Encoding of cache entries (bincode 2) and outbox entries (JSON), each behind a leading
//! format-version byte and a decode size limit.
//!
//! A cache entry also carries a CRC-32 of its version byte and body, checked before the body
//! is parsed: a byte changed in the file (a disk error, an edit of the same length) makes the
//! entry a decode error, and so a cache miss, instead of different data served as the value.
//! CRC-32 (`crc32fast`, already in the dependency tree, hardware-accelerated) rather than a
//! cryptographic hash: the cache is read on every cached access, and the checksum is there to
//! catch damage, not forgery (anyone who can write the cache file can write the database;
//! see SECURITY.md). Every burst error of up to 32 bits is caught, and a random change slips
//! through with probability 2^-32.
//!
//! Decoding never trusts the bytes: a payload over the limit is refused before any parsing,
//! and inside the limit a forged length prefix cannot make the decoder allocate more than the
//! input could hold (strings are bounds-checked against the remaining input before they are
//! copied; sequences preallocate at most 1 MiB). Every failure is a typed
//! [`Error::Decode`]; nothing panics. See `FORMAT.md` for the byte layouts.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use memory_core::{CacheKey, CachedValue, Error, OutboxEntry, Result};

use crate::wire;

/// Version byte that starts every encoded cache entry. A stored entry with another version is
/// treated as a miss (and replaced), never as an error. Version 3 added the checksum, version 4
/// the hindered streak of a pattern's effectiveness, version 5 a pattern's marks, version 6 the
/// operator's pin on patterns and heuristics and the retracted status.
pub const CACHE_FORMAT_VERSION: u8 = 6;

/// Bytes of the checksum that follows the version byte of a cache entry (a CRC-32,
/// little-endian).
pub(crate) const CACHE_CHECKSUM_LEN: usize = 4;

/// The CRC-32 of a cache entry: over its version byte and its body, not the checksum itself.
fn cache_checksum(version: u8, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[version]);
    h.update(body);
    h.finalize()
}

/// Version byte that starts every encoded outbox entry. The outbox is not a copy, so an entry
/// with an unknown version is an error, never skipped.
pub const OUTBOX_FORMAT_VERSION: u8 = 1;

/// Largest decode limit a configuration may set, in bytes (64 MiB).
pub const MAX_DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// bincode's own budget: what the decoder may claim while decoding (it counts a varint as the
/// full width of its integer, so up to 8 claimed bytes per input byte). Inputs are limited to
/// [`MAX_DECODE_LIMIT`] before bincode sees them; this is a second fence.
const BINCODE_LIMIT: usize = 8 * MAX_DECODE_LIMIT;

type BincodeConfig = Configuration<LittleEndian, Varint, Limit<BINCODE_LIMIT>>;

fn bincode_config() -> BincodeConfig {
    bincode::config::standard().with_limit::<BINCODE_LIMIT>()
}

/// Largest encoded cache entries accepted, per kind, in bytes (version byte included).
///
/// # Default
/// | field | default |
/// |---|---|
/// | `episode_bytes` | 10,485,760 bytes (10 MiB) |
/// | `learned_bytes` | 1,048,576 bytes (1 MiB), for patterns and heuristics |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Limit for episodes.
    pub episode_bytes: usize,
    /// Limit for patterns and heuristics.
    pub learned_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            episode_bytes: 10 * 1024 * 1024,
            learned_bytes: 1024 * 1024,
        }
    }
}

impl DecodeLimits {
    /// The limit for entries of this key's kind.
    pub fn for_key(&self, key: &CacheKey) -> usize {
        match key {
            CacheKey::Episode(_) => self.episode_bytes,
            CacheKey::Pattern(_) | CacheKey::Heuristic(_) => self.learned_bytes,
        }
    }
}

/// An [`Error::Decode`] of `what`.
fn decode_error(what: &'static str, reason: impl Into<String>) -> Error {
    Error::Decode {
        what,
        reason: reason.into(),
    }
}

/// The [`Error::Decode`] of a `len`-byte payload over its decode limit.
fn too_large(what: &'static str, len: usize, limit: usize) -> Error {
    decode_error(
        what,
        format!("{len} bytes exceed the decode limit of {limit} bytes"),
    )
}

/// What decoding a stored cache entry gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// The value.
    Value(T),
    /// The entry was written in another format version (the byte found); treat it as a miss.
    OtherVersion(u8),
}

fn kind_name(tag: u8) -> &'static str {
    match tag {
        0 => "cached episode",
        1 => "cached pattern",
        2 => "cached heuristic",
        _ => "cache entry",
    }
}

/// Encodes a cache value: the version byte, the checksum, then the bincode body.
pub fn encode_cached_value(value: &CachedValue) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    encode_cached_value_into(&mut buf, value)?;
    Ok(buf)
}

/// Appends the encoding of `value` to `buf`.
pub(crate) fn encode_cached_value_into(buf: &mut Vec<u8>, value: &CachedValue) -> Result<()> {
    let w = wire::to_wire(value).map_err(|reason| Error::invalid("cache entry", reason))?;
    let start = buf.len();
    buf.push(CACHE_FORMAT_VERSION);
    buf.extend_from_slice(&[0; CACHE_CHECKSUM_LEN]);
    let body_at = buf.len();
    bincode::serde::encode_into_std_write(&w, buf, bincode_config())
        .map_err(|e| Error::invalid("cache entry", format!("cannot encode: {e}")))?;
    let sum = cache_checksum(CACHE_FORMAT_VERSION, &buf[body_at..]);
    buf[start + 1..body_at].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// Decodes a stored cache value.
///
/// `Ok(Decoded::OtherVersion(v))` when the entry starts with another version byte. An entry
/// larger than its kind's limit, whose checksum does not match, truncated, with trailing bytes
/// or otherwise malformed is an [`Error::Decode`].
///
/// ```
/// use memory_storage_redb::{CACHE_FORMAT_VERSION, decode_cached_value, DecodeLimits};
/// let bytes = [CACHE_FORMAT_VERSION, 0, 0xff];
/// let err = decode_cached_value(&bytes, DecodeLimits::default()).unwrap_err();
/// assert!(matches!(err, memory_core::Error::Decode { .. }));
/// ```
pub fn decode_cached_value(bytes: &[u8], limits: DecodeLimits) -> Result<Decoded<CachedValue>> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(decode_error("cache entry", "empty record"));
    };
    if version != CACHE_FORMAT_VERSION {
        return Ok(Decoded::OtherVersion(version));
    }
    let Some((stored_sum, body)) = body.split_first_chunk::<CACHE_CHECKSUM_LEN>() else {
        let reason = format!("{} bytes is shorter than the checksum", bytes.len());
        return Err(decode_error("cache entry", reason));
    };
    // The body starts with the variant index of the value (a one-byte varint): the kind, and
    // so the limit, is known before anything is parsed.
    let tag = body.first().copied().unwrap_or(u8::MAX);
    let what = kind_name(tag);
    let limit = match tag {
        0 => limits.episode_bytes,
        1 | 2 => limits.learned_bytes,
        _ => {
            return Err(decode_error(
                what,
                if body.is_empty() {
                    "no body after the version byte".to_owned()
                } else {
                    format!("unknown entry kind {tag}")
                },
            ));
        }
    };
    if bytes.len() > limit {
        return Err(too_large(what, bytes.len(), limit));
    }
    let (stored_sum, sum) = (
        u32::from_le_bytes(*stored_sum),
        cache_checksum(version, body),
    );
    if stored_sum != sum {
        return Err(decode_error(
            what,
            format!(
                "checksum mismatch (stored {stored_sum:08x}, computed {sum:08x}): the entry was changed after it was written"
            ),
        ));
    }
    let (w, used): (wire::WValue<wire::WStr>, usize) =
        bincode::serde::decode_from_slice(body, bincode_config())
            .map_err(|e| decode_error(what, e.to_string()))?;
    if used != body.len() {
        return Err(decode_error(
            what,
            format!("{} trailing bytes", body.len() - used),
        ));
    }
    wire::from_wire(w)
        .map(Decoded::Value)
        .map_err(|reason| Error::Decode { what, reason })
}

/// Encodes an outbox entry: the version byte, then JSON. Refuses (with
/// [`Error::LimitExceeded`]) an entry larger than `limit` bytes and (with
/// [`Error::InvalidInput`]) one that would not decode back to itself, e.g. one holding a
/// non-finite float: whatever the outbox accepts it can replay.
pub fn encode_outbox_entry(entry: &OutboxEntry, limit: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    buf.push(OUTBOX_FORMAT_VERSION);
    serde_json::to_writer(&mut buf, entry)
        .map_err(|e| Error::invalid("outbox entry", format!("cannot encode: {e}")))?;
    if buf.len() > limit {
        return Err(Error::LimitExceeded {
            field: "outbox entry",
            limit: limit as u64,
            actual: buf.len() as u64,
        });
    }
    match decode_outbox_entry(&buf, limit) {
        Ok(back) if back == *entry => Ok(buf),
        Ok(_) => Err(Error::invalid(
            "outbox entry",
            "does not survive encoding unchanged",
        )),
        Err(e) => Err(Error::invalid(
            "outbox entry",
            format!("would not decode: {e}"),
        )),
    }
}

/// Decodes a stored outbox entry; any malformed input, an unknown version byte or a payload over
/// `limit` bytes is an [`Error::Decode`].
pub fn decode_outbox_entry(bytes: &[u8], limit: usize) -> Result<OutboxEntry> {
    const WHAT: &str = "outbox entry";
    let Some((&version, body)) = bytes.split_first() else {
        return Err(decode_error(WHAT, "empty record"));
    };
    if version != OUTBOX_FORMAT_VERSION {
        return Err(decode_error(
            WHAT,
            format!(
                "unsupported format version {version} (this build reads {OUTBOX_FORMAT_VERSION})"
            ),
        ));
    }
    if bytes.len() > limit {
        return Err(too_large(WHAT, bytes.len(), limit));
    }
    serde_json::from_slice(body).map_err(|e| decode_error(WHAT, e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;

    use chrono::{DateTime, Utc};
    use memory_core::{
        Episode, Namespace, NewEpisode, Outcome, StepInput, TaskContext, TaskType, WriteOp,
    };
    use memory_testkit::conformance;

    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 123_456_789).unwrap()
    }

    fn full_episode() -> Episode {
        let mut e = conformance::episode(
            "fix the flaky test",
            TaskType::Debugging,
            "web_api",
            Some("rust"),
            at(0),
        );
        e.context.framework = Some("axum".into());
        e.steps = conformance::steps(
            &[("cargo", true), ("edit_file", false), ("cargo", true)],
            1,
            at(1),
        );
        e.steps[0].input.parameters =
            serde_json::json!({"args": ["test", "--", "x"], "n": 1.5, "nested": {"a": null}});
        e.steps.push(memory_core::ExecutionStep {
            step_number: 4,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: at(9),
            input: StepInput::timeout("shell", "wait"),
        });
        let c = conformance::completion_for(&e, Outcome::success("done"), at(10));
        e.outcome = Some(c.outcome);
        e.reward = Some(c.reward);
        e.reflection = Some(c.reflection);
        e.completed_at = Some(c.completed_at);
        e
    }

    fn value(bytes: &[u8]) -> CachedValue {
        match decode_cached_value(bytes, DecodeLimits::default()).unwrap() {
            Decoded::Value(v) => v,
            Decoded::OtherVersion(v) => panic!("unexpected version {v}"),
        }
    }

    #[test]
    fn episode_with_parameters_round_trips() {
        let e = full_episode();
        let v = CachedValue::Episode(Arc::new(e));
        let bytes = encode_cached_value(&v).unwrap();
        assert_eq!(bytes[0], CACHE_FORMAT_VERSION);
        assert_eq!(
            bytes[1 + CACHE_CHECKSUM_LEN],
            0,
            "variant tag of an episode"
        );
        assert_eq!(value(&bytes), v);
    }

    #[test]
    fn patterns_and_heuristics_round_trip() {
        let e = full_episode();
        let update = memory_core::extract_learning(&e, e.outcome.as_ref().unwrap(), at(10));
        let changes = update.apply(memory_core::ExistingLearned::default());
        assert!(!changes.patterns.is_empty() && !changes.heuristics.is_empty());
        for p in changes.patterns {
            let mut p = p.item;
            p.status = memory_core::LearnedStatus::Pruned {
                reason: "old".into(),
                at: at(20),
            };
            let v = CachedValue::Pattern(p);
            assert_eq!(value(&encode_cached_value(&v).unwrap()), v);
        }
        for h in changes.heuristics {
            let v = CachedValue::Heuristic(h.item);
            assert_eq!(value(&encode_cached_value(&v).unwrap()), v);
        }
    }

    #[test]
    fn other_version_is_not_an_error() {
        let mut bytes =
            encode_cached_value(&CachedValue::Episode(Arc::new(full_episode()))).unwrap();
        bytes[0] = CACHE_FORMAT_VERSION + 1;
        assert_eq!(
            decode_cached_value(&bytes, DecodeLimits::default()).unwrap(),
            Decoded::OtherVersion(CACHE_FORMAT_VERSION + 1)
        );
    }

    #[test]
    fn every_truncation_and_trailing_garbage_fail_typed() {
        let bytes = encode_cached_value(&CachedValue::Episode(Arc::new(full_episode()))).unwrap();
        for n in 0..bytes.len() {
            let r = decode_cached_value(&bytes[..n], DecodeLimits::default());
            assert!(matches!(r, Err(Error::Decode { .. })), "prefix {n}: {r:?}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode_cached_value(&longer, DecodeLimits::default()),
            Err(Error::Decode { .. })
        ));
    }

    /// `body` behind the version byte and its correct checksum: what reaches the bincode
    /// decoder.
    fn sealed(body: &[u8]) -> Vec<u8> {
        let mut v = vec![CACHE_FORMAT_VERSION];
        v.extend(cache_checksum(CACHE_FORMAT_VERSION, body).to_le_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn forged_string_length_fails_without_allocating() {
        // episode tag 0, 16 id bytes, then a task_description length of u64::MAX / 2 (varint
        // 0xfd + 8 bytes) and nothing after it, with a valid checksum so bincode sees it.
        let mut body = vec![0];
        body.extend([7u8; 16]);
        body.push(0xfd);
        body.extend((u64::MAX / 2).to_le_bytes());
        let r = decode_cached_value(&sealed(&body), DecodeLimits::default());
        match r {
            Err(Error::Decode { reason, .. }) => {
                assert!(!reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_changed_byte_is_a_decode_error_never_other_data() {
        let v = CachedValue::Episode(Arc::new(full_episode()));
        let bytes = encode_cached_value(&v).unwrap();
        // Every position but the version byte (another version is a miss of its own kind).
        for i in 1..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                match decode_cached_value(&b, DecodeLimits::default()) {
                    Err(Error::Decode { .. }) => {}
                    other => panic!("byte {i} ^ {flip:#x}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_changed_text_byte_is_a_checksum_mismatch() {
        let mut e = full_episode();
        e.task_description = "fix the flaky test in the billing module".into();
        let bytes = encode_cached_value(&CachedValue::Episode(Arc::new(e))).unwrap();
        let at = bytes
            .windows(7)
            .position(|w| w == b"billing")
            .expect("the text is stored as is");
        let mut b = bytes.clone();
        b[at] = b'k'; // "killing": still valid UTF-8, same length
        match decode_cached_value(&b, DecodeLimits::default()) {
            Err(Error::Decode { what, reason }) => {
                assert_eq!(what, "cached episode");
                assert!(reason.contains("checksum mismatch"), "{reason}");
            }
            other => panic!("a changed byte was served: {other:?}"),
        }
    }

    #[test]
    fn entries_of_version_2_are_misses() {
        // Version 2 had no checksum: such an entry is another version, not an error.
        let mut bytes =
            encode_cached_value(&CachedValue::Episode(Arc::new(full_episode()))).unwrap();
        bytes[0] = 2;
        assert_eq!(
            decode_cached_value(&bytes, DecodeLimits::default()).unwrap(),
            Decoded::OtherVersion(2)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1_000, failure_persistence: None, ..Default::default() })]

        /// Random bodies with a valid checksum reach the bincode decoder, which fails typed
        /// and never panics.
        #[test]
        fn sealed_random_bodies_never_panic(
            tag in 0u8..3,
            rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024),
        ) {
            let mut body = vec![tag];
            body.extend(rest);
            match decode_cached_value(&sealed(&body), DecodeLimits::default()) {
                Ok(_) => {}
                Err(Error::Decode { reason, .. }) => proptest::prop_assert!(!reason.contains("checksum")),
                Err(other) => proptest::prop_assert!(false, "untyped failure: {other:?}"),
            }
        }
    }

    #[test]
    fn outbox_entries_round_trip_and_refuse_what_they_cannot_replay() {
        let e = full_episode();
        let entry = OutboxEntry {
            idempotency_key: "k-1".into(),
            namespace: Namespace::new("acme/api").unwrap(),
            op: WriteOp::CreateEpisode(e.clone()),
        };
        let bytes = encode_outbox_entry(&entry, 1 << 20).unwrap();
        assert_eq!(bytes[0], OUTBOX_FORMAT_VERSION);
        assert_eq!(decode_outbox_entry(&bytes, 1 << 20).unwrap(), entry);
        assert!(matches!(
            encode_outbox_entry(&entry, 16),
            Err(Error::LimitExceeded { .. })
        ));
        assert!(matches!(
            decode_outbox_entry(&bytes, 16),
            Err(Error::Decode { .. })
        ));
        let nan = OutboxEntry {
            op: WriteOp::PutEmbedding {
                episode_id: e.id,
                model: "m".into(),
                vector: vec![1.0, f32::NAN],
            },
            ..entry
        };
        assert!(matches!(
            encode_outbox_entry(&nan, 1 << 20),
            Err(Error::InvalidInput { .. })
        ));
        let mut wrong = bytes;
        wrong[0] = 9;
        assert!(matches!(
            decode_outbox_entry(&wrong, 1 << 20),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn new_episode_minimal_round_trips() {
        let e = Episode::start(
            NewEpisode::new("t", TaskType::Other, TaskContext::new("d")),
            at(0),
        );
        let v = CachedValue::Episode(Arc::new(e));
        assert_eq!(value(&encode_cached_value(&v).unwrap()), v);
    }
}
