//! A consolidation run: a short driver over generic steps, each applied to patterns and then
//! to heuristics. Loads every item, decides in memory (`merge.rs` holds the decisions), writes
//! what changed in one `put_learned`, applies retention, takes a metrics snapshot and records
//! the run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use super::config::{ConsolidationConfig, RetentionConfig};
use super::generalize::generalize_rules;
use super::merge::{
    Consolidate, decayed_use, lexical_similarity, recently_restored, sequence_similarity,
};
use super::metrics::snapshot;
use super::pool::{LearnedChange, Pool, RunState};
use crate::clock::SharedClock;
use crate::embedding::{Embedder, cosine};
use crate::error::{Error, Result};
use crate::learned::{
    FeedbackTarget, Heuristic, Learned, LearnedKind, LearnedStatus, Pattern, PatternId, PatternKind,
};
use crate::namespace::Namespace;
use crate::records::{ConsolidationRun, MetricsSnapshot, RestoreRecord};
use crate::statistics::decay_factor;
use crate::storage::{GuardedItems, LearnedItems, LearnedQuery, Storage, StorageExt};

/// What a consolidation run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsolidationReport {
    /// The namespace.
    pub namespace: Namespace,
    /// The run as recorded (times and counts).
    pub run: ConsolidationRun,
    /// Every item it changed.
    pub changes: Vec<LearnedChange>,
    /// The learning-metrics snapshot it took.
    pub snapshot: MetricsSnapshot,
}

/// Page size when a run loads learned items.
const PAGE: u32 = 500;

/// The most recently seen tool sequences of a context, which are never folded into another:
/// one of them may be a procedure that is just emerging (after a change, say).
const RECENT_SEQUENCES: usize = 8;

/// The strongest tool sequences of a context that others may fold into: bounds a run's
/// comparisons to this many per sequence when a context holds thousands that fold nowhere.
const FOLD_TARGETS: usize = 256;

/// Runs consolidation for a memory: one run at a time, counted.
#[derive(Debug)]
pub(crate) struct Consolidator {
    storage: Arc<dyn Storage>,
    config: ConsolidationConfig,
    retention: RetentionConfig,
    half_life_days: f64,
    clock: SharedClock,
    embedder: Option<Arc<dyn Embedder>>,
    one_at_a_time: tokio::sync::Mutex<()>,
    runs: AtomicU64,
}

/// The pattern rows a run met (head and tail) that may be deleted: merged rows holding no
/// evidence that were merged before `merged_before`, pruned rows pruned before
/// `pruned_before` and not seen since; and every row some merged row points into, which
/// stays.
struct CompactableRows {
    merged_before: DateTime<Utc>,
    pruned_before: DateTime<Utc>,
    empty: Vec<PatternId>,
    pruned: Vec<(PatternId, DateTime<Utc>)>,
    pointed_into: HashSet<String>,
}

impl CompactableRows {
    fn new(merged_before: DateTime<Utc>, pruned_before: DateTime<Utc>) -> Self {
        CompactableRows {
            merged_before,
            pruned_before,
            empty: Vec::new(),
            pruned: Vec::new(),
            pointed_into: HashSet::new(),
        }
    }

    fn observe(&mut self, p: &Pattern) {
        match &p.status {
            LearnedStatus::Merged { into, at } => {
                self.pointed_into.insert(into.clone());
                if p.occurrences == 0 && *at < self.merged_before {
                    self.empty.push(p.id.clone());
                }
            }
            LearnedStatus::Pruned { at, .. } if *at < self.pruned_before && p.last_seen <= *at => {
                self.pruned.push((p.id.clone(), *at));
            }
            _ => {}
        }
    }

    /// The empty merged rows and the expired pruned rows nothing points into: deleting them
    /// breaks no merge chain (a row in the middle of a chain goes once the rows before it
    /// have gone, run by run).
    fn compactable(self) -> (Vec<PatternId>, Vec<(PatternId, DateTime<Utc>)>) {
        let CompactableRows {
            empty,
            pruned,
            pointed_into,
            ..
        } = self;
        let merged = empty
            .into_iter()
            .filter(|id| !pointed_into.contains(&id.0))
            .collect();
        let pruned = pruned
            .into_iter()
            .filter(|(id, _)| !pointed_into.contains(&id.0))
            .collect();
        (merged, pruned)
    }
}

