//! The step buffer: steps logged in this process and not written yet, per episode, with the
//! per-episode write lock that keeps a late flush from racing the episode's completion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// `None` once the known episodes of this process would pass [`KNOWN_BYTES`]: then the
    /// completion reads it back.
    known: Option<Episode>,
    /// The approximate size of `known`, counted in [`StepBuffers::known_bytes`].
    known_size: usize,
    /// Held from taking steps out of `pending` until they are written, and by
    /// `complete_episode` until the completion is stored: a late flush can then never race the
    /// completion (which would reject, and lose, the late steps). Per episode, so writes to
    /// different episodes still run concurrently.
    write: Arc<tokio::sync::Mutex<()>>,
    /// Set while `complete_episode` runs: a step logged now could no longer be written, so
    /// `log_step` refuses it rather than acknowledge it and lose it.
    completing: bool,
    /// Set while a background write of this episode's full batches is scheduled or running
    /// (see [`Flush::Behind`]): the steps logged meanwhile join its next write.
    writing_behind: bool,
}

/// What the call that buffered a step does next.
#[derive(Debug)]
pub(crate) enum Flush {
    /// Nothing: the batch is not full, or a background write will take the step.
    Nothing,
    /// Hand the full batch to a background write (under the episode's write lock) and
    /// return: [`StepBuffers::write_behind`].
    Behind(Arc<tokio::sync::Mutex<()>>),
    /// Write the pending steps now, under the episode's write lock, before returning: the
    /// batch is a single step (`max_batch = 1`: a durable write per step), no runtime can
    /// run a background write, or [`BEHIND_BATCHES`] batches are waiting already.
    Now(Arc<tokio::sync::Mutex<()>>),
}

/// How many full batches of one episode may wait for a background write before `log_step`
/// waits for it (backpressure): at the default batch, 512 steps.
pub(crate) const BEHIND_BATCHES: usize = 8;

type BufferKey = (Namespace, EpisodeId);

