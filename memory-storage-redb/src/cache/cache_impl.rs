//! The [`Cache`] interface of [`RedbCache`], and the group commit of its writes.

#[allow(clippy::wildcard_imports)]
use super::*;

#[async_trait]
impl Cache for RedbCache {
    async fn get(&self, ns: &Namespace, key: &CacheKey) -> Result<Option<CachedValue>> {
        let inner = &self.inner;
        let k = inner.key_bytes(ns, key);
        let now = inner.now_ms();
        let queued = inner.pending.get(&k).filter(|e| e.expires_ms > now);
        let mut hit = queued.map(|e| (e, "queued"));
        if hit.is_none()
            && let Some(front) = &inner.front
            && let Some(entry) = front.get(k.as_slice()).await
        {
            if entry.expires_ms > now {
                hit = Some((entry, "memory"));
            } else {
                front.invalidate(k.as_slice()).await;
            }
        }
        if let Some((entry, tier)) = hit {
            add(&inner.counters.memory_hits, 1);
            debug!(namespace = ns.as_str(), key = ?key, "cache hit ({tier})");
            let value = entry.value.clone();
            self.touch(k).await;
            return Ok(Some(value));
        }

        let started = inner.writes_started.load(Ordering::SeqCst);
        let finished = inner.writes_finished.load(Ordering::SeqCst);
        let read = if let Some(read) = inner.disk_get_inline(&k, key, now) {
            read
        } else {
            let (this, kb, kc) = (inner.clone(), k.clone(), key.clone());
            blocking("cache get", move || this.disk_get(&kb, &kc, now)).await?
        };
        match read {
            DiskGet::Hit {
                value,
                expires_ms,
                bytes,
            } => {
                add(&inner.counters.disk_hits, 1);
                debug!(namespace = ns.as_str(), key = ?key, "cache hit (disk)");
                self.touch(k.clone()).await;
                if let Some(front) = &inner.front
                    && started == finished
                {
                    let entry = FrontEntry {
                        value: value.clone(),
                        expires_ms,
                        bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                    };
                    front.insert(k.clone(), Arc::new(entry)).await;
                    if inner.writes_started.load(Ordering::SeqCst) != started {
                        // A write overlapped the fill: what was read may be stale.
                        front.invalidate(k.as_slice()).await;
                    }
                }
                Ok(Some(value))
            }
            DiskGet::Miss => {
                add(&inner.counters.misses, 1);
                debug!(namespace = ns.as_str(), key = ?key, "cache miss");
                Ok(None)
            }
            DiskGet::Removed(stale) => {
                add(&inner.counters.misses, 1);
                match stale {
                    Stale::Expired => {
                        add(&inner.counters.expirations, 1);
                        debug!(namespace = ns.as_str(), key = ?key, "cache miss (expired, removed)");
                    }
                    Stale::Corrupt(reason) => {
                        add(&inner.counters.corrupt, 1);
                        warn!(namespace = ns.as_str(), key = ?key, reason, "removed corrupt cache entry");
                    }
                    Stale::OtherVersion(version) => {
                        debug!(namespace = ns.as_str(), key = ?key, version, "cache miss (other format version, removed)");
                    }
                }
                Ok(None)
            }
        }
    }

    async fn put(&self, ns: &Namespace, value: &CachedValue) -> Result<()> {
        self.put_many(ns, std::slice::from_ref(value)).await
    }

