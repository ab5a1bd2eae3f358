//! Driver errors and their mapping to [`memory_core::Error`], in one place.
//!
//! Everything that can fail inside this crate is a [`Failure`]: either a driver-level
//! [`DriverError`] (libsql, I/O, a timeout, a schema problem) or an already-classified
//! [`memory_core::Error`] (not found, conflict, decode, invalid input). [`Failure::into_core`]
//! is the one function that turns driver errors into [`memory_core::Error::Storage`] and decides
//! which of them are transient.

use std::time::Duration;

use memory_core::Error;

/// The backend name reported in [`Error::Storage`].
pub(crate) const BACKEND: &str = "libsql";

/// A failure below the storage traits, before it is classified.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    /// The libsql driver (local SQLite, Hrana over HTTP, or replication) failed.
    #[error(transparent)]
    Libsql(#[from] libsql::Error),
    /// The call did not finish within the configured per-call timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A file-system operation (e.g. creating the data directory) failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The database's schema cannot be used by this build.
    #[error("schema: {0}")]
    Schema(String),
    /// A setting of the connection was not applied as asked.
    #[error("connection setup: {0}")]
    Setup(String),
    /// The commit this write shared with concurrent writes failed (see
    /// [`crate::group_commit`]): the write was rolled back with the others.
    #[error("shared commit failed: {message}")]
    SharedCommit { message: String, transient: bool },
    /// A batch sent over Hrana by this crate's own client ([`crate::hrana`]) failed: the
    /// transport, the server's answer, or a statement's error as the server reported it.
    #[error("hrana: {message}")]
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Http { message: String, transient: bool },
}

/// Result of internal operations.
pub(crate) type DbResult<T> = Result<T, Failure>;

/// An internal error: a driver error still to be classified, or a domain error ready to return.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// A driver error; becomes [`Error::Storage`].
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A domain error, returned as is.
    #[error(transparent)]
    Core(#[from] Error),
}

impl From<libsql::Error> for Failure {
    fn from(e: libsql::Error) -> Self {
        Failure::Driver(DriverError::Libsql(e))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Driver(DriverError::Io(e))
    }
}

impl Failure {
    /// Whether the failure is worth a retry (see [`Failure::into_core`]).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Failure::Core(e) => e.is_transient(),
            Failure::Driver(e) => driver_transient(e),
        }
    }

    /// The public error for a failure during `operation`.
    ///
    /// Transient (worth a retry, counted by a circuit breaker) are exactly: SQLite busy and
    /// locked, connection refused / reset / aborted, timeouts, and HTTP transport errors
    /// (including a server answering 502, 503, 504 or 429). SQL errors, constraint
    /// violations, misuse, decode and schema errors are permanent.
    pub(crate) fn into_core(self, operation: &'static str) -> Error {
        let err = match self {
            Failure::Core(e) => return e,
            Failure::Driver(e) => e,
        };
        let transient = driver_transient(&err);
        Error::Storage {
            backend: BACKEND,
            operation,
            transient,
            source: Box::new(err),
        }
    }
}

fn driver_transient(e: &DriverError) -> bool {
    match e {
        DriverError::Timeout(_) => true,
        DriverError::Io(io) => transient_io(io.kind()),
        DriverError::Schema(_) | DriverError::Setup(_) => false,
        DriverError::SharedCommit { transient, .. } | DriverError::Http { transient, .. } => {
            *transient
        }
        DriverError::Libsql(e) => libsql_transient(e),
    }
}

fn libsql_transient(e: &libsql::Error) -> bool {
    let by_variant = match e {
        libsql::Error::SqliteFailure(code, msg) => busy_code(*code) || busy_text(msg),
        libsql::Error::RemoteSqliteFailure(code, extended, msg) => {
            busy_code(*code) || busy_code(*extended) || busy_text(msg)
        }
        // Hrana errors are boxed private types: classify by their text. Transport
        // failures render as `http error: ...`; a server error status as
        // `api error: status=...`.
        libsql::Error::Hrana(inner) => {
            let text = inner.to_string().to_lowercase();
            text.starts_with("http error")
                || text.starts_with("stream closed")
                || ["status=502", "status=503", "status=504", "status=429"]
                    .iter()
                    .any(|s| text.contains(s))
                || text.contains("invalid baton")
                || text.contains("stream_expired")
                || text.contains("stream has expired")
                || busy_text(&text)
                || transport_text(&text)
        }
        libsql::Error::ConnectionFailed(msg) => transport_text(&msg.to_lowercase()),
        libsql::Error::WriteDelegation(inner) | libsql::Error::Replication(inner) => {
            let text = inner.to_string().to_lowercase();
            transport_text(&text) || busy_text(&text) || text.contains("unavailable")
        }
        _ => false,
    };
    by_variant || chain_has_transient_io(e)
}

