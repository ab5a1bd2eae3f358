//! The simulated task world: task families with hidden tool sequences, context-dependent traps
//! with a known fix, and noise. Deterministic by seed.
//!
//! The agent sees a task's description, type and context, and the result of each tool call.
//! The hidden parts (the right sequence, which traps are armed, when noise strikes) stay in
//! [`Task`] and are only revealed one step result at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use memory_core::{Complexity, Error, Result, TaskContext, TaskType};
use serde::{Deserialize, Serialize};

/// A small deterministic generator (SplitMix64): the same seed gives the same world on every
/// machine, independent of any crate's version.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A seed derived from a base seed and a label (order-independent streams).
pub(crate) fn derive(seed: u64, label: u64) -> u64 {
    Rng::new(seed ^ label.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// The error text of calling a tool that does nothing at this point of the task.
pub const NOT_APPLICABLE: &str = "not applicable at this stage of the task";
/// The error text of a repair tool with nothing to repair.
pub const NOTHING_TO_FIX: &str = "nothing to fix here";
/// What the last right step says.
pub const TASK_DONE: &str = "task complete";
/// How a flaky tool's failure ends: the right step failed for a passing reason (a runner that
/// lost its connection), and calling it again may work.
pub const TRANSIENT: &str = "transient failure, a retry may work";

/// Which world the stream is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorldName {
    /// The world the memory's learning was tuned on.
    #[default]
    Tuning,
    /// Other families, tools, traps and wordings, never tuned on: only reported.
    Holdout,
}

impl WorldName {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorldName::Tuning => "tuning",
            WorldName::Holdout => "holdout",
        }
    }

    /// Every world.
    pub const ALL: [WorldName; 2] = [WorldName::Tuning, WorldName::Holdout];

    /// The world's definition, embedded in the crate (`worlds/*.json`).
    fn definition(self) -> &'static str {
        match self {
            WorldName::Tuning => include_str!("../../worlds/tuning.json"),
            WorldName::Holdout => include_str!("../../worlds/holdout.json"),
        }
    }
}

impl std::str::FromStr for WorldName {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        WorldName::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown world {s:?}: tuning or holdout"))
    }
}

/// A trap: `tool` fails in the matching contexts until `fix` has been run in the task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrapSpec {
    tool: String,
    language: String,
    /// Only with this framework (`None`: any).
    framework: Option<String>,
    /// Only with this tag (`None`: any).
    tag: Option<String>,
    /// The error, `{}` replaced by a task-specific detail (numbers, names).
    error: String,
    fix: String,
}

/// A family of tasks: one kind of work with a hidden right tool sequence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilySpec {
    name: String,
    task_type: TaskType,
    domain: String,
    /// Languages with their frameworks.
    languages: Vec<(String, Vec<String>)>,
    /// Tags a task may carry (each with probability 1/2).
    tags: Vec<String>,
    /// Wordings; `{}` is replaced by a subject.
    wordings: Vec<String>,
    subjects: Vec<String>,
}

/// What a world is made of: the tools an agent may consider per kind of task and the setup
/// and repair tools (general knowledge, the same for every arm), the traps, and the families.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorldSpec {
    tools: BTreeMap<TaskType, Vec<String>>,
    recovery_tools: Vec<String>,
    traps: Vec<TrapSpec>,
    families: Vec<FamilySpec>,
}

impl WorldSpec {
    fn parse(name: WorldName) -> Result<Self> {
        let spec: WorldSpec = serde_json::from_str(name.definition())
            .map_err(|e| Error::invalid("world", format!("{}: {e}", name.as_str())))?;
        let usable = |v: &[String]| v.iter().all(|t| !t.is_empty()) && !v.is_empty();
        let families_ok = spec.families.iter().all(|f| {
            spec.tools
                .get(&f.task_type)
                .is_some_and(|t| usable(t) && t.len() >= 4)
                && !f.languages.is_empty()
                && f.languages.iter().all(|(_, fw)| !fw.is_empty())
                && !f.wordings.is_empty()
                && !f.subjects.is_empty()
        });
        if spec.families.is_empty() || !families_ok || !usable(&spec.recovery_tools) {
            return Err(Error::invalid(
                "world",
                format!(
                    "{}: a family lacks tools, languages, wordings or subjects",
                    name.as_str()
                ),
            ));
        }
        Ok(spec)
    }
}

