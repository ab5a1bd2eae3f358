//! Encoding of cache entries (bincode 2) and outbox entries (JSON), each behind a leading
//! format-version byte and a decode size limit.
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
/// treated as a miss (and replaced), never as an error.
pub const CACHE_FORMAT_VERSION: u8 = 2;

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

/// Encodes a cache value: the version byte, then the bincode body.
pub fn encode_cached_value(value: &CachedValue) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    encode_cached_value_into(&mut buf, value)?;
    Ok(buf)
}

/// Appends the encoding of `value` to `buf`.
pub(crate) fn encode_cached_value_into(buf: &mut Vec<u8>, value: &CachedValue) -> Result<()> {
    let w = wire::to_wire(value).map_err(|reason| Error::invalid("cache entry", reason))?;
    buf.push(CACHE_FORMAT_VERSION);
    bincode::serde::encode_into_std_write(&w, buf, bincode_config())
        .map_err(|e| Error::invalid("cache entry", format!("cannot encode: {e}")))?;
    Ok(())
}

/// Decodes a stored cache value.
///
/// `Ok(Decoded::OtherVersion(v))` when the entry starts with another version byte. An entry
/// larger than its kind's limit, truncated, with trailing bytes or otherwise malformed is an
/// [`Error::Decode`].
///
/// ```
/// use memory_storage_redb::{CACHE_FORMAT_VERSION, decode_cached_value, DecodeLimits};
/// let bytes = [CACHE_FORMAT_VERSION, 0, 0xff];
/// let err = decode_cached_value(&bytes, DecodeLimits::default()).unwrap_err();
/// assert!(matches!(err, memory_core::Error::Decode { .. }));
/// ```
pub fn decode_cached_value(bytes: &[u8], limits: DecodeLimits) -> Result<Decoded<CachedValue>> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::Decode {
            what: "cache entry",
            reason: "empty record".to_owned(),
        });
    };
    if version != CACHE_FORMAT_VERSION {
        return Ok(Decoded::OtherVersion(version));
    }
    // The body starts with the variant index of the value (a one-byte varint): the kind, and
    // so the limit, is known before anything is parsed.
    let tag = body.first().copied().unwrap_or(u8::MAX);
    let what = kind_name(tag);
    let limit = match tag {
        0 => limits.episode_bytes,
        1 | 2 => limits.learned_bytes,
        _ => {
            return Err(Error::Decode {
                what,
                reason: if body.is_empty() {
                    "no body after the version byte".to_owned()
                } else {
                    format!("unknown entry kind {tag}")
                },
            });
        }
    };
    if bytes.len() > limit {
        return Err(Error::Decode {
            what,
            reason: format!(
                "{} bytes exceed the decode limit of {limit} bytes",
                bytes.len()
            ),
        });
    }
    let (w, used): (wire::WValue<wire::WStr>, usize) =
        bincode::serde::decode_from_slice(body, bincode_config()).map_err(|e| Error::Decode {
            what,
            reason: e.to_string(),
        })?;
    if used != body.len() {
        return Err(Error::Decode {
            what,
            reason: format!("{} trailing bytes", body.len() - used),
        });
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
        return Err(Error::Decode {
            what: WHAT,
            reason: "empty record".to_owned(),
        });
    };
    if version != OUTBOX_FORMAT_VERSION {
        return Err(Error::Decode {
            what: WHAT,
            reason: format!(
                "unsupported format version {version} (this build reads {OUTBOX_FORMAT_VERSION})"
            ),
        });
    }
    if bytes.len() > limit {
        return Err(Error::Decode {
            what: WHAT,
            reason: format!(
                "{} bytes exceed the decode limit of {limit} bytes",
                bytes.len()
            ),
        });
    }
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        what: WHAT,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use chrono::{DateTime, Utc};
    use memory_core::{
        Episode, Namespace, NewEpisode, Outcome, StepInput, TaskContext, TaskType, WriteOp,
        conformance,
    };

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
        let v = CachedValue::Episode(e);
        let bytes = encode_cached_value(&v).unwrap();
        assert_eq!(bytes[0], CACHE_FORMAT_VERSION);
        assert_eq!(bytes[1], 0, "variant tag of an episode");
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
        let mut bytes = encode_cached_value(&CachedValue::Episode(full_episode())).unwrap();
        bytes[0] = CACHE_FORMAT_VERSION + 1;
        assert_eq!(
            decode_cached_value(&bytes, DecodeLimits::default()).unwrap(),
            Decoded::OtherVersion(CACHE_FORMAT_VERSION + 1)
        );
    }

    #[test]
    fn every_truncation_and_trailing_garbage_fail_typed() {
        let bytes = encode_cached_value(&CachedValue::Episode(full_episode())).unwrap();
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

    #[test]
    fn forged_string_length_fails_without_allocating() {
        // the version byte, episode tag 0, 16 id bytes, then a task_description length of
        // u64::MAX / 2 (varint 0xfd + 8 bytes) and nothing after it.
        let mut bytes = vec![CACHE_FORMAT_VERSION, 0];
        bytes.extend([7u8; 16]);
        bytes.push(0xfd);
        bytes.extend((u64::MAX / 2).to_le_bytes());
        let r = decode_cached_value(&bytes, DecodeLimits::default());
        assert!(matches!(r, Err(Error::Decode { .. })), "{r:?}");
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
        let v = CachedValue::Episode(e);
        assert_eq!(value(&encode_cached_value(&v).unwrap()), v);
    }
}
