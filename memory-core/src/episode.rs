//! Episodes: a task, the steps an agent took, and how it ended.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::assessment::{Reflection, RewardScore};

mod step;

pub(crate) use step::json_len;
pub use step::{ExecutionStep, StepInput, StepResult, steps_to_append};

/// Identity of an episode: a time-ordered UUID (v7), so ids sort by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EpisodeId(pub Uuid);

impl EpisodeId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        EpisodeId(Uuid::now_v7())
    }
}

impl Default for EpisodeId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for EpisodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EpisodeId {
    type Err = crate::error::Error;
    /// Parses a UUID; the error quotes at most a short prefix of `s`
    /// ([`quote_value`](crate::quote::quote_value)).
    fn from_str(s: &str) -> crate::error::Result<Self> {
        Uuid::parse_str(s.trim()).map(EpisodeId).map_err(|e| {
            crate::Error::invalid(
                "episode_id",
                format!(
                    "{} is not an episode id (a UUID): {e}",
                    crate::quote::quote_value(s)
                ),
            )
        })
    }
}

/// What kind of work a task is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    /// Writing new code.
    CodeGeneration,
    /// Finding and fixing a defect.
    Debugging,
    /// Restructuring without changing behaviour.
    Refactoring,
    /// Writing or fixing tests.
    Testing,
    /// Investigating or reviewing.
    Analysis,
    /// Writing documentation.
    Documentation,
    /// Anything else.
    #[default]
    Other,
}

impl TaskType {
    /// Every task type, in declaration order.
    pub const ALL: [TaskType; 7] = [
        TaskType::CodeGeneration,
        TaskType::Debugging,
        TaskType::Refactoring,
        TaskType::Testing,
        TaskType::Analysis,
        TaskType::Documentation,
        TaskType::Other,
    ];

    /// The snake_case name used in JSON, SQL and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::CodeGeneration => "code_generation",
            TaskType::Debugging => "debugging",
            TaskType::Refactoring => "refactoring",
            TaskType::Testing => "testing",
            TaskType::Analysis => "analysis",
            TaskType::Documentation => "documentation",
            TaskType::Other => "other",
        }
    }
}

impl std::fmt::Display for TaskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskType {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        TaskType::ALL
            .into_iter()
            .find(|t| t.as_str() == norm)
            .ok_or_else(|| {
                crate::Error::invalid(
                    "task_type",
                    format!("unknown task type {} (expected one of code_generation, debugging, refactoring, testing, analysis, documentation, other)", crate::quote::quote_value(s)),
                )
            })
    }
}

/// How hard a task is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Complexity {
    /// A few steps.
    Simple,
    /// The common case.
    #[default]
    Moderate,
    /// Many steps, several components.
    Complex,
}

impl Complexity {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Complexity::Simple => "simple",
            Complexity::Moderate => "moderate",
            Complexity::Complex => "complex",
        }
    }

    /// Typical number of steps of a task of this complexity, used when no history exists.
    pub fn typical_steps(self) -> u32 {
        match self {
            Complexity::Simple => 5,
            Complexity::Moderate => 10,
            Complexity::Complex => 20,
        }
    }
}

impl std::fmt::Display for Complexity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Complexity {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "simple" => Ok(Complexity::Simple),
            "moderate" => Ok(Complexity::Moderate),
            "complex" => Ok(Complexity::Complex),
            _ => Err(crate::Error::invalid(
                "complexity",
                format!(
                    "unknown complexity {} (expected simple, moderate or complex)",
                    crate::quote::quote_value(s)
                ),
            )),
        }
    }
}

/// Where a task happens: the features retrieval and learning condition on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TaskContext {
    /// Problem domain, e.g. `web_api` or `databases`.
    pub domain: String,
    /// Programming language, if any.
    pub language: Option<String>,
    /// Framework, if any.
    pub framework: Option<String>,
    /// How hard the task is.
    pub complexity: Complexity,
    /// Free-form tags.
    pub tags: Vec<String>,
}

impl TaskContext {
    /// A context in `domain` with everything else at its default.
    pub fn new(domain: impl Into<String>) -> Self {
        TaskContext {
            domain: domain.into(),
            ..TaskContext::default()
        }
    }

    /// Sets the language.
    #[must_use]
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets the framework.
    #[must_use]
    pub fn with_framework(mut self, framework: impl Into<String>) -> Self {
        self.framework = Some(framework.into());
        self
    }

