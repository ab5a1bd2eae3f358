//! The storage traits of [`TieredStorage`]: reads and writes through the layers, the rest
//! forwarded to the durable layer through the breaker.

#[allow(clippy::wildcard_imports)]
use super::*;

memory_core::forward_storage! {
    impl[] EpisodeStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward query_episodes, search_text, namespace_stats, list_namespaces, ping,
        forgotten_episodes;
    {
    /// The durable layer's counts plus what is journaled; during an outage, the counts last
    /// kept beside the journal plus what is journaled.
    async fn quota_usage(&self, ns: &Namespace) -> Result<memory_core::QuotaUsage> {
        self.inner.quota_usage(ns).await
    }

    fn reads_need_a_server(&self) -> bool {
        self.inner.durable.reads_need_a_server()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        self.inner
            .write(ns, WriteOp::CreateEpisode(episode.clone()))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn append_steps(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()> {
        let i = &self.inner;
        if i.journaling() || i.breaker.state() == BreakerState::Open {
            // Check what can be checked locally before acknowledging into the journal.
            if let Ok(Some(e)) = i.read_episode(ns, episode_id).await
                && e.is_completed()
            {
                return Err(Error::Conflict {
                    kind: ObjectKind::Episode,
                    id: episode_id.to_string(),
                    reason: "is already completed; steps can no longer be added".into(),
                });
            }
        }
        // As `Inner::write`, without copying the batch into a `WriteOp`: only a journaled
        // write needs its own copy.
        let durable = i.durable.append_steps(ns, episode_id, steps);
        if let Some(((), since)) = i.try_durable(durable).await? {
            let _patching = i.episode_cache.lock().await;
            i.after_append(ns, episode_id, steps, since).await;
            return Ok(());
        }
        let op = WriteOp::AppendSteps {
            episode_id,
            steps: steps.to_vec(),
        };
        i.enqueue(ns, op, None).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn complete_episode(
        &self,
        ns: &Namespace,
        c: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>> {
        let i = &self.inner;
        if let Some((changes, since)) = i.try_durable(i.durable.complete_episode(ns, c)).await? {
            i.after_complete(ns, c, changes.as_ref(), since).await;
            return Ok(changes);
        }
        // Journaled: refuse what is known to be a replay, merge provisionally against what is
        // known locally.
        if let Ok(Some(e)) = i.read_episode(ns, c.episode_id).await
            && e.is_completed()
        {
            return Ok(None);
        }
        let mut known = ExistingLearned::default();
        for id in c.learning.pattern_ids() {
            if let Some(CachedValue::Pattern(p)) = i.cache_get(ns, &CacheKey::Pattern(id)).await {
                known.patterns.push(p);
            }
        }
        let existing = lock(&i.overlay).existing_for(ns, c, known);
        let mut changes = c.learning.apply(existing);
        changes.provisional = true;
        // A replay cannot compute the learning again, so it must not be refused for steps
        // another writer added meanwhile: the journaled completion checks no step count.
        let journaled = EpisodeCompletion {
            expected_steps: None,
            ..c.clone()
        };
        i.enqueue(ns, WriteOp::CompleteEpisode(journaled), Some(&changes))
            .await?;
        Ok(Some(changes))
    }

    /// Forgets through the durable layer, then drops the cached copies of the episodes and of
    /// every learned item the erasure changed or removed. While the durable layer is
    /// unreachable the erasure is journaled (the ids and the reason, no content) and replayed
    /// in order after what was journaled before it; the cached copies of the episodes are
    /// dropped at once.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn forget_episodes(&self, ns: &Namespace, erasure: &Erasure) -> Result<ErasureReport> {
        let i = &self.inner;
        if let Some((report, _)) = i.try_durable(i.durable.forget_episodes(ns, erasure)).await? {
            // The cache may hold the episodes and the items they taught: it is emptied without
            // leaving their bytes in free space (the change feed tells other processes).
            if !report.forgotten.is_empty() {
                i.cache_scrub().await;
            }
            return Ok(report);
        }
        let episode_ids: Vec<EpisodeId> = erasure.episodes.iter().map(|e| e.episode_id).collect();
        let op = WriteOp::ForgetEpisodes {
            episode_ids: episode_ids.clone(),
            reason: erasure.reason.clone(),
            at: erasure.at,
        };
        i.enqueue(ns, op, None).await?;
        Ok(ErasureReport {
            forgotten: episode_ids,
            journaled: true,
            ..ErasureReport::default()
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Arc<Episode>>> {
        self.inner.read_episode(ns, id).await
    }

    async fn get_episodes(
        &self,
        ns: &Namespace,
        ids: &[EpisodeId],
    ) -> Result<Vec<Option<Arc<Episode>>>> {
        self.inner.read_episodes(ns, ids).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner.replay().await?;
        self.inner.guarded("sync", self.inner.durable.sync()).await
    }
    }
}

memory_core::forward_storage! {
    impl[] LearningStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward query_learned, list_feedback;
    {
    async fn apply_learning(
        &self,
        ns: &Namespace,
        update: &LearningUpdate,
    ) -> Result<LearnedChanges> {
        // Not idempotent, so never journaled: it needs the durable layer now.
        let since = self.inner.coherence.epoch();
        let changes = self
            .inner
            .guarded("apply_learning", self.inner.durable.apply_learning(ns, update))
            .await?;
        self.inner.cache_put_changes(ns, &changes, since).await;
        Ok(changes)
    }

    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        self.inner
            .write(ns, WriteOp::PutLearned(items.clone()))
            .await
    }

    /// Never journaled: the guard needs the durable layer (a consolidation run fails with a
    /// transient error while it is unreachable). The written groups' items are put in the
    /// cache; the others were changed by another writer, whose change the feed brings.
    async fn put_learned_unless_changed(
        &self,
        ns: &Namespace,
        groups: &[GuardedItems],
    ) -> Result<Vec<usize>> {
        let since = self.inner.coherence.epoch();
        let refused = self
            .inner
            .guarded(
                "put_learned_unless_changed",
                self.inner.durable.put_learned_unless_changed(ns, groups),
            )
            .await?;
        let written = groups
            .iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(i))
            .map(|(_, g)| &g.write);
        let values: Vec<CachedValue> = written
            .flat_map(|w| cache_values(w.patterns.iter(), w.heuristics.iter()))
            .collect();
        self.inner.cache_put_many(ns, &values, since).await;
        Ok(refused)
    }

    async fn record_feedback(&self, ns: &Namespace, feedback: &Feedback) -> Result<()> {
        self.inner
            .write(ns, WriteOp::RecordFeedback(feedback.clone()))
            .await
    }

    async fn get_learned_many(
        &self,
        ns: &Namespace,
        ids: &[LearnedId],
    ) -> Result<Vec<Option<LearnedItem>>> {
        self.inner.read_learned_many(ns, ids).await
    }

    async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>> {
        let i = &self.inner;
        if let Some(item) = lock(&i.overlay).learned(ns, id) {
            return Ok(Some(item));
        }
        let Some(key) = CacheKey::for_learned(id) else {
            return i.guarded("get_learned", i.durable.get_learned(ns, id)).await;
        };
        let v = i
            .cached_get(ns, key, || async {
                Ok(i.durable
                    .get_learned(ns, id)
                    .await?
                    .and_then(CachedValue::from_learned))
            })
            .await?;
        Ok(v.and_then(CachedValue::into_learned))
    }
    }
}

memory_core::forward_storage! {
    impl[] EmbeddingStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward get_embedding, episodes_missing_embedding, scan_embeddings, embedding_coverage,
        index_log_head, index_changes, get_index_snapshot, put_index_snapshot;
    {
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        self.inner
            .write(
                ns,
                WriteOp::PutEmbedding {
                    episode_id,
                    model: model.to_owned(),
                    vector: vector.to_vec(),
                },
            )
            .await
    }
    }
}

// Maintenance calls go to the durable layer through the breaker and are never journaled:
// while it is unreachable they fail with a transient error (a consolidation run is simply
// retried later). Pattern and heuristic writes of consolidation go through `put_learned`,
// which keeps the cache in step. Index snapshots are not journaled either: a snapshot is
// derived data, and one that cannot be written now is written again later.

memory_core::forward_storage! {
    impl[] MaintenanceStore for TieredStorage => inner.durable, wrap inner.guarded;
    forward record_consolidation, claim_consolidation, list_consolidations, put_metrics_snapshot,
        list_metrics_snapshots, put_estimate, get_estimate, query_estimates, record_restore,
        list_restores;
    {
    async fn compact_step_outputs(
        &self,
        ns: &Namespace,
        completed_before: DateTime<Utc>,
        max_episodes: u32,
    ) -> Result<StepCompaction> {
        // Durable first; then the cached copies of the compacted episodes go (they still hold
        // the outputs). Never journaled: a retention pass simply fails while the durable
        // layer is unreachable.
        let done = self
            .inner
            .guarded(
                "compact_step_outputs",
                self.inner
                    .durable
                    .compact_step_outputs(ns, completed_before, max_episodes),
            )
            .await?;
        let _patching = self.inner.episode_cache.lock().await;
        for id in &done.episode_ids {
            self.inner
                .cache_invalidate(ns, &CacheKey::Episode(*id))
                .await;
        }
        Ok(done)
    }

    async fn compact_merged_patterns(&self, ns: &Namespace, ids: &[PatternId]) -> Result<u64> {
        // Durable first (never journaled), then the cached copies of every id asked about
        // go: a row that stayed is read again from the durable layer.
        let removed = self
            .inner
            .guarded(
                "compact_merged_patterns",
                self.inner.durable.compact_merged_patterns(ns, ids),
            )
            .await?;
        for id in ids {
            self.inner
                .cache_invalidate(ns, &CacheKey::Pattern(id.clone()))
                .await;
        }
        Ok(removed)
    }

    /// Durable only (never journaled), then the cache is scrubbed: it may hold the items.
    async fn purge_namespace(
        &self,
        ns: &Namespace,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        let i = &self.inner;
        let rows = (i.guarded("purge_namespace", i.durable.purge_namespace(ns))).await?;
        i.cache_scrub().await;
        Ok(rows)
    }

    async fn compact_pruned_patterns(
        &self,
        ns: &Namespace,
        rows: &[(PatternId, DateTime<Utc>)],
    ) -> Result<u64> {
        // As `compact_merged_patterns`: durable first, then every cached copy asked about.
        let removed = self
            .inner
            .guarded(
                "compact_pruned_patterns",
                self.inner.durable.compact_pruned_patterns(ns, rows),
            )
            .await?;
        for (id, _) in rows {
            self.inner
                .cache_invalidate(ns, &CacheKey::Pattern(id.clone()))
                .await;
        }
        Ok(removed)
    }
    }
}

impl Storage for TieredStorage {
    fn backend_name(&self) -> &'static str {
        "tiered"
    }
}
