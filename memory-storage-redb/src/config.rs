//! Tuning knobs of the cache and the outbox.

use std::time::Duration;

use memory_core::{CacheKey, Error, Result};
use memory_seal::Sealer;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeLimits, MAX_DECODE_LIMIT};

const MIB: u64 = 1024 * 1024;

/// `#[must_use]` builder methods `name(field: T)`, each setting its field to the value.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

/// Settings of a [`RedbCache`](crate::RedbCache).
///
/// The cache file is bounded by [`max_entries`](Self::max_entries) **and**
/// [`max_bytes`](Self::max_bytes): a write that crosses either bound evicts least recently used
/// entries (their rows are deleted) until both hold again. Entries older than
/// [`ttl`](Self::ttl) are removed when read and, a few per write, by a sweep. The file itself is
/// compacted when it grows past [`compact_file_bytes`](Self::compact_file_bytes).
///
/// # Default
/// | field | default |
/// |---|---|
/// | `max_entries` | 10,000 entries |
/// | `max_bytes` | 134,217,728 bytes (128 MiB of stored values) |
/// | `ttl` | 3,600,000 ms (1 hour); `null` for no expiry |
/// | `memory_max_entries` | 1,000 entries in the in-process front (0 disables the front) |
/// | `memory_max_bytes` | 33,554,432 bytes (32 MiB) in the in-process front |
/// | `max_episode_bytes` | 10,485,760 bytes (10 MiB): largest encoded episode stored or decoded |
/// | `max_learned_bytes` | 1,048,576 bytes (1 MiB): largest encoded pattern or heuristic |
/// | `redb_cache_bytes` | 16,777,216 bytes (16 MiB) of redb page cache |
/// | `durable_commit_every` | 64 commits (every 64th write commit is fsynced; see below) |
/// | `touch_flush_threshold` | 1,024 distinct keys |
/// | `expire_batch` | 32 entries swept per write |
/// | `compact_file_bytes` | `null`: automatic, `4 * max_bytes + 64 MiB` |
/// | `sealer` | `None`: the file is not encrypted (never read from or written to a configuration file) |
///
/// Cache writes commit with `redb::Durability::None` (no fsync): the cache is a copy and may
/// lose its last writes in a crash. redb frees the pages of such commits only at the next
/// durable commit, so every `durable_commit_every`-th commit is durable to keep the file
/// bounded. A file not closed cleanly is emptied at the next open, so a crash can never bring
/// back an entry that was invalidated or replaced.
///
/// Two configurations are equal when every setting is, their sealers compared by the
/// fingerprint of their key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Most entries in the cache file.
    pub max_entries: u64,
    /// Most bytes of stored values (header + encoded entry; keys and redb overhead excluded).
    pub max_bytes: u64,
    /// Time to live of an entry from its last write; `None` keeps entries until evicted.
    #[serde(with = "option_duration_ms")]
    pub ttl: Option<Duration>,
    /// Most entries held decoded in process memory (the moka front); 0 disables the front.
    pub memory_max_entries: u64,
    /// Most encoded bytes held in process memory (the moka front); 0 disables the front.
    pub memory_max_bytes: u64,
    /// Largest encoded episode the cache stores or decodes, in bytes.
    pub max_episode_bytes: usize,
    /// Largest encoded pattern or heuristic the cache stores or decodes, in bytes.
    pub max_learned_bytes: usize,
    /// Size of redb's in-process page cache, in bytes.
    pub redb_cache_bytes: usize,
    /// Every this many write commits, one is durable (fsynced), which lets redb reuse the pages
    /// freed since the last one. 1 makes every write durable.
    pub durable_commit_every: u32,
    /// Recency updates from hits are buffered and written with the next write; when this many
    /// distinct keys are pending they are written at once.
    pub touch_flush_threshold: usize,
    /// Expired entries removed by each write (oldest expiry first), besides the lazy removal
    /// on read.
    pub expire_batch: usize,
    /// Compact the file (`redb::Database::compact`) after a durable commit once it is larger
    /// than this many bytes; `None` picks `4 * max_bytes + 64 MiB`. Under steady churn the file
    /// settles at 2 to 4 times the live bytes (redb grows its file in doubling regions and
    /// reuses freed pages), so the automatic bound only fires when the file is larger than
    /// churn explains, e.g. after `clear` or after the bounds were lowered.
    pub compact_file_bytes: Option<u64>,
    /// Encrypts the file at rest when set: every stored value is sealed (XChaCha20-Poly1305,
    /// bound to its key), and keys are keyed hashes, so neither content nor namespaces nor ids
    /// can be read from the file (see `FORMAT.md`, "Sealed files"). A file written under
    /// another key, or without one, is replaced by an empty one when opened (the cache holds
    /// copies only). Never serialized: a key does not belong in a configuration file.
    #[serde(skip)]
    pub sealer: Option<Sealer>,
}

