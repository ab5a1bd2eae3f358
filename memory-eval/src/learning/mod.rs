//! Learning evaluation: does the memory make an agent better over a stream of tasks?
//!
//! A simulated task [`World`] (deterministic by seed) holds task families over several
//! domains and languages, each with a hidden right tool sequence; context-dependent traps (a
//! tool that fails in some contexts until a setup tool has run); and noise (timeouts that a
//! retry fixes). Tasks come with varied wordings, so retrieval has to match paraphrases.
//!
//! A simple agent works through the same stream of tasks in four [`Arm`]s, each on its own
//! fresh store:
//!
//! - [`Arm::NoMemory`]: never asks; explores every task (it records its episodes all the same).
//! - [`Arm::EpisodesOnly`]: asks `recommend`, but the store withholds every pattern, heuristic
//!   and lesson ([`Withholding`]), so only similar episodes come back; the agent replays the
//!   tools of the most similar one that succeeded. When none of them succeeded, it starts from
//!   the steps that worked in the similar failed attempt that got furthest (every arm that
//!   asks does this). Where it has no plan left (none, ran out, or dropped at a step that did
//!   not apply), it takes the next step of the most similar success whose steps agree with
//!   what has worked so far, and explores only when none does (every arm that asks).
//! - [`Arm::FullMemory`]: follows the playbook, applies the fixes of failure lessons before a
//!   tool that is known to fail in this context ("avoid pitfalls"), and recovers from a failure
//!   with the lessons' remedies and the error-recovery patterns; replays a similar episode when
//!   there is no playbook. It gives feedback on the patterns it used.
//! - [`Arm::NoLessons`]: full memory with failure lessons withheld by the store (also from the
//!   playbook's warnings).
//!
//! Everything the world hides reaches the agent only through the memory. Per window of tasks
//! the report gives the success rate, steps per success, the repeated-failure rate (tasks that
//! hit a failure of a kind seen in an earlier task) and the pattern reuse rate (tasks whose
//! plan came from memory). No I/O here: callers pick the store and write the report.
//!
//! ```
//! use memory_eval::learning::{LearningEval, LearningEvalConfig};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let eval = LearningEval::new(LearningEvalConfig::default().with_tasks(40).with_seed(1))?;
//! let report = eval.run_in_memory().await?;
//! assert_eq!(report.arms.len(), 4);
//! # Ok::<(), memory_core::Error>(())
//! # }).unwrap();
//! ```

mod agent;
mod report;
mod withhold;
mod world;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

pub use agent::TaskRecord;
pub use report::{
    ArmReport, Comparison, DRIFT_WINDOW, DriftReport, DriftWindow, LearningReport, Totals,
    WindowStats, format_report,
};
pub use withhold::{Visible, Withholding};
pub use world::{StepOutcome, TRANSIENT, Task, World, WorldName};

use memory_core::Clock;
use memory_core::ConsolidationConfig;
use memory_core::Embedder;
use memory_core::InMemoryStorage;
use memory_core::Namespace;
use memory_core::RateLimitConfig;
use memory_core::Storage;
use memory_core::{Error, Result};
use memory_core::{MemoryConfig, SelfLearningMemory};

/// One way of running the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// No memory at all: explore every task.
    NoMemory,
    /// Similar episodes only; patterns, heuristics and lessons withheld.
    EpisodesOnly,
    /// Everything: episodes, patterns, heuristics and lessons.
    FullMemory,
    /// Everything but failure lessons.
    NoLessons,
}

impl Arm {
    /// Every arm, in report order.
    pub const ALL: [Arm; 4] = [
        Arm::NoMemory,
        Arm::EpisodesOnly,
        Arm::FullMemory,
        Arm::NoLessons,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::NoMemory => "no_memory",
            Arm::EpisodesOnly => "episodes_only",
            Arm::FullMemory => "full_memory",
            Arm::NoLessons => "no_lessons",
        }
    }

    /// Which learned items the arm's store lets through.
    pub fn visible(self) -> Visible {
        match self {
            Arm::NoMemory | Arm::EpisodesOnly => Visible {
                patterns: false,
                heuristics: false,
                lessons: false,
            },
            Arm::FullMemory => Visible::ALL,
            Arm::NoLessons => Visible {
                lessons: false,
                ..Visible::ALL
            },
        }
    }

    /// Whether the agent asks the memory before a task.
    pub fn asks(self) -> bool {
        self != Arm::NoMemory
    }

    /// Whether the agent may use learned items (the playbook) at all.
    pub(crate) fn uses_learned(self) -> bool {
        matches!(self, Arm::FullMemory | Arm::NoLessons)
    }
}

