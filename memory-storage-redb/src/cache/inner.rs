//! What the cache does under its handles: reads from the file, the writes of one group commit
//! (puts, invalidations, eviction by LRU and size, expiry), and compaction.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Inner {
    pub(super) fn read_db(&self) -> RwLockReadGuard<'_, Database> {
        // A panic while holding the lock leaves the database itself consistent (transactions
        // are atomic), so a poisoned lock is still usable.
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn lock_touches(&self) -> MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        self.touches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts back the touches of keys whose put is still queued (a later batch writes it).
    pub(super) fn keep_touches_of_queued(&self, touches: HashMap<Vec<u8>, u64>) {
        let queued: Vec<(Vec<u8>, u64)> = touches
            .into_iter()
            .filter(|(k, _)| self.pending.get(k).is_some())
            .collect();
        if queued.is_empty() {
            return;
        }
        let mut t = self.lock_touches();
        for (k, tick) in queued {
            let e = t.entry(k).or_insert(tick);
            *e = (*e).max(tick);
        }
    }

    pub(super) fn take_touches(&self) -> HashMap<Vec<u8>, u64> {
        std::mem::take(&mut *self.lock_touches())
    }

    /// The bytes `key` in `ns` is stored under (a keyed hash with a sealer, see
    /// [`cache_entry_key`]).
    pub(super) fn key_bytes(&self, ns: &Namespace, key: &CacheKey) -> Vec<u8> {
        cache_entry_key(self.config.sealer.as_ref(), ns, key)
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().timestamp_millis()).unwrap_or(0)
    }

    pub(super) fn expires_at(&self, now: u64) -> u64 {
        self.config.ttl.map_or(u64::MAX, |ttl| {
            now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        })
    }

    pub(super) fn begin_epoch(&self) -> WriteEpoch<'_> {
        self.writes_started.fetch_add(1, Ordering::SeqCst);
        WriteEpoch(self)
    }

    /// Begins a write transaction: non-durable, except every `durable_commit_every`-th one.
    pub(super) fn begin_write(
        &self,
        db: &Database,
        force_durable: bool,
    ) -> Result<(WriteTransaction, bool), StoreError> {
        let mut txn = db.begin_write()?;
        let n = self.commits_since_durable.fetch_add(1, Ordering::Relaxed) + 1;
        let durable = force_durable || n >= self.config.durable_commit_every;
        if durable {
            self.commits_since_durable.store(0, Ordering::Relaxed);
        } else {
            txn.set_durability(Durability::None)?;
        }
        Ok((txn, durable))
    }

    /// Commits `txn`, lets go of the database, and compacts after a durable commit.
    pub(super) fn commit(
        &self,
        txn: WriteTransaction,
        db: RwLockReadGuard<'_, Database>,
        durable: bool,
    ) -> Result<(), StoreError> {
        txn.commit()?;
        drop(db);
        if durable {
            self.compact_logged();
        }
        Ok(())
    }

    pub(super) fn publish_size(&self, entries: u64, bytes: u64) {
        self.counters.entries.store(entries, Ordering::Relaxed);
        self.counters.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Why `stored` (under `key_bytes`) cannot be served for `key` at `now`, or its value and
    /// expiry. With a sealer, a record that does not open (another key, damage, moved from
    /// another key) is corrupt.
    pub(super) fn classify(
        &self,
        stored: &[u8],
        key_bytes: &[u8],
        key: &CacheKey,
        now: u64,
    ) -> Result<(CachedValue, u64), Stale> {
        let Some((expires, record)) = split_stored(stored) else {
            return Err(Stale::Corrupt(format!(
                "{} bytes is shorter than the header",
                stored.len()
            )));
        };
        if expires <= now {
            return Err(Stale::Expired);
        }
        let opened;
        let record = match &self.config.sealer {
            None => record,
            Some(sealer) => {
                // Checked before opening, as the decode limit is before decoding.
                let limit = self.config.limit_for(key).saturating_add(SEAL_OVERHEAD);
                if record.len() > limit {
                    return Err(Stale::Corrupt(format!(
                        "{} sealed bytes exceed the limit of {limit} bytes",
                        record.len()
                    )));
                }
                opened = sealer
                    .open(record, key_bytes)
                    .map_err(|e| Stale::Corrupt(e.to_string()))?;
                opened.as_slice()
            }
        };
        match decode_cached_value(record, self.config.decode_limits()) {
            Ok(Decoded::Value(v)) if v.key() == *key => Ok((v, expires)),
            Ok(Decoded::Value(v)) => Err(Stale::Corrupt(format!(
                "holds {:?}, not the requested key",
                v.key()
            ))),
            Ok(Decoded::OtherVersion(version)) => Err(Stale::OtherVersion(version)),
            Err(e) => Err(Stale::Corrupt(e.to_string())),
        }
    }

    /// Looks `key` up in `db`: a miss, a servable hit, or `None` when the stored entry is not
    /// served from here (expired, corrupt, of another version, or over `max_bytes`, which is
    /// checked before anything is decoded).
    pub(super) fn lookup(
        &self,
        db: &Database,
        key_bytes: &[u8],
        key: &CacheKey,
        now: u64,
        max_bytes: usize,
    ) -> Result<Option<DiskGet>, StoreError> {
        let txn = db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        let Some(guard) = table.get(key_bytes)? else {
            return Ok(Some(DiskGet::Miss));
        };
        let stored = guard.value();
        if stored.len() > max_bytes {
            return Ok(None);
        }
        Ok(self
            .classify(stored, key_bytes, key, now)
            .ok()
            .map(|(value, expires_ms)| DiskGet::Hit {
                value,
                expires_ms,
                bytes: stored.len() as u64,
            }))
    }

    /// The read of [`Inner::disk_get`] on the caller's thread, when it is cheap for sure: the
    /// database lock is free (not compacting), and the entry is absent or a servable one of at
    /// most [`INLINE_READ_BYTES`]. `None` means "ask the blocking pool": a busy lock, a large
    /// entry, a stale or corrupt one (removing it is a write), or any error (reported there).
    ///
    /// Why inline: a point read of a small entry from redb's page cache plus its decode takes
    /// a few microseconds, and handing it to the blocking pool and back (two thread wake-ups)
    /// cost more than the read itself on the 2-core machine measured (`redb_cache/get_hit_redb`
    /// 137 µs through the pool). Pages outside redb's and the OS's caches make it a short file
    /// read, as a moka miss would on any disk-backed cache.
    pub(super) fn disk_get_inline(
        &self,
        key_bytes: &[u8],
        key: &CacheKey,
        now: u64,
    ) -> Option<DiskGet> {
        let db = match self.db.try_read() {
            Ok(db) => db,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.lookup(&db, key_bytes, key, now, INLINE_READ_BYTES)
            .ok()
            .flatten()
    }

    /// For each key paired with `true`, whether the file surely holds no entry for it, all
    /// read in one transaction on the caller's thread when the database lock is free (as
    /// [`Inner::disk_get_inline`]); `false` for the keys paired with `false` and when that
    /// cannot be told cheaply (compacting, an error). No transaction when no key is asked.
    pub(super) fn file_lacks(&self, keys: &[(&[u8], bool)]) -> Vec<bool> {
        let mut out = vec![false; keys.len()];
        if !keys.iter().any(|(_, ask)| *ask) {
            return out;
        }
        let db = match self.db.try_read() {
            Ok(db) => db,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return out,
        };
        let Ok(txn) = db.begin_read() else {
            return out;
        };
        let Ok(table) = txn.open_table(ENTRIES) else {
            return out;
        };
        for (slot, (key, ask)) in out.iter_mut().zip(keys) {
            *slot = *ask && matches!(table.get(*key), Ok(None));
        }
        out
    }

    pub(super) fn disk_get(
        &self,
        key_bytes: &[u8],
        key: &CacheKey,
        now: u64,
    ) -> Result<DiskGet, StoreError> {
        let db = self.read_db();
        if let Some(read) = self.lookup(&db, key_bytes, key, now, usize::MAX)? {
            return Ok(read);
        }
        // Delete it, if it is still unservable (a writer may have replaced it meanwhile).
        let (txn, durable) = self.begin_write(&db, false)?;
        let removed = {
            let mut tabs = Tabs::open(&txn)?;
            let stale = match tabs.entries.get(key_bytes)? {
                Some(g) => self.classify(g.value(), key_bytes, key, now).err(),
                None => None,
            };
            if let Some(stale) = stale {
                let mut bytes = tabs.bytes()?;
                tabs.remove_entry(key_bytes, &mut bytes)?;
                tabs.set_bytes(bytes)?;
                self.publish_size(tabs.meta.len()?, bytes);
                Some(stale)
            } else {
                None
            }
        };
        self.commit(txn, db, durable)?;
        Ok(removed.map_or(DiskGet::Miss, DiskGet::Removed))
    }

    /// Applies a batch of writes in one transaction (group commit); one result per write, in
    /// order. A failure of the transaction fails every write of the batch.
    pub(super) fn commit_writes(&self, ops: &[WriteOp]) -> Result<Vec<WriteOutcome>, StoreError> {
        let db = self.read_db();
        let (txn, durable) = self.begin_write(&db, false)?;
        let results = {
            let mut tabs = Tabs::open(&txn)?;
            let mut touched_before = tabs.apply_touches(self.take_touches())?;
            let mut bytes = tabs.bytes()?;
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(match op {
                    WriteOp::Put(EncodedEntry {
                        key,
                        stored,
                        expires,
                        now,
                        tick,
                    }) => {
                        let old = tabs.remove_entry(key, &mut bytes)?;
                        // A read of the queued value counts as a use after the put.
                        let tick = touched_before
                            .remove(key)
                            .map_or(*tick, |read| read.max(*tick));
                        tabs.insert(key, stored, tick, *expires)?;
                        bytes = bytes.saturating_add(stored.len() as u64);
                        let expired =
                            tabs.sweep_expired(*now, self.config.expire_batch, &mut bytes)?;
                        let evicted =
                            tabs.evict(self.config.max_entries, self.config.max_bytes, &mut bytes)?;
                        WriteOutcome {
                            evicted,
                            expired,
                            replaced: old.is_some(),
                        }
                    }
                    WriteOp::Invalidate { key } => {
                        let removed = tabs.remove_entry(key, &mut bytes)?;
                        WriteOutcome {
                            replaced: removed.is_some(),
                            ..WriteOutcome::default()
                        }
                    }
                });
            }
            tabs.set_bytes(bytes)?;
            self.publish_size(tabs.meta.len()?, bytes);
            self.keep_touches_of_queued(touched_before);
            results
        };
        self.commit(txn, db, durable)?;
        Ok(results)
    }

    pub(super) fn disk_clear(&self) -> Result<(), StoreError> {
        drop(self.take_touches());
        let db = self.read_db();
        let (txn, _) = self.begin_write(&db, true)?;
        wipe(&txn)?;
        drop(Tabs::open(&txn)?);
        txn.commit()?;
        self.publish_size(0, 0);
        drop(db);
        self.compact_logged();
        Ok(())
    }

    /// Writes buffered recency updates.
    pub(super) fn flush_touches(&self, durable: bool) -> Result<(), StoreError> {
        let touches = self.take_touches();
        if touches.is_empty() && !durable {
            return Ok(());
        }
        let db = self.read_db();
        let (txn, durable) = self.begin_write(&db, durable)?;
        let absent = Tabs::open(&txn)?.apply_touches(touches)?;
        self.keep_touches_of_queued(absent);
        self.commit(txn, db, durable)
    }

    /// Durably writes buffered recency and the clean flag (not when a queued put may be
    /// missing: then the file is emptied when reopened).
    pub(super) fn mark_clean(&self) -> Result<(), StoreError> {
        if self.in_flight.lost() {
            warn!(path = %self.path.display(), "cache writes may be missing; the file will be emptied when reopened");
            return Ok(());
        }
        let db = self.read_db();
        let txn = db.begin_write()?;
        {
            let mut tabs = Tabs::open(&txn)?;
            tabs.apply_touches(self.take_touches())?;
            tabs.info.insert(INFO_CLEAN, 1)?;
            let mark = self
                .close_mark
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(m) = mark {
                tabs.info.insert(INFO_MARK_POSITION, m.position)?;
                txn.open_table(CACHE_MARK)?
                    .insert(MARK_DATABASE, m.database.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub(super) fn file_size(&self) -> Result<u64, StoreError> {
        Ok(std::fs::metadata(&self.path)?.len())
    }

    /// Compacts when the file is over its bound (called after durable commits only).
    pub(super) fn compact_logged(&self) {
        let r = self.file_size().and_then(|size| {
            if size > self.compact_at.load(Ordering::Relaxed) {
                self.compact_now().map(|_| ())
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            warn!(error = %crate::error::map("cache compact", e), "cannot compact redb cache file");
        }
    }

    pub(super) fn compact_now(&self) -> Result<bool, StoreError> {
        let before = self.file_size()?;
        let mut compacted = false;
        {
            let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
            // Each round moves pages towards the start of the file; a few rounds get most of
            // what is possible.
            for _ in 0..8 {
                if !db.compact()? {
                    break;
                }
                compacted = true;
            }
        }
        let after = self.file_size()?;
        // If the live data alone is close to the bound, wait until the file doubles before
        // compacting again rather than compacting on every durable commit.
        let base = self.config.effective_compact_file_bytes();
        self.compact_at
            .store(base.max(after.saturating_mul(2)), Ordering::Relaxed);
        info!(path = %self.path.display(), before, after, "compacted redb cache file");
        Ok(compacted)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.mark_clean() {
            warn!(error = %crate::error::map("cache close", e), "redb cache not closed cleanly; it will be emptied when reopened");
        }
    }
}
