//! The cache's own serialized shape of episodes, patterns and heuristics (format version 2).
//!
//! The domain types' serde derives are shaped for JSON: `ExecutionStep` flattens its input
//! (bincode cannot encode a map of unknown length) and `Outcome`, `StepResult`, `PatternKind`
//! and `LearnedStatus` are internally tagged (bincode cannot decode them: it is not
//! self-describing). These mirrors are plain structs and externally tagged enums that bincode
//! round-trips, and they make the on-disk layout independent of the JSON layout.
//!
//! Every conversion destructures the domain type exhaustively, so adding a field to a domain
//! type stops this crate from compiling until the mirror is updated (and
//! [`CACHE_FORMAT_VERSION`](crate::codec::CACHE_FORMAT_VERSION) bumped).
//!
//! Strings are generic: `Cow<str>` when encoding (borrowed from the value), [`WStr`] when
//! decoding. [`WStr`] deserializes through `deserialize_str`, which bincode serves by borrowing
//! from the input after checking the length against the bytes left: a forged length prefix
//! fails without allocating.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use memory_core::{
    CachedValue, Complexity, ContextKey, Effectiveness, Episode, EpisodeId, Evidence,
    ExecutionStep, Heuristic, HeuristicId, LearnedStatus, Outcome, Pattern, PatternId, PatternKind,
    Reflection, RewardScore, StepInput, StepResult, TaskContext, TaskType,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A decoded string (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WStr(pub(crate) String);

impl Serialize for WStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for WStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WStr, E> {
                Ok(WStr(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<WStr, E> {
                Ok(WStr(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// String type used when encoding.
pub(crate) type Enc<'a> = Cow<'a, str>;

/// A timestamp as seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WTs {
    secs: i64,
    nanos: u32,
}

/// The top-level value (variant order is part of the format: 0 episode, 1 pattern, 2 heuristic).
#[derive(Serialize, Deserialize)]
pub(crate) enum WValue<S> {
    Episode(WEpisode<S>),
    Pattern(WPattern<S>),
    Heuristic(WHeuristic<S>),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WEpisode<S> {
    id: [u8; 16],
    task_description: S,
    task_type: u8,
    context: WContext<S>,
    steps: Vec<WStep<S>>,
    started_at: WTs,
    completed_at: Option<WTs>,
    outcome: Option<WOutcome<S>>,
    reward: Option<WReward>,
    reflection: Option<WReflection<S>>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WContext<S> {
    domain: S,
    language: Option<S>,
    framework: Option<S>,
    complexity: u8,
    tags: Vec<S>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WStep<S> {
    step_number: u32,
    key: u64,
    timestamp: WTs,
    tool: S,
    action: S,
    /// The JSON text of the parameters; `None` for JSON `null`.
    parameters: Option<S>,
    result: WStepResult<S>,
    latency_ms: u64,
    tokens: Option<u64>,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum WStepResult<S> {
    Success(S),
    Error(S),
    Timeout(S),
}

#[derive(Serialize, Deserialize)]
pub(crate) enum WOutcome<S> {
    Success {
        verdict: S,
        artifacts: Vec<S>,
    },
    PartialSuccess {
        verdict: S,
        completed: Vec<S>,
        failed: Vec<S>,
    },
    Failure(S),
    Abstained(S),
}

#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WReward {
    total: f64,
    outcome_base: f64,
    efficiency: f64,
    quality: f64,
    complexity_bonus: f64,
    learning_bonus: f64,
    baseline_steps: f64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WReflection<S> {
    successes: Vec<S>,
    improvements: Vec<S>,
    insights: Vec<S>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WPattern<S> {
    id: S,
    kind: WPatternKind<S>,
    context: WContextKey<S>,
    occurrences: u64,
    successes: u64,
    total_steps: u64,
    total_latency_ms: u64,
    first_seen: WTs,
    last_seen: WTs,
    recent_evidence: Vec<WEvidence>,
    effectiveness: [u64; 3],
    status: WStatus<S>,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum WPatternKind<S> {
    ToolSequence {
        tools: Vec<S>,
    },
    DecisionPoint {
        condition: S,
        choice: S,
    },
    ErrorRecovery {
        failed_tool: S,
        error_class: S,
        recovery: Vec<S>,
    },
    ContextPattern {
        features: Vec<S>,
    },
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WContextKey<S> {
    task_type: Option<u8>,
    domain: Option<S>,
    language: Option<S>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct WEvidence {
    at: WTs,
    episode_id: [u8; 16],
}

#[derive(Serialize, Deserialize)]
pub(crate) enum WStatus<S> {
    Active,
    Superseded { by: S, reason: S },
    Pruned { reason: S, at: WTs },
    Merged { into: S, at: WTs },
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WHeuristic<S> {
    id: S,
    condition_key: S,
    condition: S,
    action: S,
    context: WContextKey<S>,
    support: u64,
    against: u64,
    votes_up: u64,
    votes_down: u64,
    first_seen: WTs,
    last_seen: WTs,
    recent_evidence: Vec<WEvidence>,
    status: WStatus<S>,
}

// ---------------------------------------------------------------------------------------------
// Domain -> wire (encoding). Only the JSON text of step parameters can fail.

fn s(v: &str) -> Enc<'_> {
    Cow::Borrowed(v)
}

fn ss(v: &[String]) -> Vec<Enc<'_>> {
    v.iter().map(|x| s(x)).collect()
}

fn os(v: Option<&String>) -> Option<Enc<'_>> {
    v.map(|x| s(x))
}

fn ts(t: &DateTime<Utc>) -> WTs {
    WTs {
        secs: t.timestamp(),
        nanos: t.timestamp_subsec_nanos(),
    }
}

fn task_type_code(t: TaskType) -> u8 {
    match t {
        TaskType::CodeGeneration => 0,
        TaskType::Debugging => 1,
        TaskType::Refactoring => 2,
        TaskType::Testing => 3,
        TaskType::Analysis => 4,
        TaskType::Documentation => 5,
        TaskType::Other => 6,
    }
}

fn complexity_code(c: Complexity) -> u8 {
    match c {
        Complexity::Simple => 0,
        Complexity::Moderate => 1,
        Complexity::Complex => 2,
    }
}

/// The wire shape of a value, borrowing its strings.
pub(crate) fn to_wire(value: &CachedValue) -> Result<WValue<Enc<'_>>, String> {
    Ok(match value {
        CachedValue::Episode(e) => WValue::Episode(episode_to_wire(e)?),
        CachedValue::Pattern(p) => WValue::Pattern(pattern_to_wire(p)),
        CachedValue::Heuristic(h) => WValue::Heuristic(heuristic_to_wire(h)),
    })
}

fn episode_to_wire(e: &Episode) -> Result<WEpisode<Enc<'_>>, String> {
    let Episode {
        id,
        task_description,
        task_type,
        context,
        steps,
        started_at,
        completed_at,
        outcome,
        reward,
        reflection,
    } = e;
    Ok(WEpisode {
        id: *id.0.as_bytes(),
        task_description: s(task_description),
        task_type: task_type_code(*task_type),
        context: context_to_wire(context),
        steps: steps.iter().map(step_to_wire).collect::<Result<_, _>>()?,
        started_at: ts(started_at),
        completed_at: completed_at.as_ref().map(ts),
        outcome: outcome.as_ref().map(outcome_to_wire),
        reward: reward.as_ref().map(reward_to_wire),
        reflection: reflection.as_ref().map(reflection_to_wire),
    })
}

fn context_to_wire(c: &TaskContext) -> WContext<Enc<'_>> {
    let TaskContext {
        domain,
        language,
        framework,
        complexity,
        tags,
    } = c;
    WContext {
        domain: s(domain),
        language: os(language.as_ref()),
        framework: os(framework.as_ref()),
        complexity: complexity_code(*complexity),
        tags: ss(tags),
    }
}

fn step_to_wire(st: &ExecutionStep) -> Result<WStep<Enc<'_>>, String> {
    let ExecutionStep {
        step_number,
        key,
        timestamp,
        input,
    } = st;
    let StepInput {
        tool,
        action,
        parameters,
        result,
        latency_ms,
        tokens,
    } = input;
    let parameters = if parameters.is_null() {
        None
    } else {
        Some(Cow::Owned(serde_json::to_string(parameters).map_err(
            |e| format!("step {step_number} parameters: {e}"),
        )?))
    };
    Ok(WStep {
        step_number: *step_number,
        key: *key,
        timestamp: ts(timestamp),
        tool: s(tool),
        action: s(action),
        parameters,
        result: match result {
            StepResult::Success { output } => WStepResult::Success(s(output)),
            StepResult::Error { message } => WStepResult::Error(s(message)),
            StepResult::Timeout { message } => WStepResult::Timeout(s(message)),
        },
        latency_ms: *latency_ms,
        tokens: *tokens,
    })
}

fn outcome_to_wire(o: &Outcome) -> WOutcome<Enc<'_>> {
    match o {
        Outcome::Success { verdict, artifacts } => WOutcome::Success {
            verdict: s(verdict),
            artifacts: ss(artifacts),
        },
        Outcome::PartialSuccess {
            verdict,
            completed,
            failed,
        } => WOutcome::PartialSuccess {
            verdict: s(verdict),
            completed: ss(completed),
            failed: ss(failed),
        },
        Outcome::Failure { reason } => WOutcome::Failure(s(reason)),
        Outcome::Abstained { reason } => WOutcome::Abstained(s(reason)),
    }
}

fn reward_to_wire(r: &RewardScore) -> WReward {
    let RewardScore {
        total,
        outcome_base,
        efficiency,
        quality,
        complexity_bonus,
        learning_bonus,
        baseline_steps,
    } = *r;
    WReward {
        total,
        outcome_base,
        efficiency,
        quality,
        complexity_bonus,
        learning_bonus,
        baseline_steps,
    }
}

fn reflection_to_wire(r: &Reflection) -> WReflection<Enc<'_>> {
    let Reflection {
        successes,
        improvements,
        insights,
    } = r;
    WReflection {
        successes: ss(successes),
        improvements: ss(improvements),
        insights: ss(insights),
    }
}

fn context_key_to_wire(c: &ContextKey) -> WContextKey<Enc<'_>> {
    let ContextKey {
        task_type,
        domain,
        language,
    } = c;
    WContextKey {
        task_type: task_type.map(task_type_code),
        domain: os(domain.as_ref()),
        language: os(language.as_ref()),
    }
}

fn evidence_to_wire(e: &Evidence) -> WEvidence {
    let Evidence { at, episode_id } = e;
    WEvidence {
        at: ts(at),
        episode_id: *episode_id.0.as_bytes(),
    }
}

fn status_to_wire(st: &LearnedStatus) -> WStatus<Enc<'_>> {
    match st {
        LearnedStatus::Active => WStatus::Active,
        LearnedStatus::Superseded { by, reason } => WStatus::Superseded {
            by: s(by),
            reason: s(reason),
        },
        LearnedStatus::Pruned { reason, at } => WStatus::Pruned {
            reason: s(reason),
            at: ts(at),
        },
        LearnedStatus::Merged { into, at } => WStatus::Merged {
            into: s(into),
            at: ts(at),
        },
    }
}

fn pattern_to_wire(p: &Pattern) -> WPattern<Enc<'_>> {
    let Pattern {
        id,
        kind,
        context,
        occurrences,
        successes,
        total_steps,
        total_latency_ms,
        first_seen,
        last_seen,
        recent_evidence,
        effectiveness,
        status,
    } = p;
    let Effectiveness {
        helped,
        no_effect,
        hindered,
    } = *effectiveness;
    WPattern {
        id: s(&id.0),
        kind: match kind {
            PatternKind::ToolSequence { tools } => WPatternKind::ToolSequence { tools: ss(tools) },
            PatternKind::DecisionPoint { condition, choice } => WPatternKind::DecisionPoint {
                condition: s(condition),
                choice: s(choice),
            },
            PatternKind::ErrorRecovery {
                failed_tool,
                error_class,
                recovery,
            } => WPatternKind::ErrorRecovery {
                failed_tool: s(failed_tool),
                error_class: s(error_class),
                recovery: ss(recovery),
            },
            PatternKind::ContextPattern { features } => WPatternKind::ContextPattern {
                features: ss(features),
            },
        },
        context: context_key_to_wire(context),
        occurrences: *occurrences,
        successes: *successes,
        total_steps: *total_steps,
        total_latency_ms: *total_latency_ms,
        first_seen: ts(first_seen),
        last_seen: ts(last_seen),
        recent_evidence: recent_evidence.iter().map(evidence_to_wire).collect(),
        effectiveness: [helped, no_effect, hindered],
        status: status_to_wire(status),
    }
}

fn heuristic_to_wire(h: &Heuristic) -> WHeuristic<Enc<'_>> {
    let Heuristic {
        id,
        condition_key,
        condition,
        action,
        context,
        support,
        against,
        votes_up,
        votes_down,
        first_seen,
        last_seen,
        recent_evidence,
        status,
    } = h;
    WHeuristic {
        id: s(&id.0),
        condition_key: s(condition_key),
        condition: s(condition),
        action: s(action),
        context: context_key_to_wire(context),
        support: *support,
        against: *against,
        votes_up: *votes_up,
        votes_down: *votes_down,
        first_seen: ts(first_seen),
        last_seen: ts(last_seen),
        recent_evidence: recent_evidence.iter().map(evidence_to_wire).collect(),
        status: status_to_wire(status),
    }
}

// ---------------------------------------------------------------------------------------------
// Wire -> domain (decoding). Everything that can be out of range is checked.

fn o(v: WStr) -> String {
    v.0
}

fn oo(v: Vec<WStr>) -> Vec<String> {
    v.into_iter().map(o).collect()
}

fn from_ts(t: WTs) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp(t.secs, t.nanos)
        .ok_or_else(|| format!("timestamp {}.{} is out of range", t.secs, t.nanos))
}

fn task_type_from(code: u8) -> Result<TaskType, String> {
    Ok(match code {
        0 => TaskType::CodeGeneration,
        1 => TaskType::Debugging,
        2 => TaskType::Refactoring,
        3 => TaskType::Testing,
        4 => TaskType::Analysis,
        5 => TaskType::Documentation,
        6 => TaskType::Other,
        _ => return Err(format!("unknown task type code {code}")),
    })
}

fn complexity_from(code: u8) -> Result<Complexity, String> {
    Ok(match code {
        0 => Complexity::Simple,
        1 => Complexity::Moderate,
        2 => Complexity::Complex,
        _ => return Err(format!("unknown complexity code {code}")),
    })
}

/// The domain value of a decoded wire value.
pub(crate) fn from_wire(w: WValue<WStr>) -> Result<CachedValue, String> {
    Ok(match w {
        WValue::Episode(e) => CachedValue::Episode(episode_from_wire(e)?),
        WValue::Pattern(p) => CachedValue::Pattern(pattern_from_wire(p)?),
        WValue::Heuristic(h) => CachedValue::Heuristic(heuristic_from_wire(h)?),
    })
}

fn episode_from_wire(w: WEpisode<WStr>) -> Result<Episode, String> {
    let WEpisode {
        id,
        task_description,
        task_type,
        context,
        steps,
        started_at,
        completed_at,
        outcome,
        reward,
        reflection,
    } = w;
    Ok(Episode {
        id: EpisodeId(uuid::Uuid::from_bytes(id)),
        task_description: o(task_description),
        task_type: task_type_from(task_type)?,
        context: context_from_wire(context)?,
        steps: steps
            .into_iter()
            .map(step_from_wire)
            .collect::<Result<_, _>>()?,
        started_at: from_ts(started_at)?,
        completed_at: completed_at.map(from_ts).transpose()?,
        outcome: outcome.map(outcome_from_wire),
        reward: reward.map(reward_from_wire),
        reflection: reflection.map(reflection_from_wire),
    })
}

fn context_from_wire(w: WContext<WStr>) -> Result<TaskContext, String> {
    let WContext {
        domain,
        language,
        framework,
        complexity,
        tags,
    } = w;
    Ok(TaskContext {
        domain: o(domain),
        language: language.map(o),
        framework: framework.map(o),
        complexity: complexity_from(complexity)?,
        tags: oo(tags),
    })
}

fn step_from_wire(w: WStep<WStr>) -> Result<ExecutionStep, String> {
    let WStep {
        step_number,
        key,
        timestamp,
        tool,
        action,
        parameters,
        result,
        latency_ms,
        tokens,
    } = w;
    let parameters = match parameters {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(&text.0)
            .map_err(|e| format!("step {step_number} parameters: {e}"))?,
    };
    Ok(ExecutionStep {
        step_number,
        key,
        timestamp: from_ts(timestamp)?,
        input: StepInput {
            tool: o(tool),
            action: o(action),
            parameters,
            result: match result {
                WStepResult::Success(output) => StepResult::Success { output: o(output) },
                WStepResult::Error(message) => StepResult::Error {
                    message: o(message),
                },
                WStepResult::Timeout(message) => StepResult::Timeout {
                    message: o(message),
                },
            },
            latency_ms,
            tokens,
        },
    })
}

fn outcome_from_wire(w: WOutcome<WStr>) -> Outcome {
    match w {
        WOutcome::Success { verdict, artifacts } => Outcome::Success {
            verdict: o(verdict),
            artifacts: oo(artifacts),
        },
        WOutcome::PartialSuccess {
            verdict,
            completed,
            failed,
        } => Outcome::PartialSuccess {
            verdict: o(verdict),
            completed: oo(completed),
            failed: oo(failed),
        },
        WOutcome::Failure(reason) => Outcome::Failure { reason: o(reason) },
        WOutcome::Abstained(reason) => Outcome::Abstained { reason: o(reason) },
    }
}

fn reward_from_wire(w: WReward) -> RewardScore {
    let WReward {
        total,
        outcome_base,
        efficiency,
        quality,
        complexity_bonus,
        learning_bonus,
        baseline_steps,
    } = w;
    RewardScore {
        total,
        outcome_base,
        efficiency,
        quality,
        complexity_bonus,
        learning_bonus,
        baseline_steps,
    }
}

fn reflection_from_wire(w: WReflection<WStr>) -> Reflection {
    let WReflection {
        successes,
        improvements,
        insights,
    } = w;
    Reflection {
        successes: oo(successes),
        improvements: oo(improvements),
        insights: oo(insights),
    }
}

fn context_key_from_wire(w: WContextKey<WStr>) -> Result<ContextKey, String> {
    let WContextKey {
        task_type,
        domain,
        language,
    } = w;
    Ok(ContextKey {
        task_type: task_type.map(task_type_from).transpose()?,
        domain: domain.map(o),
        language: language.map(o),
    })
}

fn evidence_from_wire(w: WEvidence) -> Result<Evidence, String> {
    let WEvidence { at, episode_id } = w;
    Ok(Evidence {
        at: from_ts(at)?,
        episode_id: EpisodeId(uuid::Uuid::from_bytes(episode_id)),
    })
}

fn status_from_wire(w: WStatus<WStr>) -> Result<LearnedStatus, String> {
    Ok(match w {
        WStatus::Active => LearnedStatus::Active,
        WStatus::Superseded { by, reason } => LearnedStatus::Superseded {
            by: o(by),
            reason: o(reason),
        },
        WStatus::Pruned { reason, at } => LearnedStatus::Pruned {
            reason: o(reason),
            at: from_ts(at)?,
        },
        WStatus::Merged { into, at } => LearnedStatus::Merged {
            into: o(into),
            at: from_ts(at)?,
        },
    })
}

fn pattern_from_wire(w: WPattern<WStr>) -> Result<Pattern, String> {
    let WPattern {
        id,
        kind,
        context,
        occurrences,
        successes,
        total_steps,
        total_latency_ms,
        first_seen,
        last_seen,
        recent_evidence,
        effectiveness: [helped, no_effect, hindered],
        status,
    } = w;
    Ok(Pattern {
        id: PatternId(o(id)),
        kind: match kind {
            WPatternKind::ToolSequence { tools } => PatternKind::ToolSequence { tools: oo(tools) },
            WPatternKind::DecisionPoint { condition, choice } => PatternKind::DecisionPoint {
                condition: o(condition),
                choice: o(choice),
            },
            WPatternKind::ErrorRecovery {
                failed_tool,
                error_class,
                recovery,
            } => PatternKind::ErrorRecovery {
                failed_tool: o(failed_tool),
                error_class: o(error_class),
                recovery: oo(recovery),
            },
            WPatternKind::ContextPattern { features } => PatternKind::ContextPattern {
                features: oo(features),
            },
        },
        context: context_key_from_wire(context)?,
        occurrences,
        successes,
        total_steps,
        total_latency_ms,
        first_seen: from_ts(first_seen)?,
        last_seen: from_ts(last_seen)?,
        recent_evidence: recent_evidence
            .into_iter()
            .map(evidence_from_wire)
            .collect::<Result<_, _>>()?,
        effectiveness: Effectiveness {
            helped,
            no_effect,
            hindered,
        },
        status: status_from_wire(status)?,
    })
}

fn heuristic_from_wire(w: WHeuristic<WStr>) -> Result<Heuristic, String> {
    let WHeuristic {
        id,
        condition_key,
        condition,
        action,
        context,
        support,
        against,
        votes_up,
        votes_down,
        first_seen,
        last_seen,
        recent_evidence,
        status,
    } = w;
    Ok(Heuristic {
        id: HeuristicId(o(id)),
        condition_key: o(condition_key),
        condition: o(condition),
        action: o(action),
        context: context_key_from_wire(context)?,
        support,
        against,
        votes_up,
        votes_down,
        first_seen: from_ts(first_seen)?,
        last_seen: from_ts(last_seen)?,
        recent_evidence: recent_evidence
            .into_iter()
            .map(evidence_from_wire)
            .collect::<Result<_, _>>()?,
        status: status_from_wire(status)?,
    })
}