/// How the agent uses what the memory tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStyle {
    /// Follows the plan, runs the fixes of failure lessons before a tool known to fail in the
    /// context, recovers from failures with the lessons' remedies and the error-recovery
    /// patterns, repairs a plan proven for the task at one wrong step and resumes it, retries a
    /// timed-out call up to `timeout_retries` times, and gives feedback on the patterns it used.
    #[default]
    Repairing,
    /// Does what most agents do with advice: follows the plan as given, step by step; retries a
    /// transient failure (a timeout, or an error that says it is transient) once; after any
    /// other failure of a step it goes on with the next step of the plan; explores (as the
    /// repairing agent does, with the memory's similar successes and remedies) only once the
    /// plan is exhausted; never gives feedback.
    Literal,
}

impl AgentStyle {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStyle::Repairing => "repairing",
            AgentStyle::Literal => "literal",
        }
    }
}

impl std::str::FromStr for AgentStyle {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [AgentStyle::Repairing, AgentStyle::Literal]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown agent {s:?}: repairing or literal"))
    }
}

/// Settings of the learning evaluation.
///
/// # Default
/// 500 tasks, seed 42, windows of 50 tasks, a budget of 20 steps per task, 3% of tool calls
/// time out (noise), 2 retries of a timed-out call, up to 30 items per recommended list, the
/// repairing agent, no flaky tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearningEvalConfig {
    /// Tasks in the stream.
    pub tasks: usize,
    /// Seed of the world and of the agent's exploration.
    pub seed: u64,
    /// Tasks per reported window.
    pub window: usize,
    /// Tool calls allowed per task before it counts as failed.
    pub max_steps: u32,
    /// Probability that a tool call times out.
    pub noise: f64,
    /// Retries of a timed-out call.
    pub timeout_retries: u32,
    /// Items per list asked of `recommend`.
    pub recommend_limit: u32,
    /// Whether some families' procedures change half way through the stream (one step of
    /// their hidden sequence becomes another tool).
    pub drift: bool,
    /// The world the tasks are drawn from.
    pub world: WorldName,
    /// Tasks between consolidation runs of each arm's memory (as the background schedule
    /// would run them, at fixed points of the stream so the run stays deterministic); 0:
    /// never.
    pub consolidate_every: usize,
    /// How the agent uses the memory's advice.
    pub agent: AgentStyle,
    /// Probability that a call of a task's right next step fails transiently (a flaky tool:
    /// an error that says it is transient, fixed by calling it again); 0: never.
    pub flaky: f64,
}

impl Default for LearningEvalConfig {
    fn default() -> Self {
        LearningEvalConfig {
            tasks: 500,
            seed: 42,
            window: 50,
            max_steps: 20,
            noise: 0.03,
            timeout_retries: 2,
            recommend_limit: 30,
            drift: false,
            world: WorldName::Tuning,
            consolidate_every: 50,
            agent: AgentStyle::Repairing,
            flaky: 0.0,
        }
    }
}

impl LearningEvalConfig {
    /// With this many tasks.
    #[must_use]
    pub fn with_tasks(mut self, tasks: usize) -> Self {
        self.tasks = tasks;
        self
    }

    /// With this seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// With the drifting families' procedures changing half way (or not).
    #[must_use]
    pub fn with_drift(mut self, drift: bool) -> Self {
        self.drift = drift;
        self
    }

    /// Consolidating every `tasks` tasks (0: never).
    #[must_use]
    pub fn with_consolidate_every(mut self, tasks: usize) -> Self {
        self.consolidate_every = tasks;
        self
    }

    /// In this world.
    #[must_use]
    pub fn with_world(mut self, world: WorldName) -> Self {
        self.world = world;
        self
    }

    /// With this agent.
    #[must_use]
    pub fn with_agent(mut self, agent: AgentStyle) -> Self {
        self.agent = agent;
        self
    }

    /// With right steps failing transiently at this rate.
    #[must_use]
    pub fn with_flaky(mut self, flaky: f64) -> Self {
        self.flaky = flaky;
        self
    }

    /// The first task of the changed procedures (half way through the stream).
    pub fn change_at(&self) -> usize {
        self.tasks / 2
    }

