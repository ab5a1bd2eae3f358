//! Connection settings of [`TursoStorage`](crate::TursoStorage): which database, and how the
//! connections to it are tuned.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use memory_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::schema::SCHEMA_VERSION;

/// Environment variable holding the remote database URL, read by [`TursoConfig::from_env`].
pub const ENV_DATABASE_URL: &str = "TURSO_DATABASE_URL";
/// Environment variable holding the remote auth token, read by [`TursoConfig::from_env`].
pub const ENV_AUTH_TOKEN: &str = "TURSO_AUTH_TOKEN";

/// The path that opens a private in-memory database (lost when the storage is dropped).
pub const MEMORY_PATH: &str = ":memory:";

/// Where the database lives.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TursoMode {
    /// An embedded local file (the default mode), or `:memory:` for a private in-memory
    /// database that lives as long as the storage.
    Local {
        /// The database file (created if missing), or `:memory:`.
        path: PathBuf,
    },
    /// A remote server over Hrana (HTTP): a `sqld` (`http://127.0.0.1:8080`) or Turso Cloud
    /// (`libsql://db-org.turso.io`). Needs the `remote` feature.
    Remote {
        /// `http://`, `https://` or `libsql://` URL.
        url: String,
        /// Bearer token; `None` for servers without authentication (a local sqld).
        auth_token: Option<String>,
    },
    /// An embedded replica: a local file that syncs from a remote primary and sends writes to
    /// it. Reads are local; a write is visible to this replica as soon as it returns
    /// (read-your-writes), and to other replicas after they sync. Needs the `replica` feature.
    Replica {
        /// The local replica file. It must be new, or a replica of the same primary.
        path: PathBuf,
        /// The primary's URL.
        url: String,
        /// Bearer token; `None` for servers without authentication.
        auth_token: Option<String>,
        /// Sync from the primary in the background this often; `None` syncs only at open and
        /// on [`TursoStorage::sync`](crate::TursoStorage::sync).
        sync_interval: Option<Duration>,
    },
}

impl TursoMode {
    /// `local`, `memory`, `remote` or `replica`.
    pub fn name(&self) -> &'static str {
        match self {
            TursoMode::Local { path } if is_memory_path(path) => "memory",
            TursoMode::Local { .. } => "local",
            TursoMode::Remote { .. } => "remote",
            TursoMode::Replica { .. } => "replica",
        }
    }
}

fn redact(token: Option<&String>) -> Option<&'static str> {
    token.map(|_| "<redacted>")
}

impl fmt::Debug for TursoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TursoMode::Local { path } => f.debug_struct("Local").field("path", path).finish(),
            TursoMode::Remote { url, auth_token } => f
                .debug_struct("Remote")
                .field("url", url)
                .field("auth_token", &redact(auth_token.as_ref()))
                .finish(),
            TursoMode::Replica {
                path,
                url,
                auth_token,
                sync_interval,
            } => f
                .debug_struct("Replica")
                .field("path", path)
                .field("url", url)
                .field("auth_token", &redact(auth_token.as_ref()))
                .field("sync_interval", sync_interval)
                .finish(),
        }
    }
}

pub(crate) fn is_memory_path(path: &Path) -> bool {
    path.as_os_str() == MEMORY_PATH
}

