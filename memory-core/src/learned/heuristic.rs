//! Heuristics: condition -> action rules that aggregate evidence across episodes.
//!
//! Heuristics that share a condition but recommend different actions contradict each other.
//! [`resolve_contradictions`] keeps exactly one of them active (the one with the most evidence)
//! and marks the others superseded with a reason, so nothing disappears silently.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{
    ContextKey, Evidence, LearnedStatus, Pin, forget_recent, push_recent, stable_id,
};
use crate::statistics::{decay_factor, wilson_lower_bound};

/// Deterministic identity of a heuristic: a digest of its condition key and action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeuristicId(pub String);

impl std::fmt::Display for HeuristicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A learned rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heuristic {
    /// Deterministic id.
    pub id: HeuristicId,
    /// Digest of condition and context; heuristics with equal keys compete.
    pub condition_key: String,
    /// When the rule applies, in words.
    pub condition: String,
    /// What to do, in words.
    pub action: String,
    /// The context it holds in.
    pub context: ContextKey,
    /// Episodes where following the action went well.
    pub support: u64,
    /// Episodes where following the action went badly.
    pub against: u64,
    /// Agent feedback: helped.
    pub votes_up: u64,
    /// Agent feedback: hindered.
    pub votes_down: u64,
    /// First observation.
    pub first_seen: DateTime<Utc>,
    /// Latest observation.
    pub last_seen: DateTime<Utc>,
    /// The most recent evidence, newest first.
    pub recent_evidence: Vec<Evidence>,
    /// Whether it is in use.
    pub status: LearnedStatus,
    /// An operator's pin: shown first, labelled, never merged or pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pin>,
}

/// One episode's evidence for a heuristic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeuristicObservation {
    /// Derived id.
    pub id: HeuristicId,
    /// Derived condition key.
    pub condition_key: String,
    /// When the rule applies.
    pub condition: String,
    /// What was done.
    pub action: String,
    /// Where.
    pub context: ContextKey,
    /// In which episode.
    pub episode_id: EpisodeId,
    /// Whether doing it went well.
    pub supports: bool,
    /// When.
    pub observed_at: DateTime<Utc>,
}

impl HeuristicObservation {
    /// An observation; id and condition key are derived.
    pub fn new(
        condition: impl Into<String>,
        action: impl Into<String>,
        context: ContextKey,
        episode_id: EpisodeId,
        supports: bool,
        observed_at: DateTime<Utc>,
    ) -> Self {
        let condition = condition.into();
        let action = action.into();
        let condition_key = stable_id(&["condition", &condition, &context.signature()]);
        let id = HeuristicId(stable_id(&["heuristic", &condition_key, &action]));
        HeuristicObservation {
            id,
            condition_key,
            condition,
            action,
            context,
            episode_id,
            supports,
            observed_at,
        }
    }
}

/// The condition key and id of the general rule "`condition` -> `action`" over `context` (a
/// context with domain or language left open), which consolidation sums from the specific
/// rules that agree. Distinct from the identity an episode's own observation in that context
/// would get, so summed evidence never mixes with observed evidence.
pub fn general_identity(
    condition: &str,
    action: &str,
    context: &ContextKey,
) -> (String, HeuristicId) {
    let condition_key = stable_id(&["general condition", condition, &context.signature()]);
    let id = HeuristicId(stable_id(&["general heuristic", &condition_key, action]));
    (condition_key, id)
}

impl Heuristic {
    /// True for a general rule: one consolidation summed from the rules of several contexts
    /// (see [`general_identity`]), not observed in episodes directly.
    ///
    /// ```
    /// use memory_core::{ContextKey, EpisodeId, Heuristic, HeuristicObservation};
    /// let ctx = ContextKey { language: Some("rust".into()), ..ContextKey::default() };
    /// let obs = HeuristicObservation::new("cargo fails", "run rustup", ctx, EpisodeId::new(), true, chrono::Utc::now());
    /// assert!(!Heuristic::from_observation(&obs).is_general());
    /// ```
    pub fn is_general(&self) -> bool {
        // A general rule leaves domain or language open: a rule with both set is observed,
        // and needs no digest to tell.
        let open = self.context.domain.is_none() || self.context.language.is_none();
        open && general_identity(&self.condition, &self.action, &self.context).1 == self.id
    }

