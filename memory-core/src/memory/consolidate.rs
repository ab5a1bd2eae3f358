//! Consolidation runs, restore, estimate records and the background schedule.

use std::collections::{BTreeMap, HashMap};
use std::sync::Weak;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, info_span, instrument, warn};
use uuid::Uuid;

use super::{Inner, SelfLearningMemory};
use crate::confidence::decay_factor;
use crate::consolidation::{
    calibrate, correction_from, decayed_use, estimate_error, heuristic_merge_key,
    lexical_similarity, merge_heuristic_into, merge_pattern_into, pattern_merge_key,
    recently_restored,
};
use crate::embedding::cosine;
use crate::episode::{Episode, EpisodeId, Outcome};
use crate::error::{Error, ObjectKind, Result};
use crate::feedback::{FeedbackOutcome, FeedbackTarget};
use crate::heuristic::{Heuristic, HeuristicId};
use crate::learned::LearnedStatus;
use crate::maintenance::{
    ConsolidationRun, EstimateActual, EstimateRecord, MetricsSnapshot, RestoreRecord,
};
use crate::namespace::Namespace;
use crate::pattern::{Effectiveness, Pattern, PatternId, PatternKind};
use crate::retrieval::recommend::Estimate;
use crate::storage::{EpisodeFilter, EpisodeQuery, EpisodeStatus, LearnedItems, LearnedQuery};

/// One learned item a consolidation run changed, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedChange {
    /// `pattern` or `heuristic`.
    pub kind: String,
    /// The item's id.
    pub id: String,
    /// `merged`, `pruned`, `revived`, `forwarded` or `effectiveness`.
    pub action: String,
    /// What happened, for people (the survivor of a merge, the reason of a prune, ...).
    pub detail: String,
}

/// What [`SelfLearningMemory::consolidate`] did.
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

fn change(kind: &str, id: &str, action: &str, detail: String) -> LearnedChange {
    LearnedChange {
        kind: kind.to_owned(),
        id: id.to_owned(),
        action: action.to_owned(),
        detail,
    }
}

fn effectiveness(events: &[crate::feedback::Feedback]) -> Effectiveness {
    let mut e = Effectiveness::default();
    for f in events {
        match f.outcome {
            FeedbackOutcome::Helped => e.helped += 1,
            FeedbackOutcome::NoEffect => e.no_effect += 1,
            FeedbackOutcome::Hindered => e.hindered += 1,
        }
    }
    e
}

/// Follows merge pointers to the item that finally holds the evidence (at most 16 hops, so a
/// corrupt cycle cannot loop).
fn final_survivor(
    start: &str,
    status_of: impl Fn(&str) -> Option<LearnedStatus>,
) -> Option<String> {
    let mut id = start.to_owned();
    for _ in 0..16 {
        match status_of(&id)? {
            LearnedStatus::Merged { into, .. } => id = into,
            _ => return Some(id),
        }
    }
    None
}

/// Greedy clustering of `members` (already in survivor order) by text similarity: each item
/// joins the first earlier cluster head it is similar to. Returns (loser index, head index).
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

impl Inner {
    async fn all_patterns(&self, ns: &Namespace) -> Result<Vec<Pattern>> {
        let max = self.config.consolidation.max_items;
        let mut out = Vec::new();
        while (out.len() as u32) < max {
            let q = LearnedQuery {
                include_inactive: true,
                limit: PAGE.min(max - out.len() as u32),
                offset: out.len() as u32,
                ..LearnedQuery::default()
            };
            let page = self.storage.query_patterns(ns, &q).await?;
            let done = (page.len() as u32) < q.limit;
            out.extend(page);
            if done {
                break;
            }
        }
        Ok(out)
    }