/// SQLite's `synchronous` setting for local files (WAL mode).
///
/// | setting | survives a process crash (`kill -9`) | survives power loss / OS crash |
/// |---------|--------------------------------------|--------------------------------|
/// | `Normal` | yes: every commit is in the WAL file (in the OS page cache) before the call returns | the database stays consistent, but the last commits since the previous WAL sync (checkpoint) may be rolled back |
/// | `Full`   | yes | yes: the WAL is fsynced at every commit |
///
/// `Normal` is the default: it keeps the guarantee the memory promises (an acknowledged write
/// survives the process dying) at about 8x the commit rate of `Full` (measured: 14.5k vs 1.8k
/// single-row commits/s). Choose `Full` on machines where losing the last second of writes on
/// power loss is not acceptable. Remote and replica modes use the server's durability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`.
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Validated connection settings. Build one with [`TursoConfig::builder`] (or the
/// [`TursoConfig::local`] / [`TursoConfig::remote`] / [`TursoConfig::replica`] shortcuts, or
/// [`TursoConfig::from_env`]).
///
/// # Default
///
/// | setting | default |
/// |---------|---------|
/// | mode | required |
/// | [`synchronous`](TursoConfigBuilder::synchronous) | [`Synchronous::Normal`] |
/// | [`busy_timeout`](TursoConfigBuilder::busy_timeout) | 5 s |
/// | [`call_timeout`](TursoConfigBuilder::call_timeout) | 30 s |
/// | [`readers`](TursoConfigBuilder::readers) | 4 connections (local files and replicas; `:memory:` always uses 1 shared connection) |
/// | [`background_checkpoints`](TursoConfigBuilder::background_checkpoints) | on (local files) |
/// | [`change_poll_interval`](TursoConfigBuilder::change_poll_interval) | 1 s (remote and replica modes) |
/// | [`open_when_unreachable`](TursoConfigBuilder::open_when_unreachable) | off: opening fails while the server is down |
/// | [`schema_version`](TursoConfigBuilder::schema_version) | the latest ([`SCHEMA_VERSION`](crate::SCHEMA_VERSION)) |
///
/// `Debug` never prints the auth token.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TursoConfig {
    pub(crate) mode: TursoMode,
    pub(crate) synchronous: Synchronous,
    pub(crate) busy_timeout: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) readers: usize,
    pub(crate) schema_version: u32,
    pub(crate) background_checkpoints: bool,
    pub(crate) change_poll_interval: Duration,
    pub(crate) open_when_unreachable: bool,
    pub(crate) encryption: Option<memory_seal::MasterKey>,
}

/// Default `busy_timeout`.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default per-call timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of reader connections.
pub const DEFAULT_READERS: usize = 4;
/// Most reader connections allowed.
pub const MAX_READERS: usize = 64;
/// Default for how often a cache over a server reads the change feed.
pub const DEFAULT_CHANGE_POLL_INTERVAL: Duration = Duration::from_secs(1);

impl TursoConfig {
    /// A builder; set a mode with [`TursoConfigBuilder::mode`] (or one of the mode shortcuts).
    pub fn builder() -> TursoConfigBuilder {
        TursoConfigBuilder::default()
    }

    /// A builder for a local file (or `:memory:`).
    pub fn local(path: impl Into<PathBuf>) -> TursoConfigBuilder {
        Self::builder().mode(TursoMode::Local { path: path.into() })
    }

    /// A builder for a remote server.
    pub fn remote(url: impl Into<String>, auth_token: Option<String>) -> TursoConfigBuilder {
        Self::builder().mode(TursoMode::Remote {
            url: url.into(),
            auth_token,
        })
    }

    /// A builder for an embedded replica of `url` stored in `path` (no background sync; set
    /// one with [`TursoConfigBuilder::sync_interval`]).
    pub fn replica(
        path: impl Into<PathBuf>,
        url: impl Into<String>,
        auth_token: Option<String>,
    ) -> TursoConfigBuilder {
        Self::builder().mode(TursoMode::Replica {
            path: path.into(),
            url: url.into(),
            auth_token,
            sync_interval: None,
        })
    }

    /// A remote configuration from `TURSO_DATABASE_URL` and (optional) `TURSO_AUTH_TOKEN`.
    ///
    /// `Ok(None)` when `TURSO_DATABASE_URL` is unset or empty (use the local default then);
    /// `InvalidInput` when it is set but not a usable URL.
    pub fn from_env() -> Result<Option<TursoConfig>> {
        let Some(url) = std::env::var(ENV_DATABASE_URL)
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        let token = std::env::var(ENV_AUTH_TOKEN).ok().filter(|t| !t.is_empty());
        Self::remote(url.trim(), token).build().map(Some)
    }

