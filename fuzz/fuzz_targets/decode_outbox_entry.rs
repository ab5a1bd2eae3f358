//! Feeds arbitrary bytes to the outbox entry decoder: a typed result, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memory_storage_redb::decode_outbox_entry;

fuzz_target!(|data: &[u8]| {
    let _ = decode_outbox_entry(data, 1 << 20);
});
