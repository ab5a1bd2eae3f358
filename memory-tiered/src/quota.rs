//! Quotas through an outage.
//!
//! While the durable layer is unreachable its counts cannot be read, so
//! [`quota_usage`](memory_core::EpisodeStore::quota_usage) answers from the counts last read
//! (kept beside the journal for every process of the data directory:
//! [`Outbox::keep_usage`]) plus the episodes and steps journaled and not yet replayed, marked
//! [`estimated`](memory_core::QuotaUsage::estimated). When the layer answers, the journaled
//! counts are still added to its own until the replay has delivered them.
//!
//! The replay checks each journaled start and step batch again, against the durable layer's
//! counts (read once per namespace per replay, advanced by what it applies), when the tiered
//! layer knows the quotas ([`TieredConfig::quotas`]): one that would cross a quota is refused
//! ([`RefusedWrite`]: recorded durably by the journal ([`Outbox::record_refused`]), counted in
//! [`SyncStatus::refused_over_quota`], logged), and so is every later journaled write of an
//! episode whose start was refused. Processes replaying at once each check against the counts
//! they read, so together they may pass a quota by what they replay in the same moment.

#[allow(clippy::wildcard_imports)]
use super::*;

use std::collections::HashSet;

use memory_core::{KeptUsage, QuotaUsage, RefusedWrite};

/// How long this process leaves unchanged kept counts alone before writing them again.
const KEEP_UNCHANGED_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The tiered layer's quota ledger.
#[derive(Debug, Default)]
pub(crate) struct QuotaBook {
    /// Episodes and steps journaled and not yet replayed, per namespace.
    journaled: Mutex<HashMap<Namespace, (u64, u64)>>,
    /// The counts this process last kept, per namespace.
    kept: Mutex<HashMap<Namespace, KeptUsage>>,
    /// Episodes whose journaled start the replay refused.
    refused_episodes: Mutex<HashSet<EpisodeId>>,
    /// Writes refused since start.
    pub(crate) refused: AtomicU64,
}

/// The episodes and steps a journaled write adds.
fn adds(op: &WriteOp) -> (u64, u64) {
    match op {
        WriteOp::CreateEpisode(e) => (1, e.steps.len() as u64),
        WriteOp::AppendSteps { steps, .. } => (0, steps.len() as u64),
        _ => (0, 0),
    }
}

impl Inner {
    /// Counts a write now journaled (appended, found at start-up or adopted).
    pub(crate) fn count_journaled(&self, ns: &Namespace, op: &WriteOp) {
        let (e, s) = adds(op);
        if e + s > 0 {
            let mut j = lock(&self.quota.journaled);
            let c = j.entry(ns.clone()).or_default();
            *c = (c.0 + e, c.1 + s);
        }
    }

    /// Uncounts journaled writes the replay is done with (applied or refused).
    pub(crate) fn uncount_journaled(&self, done: &[(u64, OutboxEntry)]) {
        let mut j = lock(&self.quota.journaled);
        for (_, entry) in done {
            let (e, s) = adds(&entry.op);
            if let Some(c) = j.get_mut(&entry.namespace) {
                *c = (c.0.saturating_sub(e), c.1.saturating_sub(s));
            }
        }
        j.retain(|_, c| *c != (0, 0));
    }

    fn journaled_counts(&self, ns: &Namespace) -> (u64, u64) {
        lock(&self.quota.journaled)
            .get(ns)
            .copied()
            .unwrap_or_default()
    }