    /// Where the database lives.
    pub fn mode(&self) -> &TursoMode {
        &self.mode
    }

    /// The `synchronous` setting for local files.
    pub fn synchronous(&self) -> Synchronous {
        self.synchronous
    }

    /// How long a local connection waits for a lock before failing with a (transient) busy
    /// error.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
    }

    /// Longest time one storage call may take, including waiting for a connection.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Reader connections.
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// Whether the local (or replica) file is opened encrypted.
    pub fn encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The schema version opening migrates to.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// Whether a local file's WAL is checkpointed in the background.
    pub fn background_checkpoints(&self) -> bool {
        self.background_checkpoints
    }

    /// How often, at most, a cache over a server (remote or replica mode) reads the change
    /// feed: the bound on how stale a cached read can be behind another machine's write.
    /// Local files need no interval (a commit by any process is seen at the next read).
    pub fn change_poll_interval(&self) -> Duration {
        self.change_poll_interval
    }

    /// Whether opening a server (remote) or a replica succeeds while the server is
    /// unreachable (see [`TursoConfigBuilder::open_when_unreachable`]).
    pub fn open_when_unreachable(&self) -> bool {
        self.open_when_unreachable
    }
}

/// Builds a [`TursoConfig`]; [`TursoConfigBuilder::build`] validates it.
#[derive(Clone, Default, Debug)]
pub struct TursoConfigBuilder {
    mode: Option<TursoMode>,
    synchronous: Synchronous,
    busy_timeout: Option<Duration>,
    call_timeout: Option<Duration>,
    readers: Option<usize>,
    schema_version: Option<u32>,
    foreground_checkpoints: bool,
    change_poll_interval: Option<Duration>,
    open_when_unreachable: bool,
    encryption: Option<memory_seal::MasterKey>,
}

impl TursoConfigBuilder {
    /// Sets where the database lives.
    #[must_use]
    pub fn mode(mut self, mode: TursoMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the `synchronous` setting (local files). See [`Synchronous`].
    #[must_use]
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Sets how long a local connection waits for a lock (`PRAGMA busy_timeout`).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = Some(timeout);
        self
    }