/// The time `days` before `now` (the earliest time when that is out of range).
fn days_before(now: DateTime<Utc>, days: f64) -> DateTime<Utc> {
    let kept_ms = (days * 86_400_000.0) as i64;
    chrono::Duration::try_milliseconds(kept_ms)
        .and_then(|kept| now.checked_sub_signed(kept))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Rows deleted per `compact_merged_patterns` / `compact_pruned_patterns` call.
const COMPACT_BATCH: usize = 500;

/// Greedy clustering of `n` items (already in survivor order) by similarity: each item joins
/// the first earlier cluster head it is similar to. Returns (loser index, head index).
fn cluster(similar: &dyn Fn(usize, usize) -> bool, n: usize) -> Vec<(usize, usize)> {
    let mut heads: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        match heads.iter().find(|&&h| similar(h, i)) {
            Some(&h) => out.push((i, h)),
            None => heads.push(i),
        }
    }
    out
}

/// Step 1, revive: a pruned item that got evidence after it was pruned is in use again.
fn revive<T: Consolidate>(pool: &mut Pool<T>, st: &mut RunState) {
    for x in pool.items.values_mut() {
        if let LearnedStatus::Pruned { at, .. } = x.status()
            && x.last_seen() > *at
        {
            x.set_status(LearnedStatus::Active);
            st.run.revived += 1;
            st.change::<T>(x.id(), "revived", "new evidence after pruning".into());
        }
    }
}

/// Step 2, forward: evidence that arrived under a merged item's id moves to its survivor.
fn forward<T: Consolidate>(pool: &mut Pool<T>, st: &mut RunState) {
    let merged: Vec<T::Id> = pool
        .items
        .values()
        .filter(|x| matches!(x.status(), LearnedStatus::Merged { .. }) && x.evidence_count() > 0)
        .map(|x| x.id().clone())
        .collect();
    for id in merged {
        let Some(target) = pool.final_survivor(&id).filter(|t| *t != id) else {
            continue;
        };
        let n = pool.items.get(&id).map_or(0, Learned::evidence_count);
        if pool.merge(&id, &target, st.now) {
            let unit = T::EVIDENCE_UNIT;
            st.change::<T>(
                &id,
                "forwarded",
                format!("{n} new {unit} moved to {target}"),
            );
            st.run.forwarded += 1;
        }
    }
}

/// Step 3b, fold variants: a tool sequence that is not among the `RECENT_SEQUENCES` most
/// recently seen of its context (task type, domain, language) merges into the first sequence
/// of that context, in survivor order (most evidence, then most recently seen), that has at
/// least its evidence and success rate and is `min_similarity` alike (see
/// [`sequence_similarity`]), among the context's `FOLD_TARGETS` strongest. A one-off run is
/// then evidence of the procedure that recurs, instead of a pattern of its own. A variant of
/// the context ([`marks_a_variant`]: the procedure of its tagged tasks, say) never folds.
fn fold_sequence_variants(pool: &mut Pool<Pattern>, st: &mut RunState, min_similarity: f64) {
    let mut contexts: BTreeMap<String, Vec<&Pattern>> = BTreeMap::new();
    // A pinned sequence is the team's procedure: it neither folds nor takes others in.
    for p in (pool.items.values()).filter(|p| p.status.is_active() && p.pinned.is_none()) {
        if matches!(p.kind, PatternKind::ToolSequence { .. }) {
            contexts.entry(p.context.signature()).or_default().push(p);
        }
    }
    let mut merges: Vec<(PatternId, PatternId, f64)> = Vec::new();
    for mut members in contexts.into_values() {
        if members.len() <= RECENT_SEQUENCES {
            continue;
        }
        members.sort_by(|x, y| y.last_seen.cmp(&x.last_seen).then(x.id.cmp(&y.id)));
        let recent: Vec<PatternId> = members[..RECENT_SEQUENCES]
            .iter()
            .map(|p| p.id.clone())
            .collect();
        members.sort_by(|x, y| {
            (y.occurrences.cmp(&x.occurrences))
                .then(y.last_seen.cmp(&x.last_seen))
                .then(x.id.cmp(&y.id))
        });
        let tools = |i: usize| match &members[i].kind {
            PatternKind::ToolSequence { tools } => tools.as_slice(),
            _ => &[],
        };
        let similar = |h: usize, i: usize| {
            h < FOLD_TARGETS
                && !recent.contains(&members[i].id)
                && members[h].success_rate() >= members[i].success_rate()
                && !marks_a_variant(members[i], members[h])
                && sequence_similarity(tools(h), tools(i)) >= min_similarity
        };
        for (loser, head) in cluster(&similar, members.len()) {
            let sim = sequence_similarity(tools(head), tools(loser));
            merges.push((members[loser].id.clone(), members[head].id.clone(), sim));
        }
    }
    for (loser, head, sim) in merges {
        if pool.merge(&loser, &head, st.now) {
            let detail = format!("a variant of {head} that stopped recurring ({sim:.2} alike)");
            st.change::<Pattern>(&loser, "merged", detail);
            st.run.merged_patterns += 1;
        }
    }
}