    /// A heuristic seen once.
    pub fn from_observation(obs: &HeuristicObservation) -> Self {
        let mut h = Heuristic {
            id: obs.id.clone(),
            condition_key: obs.condition_key.clone(),
            condition: obs.condition.clone(),
            action: obs.action.clone(),
            context: obs.context.clone(),
            support: 0,
            against: 0,
            votes_up: 0,
            votes_down: 0,
            first_seen: obs.observed_at,
            last_seen: obs.observed_at,
            recent_evidence: Vec::new(),
            status: LearnedStatus::Active,
            pinned: None,
        };
        h.absorb(obs);
        h
    }

    /// Merges one more observation (order-independent).
    pub fn absorb(&mut self, obs: &HeuristicObservation) {
        if obs.supports {
            self.support += 1;
        } else {
            self.against += 1;
        }
        self.first_seen = self.first_seen.min(obs.observed_at);
        self.last_seen = self.last_seen.max(obs.observed_at);
        push_recent(
            &mut self.recent_evidence,
            Evidence {
                at: obs.observed_at,
                episode_id: obs.episode_id,
            },
        );
    }

    /// Takes one observation back out (its episode forgotten): support or evidence against
    /// as if it had never been absorbed, its episode gone from the recent evidence.
    pub fn release(&mut self, obs: &HeuristicObservation) {
        if obs.supports {
            self.support = self.support.saturating_sub(1);
        } else {
            self.against = self.against.saturating_sub(1);
        }
        forget_recent(
            &mut self.recent_evidence,
            (&mut self.first_seen, &mut self.last_seen),
            (obs.episode_id, obs.observed_at),
            self.support + self.against,
        );
    }

    /// Evidence strength without decay: Wilson lower bound over observations and votes.
    pub fn evidence_score(&self) -> f64 {
        let up = self.support + self.votes_up;
        wilson_lower_bound(up, up + self.against + self.votes_down)
    }

    /// Confidence in [0, 1]: evidence strength decayed by the age of the latest evidence.
    pub fn confidence(&self, now: DateTime<Utc>, half_life_days: f64) -> f64 {
        self.evidence_score() * decay_factor(self.last_seen, now, half_life_days)
    }

    /// One line for people; a general rule says where it holds.
    pub fn describe(&self) -> String {
        let rule = format!("if {} then {}", self.condition, self.action);
        if self.is_general() {
            format!("{rule} (general rule for {})", self.context.label())
        } else {
            rule
        }
    }
}

/// The condition keys a write of `written` heuristics resolves again
/// ([`resolve_contradictions`] over each key's heuristics that are not pruned), when it
/// moved evidence or votes between them: those of observed rules, each once. General rules
/// ([`Heuristic::is_general`]) are left out: consolidation sums them by its own rules.
///
/// ```
/// use memory_core::{ContextKey, EpisodeId, Heuristic, HeuristicObservation, keys_to_resolve};
/// let obs = HeuristicObservation::new("tests fail", "rerun", ContextKey::default(),
///     EpisodeId::new(), true, chrono::Utc::now());
/// let h = Heuristic::from_observation(&obs);
/// assert_eq!(keys_to_resolve([&h, &h]).len(), 1);
/// ```
pub fn keys_to_resolve<'a>(
    written: impl IntoIterator<Item = &'a Heuristic>,
) -> std::collections::BTreeSet<String> {
    written
        .into_iter()
        .filter(|h| !h.is_general())
        .map(|h| h.condition_key.clone())
        .collect()
}

/// How two heuristics of one condition key compare as candidates (`Greater`: `x` outranks
/// `y`): evidence score, then support, then the latest evidence, then the smaller id, so
/// the order is total.
///
/// ```
/// use std::cmp::Ordering;
/// use memory_core::{ContextKey, EpisodeId, Heuristic, HeuristicObservation, rank_order};
/// let seen = |supports| {
///     let obs = HeuristicObservation::new("tests fail", "rerun", ContextKey::default(),
///         EpisodeId::new(), supports, chrono::Utc::now());
///     Heuristic::from_observation(&obs)
/// };
/// assert_eq!(rank_order(&seen(true), &seen(false)), Ordering::Greater);
/// ```
pub fn rank_order(x: &Heuristic, y: &Heuristic) -> std::cmp::Ordering {
    x.evidence_score()
        .total_cmp(&y.evidence_score())
        .then(x.support.cmp(&y.support))
        .then(x.last_seen.cmp(&y.last_seen))
        .then(y.id.cmp(&x.id))
}

