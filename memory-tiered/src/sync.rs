//! The journal side of the tiered layer: writes journaled while the durable layer is
//! unreachable, the read-your-writes overlay rebuilt from them, the sync task that replays them
//! in order, and the adoption of the journals of processes that stopped.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(crate) async fn sync_loop(inner: Weak<Inner>) {
    let (interval, replica_every) = match inner.upgrade() {
        Some(i) => (i.config.sync_interval, i.config.replica_sync_interval),
        None => return,
    };
    let mut last_replica_sync = tokio::time::Instant::now();
    let mut last_adoption = tokio::time::Instant::now();
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = strong.wake.notified() => {}
            () = strong.stop.notified() => return,
        }
        if last_adoption.elapsed() >= ADOPT_EVERY {
            last_adoption = tokio::time::Instant::now();
            strong.adopt_orphans().await;
        }
        if let Err(e) = strong.replay().await {
            debug!(error = %e, "replay incomplete");
        }
        if last_replica_sync.elapsed() >= replica_every {
            last_replica_sync = tokio::time::Instant::now();
            strong.replica_sync().await;
        }
    }
}

/// How often the sync task looks for journals of processes that stopped.
const ADOPT_EVERY: Duration = Duration::from_secs(2);

impl Inner {
    /// Takes in the journals of processes that stopped (see [`Outbox::adopt`]): their entries
    /// join this process's journal, overlay and replay.
    pub(crate) async fn adopt_orphans(&self) {
        match self.outbox.adopt().await {
            Ok(adopted) if !adopted.is_empty() => {
                self.overlay_journaled(&adopted);
                self.pending
                    .fetch_add(adopted.len() as u64, Ordering::SeqCst);
                self.counters
                    .queued
                    .fetch_add(adopted.len() as u64, Ordering::Relaxed);
                self.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot adopt the journals of stopped processes now"),
        }
    }

    /// Puts journaled entries (found at start-up or adopted) into the read-your-writes
    /// overlay, completions merged provisionally against what the overlay knows.
    pub(crate) fn overlay_journaled(&self, entries: &[(u64, OutboxEntry)]) {
        for (_, entry) in entries {
            self.count_journaled(&entry.namespace, &entry.op);
        }
        let mut ov = lock(&self.overlay);
        for (seq, entry) in entries {
            let learned = match &entry.op {
                WriteOp::CompleteEpisode(c) => {
                    let existing = ov.existing_for(&entry.namespace, c, ExistingLearned::default());
                    Some(c.learning.apply(existing))
                }
                _ => None,
            };
            ov.apply(&entry.namespace, *seq, &entry.op, learned.as_ref());
        }
    }

    pub(crate) fn journaling(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Appends a write to the outbox (durable on return) and to the overlay.
    pub(crate) async fn enqueue(
        &self,
        ns: &Namespace,
        op: WriteOp,
        learned: Option<&LearnedChanges>,
    ) -> Result<()> {
        let entry = OutboxEntry {
            idempotency_key: Uuid::now_v7().to_string(),
            namespace: ns.clone(),
            op,
        };
        let since = self.coherence.epoch();
        let seq = self.outbox.append(&entry).await?;
        self.count_journaled(ns, &entry.op);
        lock(&self.overlay).apply(ns, seq, &entry.op, learned);
        // Patch the cached copy now, as for a durable write: otherwise, between the replay
        // releasing this entry from the overlay and refreshing the cache, readers would see
        // the cached copy from before the write (e.g. an episode not yet completed).
        self.after_write(ns, &entry.op, since).await;
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        debug!(seq, "write journaled in the outbox");
        Ok(())
    }

    /// Applies one journaled write to the durable layer (idempotent by the trait contract).
    pub(crate) async fn apply_durable(&self, ns: &Namespace, op: &WriteOp) -> Result<()> {
        let d = &self.durable;
        match op {
            WriteOp::CreateEpisode(e) => d.create_episode(ns, e).await,
            WriteOp::AppendSteps { episode_id, steps } => {
                d.append_steps(ns, *episode_id, steps).await
            }
            WriteOp::CompleteEpisode(c) => d.complete_episode(ns, c).await.map(|_| ()),
            WriteOp::RecordFeedback(f) => d.record_feedback(ns, f).await,
            WriteOp::PutLearned(items) => d.put_learned(ns, items).await,
            WriteOp::PutEmbedding {
                episode_id,
                model,
                vector,
            } => d.put_embedding(ns, *episode_id, model, vector).await,
            WriteOp::ForgetEpisodes {
                episode_ids,
                reason,
                at,
            } => memory_core::forget_in(d.as_ref(), ns, episode_ids, reason, *at)
                .await
                .map(|_| ()),
        }
    }

    pub(crate) async fn rebuild_overlay(&self) -> Result<()> {
        let entries = self.outbox.peek(usize::MAX).await?;
        self.overlay_journaled(&entries);
        self.pending
            .store(self.outbox.len().await?, Ordering::SeqCst);
        if !entries.is_empty() {
            info!(
                entries = entries.len(),
                "journaled writes from an earlier process will be replayed"
            );
        }
        Ok(())
    }

    /// Replays journaled writes in order while the durable layer accepts them.
    #[instrument(skip_all)]
    pub(crate) async fn replay(&self) -> Result<u64> {
        let _guard = self.replay_lock.lock().await;
        let mut replayed = 0u64;
        loop {
            if self.pending.load(Ordering::SeqCst) == 0 {
                self.sync_succeeded();
                if replayed > 0
                    && let Err(e) = self.outbox.release_if_empty().await
                {
                    warn!(error = %e, "cannot remove the emptied journal");
                }
                return Ok(replayed);
            }
            let batch = self.outbox.peek(self.config.replay_batch.max(1)).await?;
            if batch.is_empty() {
                self.pending.store(0, Ordering::SeqCst);
                continue;
            }
            let mut acked_to = None;
            let mut failure = None;
            let mut applied = 0u64;
            let since = self.coherence.epoch();
            let mut seen = HashMap::new();
            for (seq, entry) in &batch {
                match self.replay_entry(&mut seen, *seq, entry).await {
                    Replayed::Applied => {
                        acked_to = Some(*seq);
                        applied += 1;
                    }
                    Replayed::Done => acked_to = Some(*seq),
                    Replayed::Stop(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(seq) = acked_to {
                self.outbox.ack(seq).await?;
                let done = batch.partition_point(|(s, _)| *s <= seq);
                self.uncount_journaled(&batch[..done]);
                self.pending
                    .store(self.outbox.len().await?, Ordering::SeqCst);
                // Count this batch only: `replayed` totals the whole call.
                replayed += applied;
                self.counters.replayed.fetch_add(applied, Ordering::Relaxed);
                // The durable layer now holds base + delta. The cached copies learn it before
                // the overlay lets go: a read in between would otherwise find the copy from
                // before the journaled writes (an episode completed while the server was
                // away would read as in progress). Until then reads fold the overlay over
                // the patched copy, which changes nothing (folding is idempotent).
                let settled = lock(&self.overlay).settled_up_to(seq);
                self.patch_cached(settled, since).await;
                let released = lock(&self.overlay).release_up_to(seq);
                for (ns, key) in released.keys {
                    self.cache_invalidate(&ns, &key).await;
                }
            }
            if let Some(e) = failure {
                lock(&self.sync_info).last_error = Some(e.to_string());
                return Err(e);
            }
        }
    }

    /// Replays one journaled entry: its quota verdict first, then the durable write.
    async fn replay_entry(
        &self,
        seen: &mut HashMap<Namespace, memory_core::QuotaUsage>,
        seq: u64,
        entry: &OutboxEntry,
    ) -> Replayed {
        match self.over_quota(seen, entry).await {
            Ok(None) => {}
            Ok(Some(refused)) => {
                return match self.refuse(seq, &refused).await {
                    Ok(()) => Replayed::Done,
                    Err(e) => Replayed::Stop(e),
                };
            }
            Err(e) => return Replayed::Stop(e),
        }
        match self
            .guarded("replay", self.apply_durable(&entry.namespace, &entry.op))
            .await
        {
            Ok(()) => Replayed::Applied,
            // Only the memory's own verdicts on the write itself (a conflict, an episode not
            // found, input over a limit) are final. A storage failure, even one the driver
            // calls permanent (a server answering 404 while it stops or starts), keeps the
            // entry for the next attempt: an acknowledged write is never dropped for the
            // state of a server.
            Err(e) if e.is_transient() || matches!(e, Error::Storage { .. }) => Replayed::Stop(e),
            // A start (or a step batch, a completion) of an episode forgotten since: what the
            // erasure removed stays removed, and the entry's content is not logged.
            Err(e) if e.is_forgotten() => {
                debug!(seq, "journaled write of a forgotten episode skipped");
                Replayed::Applied
            }
            Err(e) => {
                // The entry, unless its episode is gone (it may have been forgotten: its
                // content stays out of the log).
                let body = if episode_gone(&e) {
                    "(an episode that is gone)".to_owned()
                } else {
                    serde_json::to_string(entry).unwrap_or_default()
                };
                error!(error = %e, seq, entry = %body, "journaled write rejected by the durable layer; moving past it");
                self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                let why = format!("entry {seq} rejected: {e}");
                let mut info = lock(&self.sync_info);
                info.last_error = Some(why.clone());
                info.rejected = Some(why);
                Replayed::Done
            }
        }
    }

    pub(crate) fn sync_succeeded(&self) {
        lock(&self.sync_info).last_success = Some(self.clock.now());
    }

    pub(crate) async fn replica_sync(&self) {
        match self.guarded("durable", self.durable.sync()).await {
            Ok(()) => self.sync_succeeded(),
            Err(e) => {
                warn!(error = %e, "replica sync failed");
                lock(&self.sync_info).last_error = Some(e.to_string());
            }
        }
    }
}

/// Whether `e` says the write's episode is not stored (never, or no more: forgotten).
fn episode_gone(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound {
            kind: memory_core::ObjectKind::Episode,
            ..
        }
    )
}

/// What became of one journaled entry on replay.
enum Replayed {
    /// The durable layer holds it (or it was of a forgotten episode): counted as replayed.
    Applied,
    /// Refused for good (a quota, a conflict): out of the journal, not counted as replayed.
    Done,
    /// Not now: the entry stays, and the replay stops here.
    Stop(Error),
}