/// Whether `sequence` is a variant of its context apart from `head`: seen more than once, and
/// every time with a mark (framework or tag, [`Pattern::marks`]) that an episode of `head`
/// lacked. A one-off run shares its marks with itself alone and tells nothing apart.
fn marks_a_variant(sequence: &Pattern, head: &Pattern) -> bool {
    let (mine, theirs) = (&sequence.marks, &head.marks);
    sequence.occurrences >= 2
        && mine.known(sequence.occurrences)
        && mine.shared().any(|m| theirs.count(m) < theirs.episodes)
}

/// Step 4, feedback: effectiveness and votes from the feedback events of each item and of every item merged
/// into it.
async fn apply_feedback<T: Consolidate>(
    storage: &dyn Storage,
    ns: &Namespace,
    pool: &mut Pool<T>,
    st: &mut RunState,
) -> Result<()> {
    let mut sources: HashMap<T::Id, Vec<T::Id>> = HashMap::new();
    for id in pool.items.keys() {
        if let Some(owner) = pool.final_survivor(id) {
            sources.entry(owner).or_default().push(id.clone());
        }
    }
    for (owner, ids) in sources {
        let mut events = Vec::new();
        for id in &ids {
            events.extend(storage.list_feedback(ns, &T::feedback_target(id)).await?);
        }
        let detail = pool
            .items
            .get_mut(&owner)
            .and_then(|x| x.set_feedback(&events));
        if let Some(detail) = detail {
            st.change::<T>(&owner, "effectiveness", detail);
            st.run.effectiveness_updated += 1;
        }
    }
    Ok(())
}

/// Step 5, decay and prune: an active item whose decayed confidence and decayed use are both below
/// the floors is tombstoned, unless it was restored recently.
fn prune<T: Consolidate>(
    pool: &mut Pool<T>,
    st: &mut RunState,
    cfg: &ConsolidationConfig,
    half_life: f64,
    restores: &[RestoreRecord],
) {
    let (floor, use_floor, now) = (cfg.prune_confidence_floor, cfg.prune_use_floor, st.now);
    // A pinned item stays however old its evidence is.
    for x in (pool.items.values_mut()).filter(|x| x.status().is_active() && x.pinned().is_none()) {
        let confidence = x.decayed_confidence(now, half_life);
        let used = decayed_use(x.uses(), x.last_seen(), now, half_life);
        let target = T::feedback_target(x.id());
        if confidence < floor
            && used < use_floor
            && !recently_restored(restores, &target, now, cfg.restore_grace_days)
        {
            let reason = format!(
                "confidence {confidence:.3} below floor {floor} and decayed use {used:.2} below {use_floor}; last evidence {}",
                x.last_seen().to_rfc3339()
            );
            st.change::<T>(x.id(), "pruned", reason.clone());
            x.set_status(LearnedStatus::Pruned { reason, at: now });
            match T::KIND {
                LearnedKind::Heuristic => st.run.pruned_heuristics += 1,
                _ => st.run.pruned_patterns += 1,
            }
        } else if decay_factor(x.last_seen(), now, half_life) < 0.5 {
            st.run.decayed += 1;
        }
    }
}

