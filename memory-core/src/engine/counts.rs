//! What this process knows of each namespace's size, for quotas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};
use tracing::warn;

use crate::error::Result;
use crate::namespace::Namespace;
use crate::storage::Storage;

/// How long a namespace's counts are used before they are read from storage again.
const COUNTS_FRESH_FOR: TimeDelta = TimeDelta::seconds(10);

/// A namespace's counts: read from storage on first use and again once
/// [`COUNTS_FRESH_FOR`] has passed (other processes write to it too), advanced by this
/// process's own writes in between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NsCounts {
    pub episodes: u64,
    pub steps: u64,
    read_at: DateTime<Utc>,
}

/// The counts of every namespace this process writes to.
#[derive(Debug)]
pub(crate) struct QuotaCounts {
    storage: Arc<dyn Storage>,
    counts: Mutex<HashMap<Namespace, NsCounts>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl QuotaCounts {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Self {
        QuotaCounts {
            storage,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The namespace's counts. While the durable layer is unreachable they cannot be read:
    /// the last counts read, advanced by this process's writes since (journaled ones
    /// included), stand for them, so a running process keeps the quota through an outage.
    /// A process that has read none yet cannot check the quota until the layer answers,
    /// unless its storage keeps counts across processes (a tiered layer answers
    /// [`quota_usage`](crate::EpisodeStore::quota_usage) from the counts its journal kept and what it journaled).
    pub(crate) async fn get(&self, ns: &Namespace, now: DateTime<Utc>) -> Result<NsCounts> {
        if let Some(c) = lock(&self.counts).get(ns)
            && now - c.read_at < COUNTS_FRESH_FOR
        {
            return Ok(*c);
        }
        let usage = match self.storage.quota_usage(ns).await {
            Ok(u) => u,
            Err(e) if e.is_transient() => {
                if let Some(c) = lock(&self.counts).get_mut(ns) {
                    // Asked again once they are stale again: a down server is not asked at
                    // every write.
                    c.read_at = now;
                    warn!(error = %e, namespace = %ns, episodes = c.episodes, "namespace counts unavailable; the quota holds against the last counts read and this process's writes since");
                    return Ok(*c);
                }
                warn!(error = %e, namespace = %ns, "namespace counts unavailable and never read; quota not enforced for this call");
                return Ok(NsCounts {
                    episodes: 0,
                    steps: 0,
                    read_at: now,
                });
            }
            Err(e) => return Err(e),
        };
        let c = NsCounts {
            episodes: usage.episodes,
            steps: usage.steps,
            read_at: now,
        };
        lock(&self.counts).insert(ns.clone(), c);
        Ok(c)
    }

    /// Counts an episode this process started.
    pub(crate) fn add_episode(&self, ns: &Namespace) {
        if let Some(c) = lock(&self.counts).get_mut(ns) {
            c.episodes += 1;
        }
    }

    /// Counts a step this process buffered.
    pub(crate) fn add_step(&self, ns: &Namespace) {
        if let Some(c) = lock(&self.counts).get_mut(ns) {
            c.steps += 1;
        }
    }

    /// Drops what this process knows of the namespace's counts (episodes were forgotten): the
    /// next quota check reads them again.
    pub(crate) fn forget(&self, ns: &Namespace) {
        lock(&self.counts).remove(ns);
    }
}