    /// Sets the complexity.
    #[must_use]
    pub fn with_complexity(mut self, complexity: Complexity) -> Self {
        self.complexity = complexity;
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Normalizes the context as the memory stores it: domain, language and framework trimmed
    /// and lowercase (an empty domain becomes `general`), tags trimmed, lowercase, sorted and
    /// without duplicates.
    ///
    /// ```
    /// use memory_core::TaskContext;
    /// let mut ctx = TaskContext::new(" Web_API ").with_tag("Flaky").with_tag("flaky ");
    /// ctx.normalize();
    /// assert_eq!((ctx.domain.as_str(), ctx.tags.as_slice()), ("web_api", &["flaky".to_owned()][..]));
    /// ```
    pub fn normalize(&mut self) {
        use crate::text::normalize_label;
        self.domain = normalize_label(Some(&self.domain)).unwrap_or_else(|| "general".to_owned());
        self.language = normalize_label(self.language.as_deref());
        self.framework = normalize_label(self.framework.as_deref());
        self.tags = self.tags.iter().map(|t| t.trim().to_lowercase()).collect();
        self.tags.sort();
        self.tags.dedup();
    }

    /// The tags that describe the task: every tag but the memory's own markers
    /// ([`IMPORT_TAG_PREFIX`]). Search and embedding texts are built from these.
    ///
    /// ```
    /// use memory_core::TaskContext;
    /// let ctx = TaskContext::new("web").with_tag("flaky").with_tag("import:00ff:abcd");
    /// assert_eq!(ctx.descriptive_tags().collect::<Vec<_>>(), ["flaky"]);
    /// ```
    pub fn descriptive_tags(&self) -> impl Iterator<Item = &String> {
        self.tags
            .iter()
            .filter(|t| !t.starts_with(IMPORT_TAG_PREFIX))
    }
}

/// Tags starting with this are bookkeeping, not description: `memory import` marks each
/// episode it imports with `import:<content hash>:<original id>` so a repeated import skips it.
/// They stay with the episode (and can be filtered on) but are left out of its search and
/// embedding texts.
pub const IMPORT_TAG_PREFIX: &str = "import:";

/// How an episode ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// The task was done.
    Success {
        /// A short verdict.
        verdict: String,
        /// Produced artifacts (paths, URLs, commit ids).
        #[serde(default)]
        artifacts: Vec<String>,
    },
    /// Part of the task was done.
    PartialSuccess {
        /// A short verdict.
        verdict: String,
        /// Items that were done.
        #[serde(default)]
        completed: Vec<String>,
        /// Items that were not.
        #[serde(default)]
        failed: Vec<String>,
    },
    /// The task was not done.
    Failure {
        /// Why it failed.
        reason: String,
    },
    /// The agent chose not to do it.
    Abstained {
        /// Why.
        reason: String,
    },
}

/// The kind of an outcome, for filters and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// [`Outcome::Success`].
    Success,
    /// [`Outcome::PartialSuccess`].
    PartialSuccess,
    /// [`Outcome::Failure`].
    Failure,
    /// [`Outcome::Abstained`].
    Abstained,
}

impl OutcomeKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::PartialSuccess => "partial_success",
            OutcomeKind::Failure => "failure",
            OutcomeKind::Abstained => "abstained",
        }
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OutcomeKind {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "success" => Ok(OutcomeKind::Success),
            "partial_success" | "partial" => Ok(OutcomeKind::PartialSuccess),
            "failure" => Ok(OutcomeKind::Failure),
            "abstained" => Ok(OutcomeKind::Abstained),
            _ => Err(crate::Error::invalid(
                "outcome",
                format!(
                    "unknown outcome {} (expected success, partial_success, failure or abstained)",
                    crate::quote::quote_value(s)
                ),
            )),
        }
    }
}

impl Outcome {
    /// The kind of this outcome.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Success { .. } => OutcomeKind::Success,
            Outcome::PartialSuccess { .. } => OutcomeKind::PartialSuccess,
            Outcome::Failure { .. } => OutcomeKind::Failure,
            Outcome::Abstained { .. } => OutcomeKind::Abstained,
        }
    }

    /// True when the task was (at least partly) achieved.
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success { .. })
    }

    /// The verdict or reason text.
    pub fn summary(&self) -> &str {
        match self {
            Outcome::Success { verdict, .. } | Outcome::PartialSuccess { verdict, .. } => verdict,
            Outcome::Failure { reason } | Outcome::Abstained { reason } => reason,
        }
    }

    /// A success with no artifacts.
    pub fn success(verdict: impl Into<String>) -> Self {
        Outcome::Success {
            verdict: verdict.into(),
            artifacts: Vec::new(),
        }
    }

    /// A failure.
    pub fn failure(reason: impl Into<String>) -> Self {
        Outcome::Failure {
            reason: reason.into(),
        }
    }

    /// A partial success with no item lists.
    pub fn partial(verdict: impl Into<String>) -> Self {
        Outcome::PartialSuccess {
            verdict: verdict.into(),
            completed: Vec::new(),
            failed: Vec::new(),
        }
    }
}

/// What an agent gives to start an episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEpisode {
    /// The task, in the agent's words.
    pub task_description: String,
    /// The kind of task.
    #[serde(default)]
    pub task_type: TaskType,
    /// Where it happens.
    #[serde(default)]
    pub context: TaskContext,
    /// When it started, if not now: an episode recorded elsewhere and imported keeps its
    /// time (at most 5 minutes in the future: clock skew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

impl NewEpisode {
    /// A new episode description.
    pub fn new(
        task_description: impl Into<String>,
        task_type: TaskType,
        context: TaskContext,
    ) -> Self {
        NewEpisode {
            task_description: task_description.into(),
            task_type,
            context,
            started_at: None,
        }
    }

