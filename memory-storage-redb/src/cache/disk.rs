//! The redb file: opening it (emptied when it was not closed cleanly, replaced when it was
//! sealed otherwise), its clean mark, and the tables of one write transaction (`Tabs`:
//! entries, recency, expiry, sizes).

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn open_file(path: &Path, config: &CacheConfig) -> Result<Opened, StoreError> {
    let mut db = create_file(path, config.redb_cache_bytes)?;
    if !sealed_as_configured(&db, config)? {
        db = replace_file(db, path, config)?;
    }
    init_file(db, path, config)
}

/// Whether the file's entries were written as `config` writes them: sealed under the same key
/// (its key check opens), or not sealed, as `config.sealer` says. A new file is.
fn sealed_as_configured(db: &Database, config: &CacheConfig) -> Result<bool, StoreError> {
    let txn = db.begin_read()?;
    let new = match txn.open_table(CACHE_INFO) {
        Ok(info) => info.get(INFO_LAYOUT)?.is_none(),
        Err(redb::TableError::TableDoesNotExist(_)) => true,
        Err(e) => return Err(e.into()),
    };
    let check = match txn.open_table(CACHE_MARK) {
        Ok(mark) => mark.get(MARK_SEAL)?.map(|g| g.value().to_owned()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(new || check_matches(config.sealer.as_ref(), check.as_deref()))
}

/// A new, empty file in place of `old`, which was sealed under another key, or sealed and now
/// is not, or the other way round. Its entries could not be read (or, unsealed, should not stay
/// on disk once the memory is encrypted): the cache holds copies only, so nothing is lost.
///
/// A new file rather than emptying the tables: redb keeps freed pages in the file, so the
/// bytes of plain entries would stay readable in it. The new file is created beside the old one
/// and renamed over it while this process still holds the old one, so no other process can
/// open either in between. If the rename fails, the tables are emptied instead.
fn replace_file(old: Database, path: &Path, config: &CacheConfig) -> Result<Database, StoreError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".replacing");
    let fresh_path = path.with_file_name(name);
    // Left by a replacement that was interrupted: nobody holds it (the holder of `path`
    // creates it, and this process holds `path`).
    match std::fs::remove_file(&fresh_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let fresh = create_file(&fresh_path, config.redb_cache_bytes)?;
    info!(
        path = %path.display(),
        "the cache file was written under another encryption setting: starting a new one"
    );
    if let Err(e) = std::fs::rename(&fresh_path, path) {
        warn!(path = %path.display(), error = %e, "cannot replace the cache file; emptying it instead");
        drop(fresh);
        let _ = std::fs::remove_file(&fresh_path);
        let txn = old.begin_write()?;
        wipe(&txn)?;
        txn.open_table(CACHE_INFO)?.remove(INFO_MARK_POSITION)?;
        txn.open_table(CACHE_MARK)?.remove(MARK_DATABASE)?;
        txn.open_table(CACHE_MARK)?.remove(MARK_SEAL)?;
        txn.commit()?;
        return Ok(old);
    }
    drop(old);
    Ok(fresh)
}

/// Writes the key check of a sealed file (or removes it when not sealed) unless it is right.
fn write_seal_check(txn: &WriteTransaction, config: &CacheConfig) -> Result<(), StoreError> {
    let mut mark = txn.open_table(CACHE_MARK)?;
    let check = mark.get(MARK_SEAL)?.map(|g| g.value().to_owned());
    if check_matches(config.sealer.as_ref(), check.as_deref()) {
        return Ok(());
    }
    match &config.sealer {
        Some(sealer) => {
            mark.insert(MARK_SEAL, key_check_text(sealer)?.as_str())?;
        }
        None => {
            mark.remove(MARK_SEAL)?;
        }
    }
    Ok(())
}

/// Opens the tables of a file sealed as configured (emptied when not closed cleanly).
fn init_file(db: Database, path: &Path, config: &CacheConfig) -> Result<Opened, StoreError> {
    let txn = db.begin_write()?;
    write_seal_check(&txn, config)?;
    let (entries, bytes, next_tick, mark) = {
        let (layout, clean) = {
            let info = txn.open_table(CACHE_INFO)?;
            let layout = info.get(INFO_LAYOUT)?.map(|g| g.value());
            let clean = info.get(INFO_CLEAN)?.map(|g| g.value());
            (layout, clean)
        };
        let wrong_layout = layout.is_some_and(|l| l != LAYOUT_VERSION);
        let has_rows = !wrong_layout && !txn.open_table(ENTRIES)?.is_empty()?;
        let wiped = wrong_layout || (has_rows && clean != Some(1));
        if wiped {
            info!(
                path = %path.display(),
                reason = if wrong_layout { "another layout version" } else { "not closed cleanly" },
                "emptying redb cache file"
            );
            wipe(&txn)?;
        }
        // The mark describes the entries as closed; once open, they move on without it.
        let mark = take_mark(&txn)?.filter(|_| !wiped && clean == Some(1));
        let mut tabs = Tabs::open(&txn)?;
        tabs.info.insert(INFO_LAYOUT, LAYOUT_VERSION)?;
        tabs.info.insert(INFO_CLEAN, 0)?;
        let bytes = tabs.bytes()?;
        let entries = tabs.meta.len()?;
        let next_tick = tabs
            .lru
            .last()?
            .map_or(0, |(t, _)| t.value())
            .saturating_add(1);
        (entries, bytes, next_tick, mark)
    };
    txn.commit()?;
    Ok(Opened {
        db,
        entries,
        bytes,
        next_tick,
        mark,
    })
}

/// Reads and deletes the close mark.
pub(super) fn take_mark(txn: &WriteTransaction) -> Result<Option<CacheMark>, StoreError> {
    let position = txn
        .open_table(CACHE_INFO)?
        .remove(INFO_MARK_POSITION)?
        .map(|g| g.value());
    let database = txn
        .open_table(CACHE_MARK)?
        .remove(MARK_DATABASE)?
        .map(|g| g.value().to_owned());
    Ok(match (database, position) {
        (Some(database), Some(position)) => Some(CacheMark { database, position }),
        _ => None,
    })
}

/// Deletes every data table and resets the byte count (tables are recreated on next open).
pub(super) fn wipe(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.delete_table(ENTRIES)?;
    txn.delete_table(META)?;
    txn.delete_table(LRU)?;
    txn.delete_table(EXPIRY)?;
    txn.open_table(CACHE_INFO)?.insert(INFO_BYTES, 0)?;
    Ok(())
}

/// The cache tables open in one write transaction.
pub(super) struct Tabs<'t> {
    pub(super) entries: Table<'t, &'static [u8], &'static [u8]>,
    pub(super) meta: Table<'t, &'static [u8], (u64, u64, u64)>,
    pub(super) lru: Table<'t, u64, &'static [u8]>,
    pub(super) expiry: Table<'t, &'static [u8], ()>,
    pub(super) info: Table<'t, &'static str, u64>,
}

