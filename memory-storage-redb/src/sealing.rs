//! Encryption at rest of this crate's files when a [`Sealer`] is configured
//! ([`CacheConfig::sealer`](crate::CacheConfig::sealer),
//! [`OutboxConfig::sealer`](crate::OutboxConfig::sealer)); the layouts are in `FORMAT.md`,
//! "Sealed files".
//!
//! - Cache entries: the key is a keyed hash of the plain entry key (namespace, kind, id), the
//!   value `expires_ms ++ sealed record` bound to that key. The file keeps a key check in
//!   `cache_mark`, so a file written under another key (or without one) is recognised at open
//!   and replaced: the cache holds copies only.
//! - Journal entries: a frame (`MSJ1`, sequence number, length) around a record sealed with
//!   its sequence number, so that a damaged journal's bytes can still be scanned for entries.
//!   An entry that does not open is an error, never skipped: journals are not copies.
//! - Journal notes: `usage.json` sealed whole, each line of `refused.jsonl` sealed and written
//!   as lowercase hex.
//!
//! Unsealed entries, files and lines are still read by a process with a sealer (a data
//! directory that starts encrypting keeps what its journals held); sealed ones are never read
//! as plain data by a process without one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use memory_core::{CacheKey, Error, Namespace, OutboxEntry, Result};
use memory_seal::Sealer;

use crate::codec::decode_outbox_entry;
use crate::error::failed;
use crate::tables::entry_key;

/// What sealing adds to a record: the version byte, the 24-byte nonce and the 16-byte tag
/// (`memory_seal` keeps its own constant private).
pub(crate) const SEAL_OVERHEAD: usize = 1 + 24 + 16;

/// The domain of a cache entry's hidden key.
const CACHE_KEY_DOMAIN: &[u8] = b"cache entry";

/// The key of `key` in `ns` in the cache file's tables: the plain entry key (namespace, kind,
/// id), or with a sealer its keyed hash (32 bytes), which shows neither the namespace nor the
/// id and is the same for the same entry under the same key.
pub(crate) fn cache_entry_key(sealer: Option<&Sealer>, ns: &Namespace, key: &CacheKey) -> Vec<u8> {
    let plain = entry_key(ns, key);
    match sealer {
        Some(s) => s.hide(CACHE_KEY_DOMAIN, &plain).to_vec(),
        None => plain,
    }
}

/// The key check a sealed cache file keeps (in `cache_mark`), as lowercase hex.
pub(crate) fn key_check_text(sealer: &Sealer) -> Result<String> {
    sealer
        .key_check()
        .map(|token| hex(&token))
        .map_err(|e| failed("cache open", e))
}

/// Whether a cache file whose key check is `stored` (`None`: the file is not sealed) was
/// written as `sealer` writes.
pub(crate) fn check_matches(sealer: Option<&Sealer>, stored: Option<&str>) -> bool {
    match (sealer, stored) {
        (None, None) => true,
        (Some(s), Some(text)) => unhex(text.as_bytes()).is_some_and(|t| s.verify_check(&t)),
        _ => false,
    }
}

/// The first bytes of a sealed journal entry (never those of a plain one, which starts with
/// its version byte and `{`).
pub(crate) const JOURNAL_MAGIC: &[u8; 4] = b"MSJ1";
/// Bytes of a sealed journal entry before its record: the magic, the sequence number
/// (u64 little-endian) and the record's length (u32 little-endian).
const FRAME_HEADER: usize = 4 + 8 + 4;
/// What a [`Error::Decode`] of a journal entry names.
const JOURNAL_ENTRY: &str = "journal entry";

/// The associated data of the journal entry `seq`: it opens at its own sequence number only.
fn outbox_aad(seq: u64) -> [u8; 14] {
    let mut aad = [0u8; 14];
    aad[..6].copy_from_slice(b"outbox");
    aad[6..].copy_from_slice(&seq.to_le_bytes());
    aad
}

/// The stored value of the encoded journal entry `encoded` at `seq`:
/// `MSJ1 | seq | len | sealed record`.
pub(crate) fn seal_outbox_entry(sealer: &Sealer, seq: u64, encoded: &[u8]) -> Result<Vec<u8>> {
    let record = sealer
        .seal(encoded, &outbox_aad(seq))
        .map_err(|e| failed("journal append", e))?;
    let len = u32::try_from(record.len())
        .map_err(|_| failed("journal append", "entry too long to seal"))?;
    let mut out = Vec::with_capacity(FRAME_HEADER + record.len());
    out.extend_from_slice(JOURNAL_MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record);
    Ok(out)
}