/// Most bytes (approximate) of known episodes a process keeps for its completions, as much as
/// the cache's in-process front holds by default: episodes started and never completed cannot
/// grow the process past it.
const KNOWN_BYTES: usize = 32 << 20;

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
    /// The sum of the buffers' `known_size`, changed under the `buffers` lock.
    known_bytes: AtomicUsize,
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
            known_bytes: AtomicUsize::new(0),
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
        let mut buffers = lock(&self.buffers);
        buffers.entry((ns.clone(), episode.id)).or_insert_with(|| {
            let bytes = episode.approx_size();
            let kept = self.reserve_known(bytes);
            EpisodeBuffer {
                next_step: episode
                    .steps
                    .iter()
                    .map(|s| s.step_number)
                    .max()
                    .unwrap_or(0)
                    + 1,
                bytes,
                pending: Vec::new(),
                known: kept.then_some(episode),
                known_size: if kept { bytes } else { 0 },
                write: Arc::default(),
                completing: false,
                writing_behind: false,
            }
        });
    }

    /// Counts `bytes` more of known episodes, if that stays within [`KNOWN_BYTES`]. Called
    /// under the `buffers` lock.
    fn reserve_known(&self, bytes: usize) -> bool {
        let total = self.known_bytes.load(Ordering::Relaxed);
        let kept = total.saturating_add(bytes) <= KNOWN_BYTES;
        if kept {
            self.known_bytes.store(total + bytes, Ordering::Relaxed);
        }
        kept
    }

    /// Stops keeping the buffer's known episode. Called under the `buffers` lock.
    fn forget_known(&self, buf: &mut EpisodeBuffer) {
        self.known_bytes
            .fetch_sub(buf.known_size, Ordering::Relaxed);
        buf.known = None;
        buf.known_size = 0;
    }

    /// The episode as this process knows it, with the steps still buffered, if it is
    /// buffered: what a completion learns from without reading the episode back.
    pub(crate) fn known(&self, ns: &Namespace, id: EpisodeId) -> Option<Episode> {
        lock(&self.buffers).get(&(ns.clone(), id)).and_then(|b| {
            let mut e = b.known.clone()?;
            e.add_steps(&b.pending);
            Some(e)
        })
    }

    /// Forgets the episode (completed, or refused by the store).
    pub(crate) fn close(&self, ns: &Namespace, id: EpisodeId) {
        let mut buffers = lock(&self.buffers);
        if let Some(mut buf) = buffers.remove(&(ns.clone(), id)) {
            self.forget_known(&mut buf);
        }
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

    /// Buffers a step, numbered after the episode's last, once it passes `check`; says what
    /// to do once the batch is full (see [`Flush`]). `can_defer`: a background write can be
    /// started.
    pub(crate) fn push(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        max_batch: usize,
        can_defer: bool,
        check: &StepCheck,
        make: impl FnOnce(u32) -> ExecutionStep,
    ) -> Result<Flush> {
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
        let waiting = buf.pending.len();
        Ok(if waiting < max_batch {
            Flush::Nothing
        } else if max_batch == 1 || !can_defer || waiting >= max_batch * BEHIND_BATCHES {
            Flush::Now(Arc::clone(&buf.write))
        } else if buf.writing_behind {
            Flush::Nothing
        } else {
            buf.writing_behind = true;
            Flush::Behind(Arc::clone(&buf.write))
        })
    }

    /// The background write [`Flush::Behind`] asked for; the caller holds the episode's write
    /// lock. Writes the pending steps, again while a full batch is waiting and the last write
    /// stored its steps, then lets the next full batch start another. A refusal is remembered
    /// for the episode's next call (as the flush timer's); a transient failure leaves the
    /// steps buffered for the timer.
    pub(crate) async fn write_behind(&self, ns: &Namespace, id: EpisodeId, max_batch: usize) {
        let key = (ns.clone(), id);
        loop {
            let n = self.pending_len(ns, id);
            let stored = match self.write_pending(ns, id).await {
                Ok(stored) => stored,
                Err(e) => {
                    self.remember_refusal(ns, id, n, &e);
                    return;
                }
            };
            let mut buffers = lock(&self.buffers);
            let Some(buf) = buffers.get_mut(&key) else {
                return;
            };
            if !stored || buf.pending.len() < max_batch {
                buf.writing_behind = false;
                return;
            }
        }
    }

    /// Remembers that the store refused `n` buffered steps of the episode, for its next call.
    fn remember_refusal(&self, ns: &Namespace, id: EpisodeId, n: usize, e: &Error) {
        warn!(error = %e, episode_id = %id, steps = n, "buffered steps refused by the store");
        lock(&self.refused).insert(
            (ns.clone(), id),
            format!("{n} steps logged earlier were refused when written: {e}"),
        );
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

    /// Writes a batch; `true` once stored. On a transient failure the steps go back into the
    /// buffer (the timer retries) and the call succeeds with `false`, since the steps are
    /// held. Other failures are returned.
    async fn write_batch(
        &self,
        ns: &Namespace,
        id: EpisodeId,
        batch: Vec<ExecutionStep>,
    ) -> Result<bool> {
        match self.storage.append_steps(ns, id, &batch).await {
            Ok(()) => {
                if let Some(buf) = lock(&self.buffers).get_mut(&(ns.clone(), id))
                    && buf.known.is_some()
                {
                    let size = batch.iter().map(ExecutionStep::approx_size).sum();
                    if self.reserve_known(size) {
                        buf.known_size += size;
                        if let Some(known) = &mut buf.known {
                            // Numbered after the known steps and never among them (a batch
                            // joins them only once written), so appended as they are: no
                            // per-batch pass over the whole episode.
                            known.steps.extend(batch);
                        }
                    } else {
                        self.forget_known(buf);
                    }
                }
                Ok(true)
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, episode_id = %id, steps = batch.len(), "step write failed; kept in buffer for retry");
                let mut buffers = lock(&self.buffers);
                if let Some(buf) = buffers.get_mut(&(ns.clone(), id)) {
                    let mut merged = batch;
                    merged.append(&mut buf.pending);
                    buf.pending = merged;
                }
                Ok(false)
            }
            Err(e) => {
                self.close(ns, id);
                Err(e)
            }
        }
    }

    /// Writes the episode's pending steps, if any; `true` when some were stored (`false`:
    /// none pending, or kept for a retry). The caller holds the episode's write lock.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(crate) async fn write_pending(&self, ns: &Namespace, id: EpisodeId) -> Result<bool> {
        let pending = lock(&self.buffers)
            .get_mut(&(ns.clone(), id))
            .map(|b| std::mem::take(&mut b.pending))
            .unwrap_or_default();
        if pending.is_empty() {
            return Ok(false);
        }
        self.write_batch(ns, id, pending).await
    }

    /// Writes every buffered step, and waits for the writes behind callers in flight (their
    /// steps left `pending` but are not stored until they finish). A refusal is remembered
    /// for the episode's next call; a transient failure leaves steps buffered and is
    /// reported, so `shutdown` is honest.
    pub(crate) async fn flush_all(&self) -> Result<()> {
        let due: Vec<(BufferKey, Arc<tokio::sync::Mutex<()>>)> = lock(&self.buffers)
            .iter()
            .filter(|(_, b)| !b.pending.is_empty() || b.writing_behind)
            .map(|(k, b)| (k.clone(), Arc::clone(&b.write)))
            .collect();
        let mut first_err = None;
        for ((ns, id), write) in due {
            let _writing = write.lock().await;
            let n = self.pending_len(&ns, id);
            if let Err(e) = self.write_pending(&ns, id).await {
                self.remember_refusal(&ns, id, n, &e);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::episode::{NewEpisode, TaskContext, TaskType};
    use crate::storage::InMemoryStorage;

    fn big_episode(bytes: usize) -> Episode {
        let task = "x".repeat(bytes);
        let new = NewEpisode::new(task, TaskType::Testing, TaskContext::new("d"));
        Episode::start(new, chrono::Utc::now())
    }

    /// Known episodes stay within [`KNOWN_BYTES`]: past it a buffer keeps none (its
    /// completion reads the episode back), and closing a buffer frees its share.
    #[test]
    fn known_episodes_stay_within_their_budget() {
        let buffers = StepBuffers::new(Arc::new(InMemoryStorage::new()));
        let ns = Namespace::default();
        let (a, b, c) = (
            big_episode(KNOWN_BYTES / 2),
            big_episode(KNOWN_BYTES / 2),
            big_episode(KNOWN_BYTES / 4),
        );
        let ids = [a.id, b.id, c.id];
        buffers.open(&ns, a);
        buffers.open(&ns, b);
        assert!(buffers.known(&ns, ids[0]).is_some());
        assert!(buffers.known(&ns, ids[1]).is_none(), "over the budget");
        assert!(buffers.has(&ns, ids[1]), "still buffered");
        buffers.close(&ns, ids[0]);
        assert_eq!(buffers.known_bytes.load(Ordering::Relaxed), 0);
        buffers.open(&ns, c);
        assert!(buffers.known(&ns, ids[2]).is_some(), "the budget was freed");
    }

    /// Buffers one small step for `id` (batches of `max`, writes behind allowed by `defer`),
    /// with no limit in the way; returns what the caller is asked to do.
    fn push_one(
        buffers: &StepBuffers,
        ns: &Namespace,
        id: EpisodeId,
        max: usize,
        defer: bool,
    ) -> Result<Flush> {
        let check = StepCheck {
            max_steps: 10_000,
            max_bytes: usize::MAX,
            quota: u64::MAX,
            used: 0,
        };
        buffers.push(ns, id, max, defer, &check, |n| ExecutionStep {
            step_number: n,
            key: ExecutionStep::new_key(),
            timestamp: chrono::Utc::now(),
            input: crate::episode::StepInput::ok("t", "a", "o"),
        })
    }

    /// What each `push` asks for: a full batch is written behind once (the steps logged
    /// meanwhile join it), the caller writes it itself at [`BEHIND_BATCHES`] full batches,
    /// without a runtime, or for a batch of one.
    #[test]
    fn a_full_batch_is_deferred_once_until_backpressure() {
        fn next(
            buffers: &StepBuffers,
            ns: &Namespace,
            id: EpisodeId,
            max: usize,
            defer: bool,
        ) -> &'static str {
            match push_one(buffers, ns, id, max, defer) {
                Ok(Flush::Nothing) => "nothing",
                Ok(Flush::Behind(_)) => "behind",
                Ok(Flush::Now(_)) => "now",
                Err(e) => panic!("{e}"),
            }
        }
        let buffers = StepBuffers::new(Arc::new(InMemoryStorage::new()));
        let ns = Namespace::default();
        let e = big_episode(1);
        let id = e.id;
        buffers.open(&ns, e);
        let asked: Vec<&str> = (1..=4 * BEHIND_BATCHES)
            .map(|_| next(&buffers, &ns, id, 4, true))
            .collect();
        assert_eq!(&asked[..3], ["nothing"; 3]);
        assert_eq!(asked[3], "behind");
        assert!(
            asked[4..asked.len() - 1].iter().all(|a| *a == "nothing"),
            "{asked:?}"
        );
        assert_eq!(
            asked.last(),
            Some(&"now"),
            "backpressure at {BEHIND_BATCHES} batches"
        );

        let e = big_episode(1);
        let id = e.id;
        buffers.open(&ns, e);
        let asked: Vec<&str> = (1..=4).map(|_| next(&buffers, &ns, id, 4, false)).collect();
        assert_eq!(
            asked,
            ["nothing", "nothing", "nothing", "now"],
            "no runtime to defer to"
        );

        let e = big_episode(1);
        let id = e.id;
        buffers.open(&ns, e);
        assert_eq!(
            next(&buffers, &ns, id, 1, true),
            "now",
            "a batch of one is durable per step"
        );
    }

    /// `flush_all` (so `flush` and `shutdown`) returns only once a write behind the caller
    /// that already took the pending steps has finished.
    #[tokio::test]
    async fn flushing_waits_for_a_write_behind_in_flight() {
        let buffers = Arc::new(StepBuffers::new(Arc::new(InMemoryStorage::new())));
        let ns = Namespace::default();
        let e = big_episode(1);
        let id = e.id;
        buffers.open(&ns, e);
        assert!(matches!(
            push_one(&buffers, &ns, id, 2, true),
            Ok(Flush::Nothing)
        ));
        assert!(matches!(
            push_one(&buffers, &ns, id, 2, true),
            Ok(Flush::Behind(_))
        ));
        // What the write behind does first: take the episode's write lock and its pending
        // steps; its storage call is still running.
        let write = buffers.write_lock(&ns, id).unwrap();
        let in_flight = write.lock().await;
        let key = (ns.clone(), id);
        let taken = std::mem::take(&mut lock(&buffers.buffers).get_mut(&key).unwrap().pending);
        assert_eq!(taken.len(), 2);

        let flushing = tokio::spawn({
            let buffers = Arc::clone(&buffers);
            async move { buffers.flush_all().await }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !flushing.is_finished(),
            "flush returned while a write was in flight"
        );
        drop(in_flight);
        flushing.await.unwrap().unwrap();
    }
}
