//! The three kinds of learned item behind one trait, [`Learned`], so storage, the cache and
//! consolidation handle patterns, heuristics and failure lessons with one piece of code.

use std::fmt::{Debug, Display};
use std::hash::Hash;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::context::ContextKey;
use super::heuristic::{Heuristic, HeuristicId};
use super::lesson::{FailureLesson, LessonId};
use super::pattern::{Pattern, PatternId};
use super::status::{Evidence, LearnedStatus, Pin};
use crate::error::ObjectKind;

/// Which kind of learned item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearnedKind {
    /// A [`Pattern`].
    Pattern,
    /// A [`Heuristic`].
    Heuristic,
    /// A [`FailureLesson`].
    Lesson,
}

impl LearnedKind {
    /// `pattern`, `heuristic` or `lesson`.
    pub fn name(self) -> &'static str {
        match self {
            LearnedKind::Pattern => "pattern",
            LearnedKind::Heuristic => "heuristic",
            LearnedKind::Lesson => "lesson",
        }
    }

    /// The kind as errors name it.
    pub fn object_kind(self) -> ObjectKind {
        match self {
            LearnedKind::Pattern => ObjectKind::Pattern,
            LearnedKind::Heuristic => ObjectKind::Heuristic,
            LearnedKind::Lesson => ObjectKind::Lesson,
        }
    }
}

/// The identity of a learned item of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum LearnedId {
    /// A pattern's.
    Pattern(PatternId),
    /// A heuristic's.
    Heuristic(HeuristicId),
    /// A lesson's.
    Lesson(LessonId),
}

impl LearnedId {
    /// Its kind.
    pub fn kind(&self) -> LearnedKind {
        match self {
            LearnedId::Pattern(_) => LearnedKind::Pattern,
            LearnedId::Heuristic(_) => LearnedKind::Heuristic,
            LearnedId::Lesson(_) => LearnedKind::Lesson,
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        match self {
            LearnedId::Pattern(id) => &id.0,
            LearnedId::Heuristic(id) => &id.0,
            LearnedId::Lesson(id) => &id.0,
        }
    }
}

/// A learned item of any kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "item", rename_all = "snake_case")]
pub enum LearnedItem {
    /// A pattern.
    Pattern(Pattern),
    /// A heuristic.
    Heuristic(Heuristic),
    /// A failure lesson.
    Lesson(FailureLesson),
}

/// What patterns, heuristics and failure lessons share: a deterministic identity, the context
/// they hold in, a status (nothing is deleted), and evidence over time.
///
/// ```
/// use memory_core::{Learned, LearnedKind, Pattern};
/// fn kind_of<T: Learned>() -> &'static str { T::KIND.name() }
/// assert_eq!(kind_of::<Pattern>(), "pattern");
/// assert_eq!(LearnedKind::Lesson.name(), "lesson");
/// ```
pub trait Learned: Clone + Debug + PartialEq + Send + Sync + Sized + 'static {
    /// The identity type.
    type Id: Clone + Debug + Display + Eq + Ord + Hash + Send + Sync + 'static;
    /// Which kind this is.
    const KIND: LearnedKind;
    /// Its identity.
    fn id(&self) -> &Self::Id;
    /// An identity from its text.
    fn id_from(text: &str) -> Self::Id;
    /// An identity as a kind-tagged one.
    fn learned_id(id: &Self::Id) -> LearnedId;
    /// The context it holds in.
    fn context(&self) -> &ContextKey;
    /// Whether it is in use.
    fn status(&self) -> &LearnedStatus;
    /// Changes whether it is in use.
    fn set_status(&mut self, status: LearnedStatus);
    /// An operator's pin on it, if any.
    fn pinned(&self) -> Option<&Pin>;
    /// Pins it (`Some`) or unpins it.
    fn set_pinned(&mut self, pin: Option<Pin>);
    /// The first observation.
    fn first_seen(&self) -> DateTime<Utc>;
    /// The latest observation.
    fn last_seen(&self) -> DateTime<Utc>;
    /// The most recent evidence, newest first.
    fn recent_evidence(&self) -> &[Evidence];
    /// Episodes of evidence: occurrences (patterns, lessons) or support plus against
    /// (heuristics).
    fn evidence_count(&self) -> u64;
    /// What queries order by, most first: occurrences, or support for heuristics.
    fn rank(&self) -> u64;
    /// A pattern's own kind (`tool_sequence`, ...), which queries can filter on; `None` for
    /// heuristics and lessons.
    fn subkind(&self) -> Option<&'static str> {
        None
    }
    /// As an item of any kind.
    fn into_item(self) -> LearnedItem;
    /// Back from an item of any kind; `None` for another kind.
    fn from_item(item: LearnedItem) -> Option<Self>;
}

/// Implements [`Learned`] for a kind whose fields share the common names.
macro_rules! learned_kind {
    ($ty:ident, $id:ident, $kind:ident, |$s:ident| $evidence:expr, $rank:expr $(, $sub:expr)?) => {
        impl Learned for $ty {
            type Id = $id;
            const KIND: LearnedKind = LearnedKind::$kind;
            fn id(&self) -> &$id {
                &self.id
            }
            fn id_from(text: &str) -> $id {
                $id(text.to_owned())
            }
            fn learned_id(id: &$id) -> LearnedId {
                LearnedId::$kind(id.clone())
            }
            fn context(&self) -> &ContextKey {
                &self.context
            }
            fn status(&self) -> &LearnedStatus {
                &self.status
            }
            fn set_status(&mut self, status: LearnedStatus) {
                self.status = status;
            }
            fn pinned(&self) -> Option<&Pin> {
                self.pinned.as_ref()
            }
            fn set_pinned(&mut self, pin: Option<Pin>) {
                self.pinned = pin;
            }
            fn first_seen(&self) -> DateTime<Utc> {
                self.first_seen
            }
            fn last_seen(&self) -> DateTime<Utc> {
                self.last_seen
            }
            fn recent_evidence(&self) -> &[Evidence] {
                &self.recent_evidence
            }
            fn evidence_count(&self) -> u64 {
                let $s = self;
                $evidence
            }
            fn rank(&self) -> u64 {
                let $s = self;
                $rank
            }
            $(fn subkind(&self) -> Option<&'static str> {
                let $s = self;
                Some($sub)
            })?
            fn into_item(self) -> LearnedItem {
                LearnedItem::$kind(self)
            }
            fn from_item(item: LearnedItem) -> Option<Self> {
                match item {
                    LearnedItem::$kind(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}

learned_kind!(
    Pattern,
    PatternId,
    Pattern,
    |p| p.occurrences,
    p.occurrences,
    p.kind.name()
);
learned_kind!(
    Heuristic,
    HeuristicId,
    Heuristic,
    |h| h.support + h.against,
    h.support
);
learned_kind!(
    FailureLesson,
    LessonId,
    Lesson,
    |l| l.occurrences,
    l.occurrences
);
