//! A realistic, deterministic workload: coding-agent episodes over varied domains, languages,
//! frameworks and tags, each a plausible run of tool steps (explore, edit, build or test, with
//! failures and the recoveries that fix them) and an outcome that follows from the steps.
//!
//! The same `(seed, index)` always yields the same episode, whatever order episodes are
//! generated in, so a run can be resumed or split between workers and stays reproducible.
//!
//! What repeats, and so gives the learning pipeline real merging to do: each task type opens
//! with a characteristic plan (with small variations), each language has its own build and
//! test tools and its own handful of error messages (with varying numbers and paths, which the
//! error classes normalise away), and recoveries follow a few typical shapes. What varies:
//! task texts (verb, object, component, ticket), tags, complexity, the middle of the run, and
//! which checks fail.

use memory_core::{Complexity, NewEpisode, Outcome, StepInput, TaskContext, TaskType};
use serde_json::json;

/// `SplitMix64`: a small, fast, deterministic generator (statistical quality is not needed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        let mut r = Rng(seed);
        r.next_u64();
        r
    }

    /// The generator for item `index` of stream `seed` (independent of generation order).
    pub fn for_item(seed: u64, index: u64) -> Self {
        Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ index.rotate_left(17))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; returns 0 for `n` = 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// One item of a non-empty slice (the first for an empty one is impossible: callers pass
    /// constant, non-empty tables).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A language with its tools and the errors its checks report.
struct Language {
    name: &'static str,
    build: &'static str,
    test: &'static str,
    ext: &'static str,
    /// Error messages of failed builds and tests; `{n}` is replaced by a number.
    errors: &'static [&'static str],
}

const RUST: Language = Language {
    name: "rust",
    build: "cargo_build",
    test: "cargo_test",
    ext: "rs",
    errors: &[
        "error[E0308]: mismatched types at src/handlers.rs:{n}:9",
        "error[E0382]: borrow of moved value: `config` at src/main.rs:{n}:5",
        "error[E0277]: the trait bound `Request: Send` is not satisfied at src/lib.rs:{n}:1",
        "test tests::retries_on_timeout ... FAILED: assertion `left == right` failed, left: {n}, right: 3",
        "thread 'main' panicked at src/pool.rs:{n}:14: called `Option::unwrap()` on a `None` value",
    ],
};

const PYTHON: Language = Language {
    name: "python",
    build: "mypy",
    test: "pytest",
    ext: "py",
    errors: &[
        "AssertionError: expected 200, got 500 (tests/test_api.py:{n})",
        "TypeError: unsupported operand type(s) for +: 'int' and 'NoneType' (app/models.py:{n})",
        "KeyError: 'user_id' in app/views.py line {n}",
        "ModuleNotFoundError: No module named 'requests_mock'",
        "error: Argument 1 to \"fetch\" has incompatible type \"str\"; expected \"int\" [arg-type] at line {n}",
    ],
};

const GO: Language = Language {
    name: "go",
    build: "go_build",
    test: "go_test",
    ext: "go",
    errors: &[
        "./handler.go:{n}:12: undefined: retryPolicy",
        "--- FAIL: TestRateLimit ({n}.02s) handler_test.go:41: got 429, want 200",
        "panic: runtime error: index out of range [{n}] with length 3",
        "./store.go:{n}:2: cannot use id (variable of type string) as int value in argument",
    ],
};

const TYPESCRIPT: Language = Language {
    name: "typescript",
    build: "tsc",
    test: "jest",
    ext: "ts",
    errors: &[
        "src/api/client.ts({n},7): error TS2345: Argument of type 'string' is not assignable to parameter of type 'number'.",
        "TypeError: Cannot read properties of undefined (reading 'id') at src/store.ts:{n}",
        "expect(received).toEqual(expected) // deep equality: {n} differences",
        "src/components/Table.tsx({n},3): error TS2322: Type 'null' is not assignable to type 'Row[]'.",
    ],
};

const JAVA: Language = Language {
    name: "java",
    build: "gradle_build",
    test: "gradle_test",
    ext: "java",
    errors: &[
        "OrderServiceTest > createsOrder() FAILED java.lang.NullPointerException at OrderService.java:{n}",
        "error: cannot find symbol: method retry(int) at PaymentClient.java:{n}",
        "org.opentest4j.AssertionFailedError: expected: <{n}> but was: <0>",
    ],
};