impl Consolidator {
    /// A consolidator over `storage`; `embedder` (when loaded) judges near-duplicate wording.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        config: ConsolidationConfig,
        retention: RetentionConfig,
        half_life_days: f64,
        clock: SharedClock,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Self {
        Consolidator {
            storage,
            config,
            retention,
            half_life_days,
            clock,
            embedder,
            one_at_a_time: tokio::sync::Mutex::new(()),
            runs: AtomicU64::new(0),
        }
    }

    /// Runs finished so far.
    pub(crate) fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// The items of one kind a run acts on, in pages, most seen first, until `max_items` are
    /// kept (at most a page more); and how many rows were read. A pruned item without evidence
    /// newer than its pruning needs nothing and is passed over (it would crowd out the newest
    /// items of a large store), unless an item merged into it holds evidence to forward;
    /// `passed_over` sees each of those.
    async fn load_head<T: Consolidate>(
        &self,
        ns: &Namespace,
        passed_over: &mut (dyn FnMut(&T) + Send),
    ) -> Result<(Pool<T>, u32)> {
        let (max, mut read) = (self.config.max_items as usize, 0_u32);
        let mut kept: Vec<T> = Vec::new();
        while kept.len() < max {
            let q = LearnedQuery {
                include_inactive: true,
                limit: PAGE,
                offset: read,
                ..LearnedQuery::default()
            };
            let page = self.storage.query_typed::<T>(ns, &q).await?;
            read += page.len() as u32;
            let done = (page.len() as u32) < PAGE;
            for x in page {
                if matches!(x.status(), LearnedStatus::Pruned { at, .. } if x.last_seen() <= *at) {
                    passed_over(&x);
                } else {
                    kept.push(x);
                }
            }
            if done {
                break;
            }
        }
        // Along the merge chain (at most 16 long) of every item holding evidence to forward,
        // the items left out are read, each once.
        let mut pool = Pool::new(kept);
        let into = |x: &T| match x.status() {
            LearnedStatus::Merged { into, .. } => Some(T::id_from(into)),
            _ => None,
        };
        let mut next: BTreeSet<T::Id> = (pool.items.values())
            .filter(|x| x.evidence_count() > 0)
            .filter_map(into)
            .collect();
        let mut walked = BTreeSet::new();
        for _ in 0..16 {
            let mut after = BTreeSet::new();
            for id in std::mem::take(&mut next) {
                if !walked.insert(id.clone()) {
                    continue;
                }
                if let Some(x) = pool.items.get(&id) {
                    after.extend(into(x));
                } else if let Some(x) = self.storage.get_typed::<T>(ns, &id).await? {
                    after.extend(into(&x));
                    pool.loaded.push(x.clone());
                    pool.items.insert(id, x);
                }
            }
            if after.is_empty() {
                break;
            }
            next = after;
        }
        Ok((pool, read))
    }

    /// Which pairs of `texts` are near-duplicates: cosine of embeddings when an embedder is
    /// loaded (lexical similarity if embedding fails), word-set similarity otherwise.
    async fn similarity_matrix(&self, texts: &[String]) -> Vec<Vec<bool>> {
        let cfg = &self.config;
        if let Some(embedder) = &self.embedder {
            match embedder.embed(texts).await {
                Ok(vectors) if vectors.len() == texts.len() => {
                    return vectors
                        .iter()
                        .map(|a| {
                            vectors
                                .iter()
                                .map(|b| f64::from(cosine(a, b)) >= cfg.semantic_similarity)
                                .collect()
                        })
                        .collect();
                }
                Ok(_) => warn!("embedder returned a wrong number of vectors; lexical similarity"),
                Err(e) => {
                    warn!(error = %e, "embedding for consolidation failed; lexical similarity");
                }
            }
        }
        texts
            .iter()
            .map(|a| {
                texts
                    .iter()
                    .map(|b| lexical_similarity(a, b) >= cfg.lexical_similarity)
                    .collect()
            })
            .collect()
    }

