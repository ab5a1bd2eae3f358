//! The local redb layer of the self-learning episodic memory: a bounded cache and a durable
//! outbox.
//!
//! - [`RedbCache`] implements [`memory_core::Cache`]: episodes, patterns and heuristics by
//!   namespace and id, bounded by entry count **and** bytes, with a TTL. Eviction and expiry
//!   delete rows, and the file is compacted past a size bound, so it stays bounded under churn.
//!   A moka cache holds the hottest entries in process. The cache holds copies: the file can be
//!   deleted at any time and nothing is lost. Puts return once queued (the file is written
//!   by a group commit in the background); reads see them at once.
//! - [`RedbOutbox`] implements [`memory_core::Outbox`]: an ordered, fsynced journal of the
//!   writes acknowledged while the durable layer is unreachable, in its own file. It is the only
//!   redb state that is not a copy.
//! - Cache entries are encoded with bincode 2 behind a format-version byte and decoded under a
//!   size limit ([`decode_cached_value`]); outbox entries are JSON behind a version byte
//!   ([`decode_outbox_entry`]). Decoders return typed errors on any input and never panic.
//! - **Encryption at rest**: with a [`memory_seal::Sealer`] in [`CacheConfig::sealer`] and
//!   [`OutboxConfig::sealer`] (`with_sealer`), no content, namespace name or pattern or
//!   heuristic id is readable in the files. Cache values are sealed (XChaCha20-Poly1305, a
//!   random nonce each, bound to their key) and cache keys are keyed hashes
//!   ([`memory_seal::Sealer::hide`]); a cache file written under another key, or without one,
//!   is replaced by an empty one when opened (copies only). Journal entries are sealed, bound
//!   to their sequence number; entries written before sealing are still read, and a sealed
//!   entry that does not open is an error, never skipped. The journal directory's notes
//!   (`usage.json`, `refused.jsonl`) are sealed too. Without a sealer the files are exactly
//!   as before. Layouts in `FORMAT.md`, "Sealed files".
//!
//! Every redb call runs on tokio's blocking pool. The on-disk format (tables, key encodings,
//! version bytes) is in `FORMAT.md` next to this crate's manifest.
//!
//! ```
//! use memory_core::{Cache, CacheKey, CachedValue, Episode, Namespace, NewEpisode, Outbox, OutboxEntry, TaskContext, TaskType, WriteOp};
//! use memory_storage_redb::{CacheConfig, OutboxConfig, RedbCache, RedbOutbox};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let ns = Namespace::new("acme/api")?;
//! let episode = Episode::start(NewEpisode::new("add rate limiting", TaskType::CodeGeneration, TaskContext::new("web_api")), chrono::Utc::now());
//!
//! let cache = RedbCache::open(dir.path().join("cache.redb"), CacheConfig::default().with_max_entries(1_000)).await?;
//! cache.put(&ns, &CachedValue::Episode(std::sync::Arc::new(episode.clone()))).await?;
//! assert!(cache.get(&ns, &CacheKey::Episode(episode.id)).await?.is_some()); // seen at once
//! cache.flush().await?; // the put is committed to the file in the background; wait for it
//! assert_eq!(cache.stats().entries, 1);
//!
//! let outbox = RedbOutbox::open(dir.path().join("outbox.redb"), OutboxConfig::default()).await?;
//! let entry = OutboxEntry { idempotency_key: "create-1".into(), namespace: ns.clone(), op: WriteOp::CreateEpisode(episode) };
//! let seq = outbox.append(&entry).await?; // durable when this returns
//! let pending = outbox.peek(10).await?;
//! assert_eq!(pending, vec![(seq, entry)]);
//! outbox.ack(seq).await?;
//! assert!(outbox.is_empty().await?);
//! cache.close().await?;
//! # Ok::<(), memory_core::Error>(())
//! # }).unwrap();
//! ```

mod cache;
mod codec;
mod config;
mod error;
mod gone_keys;
mod group_commit;
mod journal;
mod journal_notes;
mod memory_cache;
mod outbox;
#[cfg(test)]
mod sealed_tests;
mod sealing;
mod tables;
mod wire;
mod write_behind;

pub use cache::{CacheOpening, RedbCache};
pub use codec::{
    CACHE_FORMAT_VERSION, DecodeLimits, Decoded, MAX_DECODE_LIMIT, OUTBOX_FORMAT_VERSION,
    decode_cached_value, decode_outbox_entry, encode_cached_value, encode_outbox_entry,
};
pub use config::{CacheConfig, OutboxConfig};
pub use journal::{DAMAGED_DIR, DamagedJournal, JournalDir};
pub use journal_notes::{REFUSED_FILE, USAGE_FILE};
pub use memory_cache::MemoryCache;
pub use outbox::{Opening, RedbOutbox};