/// A family as the world knows it: its spec and its hidden sequence.
#[derive(Debug, Clone)]
struct Family {
    spec: FamilySpec,
    sequence: Vec<String>,
    /// The sequence after its procedure changes (for the families that drift).
    changed: Option<Vec<String>>,
}

/// Families whose procedure changes in a drifting world.
const DRIFTING_FAMILIES: usize = 3;

/// A trap armed in a task.
#[derive(Debug, Clone)]
struct ArmedTrap {
    tool: String,
    error: String,
    fix: String,
}

/// One task of the stream: what the agent sees, and the hidden rest.
#[derive(Debug, Clone)]
pub struct Task {
    /// Position in the stream (0-based).
    pub index: usize,
    /// The family's name (for reports, not shown to the agent).
    pub family: String,
    /// The task in words (one of the family's wordings).
    pub description: String,
    /// Its kind.
    pub task_type: TaskType,
    /// Its context.
    pub context: TaskContext,
    sequence: Vec<String>,
    traps: Vec<ArmedTrap>,
    noise_seed: u64,
    noise: f64,
    flaky: f64,
}

/// What a tool call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// It worked; the text is the tool's output.
    Ok(String),
    /// It failed; the text is the error.
    Error(String),
    /// It timed out (noise): retrying the same call helps.
    Timeout(String),
}

/// The hidden state of a task being worked on.
#[derive(Debug, Clone)]
pub struct Attempt<'t> {
    task: &'t Task,
    position: usize,
    fixed: Vec<&'t str>,
    calls: u64,
    recovery_tools: &'t [String],
}

impl<'t> Attempt<'t> {
    /// True once every step of the hidden sequence has been done.
    pub fn done(&self) -> bool {
        self.position >= self.task.sequence.len()
    }

    /// Calls `tool`. Returns what happened and whether the failure (if any) was injected noise.
    pub fn call(&mut self, tool: &str) -> (StepOutcome, bool) {
        self.calls += 1;
        let mut rng = Rng::new(derive(self.task.noise_seed, self.calls));
        if rng.chance(self.task.noise) {
            let secs = 30 + rng.below(90);
            let timeout = StepOutcome::Timeout(format!("{tool} timed out after {secs}s"));
            return (timeout, true);
        }
        // A flaky tool: the right step fails now and then for a passing reason.
        if self.task.flaky > 0.0 && self.is_right_step(tool) && rng.chance(self.task.flaky) {
            let code = 100 + rng.below(900);
            let error = format!("{tool}: runner connection reset (code {code}), {TRANSIENT}");
            return (StepOutcome::Error(error), true);
        }
        (self.step(tool), false)
    }

    /// Whether `tool` is the next step of the hidden sequence and no armed trap stops it.
    fn is_right_step(&self, tool: &str) -> bool {
        self.task
            .sequence
            .get(self.position)
            .is_some_and(|t| t == tool)
            && self.armed().all(|t| t.tool != tool)
    }

    /// The task's traps not fixed yet.
    fn armed(&self) -> impl Iterator<Item = &'t ArmedTrap> {
        self.task
            .traps
            .iter()
            .filter(|t| !self.fixed.contains(&t.fix.as_str()))
    }

    /// What calling `tool` does when no noise strikes.
    fn step(&mut self, tool: &str) -> StepOutcome {
        if self.recovery_tools.iter().any(|r| r == tool) {
            let Some(t) = self.armed().find(|t| t.fix == tool) else {
                return StepOutcome::Error(format!("{tool}: {NOTHING_TO_FIX}"));
            };
            self.fixed.push(&t.fix);
            return StepOutcome::Ok(format!("{tool}: applied"));
        }
        if self
            .task
            .sequence
            .get(self.position)
            .is_none_or(|t| t != tool)
        {
            return StepOutcome::Error(format!("{tool}: {NOT_APPLICABLE}"));
        }
        if let Some(trap) = self.armed().find(|t| t.tool == tool) {
            return StepOutcome::Error(trap.error.clone());
        }
        self.position += 1;
        if self.done() {
            StepOutcome::Ok(format!("{tool}: ok, {TASK_DONE}"))
        } else {
            StepOutcome::Ok(format!("{tool}: ok"))
        }
    }
}