/// `SQLITE_BUSY` (5), `SQLITE_LOCKED` (6) and `SQLITE_INTERRUPT` (9: a server interrupts
/// the statements in flight when it stops), with any extended code.
fn busy_code(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 9)
}

fn busy_text(text: &str) -> bool {
    let text = text.to_lowercase();
    text.contains("database is locked")
        || text.contains("database table is locked")
        || text.contains("sqlite_busy")
        || text.contains("sqlite_locked")
        || text.contains("sqlite_interrupt")
}

fn transport_text(text: &str) -> bool {
    [
        "connection refused",
        "connection reset",
        "connection aborted",
        "connection closed",
        "broken pipe",
        "timed out",
        "timeout",
        "transport error",
        "error trying to connect",
        "tcp connect error",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn transient_io(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::Interrupted
    )
}

fn chain_has_transient_io(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = err.source();
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && transient_io(io.kind())
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// An [`Error::Decode`] for `what`.
pub(crate) fn decode(what: &'static str, reason: impl std::fmt::Display) -> Failure {
    Error::Decode {
        what,
        reason: reason.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(e: libsql::Error) -> bool {
        Failure::from(e).into_core("test").is_transient()
    }

    #[test]
    fn busy_and_locked_are_transient() {
        assert!(classify(libsql::Error::SqliteFailure(
            5,
            "database is locked".into()
        )));
        assert!(classify(libsql::Error::SqliteFailure(
            5 | (2 << 8),
            "busy snapshot".into()
        )));
        assert!(classify(libsql::Error::SqliteFailure(
            6,
            "database table is locked".into()
        )));
        assert!(classify(libsql::Error::RemoteSqliteFailure(
            5,
            5,
            "database is locked".into()
        )));
        // A server stopping interrupts the statements in flight: a retry is right.
        assert!(classify(libsql::Error::SqliteFailure(
            9,
            "interrupted".into()
        )));
        assert!(classify(libsql::Error::RemoteSqliteFailure(
            9,
            9,
            "SQLite error: interrupted".into()
        )));
    }

    #[test]
    fn sql_errors_are_permanent() {
        assert!(!classify(libsql::Error::SqliteFailure(
            1,
            "no such table: nope".into()
        )));
        assert!(!classify(libsql::Error::SqliteFailure(
            19,
            "UNIQUE constraint failed".into()
        )));
        assert!(!classify(libsql::Error::Misuse("bad".into())));
        assert!(!classify(libsql::Error::QueryReturnedNoRows));
    }

    #[test]
    fn transport_errors_are_transient() {
        assert!(classify(libsql::Error::Hrana(
            "http error: `hyper::Error(Connect, ConnectError(\"tcp connect error\", Os { code: 111, kind: ConnectionRefused }))`".into()
        )));
        assert!(classify(libsql::Error::Hrana(
            "api error: `status=503 Service Unavailable, body=`".into()
        )));
        assert!(!classify(libsql::Error::Hrana(
            "api error: `status=400 Bad Request, body=bad`".into()
        )));
        // The server lost the stream (restart or expiry): a retry opens a new one.
        assert!(classify(libsql::Error::Hrana(
            "api error: `status=400 Bad Request, body=Received an invalid baton`".into()
        )));
        assert!(classify(libsql::Error::Hrana(
            "api error: `status=400 Bad Request, body={\"message\":\"The stream has expired due to inactivity\",\"code\":\"STREAM_EXPIRED\"}`".into()
        )));
        assert!(classify(libsql::Error::ConnectionFailed(
            "Connection refused (os error 111)".into()
        )));
        assert!(!classify(libsql::Error::ConnectionFailed(
            "unable to open database file".into()
        )));
    }

    #[test]
    fn timeouts_are_transient_and_domain_errors_pass_through() {
        let e = Failure::Driver(DriverError::Timeout(Duration::from_secs(1))).into_core("x");
        assert!(e.is_transient());
        assert!(matches!(
            e,
            Error::Storage {
                backend: "libsql",
                operation: "x",
                ..
            }
        ));
        let nf = Failure::Core(Error::not_found(memory_core::ObjectKind::Episode, "e1"));
        assert!(matches!(nf.into_core("x"), Error::NotFound { .. }));
        let schema = Failure::Driver(DriverError::Schema("too new".into())).into_core("open");
        assert!(!schema.is_transient());
    }
}