const HCL: Language = Language {
    name: "hcl",
    build: "terraform_validate",
    test: "terraform_plan",
    ext: "tf",
    errors: &[
        "Error: Unsupported argument on main.tf line {n}: An argument named \"tags\" is not expected here.",
        "Error: Reference to undeclared resource on network.tf line {n}",
        "Error: timeout while waiting for state to become 'available' (last state: 'pending', timeout: {n}m0s)",
    ],
};

/// A language and, optionally, the framework used with it.
type Stack = (&'static Language, Option<&'static str>);

/// Domains, each with the (language, framework) pairs seen in it.
const DOMAINS: &[(&str, &[Stack])] = &[
    (
        "web_api",
        &[
            (&RUST, Some("axum")),
            (&PYTHON, Some("fastapi")),
            (&GO, Some("gin")),
            (&TYPESCRIPT, Some("express")),
        ],
    ),
    (
        "databases",
        &[
            (&RUST, Some("sqlx")),
            (&PYTHON, Some("sqlalchemy")),
            (&JAVA, Some("hibernate")),
        ],
    ),
    (
        "cli",
        &[(&RUST, Some("clap")), (&GO, Some("cobra")), (&PYTHON, None)],
    ),
    (
        "frontend",
        &[(&TYPESCRIPT, Some("react")), (&TYPESCRIPT, Some("vue"))],
    ),
    (
        "data_pipeline",
        &[
            (&PYTHON, Some("pandas")),
            (&PYTHON, Some("airflow")),
            (&JAVA, Some("spark")),
        ],
    ),
    ("infrastructure", &[(&HCL, Some("terraform")), (&GO, None)]),
    (
        "payments",
        &[(&JAVA, Some("spring")), (&GO, None), (&RUST, Some("tokio"))],
    ),
];

/// Task types with the verbs that describe them.
const TASK_KINDS: &[(TaskType, &[&str])] = &[
    (TaskType::Debugging, &["fix", "debug", "investigate"]),
    (TaskType::CodeGeneration, &["add", "implement", "support"]),
    (TaskType::Refactoring, &["refactor", "extract", "simplify"]),
    (TaskType::Testing, &["test", "cover", "stabilise"]),
    (TaskType::Analysis, &["profile", "speed up", "audit"]),
    (TaskType::Documentation, &["document", "explain"]),
];

const OBJECTS: &[&str] = &[
    "the flaky integration test",
    "rate limiting",
    "retry logic with backoff",
    "the config parser",
    "the connection pool",
    "cursor pagination",
    "error handling",
    "structured logging",
    "cache invalidation",
    "the auth middleware",
    "the schema migration",
    "the json serializer",
    "request timeouts",
    "a feature flag",
    "the health endpoint",
    "the metrics exporter",
    "input validation",
    "the csv importer",
    "webhook signatures",
    "the background job queue",
];

const COMPONENTS: &[&str] = &[
    "scheduler",
    "billing service",
    "user module",
    "search endpoint",
    "importer",
    "admin panel",
    "payment worker",
    "session store",
    "report generator",
    "notification queue",
    "order service",
    "inventory sync",
];

const TAGS: &[&str] = &[
    "ci",
    "flaky",
    "perf",
    "security",
    "regression",
    "hotfix",
    "tech-debt",
    "customer-reported",
    "oncall",
    "migration",
];

const EXPLORE: &[&str] = &["read_file", "grep", "list_dir", "read_file"];

/// One generated episode: the task to start, the steps to log, and how it ended.
#[derive(Debug, Clone)]
pub struct WorkloadEpisode {
    /// The task.
    pub task: NewEpisode,
    /// The steps, in order.
    pub steps: Vec<StepInput>,
    /// The outcome, consistent with the steps (a run whose last check fails does not succeed).
    pub outcome: Outcome,
}

/// Generates [`WorkloadEpisode`]s.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    seed: u64,
    steps: usize,
}

impl Workload {
    /// Episodes of `steps` steps (at least 4) from `seed`.
    pub fn new(seed: u64, steps: usize) -> Self {
        Workload {
            seed,
            steps: steps.max(4),
        }
    }