impl Task {
    /// The hidden tool sequence (tests of the agent build past attempts from it).
    #[cfg(test)]
    pub(crate) fn sequence(&self) -> &[String] {
        &self.sequence
    }

    /// Starts working on the task, in `world` (which knows the repair tools).
    pub fn attempt<'t>(&'t self, world: &'t World) -> Attempt<'t> {
        Attempt {
            task: self,
            position: 0,
            fixed: Vec::new(),
            calls: 0,
            recovery_tools: &world.spec.recovery_tools,
        }
    }

    /// Tool calls of an agent that knows every procedure and trap, with no noise: each armed
    /// trap's fix once, then the sequence.
    pub fn oracle_steps(&self) -> u32 {
        let mut fixes: Vec<&str> = self.traps.iter().map(|t| t.fix.as_str()).collect();
        fixes.sort_unstable();
        fixes.dedup();
        (fixes.len() + self.sequence.len()) as u32
    }

    /// Whether a trap is armed (for reports).
    pub fn trapped(&self) -> bool {
        !self.traps.is_empty()
    }
}

/// The world: families with hidden sequences, drawn from a seed.
#[derive(Debug, Clone)]
pub struct World {
    seed: u64,
    noise: f64,
    flaky: f64,
    spec: WorldSpec,
    families: Vec<Family>,
    /// From this task on, the drifting families follow their changed sequence.
    drift_at: Option<usize>,
}

impl World {
    /// The world `name` drawn from `seed`, with injected timeouts at probability `noise` per
    /// call.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the embedded definition of the world does not parse.
    pub fn new(name: WorldName, seed: u64, noise: f64) -> Result<Self> {
        let spec = WorldSpec::parse(name)?;
        let mut rng = Rng::new(derive(seed, 1));
        let families = spec
            .families
            .iter()
            .map(|f| {
                let tools = spec.tools.get(&f.task_type).map_or(&[][..], Vec::as_slice);
                let len = 4 + rng.below(4);
                let mut sequence: Vec<String> = Vec::with_capacity(len);
                while sequence.len() < len {
                    let t = &tools[rng.below(tools.len())];
                    if sequence.last() != Some(t) {
                        sequence.push(t.clone());
                    }
                }
                Family {
                    spec: f.clone(),
                    sequence,
                    changed: None,
                }
            })
            .collect();
        let mut world = World {
            seed,
            noise,
            flaky: 0.0,
            spec,
            families,
            drift_at: None,
        };
        world.draw_changes();
        Ok(world)
    }

    /// Tools an agent may consider for a kind of task (general knowledge, the same for every
    /// arm); the hidden sequences are drawn from these.
    pub fn tools(&self, task_type: TaskType) -> &[String] {
        self.spec.tools.get(&task_type).map_or(&[], Vec::as_slice)
    }

    /// Setup and repair tools: what an agent tries when a tool fails for a reason other than
    /// being the wrong tool.
    pub fn recovery_tools(&self) -> &[String] {
        &self.spec.recovery_tools
    }

    /// True for a setup or repair tool.
    pub fn is_recovery_tool(&self, tool: &str) -> bool {
        self.spec.recovery_tools.iter().any(|r| r == tool)
    }

    /// Picks the drifting families and their changed sequences: one step becomes another tool
    /// of the family's kind (never the same as a neighbour). Drawn whether or not the world
    /// drifts, so a stable run reports the same families for comparison.
    fn draw_changes(&mut self) {
        let mut rng = Rng::new(derive(self.seed, 2));
        let mut picked: Vec<usize> = Vec::new();
        while picked.len() < DRIFTING_FAMILIES.min(self.families.len()) {
            let f = rng.below(self.families.len());
            if !picked.contains(&f) {
                picked.push(f);
            }
        }
        for f in picked {
            let family = &mut self.families[f];
            let tools = self.spec.tools.get(&family.spec.task_type);
            let mut seq = family.sequence.clone();
            let at = rng.below(seq.len());
            let neighbours = [at.checked_sub(1), Some(at), Some(at + 1)];
            let open: Vec<&String> = tools
                .into_iter()
                .flatten()
                .filter(|t| !neighbours.iter().flatten().any(|&i| seq.get(i) == Some(*t)))
                .collect();
            if let Some(t) = open.get(rng.below(open.len())) {
                seq[at].clone_from(t);
                family.changed = Some(seq);
            }
        }
    }

