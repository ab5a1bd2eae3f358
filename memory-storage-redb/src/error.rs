//! The one place where redb (and blocking-task) failures become [`memory_core::Error`].

use std::path::Path;

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

/// A (permanent) [`Error::Storage`] of `operation`.
pub(crate) fn failed(
    operation: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::storage(BACKEND, operation, false, source)
}

/// Maps a failure of `operation` to the crate-wide error. redb failures are not transient: a
/// retry of the same call would meet the same file.
pub(crate) fn map(operation: &'static str, e: StoreError) -> Error {
    match e {
        StoreError::Redb(e) => failed(operation, e),
        StoreError::Io(e) => failed(operation, e),
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
        Err(join) => Err(failed(operation, join)),
    }
}

/// Opens (creating it and its directory if needed) the redb file at `path`, with a page cache
/// of `cache_bytes`.
pub(crate) fn create_file(path: &Path, cache_bytes: usize) -> Result<redb::Database, StoreError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        memory_files::create_dir_all(dir)?;
    }
    // Ours, 0600, before redb opens it (redb starts a new database in an empty file).
    memory_files::precreate(path)?;
    Ok(redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)?)
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