    /// Episode number `index`.
    pub fn episode(&self, index: u64) -> WorkloadEpisode {
        let mut rng = Rng::for_item(self.seed, index);
        let (domain, stacks) = rng.pick(DOMAINS);
        let (lang, framework) = rng.pick(stacks);
        let (task_type, verbs) = rng.pick(TASK_KINDS);
        let verb = rng.pick(verbs);
        let object = rng.pick(OBJECTS);
        let component = rng.pick(COMPONENTS);
        let complexity = match rng.below(10) {
            0..=2 => Complexity::Simple,
            3..=7 => Complexity::Moderate,
            _ => Complexity::Complex,
        };
        let mut context = TaskContext::new(domain)
            .with_language(lang.name)
            .with_complexity(complexity)
            .with_tag(component.replace(' ', "-"));
        if let Some(f) = framework {
            context = context.with_framework(f);
        }
        for _ in 0..rng.below(3) {
            context = context.with_tag(rng.pick(TAGS));
        }
        let suffix = match rng.below(4) {
            0 => format!(" (ticket OPS-{})", 100 + rng.below(9_000)),
            1 => format!(" for the {domain} team"),
            2 => ", reported by a customer".to_owned(),
            _ => String::new(),
        };
        let description = format!("{verb} {object} in the {component}{suffix}");
        let task = NewEpisode::new(description, task_type, context);

        // How hard the run is: the chance that a check fails.
        let difficulty = match complexity {
            Complexity::Simple => 0.15,
            Complexity::Moderate => 0.25,
            Complexity::Complex => 0.35,
        };
        let file = format!(
            "src/{}/{}.{}",
            component.replace(' ', "_"),
            object
                .trim_start_matches("the ")
                .trim_start_matches("a ")
                .replace(' ', "_"),
            lang.ext
        );
        let mut steps = Vec::with_capacity(self.steps + 8);
        opening(&mut rng, &mut steps, task_type, lang, &file, object);
        while steps.len() < self.steps - 1 {
            cycle(&mut rng, &mut steps, lang, &file, difficulty);
        }
        steps.truncate(self.steps - 1);
        // The final check decides the outcome.
        let passed = !rng.chance(difficulty * 0.8);
        let latency = 2_000 + rng.below(20_000) as u64;
        steps.push(if passed {
            ok(
                lang.test,
                format!("{} (final run)", lang.test),
                format!("ok: {} passed; 0 failed", 5 + rng.below(400)),
                latency,
            )
        } else {
            StepInput::error(
                lang.test,
                format!("{} (final run)", lang.test),
                error_text(&mut rng, lang),
            )
            .with_latency_ms(latency)
        });
        let outcome = if passed {
            if rng.chance(0.12) {
                Outcome::partial(format!(
                    "{object} works for the common case; edge cases left"
                ))
            } else {
                Outcome::success(format!("{verb} {object}: done, checks pass"))
            }
        } else if rng.chance(0.1) {
            Outcome::Abstained {
                reason: "handed over to a human: needs a product decision".to_owned(),
            }
        } else {
            Outcome::failure(format!(
                "{object}: checks still fail after {} steps",
                steps.len()
            ))
        };
        WorkloadEpisode {
            task,
            steps,
            outcome,
        }
    }
}

fn ok(tool: &str, action: String, output: String, latency: u64) -> StepInput {
    StepInput::ok(tool, action, output)
        .with_latency_ms(latency)
        .with_tokens(80 + latency % 400)
}

fn error_text(rng: &mut Rng, lang: &Language) -> String {
    rng.pick(lang.errors)
        .replace("{n}", &(1 + rng.below(400)).to_string())
}

