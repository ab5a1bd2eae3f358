//! The one public error type of the memory.

use std::time::Duration;

/// Result type of every fallible memory operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of stored object an error talks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// An episode.
    Episode,
    /// A learned pattern.
    Pattern,
    /// A learned heuristic.
    Heuristic,
    /// A failure lesson.
    Lesson,
    /// A stored embedding.
    Embedding,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Episode => "episode",
            ObjectKind::Pattern => "pattern",
            ObjectKind::Heuristic => "heuristic",
            ObjectKind::Lesson => "lesson",
            ObjectKind::Embedding => "embedding",
        })
    }
}

/// Errors of the memory. Messages are lowercase and name the operation and key.
///
/// Only [`Error::is_transient`] errors are worth a retry or count against a circuit breaker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist in this namespace.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked up.
        kind: ObjectKind,
        /// Its id.
        id: String,
    },
    /// An input is malformed (not a size limit; see [`Error::LimitExceeded`]).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field, e.g. `namespace` or `step.parameters`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An input is larger than a configured limit; nothing was stored.
    #[error("{field} is too large: {actual} > limit {limit}")]
    LimitExceeded {
        /// The limited field, e.g. `task_description`.
        field: &'static str,
        /// The configured limit (bytes or count, per field).
        limit: u64,
        /// What the input had.
        actual: u64,
    },
    /// A per-namespace quota is used up; nothing was stored.
    #[error("quota exceeded in namespace {namespace}: {resource} limit {limit} reached")]
    QuotaExceeded {
        /// The namespace whose quota is used up.
        namespace: String,
        /// `episodes` or `steps`.
        resource: &'static str,
        /// The configured quota.
        limit: u64,
    },
    /// The namespace's rate limit is exhausted; retry after the given time.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// How long until a token is available.
        retry_after: Duration,
    },
    /// The durable layer's circuit breaker is open and the call could not be served otherwise.
    #[error("durable storage unavailable (circuit open): retry after {retry_after:?}")]
    CircuitOpen {
        /// How long until the breaker probes again.
        retry_after: Duration,
    },
    /// The operation conflicts with the object's state (e.g. completing a completed episode).
    #[error("{kind} {id}: {reason}")]
    Conflict {
        /// The object kind.
        kind: ObjectKind,
        /// Its id.
        id: String,
        /// Why the operation cannot apply.
        reason: String,
    },
    /// Stored bytes could not be decoded.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A storage backend failed.
    #[error("{backend} storage error during {operation}: {source}")]
    Storage {
        /// The backend, e.g. `libsql` or `redb`.
        backend: &'static str,
        /// The operation that failed.
        operation: &'static str,
        /// Whether retrying later may succeed (connection refused, timeout, busy).
        transient: bool,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The memory (or one of its background tasks) has been shut down.
    #[error("memory is shut down")]
    Shutdown,
}

/// How the reason of [`Error::steps_changed`] begins.
const STEPS_CHANGED: &str = "its steps changed since this process read it";

/// The reason of [`Error::forgotten`].
const FORGOTTEN: &str = "was forgotten; its id is never stored again";

impl Error {
    /// True when retrying later may succeed: only these count against a circuit breaker.
    ///
    /// ```
    /// use memory_core::Error;
    /// let e = Error::InvalidInput { field: "namespace".into(), reason: "empty".into() };
    /// assert!(!e.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { transient, .. } => *transient,
            Error::CircuitOpen { .. } => true,
            _ => false,
        }
    }

    /// Shorthand for an [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for an [`Error::NotFound`]. An id longer than
    /// [`QUOTE_MAX_CHARS`](crate::quote::QUOTE_MAX_CHARS) characters is kept as its prefix and length
    /// ([`cut_value`](crate::quote::cut_value)): the message never repeats a huge input.
    pub fn not_found(kind: ObjectKind, id: impl std::fmt::Display) -> Self {
        let id = id.to_string();
        Error::NotFound {
            kind,
            id: crate::quote::cut_value(&id).into_owned(),
        }
    }

    /// The [`Error::Conflict`] a store returns when a completion's
    /// [`expected_steps`](crate::EpisodeCompletion::expected_steps) does not match the steps it
    /// holds: another writer added steps since the completing process last read the episode.
    /// Nothing was written; [`Error::is_steps_changed`] tells it apart.
    ///
    /// ```
    /// use memory_core::{EpisodeId, Error};
    /// let e = Error::steps_changed(EpisodeId::new(), 3, 4);
    /// assert!(e.is_steps_changed());
    /// assert!(!e.is_transient());
    /// ```
    pub fn steps_changed(id: crate::EpisodeId, expected: u64, stored: u64) -> Self {
        Error::Conflict {
            kind: ObjectKind::Episode,
            id: id.to_string(),
            reason: format!(
                "{STEPS_CHANGED}: the completing process knew {expected} steps, the store holds {stored}"
            ),
        }
    }

    /// The [`Error::Conflict`] a store returns when asked to store an episode under the id of
    /// one it forgot: nothing was written; [`Error::is_forgotten`] tells it apart. A journal's
    /// replay of a start made before the erasure meets it and moves on.
    ///
    /// ```
    /// use memory_core::{EpisodeId, Error};
    /// let e = Error::forgotten(EpisodeId::new());
    /// assert!(e.is_forgotten() && !e.is_steps_changed() && !e.is_transient());
    /// ```
    pub fn forgotten(id: crate::EpisodeId) -> Self {
        Error::Conflict {
            kind: ObjectKind::Episode,
            id: id.to_string(),
            reason: FORGOTTEN.to_owned(),
        }
    }

    /// True for the conflict of [`Error::forgotten`].
    pub fn is_forgotten(&self) -> bool {
        matches!(self, Error::Conflict { kind: ObjectKind::Episode, reason, .. } if reason == FORGOTTEN)
    }

    /// True for the conflict of [`Error::steps_changed`].
    pub fn is_steps_changed(&self) -> bool {
        matches!(self, Error::Conflict { kind: ObjectKind::Episode, reason, .. } if reason.starts_with(STEPS_CHANGED))
    }

    /// Shorthand for an [`Error::Storage`].
    pub fn storage(
        backend: &'static str,
        operation: &'static str,
        transient: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            backend,
            operation,
            transient,
            source: source.into(),
        }
    }
}
