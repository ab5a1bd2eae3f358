//! The moka cache of the hottest entries, in front of the file.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn build_front(config: &CacheConfig) -> Front {
    // Each entry weighs at least max_bytes / max_entries, so the weight budget bounds both the
    // bytes and the number of entries.
    let floor = (config.memory_max_bytes / config.memory_max_entries).max(1);
    moka::future::Cache::builder()
        .max_capacity(config.memory_max_bytes)
        .weigher(move |_k: &Vec<u8>, v: &Arc<FrontEntry>| {
            u32::try_from(u64::from(v.bytes).max(floor)).unwrap_or(u32::MAX)
        })
        .build()
}