    async fn all_heuristics(&self, ns: &Namespace) -> Result<Vec<Heuristic>> {
        let max = self.config.consolidation.max_items;
        let mut out = Vec::new();
        while (out.len() as u32) < max {
            let q = LearnedQuery {
                include_inactive: true,
                limit: PAGE.min(max - out.len() as u32),
                offset: out.len() as u32,
                ..LearnedQuery::default()
            };
            let page = self.storage.query_heuristics(ns, &q).await?;
            let done = (page.len() as u32) < q.limit;
            out.extend(page);
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Which pairs of `texts` are near-duplicates: cosine of embeddings when an embedder is
    /// loaded (lexical similarity if embedding fails), word-set similarity otherwise.
    async fn similarity_matrix(&self, texts: &[String]) -> Vec<Vec<bool>> {
        let cfg = &self.config.consolidation;
        if let Some(embedder) = self.retriever.embedder() {
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

    /// One consolidation run over `ns`, counted when it finishes.
    pub(super) async fn consolidate(
        &self,
        ns: &Namespace,
        trigger: &str,
    ) -> Result<ConsolidationReport> {
        let report = self.run_consolidation(ns, trigger).await?;
        self.consolidations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(report)
    }

    async fn run_consolidation(
        &self,
        ns: &Namespace,
        trigger: &str,
    ) -> Result<ConsolidationReport> {
        let _one_at_a_time = self.consolidating.lock().await;
        let cfg = &self.config.consolidation;
        let half_life = self.config.learning.half_life_days;
        let started_at = self.clock.now();
        let now = started_at;
        let mut run = ConsolidationRun {
            id: Uuid::now_v7().to_string(),
            trigger: trigger.to_owned(),
            started_at,
            finished_at: started_at,
            ..ConsolidationRun::default()
        };
        let mut changes = Vec::new();

        let loaded_patterns = self.all_patterns(ns).await?;
        let loaded_heuristics = self.all_heuristics(ns).await?;
        let grace_ms = (cfg.restore_grace_days * 86_400_000.0) as i64;
        let since = now
            .checked_sub_signed(chrono::Duration::milliseconds(grace_ms))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let restores = self.storage.list_restores(ns, since).await?;
        let stats = self.storage.namespace_stats(ns).await?;

        let mut patterns: BTreeMap<PatternId, Pattern> = loaded_patterns
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        let mut heuristics: BTreeMap<HeuristicId, Heuristic> = loaded_heuristics
            .iter()
            .map(|h| (h.id.clone(), h.clone()))
            .collect();

        // 1. Revive: a pruned item that got evidence after it was pruned is in use again.
        for p in patterns.values_mut() {
            if let LearnedStatus::Pruned { at, .. } = &p.status
                && p.last_seen > *at
            {
                p.status = LearnedStatus::Active;
                run.revived += 1;
                changes.push(change(
                    "pattern",
                    &p.id.0,
                    "revived",
                    "new evidence after pruning".into(),
                ));
            }
        }
        for h in heuristics.values_mut() {
            if let LearnedStatus::Pruned { at, .. } = &h.status
                && h.last_seen > *at
            {
                h.status = LearnedStatus::Active;
                run.revived += 1;
                changes.push(change(
                    "heuristic",
                    &h.id.0,
                    "revived",
                    "new evidence after pruning".into(),
                ));
            }
        }

        // 2. Forward: evidence that arrived under a merged item's id moves to its survivor.
        let merged_patterns: Vec<PatternId> = patterns
            .values()
            .filter(|p| matches!(p.status, LearnedStatus::Merged { .. }) && p.occurrences > 0)
            .map(|p| p.id.clone())
            .collect();
        for id in merged_patterns {
            let target = final_survivor(&id.0, |x| {
                patterns
                    .get(&PatternId(x.to_owned()))
                    .map(|p| p.status.clone())
            });
            let Some(target) = target.map(PatternId).filter(|t| *t != id) else {
                continue;
            };
            let (Some(mut loser), Some(mut survivor)) =
                (patterns.remove(&id), patterns.remove(&target))
            else {
                continue;
            };
            let n = loser.occurrences;
            merge_pattern_into(&mut survivor, &mut loser, now);
            changes.push(change(
                "pattern",
                &id.0,
                "forwarded",
                format!("{n} new occurrence(s) moved to {target}"),
            ));
            run.forwarded += 1;
            patterns.insert(id, loser);
            patterns.insert(target, survivor);
        }
        let merged_heuristics: Vec<HeuristicId> = heuristics
            .values()
            .filter(|h| {
                matches!(h.status, LearnedStatus::Merged { .. }) && h.support + h.against > 0
            })
            .map(|h| h.id.clone())
            .collect();
        for id in merged_heuristics {
            let target = final_survivor(&id.0, |x| {
                heuristics
                    .get(&HeuristicId(x.to_owned()))
                    .map(|h| h.status.clone())
            });
            let Some(target) = target.map(HeuristicId).filter(|t| *t != id) else {
                continue;
            };
            let (Some(mut loser), Some(mut survivor)) =
                (heuristics.remove(&id), heuristics.remove(&target))
            else {
                continue;
            };
            let n = loser.support + loser.against;
            merge_heuristic_into(&mut survivor, &mut loser, now);
            changes.push(change(
                "heuristic",
                &id.0,
                "forwarded",
                format!("{n} new observation(s) moved to {target}"),
            ));
            run.forwarded += 1;
            heuristics.insert(id, loser);
            heuristics.insert(target, survivor);
        }

        // 3. Merge near-duplicates among active items: same kind, context and tools; wording
        // similar. The survivor is the one with the most evidence (then the oldest, then the
        // smallest id), so the choice is deterministic.
        let mut groups: BTreeMap<String, Vec<(PatternId, String)>> = BTreeMap::new();
        for p in patterns.values().filter(|p| p.status.is_active()) {
            if let Some((key, text)) = pattern_merge_key(p) {
                groups.entry(key).or_default().push((p.id.clone(), text));
            }
        }
        for (_, mut members) in groups.into_iter().filter(|(_, m)| m.len() > 1) {
            members.sort_by(|(a, _), (b, _)| {
                let (x, y) = (&patterns[a], &patterns[b]);
                y.occurrences
                    .cmp(&x.occurrences)
                    .then(x.first_seen.cmp(&y.first_seen))
                    .then(a.cmp(b))
            });
            let texts: Vec<String> = members.iter().map(|(_, t)| t.clone()).collect();
            let sim = self.similarity_matrix(&texts).await;
            for (loser_i, head_i) in cluster(&|a, b| sim[a][b], members.len()) {
                let (lid, hid) = (&members[loser_i].0, &members[head_i].0);
                let (Some(mut loser), Some(mut head)) =
                    (patterns.remove(lid), patterns.remove(hid))
                else {
                    continue;
                };
                merge_pattern_into(&mut head, &mut loser, now);
                changes.push(change(
                    "pattern",
                    &lid.0,
                    "merged",
                    format!(
                        "near-duplicate of {hid} (\"{}\" ~ \"{}\")",
                        texts[loser_i], texts[head_i]
                    ),
                ));
                run.merged_patterns += 1;
                patterns.insert(lid.clone(), loser);
                patterns.insert(hid.clone(), head);
            }
        }
        let mut hgroups: BTreeMap<String, Vec<(HeuristicId, String)>> = BTreeMap::new();
        for h in heuristics.values().filter(|h| h.status.is_active()) {
            let (key, text) = heuristic_merge_key(h);
            hgroups.entry(key).or_default().push((h.id.clone(), text));
        }
        for (_, mut members) in hgroups.into_iter().filter(|(_, m)| m.len() > 1) {
            members.sort_by(|(a, _), (b, _)| {
                let (x, y) = (&heuristics[a], &heuristics[b]);
                (y.support + y.against)
                    .cmp(&(x.support + x.against))
                    .then(x.first_seen.cmp(&y.first_seen))
                    .then(a.cmp(b))
            });
            let texts: Vec<String> = members.iter().map(|(_, t)| t.clone()).collect();
            let sim = self.similarity_matrix(&texts).await;
            for (loser_i, head_i) in cluster(&|a, b| sim[a][b], members.len()) {
                let (lid, hid) = (&members[loser_i].0, &members[head_i].0);
                let (Some(mut loser), Some(mut head)) =
                    (heuristics.remove(lid), heuristics.remove(hid))
                else {
                    continue;
                };
                merge_heuristic_into(&mut head, &mut loser, now);
                changes.push(change(
                    "heuristic",
                    &lid.0,
                    "merged",
                    format!(
                        "near-duplicate of {hid} (\"{}\" ~ \"{}\")",
                        texts[loser_i], texts[head_i]
                    ),
                ));
                run.merged_heuristics += 1;
                heuristics.insert(lid.clone(), loser);
                heuristics.insert(hid.clone(), head);
            }
        }

        // 4. Effectiveness (patterns) and votes (heuristics) from the usage events of the item
        // and of every item merged into it.
        if stats.feedback > 0 {
            let mut pattern_sources: HashMap<PatternId, Vec<PatternId>> = HashMap::new();
            for p in patterns.values() {
                let owner = final_survivor(&p.id.0, |x| {
                    patterns
                        .get(&PatternId(x.to_owned()))
                        .map(|p| p.status.clone())
                });
                if let Some(owner) = owner {
                    pattern_sources
                        .entry(PatternId(owner))
                        .or_default()
                        .push(p.id.clone());
                }
            }
            for (owner, sources) in pattern_sources {
                let mut events = Vec::new();
                for s in &sources {
                    events.extend(
                        self.storage
                            .list_feedback(ns, &FeedbackTarget::Pattern(s.clone()))
                            .await?,
                    );
                }
                let eff = effectiveness(&events);
                if let Some(p) = patterns.get_mut(&owner)
                    && p.effectiveness != eff
                {
                    changes.push(change(
                        "pattern",
                        &owner.0,
                        "effectiveness",
                        format!(
                            "{} helped / {} no effect / {} hindered from {} event(s)",
                            eff.helped,
                            eff.no_effect,
                            eff.hindered,
                            events.len()
                        ),
                    ));
                    p.effectiveness = eff;
                    run.effectiveness_updated += 1;
                }
            }
            let mut heuristic_sources: HashMap<HeuristicId, Vec<HeuristicId>> = HashMap::new();
            for h in heuristics.values() {
                let owner = final_survivor(&h.id.0, |x| {
                    heuristics
                        .get(&HeuristicId(x.to_owned()))
                        .map(|h| h.status.clone())
                });
                if let Some(owner) = owner {
                    heuristic_sources
                        .entry(HeuristicId(owner))
                        .or_default()
                        .push(h.id.clone());
                }
            }
            for (owner, sources) in heuristic_sources {
                let mut events = Vec::new();
                for s in &sources {
                    events.extend(
                        self.storage
                            .list_feedback(ns, &FeedbackTarget::Heuristic(s.clone()))
                            .await?,
                    );
                }
                let eff = effectiveness(&events);
                if let Some(h) = heuristics.get_mut(&owner)
                    && (h.votes_up, h.votes_down) != (eff.helped, eff.hindered)
                {
                    changes.push(change(
                        "heuristic",
                        &owner.0,
                        "effectiveness",
                        format!(
                            "{} up / {} down from {} event(s)",
                            eff.helped,
                            eff.hindered,
                            events.len()
                        ),
                    ));
                    h.votes_up = eff.helped;
                    h.votes_down = eff.hindered;
                    run.effectiveness_updated += 1;
                }
            }
        }

        // 5. Decay and prune: confidence decays with the age of the latest evidence (applied
        // whenever confidence is read); an item whose decayed confidence and decayed use are
        // both below the floors is tombstoned, unless it was restored recently.
        let floor = cfg.prune_confidence_floor;
        let use_floor = cfg.prune_use_floor;
        for p in patterns.values_mut().filter(|p| p.status.is_active()) {
            let confidence = p.confidence(now, half_life);
            let used = decayed_use(
                p.occurrences + p.effectiveness.uses(),
                p.last_seen,
                now,
                half_life,
            );
            let target = FeedbackTarget::Pattern(p.id.clone());
            if confidence < floor
                && used < use_floor
                && !recently_restored(&restores, &target, now, cfg.restore_grace_days)
            {
                let reason = format!(
                    "confidence {confidence:.3} below floor {floor} and decayed use {used:.2} below {use_floor}; last evidence {}",
                    p.last_seen.to_rfc3339()
                );
                changes.push(change("pattern", &p.id.0, "pruned", reason.clone()));
                p.status = LearnedStatus::Pruned { reason, at: now };
                run.pruned_patterns += 1;
            } else if decay_factor(p.last_seen, now, half_life) < 0.5 {
                run.decayed += 1;
            }
        }
        for h in heuristics.values_mut().filter(|h| h.status.is_active()) {
            let confidence = h.confidence(now, half_life);
            let uses = h.support + h.against + h.votes_up + h.votes_down;
            let used = decayed_use(uses, h.last_seen, now, half_life);
            let target = FeedbackTarget::Heuristic(h.id.clone());
            if confidence < floor
                && used < use_floor
                && !recently_restored(&restores, &target, now, cfg.restore_grace_days)
            {
                let reason = format!(
                    "confidence {confidence:.3} below floor {floor} and decayed use {used:.2} below {use_floor}; last evidence {}",
                    h.last_seen.to_rfc3339()
                );
                changes.push(change("heuristic", &h.id.0, "pruned", reason.clone()));
                h.status = LearnedStatus::Pruned { reason, at: now };
                run.pruned_heuristics += 1;
            } else if decay_factor(h.last_seen, now, half_life) < 0.5 {
                run.decayed += 1;
            }
        }

        // 6. Write what changed, in one atomic upsert.
        let items = LearnedItems {
            patterns: loaded_patterns
                .iter()
                .filter_map(|old| patterns.get(&old.id).filter(|new| *new != old).cloned())
                .collect(),
            heuristics: loaded_heuristics
                .iter()
                .filter_map(|old| heuristics.get(&old.id).filter(|new| *new != old).cloned())
                .collect(),
            lessons: Vec::new(),
        };
        if !items.patterns.is_empty() || !items.heuristics.is_empty() {
            self.storage.put_learned(ns, &items).await?;
        }

        // 7. Retention.
        if let Some(days) = self.config.retention.compact_step_outputs_after_days {
            let before = now - chrono::Duration::days(i64::from(days));
            let done = self
                .storage
                .compact_step_outputs(ns, before, self.config.retention.max_episodes_per_run)
                .await?;
            run.compacted_episodes = done.episode_ids.len() as u64;
            run.compacted_steps = done.steps;
            run.compacted_bytes = done.bytes;
        }

        // 8. Metrics snapshot.
        let snapshot = self.snapshot(ns, now, &patterns, &heuristics).await?;
        self.storage.put_metrics_snapshot(ns, &snapshot).await?;

        // 9. The run record.
        run.finished_at = self.clock.now();
        self.storage.record_consolidation(ns, &run).await?;
        info!(
            namespace = %ns,
            merged = run.merged_patterns + run.merged_heuristics,
            pruned = run.pruned_patterns + run.pruned_heuristics,
            decayed = run.decayed,
            compacted_steps = run.compacted_steps,
            "consolidation run"
        );
        Ok(ConsolidationReport {
            namespace: ns.clone(),
            run,
            changes,
            snapshot,
        })
    }

    async fn snapshot(
        &self,
        ns: &Namespace,
        now: DateTime<Utc>,
        patterns: &BTreeMap<PatternId, Pattern>,
        heuristics: &BTreeMap<HeuristicId, Heuristic>,
    ) -> Result<MetricsSnapshot> {
        let cfg = &self.config.consolidation;
        let stats = self.storage.namespace_stats(ns).await?;
        let window = self
            .storage
            .query_episodes(
                ns,
                &EpisodeQuery {
                    filter: EpisodeFilter {
                        status: Some(EpisodeStatus::AnyCompleted),
                        ..EpisodeFilter::default()
                    },
                    limit: cfg.metrics_window,
                    offset: 0,
                },
            )
            .await?;
        let n = window.len() as f64;
        let successes = window
            .iter()
            .filter(|e| e.outcome == Some(crate::OutcomeKind::Success))
            .count() as f64;
        let rewards: Vec<f64> = window.iter().filter_map(|e| e.reward).collect();
        let mut lessons = Vec::new();
        let max = cfg.max_items;
        while (lessons.len() as u32) < max {
            let q = LearnedQuery {
                include_inactive: true,
                limit: PAGE.min(max - lessons.len() as u32),
                offset: lessons.len() as u32,
                ..LearnedQuery::default()
            };
            let page = self.storage.query_lessons(ns, &q).await?;
            let done = (page.len() as u32) < q.limit;
            lessons.extend(page);
            if done {
                break;
            }
        }
        let repeat_rate = |counts: &mut dyn Iterator<Item = u64>| {
            let (mut repeats, mut total) = (0u64, 0u64);
            for c in counts {
                repeats += c.saturating_sub(1);
                total += c;
            }
            (total > 0).then(|| repeats as f64 / total as f64)
        };
        let estimates = self
            .storage
            .query_estimates(ns, None, cfg.metrics_window)
            .await?;
        let (estimate_error, estimates_compared) = estimate_error(&estimates);
        let count = |pruned: bool, statuses: &mut dyn Iterator<Item = &LearnedStatus>| {
            statuses
                .filter(|s| {
                    if pruned {
                        matches!(s, LearnedStatus::Pruned { .. })
                    } else {
                        s.is_active()
                    }
                })
                .count() as u64
        };
        Ok(MetricsSnapshot {
            taken_at: now,
            episodes: stats.episodes,
            completed: stats.completed,
            window: window.len() as u64,
            success_rate: (n > 0.0).then(|| successes / n),
            mean_reward: (!rewards.is_empty())
                .then(|| rewards.iter().sum::<f64>() / rewards.len() as f64),
            patterns_active: count(false, &mut patterns.values().map(|p| &p.status)),
            patterns_pruned: count(true, &mut patterns.values().map(|p| &p.status)),
            heuristics_active: count(false, &mut heuristics.values().map(|h| &h.status)),
            heuristics_pruned: count(true, &mut heuristics.values().map(|h| &h.status)),
            pattern_reuse_rate: repeat_rate(
                &mut patterns
                    .values()
                    .filter(|p| matches!(p.kind, PatternKind::ToolSequence { .. }))
                    .map(|p| p.occurrences),
            ),
            repeated_failure_rate: repeat_rate(&mut lessons.iter().map(|l| l.occurrences)),
            estimate_error,
            estimates_compared,
        })
    }

    /// At completion: fills in the actuals of the episode's estimate record, if it has one.
    /// The completion is already stored, so a failure here is logged, not returned.
    pub(super) async fn close_estimate(
        &self,
        ns: &Namespace,
        episode: &Episode,
        outcome: &Outcome,
    ) {
        let record = match self.storage.get_estimate(ns, episode.id).await {
            Ok(Some(r)) if r.actual.is_none() => r,
            Ok(_) => return,
            Err(e) => {
                warn!(error = %e, episode_id = %episode.id, "estimate record unavailable; not calibrated");
                return;
            }
        };
        let completed_at = episode.completed_at.unwrap_or_else(|| self.clock.now());
        let record = EstimateRecord {
            actual: Some(EstimateActual {
                steps: episode.steps.len() as u32,
                duration_ms: (completed_at - episode.started_at)
                    .num_milliseconds()
                    .max(0) as f64,
                success: outcome.is_success(),
                completed_at,
            }),
            ..record
        };
        if let Err(e) = self.storage.put_estimate(ns, &record).await {
            warn!(error = %e, episode_id = %episode.id, "estimate actuals not stored");
        }
    }

    /// The estimate corrected by the domain's mean actual / estimated ratio, when the domain
    /// has enough estimate records; the raw estimate otherwise (also when they cannot be read).
    pub(super) async fn calibrated(
        &self,
        ns: &Namespace,
        domain: Option<&str>,
        raw: Estimate,
    ) -> Estimate {
        let Some(domain) = domain.filter(|d| !d.is_empty()) else {
            return raw;
        };
        if raw.expected_steps.is_none() && raw.expected_duration_ms.is_none() {
            return raw;
        }
        let cfg = &self.config.consolidation;
        match self
            .storage
            .query_estimates(ns, Some(domain), cfg.calibration_window)
            .await
        {
            Ok(records) => calibrate(
                raw,
                correction_from(domain, &records),
                cfg.calibration_min_samples as usize,
            ),
            Err(e) => {
                warn!(error = %e, "estimate records unavailable; estimate not calibrated");
                raw
            }
        }
    }
}

impl SelfLearningMemory {
    /// Runs consolidation on `ns` now: forwards evidence that arrived under merged ids,
    /// revives pruned items with new evidence, merges near-duplicate patterns and heuristics
    /// (embeddings when an embedder is loaded, word-set similarity otherwise), recomputes
    /// effectiveness from the usage events, prunes (tombstones) items whose decayed confidence
    /// and use fell below the floors, applies retention, takes a learning-metrics snapshot and
    /// records the run. A second run right after changes nothing.
    ///
    /// Runs of one memory never overlap. While the durable layer is unreachable the run fails
    /// with a transient error; nothing is journaled.
    #[instrument(skip_all, fields(namespace = %ns))]
    pub async fn consolidate(&self, ns: &Namespace) -> Result<ConsolidationReport> {
        self.ensure_running()?;
        self.inner.limiter.acquire(ns, 1)?;
        self.inner.consolidate(ns, "manual").await
    }

    /// Brings a pruned pattern or heuristic back into use and records the restore, so
    /// consolidation leaves it alone for `restore_grace_days`. `NotFound` for an unknown item,
    /// `Conflict` for one that is not pruned (merged items live on in their survivor).
    #[instrument(skip_all, fields(namespace = %ns, id = target.id()))]
    pub async fn restore(&self, ns: &Namespace, target: FeedbackTarget) -> Result<()> {
        self.ensure_running()?;
        self.inner.limiter.acquire(ns, 1)?;
        let storage = &self.inner.storage;
        let not_pruned = |kind: ObjectKind, id: &str, status: &LearnedStatus| Error::Conflict {
            kind,
            id: id.to_owned(),
            reason: format!(
                "is {}, not pruned; only pruned items can be restored",
                status.name()
            ),
        };
        let mut items = LearnedItems::default();
        match &target {
            FeedbackTarget::Pattern(id) => {
                let mut p = storage
                    .get_pattern(ns, id)
                    .await?
                    .ok_or_else(|| Error::not_found(ObjectKind::Pattern, id))?;
                if !matches!(p.status, LearnedStatus::Pruned { .. }) {
                    return Err(not_pruned(ObjectKind::Pattern, &id.0, &p.status));
                }
                p.status = LearnedStatus::Active;
                items.patterns.push(p);
            }
            FeedbackTarget::Heuristic(id) => {
                let mut h = storage
                    .get_heuristic(ns, id)
                    .await?
                    .ok_or_else(|| Error::not_found(ObjectKind::Heuristic, id))?;
                if !matches!(h.status, LearnedStatus::Pruned { .. }) {
                    return Err(not_pruned(ObjectKind::Heuristic, &id.0, &h.status));
                }
                h.status = LearnedStatus::Active;
                items.heuristics.push(h);
            }
        }
        // The record first: if it fails, nothing changed.
        storage
            .record_restore(
                ns,
                &RestoreRecord {
                    target,
                    restored_at: self.inner.clock.now(),
                },
            )
            .await?;
        storage.put_learned(ns, &items).await
    }

    /// Stores a recommendation's estimate with the episode that follows it; when the episode
    /// completes, the actual steps, duration and outcome are stored beside it, and later
    /// estimates in the episode's domain are corrected by the mean actual / estimated ratio.
    ///
    /// `NotFound` for an unknown episode, `Conflict` for a completed one, `InvalidInput` for
    /// negative or non-finite figures or a `why` longer than `limits.max_description_bytes`.
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id))]
    pub async fn record_estimate(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        estimate: &Estimate,
    ) -> Result<()> {
        self.ensure_running()?;
        let bad = |v: Option<f64>| v.is_some_and(|x| !x.is_finite() || x < 0.0);
        if bad(estimate.expected_steps) || bad(estimate.expected_duration_ms) {
            return Err(Error::invalid(
                "estimate",
                "expected steps and duration must be finite and >= 0",
            ));
        }
        if estimate
            .success_chance
            .is_some_and(|c| !(0.0..=1.0).contains(&c))
        {
            return Err(Error::invalid(
                "estimate.success_chance",
                "must be in 0 ..= 1",
            ));
        }
        let limit = self.inner.config.limits.max_description_bytes;
        if estimate.why.len() > limit {
            return Err(Error::LimitExceeded {
                field: "estimate.why",
                limit: limit as u64,
                actual: estimate.why.len() as u64,
            });
        }
        self.inner.limiter.acquire(ns, 1)?;
        let episode = self
            .inner
            .storage
            .get_episode(ns, episode_id)
            .await?
            .ok_or_else(|| Error::not_found(ObjectKind::Episode, episode_id))?;
        if episode.is_completed() {
            return Err(Error::Conflict {
                kind: ObjectKind::Episode,
                id: episode_id.to_string(),
                reason: "is already completed; record the estimate before completing it".into(),
            });
        }
        let record = EstimateRecord {
            episode_id,
            domain: episode.context.domain.clone(),
            recorded_at: self.inner.clock.now(),
            estimate: estimate.clone(),
            actual: None,
        };
        self.inner.storage.put_estimate(ns, &record).await
    }

    /// The estimate record of an episode, if one was recorded.
    pub async fn estimate_record(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
    ) -> Result<Option<EstimateRecord>> {
        self.inner.storage.get_estimate(ns, episode_id).await
    }

    /// The most recent consolidation runs, newest first.
    pub async fn consolidation_runs(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<ConsolidationRun>> {
        self.inner.storage.list_consolidations(ns, limit).await
    }

    /// The most recent learning-metrics snapshots, newest first.
    pub async fn metrics_history(
        &self,
        ns: &Namespace,
        limit: u32,
    ) -> Result<Vec<MetricsSnapshot>> {
        self.inner.storage.list_metrics_snapshots(ns, limit).await
    }
}

/// Every `interval`, consolidates every namespace in storage. Stopped by `shutdown` (and by
/// dropping the memory); a failed run is logged and retried at the next tick.
pub(super) async fn consolidation_loop(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|i| i.config.consolidation.interval) else {
        return;
    };
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let stop = async { strong.stop_consolidation.notified().await };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop => return,
        }
        if strong.shut_down.load(Ordering::Acquire) {
            return;
        }
        let namespaces = match strong.storage.list_namespaces().await {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "scheduled consolidation: namespaces unavailable");
                continue;
            }
        };
        for ns in namespaces {
            let span = info_span!("consolidation_schedule", namespace = %ns);
            if let Err(e) = strong.consolidate(&ns, "scheduled").instrument(span).await {
                warn!(error = %e, namespace = %ns, "scheduled consolidation failed; retrying next interval");
            }
        }
    }
}
