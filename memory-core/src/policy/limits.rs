//! Input limits enforced at the API boundary, before anything is stored.

use serde::{Deserialize, Serialize};

use crate::episode::{Episode, NewEpisode, Outcome, StepInput, json_len};
use crate::error::{Error, Result};

/// Size and count limits. Lengths are in bytes of UTF-8.
///
/// # Default
/// | field | default |
/// |---|---|
/// | `max_description_bytes` | 10,000 |
/// | `max_steps_per_episode` | 5,000 |
/// | `max_tool_bytes` | 256 |
/// | `max_action_bytes` | 2,000 |
/// | `max_step_output_bytes` | 65,536 (output or error message) |
/// | `max_parameters_bytes` | 65,536 (serialized JSON) |
/// | `max_artifact_bytes` | 4,096 (each artifact or outcome item) |
/// | `max_artifacts` | 100 |
/// | `max_verdict_bytes` | 10,000 (verdict or reason) |
/// | `max_episode_bytes` | 8,388,608 (8 MiB: whole episode with its steps) |
/// | `max_tags` | 32 |
/// | `max_tag_bytes` | 64 |
/// | `max_label_bytes` | 128 (domain, language, framework) |
/// | `max_results` | 100 (results of one retrieval or recommendation) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest task description.
    pub max_description_bytes: usize,
    /// Most steps in one episode.
    pub max_steps_per_episode: usize,
    /// Longest tool name.
    pub max_tool_bytes: usize,
    /// Longest step action.
    pub max_action_bytes: usize,
    /// Longest step output or error message.
    pub max_step_output_bytes: usize,
    /// Largest step parameters, serialized.
    pub max_parameters_bytes: usize,
    /// Longest artifact or outcome item.
    pub max_artifact_bytes: usize,
    /// Most artifacts (or completed + failed items).
    pub max_artifacts: usize,
    /// Longest verdict or reason.
    pub max_verdict_bytes: usize,
    /// Largest whole episode.
    pub max_episode_bytes: usize,
    /// Most tags.
    pub max_tags: usize,
    /// Longest tag.
    pub max_tag_bytes: usize,
    /// Longest domain, language or framework.
    pub max_label_bytes: usize,
    /// Most results one retrieval or recommendation may ask for.
    pub max_results: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_description_bytes: 10_000,
            max_steps_per_episode: 5_000,
            max_tool_bytes: 256,
            max_action_bytes: 2_000,
            max_step_output_bytes: 65_536,
            max_parameters_bytes: 65_536,
            max_artifact_bytes: 4_096,
            max_artifacts: 100,
            max_verdict_bytes: 10_000,
            max_episode_bytes: 8 * 1024 * 1024,
            max_tags: 32,
            max_tag_bytes: 64,
            max_label_bytes: 128,
            max_results: 100,
        }
    }
}

fn check(field: &'static str, actual: usize, limit: usize) -> Result<()> {
    if actual > limit {
        Err(Error::LimitExceeded {
            field,
            limit: limit as u64,
            actual: actual as u64,
        })
    } else {
        Ok(())
    }
}

fn non_empty(field: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        Err(Error::invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

impl Limits {
    /// Checks a new episode.
    pub fn check_new_episode(&self, e: &NewEpisode) -> Result<()> {
        non_empty("task_description", &e.task_description)?;
        check(
            "task_description",
            e.task_description.len(),
            self.max_description_bytes,
        )?;
        check(
            "context.domain",
            e.context.domain.len(),
            self.max_label_bytes,
        )?;
        check(
            "context.language",
            e.context.language.as_deref().map_or(0, str::len),
            self.max_label_bytes,
        )?;
        check(
            "context.framework",
            e.context.framework.as_deref().map_or(0, str::len),
            self.max_label_bytes,
        )?;
        check("context.tags", e.context.tags.len(), self.max_tags)?;
        for t in &e.context.tags {
            non_empty("context.tags", t)?;
            check("context.tag", t.len(), self.max_tag_bytes)?;
        }
        Ok(())
    }

    /// Checks a retrieval query: the task like a new episode's description, the context like
    /// a new episode's, and the result count.
    pub fn check_retrieval(&self, q: &crate::retrieval::RetrievalQuery) -> Result<()> {
        non_empty("task", &q.task)?;
        check("task", q.task.len(), self.max_description_bytes)?;
        if let Some(c) = &q.context {
            check("context.domain", c.domain.len(), self.max_label_bytes)?;
            check(
                "context.language",
                c.language.as_deref().map_or(0, str::len),
                self.max_label_bytes,
            )?;
            check(
                "context.framework",
                c.framework.as_deref().map_or(0, str::len),
                self.max_label_bytes,
            )?;
            check("context.tags", c.tags.len(), self.max_tags)?;
        }
        check("limit", q.limit as usize, self.max_results)
    }

    /// Checks one step.
    pub fn check_step(&self, s: &StepInput) -> Result<()> {
        non_empty("step.tool", &s.tool)?;
        check("step.tool", s.tool.len(), self.max_tool_bytes)?;
        check("step.action", s.action.len(), self.max_action_bytes)?;
        check(
            "step.output",
            s.result.text().len(),
            self.max_step_output_bytes,
        )?;
        check(
            "step.parameters",
            json_len(&s.parameters),
            self.max_parameters_bytes,
        )?;
        Ok(())
    }

    /// Checks a whole episode as replaying it through the API would (`memory import`): the
    /// task and context as [`Limits::check_new_episode`], the step count
    /// (`max_steps_per_episode`), every step as [`Limits::check_step`] and the outcome as
    /// [`Limits::check_outcome`]. The total size depends on redaction, which the API applies
    /// first: check it on the episode as stored with [`Limits::check_episode_bytes`].
    pub fn check_episode(&self, e: &Episode) -> Result<()> {
        self.check_new_episode(&NewEpisode::new(
            e.task_description.clone(),
            e.task_type,
            e.context.clone(),
        ))?;
        check(
            "steps_per_episode",
            e.steps.len(),
            self.max_steps_per_episode,
        )?;
        for step in &e.steps {
            self.check_step(&step.input)?;
        }
        e.outcome.as_ref().map_or(Ok(()), |o| self.check_outcome(o))
    }

    /// Checks an episode's total size ([`Episode::approx_size`] of the episode as stored,
    /// after redaction and normalization) against `max_episode_bytes`, as `log_step` does
    /// step by step.
    pub fn check_episode_bytes(&self, bytes: usize) -> Result<()> {
        check("episode", bytes, self.max_episode_bytes)
    }

    /// Checks an outcome.
    pub fn check_outcome(&self, o: &Outcome) -> Result<()> {
        check("outcome.verdict", o.summary().len(), self.max_verdict_bytes)?;
        let items: Vec<&String> = match o {
            Outcome::Success { artifacts, .. } => artifacts.iter().collect(),
            Outcome::PartialSuccess {
                completed, failed, ..
            } => completed.iter().chain(failed).collect(),
            Outcome::Failure { .. } | Outcome::Abstained { .. } => Vec::new(),
        };
        check("outcome.artifacts", items.len(), self.max_artifacts)?;
        for a in items {
            check("outcome.artifact", a.len(), self.max_artifact_bytes)?;
        }
        Ok(())
    }
}
