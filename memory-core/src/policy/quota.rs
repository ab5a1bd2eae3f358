//! Per-namespace quotas and a per-namespace token-bucket rate limiter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::namespace::Namespace;

/// Per-namespace quotas on stored data.
///
/// # Default
/// 1,000,000 episodes and 100,000,000 steps per namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Most episodes per namespace.
    pub max_episodes: u64,
    /// Most steps per namespace.
    pub max_steps: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            max_episodes: 1_000_000,
            max_steps: 100_000_000,
        }
    }
}

/// Token-bucket rate limit, applied per namespace to every write (start, step, complete,
/// feedback) and every recommendation.
///
/// # Default
/// Enabled; bursts of 200,000 operations, refilled at 200,000 per second. A logged step is one
/// operation, so the brief's bulk-ingest goal (1,000 50-step episodes a second, 51,000
/// operations) runs with four times that to spare; a runaway loop in one namespace is held to
/// that pace, and the quotas ([`QuotaConfig`]) bound what it can store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Whether limiting is on.
    pub enabled: bool,
    /// Bucket size: the largest burst.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            burst: 200_000,
            per_second: 200_000.0,
        }
    }
}

impl RateLimitConfig {
    /// No rate limit.
    pub fn disabled() -> Self {
        RateLimitConfig {
            enabled: false,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: tokio::time::Instant,
}

/// A token bucket per namespace. Written here rather than taken from a crate because it must
/// follow tokio's (pausable) clock and report `retry_after` per namespace; it is 40 lines.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<Namespace, Bucket>>,
}

impl RateLimiter {
    /// A limiter with the given settings.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `cost` tokens from the namespace's bucket, or fails with [`Error::RateLimited`].
    pub fn acquire(&self, ns: &Namespace, cost: u32) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let rate = self.config.per_second.max(f64::MIN_POSITIVE);
        let burst = f64::from(self.config.burst);
        let cost = f64::from(cost);
        let now = tokio::time::Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(ns.clone()).or_insert(Bucket {
            tokens: burst,
            refilled_at: now,
        });
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.refilled_at = now;
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let missing = cost - bucket.tokens;
            Err(Error::RateLimited {
                retry_after: Duration::from_secs_f64((missing / rate).min(86_400.0)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_limits_and_refills_per_namespace() {
        let rl = RateLimiter::new(RateLimitConfig {
            enabled: true,
            burst: 3,
            per_second: 1.0,
        });
        let a = Namespace::new("a").unwrap_or_default();
        let b = Namespace::new("b").unwrap_or_default();
        for _ in 0..3 {
            assert!(rl.acquire(&a, 1).is_ok());
        }
        match rl.acquire(&a, 1) {
            Err(Error::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(1));
            }
            other => panic!("expected rate limited, got {other:?}"),
        }
        assert!(rl.acquire(&b, 1).is_ok(), "other namespace unaffected");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(rl.acquire(&a, 1).is_ok());
    }
}
