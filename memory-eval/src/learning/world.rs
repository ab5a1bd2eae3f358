//! The simulated task world: task families with hidden tool sequences, context-dependent traps
//! with a known fix, and noise. Deterministic by seed.
//!
//! The agent sees a task's description, type and context, and the result of each tool call.
//! The hidden parts (the right sequence, which traps are armed, when noise strikes) stay in
//! [`Task`] and are only revealed one step result at a time.

use std::fmt::Write as _;

use memory_core::{Complexity, TaskContext, TaskType};

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

/// Tools an agent may consider for a kind of task: general knowledge, the same for every arm.
/// The hidden sequences are drawn from these.
pub fn candidate_tools(task_type: TaskType) -> &'static [&'static str] {
    match task_type {
        TaskType::Debugging => &[
            "read_logs",
            "reproduce",
            "search_code",
            "add_logging",
            "edit_file",
            "run_tests",
        ],
        TaskType::Testing => &[
            "read_file",
            "write_test",
            "run_tests",
            "edit_file",
            "coverage",
            "lint",
        ],
        TaskType::Refactoring => &[
            "search_code",
            "read_file",
            "edit_file",
            "build",
            "run_tests",
            "lint",
        ],
        TaskType::Analysis => &[
            "profile",
            "read_logs",
            "query_metrics",
            "search_code",
            "benchmark",
            "write_report",
        ],
        TaskType::Documentation => &[
            "read_file",
            "search_code",
            "write_docs",
            "build_docs",
            "lint",
            "edit_file",
        ],
        TaskType::CodeGeneration | TaskType::Other => &[
            "read_file",
            "scaffold",
            "edit_file",
            "build",
            "run_tests",
            "format",
        ],
    }
}

/// Setup and repair tools: what an agent tries when a tool fails for a reason other than being
/// the wrong tool. General knowledge, the same for every arm.
pub const RECOVERY_TOOLS: [&str; 5] = [
    "install_deps",
    "clear_cache",
    "migrate_db",
    "restart_service",
    "update_config",
];

/// True for a setup or repair tool.
pub fn is_recovery_tool(tool: &str) -> bool {
    RECOVERY_TOOLS.contains(&tool)
}

/// The error text of calling a tool that does nothing at this point of the task.
pub const NOT_APPLICABLE: &str = "not applicable at this stage of the task";
/// The error text of a repair tool with nothing to repair.
pub const NOTHING_TO_FIX: &str = "nothing to fix here";
/// What the last right step says.
pub const TASK_DONE: &str = "task complete";

/// A trap: `tool` fails in the matching contexts until `fix` has been run in the task.
#[derive(Debug, Clone, Copy)]
struct TrapSpec {
    tool: &'static str,
    language: &'static str,
    /// Only with this framework (`None`: any).
    framework: Option<&'static str>,
    /// Only with this tag (`None`: any).
    tag: Option<&'static str>,
    /// The error, `{}` replaced by a task-specific detail (numbers, names).
    error: &'static str,
    fix: &'static str,
}

const TRAPS: [TrapSpec; 6] = [
    TrapSpec {
        tool: "run_tests",
        language: "python",
        framework: Some("django"),
        tag: None,
        error: "OperationalError: no such table '{}'",
        fix: "migrate_db",
    },
    TrapSpec {
        tool: "build",
        language: "rust",
        framework: None,
        tag: Some("openssl"),
        error: "linker `cc` failed: exit status 1 (cannot find -lssl for '{}')",
        fix: "install_deps",
    },
    TrapSpec {
        tool: "run_tests",
        language: "go",
        framework: None,
        tag: None,
        error: "stale object file in build cache for package '{}'",
        fix: "clear_cache",
    },
    TrapSpec {
        tool: "lint",
        language: "typescript",
        framework: None,
        tag: None,
        error: "Cannot find module 'eslint-plugin-{}'",
        fix: "install_deps",
    },
    TrapSpec {
        tool: "reproduce",
        language: "java",
        framework: None,
        tag: None,
        error: "connection refused to broker at '{}:9092'",
        fix: "restart_service",
    },
    TrapSpec {
        tool: "profile",
        language: "python",
        framework: None,
        tag: None,
        error: "PermissionError: perf_event_paranoid is 3 for '{}'",
        fix: "update_config",
    },
];