    /// Sets the longest time one storage call may take; on expiry the call fails with a
    /// transient storage error.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Sets the number of reader connections (1 to 64). Writes always go through one writer
    /// connection.
    #[must_use]
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = Some(readers);
        self
    }

    /// Whether a local file's WAL is checkpointed by a background task (the default) instead
    /// of inside the commit that fills it. SQLite's own checkpoint makes one commit in every
    /// few dozen about 100 times slower (it copies and fsyncs); the background task runs the
    /// same checkpoint off the write path. Ignored by other modes.
    #[must_use]
    pub fn background_checkpoints(mut self, on: bool) -> Self {
        self.foreground_checkpoints = !on;
        self
    }

    /// Sets the background sync interval of a replica (ignored by other modes).
    #[must_use]
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        if let Some(TursoMode::Replica { sync_interval, .. }) = &mut self.mode {
            *sync_interval = Some(interval);
        }
        self
    }

    /// Sets how often, at most, a cache over a server reads the change feed (see
    /// [`TursoConfig::change_poll_interval`]).
    #[must_use]
    pub fn change_poll_interval(mut self, interval: Duration) -> Self {
        self.change_poll_interval = Some(interval);
        self
    }

    /// Opens a server (remote mode) or a replica even while the server is unreachable
    /// (transient errors only): the schema check, and a replica's first sync, run when it
    /// answers. Until then a remote handle fails every call with a transient error (which
    /// tiered storage journals), and a replica reads its local file. Local files ignore it.
    #[must_use]
    pub fn open_when_unreachable(mut self, on: bool) -> Self {
        self.open_when_unreachable = on;
        self
    }

    /// Encrypts the local file (or an embedded replica's file) with a key derived from `key`:
    /// `SQLite3` Multiple Ciphers' `aes256cbc` scheme (every page AES-256-CBC under a key
    /// derived from the passphrase with PBKDF2-SHA256; pages are not authenticated), so no
    /// byte of the file or its WAL is plaintext. Needs the `encryption` feature
    /// (opening fails with a message naming it otherwise); remote mode ignores it (the
    /// server's storage is the server's business). A file must always be opened with the
    /// key it was created with: a wrong key fails at open.
    #[must_use]
    pub fn encryption(mut self, key: Option<memory_seal::MasterKey>) -> Self {
        self.encryption = key;
        self
    }

    /// Migrates the schema only up to `version` instead of the latest.
    ///
    /// For testing upgrades and for staged rollouts; operations that need a later version fail
    /// with a storage error. A database already at a later version is left as it is.
    #[must_use]
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = Some(version);
        self
    }

    /// Validates and returns the configuration.
    ///
    /// `InvalidInput` when no mode is set, a path or URL is empty or malformed, a duration is
    /// zero, `readers` is outside 1 to 64, the schema version is unknown, or the mode needs a
    /// feature this build lacks.
    pub fn build(self) -> Result<TursoConfig> {
        let mode = self.mode.ok_or_else(|| {
            Error::invalid(
                "turso.mode",
                "no database set (local path, remote URL or replica)",
            )
        })?;
        match &mode {
            TursoMode::Local { path } => check_path("turso.path", path)?,
            TursoMode::Remote { url, .. } => {
                require_feature(cfg!(feature = "remote"), "remote")?;
                check_url(url)?;
            }
            TursoMode::Replica {
                path,
                url,
                sync_interval,
                ..
            } => {
                require_feature(cfg!(feature = "replica"), "replica")?;
                check_path("turso.path", path)?;
                if is_memory_path(path) {
                    return Err(Error::invalid(
                        "turso.path",
                        "a replica needs a file, not :memory:",
                    ));
                }
                check_url(url)?;
                if sync_interval.is_some_and(|d| d.is_zero()) {
                    return Err(Error::invalid(
                        "turso.sync_interval",
                        "must be greater than zero",
                    ));
                }
            }
        }
        let busy_timeout = self.busy_timeout.unwrap_or(DEFAULT_BUSY_TIMEOUT);
        let call_timeout = self.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let change_poll_interval = self
            .change_poll_interval
            .unwrap_or(DEFAULT_CHANGE_POLL_INTERVAL);
        for (field, d) in [
            ("turso.busy_timeout", busy_timeout),
            ("turso.call_timeout", call_timeout),
            ("turso.change_poll_interval", change_poll_interval),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be greater than zero"));
            }
        }
        if u32::try_from(busy_timeout.as_millis()).is_err() {
            return Err(Error::invalid(
                "turso.busy_timeout",
                "must be below 49 days",
            ));
        }
        let readers = self.readers.unwrap_or(DEFAULT_READERS);
        if !(1..=MAX_READERS).contains(&readers) {
            return Err(Error::invalid(
                "turso.readers",
                format!("must be between 1 and {MAX_READERS}, got {readers}"),
            ));
        }
        let schema_version = self.schema_version.unwrap_or(SCHEMA_VERSION);
        if !(1..=SCHEMA_VERSION).contains(&schema_version) {
            return Err(Error::invalid(
                "turso.schema_version",
                format!("must be between 1 and {SCHEMA_VERSION}, got {schema_version}"),
            ));
        }
        Ok(TursoConfig {
            mode,
            synchronous: self.synchronous,
            busy_timeout,
            call_timeout,
            readers,
            schema_version,
            background_checkpoints: !self.foreground_checkpoints,
            change_poll_interval,
            open_when_unreachable: self.open_when_unreachable,
            encryption: self.encryption,
        })
    }
}

fn require_feature(enabled: bool, feature: &str) -> Result<()> {
    enabled.then_some(()).ok_or_else(|| {
        Error::invalid(
            "turso.mode",
            format!("this build of memory-storage-turso lacks the `{feature}` feature"),
        )
    })
}

