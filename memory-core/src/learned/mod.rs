//! What the memory learns: patterns, heuristics and failure lessons, with the status, evidence
//! and deterministic identities they share, and feedback on them. The three kinds go through
//! one trait, [`Learned`].

mod context;
mod feedback;
mod heuristic;
mod kind;
mod lesson;
mod marks;
mod pattern;
mod status;

pub use context::ContextKey;
pub(crate) use context::stable_id;
pub use feedback::{Feedback, FeedbackOutcome, FeedbackTarget};
pub use heuristic::{
    Heuristic, HeuristicId, HeuristicObservation, general_identity, keys_to_resolve, rank_order,
    resolve_contradictions,
};
pub use kind::{Learned, LearnedId, LearnedItem, LearnedKind};
pub use lesson::{FailureLesson, LessonId, LessonObservation, Remedy, lesson_id};
pub use marks::{MAX_MARKS, MarkSeen, Marks, context_marks};
pub use pattern::{
    Effectiveness, HINDERED_STREAK_DISCOUNT, Pattern, PatternId, PatternKind, PatternObservation,
    StepReplaced, pattern_id,
};
pub use status::{Evidence, LearnedStatus, Pin};
pub(crate) use status::{forget_recent, push_recent};