    /// Started at `at` instead of now (an import).
    #[must_use]
    pub fn with_started_at(mut self, at: DateTime<Utc>) -> Self {
        self.started_at = Some(at);
        self
    }
}

/// A recorded episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// Its id.
    pub id: EpisodeId,
    /// The task, redacted.
    pub task_description: String,
    /// The kind of task.
    pub task_type: TaskType,
    /// Where it happened.
    pub context: TaskContext,
    /// Steps in order of `step_number`.
    pub steps: Vec<ExecutionStep>,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// Set once completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Set once completed.
    pub outcome: Option<Outcome>,
    /// Set once completed.
    pub reward: Option<RewardScore>,
    /// Set once completed.
    pub reflection: Option<Reflection>,
}

impl Episode {
    /// A fresh, empty episode.
    pub fn start(new: NewEpisode, now: DateTime<Utc>) -> Self {
        Episode {
            id: EpisodeId::new(),
            task_description: new.task_description,
            task_type: new.task_type,
            context: new.context,
            steps: Vec::new(),
            started_at: new.started_at.unwrap_or(now),
            completed_at: None,
            outcome: None,
            reward: None,
            reflection: None,
        }
    }

    /// Adds the steps of `incoming` this episode does not hold yet, numbered as every store
    /// numbers them ([`steps_to_append`]), and keeps the steps in order.
    ///
    /// ```
    /// use memory_core::{Episode, ExecutionStep, NewEpisode, StepInput, TaskContext, TaskType};
    /// let mut e = Episode::start(NewEpisode::new("t", TaskType::Testing, TaskContext::new("d")), chrono::Utc::now());
    /// let step = ExecutionStep {
    ///     step_number: 1,
    ///     key: ExecutionStep::new_key(),
    ///     timestamp: chrono::Utc::now(),
    ///     input: StepInput::ok("cargo", "test", "ok"),
    /// };
    /// e.add_steps(&[step.clone()]);
    /// e.add_steps(&[step]); // a replay: already held
    /// assert_eq!(e.steps.len(), 1);
    /// ```
    pub fn add_steps(&mut self, incoming: &[ExecutionStep]) {
        let added = steps_to_append(&self.steps, incoming);
        self.steps.extend(added);
        self.steps.sort_by_key(|s| s.step_number);
    }

    /// The tools of the steps that worked, in order, normalized, with repeats in a row
    /// collapsed: the procedure as the episode shows it (in a failed episode, the part that
    /// worked before it stopped).
    ///
    /// ```
    /// use memory_core::{Episode, NewEpisode, StepInput, TaskContext, TaskType};
    /// let mut e = Episode::start(NewEpisode::new("t", TaskType::Testing, TaskContext::new("d")), chrono::Utc::now());
    /// for (i, input) in [
    ///     StepInput::ok("cargo", "build", "ok"),
    ///     StepInput::error("pytest", "test", "no such file"),
    ///     StepInput::ok("Cargo", "build again", "ok"),
    ///     StepInput::ok("git", "commit", "ok"),
    /// ]
    /// .into_iter()
    /// .enumerate()
    /// {
    ///     e.steps.push(memory_core::ExecutionStep {
    ///         step_number: i as u32 + 1,
    ///         key: memory_core::ExecutionStep::new_key(),
    ///         timestamp: chrono::Utc::now(),
    ///         input,
    ///     });
    /// }
    /// assert_eq!(e.worked_tools(), ["cargo", "git"]);
    /// ```
    pub fn worked_tools(&self) -> Vec<String> {
        crate::text::collapse_tools(
            self.steps
                .iter()
                .filter(|s| s.result().is_success())
                .map(ExecutionStep::tool),
        )
    }

    /// True once an outcome was recorded.
    pub fn is_completed(&self) -> bool {
        self.outcome.is_some()
    }

    /// Approximate stored size in bytes, for the whole-episode limit.
    pub fn approx_size(&self) -> usize {
        self.task_description.len()
            + self.context.domain.len()
            + self.context.tags.iter().map(String::len).sum::<usize>()
            + self
                .steps
                .iter()
                .map(ExecutionStep::approx_size)
                .sum::<usize>()
            + 128
    }

    /// A summary without steps.
    pub fn summary(&self) -> EpisodeSummary {
        EpisodeSummary {
            id: self.id,
            task_description: self.task_description.clone(),
            task_type: self.task_type,
            context: self.context.clone(),
            step_count: self.steps.len() as u32,
            started_at: self.started_at,
            completed_at: self.completed_at,
            outcome: self.outcome.as_ref().map(Outcome::kind),
            reward: self.reward.as_ref().map(|r| r.total),
        }
    }
}

/// An episode without its steps, as listed by queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpisodeSummary {
    /// Its id.
    pub id: EpisodeId,
    /// The task.
    pub task_description: String,
    /// The kind of task.
    pub task_type: TaskType,
    /// Where it happened.
    pub context: TaskContext,
    /// How many steps are stored.
    pub step_count: u32,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// When it was completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// How it ended, if it did.
    pub outcome: Option<OutcomeKind>,
    /// Total reward, if completed.
    pub reward: Option<f64>,
}
