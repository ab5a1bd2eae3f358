//! The cache side of the tiered layer: reads through the cache with single-flight fills, puts
//! and invalidations checked against the change feed, and cache errors logged, never returned.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The changed patterns and heuristics as cache values.
pub(crate) fn learned_values(changes: &LearnedChanges) -> impl Iterator<Item = CachedValue> + '_ {
    cache_values(
        changes.patterns.iter().map(|p| &p.item),
        changes.heuristics.iter().map(|h| &h.item),
    )
}

/// The cache keys of the changed patterns and heuristics (the cached kinds).
pub(crate) fn learned_keys(changes: &LearnedChanges) -> impl Iterator<Item = CacheKey> + '_ {
    let patterns = changes.patterns.iter();
    let patterns = patterns.map(|p| CacheKey::Pattern(p.item.id.clone()));
    patterns.chain(
        changes
            .heuristics
            .iter()
            .map(|h| CacheKey::Heuristic(h.item.id.clone())),
    )
}

/// Patterns and heuristics (the cached kinds) as cache values.
pub(crate) fn cache_values<'a>(
    patterns: impl Iterator<Item = &'a Pattern> + 'a,
    heuristics: impl Iterator<Item = &'a Heuristic> + 'a,
) -> impl Iterator<Item = CachedValue> + 'a {
    let patterns = patterns.cloned().map(CachedValue::Pattern);
    patterns.chain(heuristics.cloned().map(CachedValue::Heuristic))
}

impl Inner {
    pub(crate) fn cache_error(&self, op: &'static str, e: &Error) {
        self.counters.cache_errors.fetch_add(1, Ordering::Relaxed);
        warn!(error = %e, op, "cache error ignored");
    }

    /// Puts `v`, prepared from durable state read or written after epoch `since`; if the
    /// change feed dropped anything meanwhile, drops it again (it may be older than what
    /// another writer committed).
    pub(crate) async fn cache_put(&self, ns: &Namespace, v: CachedValue, since: u64) {
        self.cache_put_many(ns, std::slice::from_ref(&v), since)
            .await;
    }

    /// Puts the changed learned items, in one cache commit.
    pub(crate) async fn cache_put_changes(
        &self,
        ns: &Namespace,
        changes: &LearnedChanges,
        since: u64,
    ) {
        let values: Vec<CachedValue> = learned_values(changes).collect();
        self.cache_put_many(ns, &values, since).await;
    }

    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn cache_put_many(&self, ns: &Namespace, values: &[CachedValue], since: u64) {
        if values.is_empty() {
            return;
        }
        let Some(c) = &self.cache else {
            return;
        };
        if let Err(e) = c.put_many(ns, values).await {
            self.cache_error("put", &e);
        }
        if self.coherence.epoch() != since {
            let keys: Vec<(Namespace, CacheKey)> =
                values.iter().map(|v| (ns.clone(), v.key())).collect();
            if let Err(e) = c.invalidate_many(&keys).await {
                self.cache_error("invalidate", &e);
            }
        }
    }

    /// Brings the cache up to date with other writers before a cached read (see
    /// [`coherence`]). Errors are logged: an unreachable feed leaves the copies as they are.
    pub(crate) async fn refresh(&self) {
        let Some(cache) = &self.cache else {
            return;
        };
        if self.coherence.unfed() {
            return;
        }
        let mut state = self.coherence.state.lock().await;
        if state.known() {
            match self.durable.may_have_changed().await {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => {
                    log_feed_error(&e);
                    return;
                }
            }
        }
        let after = state.after();
        let limit = if after.is_some() { MAX_CHANGES } else { 0 };
        let set = match self.durable.changes_since(after.unwrap_or(0), limit).await {
            Ok(Some(set)) => set,
            Ok(None) => {
                self.coherence.set_unfed();
                return;
            }
            Err(e) => {
                log_feed_error(&e);
                return;
            }
        };
        let verdict = state.take(set);
        log_verdict(&verdict, cache.stats().entries);
        match verdict {
            Verdict::Current => {}
            Verdict::Drop(keys) => {
                if keys.is_empty() {
                    return;
                }
                self.coherence.advance();
                if let Err(e) = cache.invalidate_many(&keys).await {
                    self.cache_error("invalidate", &e);
                }
            }
            Verdict::Clear(_) => {
                self.coherence.advance();
                if cache.stats().entries > 0
                    && let Err(e) = cache.clear().await
                {
                    self.cache_error("clear", &e);
                }
            }
        }
    }

    pub(crate) async fn cache_invalidate(&self, ns: &Namespace, key: &CacheKey) {
        if let Some(c) = &self.cache
            && let Err(e) = c.invalidate(ns, key).await
        {
            self.cache_error("invalidate", &e);
        }
    }

    /// Empties the cache without leaving old values in its free space ([`Cache::scrub`]).
    pub(crate) async fn cache_scrub(&self) {
        if let Some(c) = &self.cache
            && let Err(e) = c.scrub().await
        {
            warn!(error = %e, "cache scrub failed; clearing it instead");
            if let Err(e) = c.clear().await {
                warn!(error = %e, "cache clear failed");
            }
        }
    }

    pub(crate) async fn cache_invalidate_many(&self, keys: &[(Namespace, CacheKey)]) {
        if keys.is_empty() {
            return;
        }
        if let Some(c) = &self.cache
            && let Err(e) = c.invalidate_many(keys).await
        {
            self.cache_error("invalidate", &e);
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn cache_get(&self, ns: &Namespace, key: &CacheKey) -> Option<CachedValue> {
        let c = self.cache.as_ref()?;
        match c.get(ns, key).await {
            Ok(v) => v,
            Err(e) => {
                self.cache_error("get", &e);
                None
            }
        }
    }

    /// Cache, then durable (one shared read per key), then fill.
    pub(crate) async fn cached_get<F, Fut>(
        &self,
        ns: &Namespace,
        key: CacheKey,
        load: F,
    ) -> Result<Option<CachedValue>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<CachedValue>>>,
    {
        self.refresh().await;
        if let Some(v) = self.cache_get(ns, &key).await {
            return Ok(Some(v));
        }
        let cell = {
            let mut inflight = lock(&self.inflight);
            inflight
                .entry((ns.clone(), key.clone()))
                .or_default()
                .clone()
        };
        let is_episode = matches!(key, CacheKey::Episode(_));
        let result = cell
            .get_or_try_init(|| async {
                let _filling = if is_episode {
                    Some(self.episode_cache.lock().await)
                } else {
                    None
                };
                let since = self.coherence.epoch();
                let v = self.guarded("get", load()).await?;
                if let Some(v) = &v {
                    self.cache_put(ns, v.clone(), since).await;
                }
                Ok::<_, Error>(v)
            })
            .await
            .cloned();
        {
            let mut inflight = lock(&self.inflight);
            if inflight
                .get(&(ns.clone(), key.clone()))
                .is_some_and(|c| Arc::ptr_eq(c, &cell))
            {
                inflight.remove(&(ns.clone(), key));
            }
        }
        result
    }
}