/// Among heuristics sharing one condition key, makes the best-evidenced one active and sets
/// the other active ones aside (the winner before, or one just observed): each becomes
/// superseded by the winner, with the evidence counts of the moment as its reason. A heuristic
/// set aside earlier keeps its status and the heuristic it names, which may have been set
/// aside since in turn: following `by` leads to the one in use. So a change of winner
/// rewrites two heuristics instead of every loser the key ever had, and what a loser's reason
/// says of the moment it lost stays true. One that names a heuristic no longer in the running
/// (pruned, merged, or not in `group`) is set aside anew, for the winner.
///
/// Ranking: [`rank_order`] (so the result is deterministic). Returns the indices whose
/// status changed.
pub fn resolve_contradictions(group: &mut [Heuristic]) -> Vec<usize> {
    let candidates: Vec<usize> = (0..group.len())
        .filter(|&i| {
            matches!(
                group[i].status,
                LearnedStatus::Active | LearnedStatus::Superseded { .. }
            )
        })
        .collect();
    let Some(&winner) = candidates
        .iter()
        .max_by(|&&a, &&b| rank_order(&group[a], &group[b]))
    else {
        return Vec::new();
    };
    let (w_id, w_support, w_against, w_action) = {
        let w = &group[winner];
        (w.id.0.clone(), w.support, w.against, w.action.clone())
    };
    let running: std::collections::HashSet<String> =
        candidates.iter().map(|&i| group[i].id.0.clone()).collect();
    let mut changed = Vec::new();
    for i in candidates {
        let h = &mut group[i];
        let named_out = match &h.status {
            LearnedStatus::Superseded { by, .. } => !running.contains(by),
            _ => false,
        };
        if i == winner {
            if !h.status.is_active() {
                h.status = LearnedStatus::Active;
                changed.push(i);
            }
        } else if h.status.is_active() || named_out {
            h.status = LearnedStatus::Superseded {
                by: w_id.clone(),
                reason: format!(
                    "contradicts \"{w_action}\", which had more evidence when this was set aside ({w_support} supporting / {w_against} against vs {} / {})",
                    h.support, h.against
                ),
            };
            changed.push(i);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contradiction_resolved_by_evidence_and_loser_kept() {
        let ctx = ContextKey::default();
        let now = Utc::now();
        let a = HeuristicObservation::new(
            "cargo build fails",
            "run cargo clean",
            ctx.clone(),
            EpisodeId::new(),
            true,
            now,
        );
        let b = HeuristicObservation::new(
            "cargo build fails",
            "update the lockfile",
            ctx,
            EpisodeId::new(),
            true,
            now,
        );
        assert_eq!(a.condition_key, b.condition_key);
        assert_ne!(a.id, b.id);
        let mut ha = Heuristic::from_observation(&a);
        let mut hb = Heuristic::from_observation(&b);
        for _ in 0..4 {
            hb.absorb(&HeuristicObservation {
                episode_id: EpisodeId::new(),
                ..b.clone()
            });
        }
        ha.absorb(&HeuristicObservation {
            episode_id: EpisodeId::new(),
            supports: false,
            ..a.clone()
        });
        let mut group = vec![ha, hb];
        resolve_contradictions(&mut group);
        assert!(group[1].status.is_active());
        match &group[0].status {
            LearnedStatus::Superseded { by, reason } => {
                assert_eq!(by, &group[1].id.0);
                assert!(reason.contains("more evidence"), "{reason}");
            }
            other => panic!("expected superseded, got {other:?}"),
        }
        // idempotent
        assert!(resolve_contradictions(&mut group).is_empty());
    }

    #[test]
    fn a_new_winner_rewrites_the_old_one_and_leaves_earlier_losers_naming_theirs() {
        let seen = |action: &str, support: u64| {
            let obs = HeuristicObservation::new(
                "tests hang",
                action,
                ContextKey::default(),
                EpisodeId::new(),
                true,
                Utc::now(),
            );
            let mut h = Heuristic::from_observation(&obs);
            h.support = support;
            h
        };
        let mut group = vec![
            seen("retry", 1),
            seen("kill the server", 3),
            seen("reboot", 2),
        ];
        resolve_contradictions(&mut group);
        let by = |h: &Heuristic| match &h.status {
            LearnedStatus::Superseded { by, .. } => by.clone(),
            other => panic!("expected superseded, got {other:?}"),
        };
        assert!(group[1].status.is_active());
        assert_eq!(
            (by(&group[0]), by(&group[2])),
            (group[1].id.0.clone(), group[1].id.0.clone())
        );
        // "reboot" overtakes: it and the winner before change; "retry" still names the one it
        // lost to, which now names "reboot".
        group[2].support = 9;
        let changed = resolve_contradictions(&mut group);
        assert_eq!(changed, vec![1, 2]);
        assert!(group[2].status.is_active());
        assert_eq!(by(&group[1]), group[2].id.0);
        assert_eq!(by(&group[0]), group[1].id.0);
    }
}