impl PartialEq for CacheConfig {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let CacheConfig {
            max_entries,
            max_bytes,
            ttl,
            memory_max_entries,
            memory_max_bytes,
            max_episode_bytes,
            max_learned_bytes,
            redb_cache_bytes,
            durable_commit_every,
            touch_flush_threshold,
            expire_batch,
            compact_file_bytes,
            sealer,
        } = self;
        *max_entries == other.max_entries
            && *max_bytes == other.max_bytes
            && *ttl == other.ttl
            && *memory_max_entries == other.memory_max_entries
            && *memory_max_bytes == other.memory_max_bytes
            && *max_episode_bytes == other.max_episode_bytes
            && *max_learned_bytes == other.max_learned_bytes
            && *redb_cache_bytes == other.redb_cache_bytes
            && *durable_commit_every == other.durable_commit_every
            && *touch_flush_threshold == other.touch_flush_threshold
            && *expire_batch == other.expire_batch
            && *compact_file_bytes == other.compact_file_bytes
            && same_sealer(sealer.as_ref(), other.sealer.as_ref())
    }
}

/// Whether two optional sealers seal under the same key (compared by its fingerprint).
fn same_sealer(a: Option<&Sealer>, b: Option<&Sealer>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.fingerprint() == b.fingerprint(),
        _ => false,
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 10_000,
            max_bytes: 128 * MIB,
            ttl: Some(Duration::from_secs(3_600)),
            memory_max_entries: 1_000,
            memory_max_bytes: 32 * MIB,
            max_episode_bytes: 10 * 1024 * 1024,
            max_learned_bytes: 1024 * 1024,
            redb_cache_bytes: 16 * 1024 * 1024,
            durable_commit_every: 64,
            touch_flush_threshold: 1_024,
            expire_batch: 32,
            compact_file_bytes: None,
            sealer: None,
        }
    }
}

impl CacheConfig {
    setters! {
        /// Sets [`max_entries`](Self::max_entries).
        with_max_entries(max_entries: u64);

        /// Sets [`max_bytes`](Self::max_bytes).
        with_max_bytes(max_bytes: u64);

        /// Sets [`ttl`](Self::ttl).
        with_ttl(ttl: Option<Duration>);

        /// Sets [`max_episode_bytes`](Self::max_episode_bytes).
        with_max_episode_bytes(max_episode_bytes: usize);

        /// Sets [`max_learned_bytes`](Self::max_learned_bytes).
        with_max_learned_bytes(max_learned_bytes: usize);

        /// Sets [`redb_cache_bytes`](Self::redb_cache_bytes).
        with_redb_cache_bytes(redb_cache_bytes: usize);

        /// Sets [`durable_commit_every`](Self::durable_commit_every).
        with_durable_commit_every(durable_commit_every: u32);

        /// Sets [`touch_flush_threshold`](Self::touch_flush_threshold).
        with_touch_flush_threshold(touch_flush_threshold: usize);

        /// Sets [`expire_batch`](Self::expire_batch).
        with_expire_batch(expire_batch: usize);

        /// Sets [`compact_file_bytes`](Self::compact_file_bytes).
        with_compact_file_bytes(compact_file_bytes: Option<u64>);
    }