/// A family of tasks: one kind of work with a hidden right tool sequence.
#[derive(Debug, Clone, Copy)]
struct FamilySpec {
    name: &'static str,
    task_type: TaskType,
    domain: &'static str,
    /// Languages with their frameworks.
    languages: &'static [(&'static str, &'static [&'static str])],
    /// Tags a task may carry (each with probability 1/2).
    tags: &'static [&'static str],
    /// Wordings; `{}` is replaced by a subject.
    wordings: &'static [&'static str],
    subjects: &'static [&'static str],
}

const FAMILIES: [FamilySpec; 10] = [
    FamilySpec {
        name: "rate_limit",
        task_type: TaskType::CodeGeneration,
        domain: "web_api",
        languages: &[("rust", &["axum", "actix"]), ("python", &["django"])],
        tags: &["openssl", "http"],
        wordings: &[
            "add rate limiting to the {} API",
            "throttle requests hitting the {} endpoints",
            "limit how many calls per minute the {} service accepts",
            "implement a token bucket in front of {}",
            "protect the {} routes from request floods",
        ],
        subjects: &["orders", "billing", "search", "auth", "profile"],
    },
    FamilySpec {
        name: "flaky_test",
        task_type: TaskType::Testing,
        domain: "web_api",
        languages: &[("python", &["django", "flask"]), ("go", &["gin"])],
        tags: &["ci", "time"],
        wordings: &[
            "fix the flaky {} test",
            "the {} test fails intermittently in CI, make it stable",
            "stabilize the nondeterministic {} test case",
            "{} test passes locally but randomly fails on the build server",
        ],
        subjects: &["invoice", "login", "checkout", "session", "webhook"],
    },
    FamilySpec {
        name: "schema_migration",
        task_type: TaskType::CodeGeneration,
        domain: "databases",
        languages: &[("python", &["django"]), ("java", &["spring"])],
        tags: &["postgres", "zero-downtime"],
        wordings: &[
            "migrate the {} table to the new schema",
            "add a column to {} without downtime",
            "write a schema migration for the {} records",
            "change the {} table layout and backfill the data",
        ],
        subjects: &["users", "payments", "audit_log", "inventory"],
    },
    FamilySpec {
        name: "memory_leak",
        task_type: TaskType::Debugging,
        domain: "services",
        languages: &[("java", &["spring"]), ("go", &["grpc"])],
        tags: &["production", "heap"],
        wordings: &[
            "find the memory leak in the {} service",
            "{} keeps growing in RSS until it is OOM-killed",
            "heap usage of {} climbs steadily, track down why",
            "debug the out-of-memory crash in {}",
        ],
        subjects: &["gateway", "scheduler", "indexer", "notifier"],
    },
    FamilySpec {
        name: "crash_on_start",
        task_type: TaskType::Debugging,
        domain: "services",
        languages: &[("java", &["spring"]), ("rust", &["tokio"])],
        tags: &["startup", "config"],
        wordings: &[
            "the {} service crashes right after start",
            "fix the panic when {} boots",
            "{} exits with an error during initialization",
            "investigate why {} fails to come up after deploy",
        ],
        subjects: &["gateway", "scheduler", "indexer", "notifier"],
    },
    FamilySpec {
        name: "extract_module",
        task_type: TaskType::Refactoring,
        domain: "cli_tools",
        languages: &[("rust", &["clap"]), ("typescript", &["node"])],
        tags: &["openssl", "cleanup"],
        wordings: &[
            "split the {} module into smaller files",
            "extract the {} logic into its own module",
            "refactor {} so each concern lives in one place",
            "untangle the {} code without changing behaviour",
        ],
        subjects: &[
            "config parsing",
            "argument handling",
            "output formatting",
            "plugin loading",
        ],
    },
    FamilySpec {
        name: "ui_tests",
        task_type: TaskType::Testing,
        domain: "frontend",
        languages: &[("typescript", &["react", "vue"])],
        tags: &["e2e", "snapshot"],
        wordings: &[
            "add tests for the {} component",
            "cover the {} page with unit tests",
            "write missing tests around {}",
            "the {} widget has no tests, add some",
        ],
        subjects: &["date picker", "cart", "navigation bar", "signup form"],
    },
    FamilySpec {
        name: "slow_query",
        task_type: TaskType::Analysis,
        domain: "databases",
        languages: &[("python", &["sqlalchemy"]), ("go", &["pgx"])],
        tags: &["postgres", "latency"],
        wordings: &[
            "analyze why the {} query is slow",
            "the {} report takes minutes to load, find the bottleneck",
            "profile the database load caused by {}",
            "explain the latency spike of the {} lookup",
        ],
        subjects: &[
            "monthly revenue",
            "user search",
            "order history",
            "stock level",
        ],
    },
    FamilySpec {
        name: "api_docs",
        task_type: TaskType::Documentation,
        domain: "web_api",
        languages: &[("rust", &["axum"]), ("python", &["flask"])],
        tags: &["openapi", "examples"],
        wordings: &[
            "document the {} endpoints",
            "write reference docs for the {} API",
            "add usage examples to the {} API documentation",
            "the {} API has no docs, write them",
        ],
        subjects: &["orders", "billing", "search", "auth"],
    },
    FamilySpec {
        name: "cache_layer",
        task_type: TaskType::CodeGeneration,
        domain: "services",
        languages: &[("go", &["grpc"]), ("rust", &["tokio"])],
        tags: &["redis", "openssl"],
        wordings: &[
            "add a cache in front of the {} lookups",
            "memoize expensive {} calls",
            "put a read-through cache on {}",
            "reduce repeated {} fetches with caching",
        ],
        subjects: &["price", "profile", "catalog", "permission"],
    },
];