    /// The same world, where the right step of a task fails transiently (an error that says
    /// so, and that calling the tool again may fix) with probability `flaky` per call.
    #[must_use]
    pub fn with_flaky(mut self, flaky: f64) -> Self {
        self.flaky = flaky;
        self
    }

    /// The same world, where the drifting families' procedures change from task `at` (0-based)
    /// on.
    #[must_use]
    pub fn with_drift(mut self, at: usize) -> Self {
        self.drift_at = Some(at);
        self
    }

    /// The names of the families whose procedure changes when the world drifts.
    pub fn drifting(&self) -> Vec<&str> {
        let drifting = self.families.iter().filter(|f| f.changed.is_some());
        drifting.map(|f| f.spec.name.as_str()).collect()
    }

    /// Task `index` of the stream (the same for every arm).
    pub fn task(&self, index: usize) -> Task {
        let mut rng = Rng::new(derive(self.seed, 1_000 + index as u64));
        let family = &self.families[rng.below(self.families.len())];
        let spec = &family.spec;
        let sequence = match (&family.changed, self.drift_at) {
            (Some(changed), Some(at)) if index >= at => changed.clone(),
            _ => family.sequence.clone(),
        };
        let (language, frameworks) = &spec.languages[rng.below(spec.languages.len())];
        let framework = &frameworks[rng.below(frameworks.len())];
        let mut context = TaskContext::new(spec.domain.as_str())
            .with_language(language)
            .with_framework(framework)
            .with_complexity(match rng.below(3) {
                0 => Complexity::Simple,
                1 => Complexity::Moderate,
                _ => Complexity::Complex,
            });
        for tag in &spec.tags {
            if rng.chance(0.5) {
                context = context.with_tag(tag.as_str());
            }
        }
        let subject = &spec.subjects[rng.below(spec.subjects.len())];
        let wording = &spec.wordings[rng.below(spec.wordings.len())];
        let mut description = wording.replace("{}", subject);
        if rng.chance(0.3) {
            let _ = write!(description, " (ticket #{})", 100 + rng.below(9_000));
        }
        let traps = self
            .spec
            .traps
            .iter()
            .filter(|t| {
                t.language == *language
                    && t.framework.as_ref().is_none_or(|f| f == framework)
                    && t.tag.as_ref().is_none_or(|g| context.tags.contains(g))
                    && sequence.contains(&t.tool)
            })
            .map(|t| ArmedTrap {
                tool: t.tool.clone(),
                error: t.error.replace(
                    "{}",
                    &format!("{}_{}", subject.replace(' ', "_"), rng.below(1_000)),
                ),
                fix: t.fix.clone(),
            })
            .collect();
        Task {
            index,
            family: spec.name.clone(),
            description,
            task_type: spec.task_type,
            context,
            sequence,
            traps,
            noise_seed: derive(self.seed, 500_000 + index as u64),
            noise: self.noise,
            flaky: self.flaky,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_is_deterministic_by_seed() {
        let a = World::new(WorldName::Tuning, 7, 0.05).unwrap();
        let b = World::new(WorldName::Tuning, 7, 0.05).unwrap();
        for i in 0..50 {
            let (x, y) = (a.task(i), b.task(i));
            assert_eq!(x.description, y.description);
            assert_eq!(x.sequence, y.sequence);
            assert_eq!(x.traps.len(), y.traps.len());
        }
        let c = World::new(WorldName::Tuning, 8, 0.05).unwrap();
        assert!(
            (0..10).any(|i| a.task(i).description != c.task(i).description
                || a.task(i).sequence != c.task(i).sequence)
        );
    }

    #[test]
    fn following_the_hidden_sequence_and_fixing_traps_completes_the_task() {
        let world = World::new(WorldName::Tuning, 3, 0.0).unwrap();
        for i in 0..100 {
            let task = world.task(i);
            let mut attempt = task.attempt(&world);
            for trap in &task.traps {
                assert_eq!(
                    attempt.call(&trap.fix).0,
                    StepOutcome::Ok(format!("{}: applied", trap.fix))
                );
            }
            for tool in &task.sequence {
                assert!(matches!(attempt.call(tool).0, StepOutcome::Ok(_)));
            }
            assert!(attempt.done());
        }
    }

    #[test]
    fn drifting_families_change_one_step_from_the_change_on() {
        let stable = World::new(WorldName::Tuning, 5, 0.0).unwrap();
        let drifting = World::new(WorldName::Tuning, 5, 0.0)
            .unwrap()
            .with_drift(100);
        assert_eq!(stable.drifting().len(), DRIFTING_FAMILIES);
        assert_eq!(stable.drifting(), drifting.drifting());
        for i in 0..200 {
            let (a, b) = (stable.task(i), drifting.task(i));
            let differ = a
                .sequence
                .iter()
                .zip(&b.sequence)
                .filter(|(x, y)| x != y)
                .count();
            let changes = i >= 100 && drifting.drifting().contains(&a.family.as_str());
            assert_eq!(differ, usize::from(changes), "task {i} of {}", a.family);
            assert_eq!(a.description, b.description);
        }
    }

    #[test]
    fn a_flaky_world_fails_right_steps_transiently_and_a_retry_goes_on() {
        let world = World::new(WorldName::Tuning, 3, 0.0)
            .unwrap()
            .with_flaky(0.3);
        let (mut flaky, mut right) = (0_u32, 0_u32);
        for i in 0..100 {
            let task = world.task(i);
            let mut attempt = task.attempt(&world);
            for trap in &task.traps {
                let _ = attempt.call(&trap.fix);
            }
            for tool in &task.sequence {
                right += 1;
                loop {
                    match attempt.call(tool) {
                        (StepOutcome::Ok(_), false) => break,
                        (StepOutcome::Error(e), true) if e.ends_with(TRANSIENT) => flaky += 1,
                        other => panic!("task {i}, {tool}: {other:?}"),
                    }
                }
            }
            assert!(attempt.done());
            // A wrong tool is never flaky: it does not apply.
            let wrong = attempt.call(&task.sequence[0]);
            assert!(
                matches!(wrong, (StepOutcome::Error(ref e), false) if e.ends_with(NOT_APPLICABLE))
            );
        }
        let rate = f64::from(flaky) / f64::from(flaky + right);
        assert!(
            (0.2..0.4).contains(&rate),
            "{flaky} flaky of {right} right steps"
        );
    }

    #[test]
    fn both_worlds_parse_and_differ_in_families_and_tools() {
        let tuning = World::new(WorldName::Tuning, 1, 0.0).unwrap();
        let holdout = World::new(WorldName::Holdout, 1, 0.0).unwrap();
        let names = |w: &World| {
            w.families
                .iter()
                .map(|f| f.spec.name.clone())
                .collect::<Vec<_>>()
        };
        assert!(names(&tuning).iter().all(|n| !names(&holdout).contains(n)));
        let tools = |w: &World| w.spec.tools.values().flatten().cloned().collect::<Vec<_>>();
        let shared = tools(&holdout)
            .into_iter()
            .filter(|t| tools(&tuning).contains(t))
            .count();
        assert_eq!(shared, 0, "the holdout world uses its own tools");
        assert!((0..200).any(|i| holdout.task(i).trapped()));
    }

    #[test]
    fn a_wrong_tool_and_an_unfixed_trap_fail() {
        let world = World::new(WorldName::Tuning, 3, 0.0).unwrap();
        let task = (0..200)
            .map(|i| world.task(i))
            .find(|t| t.trapped() && t.sequence[0] == t.traps[0].tool)
            .or_else(|| (0..200).map(|i| world.task(i)).find(Task::trapped));
        let Some(task) = task else {
            panic!("no trapped task in 200");
        };
        let mut attempt = task.attempt(&world);
        let wrong = world
            .tools(task.task_type)
            .iter()
            .find(|t| **t != task.sequence[0])
            .map_or("nope", String::as_str);
        assert!(
            matches!(attempt.call(wrong).0, StepOutcome::Error(ref e) if e.ends_with(NOT_APPLICABLE))
        );
        let trap_tool = &task.traps[0].tool;
        for tool in &task.sequence {
            if tool == trap_tool {
                assert!(matches!(attempt.call(tool).0, StepOutcome::Error(_)));
                break;
            }
            assert!(matches!(attempt.call(tool).0, StepOutcome::Ok(_)));
        }
    }
}
