//! The deterministic entries the outbox crash child appends (shared with the test through
//! `#[path]`, so both sides agree byte for byte).

use memory_core::{EpisodeId, Namespace, OutboxEntry, WriteOp};

/// Entry number `i`: sizes vary from a few bytes to ~100 KB so kills land inside large writes.
pub fn entry(i: u64) -> OutboxEntry {
    let len = match i % 7 {
        0 => 25_000,
        1 | 2 => 1_000,
        _ => 3,
    };
    OutboxEntry {
        idempotency_key: format!("entry-{i}"),
        namespace: Namespace::new("crash/test").unwrap_or_else(|_| Namespace::default_namespace()),
        op: WriteOp::PutEmbedding {
            episode_id: EpisodeId(uuid::Uuid::from_u128(u128::from(i) + 1)),
            model: format!("model-{}", i % 3),
            vector: (0..len).map(|k| (i as f32) + (k as f32) / 8.0).collect(),
        },
    }
}