    /// [`memory_core::EpisodeStore::quota_usage`] of the tiered layer (see the module).
    pub(crate) async fn quota_usage(&self, ns: &Namespace) -> Result<QuotaUsage> {
        let (je, js) = self.journaled_counts(ns);
        match self
            .guarded("quota_usage", self.durable.quota_usage(ns))
            .await
        {
            Ok(u) => {
                self.keep_usage(ns, &u).await;
                Ok(QuotaUsage {
                    episodes: u.episodes + je,
                    steps: u.steps + js,
                    estimated: u.estimated,
                })
            }
            Err(e) if e.is_transient() => {
                let kept = self.outbox.kept_usage(ns).await.unwrap_or_else(|k| {
                    warn!(error = %k, "cannot read the kept namespace counts");
                    None
                });
                if kept.is_none() && je + js == 0 {
                    return Err(e);
                }
                let (base_e, base_s) = kept.map_or((0, 0), |k| (k.episodes, k.steps));
                Ok(QuotaUsage {
                    episodes: base_e + je,
                    steps: base_s + js,
                    estimated: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Keeps the durable layer's counts for processes that start during an outage, unless
    /// this process kept the same ones lately.
    async fn keep_usage(&self, ns: &Namespace, u: &QuotaUsage) {
        let now = self.clock.now();
        let fresh = lock(&self.quota.kept).get(ns).is_some_and(|k| {
            (k.episodes, k.steps) == (u.episodes, u.steps) && now - k.read_at < KEEP_UNCHANGED_FOR
        });
        if fresh {
            return;
        }
        let kept = KeptUsage {
            episodes: u.episodes,
            steps: u.steps,
            read_at: now,
        };
        match self.outbox.keep_usage(ns, &kept).await {
            Ok(()) => {
                lock(&self.quota.kept).insert(ns.clone(), kept);
            }
            Err(e) => warn!(error = %e, namespace = %ns, "cannot keep the namespace counts"),
        }
    }

    /// The replay's quota verdict on a journaled entry: `Some` when storing it would cross a
    /// quota (or its episode's start was refused). `seen` holds the durable counts this replay
    /// read, advanced by the entries it let through.
    pub(crate) async fn over_quota(
        &self,
        seen: &mut HashMap<Namespace, QuotaUsage>,
        entry: &OutboxEntry,
    ) -> Result<Option<RefusedWrite>> {
        let Some(q) = &self.config.quotas else {
            return Ok(None);
        };
        let refusal = |resource: &str, limit: u64| RefusedWrite {
            namespace: entry.namespace.clone(),
            write: entry.op.call_name().to_owned(),
            episode_id: entry.op.episode_id(),
            resource: resource.to_owned(),
            limit,
            refused_at: self.clock.now(),
        };
        if let Some(id) = entry.op.episode_id()
            && lock(&self.quota.refused_episodes).contains(&id)
        {
            return Ok(Some(refusal("episodes", q.max_episodes)));
        }
        let (e, s) = adds(&entry.op);
        if e + s == 0 {
            return Ok(None);
        }
        let ns = &entry.namespace;
        if !seen.contains_key(ns) {
            let u = self
                .guarded("quota_usage", self.durable.quota_usage(ns))
                .await?;
            seen.insert(ns.clone(), u);
        }
        let Some(usage) = seen.get_mut(ns) else {
            return Ok(None);
        };
        let over_episodes = e > 0 && usage.episodes + e > q.max_episodes;
        let over_steps = s > 0 && usage.steps + s > q.max_steps;
        if (over_episodes || over_steps) && !self.already_stored(ns, &entry.op).await? {
            if let WriteOp::CreateEpisode(ep) = &entry.op {
                lock(&self.quota.refused_episodes).insert(ep.id);
            }
            return Ok(Some(if over_episodes {
                refusal("episodes", q.max_episodes)
            } else {
                refusal("steps", q.max_steps)
            }));
        }
        usage.episodes += e;
        usage.steps += s;
        Ok(None)
    }

    /// Whether a journaled start is of an episode the durable layer holds already (its write
    /// was cut short by the outage after the server took it): replaying it adds nothing.
    async fn already_stored(&self, ns: &Namespace, op: &WriteOp) -> Result<bool> {
        let WriteOp::CreateEpisode(e) = op else {
            return Ok(false);
        };
        let found = self
            .guarded("get_episode", self.durable.get_episode(ns, e.id))
            .await;
        match found {
            Ok(found) => Ok(found.is_some()),
            Err(err) if err.is_transient() => Err(err),
            Err(_) => Ok(false),
        }
    }

    /// Records a refused entry where every process sees it, counts and logs it. Fails (the
    /// entry then stays in the journal for the next replay) when it cannot be recorded.
    pub(crate) async fn refuse(&self, seq: u64, refused: &RefusedWrite) -> Result<()> {
        self.outbox.record_refused(refused).await?;
        self.quota.refused.fetch_add(1, Ordering::Relaxed);
        let why = format!(
            "entry {seq} ({} in namespace {}) refused: {} quota of {} reached",
            refused.write, refused.namespace, refused.resource, refused.limit
        );
        error!(seq, write = %refused.write, namespace = %refused.namespace, resource = %refused.resource, limit = refused.limit, "journaled write refused on replay: it would cross a quota");
        let mut info = lock(&self.sync_info);
        info.last_error = Some(why.clone());
        info.rejected = Some(why);
        Ok(())
    }
}
