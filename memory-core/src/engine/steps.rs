//! The step buffer: steps logged in this process and not written yet, per episode, with the
//! per-episode write lock that keeps a late flush from racing the episode's completion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::warn;

use crate::episode::{Episode, EpisodeId, ExecutionStep};
use crate::error::{Error, ObjectKind, Result};
use crate::namespace::Namespace;
use crate::storage::Storage;

/// Buffered state of an in-progress episode in this process.
#[derive(Debug)]
struct EpisodeBuffer {
    next_step: u32,
    bytes: usize,
    pending: Vec<ExecutionStep>,
    /// The episode as this process knows it: as started here or read when the buffer
    /// opened, plus every batch written since (`pending` not included). Completing it needs
    /// no read of the episode; the store checks that it holds as many steps (see
    /// [`EpisodeCompletion::expected_steps`](crate::storage::EpisodeCompletion::expected_steps)).
    known: Episode,
    /// Held from taking steps out of `pending` until they are written, and by
    /// `complete_episode` until the completion is stored: a late flush can then never race the
    /// completion (which would reject, and lose, the late steps). Per episode, so writes to
    /// different episodes still run concurrently.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Set while `complete_episode` runs: a step logged now could no longer be written, so
    /// `log_step` refuses it rather than acknowledge it and lose it.
    completing: bool,
}

type BufferKey = (Namespace, EpisodeId);

/// What a step needs to pass to be buffered.
pub(crate) struct StepCheck {
    /// Most steps per episode.
    pub max_steps: usize,
    /// Most bytes per episode.
    pub max_bytes: usize,
    /// The namespace's step quota.
    pub quota: u64,
    /// Steps the namespace holds (as this process knows).
    pub used: u64,
}

/// Steps buffered per episode, written in batches.
#[derive(Debug)]
pub(crate) struct StepBuffers {
    storage: Arc<dyn Storage>,
    buffers: Mutex<HashMap<BufferKey, EpisodeBuffer>>,
    /// Episodes whose buffered steps the store refused when the flush timer wrote them (the
    /// episode was completed by another writer): the next call for the episode says so.
    refused: Mutex<HashMap<BufferKey, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Marks an episode as completing for as long as it lives (also when the completion fails
/// or its future is dropped), so later steps are accepted again.
pub(crate) struct Completing<'a> {
    buffers: &'a StepBuffers,
    key: BufferKey,
}

impl Drop for Completing<'_> {
    fn drop(&mut self) {
        // After a successful completion the buffer is gone and this does nothing.
        if let Some(b) = lock(&self.buffers.buffers).get_mut(&self.key) {
            b.completing = false;
        }
    }
}

impl StepBuffers {
    pub(crate) fn new(storage: Arc<dyn Storage>) -> Self {
        StepBuffers {
            storage,
            buffers: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the episode has a buffer in this process.
    pub(crate) fn has(&self, ns: &Namespace, id: EpisodeId) -> bool {
        lock(&self.buffers).contains_key(&(ns.clone(), id))
    }

    /// Starts buffering `episode` (as started here or just read; kept if it is buffered
    /// already): steps are numbered after its last.
    pub(crate) fn open(&self, ns: &Namespace, episode: Episode) {
        lock(&self.buffers)
            .entry((ns.clone(), episode.id))
            .or_insert_with(|| EpisodeBuffer {
                next_step: episode
                    .steps
                    .iter()
                    .map(|s| s.step_number)
                    .max()
                    .unwrap_or(0)
                    + 1,
                bytes: episode.approx_size(),
                pending: Vec::new(),
                known: episode,
                write: Arc::default(),
                completing: false,
            });
    }

    /// The episode as this process knows it, with the steps still buffered, if it is
    /// buffered: what a completion learns from without reading the episode back.
    pub(crate) fn known(&self, ns: &Namespace, id: EpisodeId) -> Option<Episode> {
        lock(&self.buffers).get(&(ns.clone(), id)).map(|b| {
            let mut e = b.known.clone();
            e.add_steps(&b.pending);
            e
        })
    }

    /// Forgets the episode (completed, or refused by the store).
    pub(crate) fn close(&self, ns: &Namespace, id: EpisodeId) {
        lock(&self.buffers).remove(&(ns.clone(), id));
    }

    /// A conflict for an episode whose buffered steps the flush timer had refused, once.
    pub(crate) fn take_refused(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        match lock(&self.refused).remove(&(ns.clone(), id)) {
            Some(reason) => Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: id.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Buffers a step, numbered after the episode's last, once it passes `check`; returns the
    /// episode's write lock when the batch is full and should be written now.
    pub(crate) fn push(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        max_batch: usize,
        check: &StepCheck,
        make: impl FnOnce(u32) -> ExecutionStep,
    ) -> Result<Option<Arc<tokio::sync::Mutex<()>>>> {
        let mut buffers = lock(&self.buffers);
        let buf = buffers
            .get_mut(&(ns.clone(), id))
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, id))?;
        if buf.completing {
            return Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: id.to_string(),
                reason: "is being completed".into(),
            });
        }
        if buf.next_step as usize > check.max_steps {
            return Err(Error::LimitExceeded {
                field: "steps_per_episode",
                limit: check.max_steps as u64,
                actual: u64::from(buf.next_step),
            });
        }
        if check.used >= check.quota {
            return Err(Error::QuotaExceeded {
                namespace: ns.to_string(),
                resource: "steps",
                limit: check.quota,
            });
        }
        let stored = make(buf.next_step);
        let size = stored.approx_size();
        if buf.bytes + size > check.max_bytes {
            return Err(Error::LimitExceeded {
                field: "episode",
                limit: check.max_bytes as u64,
                actual: (buf.bytes + size) as u64,
            });
        }
        buf.bytes += size;
        buf.next_step += 1;
        buf.pending.push(stored);
        Ok((buf.pending.len() >= max_batch).then(|| Arc::clone(&buf.write)))
    }