impl<'t> Tabs<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tabs {
            entries: txn.open_table(ENTRIES)?,
            meta: txn.open_table(META)?,
            lru: txn.open_table(LRU)?,
            expiry: txn.open_table(EXPIRY)?,
            info: txn.open_table(CACHE_INFO)?,
        })
    }

    pub(super) fn bytes(&self) -> Result<u64, StoreError> {
        Ok(self.info.get(INFO_BYTES)?.map_or(0, |g| g.value()))
    }

    pub(super) fn set_bytes(&mut self, bytes: u64) -> Result<(), StoreError> {
        self.info.insert(INFO_BYTES, bytes)?;
        Ok(())
    }

    /// Deletes an entry's rows from every table and takes its stored size off `bytes`; its
    /// stored size if it existed.
    pub(super) fn remove_entry(
        &mut self,
        key: &[u8],
        bytes: &mut u64,
    ) -> Result<Option<u64>, StoreError> {
        let meta = self.meta.remove(key)?.map(|g| g.value());
        let stored = self.entries.remove(key)?.map(|g| g.value().len() as u64);
        let size = match meta {
            Some((tick, expires, size)) => {
                self.lru.remove(tick)?;
                self.expiry.remove(expiry_key(expires, key).as_slice())?;
                Some(size)
            }
            None => stored,
        };
        *bytes = bytes.saturating_sub(size.unwrap_or(0));
        Ok(size)
    }

    pub(super) fn insert(
        &mut self,
        key: &[u8],
        stored: &[u8],
        tick: u64,
        expires: u64,
    ) -> Result<(), StoreError> {
        self.entries.insert(key, stored)?;
        self.meta
            .insert(key, (tick, expires, stored.len() as u64))?;
        self.lru.insert(tick, key)?;
        self.expiry
            .insert(expiry_key(expires, key).as_slice(), ())?;
        Ok(())
    }

    /// Moves touched entries to their newest tick in the LRU order; returns the touches of
    /// keys not in the file (read while their put was queued).
    pub(super) fn apply_touches(
        &mut self,
        touches: HashMap<Vec<u8>, u64>,
    ) -> Result<HashMap<Vec<u8>, u64>, StoreError> {
        let mut absent = HashMap::new();
        for (key, tick) in touches {
            let Some((old, expires, size)) = self.meta.get(key.as_slice())?.map(|g| g.value())
            else {
                absent.insert(key, tick);
                continue;
            };
            if tick <= old {
                continue;
            }
            self.lru.remove(old)?;
            self.lru.insert(tick, key.as_slice())?;
            self.meta.insert(key.as_slice(), (tick, expires, size))?;
        }
        Ok(absent)
    }

    /// Deletes up to `max` entries whose expiry is at or before `now`, soonest first.
    pub(super) fn sweep_expired(
        &mut self,
        now: u64,
        max: usize,
        bytes: &mut u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut removed = Vec::new();
        while removed.len() < max {
            let Some(first) = self.expiry.first()?.map(|(k, _)| k.value().to_vec()) else {
                break;
            };
            let Some((expires, key)) = split_expiry_key(&first) else {
                self.expiry.remove(first.as_slice())?;
                continue;
            };
            if expires > now {
                break;
            }
            let key = key.to_vec();
            self.remove_entry(&key, bytes)?;
            self.expiry.remove(first.as_slice())?;
            removed.push(key);
        }
        Ok(removed)
    }

    /// Deletes least recently used entries until both bounds hold.
    pub(super) fn evict(
        &mut self,
        max_entries: u64,
        max_bytes: u64,
        bytes: &mut u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut evicted = Vec::new();
        while self.meta.len()? > max_entries || *bytes > max_bytes {
            let Some((tick, key)) = self
                .lru
                .first()?
                .map(|(t, k)| (t.value(), k.value().to_vec()))
            else {
                break;
            };
            self.remove_entry(&key, bytes)?;
            self.lru.remove(tick)?;
            evicted.push(key);
        }
        Ok(evicted)
    }
}