    /// Sets the in-process front's bounds; either 0 disables the front.
    #[must_use]
    pub fn with_memory_capacity(mut self, max_entries: u64, max_bytes: u64) -> Self {
        self.memory_max_entries = max_entries;
        self.memory_max_bytes = max_bytes;
        self
    }

    /// Encrypts the file at rest with `sealer` (sets [`sealer`](Self::sealer)).
    #[must_use]
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The decode limits these settings imply.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            episode_bytes: self.max_episode_bytes,
            learned_bytes: self.max_learned_bytes,
        }
    }

    /// The decode limit for entries of `key`'s kind.
    pub(crate) fn limit_for(&self, key: &CacheKey) -> usize {
        self.decode_limits().for_key(key)
    }

    /// The file size above which the file is compacted.
    pub fn effective_compact_file_bytes(&self) -> u64 {
        self.compact_file_bytes
            .unwrap_or_else(|| self.max_bytes.saturating_mul(4).saturating_add(64 * MIB))
    }

    /// True when the in-process front is enabled.
    pub(crate) fn front_enabled(&self) -> bool {
        self.memory_max_entries > 0 && self.memory_max_bytes > 0
    }

    /// Checks the settings; called by [`RedbCache::open`](crate::RedbCache::open).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| Err(Error::invalid(format!("cache.{field}"), reason));
        if self.max_entries == 0 {
            return bad("max_entries", "must be at least 1");
        }
        if self.max_bytes == 0 {
            return bad("max_bytes", "must be at least 1");
        }
        if self.ttl.is_some_and(|t| t.is_zero()) {
            return bad("ttl", "must be positive (use null for no expiry)");
        }
        for (field, v) in [
            ("max_episode_bytes", self.max_episode_bytes),
            ("max_learned_bytes", self.max_learned_bytes),
        ] {
            if v == 0 || v > MAX_DECODE_LIMIT {
                return Err(Error::invalid(
                    format!("cache.{field}"),
                    format!("must be between 1 and {MAX_DECODE_LIMIT} bytes"),
                ));
            }
        }
        if self.durable_commit_every == 0 {
            return bad("durable_commit_every", "must be at least 1");
        }
        if self.touch_flush_threshold == 0 {
            return bad("touch_flush_threshold", "must be at least 1");
        }
        Ok(())
    }
}

/// Settings of a [`RedbOutbox`](crate::RedbOutbox).
///
/// # Default
/// | field | default |
/// |---|---|
/// | `max_entry_bytes` | 33,554,432 bytes (32 MiB): largest encoded entry appended or read |
/// | `max_batch` | 1,024 entries committed together by one fsync (group commit) |
/// | `redb_cache_bytes` | 4,194,304 bytes (4 MiB) of redb page cache |
/// | `sealer` | `None`: journals and their notes are not encrypted (never read from or written to a configuration file) |
///
/// Two configurations are equal when every setting is, their sealers compared by the
/// fingerprint of their key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// Largest encoded entry, in bytes; larger appends fail with `LimitExceeded`.
    pub max_entry_bytes: usize,
    /// Most concurrent appends committed by one transaction (one fsync).
    pub max_batch: usize,
    /// Size of redb's in-process page cache, in bytes.
    pub redb_cache_bytes: usize,
    /// Encrypts journals at rest when set: every entry is sealed (XChaCha20-Poly1305, bound to
    /// its sequence number), and so are the journal directory's notes (`usage.json`,
    /// `refused.jsonl`); see `FORMAT.md`, "Sealed files". Entries written before the journal
    /// was sealed are still read; a sealed entry that does not open (another key, damage) is
    /// an error of [`peek`](memory_core::Outbox::peek), never skipped. Never serialized.
    #[serde(skip)]
    pub sealer: Option<Sealer>,
}

