//! [`RedbOutbox`]: the durable, ordered journal of writes acknowledged while the durable layer
//! is unreachable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use memory_core::{Error, Outbox, OutboxEntry, Result};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tracing::{debug, info};

use crate::codec::encode_outbox_entry;
use crate::config::OutboxConfig;
use crate::error::{StoreError, blocking, create_file, failed, map};
use crate::group_commit::{self, Committer, GroupCommit};
use crate::sealing::{open_outbox_entry, seal_outbox_entry};
use crate::tables::{INFO_LAYOUT, INFO_NEXT_SEQ, LAYOUT_VERSION, OUTBOX, OUTBOX_INFO};

/// A durable outbox in its own redb file.
///
/// - [`append`](Outbox::append) returns only after the entry's transaction is committed with
///   `Durability::Immediate` (fsynced). Appends that arrive while a commit is in flight are
///   committed together by the next one (group commit: one fsync for many appenders), in
///   arrival order; sequence numbers increase strictly and are never reused, even after
///   everything is acknowledged and the file is reopened.
/// - Entries are checked before they are written: one that would not decode back unchanged is
///   refused, so [`peek`](Outbox::peek) can always replay what `append` accepted.
/// - [`ack`](Outbox::ack) deletes a prefix (durably; an ack lost in a crash only means a replay,
///   which the idempotency keys make harmless). [`len`](Outbox::len) reads the table's stored
///   length (O(1)).
/// - After a crash, opening the file runs redb's recovery: every committed append is there and
///   no entry is torn (pages are checksummed; a commit is all or nothing).
/// - With a sealer ([`OutboxConfig::sealer`]) each entry is sealed, bound to its sequence
///   number. Entries written unsealed are still read; a sealed entry that does not open (no
///   key, another key, damage) makes `peek` fail with [`Error::Decode`] and stays in the file.
#[derive(Clone)]
pub struct RedbOutbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedbOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbOutbox")
            .field("path", &self.inner.path)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    config: OutboxConfig,
    appends: GroupCommit<Vec<u8>, u64>,
}

impl RedbOutbox {
    /// Opens (or creates) the outbox file at `path`, recovering it after a crash.
    pub async fn open(path: impl AsRef<Path>, config: OutboxConfig) -> Result<Self> {
        config.validate()?;
        let path = path.as_ref().to_path_buf();
        let (p, c) = (path.clone(), config.clone());
        let (db, len) = blocking("outbox open", move || open_file(&p, &c)).await?;
        if len > 0 {
            info!(path = %path.display(), pending = len, "outbox has pending writes");
        }
        Ok(Self::over(db, path, config))
    }

    fn over(db: Database, path: PathBuf, config: OutboxConfig) -> Self {
        RedbOutbox {
            inner: Arc::new(Inner {
                db,
                path,
                appends: GroupCommit::new(config.max_batch, "outbox append"),
                config,
            }),
        }
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Opens an existing outbox file that another process may hold or may have left damaged:
    /// never creates one, checks every page before trusting it (a damaged file fails here
    /// instead of panicking later), and tells a file held by a live process apart.
    pub async fn open_existing(path: impl AsRef<Path>, config: OutboxConfig) -> Opening {
        if let Err(e) = config.validate() {
            return Opening::Damaged(e.to_string());
        }
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let c = config.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let db = redb::Builder::new()
                .set_cache_size(c.redb_cache_bytes)
                .set_check_integrity_on_open(true)
                .open(&p);
            match db {
                Ok(db) => Ok(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(None),
                Err(redb::DatabaseError::Storage(redb::StorageError::Io(io)))
                    if io.kind() == std::io::ErrorKind::NotFound =>
                {
                    Err(None)
                }
                Err(e) => Err(Some(e.to_string())),
            }
        })
        .await;
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(None)) if !path.exists() => return Opening::Gone,
            Ok(Err(None)) => return Opening::Held,
            Ok(Err(Some(why))) => return Opening::Damaged(why),
            Err(join) => return Opening::Damaged(format!("opening panicked: {join}")),
        };
        let p = path.clone();
        let checked = tokio::task::spawn_blocking(move || check_layout(db, &p)).await;
        match checked {
            Ok(Ok(db)) => Opening::Open(Self::over(db, path, config)),
            Ok(Err(e)) => Opening::Damaged(map("outbox open", e).to_string()),
            Err(join) => Opening::Damaged(format!("reading it panicked: {join}")),
        }
    }

    /// Appends `entries` in order, in as few commits as the batch limit allows; their
    /// sequence numbers, once all are durable.
    pub async fn append_many(&self, entries: &[OutboxEntry]) -> Result<Vec<u64>> {
        let max = self.inner.config.max_entry_bytes;
        let encoded = entries
            .iter()
            .map(|e| encode_outbox_entry(e, max))
            .collect::<Result<Vec<_>>>()?;
        group_commit::submit(&self.inner, encoded)
            .await
            .into_iter()
            .collect()
    }
}