    /// Queues every put at once, so the committing task writes them in one transaction, and
    /// returns without waiting for it (write-behind): until it commits, reads
    /// are served the queued values.
    async fn put_many(&self, ns: &Namespace, values: &[CachedValue]) -> Result<()> {
        let inner = &self.inner;
        let mut first = None;
        let mut entries = Vec::with_capacity(values.len());
        for v in values {
            match self.encode_entry(ns, v) {
                Ok(e) => entries.push((e, v)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        if entries.is_empty() {
            return first.map_or(Ok(()), Err);
        }
        inner.writes_started.fetch_add(1, Ordering::SeqCst);
        let mut ops = Vec::with_capacity(entries.len());
        let mut keys = Vec::with_capacity(entries.len());
        let mut fronts = Vec::with_capacity(entries.len());
        for (e, v) in entries {
            let (op, front) = e.into_op(v);
            let entry = Arc::new(front.entry);
            let seq = inner.pending.put(front.key.clone(), Arc::clone(&entry));
            fronts.push((front.key.clone(), entry));
            keys.push((front.key, seq));
            ops.push(op);
        }
        add(&inner.counters.inserts, ops.len() as u64);
        // Queued now, so an invalidation or put that comes later commits after these.
        let put_keys = keys.iter().map(|(k, _)| k.as_slice());
        let replies = inner
            .gone
            .queue_puts(put_keys, || group_commit::enqueue(inner, ops));
        if let Some(f) = &inner.front {
            for (key, entry) in fronts {
                f.insert(key, entry).await;
            }
        }
        debug!(
            namespace = ns.as_str(),
            count = keys.len(),
            "cache put queued"
        );
        let finish = FinishPuts {
            cache: self.clone(),
            keys,
            replies,
            done: false,
        };
        match inner.in_flight.begin() {
            Some(permit) => {
                drop(tokio::spawn(async move {
                    finish.run().await;
                    // After the handle is gone, so a close that waited can take the file.
                    drop(permit);
                }));
            }
            None => finish.run().await,
        }
        first.map_or(Ok(()), Err)
    }

    async fn invalidate(&self, ns: &Namespace, key: &CacheKey) -> Result<()> {
        self.invalidate_many(&[(ns.clone(), key.clone())]).await
    }

    async fn invalidate_many(&self, keys: &[(Namespace, CacheKey)]) -> Result<()> {
        let inner = &self.inner;
        let encoded: Vec<Vec<u8>> = keys.iter().map(|(ns, k)| inner.key_bytes(ns, k)).collect();
        let _epoch = inner.begin_epoch();
        self.front_invalidate(&encoded).await;
        // Keys whose removal from the file already committed (and nothing was put since), and
        // keys the file does not hold with no put of them queued, need no transaction. Asked
        // under the gone-keys lock, which every put is queued under and every pending value
        // of a queued put is dropped under: a put queued earlier still has its pending value
        // then, unless an invalidation queued since (which the map knows) dropped it.
        let absent = |asked: &[(&[u8], bool)]| {
            // Every pending value first, then one read of the file for all the keys: a put
            // whose pending value is gone has committed before that read began.
            let candidates: Vec<(&[u8], bool)> = asked
                .iter()
                .map(|&(key, unknown)| {
                    let had_pending = inner.pending.remove(key);
                    (key, unknown && !had_pending)
                })
                .collect();
            inner.file_lacks(&candidates)
        };
        let queued = inner.gone.queue_invalidations(encoded, absent, |fresh| {
            let ops = fresh
                .into_iter()
                .map(|key| WriteOp::Invalidate { key })
                .collect();
            group_commit::enqueue(inner, ops)
        });
        let Some((going, replies)) = queued else {
            debug!(count = keys.len(), "cache invalidate: not in the file");
            return Ok(());
        };
        let mut first = None;
        let outcomes = group_commit::wait(&inner.writes, replies).await;
        for ((key, generation), out) in going.iter().zip(outcomes) {
            inner.gone.finished(key, *generation, out.is_ok());
            if let Err(e) = out {
                first.get_or_insert(e);
            }
        }
        debug!(count = keys.len(), "cache invalidate");
        first.map_or(Ok(()), Err)
    }

    async fn settle(&self) {
        self.inner.in_flight.drained().await;
    }

    async fn clear(&self) -> Result<()> {
        let inner = &self.inner;
        // Queued puts first, so none lands after the wipe.
        inner.in_flight.drained().await;
        inner.pending.clear();
        let _epoch = inner.begin_epoch();
        if let Some(front) = &inner.front {
            front.invalidate_all();
        }
        let this = inner.clone();
        blocking("cache clear", move || this.disk_clear()).await?;
        if let Some(front) = &inner.front {
            front.invalidate_all();
        }
        debug!("cache cleared");
        Ok(())
    }

    /// Clears, then compacts until redb can shrink the file no more: the pages that held the
    /// values are cut off the end of the file instead of staying in it as free pages.
    async fn scrub(&self) -> Result<()> {
        self.clear().await?;
        let inner = self.inner.clone();
        blocking("cache scrub", move || {
            while inner.compact_now()? {}
            Ok(())
        })
        .await
    }

    fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            memory_hits: l(&c.memory_hits),
            disk_hits: l(&c.disk_hits),
            misses: l(&c.misses),
            inserts: l(&c.inserts),
            evictions: l(&c.evictions),
            expirations: l(&c.expirations),
            corrupt: l(&c.corrupt),
            entries: l(&c.entries),
            bytes: l(&c.bytes),
        }
    }

    fn opened_mark(&self) -> Option<CacheMark> {
        self.inner.opened_mark.clone()
    }

    fn set_close_mark(&self, mark: CacheMark) {
        *self
            .inner
            .close_mark
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(mark);
    }
}

impl Committer for Inner {
    type Op = WriteOp;
    type Out = WriteOutcome;

    fn group(&self) -> &GroupCommit<WriteOp, WriteOutcome> {
        &self.writes
    }

    fn commit(&self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StoreError> {
        self.commit_writes(ops)
    }
}
