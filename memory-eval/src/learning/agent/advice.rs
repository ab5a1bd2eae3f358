//! What the memory tells the agent before a task ([`Advice`]): a plan and where it came
//! from, the known fixes of failures, and similar successes to fall back on.

use memory_core::retrieval::recommend::RecommendRequest;
use memory_core::{EpisodeId, OutcomeKind, PatternId, PatternKind, Result};

use super::Agent;
use crate::learning::world::{NOT_APPLICABLE, Task};

/// Where the agent's plan came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PlanSource {
    /// The memory's playbook, built from this tool-sequence pattern.
    Playbook(PatternId),
    /// The tool sequence of a similar successful episode.
    Episode(EpisodeId),
    /// The steps that worked in a similar attempt that failed (no similar one succeeded).
    Attempt(EpisodeId),
}

/// A known way out of a failure: setup tools to run before retrying the failed tool.
#[derive(Debug, Clone)]
pub(super) struct KnownFix {
    pub(super) failed_tool: String,
    pub(super) error_class: String,
    /// Setup tools, the likeliest fix first.
    pub(super) prep: Vec<String>,
    /// The error-recovery pattern it came from (for feedback), if any.
    pub(super) pattern: Option<PatternId>,
}

/// What the memory told the agent before the task.
#[derive(Debug, Clone, Default)]
pub(super) struct Advice {
    pub(super) plan: Vec<String>,
    pub(super) source: Option<PlanSource>,
    /// From failure lessons: applied before the tool runs.
    pub(super) pitfalls: Vec<KnownFix>,
    /// From error-recovery patterns: applied after the tool failed.
    pub(super) recoveries: Vec<KnownFix>,
    /// The plan is a playbook this agent has followed to success at least [`PROVEN_HELPED`]
    /// times, more often than it was hindered, and at least [`PROVEN_SHARE`] of the similar
    /// episodes' evidence taught it: when one of its steps is wrong, the agent finds the step
    /// that works there and then goes on with the rest of the plan (a procedure that changed
    /// one step keeps the rest).
    pub(super) proven: bool,
    /// Similar episodes that succeeded, most similar first, each followed by the earlier tries
    /// of the same task folded into it (which may have failed: the steps that worked in them
    /// are still steps of the task), at most [`ALTERNATIVES_READ`]: where the agent has no
    /// plan to follow, it takes the next step of the first of them that agrees with what has
    /// worked so far, before exploring at random.
    pub(super) successes: Vec<EpisodeId>,
}

/// The main-tool sequences of the similar successful episodes, read when the agent first has
/// no plan to follow.
pub(super) struct Alternatives {
    pub(super) unread: Vec<EpisodeId>,
    pub(super) sequences: Vec<Vec<String>>,
}

/// Similar successful episodes kept as alternatives to a plan that ran out or went wrong.
const ALTERNATIVES_READ: usize = 10;

/// Successful uses (feedback "helped") that make a playbook proven to the agent.
const PROVEN_HELPED: u64 = 3;

/// The share of the similar episodes' evidence that must have taught a playbook for it to be
/// proven for this task. Without it, a plan proven on one kind of task was repaired and resumed
/// on another kind sharing its context (a memory leak and a crash on start, both debugging a
/// Java service): the resumed plan failed and its mixed episodes taught wrong plans (the tuning
/// world's unchanged families fell to 94.9% after the change). Chosen on the tuning world only:
/// at 0.5 / 0.4 / 0.3 / 0.2 the changed families of its drift run succeeded 93.8 / 96.9 / 96.9 /
/// 98.5% from 30 tasks after the change, and its stable run kept 94.2% at all but 0.2 (one
/// task lost before the change).
const PROVEN_SHARE: f64 = 0.3;

impl Agent<'_> {
    /// Asks the memory, keeping only what this arm may see (the store withholds the rest).
    pub(super) async fn consult(&self, task: &Task) -> Result<Advice> {
        // Embed what is queued so retrieval sees every finished episode (a no-op when lexical).
        self.memory.embed_pending(self.ns).await?;
        let req = RecommendRequest::new(task.description.clone())
            .with_context(Some(task.task_type), task.context.clone())
            .with_limit(self.config.recommend_limit);
        let rec = self.memory.recommend(self.ns, &req).await?;
        let mut advice = Advice::default();
        if let Some(id) = rec
            .playbook_pattern
            .clone()
            .filter(|_| self.arm.uses_learned())
        {
            advice.plan = rec.playbook.iter().map(|s| s.tool.clone()).collect();
            advice.proven = rec.patterns.iter().any(|a| {
                let e = &a.item.effectiveness;
                a.item.id == id
                    && e.helped >= PROVEN_HELPED
                    && e.helped > e.hindered
                    && a.taught_share >= PROVEN_SHARE
            });
            advice.source = Some(PlanSource::Playbook(id));
        }
        if advice.source.is_none() {
            // Replay the most similar episode that succeeded.
            let best = rec
                .episodes
                .iter()
                .find(|e| e.retrieved.episode.outcome == Some(OutcomeKind::Success));
            if let Some(best) = best {
                let past = self
                    .memory
                    .get_episode(self.ns, best.retrieved.episode.id)
                    .await?;
                advice.plan = past.worked_tools();
                advice.source = Some(PlanSource::Episode(past.id));
            } else if let Some(id) = rec.playbook_attempt {
                // None of them succeeded: the memory's plan from the furthest failed attempt.
                advice.plan = rec.playbook.iter().map(|s| s.tool.clone()).collect();
                advice.source = Some(PlanSource::Attempt(id));
            }
        }
        advice.successes = rec
            .episodes
            .iter()
            .filter(|e| e.retrieved.episode.outcome == Some(OutcomeKind::Success))
            .flat_map(|e| {
                std::iter::once(e.retrieved.episode.id).chain(e.near_duplicates.iter().copied())
            })
            .take(ALTERNATIVES_READ)
            .collect();
        for p in &rec.pitfalls {
            let l = &p.item;
            if l.error_class.ends_with(NOT_APPLICABLE) {
                continue; // "wrong tool here" says nothing about setup
            }
            let prep = self.fixes(
                l.remedies.iter().map(|r| r.tools.as_slice()),
                &l.failed_tool,
            );
            if !prep.is_empty() {
                advice.pitfalls.push(KnownFix {
                    failed_tool: l.failed_tool.clone(),
                    error_class: l.error_class.clone(),
                    prep,
                    pattern: None,
                });
            }
        }
        for a in &rec.patterns {
            if let PatternKind::ErrorRecovery {
                failed_tool,
                error_class,
                recovery,
            } = &a.item.kind
            {
                let prep = self.fixes(std::iter::once(recovery.as_slice()), failed_tool);
                if !prep.is_empty() && a.item.success_rate() >= 0.5 {
                    advice.recoveries.push(KnownFix {
                        failed_tool: failed_tool.clone(),
                        error_class: error_class.clone(),
                        prep,
                        pattern: Some(a.item.id.clone()),
                    });
                }
            }
        }
        Ok(advice)
    }

    /// The setup tools that fixed a failure of `failed_tool`, from recoveries (most frequent
    /// first): the setup step right before the successful retry of the failed tool. A recovery
    /// that does not end with that retry (cut short, or a different approach) names no fix.
    fn fixes<'r>(
        &self,
        recoveries: impl Iterator<Item = &'r [String]>,
        failed_tool: &str,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for tools in recoveries {
            if let [.., fix, retry] = tools
                && retry == failed_tool
                && self.world.is_recovery_tool(fix)
                && !out.contains(fix)
            {
                out.push(fix.clone());
            }
        }
        out
    }
}