/// The sequence number and record of the frame at the start of `bytes` (which starts with
/// [`JOURNAL_MAGIC`]), if its header is whole and its record within `bytes`.
fn split_frame(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let rest = bytes.strip_prefix(JOURNAL_MAGIC)?;
    let (seq, rest) = rest.split_first_chunk::<8>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    Some((u64::from_le_bytes(*seq), rest.get(..len)?))
}

/// The entry stored at `seq`: opened (with `sealer`) and decoded when sealed, decoded as it
/// is when not (written before the journal was sealed). A sealed entry that cannot be read
/// (no key, another key, damaged) is an [`Error::Decode`] that says so: the entry stays.
pub(crate) fn open_outbox_entry(
    sealer: Option<&Sealer>,
    seq: u64,
    stored: &[u8],
    limit: usize,
) -> Result<OutboxEntry> {
    if !stored.starts_with(JOURNAL_MAGIC) {
        return decode_outbox_entry(stored, limit);
    }
    let decode = |reason: String| Error::Decode {
        what: JOURNAL_ENTRY,
        reason,
    };
    let Some(sealer) = sealer else {
        return Err(decode(format!(
            "entry {seq} is sealed and this process has no encryption key; it is kept, unread"
        )));
    };
    let record = match split_frame(stored) {
        Some((_, record)) if FRAME_HEADER + record.len() == stored.len() => record,
        _ => {
            return Err(decode(format!(
                "entry {seq} is a damaged sealed entry ({} bytes); it is kept, unread",
                stored.len()
            )));
        }
    };
    if record.len() > limit.saturating_add(SEAL_OVERHEAD) {
        return Err(decode(format!(
            "entry {seq}: {} bytes exceed the limit of {limit} bytes",
            record.len()
        )));
    }
    let plain = sealer.open(record, &outbox_aad(seq)).map_err(|e| {
        decode(format!(
            "entry {seq} does not open with this key: the journal was sealed under another key, \
             or it is damaged ({e}); it is kept, unread"
        ))
    })?;
    decode_outbox_entry(&plain, limit)
}

/// Sealed entries in the raw bytes of a damaged journal: each frame found whose record opens
/// at its sequence number and decodes goes into `found` (by idempotency key); returns how
/// many frames did not (all of them without a sealer).
pub(crate) fn scan_sealed_entries(
    bytes: &[u8],
    sealer: Option<&Sealer>,
    limit: usize,
    found: &mut BTreeMap<String, OutboxEntry>,
) -> u64 {
    let mut unreadable = 0u64;
    let mut at = 0;
    while let Some(offset) = find(&bytes[at..], JOURNAL_MAGIC) {
        let begin = at + offset;
        let entry = split_frame(&bytes[begin..])
            .filter(|(_, record)| record.len() <= limit.saturating_add(SEAL_OVERHEAD))
            .zip(sealer)
            .and_then(|((seq, record), s)| s.open(record, &outbox_aad(seq)).ok())
            .and_then(|plain| decode_outbox_entry(&plain, limit).ok());
        match entry {
            Some(e) => {
                found.insert(e.idempotency_key.clone(), e);
            }
            None => unreadable += 1,
        }
        at = begin + JOURNAL_MAGIC.len();
    }
    unreadable
}

/// Where `needle` first occurs in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The associated data of `usage.json`.
pub(crate) const USAGE_AAD: &[u8] = b"journal usage";
/// The associated data of a line of `refused.jsonl`.
pub(crate) const REFUSAL_AAD: &[u8] = b"journal refusal";

/// Why a journal note's bytes cannot be read as its JSON.
pub(crate) enum NoteError {
    /// Sealed, and this process has no key.
    NoKey,
    /// Sealed, and it does not open with this key (another key, or damaged).
    DoesNotOpen,
}

impl std::fmt::Display for NoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoteError::NoKey => "it is sealed and this process has no encryption key",
            NoteError::DoesNotOpen => {
                "it is sealed and does not open with this key (another key, or damaged)"
            }
        })
    }
}

/// The JSON of a whole-file note (`usage.json`): opened when sealed, as it is when not.
pub(crate) fn open_note<'b>(
    sealer: Option<&Sealer>,
    bytes: &'b [u8],
    aad: &[u8],
) -> std::result::Result<Cow<'b, [u8]>, NoteError> {
    if !Sealer::looks_sealed(bytes) {
        // JSON never starts with the record's version byte (0xE1).
        return Ok(Cow::Borrowed(bytes));
    }
    let sealer = sealer.ok_or(NoteError::NoKey)?;
    sealer
        .open(bytes, aad)
        .map(Cow::Owned)
        .map_err(|_| NoteError::DoesNotOpen)
}

