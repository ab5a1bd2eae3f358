//! The cache's own serialized shape of episodes, patterns and heuristics (cache format version 5).
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
    ExecutionStep, Heuristic, HeuristicId, LearnedStatus, MarkSeen, Marks, Outcome, Pattern,
    PatternId, PatternKind, Pin, Reflection, RewardScore, StepInput, StepResult, TaskContext,
    TaskType,
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
    effectiveness: [u64; 4],
    status: WStatus<S>,
    marks: WMarks<S>,
    pinned: Option<WPin<S>>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WPin<S> {
    reason: S,
    at: WTs,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WMarks<S> {
    episodes: u64,
    seen: Vec<WMarkSeen<S>>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WMarkSeen<S> {
    mark: S,
    count: u64,
    last_seen: WTs,
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
    Retracted { reason: S, at: WTs },
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
    pinned: Option<WPin<S>>,
}

// ---------------------------------------------------------------------------------------------
// The conversions. Encoding fails only on the JSON text of step parameters; decoding checks
// everything that can be out of range.

/// A domain value's wire shape, borrowing its strings.
trait ToWire {
    type Wire<'a>
    where
        Self: 'a;
    fn to_wire(&self) -> Result<Self::Wire<'_>, String>;
}

/// The domain value of a decoded wire shape.
trait FromWire: Sized {
    type Wire;
    fn from_wire(w: Self::Wire) -> Result<Self, String>;
}

/// Decodes `w` as `T` (the field conversions of the macros below).
fn decode<T: FromWire>(w: T::Wire) -> Result<T, String> {
    T::from_wire(w)
}

/// Both conversions of a struct whose every field converts on its own. The value is
/// destructured whole on both sides, so a field added to either stops the build.
macro_rules! mirror_struct {
    ($domain:ident => $wire:ident<S> { $($field:ident),* $(,)? }) => {
        mirror_struct!(@ $domain, $wire<Enc<'a>>, $wire<WStr>, $wire { $($field),* });
    };
    ($domain:ident => $wire:ident { $($field:ident),* $(,)? }) => {
        mirror_struct!(@ $domain, $wire, $wire, $wire { $($field),* });
    };
    (@ $domain:ident, $enc:ty, $dec:ty, $wire:ident { $($field:ident),* }) => {
        impl ToWire for $domain {
            type Wire<'a> = $enc;
            fn to_wire(&self) -> Result<Self::Wire<'_>, String> {
                let $domain { $($field),* } = self;
                Ok($wire { $($field: $field.to_wire()?),* })
            }
        }

        impl FromWire for $domain {
            type Wire = $dec;
            fn from_wire(w: $dec) -> Result<Self, String> {
                let $wire { $($field),* } = w;
                Ok($domain { $($field: decode($field)?),* })
            }
        }
    };
}

/// Both conversions of an enum whose variants mirror the domain's (same names, same fields).
macro_rules! mirror_enum {
    ($domain:ident => $wire:ident { $($variant:ident $({ $($field:ident),* })?),* $(,)? }) => {
        impl ToWire for $domain {
            type Wire<'a> = $wire<Enc<'a>>;
            fn to_wire(&self) -> Result<Self::Wire<'_>, String> {
                Ok(match self {
                    $($domain::$variant $({ $($field),* })? => {
                        $wire::$variant $({ $($field: $field.to_wire()?),* })?
                    })*
                })
            }
        }

        impl FromWire for $domain {
            type Wire = $wire<WStr>;
            fn from_wire(w: Self::Wire) -> Result<Self, String> {
                Ok(match w {
                    $($wire::$variant $({ $($field),* })? => {
                        $domain::$variant $({ $($field: decode($field)?),* })?
                    })*
                })
            }
        }
    };
}

/// Values stored as they are.
macro_rules! same {
    ($($t:ty),*) => {$(
        impl ToWire for $t {
            type Wire<'a> = $t;
            fn to_wire(&self) -> Result<$t, String> {
                Ok(*self)
            }
        }

        impl FromWire for $t {
            type Wire = $t;
            fn from_wire(w: $t) -> Result<$t, String> {
                Ok(w)
            }
        }
    )*};
}

same!(u32, u64, f64);

impl ToWire for String {
    type Wire<'a> = Enc<'a>;
    fn to_wire(&self) -> Result<Enc<'_>, String> {
        Ok(Cow::Borrowed(self))
    }
}

impl FromWire for String {
    type Wire = WStr;
    fn from_wire(w: WStr) -> Result<String, String> {
        Ok(w.0)
    }
}

impl<T: ToWire> ToWire for Vec<T> {
    type Wire<'a>
        = Vec<T::Wire<'a>>
    where
        T: 'a;
    fn to_wire(&self) -> Result<Self::Wire<'_>, String> {
        self.iter().map(T::to_wire).collect()
    }
}

