//! The one place where redb (and blocking-task) failures become [`memory_core::Error`].

use memory_core::Error;

/// The backend name in [`Error::Storage`].
pub(crate) const BACKEND: &str = "redb";

/// What can go wrong inside a blocking redb closure: a driver error, an I/O error around the
/// file, or an already-mapped domain error.
#[derive(Debug)]
pub(crate) enum StoreError {
    Redb(redb::Error),
    Io(std::io::Error),
    Core(Error),
}

macro_rules! from_redb {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Redb(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError,
);

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError::Core(e)
    }
}

/// Maps a failure of `operation` to the crate-wide error. redb failures are not transient: a
/// retry of the same call would meet the same file.
pub(crate) fn map(operation: &'static str, e: StoreError) -> Error {
    match e {
        StoreError::Redb(e) => Error::storage(BACKEND, operation, false, e),
        StoreError::Io(e) => Error::storage(BACKEND, operation, false, e),
        StoreError::Core(e) => e,
    }
}

/// Runs `f` on tokio's blocking pool (redb calls block on I/O and fsync) and maps its errors.
pub(crate) async fn blocking<T, F>(operation: &'static str, f: F) -> memory_core::Result<T>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| map(operation, e)),
        Err(join) => Err(Error::storage(BACKEND, operation, false, join)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_errors_map_to_non_transient_storage_errors() {
        let e = map(
            "cache get",
            redb::StorageError::Corrupted("bad page".into()).into(),
        );
        assert!(matches!(
            &e,
            Error::Storage {
                backend: "redb",
                operation: "cache get",
                transient: false,
                ..
            }
        ));
        assert!(e.to_string().contains("bad page"), "{e}");
        let core = map("x", Error::invalid("f", "r").into());
        assert!(matches!(core, Error::InvalidInput { .. }));
    }
}
