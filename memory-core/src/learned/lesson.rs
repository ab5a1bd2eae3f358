//! Failure lessons: "in context C, approach A failed because B; do D instead".

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::episode::EpisodeId;
use crate::learned::{
    ContextKey, Evidence, LearnedStatus, Marks, Pin, forget_recent, push_recent, stable_id,
};

/// Deterministic identity of a lesson: a digest of context, failing tool and error class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LessonId(pub String);

impl std::fmt::Display for LessonId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A way out of a failure, with how often it worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remedy {
    /// The tools that recovered, in order.
    pub tools: Vec<String>,
    /// How many episodes recovered this way.
    pub count: u64,
}

/// The most remedies a lesson keeps (the most frequent ones).
const MAX_REMEDIES: usize = 5;

/// A failure lesson.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureLesson {
    /// Deterministic id.
    pub id: LessonId,
    /// Where the failure happens.
    pub context: ContextKey,
    /// The tool that failed.
    pub failed_tool: String,
    /// What the agent was doing with it (latest seen).
    pub failed_action: String,
    /// The normalized error.
    pub error_class: String,
    /// A recent raw error message (redacted, truncated).
    pub example_error: String,
    /// Episodes in which it happened.
    pub occurrences: u64,
    /// Of those, how many recovered.
    pub recovered: u64,
    /// Of those, how many episodes failed in the end.
    pub episode_failures: u64,
    /// Ways out, most frequent first.
    pub remedies: Vec<Remedy>,
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
    /// The framework and tags every episode it struck in had, counted ([`Marks`]; the marks
    /// some of them lacked are dropped).
    #[serde(default, skip_serializing_if = "Marks::is_empty")]
    pub marks: Marks,
}

/// One episode's evidence for a lesson.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LessonObservation {
    /// Derived id.
    pub id: LessonId,
    /// Where.
    pub context: ContextKey,
    /// The failing tool.
    pub failed_tool: String,
    /// What the agent was doing.
    pub failed_action: String,
    /// Normalized error.
    pub error_class: String,
    /// Raw error (redacted, truncated).
    pub example_error: String,
    /// The recovery, if the episode recovered.
    pub remedy: Option<Vec<String>>,
    /// Whether the episode failed in the end.
    pub episode_failed: bool,
    /// In which episode.
    pub episode_id: EpisodeId,
    /// When.
    pub observed_at: DateTime<Utc>,
    /// The episode's [`context_marks`](crate::context_marks).
    #[serde(default)]
    pub marks: Option<Vec<String>>,
}

/// The id of the lesson for this failure.
pub fn lesson_id(context: &ContextKey, failed_tool: &str, error_class: &str) -> LessonId {
    LessonId(stable_id(&[
        "lesson",
        &context.signature(),
        failed_tool,
        error_class,
    ]))
}

impl FailureLesson {
    /// A lesson seen once.
    pub fn from_observation(obs: &LessonObservation) -> Self {
        let mut l = FailureLesson {
            id: obs.id.clone(),
            context: obs.context.clone(),
            failed_tool: obs.failed_tool.clone(),
            failed_action: obs.failed_action.clone(),
            error_class: obs.error_class.clone(),
            example_error: obs.example_error.clone(),
            occurrences: 0,
            recovered: 0,
            episode_failures: 0,
            remedies: Vec::new(),
            first_seen: obs.observed_at,
            last_seen: obs.observed_at,
            recent_evidence: Vec::new(),
            status: LearnedStatus::Active,
            pinned: None,
            marks: Marks::default(),
        };
        l.absorb(obs);
        l
    }

    /// Takes one observation back out (its episode forgotten): the counts and the remedy as if
    /// it had never been absorbed, its episode gone from the recent evidence and its marks
    /// uncounted. Where the example error or the action were that episode's words they are
    /// replaced by the error class and the tool, which hold no text of any episode.
    pub fn release(&mut self, obs: &LessonObservation) {
        self.occurrences = self.occurrences.saturating_sub(1);
        self.episode_failures = self
            .episode_failures
            .saturating_sub(u64::from(obs.episode_failed));
        if let Some(tools) = &obs.remedy {
            self.recovered = self.recovered.saturating_sub(1);
            if let Some(r) = self.remedies.iter_mut().find(|r| &r.tools == tools) {
                r.count = r.count.saturating_sub(1);
            }
            self.remedies.retain(|r| r.count > 0);
        }
        if let Some(marks) = &obs.marks {
            self.marks.release(marks);
        }
        if self.example_error == obs.example_error {
            self.example_error.clone_from(&self.error_class);
        }
        if self.failed_action == obs.failed_action {
            self.failed_action.clone_from(&self.failed_tool);
        }
        forget_recent(
            &mut self.recent_evidence,
            (&mut self.first_seen, &mut self.last_seen),
            (obs.episode_id, obs.observed_at),
            self.occurrences,
        );
    }

    /// Merges one more observation (order-independent up to the latest example text).
    pub fn absorb(&mut self, obs: &LessonObservation) {
        self.occurrences += 1;
        self.episode_failures += u64::from(obs.episode_failed);
        if obs.observed_at >= self.last_seen {
            self.failed_action.clone_from(&obs.failed_action);
            self.example_error.clone_from(&obs.example_error);
        }
        self.first_seen = self.first_seen.min(obs.observed_at);
        self.last_seen = self.last_seen.max(obs.observed_at);
        if let Some(marks) = &obs.marks {
            self.marks.observe(marks, obs.observed_at);
            // Only the shared marks of a lesson are read.
            self.marks.keep_shared();
        }
        if let Some(tools) = &obs.remedy {
            self.recovered += 1;
            match self.remedies.iter_mut().find(|r| &r.tools == tools) {
                Some(r) => r.count += 1,
                None => self.remedies.push(Remedy {
                    tools: tools.clone(),
                    count: 1,
                }),
            }
            self.remedies
                .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tools.cmp(&b.tools)));
            self.remedies.truncate(MAX_REMEDIES);
        }
        push_recent(
            &mut self.recent_evidence,
            Evidence {
                at: obs.observed_at,
                episode_id: obs.episode_id,
            },
        );
    }

    /// The most frequent remedy, if any.
    pub fn best_remedy(&self) -> Option<&Remedy> {
        self.remedies.first()
    }

    /// The lesson in words.
    ///
    /// e.g. `in debugging in web_api/rust, shell ("cargo test") failed with "error[e#]: ...";
    /// do edit_file → shell instead (recovered 3 of 4 times)`.
    pub fn text(&self) -> String {
        let head = format!(
            "in {}, {} ({}) failed with \"{}\"",
            self.context.label(),
            self.failed_tool,
            self.failed_action,
            self.error_class
        );
        match self.best_remedy() {
            Some(r) => format!(
                "{head}; do {} instead (recovered {} of {} times)",
                r.tools.join(" → "),
                self.recovered,
                self.occurrences
            ),
            None => format!(
                "{head}; no recovery seen yet ({} of {} episodes failed): avoid it or try another approach",
                self.episode_failures, self.occurrences
            ),
        }
    }
}