impl PartialEq for OutboxConfig {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let OutboxConfig {
            max_entry_bytes,
            max_batch,
            redb_cache_bytes,
            sealer,
        } = self;
        *max_entry_bytes == other.max_entry_bytes
            && *max_batch == other.max_batch
            && *redb_cache_bytes == other.redb_cache_bytes
            && same_sealer(sealer.as_ref(), other.sealer.as_ref())
    }
}

impl Eq for OutboxConfig {}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_entry_bytes: 32 * 1024 * 1024,
            max_batch: 1_024,
            redb_cache_bytes: 4 * 1024 * 1024,
            sealer: None,
        }
    }
}

impl OutboxConfig {
    setters! {
        /// Sets [`max_entry_bytes`](Self::max_entry_bytes).
        with_max_entry_bytes(max_entry_bytes: usize);

        /// Sets [`max_batch`](Self::max_batch).
        with_max_batch(max_batch: usize);

        /// Sets [`redb_cache_bytes`](Self::redb_cache_bytes).
        with_redb_cache_bytes(redb_cache_bytes: usize);
    }

    /// Encrypts journals and their notes at rest with `sealer` (sets
    /// [`sealer`](Self::sealer)).
    #[must_use]
    pub fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// Checks the settings; called by [`RedbOutbox::open`](crate::RedbOutbox::open).
    pub fn validate(&self) -> Result<()> {
        if self.max_entry_bytes == 0 || self.max_entry_bytes > MAX_DECODE_LIMIT {
            return Err(Error::invalid(
                "outbox.max_entry_bytes",
                format!("must be between 1 and {MAX_DECODE_LIMIT} bytes"),
            ));
        }
        if self.max_batch == 0 {
            return Err(Error::invalid("outbox.max_batch", "must be at least 1"));
        }
        Ok(())
    }
}

/// `Option<Duration>` as whole milliseconds (`null` for `None`).
mod option_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // the signature serde's `with` expects
    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_json() {
        let c = CacheConfig::default();
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"ttl\":3600000"), "{json}");
        let back: CacheConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let partial: CacheConfig =
            serde_json::from_str(r#"{"max_entries": 5, "ttl": null}"#).unwrap();
        assert_eq!(partial.max_entries, 5);
        assert_eq!(partial.ttl, None);
        assert_eq!(partial.max_bytes, c.max_bytes);
        OutboxConfig::default().validate().unwrap();
    }

    #[test]
    fn sealers_compare_by_key_and_are_never_serialized() {
        use memory_seal::MasterKey;
        let key = MasterKey::generate().unwrap();
        let sealed = CacheConfig::default().with_sealer(Sealer::new(&key));
        let same = CacheConfig::default().with_sealer(Sealer::new(&key));
        let other =
            CacheConfig::default().with_sealer(Sealer::new(&MasterKey::generate().unwrap()));
        assert_eq!(sealed, same);
        assert_ne!(sealed, other);
        assert_ne!(sealed, CacheConfig::default());
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("sealer"), "{json}");
        assert!(
            serde_json::from_str::<CacheConfig>(&json)
                .unwrap()
                .sealer
                .is_none()
        );
        let outbox = OutboxConfig::default().with_sealer(Sealer::new(&key));
        assert_eq!(
            outbox,
            OutboxConfig::default().with_sealer(Sealer::new(&key))
        );
        assert_ne!(outbox, OutboxConfig::default());
        assert!(!serde_json::to_string(&outbox).unwrap().contains("sealer"));
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        for c in [
            CacheConfig::default().with_max_entries(0),
            CacheConfig::default().with_max_bytes(0),
            CacheConfig::default().with_ttl(Some(Duration::ZERO)),
            CacheConfig::default().with_max_episode_bytes(MAX_DECODE_LIMIT + 1),
            CacheConfig::default().with_durable_commit_every(0),
        ] {
            assert!(
                matches!(c.validate(), Err(Error::InvalidInput { .. })),
                "{c:?}"
            );
        }
        assert!(
            OutboxConfig::default()
                .with_max_batch(0)
                .validate()
                .is_err()
        );
    }
}