fn check_path(field: &str, path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if path.to_str().is_none() {
        return Err(Error::invalid(field, "must be valid UTF-8"));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<()> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Error::invalid(
            "turso.url",
            format!("{url:?} is not a URL (expected http://, https:// or libsql://)"),
        ));
    };
    if !matches!(
        scheme.to_ascii_lowercase().as_str(),
        "http" | "https" | "libsql"
    ) {
        return Err(Error::invalid(
            "turso.url",
            format!("unsupported scheme {scheme:?} (expected http, https or libsql)"),
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(Error::invalid("turso.url", format!("{url:?} has no host")));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(Error::invalid("turso.url", "must not contain whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_local_and_memory_with_defaults() {
        let c = TursoConfig::local("/tmp/x.db").build().unwrap();
        assert_eq!(c.mode().name(), "local");
        assert_eq!(c.synchronous(), Synchronous::Normal);
        assert_eq!(c.busy_timeout(), DEFAULT_BUSY_TIMEOUT);
        assert_eq!(c.call_timeout(), DEFAULT_CALL_TIMEOUT);
        assert_eq!(c.readers(), DEFAULT_READERS);
        assert_eq!(c.schema_version(), SCHEMA_VERSION);
        assert_eq!(
            TursoConfig::local(MEMORY_PATH)
                .build()
                .unwrap()
                .mode()
                .name(),
            "memory"
        );
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(TursoConfig::builder().build().is_err());
        assert!(TursoConfig::local("").build().is_err());
        assert!(TursoConfig::local("a.db").readers(0).build().is_err());
        assert!(TursoConfig::local("a.db").readers(65).build().is_err());
        assert!(
            TursoConfig::local("a.db")
                .busy_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            TursoConfig::local("a.db")
                .call_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(
            TursoConfig::local("a.db")
                .schema_version(0)
                .build()
                .is_err()
        );
        assert!(
            TursoConfig::local("a.db")
                .schema_version(SCHEMA_VERSION + 1)
                .build()
                .is_err()
        );
        assert!(TursoConfig::local("a.db").schema_version(1).build().is_ok());
    }

    #[cfg(feature = "remote")]
    #[test]
    fn validates_urls() {
        assert!(
            TursoConfig::remote("http://127.0.0.1:8080", None)
                .build()
                .is_ok()
        );
        assert!(
            TursoConfig::remote("libsql://db-org.turso.io", Some("t".into()))
                .build()
                .is_ok()
        );
        for bad in ["", "127.0.0.1:8080", "ftp://x", "http://", "http:// x"] {
            assert!(TursoConfig::remote(bad, None).build().is_err(), "{bad}");
        }
    }

    #[cfg(feature = "replica")]
    #[test]
    fn replica_needs_a_file_and_positive_interval() {
        assert!(
            TursoConfig::replica(MEMORY_PATH, "http://127.0.0.1:1", None)
                .build()
                .is_err()
        );
        assert!(
            TursoConfig::replica("r.db", "http://127.0.0.1:1", None)
                .sync_interval(Duration::ZERO)
                .build()
                .is_err()
        );
        let c = TursoConfig::replica("r.db", "http://127.0.0.1:1", None)
            .sync_interval(Duration::from_secs(1))
            .build()
            .unwrap();
        assert!(matches!(
            c.mode(),
            TursoMode::Replica {
                sync_interval: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn debug_redacts_the_token() {
        let mode = TursoMode::Remote {
            url: "libsql://db.turso.io".into(),
            auth_token: Some("secret-token-123".into()),
        };
        let builder = TursoConfig::builder().mode(mode.clone());
        for text in [format!("{mode:?}"), format!("{builder:?}")] {
            assert!(!text.contains("secret-token-123"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let replica = TursoMode::Replica {
            path: "r.db".into(),
            url: "http://x".into(),
            auth_token: Some("secret-token-123".into()),
            sync_interval: None,
        };
        assert!(!format!("{replica:?}").contains("secret-token-123"));
    }
}
