//! Feeds arbitrary bytes to the cache entry decoder: it must return a value, `OtherVersion` or a
//! typed decode error, never panic, abort or allocate what a forged length prefix claims. A value
//! that decodes must re-encode to the same bytes' meaning (decode(encode(v)) == v).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memory_storage_redb::{DecodeLimits, Decoded, decode_cached_value, encode_cached_value};

fuzz_target!(|data: &[u8]| {
    match decode_cached_value(data, DecodeLimits::default()) {
        Ok(Decoded::Value(v)) => {
            let again = encode_cached_value(&v).expect("a decoded value encodes");
            match decode_cached_value(&again, DecodeLimits::default()) {
                Ok(Decoded::Value(w)) => assert!(w == v || format!("{w:?}") == format!("{v:?}")),
                other => panic!("re-encoded value does not decode: {other:?}"),
            }
        }
        Ok(Decoded::OtherVersion(_)) => {}
        Err(memory_core_error) => {
            let _ = memory_core_error.to_string();
        }
    }
});