    /// Step 3, merge near-duplicates among active items: same kind, context and tools; wording
    /// similar. The survivor is the one with the most evidence (then the oldest, then the
    /// smallest id), so the choice is deterministic.
    async fn merge_duplicates<T: Consolidate>(&self, pool: &mut Pool<T>, st: &mut RunState) {
        let mut groups: BTreeMap<String, Vec<(T::Id, String)>> = BTreeMap::new();
        // Pinned items are neither merged nor merged into.
        for x in (pool.items.values()).filter(|x| x.status().is_active() && x.pinned().is_none()) {
            if let Some((key, text)) = x.merge_key() {
                groups.entry(key).or_default().push((x.id().clone(), text));
            }
        }
        for (_, mut members) in groups.into_iter().filter(|(_, m)| m.len() > 1) {
            members.sort_by(|(a, _), (b, _)| {
                let (x, y) = (&pool.items[a], &pool.items[b]);
                y.evidence_count()
                    .cmp(&x.evidence_count())
                    .then(x.first_seen().cmp(&y.first_seen()))
                    .then(a.cmp(b))
            });
            let texts: Vec<String> = members.iter().map(|(_, t)| t.clone()).collect();
            let sim = self.similarity_matrix(&texts).await;
            for (loser_i, head_i) in cluster(&|a, b| sim[a][b], members.len()) {
                let (lid, hid) = (&members[loser_i].0, &members[head_i].0);
                if pool.merge(lid, hid, st.now) {
                    let detail = format!(
                        "near-duplicate of {hid} (\"{}\" ~ \"{}\")",
                        texts[loser_i], texts[head_i]
                    );
                    st.change::<T>(lid, "merged", detail);
                    match T::KIND {
                        LearnedKind::Heuristic => st.run.merged_heuristics += 1,
                        _ => st.run.merged_patterns += 1,
                    }
                }
            }
        }
    }