/// The characteristic opening of a task type, with small variations.
fn opening(
    rng: &mut Rng,
    steps: &mut Vec<StepInput>,
    task_type: TaskType,
    lang: &Language,
    file: &str,
    object: &str,
) {
    let mut plan: Vec<&str> = match task_type {
        TaskType::Debugging => vec!["grep", "read_file", lang.test, "read_file", "edit_file"],
        TaskType::CodeGeneration => vec!["list_dir", "read_file", "edit_file", lang.build],
        TaskType::Refactoring => vec!["grep", "read_file", "edit_file", lang.build, "edit_file"],
        TaskType::Testing => vec!["read_file", "edit_file", lang.test],
        TaskType::Analysis => vec!["grep", "read_file", "shell", "read_file"],
        _ => vec!["read_file", "edit_file", "shell"],
    };
    // Agents do not always open the same way.
    if rng.chance(0.2) && plan.len() > 2 {
        let k = 1 + rng.below(plan.len() - 2);
        plan.swap(k, k + 1);
    }
    if rng.chance(0.15) {
        plan.insert(0, "list_dir");
    }
    for tool in plan {
        let step = match tool {
            "grep" => ok(
                tool,
                format!(
                    "grep -rn \"{}\" src",
                    object.split(' ').next_back().unwrap_or(object)
                ),
                format!(
                    "{} matches in {} files",
                    1 + rng.below(30),
                    1 + rng.below(6)
                ),
                20 + rng.below(60) as u64,
            ),
            "read_file" | "list_dir" => ok(
                tool,
                format!("{tool} {file}"),
                format!("{} lines", 20 + rng.below(600)),
                5 + rng.below(30) as u64,
            ),
            "edit_file" => ok(
                tool,
                format!("change {object} in {file}"),
                "edit applied: 1 file changed".to_owned(),
                30 + rng.below(200) as u64,
            )
            .with_parameters(json!({ "path": file, "line": 1 + rng.below(400) })),
            "shell" => ok(
                tool,
                "run the profiler on the hot path".to_owned(),
                format!("p95 {} ms over {} requests", 5 + rng.below(200), 1_000),
                500 + rng.below(3_000) as u64,
            ),
            t if t == lang.test => {
                // Debugging opens by reproducing the failure.
                if task_type == TaskType::Debugging {
                    StepInput::error(t, format!("{t} (reproduce)"), error_text(rng, lang))
                        .with_latency_ms(2_000 + rng.below(20_000) as u64)
                } else {
                    ok(
                        t,
                        t.to_owned(),
                        format!("{} passed; 0 failed", 10 + rng.below(300)),
                        2_000 + rng.below(20_000) as u64,
                    )
                }
            }
            t => ok(
                t,
                t.to_owned(),
                "finished with no errors".to_owned(),
                1_000 + rng.below(10_000) as u64,
            ),
        };
        steps.push(step);
    }
}

/// One work cycle: look around, edit, check; a failed check is followed by a diagnosis, a fix
/// and a re-run (the recovery), sometimes more than once.
fn cycle(rng: &mut Rng, steps: &mut Vec<StepInput>, lang: &Language, file: &str, difficulty: f64) {
    for _ in 0..rng.below(3) {
        let tool = rng.pick(EXPLORE);
        steps.push(ok(
            tool,
            format!("{tool} {file}"),
            format!("{} lines", 10 + rng.below(500)),
            5 + rng.below(40) as u64,
        ));
    }
    steps.push(
        ok(
            "edit_file",
            format!("edit {file}"),
            "edit applied: 1 file changed".to_owned(),
            30 + rng.below(300) as u64,
        )
        .with_parameters(json!({ "path": file, "line": 1 + rng.below(400) })),
    );
    let check = if rng.chance(0.4) {
        lang.build
    } else {
        lang.test
    };
    for tries in 1..=4_u32 {
        let latency = 1_000 + rng.below(25_000) as u64;
        // A tool call that times out now and then (noise, not a code problem).
        if rng.chance(0.02) {
            steps.push(
                StepInput::timeout(check, format!("{check} (timed out)")).with_latency_ms(60_000),
            );
        }
        if tries < 4 && rng.chance(difficulty / f64::from(tries)) {
            steps.push(
                StepInput::error(check, check.to_owned(), error_text(rng, lang))
                    .with_latency_ms(latency),
            );
            steps.push(ok(
                "read_file",
                format!("read_file {file} around the failure"),
                format!("{} lines", 10 + rng.below(80)),
                10,
            ));
            steps.push(
                ok(
                    "edit_file",
                    format!("fix the failure in {file}"),
                    "edit applied".to_owned(),
                    60 + rng.below(200) as u64,
                )
                .with_parameters(json!({ "path": file })),
            );
            continue;
        }
        steps.push(ok(
            check,
            check.to_owned(),
            format!("ok: {} passed; 0 failed", 5 + rng.below(400)),
            latency,
        ));
        return;
    }
}
