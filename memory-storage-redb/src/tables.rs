//! redb table definitions and key encodings (see `FORMAT.md`).
//!
//! # Cache file
//! | table | key | value |
//! |---|---|---|
//! | `cache_entries` | entry key | `expires_ms` (u64 big-endian) ++ encoded entry |
//! | `cache_meta` | entry key | `(tick, expires_ms, stored_bytes)` |
//! | `cache_lru` | `tick` (u64) | entry key |
//! | `cache_expiry` | `expires_ms` (u64 big-endian) ++ entry key | `()` |
//! | `cache_info` | name | u64 (`layout`, `bytes`, `clean`, `mark_position`) |
//! | `cache_mark` | name | text (`database`; `seal` in a sealed file) |
//!
//! The entry key is `ns_len: u8, ns bytes, kind: u8, id bytes`: kind 1 = episode (id: the 16
//! UUID bytes), 2 = pattern, 3 = heuristic (id: its UTF-8 text). Namespaces are at most 128
//! bytes, so the length fits a byte, and every key of a namespace shares its prefix. In a
//! sealed file (a sealer configured) the entry key is instead the keyed hash of those bytes
//! (32 bytes) and the encoded entry is sealed (see `sealing.rs`).
//!
//! A tick is a counter that grows with every access; `cache_lru`'s first row is the least
//! recently used entry and `cache_expiry`'s first row the one expiring first, so eviction and
//! expiry each cost O(log n) per entry, never a scan.
//!
//! # Outbox file
//! | table | key | value |
//! |---|---|---|
//! | `outbox_entries` | sequence number (u64) | encoded outbox entry (framed and sealed with a sealer) |
//! | `outbox_info` | name | u64 (`layout`, `next_seq`) |

use memory_core::{CacheKey, Namespace};
use redb::TableDefinition;

/// Layout version of both files' tables, stored under `layout` in the info tables.
pub(crate) const LAYOUT_VERSION: u64 = 1;

/// Entry key -> expiry header ++ encoded entry.
pub(crate) const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cache_entries");
/// Entry key -> (tick, `expires_ms`, stored bytes).
pub(crate) const META: TableDefinition<&[u8], (u64, u64, u64)> = TableDefinition::new("cache_meta");
/// Tick -> entry key, oldest first.
pub(crate) const LRU: TableDefinition<u64, &[u8]> = TableDefinition::new("cache_lru");
/// Expiry key -> (), soonest first.
pub(crate) const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("cache_expiry");
/// Named counters and flags of the cache file.
pub(crate) const CACHE_INFO: TableDefinition<&str, u64> = TableDefinition::new("cache_info");
/// Named text of the cache file: the database of the close mark, the key check of a sealed
/// file.
pub(crate) const CACHE_MARK: TableDefinition<&str, &str> = TableDefinition::new("cache_mark");

/// Sequence number -> encoded outbox entry.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox_entries");
/// Named counters of the outbox file.
pub(crate) const OUTBOX_INFO: TableDefinition<&str, u64> = TableDefinition::new("outbox_info");

/// `cache_info` / `outbox_info` row: the layout version.
pub(crate) const INFO_LAYOUT: &str = "layout";
/// `cache_info` row: sum of stored bytes.
pub(crate) const INFO_BYTES: &str = "bytes";
/// `cache_info` row: 1 after a clean close, 0 while open.
pub(crate) const INFO_CLEAN: &str = "clean";
/// `cache_info` row: the change-feed position of the close mark (written with `clean = 1`).
pub(crate) const INFO_MARK_POSITION: &str = "mark_position";
/// `cache_mark` row: the database of the close mark.
pub(crate) const MARK_DATABASE: &str = "database";
/// `cache_mark` row: the key check of a sealed file (lowercase hex); absent when not sealed.
pub(crate) const MARK_SEAL: &str = "seal";
/// `outbox_info` row: the next sequence number to assign.
pub(crate) const INFO_NEXT_SEQ: &str = "next_seq";

/// Length of the expiry header in front of each stored entry.
pub(crate) const HEADER_LEN: usize = 8;

/// The entry key of `key` in `ns`.
pub(crate) fn entry_key(ns: &Namespace, key: &CacheKey) -> Vec<u8> {
    let ns = ns.as_str().as_bytes();
    let (kind, id): (u8, &[u8]) = match key {
        CacheKey::Episode(id) => (1, id.0.as_bytes()),
        CacheKey::Pattern(id) => (2, id.0.as_bytes()),
        CacheKey::Heuristic(id) => (3, id.0.as_bytes()),
    };
    let mut out = Vec::with_capacity(2 + ns.len() + id.len());
    // Namespaces are validated to at most 128 bytes.
    out.push(u8::try_from(ns.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(ns);
    out.push(kind);
    out.extend_from_slice(id);
    out
}

/// The `cache_expiry` key of an entry.
pub(crate) fn expiry_key(expires_ms: u64, entry_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entry_key.len());
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(entry_key);
    out
}

/// Splits a `cache_expiry` key into the expiry time and the entry key.
pub(crate) fn split_expiry_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

/// Splits a stored `cache_entries` value into the expiry time and the encoded entry.
pub(crate) fn split_stored(value: &[u8]) -> Option<(u64, &[u8])> {
    split_expiry_key(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use memory_core::{EpisodeId, PatternId};

    use super::*;

    #[test]
    fn keys_are_prefixed_by_namespace_and_kind() {
        let a = Namespace::new("a").unwrap();
        let ab = Namespace::new("ab").unwrap();
        let id = EpisodeId::new();
        let ka = entry_key(&a, &CacheKey::Episode(id));
        assert_eq!(ka[0], 1);
        assert_eq!(&ka[1..2], b"a");
        assert_eq!(ka[2], 1);
        assert_eq!(&ka[3..], id.0.as_bytes());
        // Length prefix keeps "a" + "b..." distinct from "ab".
        assert_ne!(
            entry_key(&a, &CacheKey::Pattern(PatternId("bx".into()))),
            entry_key(&ab, &CacheKey::Pattern(PatternId("x".into())))
        );
        let ek = expiry_key(42, &ka);
        assert_eq!(split_expiry_key(&ek), Some((42, ka.as_slice())));
        assert!(
            expiry_key(1, &ka) < expiry_key(256, &ka),
            "big-endian sorts by time"
        );
        assert_eq!(split_expiry_key(&[1, 2]), None);
    }
}
