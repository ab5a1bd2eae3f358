//! The agent policy: ask the memory, follow its playbook and avoid its pitfalls, explore
//! otherwise, record every step and the outcome, and give feedback on the patterns it used.

mod advice;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::world::{
    Attempt, NOT_APPLICABLE, NOTHING_TO_FIX, Rng, StepOutcome, TRANSIENT, Task, World,
};
use super::{AgentStyle, Arm, LearningEvalConfig};
use memory_core::Namespace;
use memory_core::PatternId;
use memory_core::Result;
use memory_core::SelfLearningMemory;
use memory_core::{EpisodeId, NewEpisode, Outcome, StepInput};
use memory_core::{FeedbackOutcome, FeedbackTarget};
use memory_core::{collapse_tools, error_class};

use advice::{Advice, Alternatives, PlanSource};

/// How one task went, as the evaluation counts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Position in the stream.
    pub index: usize,
    /// The task family (hidden from the agent).
    pub family: String,
    /// Whether a trap was armed in it (hidden from the agent).
    pub trapped: bool,
    /// Whether it succeeded.
    pub success: bool,
    /// Steps taken (every tool call, retries included).
    pub steps: u32,
    /// Steps an oracle that knows every procedure and trap would take.
    #[serde(default)]
    pub oracle_steps: u32,
    /// Failures that were not injected noise, as `tool: error class` in the task's context
    /// (`domain/language`).
    pub failures: Vec<String>,
    /// Where the plan came from: `playbook`, `episode`, `attempt` (the steps that worked in a
    /// similar failed attempt, when no similar one succeeded) or `none`.
    pub plan: String,
    /// Whether the plan was followed to the end without a wrong step.
    pub plan_held: bool,
    /// Pitfalls applied before a tool ran.
    pub pitfalls_applied: u32,
    /// Steps taken, with no plan left to follow, from a similar success that agreed with what
    /// had worked so far (instead of at random).
    #[serde(default)]
    pub alternative_steps: u32,
}

/// Runs one task with one arm's policy.
pub(crate) struct Agent<'a> {
    /// What the agent knows of the world: its tools and repair tools (not its procedures).
    pub world: &'a World,
    pub memory: &'a SelfLearningMemory,
    pub ns: &'a Namespace,
    pub arm: Arm,
    /// The evaluation's settings: step budget, items asked of `recommend`, timeout retries.
    pub config: &'a LearningEvalConfig,
}

/// State of one episode in progress.
struct Run<'t> {
    attempt: Attempt<'t>,
    episode: EpisodeId,
    steps: u32,
    failures: Vec<String>,
    succeeded: HashSet<String>,
    /// The main (not setup) tools that worked, in order, repeats in a row collapsed.
    worked: Vec<String>,
    place: String,
}

/// Where the agent is in its plan, and what it did besides following it.
struct Course<'c> {
    /// The tools of the task's type.
    candidates: &'c [String],
    plan: VecDeque<String>,
    /// Whether the plan has been followed without a wrong step so far.
    plan_held: bool,
    /// Tools that were wrong at this point of the task (cleared once a main tool works).
    tried_here: HashSet<&'c str>,
    /// Tools whose pitfalls have been looked at.
    prepared: HashSet<String>,
    pitfalls_applied: u32,
    alternative_steps: u32,
    /// Error-recovery patterns used, and whether each worked.
    recovery_feedback: Vec<(PatternId, bool)>,
    /// The rest of a proven plan, set aside while one wrong step is explored.
    resume: Option<VecDeque<String>>,
    repaired_once: bool,
    alternatives: Alternatives,
}

impl<'c> Course<'c> {
    /// At the start of a task among `candidates`, with `advice`'s plan.
    fn new(candidates: &'c [String], advice: &Advice) -> Self {
        Course {
            candidates,
            plan: advice.plan.iter().cloned().collect(),
            plan_held: advice.source.is_some(),
            tried_here: HashSet::new(),
            prepared: HashSet::new(),
            pitfalls_applied: 0,
            alternative_steps: 0,
            recovery_feedback: Vec::new(),
            resume: None,
            repaired_once: false,
            alternatives: Alternatives {
                unread: advice.successes.clone(),
                sequences: Vec::new(),
            },
        }
    }
}