/// What [`RedbOutbox::open_existing`] found.
#[derive(Debug)]
pub enum Opening {
    /// The file is open here now, and was checked.
    Open(RedbOutbox),
    /// Another live process holds it.
    Held,
    /// It is no longer there (its owner removed it).
    Gone,
    /// It cannot be trusted: why.
    Damaged(String),
}

/// The layout check of an existing file, without creating anything.
fn check_layout(db: Database, path: &Path) -> Result<Database, StoreError> {
    let txn = db.begin_read()?;
    let layout = match txn.open_table(OUTBOX_INFO) {
        Ok(info) => info.get(INFO_LAYOUT)?.map(|g| g.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(other) = layout.filter(|&l| l != LAYOUT_VERSION) {
        return Err(wrong_layout(path, other));
    }
    drop(txn);
    Ok(db)
}

/// The error for a file of another layout version.
fn wrong_layout(path: &Path, layout: u64) -> StoreError {
    StoreError::Core(Error::invalid(
        "outbox",
        format!(
            "{} has layout version {layout}; this build reads {LAYOUT_VERSION}",
            path.display()
        ),
    ))
}

fn open_file(path: &Path, config: &OutboxConfig) -> Result<(Database, u64), StoreError> {
    let db = create_file(path, config.redb_cache_bytes)?;
    let txn = db.begin_write()?;
    let len = {
        let mut info = txn.open_table(OUTBOX_INFO)?;
        let layout = info.get(INFO_LAYOUT)?.map(|g| g.value());
        match layout {
            Some(LAYOUT_VERSION) => {}
            None => {
                info.insert(INFO_LAYOUT, LAYOUT_VERSION)?;
            }
            Some(other) => return Err(wrong_layout(path, other)),
        }
        txn.open_table(OUTBOX)?.len()?
    };
    txn.commit()?;
    Ok((db, len))
}

impl Inner {
    /// Appends a batch in one durable transaction; the first sequence number assigned.
    fn commit_batch(&self, batch: &[Vec<u8>]) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let first = {
            let mut table = txn.open_table(OUTBOX)?;
            let mut info = txn.open_table(OUTBOX_INFO)?;
            let stored_next = info.get(INFO_NEXT_SEQ)?.map_or(1, |g| g.value());
            let after_last = table
                .last()?
                .map_or(1, |(k, _)| k.value().saturating_add(1));
            let first = stored_next.max(after_last);
            let mut seq = first;
            for p in batch {
                // Sealed here, where the sequence number it is bound to is known.
                match &self.config.sealer {
                    Some(sealer) => {
                        table.insert(seq, seal_outbox_entry(sealer, seq, p)?.as_slice())?;
                    }
                    None => {
                        table.insert(seq, p.as_slice())?;
                    }
                }
                seq += 1;
            }
            info.insert(INFO_NEXT_SEQ, seq)?;
            first
        };
        txn.commit()?;
        debug!(first, count = batch.len(), "outbox commit");
        Ok(first)
    }

    fn peek(&self, max: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::with_capacity(max.min(1024));
        for row in table.range::<u64>(..)?.take(max) {
            let (k, v) = row?;
            let seq = k.value();
            let sealer = self.config.sealer.as_ref();
            out.push((
                seq,
                open_outbox_entry(sealer, seq, v.value(), self.config.max_entry_bytes)?,
            ));
        }
        Ok(out)
    }

    fn ack(&self, up_to: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(OUTBOX)?.retain_in(..=up_to, |_, _| false)?;
        txn.commit()?;
        Ok(())
    }

    fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(OUTBOX)?.len()?)
    }
}

#[async_trait]
impl Outbox for RedbOutbox {
    async fn append(&self, entry: &OutboxEntry) -> Result<u64> {
        let seq = self
            .append_many(std::slice::from_ref(entry))
            .await?
            .pop()
            .ok_or_else(|| failed("outbox append", "no sequence number"))?;
        debug!(seq, key = entry.idempotency_key, "outbox append");
        Ok(seq)
    }

    async fn peek(&self, max: usize) -> Result<Vec<(u64, OutboxEntry)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        blocking("outbox peek", move || inner.peek(max)).await
    }

    async fn ack(&self, up_to: u64) -> Result<()> {
        let inner = self.inner.clone();
        blocking("outbox ack", move || inner.ack(up_to)).await?;
        debug!(up_to, "outbox ack");
        Ok(())
    }

    async fn len(&self) -> Result<u64> {
        let inner = self.inner.clone();
        blocking("outbox len", move || inner.len()).await
    }
}

