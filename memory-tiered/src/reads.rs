//! Reads through the tiered layer: journaled writes first (the overlay), then the cache, then
//! the durable layer; several at once in one durable call for what the cache misses.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Inner {
    /// The episode as the reader should see it: overlay over (cache or durable).
    pub(crate) async fn read_episode(
        &self,
        ns: &Namespace,
        id: EpisodeId,
    ) -> Result<Option<Arc<Episode>>> {
        let (in_overlay, created_here) = {
            let ov = lock(&self.overlay);
            (ov.has_episode(ns, id), ov.created_here(ns, id))
        };
        if in_overlay {
            let base = if created_here {
                None
            } else {
                match self.load_episode(ns, id).await {
                    Ok(b) => b,
                    Err(e) if e.is_transient() => None,
                    Err(e) => return Err(e),
                }
            };
            let merged = lock(&self.overlay).episode(ns, id, base.map(Arc::unwrap_or_clone));
            return match merged {
                Some(e) => Ok(Some(Arc::new(e))),
                None => Err(Error::CircuitOpen {
                    retry_after: self.config.breaker.open_for,
                }),
            };
        }
        self.load_episode(ns, id).await
    }

    /// [`Inner::read_episode`] of several: journaled ones one by one, the rest from the
    /// cache, and what it misses from the durable layer in one call (filled into the cache as
    /// a single read would be). Without the single-flight of one read: two processes' misses of
    /// one episode may both read it, which costs a read, never a stale copy (the fill is
    /// checked against the change feed like any other).
    pub(crate) async fn read_episodes(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
    ) -> Result<Vec<Option<Arc<Episode>>>> {
        self.refresh().await;
        let mut out = vec![None; ids.len()];
        let mut misses = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            if lock(&self.overlay).has_episode(ns, id) {
                out[k] = self.read_episode(ns, id).await?;
            } else if let Some(CachedValue::Episode(e)) =
                self.cache_get(ns, &CacheKey::Episode(id)).await
            {
                out[k] = Some(e);
            } else {
                misses.push(k);
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<EpisodeId> = misses.iter().map(|&k| ids[k]).collect();
        let _filling = self.episode_cache.lock().await;
        let since = self.coherence.epoch();
        let read = self
            .guarded("get_episodes", self.durable.get_episodes(ns, &wanted))
            .await?;
        for (k, episode) in misses.into_iter().zip(read) {
            if let Some(e) = episode {
                self.cache_put(ns, CachedValue::Episode(Arc::clone(&e)), since)
                    .await;
                out[k] = Some(e);
            }
        }
        Ok(out)
    }

    /// `get_learned` of several: journaled ones from the overlay, the rest from the cache,
    /// and what it misses from the durable layer in one call (filled into the cache).
    pub(crate) async fn read_learned_many(
        &self,
        ns: &Namespace,
        ids: &[LearnedId],
    ) -> Result<Vec<Option<LearnedItem>>> {
        self.refresh().await;
        let mut out = vec![None; ids.len()];
        let mut misses = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            if let Some(item) = lock(&self.overlay).learned(ns, id) {
                out[k] = Some(item);
                continue;
            }
            let cached = match CacheKey::for_learned(id) {
                Some(key) => self.cache_get(ns, &key).await,
                None => None,
            };
            match cached.and_then(CachedValue::into_learned) {
                Some(item) => out[k] = Some(item),
                None => misses.push(k),
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let wanted: Vec<LearnedId> = misses.iter().map(|&k| ids[k].clone()).collect();
        let since = self.coherence.epoch();
        let read = self
            .guarded(
                "get_learned_many",
                self.durable.get_learned_many(ns, &wanted),
            )
            .await?;
        let mut fill = Vec::new();
        for (k, item) in misses.into_iter().zip(read) {
            if let Some(item) = item {
                if CacheKey::for_learned(&ids[k]).is_some() {
                    fill.extend(CachedValue::from_learned(item.clone()));
                }
                out[k] = Some(item);
            }
        }
        self.cache_put_many(ns, &fill, since).await;
        Ok(out)
    }

    pub(crate) async fn load_episode(
        &self,
        ns: &Namespace,
        id: EpisodeId,
    ) -> Result<Option<Arc<Episode>>> {
        let v = self
            .cached_get(ns, CacheKey::Episode(id), || async {
                Ok(self
                    .durable
                    .get_episode(ns, id)
                    .await?
                    .map(CachedValue::Episode))
            })
            .await?;
        Ok(match v {
            Some(CachedValue::Episode(e)) => Some(e),
            _ => None,
        })
    }
}