    /// One run over `ns`: revive, forward, merge, feedback, prune (each for patterns, then
    /// heuristics), write what changed, retention, metrics snapshot, run record. Runs never
    /// overlap; a second run right after changes nothing.
    pub(crate) async fn run(&self, ns: &Namespace, trigger: &str) -> Result<ConsolidationReport> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        self.run_as(ns, self.new_run(trigger)).await
    }

    /// A run record starting now, with nothing done yet.
    pub(crate) fn new_run(&self, trigger: &str) -> ConsolidationRun {
        let now = self.clock.now();
        ConsolidationRun {
            id: Uuid::now_v7().to_string(),
            trigger: trigger.to_owned(),
            started_at: now,
            finished_at: now,
            ..ConsolidationRun::default()
        }
    }

    /// The scheduled run: claims `ns` (see [`MaintenanceStore::claim_consolidation`]) unless
    /// a run of any process started within `interval`, then runs. `None` when not claimed.
    ///
    /// [`MaintenanceStore::claim_consolidation`]: crate::MaintenanceStore::claim_consolidation
    pub(crate) async fn run_if_due(
        &self,
        ns: &Namespace,
        interval: std::time::Duration,
    ) -> Result<Option<ConsolidationReport>> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let run = self.new_run("scheduled");
        let window = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        let not_before = run
            .started_at
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if !self
            .storage
            .claim_consolidation(ns, &run, not_before)
            .await?
        {
            return Ok(None);
        }
        self.run_as(ns, run).await.map(Some)
    }

    async fn run_as(&self, ns: &Namespace, run: ConsolidationRun) -> Result<ConsolidationReport> {
        let (cfg, half_life) = (&self.config, self.half_life_days);
        let now = run.started_at;
        let mut st = RunState {
            run,
            changes: Vec::new(),
            now,
        };
        let mut rows = CompactableRows::new(
            days_before(now, cfg.merged_rows_kept_days),
            days_before(now, cfg.pruned_rows_kept_days),
        );
        let (mut patterns, patterns_read) = self
            .load_head::<Pattern>(ns, &mut |p| rows.observe(p))
            .await?;
        let (mut heuristics, heuristics_read) =
            self.load_head::<Heuristic>(ns, &mut |_| {}).await?;
        let grace_ms = (cfg.restore_grace_days * 86_400_000.0) as i64;
        let since = now
            .checked_sub_signed(chrono::Duration::milliseconds(grace_ms))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let restores = self.storage.list_restores(ns, since).await?;
        let stats = self.storage.namespace_stats(ns).await?;

        revive(&mut patterns, &mut st);
        revive(&mut heuristics, &mut st);
        forward(&mut patterns, &mut st);
        forward(&mut heuristics, &mut st);
        self.merge_duplicates(&mut patterns, &mut st).await;
        fold_sequence_variants(&mut patterns, &mut st, cfg.sequence_similarity);
        self.merge_duplicates(&mut heuristics, &mut st).await;
        generalize_rules(&mut heuristics, &mut st);
        if stats.feedback > 0 {
            apply_feedback(self.storage.as_ref(), ns, &mut patterns, &mut st).await?;
            apply_feedback(self.storage.as_ref(), ns, &mut heuristics, &mut st).await?;
        }
        prune(&mut patterns, &mut st, cfg, half_life, &restores);
        prune(&mut heuristics, &mut st, cfg, half_life, &restores);

        // Step 6: write what changed, in one transaction, each merge group only if no other
        // writer changed its items since they were read.
        let mut groups = patterns.changed_groups();
        groups.extend(heuristics.changed_groups());
        self.write_unless_changed(ns, groups, &mut st).await?;
        patterns.items.values().for_each(|p| rows.observe(p));
        let mut observe = |p: &Pattern| rows.observe(p);
        self.sweep_tail::<Pattern>(ns, patterns_read, &mut st, &restores, &mut observe)
            .await?;
        self.sweep_tail::<Heuristic>(ns, heuristics_read, &mut st, &restores, &mut |_| {})
            .await?;
        let (merged, pruned) = rows.compactable();
        for batch in merged.chunks(COMPACT_BATCH) {
            st.run.compacted_merged += self.storage.compact_merged_patterns(ns, batch).await?;
        }
        for batch in pruned.chunks(COMPACT_BATCH) {
            st.run.compacted_pruned += self.storage.compact_pruned_patterns(ns, batch).await?;
        }
        self.retention(ns, &mut st).await?;
        let snapshot = snapshot(
            self.storage.as_ref(),
            ns,
            cfg,
            now,
            patterns.items.values(),
            heuristics.items.values(),
        )
        .await?;
        self.storage.put_metrics_snapshot(ns, &snapshot).await?;
        let mut run = st.run;
        run.finished_at = self.clock.now();
        self.storage.record_consolidation(ns, &run).await?;
        info!(
            namespace = %ns,
            merged = run.merged_patterns + run.merged_heuristics,
            generalized = run.generalized_heuristics,
            pruned = run.pruned_patterns + run.pruned_heuristics,
            decayed = run.decayed,
            compacted_steps = run.compacted_steps,
            compacted_merged = run.compacted_merged,
            compacted_pruned = run.compacted_pruned,
            "consolidation run"
        );
        self.runs.fetch_add(1, Ordering::Relaxed);
        Ok(ConsolidationReport {
            namespace: ns.clone(),
            run,
            changes: st.changes,
            snapshot,
        })
    }

    /// Step 6b, the tail: the rows past those the head read (the least seen) are revived,
    /// decayed and pruned a page at a time, each page written in one upsert, so a run examines
    /// every item in bounded memory. Merging and feedback stay with the head. `observe` sees
    /// each item as the page leaves it.
    async fn sweep_tail<T: Consolidate>(
        &self,
        ns: &Namespace,
        mut offset: u32,
        st: &mut RunState,
        restores: &[RestoreRecord],
        observe: &mut (dyn FnMut(&T) + Send),
    ) -> Result<()> {
        loop {
            let q = LearnedQuery {
                include_inactive: true,
                limit: PAGE,
                offset,
                ..LearnedQuery::default()
            };
            let page = self.storage.query_typed::<T>(ns, &q).await?;
            let full = page.len() as u32 == PAGE;
            let mut pool = Pool::new(page);
            revive(&mut pool, st);
            prune(&mut pool, st, &self.config, self.half_life_days, restores);
            pool.items.values().for_each(&mut *observe);
            self.write_unless_changed(ns, pool.changed_groups(), st)
                .await?;
            if !full {
                return Ok(());
            }
            offset = offset.saturating_add(PAGE);
        }
    }

    /// Writes `groups`, each only if its items are stored as the run read them; the items of
    /// a group another writer changed meanwhile are left for the next run (counted, and
    /// their entries dropped from the run's list of changes).
    async fn write_unless_changed(
        &self,
        ns: &Namespace,
        groups: Vec<GuardedItems>,
        st: &mut RunState,
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let refused = self.storage.put_learned_unless_changed(ns, &groups).await?;
        let mut left: HashSet<(String, String)> = HashSet::new();
        for g in refused.iter().filter_map(|&i| groups.get(i)) {
            for (id, _) in &g.read {
                left.insert((id.kind().name().to_owned(), id.as_str().to_owned()));
            }
        }
        if !left.is_empty() {
            info!(
                namespace = %ns,
                items = left.len(),
                "consolidation: items changed by another writer during the run are left to the next run"
            );
            st.run.left_to_next_run += left.len() as u64;
            st.changes
                .retain(|c| !left.contains(&(c.kind.clone(), c.id.clone())));
        }
        Ok(())
    }

    /// Step 7, retention: compacts step outputs of old successful episodes, when configured.
    async fn retention(&self, ns: &Namespace, st: &mut RunState) -> Result<()> {
        if let Some(days) = self.retention.compact_step_outputs_after_days {
            let before = st.now - chrono::Duration::days(i64::from(days));
            let done = self
                .storage
                .compact_step_outputs(ns, before, self.retention.max_episodes_per_run)
                .await?;
            st.run.compacted_episodes = done.episode_ids.len() as u64;
            st.run.compacted_steps = done.steps;
            st.run.compacted_bytes = done.bytes;
        }
        Ok(())
    }

    /// Brings a pruned pattern or heuristic back into use and records the restore. `NotFound`
    /// for an unknown item, `Conflict` for one that is not pruned.
    pub(crate) async fn restore(&self, ns: &Namespace, target: FeedbackTarget) -> Result<()> {
        match &target {
            FeedbackTarget::Pattern(id) => self.restore_item::<Pattern>(ns, id, &target).await,
            FeedbackTarget::Heuristic(id) => self.restore_item::<Heuristic>(ns, id, &target).await,
        }
    }

    /// [`Consolidator::restore`] of one item: its status is written only if the item is still
    /// stored as read, so evidence a completion adds meanwhile (this process or another) is
    /// kept; when it changed, it is read again. A restore needs the durable layer: its record
    /// is not journaled, so during an outage it fails before writing anything. If the layer
    /// goes away between the record and the guarded write (which cannot wait in the outbox),
    /// the item is written as read with a plain write, which the tiered stack journals:
    /// evidence reaching the server before that replay would then be overwritten.
    async fn restore_item<T: Learned>(
        &self,
        ns: &Namespace,
        id: &T::Id,
        target: &FeedbackTarget,
    ) -> Result<()> {
        /// Reads and guarded writes before giving up on an item that keeps changing.
        const TRIES: usize = 8;
        for attempt in 0..TRIES {
            let read = self.pruned::<T>(ns, id).await?;
            if attempt == 0 {
                // The record first: if it fails, nothing changed.
                let restore = RestoreRecord {
                    target: target.clone(),
                    restored_at: self.clock.now(),
                };
                self.storage.record_restore(ns, &restore).await?;
            }
            let mut active = read.clone();
            active.set_status(LearnedStatus::Active);
            let mut write = LearnedItems::default();
            write.push(active.into_item());
            let group = GuardedItems {
                read: vec![(T::learned_id(id), Some(read.into_item()))],
                write,
            };
            match self
                .storage
                .put_learned_unless_changed(ns, std::slice::from_ref(&group))
                .await
            {
                Ok(left) if left.is_empty() => return Ok(()),
                Ok(_) => {} // changed since the read: read it again
                Err(e) if e.is_transient() => {
                    return self.storage.put_learned(ns, &group.write).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            kind: T::KIND.object_kind(),
            id: id.to_string(),
            reason: format!("changed {TRIES} times while being restored; try again"),
        })
    }

    /// The pruned item as stored.
    async fn pruned<T: Learned>(&self, ns: &Namespace, id: &T::Id) -> Result<T> {
        let kind = T::KIND.object_kind();
        let x = self
            .storage
            .get_typed::<T>(ns, id)
            .await?
            .ok_or_else(|| Error::not_found(kind, id))?;
        if !matches!(x.status(), LearnedStatus::Pruned { .. }) {
            return Err(Error::Conflict {
                kind,
                id: id.to_string(),
                reason: format!(
                    "is {}, not pruned; only pruned items can be restored",
                    x.status().name()
                ),
            });
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests;