impl Agent<'_> {
    /// Works on `task`; `rng` drives exploration.
    pub(crate) async fn run(&self, task: &Task, rng: &mut Rng) -> Result<TaskRecord> {
        let advice = if self.arm.asks() {
            self.consult(task).await?
        } else {
            Advice::default()
        };
        let new = NewEpisode::new(
            task.description.clone(),
            task.task_type,
            task.context.clone(),
        );
        let episode = self.memory.start_episode(self.ns, new).await?;
        let mut run = Run {
            attempt: task.attempt(self.world),
            episode,
            steps: 0,
            failures: Vec::new(),
            succeeded: HashSet::new(),
            worked: Vec::new(),
            place: format!(
                "{}/{}",
                task.context.domain,
                task.context.language.as_deref().unwrap_or("-")
            ),
        };
        let mut course = Course::new(self.world.tools(task.task_type), &advice);

        let literal = self.config.agent == AgentStyle::Literal;
        while !run.attempt.done() && run.steps < self.config.max_steps {
            let from_plan = !course.plan.is_empty();
            let tool = self.next_tool(&mut course, &run.worked, rng).await?;
            // Avoid known pitfalls: run the setup a lesson says this tool needs, once. (The
            // literal agent does only what the playbook says; its steps carry the preparations
            // the memory trusts.)
            if !literal {
                self.avoid_pitfalls(&mut run, &mut course, &advice, &tool)
                    .await?;
            }
            if run.attempt.done() || run.steps >= self.config.max_steps {
                break;
            }
            let outcome = self.call(&mut run, &tool).await?;
            if literal && from_plan {
                // Literally: whatever happened, the next step of the plan comes next.
                self.after_literal_step(&mut course, &tool, &outcome);
                continue;
            }
            self.after_step(&mut run, &mut course, tool, outcome, &advice, rng)
                .await?;
        }
        self.finish(task, run, &advice, course, literal).await
    }

    /// The tool to call next: the plan's next step, else (the plan, if any, ran out before the
    /// task was done) a similar success's next step, else a tool not yet tried at this point,
    /// at random (any tool once all were tried).
    async fn next_tool(
        &self,
        course: &mut Course<'_>,
        worked: &[String],
        rng: &mut Rng,
    ) -> Result<String> {
        if let Some(t) = course.plan.pop_front() {
            return Ok(t);
        }
        let candidates = course.candidates;
        course.plan_held = false;
        let open: Vec<&str> = candidates
            .iter()
            .map(String::as_str)
            .filter(|t| !course.tried_here.contains(t))
            .collect();
        Ok(
            if let Some(t) = self
                .alternative(&mut course.alternatives, worked, &open)
                .await?
            {
                course.alternative_steps += 1;
                t
            } else if open.is_empty() {
                course.tried_here.clear();
                candidates[rng.below(candidates.len())].clone()
            } else {
                open[rng.below(open.len())].to_owned()
            },
        )
    }

    /// Before the first call of `tool` (not a setup tool): runs the setup a pitfall says it
    /// needs, unless that setup already worked in this run.
    async fn avoid_pitfalls(
        &self,
        run: &mut Run<'_>,
        course: &mut Course<'_>,
        advice: &Advice,
        tool: &str,
    ) -> Result<()> {
        if self.world.is_recovery_tool(tool) || !course.prepared.insert(tool.to_owned()) {
            return Ok(());
        }
        for fix in advice.pitfalls.iter().filter(|f| f.failed_tool == tool) {
            if let Some(prep) = fix.prep.first()
                && !run.succeeded.contains(prep)
            {
                course.pitfalls_applied += 1;
                self.call(run, prep).await?;
            }
        }
        Ok(())
    }

    /// The literal agent after a step of its plan: a wrong tool breaks the plan's hold, and
    /// nothing else changes what comes next.
    fn after_literal_step(&self, course: &mut Course<'_>, tool: &str, outcome: &StepOutcome) {
        match outcome {
            StepOutcome::Ok(_) if !self.world.is_recovery_tool(tool) => course.tried_here.clear(),
            StepOutcome::Ok(_) => {}
            StepOutcome::Error(e) if e.ends_with(NOT_APPLICABLE) => {
                if let Some(t) = course.candidates.iter().find(|t| **t == tool) {
                    course.tried_here.insert(t.as_str());
                }
                course.plan_held = false;
            }
            StepOutcome::Error(_) | StepOutcome::Timeout(_) => course.plan_held = false,
        }
    }

    /// After `tool` ran with `outcome`: go on with the plan, set it aside or drop it, retry a
    /// step that is still timing out later, or recover from a failure.
    async fn after_step(
        &self,
        run: &mut Run<'_>,
        course: &mut Course<'_>,
        tool: String,
        outcome: StepOutcome,
        advice: &Advice,
        rng: &mut Rng,
    ) -> Result<()> {
        match outcome {
            StepOutcome::Ok(_) => {
                if !self.world.is_recovery_tool(&tool) {
                    course.tried_here.clear();
                    if let Some(rest) = course.resume.take() {
                        course.plan = rest;
                    }
                }
            }
            StepOutcome::Error(e) if e.ends_with(NOT_APPLICABLE) => {
                if let Some(t) = course.candidates.iter().find(|t| **t == tool) {
                    course.tried_here.insert(t.as_str());
                }
                if !course.plan.is_empty() || course.plan_held {
                    // The plan was wrong here. A proven plan is wrong at one step the
                    // first time: explore for this step, then go on with the rest of it.
                    // Otherwise (or at its second wrong step) explore from this point.
                    if advice.proven && !course.repaired_once {
                        course.repaired_once = true;
                        course.resume = Some(std::mem::take(&mut course.plan));
                    } else {
                        course.plan.clear();
                        course.resume = None;
                    }
                    course.plan_held = false;
                }
            }
            StepOutcome::Error(e) if e.ends_with(NOTHING_TO_FIX) => {}
            StepOutcome::Timeout(_) => {
                // Still timing out after the retries: try it again later in the plan.
                if course.plan_held {
                    course.plan.push_front(tool);
                }
            }
            StepOutcome::Error(e) if e.ends_with(TRANSIENT) => {
                // Still failing after the retries, for a passing reason: as a timeout.
                if course.plan_held {
                    course.plan.push_front(tool);
                }
            }
            StepOutcome::Error(e) => {
                let used = self.recover(run, &tool, &e, advice, rng).await?;
                if let Some(p) = used {
                    course.recovery_feedback.push(p);
                }
            }
        }
        Ok(())
    }

    /// Completes the episode, rates the playbook followed and the recoveries used (the literal
    /// agent rates nothing), and counts how the task went.
    async fn finish(
        &self,
        task: &Task,
        run: Run<'_>,
        advice: &Advice,
        mut course: Course<'_>,
        literal: bool,
    ) -> Result<TaskRecord> {
        let success = run.attempt.done();
        let outcome = if success {
            Outcome::success(format!("done in {} steps", run.steps))
        } else {
            Outcome::failure(format!("step budget of {} used up", self.config.max_steps))
        };
        self.memory
            .complete_episode(self.ns, run.episode, outcome)
            .await?;

        let plan_held = course.plan_held && course.plan.is_empty();
        if literal {
            // Like most agents, the literal one never says how the advice worked.
            course.recovery_feedback.clear();
        } else if let Some(PlanSource::Playbook(id)) = &advice.source {
            let verdict = if success && plan_held {
                FeedbackOutcome::Helped
            } else if !plan_held {
                FeedbackOutcome::Hindered
            } else {
                FeedbackOutcome::NoEffect
            };
            self.feedback(id, run.episode, verdict).await?;
        }
        for (id, worked) in course.recovery_feedback {
            let verdict = if worked {
                FeedbackOutcome::Helped
            } else {
                FeedbackOutcome::Hindered
            };
            self.feedback(&id, run.episode, verdict).await?;
        }
        Ok(TaskRecord {
            index: task.index,
            family: task.family.clone(),
            trapped: task.trapped(),
            success,
            steps: run.steps,
            oracle_steps: task.oracle_steps(),
            failures: run.failures,
            plan: match advice.source {
                Some(PlanSource::Playbook(_)) => "playbook",
                Some(PlanSource::Episode(_)) => "episode",
                Some(PlanSource::Attempt(_)) => "attempt",
                None => "none",
            }
            .to_owned(),
            plan_held: advice.source.is_some() && plan_held,
            pitfalls_applied: course.pitfalls_applied,
            alternative_steps: course.alternative_steps,
        })
    }

    async fn feedback(
        &self,
        id: &PatternId,
        episode: EpisodeId,
        verdict: FeedbackOutcome,
    ) -> Result<()> {
        match self
            .memory
            .record_feedback(
                self.ns,
                FeedbackTarget::Pattern(id.clone()),
                episode,
                verdict,
            )
            .await
        {
            // A pattern withheld from this arm cannot be rated; that is not an error of the run.
            Err(memory_core::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Calls a tool, retrying a transient failure (a timeout, or an error that says it is
    /// transient) a few times (the literal agent once); logs every call as a step.
    async fn call(&self, run: &mut Run<'_>, tool: &str) -> Result<StepOutcome> {
        let mut retries = 0;
        loop {
            let (outcome, noise) = run.attempt.call(tool);
            run.steps += 1;
            let action = format!("run {tool}");
            let step = match &outcome {
                StepOutcome::Ok(out) => StepInput::ok(tool, action, out.clone()),
                StepOutcome::Error(e) => StepInput::error(tool, action, e.clone()),
                StepOutcome::Timeout(e) => crate::timed_out(tool, action, e.clone()),
            };
            self.memory.log_step(self.ns, run.episode, step).await?;
            match &outcome {
                StepOutcome::Ok(_) => {
                    run.succeeded.insert(tool.to_owned());
                    if !self.world.is_recovery_tool(tool)
                        && run.worked.last().is_none_or(|t| t != tool)
                    {
                        run.worked.push(tool.to_owned());
                    }
                }
                StepOutcome::Error(e) | StepOutcome::Timeout(e) if !noise => {
                    run.failures
                        .push(format!("{} {tool}: {}", run.place, error_class(e)));
                }
                _ => {}
            }
            let transient = match &outcome {
                StepOutcome::Timeout(_) => true,
                StepOutcome::Error(e) => e.ends_with(TRANSIENT),
                StepOutcome::Ok(_) => false,
            };
            let allowed = match self.config.agent {
                AgentStyle::Repairing => self.config.timeout_retries,
                AgentStyle::Literal => 1,
            };
            if transient && retries < allowed && run.steps < self.config.max_steps {
                retries += 1;
                continue;
            }
            return Ok(outcome);
        }
    }

    /// After `tool` failed with `error`: apply a known fix, else try the setup tools one by
    /// one, retrying `tool` after each one that did something. Returns the error-recovery
    /// pattern used and whether it worked.
    async fn recover(
        &self,
        run: &mut Run<'_>,
        tool: &str,
        error: &str,
        advice: &Advice,
        rng: &mut Rng,
    ) -> Result<Option<(PatternId, bool)>> {
        let class = error_class(error);
        let mut order: Vec<(String, Option<PatternId>)> = Vec::new();
        for fix in advice
            .pitfalls
            .iter()
            .chain(&advice.recoveries)
            .filter(|f| f.failed_tool == tool && f.error_class == class)
        {
            for p in &fix.prep {
                if !order.iter().any(|(t, _)| t == p) {
                    order.push((p.clone(), fix.pattern.clone()));
                }
            }
        }
        let mut rest: Vec<&str> = self
            .world
            .recovery_tools()
            .iter()
            .map(String::as_str)
            .filter(|r| !order.iter().any(|(t, _)| t == r))
            .collect();
        while !rest.is_empty() {
            let r = rest.remove(rng.below(rest.len()));
            order.push((r.to_owned(), None));
        }
        let known = order.iter().find_map(|(_, p)| p.clone());
        for (fix, pattern) in order {
            if run.steps >= self.config.max_steps || run.attempt.done() {
                break;
            }
            if !matches!(self.call(run, &fix).await?, StepOutcome::Ok(_)) {
                continue;
            }
            if run.steps >= self.config.max_steps {
                break;
            }
            match self.call(run, tool).await? {
                StepOutcome::Ok(_) => {
                    return Ok(known.map(|k| {
                        let worked = pattern.as_ref() == Some(&k);
                        (k, worked)
                    }));
                }
                StepOutcome::Error(e) | StepOutcome::Timeout(e) if error_class(&e) == class => {}
                // Some other failure: leave it to the main loop.
                _ => break,
            }
        }
        Ok(known.map(|k| (k, false)))
    }

    /// The next step of the first similar success (most similar first) whose main tools begin
    /// with the ones that have worked in this run, when that step is one of the `open` tools
    /// (not yet tried at this point). Reads the successes the first time it is asked.
    async fn alternative(
        &self,
        alternatives: &mut Alternatives,
        worked: &[String],
        open: &[&str],
    ) -> Result<Option<String>> {
        for id in std::mem::take(&mut alternatives.unread) {
            let past = self.memory.get_episode(self.ns, id).await?;
            let main: Vec<String> = past
                .worked_tools()
                .into_iter()
                .filter(|t| !self.world.is_recovery_tool(t))
                .collect();
            let main = collapse_tools(main.iter().map(String::as_str));
            if !main.is_empty() && !alternatives.sequences.contains(&main) {
                alternatives.sequences.push(main);
            }
        }
        Ok(alternatives
            .sequences
            .iter()
            .filter(|s| s.starts_with(worked))
            .filter_map(|s| s.get(worked.len()))
            .find(|t| open.contains(&t.as_str()))
            .cloned())
    }
}