    /// The episode's write lock, if it is buffered.
    pub(crate) fn write_lock(
        &self,
        ns: &Namespace,
        id: EpisodeId,
    ) -> Option<Arc<tokio::sync::Mutex<()>>> {
        lock(&self.buffers)
            .get(&(ns.clone(), id))
            .map(|b| Arc::clone(&b.write))
    }

    /// Marks the episode as completing until the guard drops.
    pub(crate) fn completing(&self, ns: &Namespace, id: EpisodeId) -> Completing<'_> {
        let key = (ns.clone(), id);
        if let Some(b) = lock(&self.buffers).get_mut(&key) {
            b.completing = true;
        }
        Completing { buffers: self, key }
    }

    /// Steps still buffered for the episode.
    pub(crate) fn pending_len(&self, ns: &Namespace, id: EpisodeId) -> usize {
        lock(&self.buffers)
            .get(&(ns.clone(), id))
            .map_or(0, |b| b.pending.len())
    }

    /// A copy of the episode's buffered steps.
    pub(crate) fn pending(&self, ns: &Namespace, id: EpisodeId) -> Option<Vec<ExecutionStep>> {
        lock(&self.buffers)
            .get(&(ns.clone(), id))
            .map(|b| b.pending.clone())
    }

    /// Writes a batch; on a transient failure the steps go back into the buffer (the timer
    /// retries) and the call succeeds, since the steps are held. Other failures are returned.
    async fn write_batch(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        batch: Vec<ExecutionStep>,
    ) -> Result<()> {
        match self.storage.append_steps(ns, id, &batch).await {
            Ok(()) => {
                if let Some(buf) = lock(&self.buffers).get_mut(&(ns.clone(), id)) {
                    buf.known.add_steps(&batch);
                }
                Ok(())
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, episode_id = %id, steps = batch.len(), "step write failed; kept in buffer for retry");
                let mut buffers = lock(&self.buffers);
                if let Some(buf) = buffers.get_mut(&(ns.clone(), id)) {
                    let mut merged = batch;
                    merged.append(&mut buf.pending);
                    buf.pending = merged;
                }
                Ok(())
            }
            Err(e) => {
                self.close(ns, id);
                Err(e)
            }
        }
    }

    /// Writes the episode's pending steps, if any. The caller holds the episode's write lock.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn write_pending(&self, ns: &Namespace, id: EpisodeId) -> Result<()> {
        let pending = lock(&self.buffers)
            .get_mut(&(ns.clone(), id))
            .map(|b| std::mem::take(&mut b.pending))
            .unwrap_or_default();
        if pending.is_empty() {
            return Ok(());
        }
        self.write_batch(ns, id, pending).await
    }

    /// Writes every buffered step. A refusal is remembered for the episode's next call; a
    /// transient failure leaves steps buffered and is reported, so `shutdown` is honest.
    pub(crate) async fn flush_all(&self) -> Result<()> {
        let due: Vec<(BufferKey, Arc<tokio::sync::Mutex<()>>)> = lock(&self.buffers)
            .iter()
            .filter(|(_, b)| !b.pending.is_empty())
            .map(|(k, b)| (k.clone(), Arc::clone(&b.write)))
            .collect();
        let mut first_err = None;
        for ((ns, id), write) in due {
            let _writing = write.lock().await;
            let n = self.pending_len(&ns, id);
            if let Err(e) = self.write_pending(&ns, id).await {
                warn!(error = %e, episode_id = %id, steps = n, "buffered steps refused by the store");
                lock(&self.refused).insert(
                    (ns.clone(), id),
                    format!("{n} steps logged earlier were refused when written: {e}"),
                );
                first_err.get_or_insert(e);
            }
        }
        let left: usize = lock(&self.buffers).values().map(|b| b.pending.len()).sum();
        match first_err {
            Some(e) => Err(e),
            None if left > 0 => Err(Error::storage(
                self.storage.backend_name(),
                "flush",
                true,
                format!("{left} steps could not be written yet and are still buffered"),
            )),
            None => Ok(()),
        }
    }
}