/// A family as the world knows it: its spec and its hidden sequence.
#[derive(Debug, Clone)]
struct Family {
    spec: FamilySpec,
    sequence: Vec<&'static str>,
    /// The sequence after its procedure changes (for the families that drift).
    changed: Option<Vec<&'static str>>,
}

/// Families whose procedure changes in a drifting world.
const DRIFTING_FAMILIES: usize = 3;

/// A trap armed in a task.
#[derive(Debug, Clone)]
struct ArmedTrap {
    tool: &'static str,
    error: String,
    fix: &'static str,
}

/// One task of the stream: what the agent sees, and the hidden rest.
#[derive(Debug, Clone)]
pub struct Task {
    /// Position in the stream (0-based).
    pub index: usize,
    /// The family's name (for reports, not shown to the agent).
    pub family: &'static str,
    /// The task in words (one of the family's wordings).
    pub description: String,
    /// Its kind.
    pub task_type: TaskType,
    /// Its context.
    pub context: TaskContext,
    sequence: Vec<&'static str>,
    traps: Vec<ArmedTrap>,
    noise_seed: u64,
    noise: f64,
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
    fixed: Vec<&'static str>,
    calls: u64,
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
        (self.step(tool), false)
    }

    /// The task's traps not fixed yet.
    fn armed(&self) -> impl Iterator<Item = &'t ArmedTrap> {
        self.task
            .traps
            .iter()
            .filter(|t| !self.fixed.contains(&t.fix))
    }

    /// What calling `tool` does when no noise strikes.
    fn step(&mut self, tool: &str) -> StepOutcome {
        if is_recovery_tool(tool) {
            let Some(t) = self.armed().find(|t| t.fix == tool) else {
                return StepOutcome::Error(format!("{tool}: {NOTHING_TO_FIX}"));
            };
            self.fixed.push(t.fix);
            return StepOutcome::Ok(format!("{tool}: applied"));
        }
        if self.task.sequence.get(self.position) != Some(&tool) {
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
    /// Starts working on the task.
    pub fn attempt(&self) -> Attempt<'_> {
        Attempt {
            task: self,
            position: 0,
            fixed: Vec::new(),
            calls: 0,
        }
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
    families: Vec<Family>,
    /// From this task on, the drifting families follow their changed sequence.
    drift_at: Option<usize>,
}

impl World {
    /// The world of `seed`, with injected timeouts at probability `noise` per call.
    pub fn new(seed: u64, noise: f64) -> Self {
        let mut rng = Rng::new(derive(seed, 1));
        let families = FAMILIES
            .iter()
            .map(|spec| {
                let tools = candidate_tools(spec.task_type);
                let len = 4 + rng.below(4);
                let mut sequence: Vec<&'static str> = Vec::with_capacity(len);
                while sequence.len() < len {
                    let t = tools[rng.below(tools.len())];
                    if sequence.last() != Some(&t) {
                        sequence.push(t);
                    }
                }
                Family {
                    spec: *spec,
                    sequence,
                    changed: None,
                }
            })
            .collect();
        let mut world = World {
            seed,
            noise,
            families,
            drift_at: None,
        };
        world.draw_changes();
        world
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
            let tools = candidate_tools(family.spec.task_type);
            let mut seq = family.sequence.clone();
            let at = rng.below(seq.len());
            let neighbours = [at.checked_sub(1), Some(at), Some(at + 1)];
            let open: Vec<&'static str> = tools
                .iter()
                .copied()
                .filter(|t| !neighbours.iter().flatten().any(|&i| seq.get(i) == Some(t)))
                .collect();
            if let Some(t) = open.get(rng.below(open.len())) {
                seq[at] = t;
                family.changed = Some(seq);
            }
        }
    }

    /// The same world, where the drifting families' procedures change from task `at` (0-based)
    /// on.
    #[must_use]
    pub fn with_drift(mut self, at: usize) -> Self {
        self.drift_at = Some(at);
        self
    }

    /// The names of the families whose procedure changes when the world drifts.
    pub fn drifting(&self) -> Vec<&'static str> {
        let drifting = self.families.iter().filter(|f| f.changed.is_some());
        drifting.map(|f| f.spec.name).collect()
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
        let (language, frameworks) = spec.languages[rng.below(spec.languages.len())];
        let framework = frameworks[rng.below(frameworks.len())];
        let mut context = TaskContext::new(spec.domain)
            .with_language(language)
            .with_framework(framework)
            .with_complexity(match rng.below(3) {
                0 => Complexity::Simple,
                1 => Complexity::Moderate,
                _ => Complexity::Complex,
            });
        for tag in spec.tags {
            if rng.chance(0.5) {
                context = context.with_tag(*tag);
            }
        }
        let subject = spec.subjects[rng.below(spec.subjects.len())];
        let wording = spec.wordings[rng.below(spec.wordings.len())];
        let mut description = wording.replace("{}", subject);
        if rng.chance(0.3) {
            let _ = write!(description, " (ticket #{})", 100 + rng.below(9_000));
        }
        let traps = TRAPS
            .iter()
            .filter(|t| {
                t.language == language
                    && t.framework.is_none_or(|f| f == framework)
                    && t.tag.is_none_or(|g| context.tags.iter().any(|x| x == g))
                    && sequence.contains(&t.tool)
            })
            .map(|t| ArmedTrap {
                tool: t.tool,
                error: t.error.replace(
                    "{}",
                    &format!("{}_{}", subject.replace(' ', "_"), rng.below(1_000)),
                ),
                fix: t.fix,
            })
            .collect();
        Task {
            index,
            family: spec.name,
            description,
            task_type: spec.task_type,
            context,
            sequence,
            traps,
            noise_seed: derive(self.seed, 500_000 + index as u64),
            noise: self.noise,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_is_deterministic_by_seed() {
        let a = World::new(7, 0.05);
        let b = World::new(7, 0.05);
        for i in 0..50 {
            let (x, y) = (a.task(i), b.task(i));
            assert_eq!(x.description, y.description);
            assert_eq!(x.sequence, y.sequence);
            assert_eq!(x.traps.len(), y.traps.len());
        }
        let c = World::new(8, 0.05);
        assert!(
            (0..10).any(|i| a.task(i).description != c.task(i).description
                || a.task(i).sequence != c.task(i).sequence)
        );
    }

    #[test]
    fn following_the_hidden_sequence_and_fixing_traps_completes_the_task() {
        let world = World::new(3, 0.0);
        for i in 0..100 {
            let task = world.task(i);
            let mut attempt = task.attempt();
            for trap in &task.traps {
                assert_eq!(
                    attempt.call(trap.fix).0,
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
        let stable = World::new(5, 0.0);
        let drifting = World::new(5, 0.0).with_drift(100);
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
            let changes = i >= 100 && drifting.drifting().contains(&a.family);
            assert_eq!(differ, usize::from(changes), "task {i} of {}", a.family);
            assert_eq!(a.description, b.description);
        }
    }

    #[test]
    fn a_wrong_tool_and_an_unfixed_trap_fail() {
        let world = World::new(3, 0.0);
        let task = (0..200)
            .map(|i| world.task(i))
            .find(|t| t.trapped() && t.sequence[0] == t.traps[0].tool)
            .or_else(|| (0..200).map(|i| world.task(i)).find(Task::trapped));
        let Some(task) = task else {
            panic!("no trapped task in 200");
        };
        let mut attempt = task.attempt();
        let wrong = candidate_tools(task.task_type)
            .iter()
            .find(|t| **t != task.sequence[0])
            .copied()
            .unwrap_or("nope");
        assert!(
            matches!(attempt.call(wrong).0, StepOutcome::Error(ref e) if e.ends_with(NOT_APPLICABLE))
        );
        let trap_tool = task.traps[0].tool;
        for tool in &task.sequence {
            if *tool == trap_tool {
                assert!(matches!(attempt.call(tool).0, StepOutcome::Error(_)));
                break;
            }
            assert!(matches!(attempt.call(tool).0, StepOutcome::Ok(_)));
        }
    }
}