impl<T: FromWire> FromWire for Vec<T> {
    type Wire = Vec<T::Wire>;
    fn from_wire(w: Self::Wire) -> Result<Self, String> {
        w.into_iter().map(T::from_wire).collect()
    }
}

impl<T: ToWire> ToWire for Option<T> {
    type Wire<'a>
        = Option<T::Wire<'a>>
    where
        T: 'a;
    fn to_wire(&self) -> Result<Self::Wire<'_>, String> {
        self.as_ref().map(T::to_wire).transpose()
    }
}

impl<T: FromWire> FromWire for Option<T> {
    type Wire = Option<T::Wire>;
    fn from_wire(w: Self::Wire) -> Result<Self, String> {
        w.map(T::from_wire).transpose()
    }
}

impl ToWire for DateTime<Utc> {
    type Wire<'a> = WTs;
    fn to_wire(&self) -> Result<WTs, String> {
        Ok(WTs {
            secs: self.timestamp(),
            nanos: self.timestamp_subsec_nanos(),
        })
    }
}

impl FromWire for DateTime<Utc> {
    type Wire = WTs;
    fn from_wire(t: WTs) -> Result<Self, String> {
        DateTime::from_timestamp(t.secs, t.nanos)
            .ok_or_else(|| format!("timestamp {}.{} is out of range", t.secs, t.nanos))
    }
}

impl ToWire for EpisodeId {
    type Wire<'a> = [u8; 16];
    fn to_wire(&self) -> Result<[u8; 16], String> {
        Ok(*self.0.as_bytes())
    }
}

impl FromWire for EpisodeId {
    type Wire = [u8; 16];
    fn from_wire(w: [u8; 16]) -> Result<Self, String> {
        Ok(EpisodeId(uuid::Uuid::from_bytes(w)))
    }
}

/// Ids stored as their text.
macro_rules! text_id {
    ($($t:ident),*) => {$(
        impl ToWire for $t {
            type Wire<'a> = Enc<'a>;
            fn to_wire(&self) -> Result<Enc<'_>, String> {
                Ok(Cow::Borrowed(&self.0))
            }
        }

        impl FromWire for $t {
            type Wire = WStr;
            fn from_wire(w: WStr) -> Result<Self, String> {
                Ok($t(w.0))
            }
        }
    )*};
}

text_id!(PatternId, HeuristicId);

/// Enums without data stored as a byte (the codes are part of the format).
macro_rules! code {
    ($t:ident, $what:literal, { $($variant:ident = $code:literal),* $(,)? }) => {
        impl ToWire for $t {
            type Wire<'a> = u8;
            fn to_wire(&self) -> Result<u8, String> {
                Ok(match self {
                    $($t::$variant => $code),*
                })
            }
        }

        impl FromWire for $t {
            type Wire = u8;
            fn from_wire(code: u8) -> Result<Self, String> {
                Ok(match code {
                    $($code => $t::$variant,)*
                    _ => return Err(format!(concat!("unknown ", $what, " code {}"), code)),
                })
            }
        }
    };
}

code!(TaskType, "task type", {
    CodeGeneration = 0,
    Debugging = 1,
    Refactoring = 2,
    Testing = 3,
    Analysis = 4,
    Documentation = 5,
    Other = 6,
});
code!(Complexity, "complexity", { Simple = 0, Moderate = 1, Complex = 2 });

impl ToWire for Effectiveness {
    type Wire<'a> = [u64; 4];
    fn to_wire(&self) -> Result<[u64; 4], String> {
        let Effectiveness {
            helped,
            no_effect,
            hindered,
            hindered_streak,
        } = *self;
        Ok([helped, no_effect, hindered, hindered_streak])
    }
}

impl FromWire for Effectiveness {
    type Wire = [u64; 4];
    fn from_wire([helped, no_effect, hindered, streak]: [u64; 4]) -> Result<Self, String> {
        Ok(Effectiveness {
            helped,
            no_effect,
            hindered,
            hindered_streak: streak,
        })
    }
}

