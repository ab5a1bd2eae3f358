//! Writes through the tiered layer: durable first (or journaled), then the cached copies
//! patched or dropped.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Inner {
    /// A write: durable first (while nothing is journaled and the breaker allows), then the
    /// cache; on a transient failure, the outbox.
    pub(crate) async fn write(&self, ns: &Namespace, op: WriteOp) -> Result<()> {
        if let Some(((), since)) = self.try_durable(self.apply_durable(ns, &op)).await? {
            self.after_write(ns, &op, since).await;
            return Ok(());
        }
        self.enqueue(ns, op, None).await
    }

    /// The durable half of a write: runs `durable` through the breaker unless writes are
    /// being journaled. `Some((its result, the coherence epoch before it))` once stored,
    /// `None` when the write must be journaled (journaling, or a transient failure); a
    /// permanent failure is returned.
    pub(crate) async fn try_durable<T>(
        &self,
        durable: impl Future<Output = Result<T>>,
    ) -> Result<Option<(T, u64)>> {
        if self.journaling() {
            return Ok(None);
        }
        let since = self.coherence.epoch();
        match self.guarded("write", durable).await {
            Ok(v) => Ok(Some((v, since))),
            Err(e) if !e.is_transient() => Err(e),
            Err(e) => {
                warn!(error = %e, "durable write failed; journaling it");
                Ok(None)
            }
        }
    }

    /// Folds journaled deltas the durable layer now holds into the cached episodes and drops
    /// the cached learned items they changed.
    pub(crate) async fn patch_cached(&self, settled: overlay::Released, since: u64) {
        for (ns, key) in &settled.keys {
            self.cache_invalidate(ns, key).await;
        }
        let _patching = self.episode_cache.lock().await;
        for (ns, id, delta) in settled.episodes {
            let key = CacheKey::Episode(id);
            let base = match self.cache_get(&ns, &key).await {
                Some(CachedValue::Episode(e)) => Some(Arc::unwrap_or_clone(e)),
                _ => None,
            };
            match delta.fold(base) {
                Some(e) => {
                    self.cache_put(&ns, CachedValue::Episode(Arc::new(e)), since)
                        .await;
                }
                None => self.cache_invalidate(&ns, &key).await,
            }
        }
    }

    /// The cached in-progress episode `c` completes, patched, to put back; an absent one is
    /// invalidated (a fill may be racing) and a completed one left alone. Call with the
    /// episode-patching lock held.
    pub(crate) async fn completed_in_cache(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Option<CachedValue> {
        let key = CacheKey::Episode(c.episode_id);
        match self.cache_get(ns, &key).await {
            Some(CachedValue::Episode(mut shared)) if !shared.is_completed() => {
                // Copy on write: readers holding the cached episode keep what they read.
                let e = Arc::make_mut(&mut shared);
                e.add_steps(&c.steps);
                e.outcome = Some(c.outcome.clone());
                e.reward = Some(c.reward.clone());
                e.reflection = Some(c.reflection.clone());
                e.completed_at = Some(c.completed_at);
                Some(CachedValue::Episode(shared))
            }
            Some(_) => None,
            None => {
                self.cache_invalidate(ns, &key).await;
                None
            }
        }
    }

    /// After a durable completion: the patched episode goes to the cache, and so do the
    /// learned items it changed over a durable layer whose reads need a server (in one
    /// commit), so that they stay readable through an outage. Over a local file the changed
    /// items are only dropped from the cache, not written to it: reading one back from the
    /// file is cheap and few are read by id soon after, while writing every changed item
    /// through took about a quarter of an ingest's CPU. Dropping a key the cache file does not hold
    /// (every item a completion creates) needs no cache transaction.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn after_complete(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
        changes: Option<&LearnedChanges>,
        since: u64,
    ) {
        let _patching = self.episode_cache.lock().await;
        let mut values: Vec<CachedValue> =
            self.completed_in_cache(ns, c).await.into_iter().collect();
        let mut stale: Vec<(Namespace, CacheKey)> = Vec::new();
        if let Some(ch) = changes {
            if self.durable.reads_need_a_server() {
                values.extend(learned_values(ch));
            } else {
                stale.extend(learned_keys(ch).map(|k| (ns.clone(), k)));
            }
        }
        self.cache_put_many(ns, &values, since).await;
        self.cache_invalidate_many(&stale).await;
    }

    /// Keeps the cache in step with a write the durable layer accepted. Over a durable layer
    /// whose reads need a server, in-progress episodes are patched in place (write-through),
    /// so that an episode started before an outage can still be read, and completed, during
    /// it; over a local file, a new episode is not cached and a step batch drops the cached
    /// copy.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn after_write(&self, ns: &Namespace, op: &WriteOp, since: u64) {
        // Over a local file a create touches no cached episode, so it does not queue here
        // behind the patches of concurrent writes.
        let caches_creates = self.cache.is_some() && self.durable.reads_need_a_server();
        let _patching = match op {
            WriteOp::CreateEpisode(_) if !caches_creates => None,
            WriteOp::CreateEpisode(_)
            | WriteOp::AppendSteps { .. }
            | WriteOp::CompleteEpisode(_) => Some(self.episode_cache.lock().await),
            _ => None,
        };
        match op {
            WriteOp::CreateEpisode(e) => {
                // A create is idempotent: if the id existed, the stored episode wins, so only
                // fill an empty slot. Over a local file the new episode is not cached: its
                // first step batch would drop the copy, and reading it back is cheap.
                if caches_creates && self.cache_get(ns, &CacheKey::Episode(e.id)).await.is_none() {
                    self.cache_put(ns, CachedValue::Episode(Arc::new(e.clone())), since)
                        .await;
                }
            }
            WriteOp::AppendSteps { episode_id, steps } => {
                self.after_append(ns, *episode_id, steps, since).await;
            }
            WriteOp::CompleteEpisode(c) => {
                if let Some(e) = self.completed_in_cache(ns, c).await {
                    self.cache_put(ns, e, since).await;
                }
            }
            WriteOp::RecordFeedback(f) => {
                let key = match &f.target {
                    FeedbackTarget::Pattern(id) => CacheKey::Pattern(id.clone()),
                    FeedbackTarget::Heuristic(id) => CacheKey::Heuristic(id.clone()),
                };
                self.cache_invalidate(ns, &key).await;
            }
            WriteOp::PutLearned(items) => {
                let values: Vec<CachedValue> =
                    cache_values(items.patterns.iter(), items.heuristics.iter()).collect();
                self.cache_put_many(ns, &values, since).await;
            }
            WriteOp::ForgetEpisodes { episode_ids, .. } => {
                let keys: Vec<(Namespace, CacheKey)> = (episode_ids.iter())
                    .map(|id| (ns.clone(), CacheKey::Episode(*id)))
                    .collect();
                self.cache_invalidate_many(&keys).await;
            }
            WriteOp::PutEmbedding { .. } => {}
        }
    }

    /// After a durable step batch: the cached episode is dropped or patched. Call with the
    /// episode-patching lock held.
    pub(crate) async fn after_append(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
        since: u64,
    ) {
        let key = CacheKey::Episode(episode_id);
        // Step batches patch the cached in-progress episode only when the durable layer's
        // reads need a server (a restarted process reads it during an outage).
        if !self.durable.reads_need_a_server() {
            // Read back from the local durable file when next asked for: cheaper than copying
            // and re-encoding the whole episode on every batch.
            self.cache_invalidate(ns, &key).await;
        } else if let Some(CachedValue::Episode(mut e)) = self.cache_get(ns, &key).await {
            // Numbered as the store numbered them, if the cached copy was current; if another
            // writer had added steps, the change feed drops this copy before the next read.
            Arc::make_mut(&mut e).add_steps(steps);
            self.cache_put(ns, CachedValue::Episode(e), since).await;
        }
    }
}