impl Committer for Inner {
    type Op = Vec<u8>;
    type Out = u64;

    fn group(&self) -> &GroupCommit<Vec<u8>, u64> {
        &self.appends
    }

    /// The batch's entries get consecutive sequence numbers.
    fn commit(&self, batch: &[Vec<u8>]) -> Result<Vec<u64>, StoreError> {
        let first = self.commit_batch(batch)?;
        Ok((first..).take(batch.len()).collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use memory_core::{EpisodeId, Namespace, WriteOp};

    use super::*;

    fn entry(i: usize) -> OutboxEntry {
        OutboxEntry {
            idempotency_key: format!("key-{i}"),
            namespace: Namespace::new("acme").unwrap(),
            op: WriteOp::PutEmbedding {
                episode_id: EpisodeId::new(),
                model: "m".into(),
                vector: vec![i as f32, 0.5],
            },
        }
    }

    #[tokio::test]
    async fn append_peek_ack_len_and_sequence_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        let o = RedbOutbox::open(&path, OutboxConfig::default())
            .await
            .unwrap();
        assert!(o.is_empty().await.unwrap());
        assert!(o.peek(10).await.unwrap().is_empty());
        let mut seqs = Vec::new();
        for i in 0..5 {
            seqs.push(o.append(&entry(i)).await.unwrap());
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(o.len().await.unwrap(), 5);
        let peeked = o.peek(3).await.unwrap();
        assert_eq!(peeked.len(), 3);
        assert_eq!(peeked[0].0, seqs[0]);
        assert_eq!(peeked[0].1.idempotency_key, "key-0");
        assert_eq!(peeked[2].1.idempotency_key, "key-2");
        assert!(o.peek(0).await.unwrap().is_empty());
        o.ack(seqs[1]).await.unwrap();
        assert_eq!(o.len().await.unwrap(), 3);
        assert_eq!(o.peek(1).await.unwrap()[0].0, seqs[2]);
        o.ack(seqs[4]).await.unwrap();
        assert!(o.is_empty().await.unwrap());
        drop(o);

        // Sequence numbers are never reused, even after everything was acknowledged.
        let o = RedbOutbox::open(&path, OutboxConfig::default())
            .await
            .unwrap();
        let next = o.append(&entry(9)).await.unwrap();
        assert!(next > seqs[4], "{next} after {seqs:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_distinct_ordered_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let o = RedbOutbox::open(
            dir.path().join("o.redb"),
            OutboxConfig::default().with_max_batch(8),
        )
        .await
        .unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let o = o.clone();
            tasks.push(tokio::spawn(async move {
                (o.append(&entry(i)).await.unwrap(), i)
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        got.sort_unstable();
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        let mut dedup = seqs.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 64);
        let all = o.peek(100).await.unwrap();
        assert_eq!(all.len(), 64);
        for ((seq, e), (s, i)) in all.iter().zip(&got) {
            assert_eq!(seq, s);
            assert_eq!(e.idempotency_key, format!("key-{i}"));
        }
    }

    /// Pins a lost-wakeup race: an append arriving just as the committing task finds the queue
    /// empty must still be committed (it used to wait forever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_racing_the_end_of_a_commit_round_are_never_stranded() {
        let dir = tempfile::tempdir().unwrap();
        let o = RedbOutbox::open(dir.path().join("o.redb"), OutboxConfig::default())
            .await
            .unwrap();
        for round in 0..200 {
            let mut tasks = Vec::new();
            for i in 0..3 {
                let o = o.clone();
                tasks.push(tokio::spawn(async move {
                    if i == 2 {
                        tokio::task::yield_now().await;
                    }
                    o.append(&entry(i)).await.unwrap()
                }));
            }
            for t in tasks {
                tokio::time::timeout(std::time::Duration::from_secs(20), t)
                    .await
                    .unwrap_or_else(|_| panic!("append stranded in round {round}"))
                    .unwrap();
            }
        }
        assert_eq!(o.len().await.unwrap(), 600);
    }

    #[tokio::test]
    async fn oversized_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let o = RedbOutbox::open(
            dir.path().join("o.redb"),
            OutboxConfig::default().with_max_entry_bytes(64),
        )
        .await
        .unwrap();
        let err = o.append(&entry(1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    field: "outbox entry",
                    ..
                }
            ),
            "{err}"
        );
        assert!(o.is_empty().await.unwrap());
    }
}