mirror_struct!(Episode => WEpisode<S> {
    id, task_description, task_type, context, steps, started_at, completed_at, outcome,
    reward, reflection,
});
mirror_struct!(TaskContext => WContext<S> { domain, language, framework, complexity, tags });
mirror_struct!(RewardScore => WReward {
    total, outcome_base, efficiency, quality, complexity_bonus, learning_bonus, baseline_steps,
});
mirror_struct!(Reflection => WReflection<S> { successes, improvements, insights });
mirror_struct!(ContextKey => WContextKey<S> { task_type, domain, language });
mirror_struct!(Evidence => WEvidence { at, episode_id });
mirror_struct!(Marks => WMarks<S> { episodes, seen });
mirror_struct!(MarkSeen => WMarkSeen<S> { mark, count, last_seen });
mirror_struct!(Pattern => WPattern<S> {
    id, kind, context, occurrences, successes, total_steps, total_latency_ms, first_seen,
    last_seen, recent_evidence, effectiveness, status, marks, pinned,
});
mirror_struct!(Pin => WPin<S> { reason, at });
mirror_struct!(Heuristic => WHeuristic<S> {
    id, condition_key, condition, action, context, support, against, votes_up, votes_down,
    first_seen, last_seen, recent_evidence, status, pinned,
});
mirror_enum!(PatternKind => WPatternKind {
    ToolSequence { tools },
    DecisionPoint { condition, choice },
    ErrorRecovery { failed_tool, error_class, recovery },
    ContextPattern { features },
});
mirror_enum!(LearnedStatus => WStatus {
    Active,
    Superseded { by, reason },
    Pruned { reason, at },
    Merged { into, at },
    Retracted { reason, at },
});

impl ToWire for Outcome {
    type Wire<'a> = WOutcome<Enc<'a>>;
    fn to_wire(&self) -> Result<Self::Wire<'_>, String> {
        Ok(match self {
            Outcome::Success { verdict, artifacts } => WOutcome::Success {
                verdict: verdict.to_wire()?,
                artifacts: artifacts.to_wire()?,
            },
            Outcome::PartialSuccess {
                verdict,
                completed,
                failed,
            } => WOutcome::PartialSuccess {
                verdict: verdict.to_wire()?,
                completed: completed.to_wire()?,
                failed: failed.to_wire()?,
            },
            Outcome::Failure { reason } => WOutcome::Failure(reason.to_wire()?),
            Outcome::Abstained { reason } => WOutcome::Abstained(reason.to_wire()?),
        })
    }
}

impl FromWire for Outcome {
    type Wire = WOutcome<WStr>;
    fn from_wire(w: Self::Wire) -> Result<Self, String> {
        Ok(match w {
            WOutcome::Success { verdict, artifacts } => Outcome::Success {
                verdict: decode(verdict)?,
                artifacts: decode(artifacts)?,
            },
            WOutcome::PartialSuccess {
                verdict,
                completed,
                failed,
            } => Outcome::PartialSuccess {
                verdict: decode(verdict)?,
                completed: decode(completed)?,
                failed: decode(failed)?,
            },
            WOutcome::Failure(reason) => Outcome::Failure { reason: reason.0 },
            WOutcome::Abstained(reason) => Outcome::Abstained { reason: reason.0 },
        })
    }
}

/// A step with its input flattened; its parameters as JSON text.
impl ToWire for ExecutionStep {
    type Wire<'a> = WStep<Enc<'a>>;
    fn to_wire(&self) -> Result<Self::Wire<'_>, String> {
        let ExecutionStep {
            step_number,
            key,
            timestamp,
            input,
        } = self;
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
            timestamp: timestamp.to_wire()?,
            tool: tool.to_wire()?,
            action: action.to_wire()?,
            parameters,
            result: match result {
                StepResult::Success { output } => WStepResult::Success(output.to_wire()?),
                StepResult::Error { message } => WStepResult::Error(message.to_wire()?),
                StepResult::Timeout { message } => WStepResult::Timeout(message.to_wire()?),
            },
            latency_ms: *latency_ms,
            tokens: *tokens,
        })
    }
}

impl FromWire for ExecutionStep {
    type Wire = WStep<WStr>;
    fn from_wire(w: Self::Wire) -> Result<Self, String> {
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
            timestamp: decode(timestamp)?,
            input: StepInput {
                tool: tool.0,
                action: action.0,
                parameters,
                result: match result {
                    WStepResult::Success(output) => StepResult::Success { output: output.0 },
                    WStepResult::Error(message) => StepResult::Error { message: message.0 },
                    WStepResult::Timeout(message) => StepResult::Timeout { message: message.0 },
                },
                latency_ms,
                tokens,
            },
        })
    }
}

/// The wire shape of a value, borrowing its strings.
pub(crate) fn to_wire(value: &CachedValue) -> Result<WValue<Enc<'_>>, String> {
    Ok(match value {
        CachedValue::Episode(e) => WValue::Episode(e.to_wire()?),
        CachedValue::Pattern(p) => WValue::Pattern(p.to_wire()?),
        CachedValue::Heuristic(h) => WValue::Heuristic(h.to_wire()?),
    })
}

/// The domain value of a decoded wire value.
pub(crate) fn from_wire(w: WValue<WStr>) -> Result<CachedValue, String> {
    Ok(match w {
        WValue::Episode(e) => CachedValue::Episode(std::sync::Arc::new(decode(e)?)),
        WValue::Pattern(p) => CachedValue::Pattern(decode(p)?),
        WValue::Heuristic(h) => CachedValue::Heuristic(decode(h)?),
    })
}