/// The JSON of a line of a line-per-record note (`refused.jsonl`): a line of hexadecimal
/// digits is a sealed record, opened; any other line is JSON as it is.
pub(crate) fn open_line<'b>(
    sealer: Option<&Sealer>,
    line: &'b [u8],
    aad: &[u8],
) -> std::result::Result<Cow<'b, [u8]>, NoteError> {
    let Some(record) = unhex(line) else {
        return Ok(Cow::Borrowed(line));
    };
    let sealer = sealer.ok_or(NoteError::NoKey)?;
    sealer
        .open(&record, aad)
        .map(Cow::Owned)
        .map_err(|_| NoteError::DoesNotOpen)
}

pub(crate) use memory_seal::hex::{decode as unhex, encode as hex};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use memory_core::{EpisodeId, WriteOp};
    use memory_seal::MasterKey;

    use super::*;
    use crate::codec::encode_outbox_entry;

    fn sealer() -> Sealer {
        Sealer::new(&MasterKey::generate().unwrap())
    }

    fn entry() -> OutboxEntry {
        OutboxEntry {
            idempotency_key: "k-1".into(),
            namespace: Namespace::new("acme").unwrap(),
            op: WriteOp::PutEmbedding {
                episode_id: EpisodeId::new(),
                model: "m".into(),
                vector: vec![0.5],
            },
        }
    }

    #[test]
    fn the_overhead_is_what_sealing_adds() {
        let s = sealer();
        assert_eq!(s.seal(b"abc", b"").unwrap().len(), 3 + SEAL_OVERHEAD);
        assert_eq!(
            unhex(hex(&[0, 1, 0xab, 0xff]).as_bytes()).unwrap(),
            [0, 1, 0xab, 0xff]
        );
        for bad in [&b""[..], b"a", b"0g", b"{\"a\":1}"] {
            assert_eq!(unhex(bad), None);
        }
    }

    #[test]
    fn journal_entries_open_at_their_sequence_number_only() {
        let (s, e) = (sealer(), entry());
        let encoded = encode_outbox_entry(&e, 1 << 20).unwrap();
        let stored = seal_outbox_entry(&s, 7, &encoded).unwrap();
        assert_eq!(stored.len(), FRAME_HEADER + encoded.len() + SEAL_OVERHEAD);
        assert_eq!(open_outbox_entry(Some(&s), 7, &stored, 1 << 20).unwrap(), e);
        for (who, seq) in [(Some(&s), 8), (None, 7), (Some(&sealer()), 7)] {
            let err = open_outbox_entry(who, seq, &stored, 1 << 20).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
            assert!(err.to_string().contains("it is kept"), "{err}");
        }
        // Plain entries read with or without a sealer.
        assert_eq!(
            open_outbox_entry(Some(&s), 1, &encoded, 1 << 20).unwrap(),
            e
        );
        assert!(open_outbox_entry(Some(&s), 7, &stored[..stored.len() - 1], 1 << 20).is_err());
        // Scanning raw bytes finds the frame.
        let mut bytes = b"garbage MSJ1 cut".to_vec();
        bytes.extend_from_slice(&stored);
        let mut found = BTreeMap::new();
        assert_eq!(
            scan_sealed_entries(&bytes, Some(&s), 1 << 20, &mut found),
            1
        );
        assert_eq!(found.into_values().collect::<Vec<_>>(), vec![e]);
        assert_eq!(
            scan_sealed_entries(&bytes, None, 1 << 20, &mut BTreeMap::new()),
            2
        );
    }

    #[test]
    fn cache_keys_and_checks_follow_the_key() {
        let (s, t) = (sealer(), sealer());
        let ns = Namespace::new("acme").unwrap();
        let key = CacheKey::Episode(EpisodeId::new());
        assert_eq!(cache_entry_key(None, &ns, &key), entry_key(&ns, &key));
        assert_eq!(cache_entry_key(Some(&s), &ns, &key).len(), 32);
        assert_ne!(
            cache_entry_key(Some(&s), &ns, &key),
            cache_entry_key(Some(&t), &ns, &key)
        );
        let check = key_check_text(&s).unwrap();
        assert!(check_matches(Some(&s), Some(&check)));
        assert!(!check_matches(Some(&t), Some(&check)));
        assert!(!check_matches(None, Some(&check)));
        assert!(!check_matches(Some(&s), None));
        assert!(check_matches(None, None));
    }
}