    fn validate(&self) -> Result<()> {
        if self.tasks == 0 {
            return Err(Error::invalid("tasks", "must be at least 1"));
        }
        if self.window == 0 {
            return Err(Error::invalid("window", "must be at least 1"));
        }
        if self.max_steps == 0 {
            return Err(Error::invalid("max_steps", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.noise) {
            return Err(Error::invalid("noise", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.flaky) {
            return Err(Error::invalid("flaky", "must be in [0, 1)"));
        }
        Ok(())
    }
}

/// Simulated time: one minute per task, from a fixed start, so timestamps (and the recency
/// and decay they feed) are the same on every run.
#[derive(Debug)]
struct SimClock {
    millis: AtomicI64,
}

impl SimClock {
    fn new() -> Self {
        // 2026-01-01T00:00:00Z
        SimClock {
            millis: AtomicI64::new(1_767_225_600_000),
        }
    }

    fn advance_ms(&self, ms: i64) {
        self.millis.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.millis.load(Ordering::Relaxed)).unwrap_or_default()
    }
}

/// Runs the learning evaluation.
#[derive(Debug, Clone)]
pub struct LearningEval {
    config: LearningEvalConfig,
    world: World,
}

impl LearningEval {
    /// An evaluation with these settings (the world is drawn from the seed).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the settings are out of range.
    pub fn new(config: LearningEvalConfig) -> Result<Self> {
        config.validate()?;
        let mut world =
            World::new(config.world, config.seed, config.noise)?.with_flaky(config.flaky);
        if config.drift {
            world = world.with_drift(config.change_at());
        }
        Ok(LearningEval { config, world })
    }

    /// Tasks of the stream with an armed trap.
    pub fn trapped_tasks(&self) -> usize {
        (0..self.config.tasks)
            .filter(|i| self.world.task(*i).trapped())
            .count()
    }

    /// Runs one arm on `storage` (use a fresh, empty store per arm), calling `progress` with
    /// the number of tasks done after each task. `embedder` turns on semantic retrieval.
    pub async fn run_arm(
        &self,
        arm: Arm,
        storage: Arc<dyn Storage>,
        embedder: Option<Arc<dyn Embedder>>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<ArmReport> {
        let started = Instant::now();
        let clock = Arc::new(SimClock::new());
        let storage: Arc<dyn Storage> = Arc::new(Withholding::new(storage, arm.visible()));
        // No background consolidation: a run would land at a wall-clock moment of the stream,
        // and the evaluation is deterministic by seed. Runs happen at fixed tasks instead.
        let config = MemoryConfig {
            rate_limit: RateLimitConfig::disabled(),
            ..MemoryConfig::default()
        }
        .with_consolidation(ConsolidationConfig::default().with_schedule(false));
        let memory = SelfLearningMemory::with_embedder(
            storage,
            config,
            Arc::clone(&clock) as Arc<dyn Clock>,
            embedder,
        )?;
        let ns = Namespace::new(format!("eval/learning/{}", arm.as_str()))?;
        let agent = agent::Agent {
            world: &self.world,
            memory: &memory,
            ns: &ns,
            arm,
            config: &self.config,
        };
        let mut records = Vec::with_capacity(self.config.tasks);
        let mut result = Ok(());
        for i in 0..self.config.tasks {
            let task = self.world.task(i);
            // The same exploration stream per task in every arm.
            let mut rng = world::Rng::new(world::derive(self.config.seed, 9_000_000 + i as u64));
            match agent.run(&task, &mut rng).await {
                Ok(r) => records.push(r),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            clock.advance_ms(60_000);
            let every = self.config.consolidate_every;
            if every > 0
                && (i + 1) % every == 0
                && let Err(e) = memory.consolidate(&ns).await
            {
                result = Err(e);
                break;
            }
            progress(i + 1);
        }
        let shutdown = memory.shutdown().await;
        result?;
        shutdown?;
        let seconds = started.elapsed().as_secs_f64();
        let drift = report::drift_report(
            &records,
            &self.world.drifting(),
            self.config.change_at(),
            self.config.drift,
        );
        let report = report::arm_report(arm, records, self.config.window, seconds, drift);
        info!(
            arm = arm.as_str(),
            success = report.overall.success_rate,
            seconds,
            "learning eval arm done"
        );
        Ok(report)
    }

    /// Runs every arm, each on a fresh [`InMemoryStorage`], with lexical retrieval.
    pub async fn run_in_memory(&self) -> Result<LearningReport> {
        let mut arms = Vec::with_capacity(Arm::ALL.len());
        for arm in Arm::ALL {
            arms.push(
                self.run_arm(arm, Arc::new(InMemoryStorage::new()), None, &mut |_| {})
                    .await?,
            );
        }
        Ok(self.report("lexical".to_owned(), "in-memory".to_owned(), arms))
    }

    /// Assembles the report from the arms' runs.
    pub fn report(
        &self,
        retrieval: String,
        storage: String,
        arms: Vec<ArmReport>,
    ) -> LearningReport {
        LearningReport::new(
            self.config.clone(),
            retrieval,
            storage,
            self.trapped_tasks(),
            arms,
        )
    }
}
