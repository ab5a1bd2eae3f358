//! JSON columns stored compressed (schema v10): step page bodies and episode reflections.
//!
//! A value of [`COMPRESS_FROM`] bytes or more is stored as a blob, its JSON compressed with
//! zstd at level 1; a shorter one, and every value of a store below v10, as JSON text. The
//! column's type tells a reader which (text is JSON, a blob is one zstd frame), so rows written
//! before v10 are read as they are and never rewritten. On the ingest workload a 50-step page
//! is ~6.8 KB of JSON and ~1.0 KB stored, a reflection ~1.7 KB and ~0.5 KB.
//!
//! A blob is decompressed only if it is one frame that declares its size, at most
//! [`MAX_JSON_BYTES`], and holds UTF-8: anything else is a decode error naming the column (a
//! damaged or foreign row), never a panic or an allocation the row chose.

use std::cell::RefCell;

use libsql::Value;

use crate::error::{DbResult, decode};

/// The version from which step page bodies and episode reflections may be stored compressed
/// (this module's format).
pub(crate) const COMPRESSED_JSON: u32 = 10;

/// Values shorter than this stay JSON text even where compression is on: a page of one or two
/// steps (a server that writes each step as it comes) gains little from it.
pub(crate) const COMPRESS_FROM: usize = 256;

/// The zstd level: level 1 compresses a 50-step page in ~10 µs, and higher levels gained ~2%
/// on the ingest workload's pages.
const COMPRESSION_LEVEL: i32 = 1;

/// The most a compressed value may expand to. Limits keep an episode far below it (8 MiB by
/// default, whole); a blob that declares more is refused as damaged rather than allocated.
const MAX_JSON_BYTES: u64 = 256 << 20;

/// How a writer stores these JSON columns: set by the database's schema version, so a store
/// kept at an older version stays readable by the builds of that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonFormat {
    /// JSON text, always (schema versions before 10).
    Text,
    /// zstd-compressed JSON for values of [`COMPRESS_FROM`] bytes or more (version 10 on).
    Compressed,
}

impl JsonFormat {
    /// The format of a database at schema `version`.
    pub(crate) fn of_version(version: u32) -> Self {
        if version >= COMPRESSED_JSON {
            JsonFormat::Compressed
        } else {
            JsonFormat::Text
        }
    }

    /// `json` (the value of `column`) as stored in this format.
    pub(crate) fn store(self, column: &'static str, json: String) -> DbResult<Value> {
        if self == JsonFormat::Text || json.len() < COMPRESS_FROM {
            return Ok(Value::Text(json));
        }
        COMPRESSOR
            .with(|c| match &mut *c.borrow_mut() {
                Some(c) => c.compress(json.as_bytes()),
                slot @ None => {
                    let mut c = zstd::bulk::Compressor::new(COMPRESSION_LEVEL)?;
                    let out = c.compress(json.as_bytes());
                    *slot = Some(c);
                    out
                }
            })
            .map(Value::Blob)
            .map_err(|e| decode(column, format!("cannot compress: {e}")))
    }
}

thread_local! {
    /// Each writing thread's compression context, made at its first compressed value: making
    /// one per value (allocating and clearing zstd's tables) cost more than compressing.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
}

/// The JSON of a stored value of `column`: text as it is; a blob decompressed (see the module
/// documentation). NULL and numbers are decode errors.
pub(crate) fn json_of(column: &'static str, value: Value) -> DbResult<String> {
    let blob = match value {
        Value::Text(json) => return Ok(json),
        Value::Blob(blob) => blob,
        other => {
            return Err(decode(
                column,
                format!("expected text or a blob, got {other:?}"),
            ));
        }
    };
    let size = match zstd::zstd_safe::get_frame_content_size(&blob) {
        Ok(Some(size)) if size <= MAX_JSON_BYTES => size,
        Ok(Some(size)) => {
            return Err(decode(
                column,
                format!("declares {size} bytes, more than {MAX_JSON_BYTES}"),
            ));
        }
        Ok(None) | Err(_) => return Err(decode(column, "not a zstd frame with its size")),
    };
    let capacity = usize::try_from(size).map_err(|e| decode(column, e))?;
    let json = zstd::bulk::decompress(&blob, capacity)
        .map_err(|e| decode(column, format!("cannot decompress: {e}")))?;
    String::from_utf8(json).map_err(|e| decode(column, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_compressed_from_the_threshold_on_and_only_from_version_10() {
        assert_eq!(JsonFormat::of_version(9), JsonFormat::Text);
        assert_eq!(JsonFormat::of_version(10), JsonFormat::Compressed);
        let short = "y".repeat(COMPRESS_FROM - 1);
        let at = "y".repeat(COMPRESS_FROM);
        let store = |f: JsonFormat, s: &str| f.store("t", s.to_owned()).unwrap();
        assert_eq!(
            store(JsonFormat::Compressed, &short),
            Value::Text(short.clone())
        );
        assert_eq!(store(JsonFormat::Text, &at), Value::Text(at.clone()));
        let Value::Blob(blob) = store(JsonFormat::Compressed, &at) else {
            panic!("a value of {COMPRESS_FROM} bytes is compressed from version 10")
        };
        assert!(blob.len() < 64, "{} bytes", blob.len());
        assert_eq!(json_of("t", Value::Blob(blob)).unwrap(), at);
        assert_eq!(json_of("t", Value::Text(short.clone())).unwrap(), short);
    }

    #[test]
    fn a_damaged_or_foreign_value_is_a_decode_error_naming_its_column() {
        let json = "x".repeat(4 * COMPRESS_FROM);
        let Value::Blob(good) = JsonFormat::Compressed.store("t", json.clone()).unwrap() else {
            panic!("compressed")
        };
        assert_eq!(json_of("t", Value::Blob(good.clone())).unwrap(), json);
        let truncated = good[..good.len() - 3].to_vec();
        let not_utf8 = zstd::bulk::compress(&[0xff, 0xfe, 0xfd], 1).unwrap();
        // A frame header declaring 300 MiB (single segment, 8-byte content size) followed by
        // an empty last block: refused from the header, before anything is allocated.
        let mut declares_more = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        declares_more.extend_from_slice(&(300u64 << 20).to_le_bytes());
        declares_more.extend_from_slice(&[0x01, 0x00, 0x00]);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&declares_more).unwrap(),
            Some(300 << 20)
        );
        for (what, value) in [
            ("truncated", Value::Blob(truncated)),
            ("declares more than allowed", Value::Blob(declares_more)),
            ("not zstd", Value::Blob(b"[[1,2,3]]".to_vec())),
            ("empty", Value::Blob(Vec::new())),
            ("not UTF-8", Value::Blob(not_utf8)),
            ("an integer", Value::Integer(7)),
            ("NULL", Value::Null),
        ] {
            let e = json_of("episode reflection", value).unwrap_err();
            assert!(e.to_string().contains("episode reflection"), "{what}: {e}");
        }
        // A damaged frame may fail or decode to other bytes (these frames carry no
        // checksum); either way it returns.
        let mut flipped = good;
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let _ = json_of("t", Value::Blob(flipped));
    }
}
