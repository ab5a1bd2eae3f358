//! [`TursoStorage`]: opening the database, its connections, and the storage traits over them.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use libsql::{Builder, Connection, Database, TransactionBehavior, Value};
use memory_core::{
    ChangeSet, EmbeddingCoverage, EmbeddingStore, Episode, EpisodeCompletion, EpisodeFilter,
    EpisodeId, EpisodeQuery, EpisodeStatus, EpisodeStore, EpisodeSummary, Error, ExecutionStep,
    ExistingLearned, FailureLesson, Feedback, FeedbackOutcome, FeedbackTarget, Heuristic,
    IndexChanges, IndexSnapshot, Learned, LearnedChanges, LearnedId, LearnedItem, LearnedItems,
    LearnedKind, LearnedQuery, LearningStore, LearningUpdate, Namespace, NamespaceStats,
    ObjectKind, Pattern, Result, Storage, StoredEmbedding, TaskType, TextHit, TextQuery,
    check_index_snapshot_size, task_search_text,
};
use tokio::sync::{Mutex, MutexGuard};
use tracing::{debug, info, instrument, warn};

use crate::changes::{ChangeTracker, Probe, next_position, read_head, read_rows};
use crate::checkpoint::{BACKSTOP_PAGES, Checkpointer};
use crate::codec::{
    Cols, EPISODE_COLUMNS, STEP_COLUMNS, SUMMARY_COLUMNS, blob_to_vector, count, decode,
    episode_from_row, from_json, nanos, nanos_clamped, opt_text, step_from_row, step_search_text,
    summary_from_row, text, to_json, vector_to_blob,
};
use crate::config::{TursoConfig, TursoMode, is_memory_path};
use crate::error::{BACKEND, DbResult, DriverError, Failure};
use crate::schema;
use crate::text_index;

/// What [`TursoStorage::salvage_episode_ids`] could read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvagedIds {
    /// The episodes found, in id (time) order.
    pub ids: Vec<EpisodeId>,
    /// Rows of the `episodes` table (any namespace) that could not be read.
    pub unreadable_rows: u64,
    /// What failed (the first few).
    pub problems: Vec<String>,
}

/// What [`TursoStorage::integrity_check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityCheck {
    /// SQLite's findings (empty when none).
    pub problems: Vec<String>,
    /// False when the deadline stopped the check before it read every page.
    pub finished: bool,
}

impl IntegrityCheck {
    /// No problem found (so far, if unfinished).
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Name of the database file inside a data directory ([`TursoStorage::open_in_data_dir`]).
pub const DATA_DIR_FILE: &str = "memory.db";

/// Durable storage on libsql: an embedded local file, a remote `sqld` / Turso Cloud server, or
/// an embedded replica of one.
///
/// Connections are opened once, at [`TursoStorage::open`], and reused: one writer connection
/// behind an async mutex (every write transaction goes through it; read-then-write
/// transactions are `BEGIN IMMEDIATE`) and a small pool of reader connections (local files and
/// replicas; a `:memory:` database and remote servers read through their own connections as
/// configured). Every call is bounded by the configured call timeout and fails with a
/// transient [`Error::Storage`] when it expires. Cloning is cheap and shares the connections.
///
/// See the crate docs for an example and `SCHEMA.md` for the schema.
#[derive(Clone)]
pub struct TursoStorage {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    config: TursoConfig,
    /// Keeps the database (and, for replicas, its background sync) alive.
    #[cfg_attr(
        not(feature = "replica"),
        allow(dead_code, reason = "only held, to keep the database open")
    )]
    db: Database,
    writer: Arc<Mutex<Connection>>,
    /// Empty when reads share the writer (`:memory:`).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Reads go to a remote server over Hrana (see [`Inner::read`]).
    remote_reads: bool,
    /// The schema version after opening; 0 while a server that could not be reached at open
    /// has not been checked yet (see [`TursoConfigBuilder::open_when_unreachable`]).
    ///
    /// [`TursoConfigBuilder::open_when_unreachable`]: crate::TursoConfigBuilder::open_when_unreachable
    schema_version: AtomicU32,
    /// Serializes a deferred schema check.
    schema_check: Mutex<()>,
    /// The longest a write transaction waited to begin (this process's writer connection,
    /// then the database's write lock, which other processes may hold), in microseconds.
    longest_lock_wait_us: std::sync::atomic::AtomicU64,
    /// Background WAL checkpoints (local files, unless turned off).
    checkpointer: Option<Checkpointer>,
    /// The change feed (files and servers; a private `:memory:` database has none).
    changes: Option<ChangeTracker>,
}

impl fmt::Debug for TursoStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TursoStorage")
            .field("mode", &self.inner.config.mode())
            .field("readers", &self.inner.readers.len())
            .field("schema_version", &self.schema_version())
            .finish_non_exhaustive()
    }
}

impl TursoStorage {
    /// Opens (creating if needed) the database described by `config`, applies pending schema
    /// migrations, and opens the connections.
    ///
    /// Local files get their parent directory created, WAL mode, the configured
    /// `synchronous` level, `foreign_keys = ON` and `busy_timeout` on every connection. A
    /// replica syncs from its primary once before it is returned.
    #[instrument(skip_all, fields(mode = config.mode().name()))]
    pub async fn open(config: TursoConfig) -> Result<Self> {
        let timeout = config.call_timeout();
        match tokio::time::timeout(timeout, Self::open_inner(config)).await {
            Ok(result) => result.map_err(|f| f.into_core("open")),
            Err(_) => Err(Failure::Driver(DriverError::Timeout(timeout)).into_core("open")),
        }
    }

    /// Opens a local database file (or `:memory:`) with default settings.
    pub async fn open_local(path: impl AsRef<Path>) -> Result<Self> {
        Self::open(TursoConfig::local(path.as_ref()).build()?).await
    }

    /// Opens `dir/memory.db` with default settings, creating `dir` if needed. The CLI's
    /// embedded default directory is `./.memory/`.
    pub async fn open_in_data_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        memory_files::create_dir_all(dir).map_err(|e| Failure::from(e).into_core("open"))?;
        Self::open_local(dir.join(DATA_DIR_FILE)).await
    }

    async fn open_inner(config: TursoConfig) -> DbResult<Self> {
        let db = build_database(&config).await?;
        let mode = config.mode().clone();
        let (local_file, local) = match &mode {
            TursoMode::Local { path } => (!is_memory_path(path), true),
            _ => (false, false),
        };
        let writer = db.connect()?;
        if local {
            configure_local(&writer, &config, local_file, false).await?;
        }
        let schema_version = match schema::migrate(&writer, config.schema_version()).await {
            Ok(v) => v,
            Err(f) if !local && config.open_when_unreachable() && f.is_transient() => {
                warn!(error = %f, "server unreachable at open: the schema is checked when it answers");
                0
            }
            Err(f) => return Err(f),
        };
        if matches!(mode, TursoMode::Remote { .. }) {
            // The version check ran on the connection's own Hrana stream; forget it so the
            // next statement opens a fresh one instead of reusing a stream that may expire.
            writer.reset().await;
        }
        let reader_count = match &mode {
            TursoMode::Local { path } if is_memory_path(path) => 0,
            _ => config.readers(),
        };
        let mut readers = Vec::with_capacity(reader_count);
        for _ in 0..reader_count {
            let conn = db.connect()?;
            if local {
                configure_local(&conn, &config, local_file, true).await?;
            }
            readers.push(Mutex::new(conn));
        }
        let background_checkpoints = local_file && config.background_checkpoints();
        if background_checkpoints {
            let autocheckpoint = format!("PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}");
            pragma(&writer, &autocheckpoint).await?;
        }
        let writer = Arc::new(Mutex::new(writer));
        let checkpointer = if background_checkpoints {
            let conn = db.connect()?;
            let busy_ms = config.busy_timeout().as_millis();
            pragma(&conn, &format!("PRAGMA busy_timeout = {busy_ms}")).await?;
            Some(Checkpointer::start(conn, &writer))
        } else {
            None
        };
        let changes = match &mode {
            TursoMode::Local { path } if is_memory_path(path) => None,
            TursoMode::Local { .. } => {
                let conn = db.connect()?;
                configure_local(&conn, &config, local_file, true).await?;
                Some(ChangeTracker::new(Probe::DataVersion {
                    conn: Mutex::new(conn),
                    last: std::sync::Mutex::new(None),
                }))
            }
            _ => Some(ChangeTracker::new(Probe::Interval {
                every: config.change_poll_interval(),
                last: std::sync::Mutex::new(None),
            })),
        };
        debug!(
            mode = mode.name(),
            schema_version,
            readers = reader_count,
            "libsql storage open"
        );
        Ok(TursoStorage {
            inner: Arc::new(Inner {
                config,
                db,
                writer,
                readers,
                next_reader: AtomicUsize::new(0),
                remote_reads: matches!(mode, TursoMode::Remote { .. }),
                schema_version: AtomicU32::new(schema_version),
                schema_check: Mutex::new(()),
                longest_lock_wait_us: std::sync::atomic::AtomicU64::new(0),
                checkpointer,
                changes,
            }),
        })
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &TursoConfig {
        &self.inner.config
    }

    /// The longest any write transaction of this handle waited to begin: for its turn on this
    /// process's writer connection, then for the database's write lock (held by another
    /// process's transaction, locally).
    pub fn longest_lock_wait(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.inner.longest_lock_wait_us.load(Ordering::Relaxed))
    }

    /// The schema version the database had after opening; 0 while a server that could not be
    /// reached at open has not been checked yet.
    pub fn schema_version(&self) -> u32 {
        self.inner.schema_version.load(Ordering::Acquire)
    }

    /// What the background WAL checkpoints have done since opening; `None` when there are
    /// none (remote and replica modes, `:memory:`, or turned off with
    /// [`TursoConfigBuilder::background_checkpoints`](crate::TursoConfigBuilder::background_checkpoints)).
    ///
    /// ```no_run
    /// # async fn run() -> memory_core::Result<()> {
    /// let storage = memory_storage_turso::TursoStorage::open_in_data_dir(".memory").await?;
    /// if let Some(done) = storage.wal_checkpoints() {
    ///     println!("{} passive checkpoints, {} WAL restarts", done.passive, done.restarts);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn wal_checkpoints(&self) -> Option<crate::WalCheckpoints> {
        self.inner.checkpointer.as_ref().map(Checkpointer::stats)
    }

    /// Writes a consistent copy of the whole database to the new file `dest` (`VACUUM INTO`:
    /// a snapshot as of one transaction, compacted, in the same format), while readers and
    /// the writer carry on. Local files and embedded replicas only: a remote server's data is
    /// backed up on the server (or with `memory export`), so remote mode is refused.
    ///
    /// `dest` must not exist yet; its parent directory is created.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), memory_core::Error> {
    /// use memory_storage_turso::TursoStorage;
    /// let storage = TursoStorage::open_in_data_dir(".memory").await?;
    /// storage.backup_to("backups/2026-11-22/memory.db".as_ref()).await?;
    /// # Ok(()) }
    /// ```
    #[instrument(skip_all, fields(dest = %dest.display()))]
    pub async fn backup_to(&self, dest: &Path) -> Result<()> {
        if matches!(self.inner.config.mode(), TursoMode::Remote { .. }) {
            return Err(Error::InvalidInput {
                field: "backup".into(),
                reason:
                    "a remote server is backed up on the server; use `export` for a logical copy"
                        .into(),
            });
        }
        create_parent(dest).map_err(|f| f.into_core("backup"))?;
        // The copy goes into a file created here, 0600 (VACUUM INTO fills an empty file):
        // creating it is also the check that nothing is at `dest` yet.
        match memory_files::create_new(dest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::InvalidInput {
                    field: "backup".into(),
                    reason: format!("{} already exists; choose a new path", dest.display()),
                });
            }
            Err(e) => return Err(Failure::from(e).into_core("backup")),
        }
        let dest_text = dest.to_string_lossy().into_owned();
        let inner = &*self.inner;
        let copied = inner
            .call("backup", async {
                let conn = inner.writer().await?;
                conn.execute("VACUUM INTO ?1", vec![Value::Text(dest_text)])
                    .await?;
                Ok(())
            })
            .await;
        if copied.is_err() {
            // Ours, and at best a partial copy.
            let _ = std::fs::remove_file(dest);
        }
        copied
    }

    /// The ids of a namespace's episodes, read from a database that may be damaged: the
    /// `episodes` table is read by rowid ranges, and a range that fails is split until the
    /// rows that cannot be read are isolated and skipped. For `memory export` when the
    /// ordinary listing fails; slower than it (one query per 256 rows).
    pub async fn salvage_episode_ids(&self, ns: &Namespace) -> Result<SalvagedIds> {
        const RANGE: i64 = 256;
        let inner = &*self.inner;
        let n = ns.as_str();
        let bound = inner
            .call("salvage_episode_ids", async {
                inner
                    .read(async |conn| {
                        let mut rows = conn.query("SELECT MAX(rowid) FROM episodes", ()).await?;
                        let max = match rows.next().await? {
                            Some(row) => Cols::new(&row, "episode").opt_i64(0)?,
                            None => None,
                        };
                        Ok(max)
                    })
                    .await
            })
            .await;
        let mut out = SalvagedIds::default();
        let last = match bound {
            Ok(max) => max.unwrap_or(0),
            Err(e) => {
                out.problems
                    .push(format!("the highest row cannot be read: {e}"));
                // Rows are numbered densely from 1: the file cannot hold more than one per
                // 64 bytes.
                let size = match inner.config.mode() {
                    TursoMode::Local { path } => std::fs::metadata(path).map_or(0, |m| m.len()),
                    _ => 0,
                };
                i64::try_from(size / 64).unwrap_or(i64::MAX)
            }
        };
        let mut pending = Vec::new();
        let mut start = 1;
        while start <= last {
            pending.push((start, (start + RANGE).min(last + 1)));
            start += RANGE;
        }
        pending.reverse();
        while let Some((from, to)) = pending.pop() {
            let read = inner
                .call("salvage_episode_ids", async {
                    inner
                        .read(async |conn| {
                            let mut rows = conn
                                .query(
                                    "SELECT id FROM episodes WHERE rowid >= ?1 AND rowid < ?2 \
                                     AND ns = ?3",
                                    vec![Value::Integer(from), Value::Integer(to), text(n)],
                                )
                                .await?;
                            let mut ids = Vec::new();
                            while let Some(row) = rows.next().await? {
                                ids.push(Cols::new(&row, "episode").episode_id(0)?);
                            }
                            Ok(ids)
                        })
                        .await
                })
                .await;
            match read {
                Ok(ids) => out.ids.extend(ids),
                Err(e) if e.is_transient() => return Err(e),
                Err(_) if to - from > 1 => {
                    let mid = from + (to - from) / 2;
                    pending.push((mid, to));
                    pending.push((from, mid));
                }
                Err(e) => {
                    out.unreadable_rows += 1;
                    if out.problems.len() < 20 {
                        out.problems.push(format!("row {from}: {e}"));
                    }
                }
            }
        }
        out.ids.sort_unstable();
        out.ids.dedup();
        Ok(out)
    }

    /// Gives the database a new identity in its change feed (see
    /// [`memory_core::ChangeSet::database`]): caches that hold copies of it under the old
    /// identity drop them. Called after a backup is restored in its place.
    pub async fn renew_identity(&self) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("renew_identity", async {
                inner
                    .write_tx(async |tx| {
                        tx.execute(
                            "UPDATE change_counter SET db_id = lower(hex(randomblob(16))) \
                             WHERE id = 1",
                            (),
                        )
                        .await?;
                        Ok(())
                    })
                    .await
            })
            .await
    }

    /// Checks the database file with `PRAGMA quick_check` on a connection of its own, stopping
    /// after `max_problems` problems or when `deadline` has passed (the check is interrupted;
    /// on a large file it reads every page). `Ok(None)` for a remote server (checked by its
    /// operator) and `:memory:`.
    ///
    /// ```no_run
    /// # async fn run() -> memory_core::Result<()> {
    /// let storage = memory_storage_turso::TursoStorage::open_in_data_dir(".memory").await?;
    /// if let Some(check) = storage.integrity_check(std::time::Duration::from_secs(2), 10).await? {
    ///     println!("ok: {}, finished: {}, {:?}", check.ok(), check.finished, check.problems);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn integrity_check(
        &self,
        deadline: std::time::Duration,
        max_problems: u32,
    ) -> Result<Option<IntegrityCheck>> {
        let local = match self.inner.config.mode() {
            TursoMode::Local { path } => !is_memory_path(path),
            TursoMode::Replica { .. } => true,
            TursoMode::Remote { .. } => false,
        };
        if !local {
            return Ok(None);
        }
        let conn = self
            .inner
            .db
            .connect()
            .map_err(|e| Failure::from(e).into_core("integrity_check"))?;
        let watchdog = {
            let conn = conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                let _ = conn.interrupt();
            })
        };
        let sql = format!("PRAGMA quick_check({})", max_problems.max(1));
        let outcome: DbResult<Vec<String>> = async {
            let mut rows = conn.query(&sql, ()).await?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                out.push(Cols::new(&row, "quick_check").text(0)?);
            }
            Ok(out)
        }
        .await;
        watchdog.abort();
        let check = match outcome {
            Ok(lines) if lines.iter().all(|l| l == "ok") => IntegrityCheck {
                problems: Vec::new(),
                finished: true,
            },
            Ok(lines) => IntegrityCheck {
                problems: lines,
                finished: true,
            },
            Err(Failure::Driver(DriverError::Libsql(libsql::Error::SqliteFailure(code, _))))
                if code & 0xff == 9 =>
            {
                // SQLITE_INTERRUPT: the deadline passed first.
                IntegrityCheck {
                    problems: Vec::new(),
                    finished: false,
                }
            }
            // Reading a damaged page can fail the check itself: that is its finding.
            Err(e) => IntegrityCheck {
                problems: vec![e.to_string()],
                finished: true,
            },
        };
        Ok(Some(check))
    }

    /// Pulls the primary's latest changes into an embedded replica and returns once they are
    /// readable here. A no-op for local files and remote servers (they are always current).
    #[instrument(skip_all)]
    pub async fn sync(&self) -> Result<()> {
        #[cfg(feature = "replica")]
        if matches!(self.inner.config.mode(), TursoMode::Replica { .. }) {
            return self
                .inner
                .call("sync", async {
                    self.inner.db.sync().await?;
                    Ok(())
                })
                .await;
        }
        Ok(())
    }
}

async fn build_database(config: &TursoConfig) -> DbResult<Database> {
    match config.mode() {
        TursoMode::Local { path } => {
            if !is_memory_path(path) {
                create_parent(path)?;
                // SQLite would create the file with the umask's permissions, and give its
                // -wal and -shm files the same: it opens this empty one, 0600, instead.
                memory_files::precreate(path)?;
            }
            Ok(Builder::new_local(path).build().await?)
        }
        #[cfg(feature = "remote")]
        TursoMode::Remote { url, auth_token } => Ok(Builder::new_remote(
            url.clone(),
            auth_token.clone().unwrap_or_default(),
        )
        .build()
        .await?),
        #[cfg(feature = "replica")]
        TursoMode::Replica {
            path,
            url,
            auth_token,
            sync_interval,
        } => {
            create_parent(path)?;
            let mut builder = Builder::new_remote_replica(
                path,
                url.clone(),
                auth_token.clone().unwrap_or_default(),
            )
            .read_your_writes(true);
            if let Some(interval) = sync_interval {
                builder = builder.sync_interval(*interval);
            }
            let db = builder.build().await?;
            restrict_replica_files(path)?;
            if let Err(e) = db.sync().await {
                let failure = Failure::from(e);
                // A replica reads its local file: it opens while the primary is down and
                // catches up at the next sync.
                if !(config.open_when_unreachable() && failure.is_transient()) {
                    return Err(failure);
                }
                warn!(error = %failure, "primary unreachable at open: reading the local replica until it answers");
            }
            Ok(db)
        }
        #[allow(unreachable_patterns)]
        other => Err(DriverError::Setup(format!(
            "mode {} is not compiled into this build",
            other.name()
        ))
        .into()),
    }
}

/// Creates the missing directories above `path`, 0700.
fn create_parent(path: &Path) -> DbResult<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        memory_files::create_dir_all(parent)?;
    }
    Ok(())
}

/// Restricts the files libsql created for an embedded replica at `path` (the database, its
/// WAL files and the replication index) to 0600: libsql refuses a database file it did not
/// create, so they cannot be created by this crate first.
#[cfg(feature = "replica")]
fn restrict_replica_files(path: &Path) -> DbResult<()> {
    let name = path.as_os_str();
    for suffix in ["", "-wal", "-shm", "-client_wal_index"] {
        let mut file = name.to_owned();
        file.push(suffix);
        memory_files::restrict(Path::new(&file))?;
    }
    Ok(())
}

/// Runs a pragma and returns its first column as text, if it returns a row.
async fn pragma(conn: &Connection, sql: &str) -> DbResult<Option<String>> {
    let mut rows = conn.query(sql, ()).await?;
    let value = match rows.next().await? {
        Some(row) => match row.get_value(0)? {
            Value::Text(s) => Some(s),
            Value::Integer(n) => Some(n.to_string()),
            _ => None,
        },
        None => None,
    };
    Ok(value)
}

/// Puts the file in WAL mode. WAL is a property of the file, so only the first opener of a
/// new file switches it; everyone else finds it set and writes nothing.
///
/// The switch needs an exclusive lock, and SQLite answers a contended switch with
/// `SQLITE_BUSY` at once instead of calling the busy handler (many handles opening one new
/// file at the same moment hit this). So a busy switch is retried, with a short growing
/// pause, until `busy_timeout` has passed, the same patience every other statement gets.
async fn enable_wal(conn: &Connection, busy_timeout: std::time::Duration) -> DbResult<()> {
    let deadline = tokio::time::Instant::now() + busy_timeout;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let mode = match pragma(conn, "PRAGMA journal_mode").await? {
            Some(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            _ => pragma(conn, "PRAGMA journal_mode = WAL").await,
        };
        match mode {
            Ok(Some(m)) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(other) => {
                return Err(
                    DriverError::Setup(format!("journal_mode is {other:?}, expected wal")).into(),
                );
            }
            Err(Failure::Driver(DriverError::Libsql(e)))
                if is_busy(&e) && tokio::time::Instant::now() < deadline =>
            {
                debug!(error = %e, "journal mode switch busy; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &libsql::Error) -> bool {
    matches!(e, libsql::Error::SqliteFailure(code, _) if matches!(code & 0xff, 5 | 6))
}

/// Per-connection settings of local databases.
async fn configure_local(
    conn: &Connection,
    config: &TursoConfig,
    file: bool,
    reader: bool,
) -> DbResult<()> {
    // Set first, so the pragmas below wait for locks held by other openers.
    let busy_ms = config.busy_timeout().as_millis();
    pragma(conn, &format!("PRAGMA busy_timeout = {busy_ms}")).await?;
    if file {
        enable_wal(conn, config.busy_timeout()).await?;
    }
    pragma(
        conn,
        &format!(
            "PRAGMA synchronous = {}",
            config.synchronous().pragma_value()
        ),
    )
    .await?;
    pragma(conn, "PRAGMA foreign_keys = ON").await?;
    if pragma(conn, "PRAGMA foreign_keys").await?.as_deref() != Some("1") {
        return Err(DriverError::Setup("foreign_keys could not be enabled".into()).into());
    }
    if reader {
        pragma(conn, "PRAGMA query_only = ON").await?;
    }
    Ok(())
}

impl Inner {
    /// Runs `fut` within the call timeout and maps its failure to the public error.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = DbResult<T>>,
    ) -> Result<T> {
        let timeout = self.config.call_timeout();
        let checked = async {
            self.check_schema().await?;
            fut.await
        };
        if let Ok(result) = tokio::time::timeout(timeout, checked).await {
            result.map_err(|f| f.into_core(operation))
        } else {
            warn!(operation, ?timeout, "libsql call timed out");
            Err(Failure::Driver(DriverError::Timeout(timeout)).into_core(operation))
        }
    }

    /// Runs the schema check that could not run at open (the server was unreachable): every
    /// call waits for it, and fails with its (transient) error until the server answers.
    async fn check_schema(&self) -> DbResult<()> {
        if self.schema_version.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        let _one = self.schema_check.lock().await;
        if self.schema_version.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        let conn = self.writer().await?;
        let version = schema::migrate(&conn, self.config.schema_version()).await;
        if self.remote_reads {
            conn.reset().await;
        }
        let version = version?;
        info!(schema_version = version, "server reachable: schema checked");
        self.schema_version.store(version, Ordering::Release);
        Ok(())
    }

    /// The writer connection. A transaction left open by a cancelled call (timeout) is rolled
    /// back first.
    async fn writer(&self) -> DbResult<MutexGuard<'_, Connection>> {
        let conn = self.writer.lock().await;
        if !conn.is_autocommit() {
            warn!(
                "writer connection was left inside a transaction by a cancelled call; rolling back"
            );
            conn.execute("ROLLBACK", ()).await?;
        }
        Ok(conn)
    }

    /// A reader connection: a free one if any, else the next in turn.
    async fn reader(&self) -> DbResult<MutexGuard<'_, Connection>> {
        let n = self.readers.len();
        if n == 0 {
            return self.writer().await;
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                return Ok(guard);
            }
        }
        Ok(self.readers[start].lock().await)
    }

    /// Runs `body` in an IMMEDIATE (write-locking) transaction on the writer connection:
    /// committed when it returns `Ok`, rolled back when it returns `Err`.
    pub(crate) async fn write_tx<T>(
        &self,
        body: impl AsyncFnOnce(&Connection) -> DbResult<T>,
    ) -> DbResult<T> {
        let asked = std::time::Instant::now();
        let conn = self.writer().await?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await?;
        let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.longest_lock_wait_us
            .fetch_max(waited, Ordering::Relaxed);
        match body(&tx).await {
            Ok(value) => {
                tx.commit().await?;
                if let Some(c) = &self.checkpointer {
                    c.committed();
                }
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    warn!(error = %rollback, "rollback after a failed write failed");
                }
                Err(e)
            }
        }
    }

    /// Like [`Inner::write_tx`], for writes that change cacheable rows: the transaction first
    /// takes the next change-counter position, which `body` stamps on the rows it writes;
    /// once committed, the position is recorded as this handle's own.
    pub(crate) async fn write_tx_stamped<T>(
        &self,
        body: impl AsyncFnOnce(&Connection, i64) -> DbResult<T>,
    ) -> DbResult<T> {
        let mut taken = None;
        let value = self
            .write_tx(async |tx| {
                let position = next_position(tx).await?;
                taken = Some(position);
                body(tx, position).await
            })
            .await?;
        if let (Some(c), Some(p)) = (&self.changes, taken) {
            c.committed(p);
        }
        Ok(value)
    }

    /// Runs read-only `body` on a reader connection.
    ///
    /// Remote (Hrana) reads run in a deferred transaction on a fresh stream of the pooled HTTP
    /// connection, which the commit closes: no server-side stream outlives the call (an idle
    /// stream would expire on the server and fail the next call), and a multi-query read sees
    /// one snapshot. Local files and replicas read their local connection directly.
    pub(crate) async fn read<T>(
        &self,
        body: impl AsyncFnOnce(&Connection) -> DbResult<T>,
    ) -> DbResult<T> {
        let conn = self.reader().await?;
        if !self.remote_reads {
            return body(&conn).await;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .await?;
        match body(&tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    debug!(error = %rollback, "rollback after a failed read failed");
                }
                Err(e)
            }
        }
    }
}

/// Rows per multi-row `INSERT` (at 11 columns, far below SQLite's 32,766 bound parameters).
const ROWS_PER_INSERT: usize = 500;

/// `head VALUES (?, ...), (?, ...) tail` for `rows` rows of `columns` values each: one
/// statement (one round trip to a server) instead of one per row.
fn multi_row(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    format!("{head} {} {tail}", values_list(columns, rows, 1))
}

/// `VALUES (?first, ...), (...)`: `rows` rows of `columns` placeholders, numbered from
/// `first`.
fn values_list(columns: usize, rows: usize, first: usize) -> String {
    let mut sql = String::with_capacity(8 + rows * columns * 6);
    sql.push_str("VALUES ");
    let mut n = first;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
            sql.push_str(&n.to_string());
            n += 1;
        }
        sql.push(')');
    }
    sql
}

/// Inserts rows (each `columns` values) with multi-row statements.
async fn insert_rows(
    conn: &Connection,
    head: &str,
    columns: usize,
    rows: Vec<Vec<Value>>,
    tail: &str,
) -> DbResult<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        let sql = multi_row(head, columns, chunk.len(), tail);
        conn.execute(&sql, chunk.into_iter().flatten().collect::<Vec<_>>())
            .await?;
    }
    Ok(())
}

/// A statement built at run time from fixed SQL fragments and bound values: user values only
/// ever enter as `?N` placeholders.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) values: Vec<Value>,
}

impl Sql {
    /// Appends fixed SQL.
    pub(crate) fn push(&mut self, fragment: &str) -> &mut Self {
        self.text.push_str(fragment);
        self
    }

    /// Binds `value` as the next placeholder and appends `?N`.
    pub(crate) fn bind(&mut self, value: Value) -> &mut Self {
        self.values.push(value);
        self.text.push('?');
        self.text.push_str(&self.values.len().to_string());
        self
    }

    /// Appends `head ?N tail`, binding `value`.
    pub(crate) fn cond(&mut self, head: &str, value: Value, tail: &str) -> &mut Self {
        self.push(head).bind(value).push(tail)
    }
}

/// Appends the `WHERE` conditions (each starting with ` AND`) of an [`EpisodeFilter`] over the
/// `episodes` table aliased `e`.
pub(crate) fn filter_sql(f: &EpisodeFilter, sql: &mut Sql) {
    if let Some(t) = f.task_type {
        sql.cond(" AND e.task_type = ", text(t.as_str()), "");
    }
    if let Some(d) = &f.domain {
        sql.cond(" AND e.domain = ", text(d), "");
    }
    if let Some(l) = &f.language {
        sql.cond(" AND e.language = ", text(l), "");
    }
    if let Some(fw) = &f.framework {
        sql.cond(" AND e.framework = ", text(fw), "");
    }
    if let Some(tag) = &f.tag {
        sql.cond(
            " AND EXISTS (SELECT 1 FROM episode_tags g WHERE g.ns = e.ns AND g.tag = ",
            text(tag),
            " AND g.episode_id = e.id)",
        );
    }
    match f.status {
        None => {}
        Some(EpisodeStatus::InProgress) => {
            sql.push(" AND e.outcome_kind IS NULL");
        }
        Some(EpisodeStatus::AnyCompleted) => {
            sql.push(" AND e.outcome_kind IS NOT NULL");
        }
        Some(EpisodeStatus::Completed(kind)) => {
            sql.cond(" AND e.outcome_kind = ", text(kind.as_str()), "");
        }
    }
    if let Some(t) = f.started_after {
        sql.cond(
            " AND e.started_at >= ",
            Value::Integer(nanos_clamped(t)),
            "",
        );
    }
    if let Some(t) = f.started_before {
        sql.cond(" AND e.started_at < ", Value::Integer(nanos_clamped(t)), "");
    }
}

/// Appends the `WHERE` conditions of a [`LearnedQuery`]'s context and status. An item field
/// that is unset (NULL) matches any query value.
fn learned_sql(q: &LearnedQuery, sql: &mut Sql) {
    if !q.include_inactive {
        sql.push(" AND status = 'active'");
    }
    if let Some(t) = q.task_type {
        sql.cond(
            " AND (task_type IS NULL OR task_type = ",
            text(t.as_str()),
            ")",
        );
    }
    if let Some(d) = &q.domain {
        sql.cond(" AND (domain IS NULL OR domain = ", text(d), ")");
    }
    if let Some(l) = &q.language {
        sql.cond(" AND (language IS NULL OR language = ", text(l), ")");
    }
}

fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const INSERT_EPISODE: &str = "INSERT INTO episodes (ns, id, task_description, task_type, \
     domain, language, framework, complexity, tags, started_at, completed_at, outcome_kind, \
     outcome, reward_total, reward, reflection) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
     ON CONFLICT (ns, id) DO NOTHING";

const INSERT_TAGS: &str = "INSERT INTO episode_tags (ns, tag, episode_id)";

const INSERT_STEPS: &str = "INSERT INTO steps (ns, episode_id, step_number, at, tool, action, \
     parameters, status, result_text, latency_ms, tokens)";
/// Returns the numbers of the steps actually inserted (replays are skipped).
const INSERT_STEPS_TAIL: &str =
    "ON CONFLICT (ns, episode_id, step_number) DO NOTHING RETURNING step_number";

/// The values of a step row after `ns, episode_id, step_number` (and the key, for keyed
/// rows): `at, tool, action, parameters, status, result_text, latency_ms, tokens`.
fn step_values(s: &ExecutionStep) -> DbResult<[Value; 8]> {
    Ok([
        Value::Integer(nanos("step.timestamp", s.timestamp)?),
        text(&s.input.tool),
        text(&s.input.action),
        Value::Text(to_json("step.parameters", &s.input.parameters)?),
        text(s.input.result.status()),
        text(s.input.result.text()),
        Value::Integer(s.input.latency_ms as i64),
        s.input
            .tokens
            .map_or(Value::Null, |t| Value::Integer(t as i64)),
    ])
}

/// Inserts `rows` keyed steps of one episode (`?1` ns, `?2` episode id, then per row: order,
/// key and the [`step_values`]), numbering the ones whose key is not stored yet after the
/// highest stored number, in order. Returns `(step_number, step_key)` of each inserted row.
fn keyed_insert_sql(rows: usize) -> String {
    format!(
        "INSERT INTO steps (ns, episode_id, step_number, step_key, at, tool, action, \
         parameters, status, result_text, latency_ms, tokens) \
         SELECT ?1, ?2, base.m + ROW_NUMBER() OVER (ORDER BY v.column1), v.column2, \
         v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, \
         v.column10 \
         FROM ({}) AS v, \
         (SELECT COALESCE(MAX(step_number), 0) AS m FROM steps \
          WHERE ns = ?1 AND episode_id = ?2) AS base \
         WHERE NOT EXISTS (SELECT 1 FROM steps s \
          WHERE s.ns = ?1 AND s.episode_id = ?2 AND s.step_key = v.column2) \
         RETURNING step_number, step_key",
        values_list(10, rows, 3)
    )
}

/// Columns of the learned-item tables as written by the upserts (patterns and heuristics
/// also carry their change stamp).
const LEARNED_COLUMNS: usize = 11;
const STAMPED_LEARNED_COLUMNS: usize = 12;

const UPSERT_PATTERNS: (&str, &str) = (
    "INSERT INTO patterns (ns, id, kind, task_type, domain, language, status, occurrences, \
     successes, last_seen, body, changed_seq)",
    "ON CONFLICT (ns, id) DO UPDATE SET kind = excluded.kind, task_type = excluded.task_type, \
     domain = excluded.domain, language = excluded.language, status = excluded.status, \
     occurrences = excluded.occurrences, successes = excluded.successes, \
     last_seen = excluded.last_seen, body = excluded.body, changed_seq = excluded.changed_seq",
);

const UPSERT_HEURISTICS: (&str, &str) = (
    "INSERT INTO heuristics (ns, id, condition_key, task_type, domain, language, status, \
     support, against, last_seen, body, changed_seq)",
    "ON CONFLICT (ns, id) DO UPDATE SET condition_key = excluded.condition_key, \
     task_type = excluded.task_type, domain = excluded.domain, language = excluded.language, \
     status = excluded.status, support = excluded.support, against = excluded.against, \
     last_seen = excluded.last_seen, body = excluded.body, changed_seq = excluded.changed_seq",
);

const UPSERT_LESSONS: (&str, &str) = (
    "INSERT INTO lessons (ns, id, task_type, domain, language, status, failed_tool, \
     error_class, occurrences, last_seen, body)",
    "ON CONFLICT (ns, id) DO UPDATE SET task_type = excluded.task_type, domain = excluded.domain, \
     language = excluded.language, status = excluded.status, failed_tool = excluded.failed_tool, \
     error_class = excluded.error_class, occurrences = excluded.occurrences, \
     last_seen = excluded.last_seen, body = excluded.body",
);

fn pattern_params(ns: &str, p: &Pattern, position: i64) -> DbResult<Vec<Value>> {
    Ok(vec![
        text(ns),
        text(&p.id.0),
        text(p.kind.name()),
        opt_text(p.context.task_type.map(TaskType::as_str)),
        opt_text(p.context.domain.as_deref()),
        opt_text(p.context.language.as_deref()),
        text(p.status.name()),
        Value::Integer(count(p.occurrences)),
        Value::Integer(count(p.successes)),
        Value::Integer(nanos_clamped(p.last_seen)),
        Value::Text(to_json("pattern", p)?),
        Value::Integer(position),
    ])
}

fn heuristic_params(ns: &str, h: &Heuristic, position: i64) -> DbResult<Vec<Value>> {
    Ok(vec![
        text(ns),
        text(&h.id.0),
        text(&h.condition_key),
        opt_text(h.context.task_type.map(TaskType::as_str)),
        opt_text(h.context.domain.as_deref()),
        opt_text(h.context.language.as_deref()),
        text(h.status.name()),
        Value::Integer(count(h.support)),
        Value::Integer(count(h.against)),
        Value::Integer(nanos_clamped(h.last_seen)),
        Value::Text(to_json("heuristic", h)?),
        Value::Integer(position),
    ])
}

fn lesson_params(ns: &str, l: &FailureLesson) -> DbResult<Vec<Value>> {
    Ok(vec![
        text(ns),
        text(&l.id.0),
        opt_text(l.context.task_type.map(TaskType::as_str)),
        opt_text(l.context.domain.as_deref()),
        opt_text(l.context.language.as_deref()),
        text(l.status.name()),
        text(&l.failed_tool),
        text(&l.error_class),
        Value::Integer(count(l.occurrences)),
        Value::Integer(nanos_clamped(l.last_seen)),
        Value::Text(to_json("lesson", l)?),
    ])
}

impl Inner {
    /// Inserts the steps that are not stored yet, numbered as
    /// [`memory_core::steps_to_append`] describes (multi-row statements); returns how many
    /// were inserted and the full-text of those.
    ///
    /// A keyed step is numbered by the statement itself, after the highest number stored
    /// (`MAX` under the transaction's write lock, `ROW_NUMBER` over the rows not stored yet),
    /// so writers numbering from different copies of the episode never collide. A step
    /// without a key (journaled by an earlier version) keeps its number, as before.
    async fn insert_steps(
        conn: &Connection,
        ns: &str,
        id: &str,
        steps: &[ExecutionStep],
    ) -> DbResult<(i64, String)> {
        // (number, key) of every step inserted.
        let mut inserted = std::collections::HashSet::new();
        let legacy: Vec<&ExecutionStep> = steps.iter().filter(|s| s.key == 0).collect();
        for chunk in legacy.chunks(ROWS_PER_INSERT) {
            let mut params = Vec::with_capacity(chunk.len() * 11);
            for s in chunk {
                params.push(text(ns));
                params.push(text(id));
                params.push(Value::Integer(i64::from(s.step_number)));
                params.extend(step_values(s)?);
            }
            let sql = multi_row(INSERT_STEPS, 11, chunk.len(), INSERT_STEPS_TAIL);
            let mut rows = conn.query(&sql, params).await?;
            while let Some(row) = rows.next().await? {
                inserted.insert((Cols::new(&row, "step").i64(0)?, 0));
            }
        }
        let mut seen = std::collections::HashSet::new();
        let keyed: Vec<&ExecutionStep> = steps
            .iter()
            .filter(|s| s.key != 0 && seen.insert(s.key))
            .collect();
        for chunk in keyed.chunks(ROWS_PER_INSERT) {
            let mut params = Vec::with_capacity(2 + chunk.len() * 10);
            params.push(text(ns));
            params.push(text(id));
            for (ord, s) in chunk.iter().enumerate() {
                params.push(Value::Integer(ord as i64));
                params.push(Value::Integer(s.key as i64));
                params.extend(step_values(s)?);
            }
            let sql = keyed_insert_sql(chunk.len());
            let mut rows = conn.query(&sql, params).await?;
            while let Some(row) = rows.next().await? {
                let c = Cols::new(&row, "step");
                inserted.insert((c.i64(0)?, c.i64(1)?));
            }
        }
        let mut body = String::new();
        let mut count = 0;
        for s in steps {
            let key = if s.key == 0 { 0 } else { s.key as i64 };
            let found = if key == 0 {
                inserted.remove(&(i64::from(s.step_number), 0))
            } else {
                let hit = inserted.iter().find(|(_, k)| *k == key).copied();
                hit.is_some_and(|h| inserted.remove(&h))
            };
            if found {
                count += 1;
                if !body.is_empty() {
                    body.push('\n');
                }
                body.push_str(&step_search_text(s));
            }
        }
        Ok((count, body))
    }

    /// Records step rows, the episode's step count and change stamp, and the steps'
    /// full-text row.
    async fn append_step_rows(
        conn: &Connection,
        ns: &str,
        id: &str,
        steps: &[ExecutionStep],
        position: i64,
    ) -> DbResult<()> {
        let (inserted, body) = Self::insert_steps(conn, ns, id, steps).await?;
        if inserted > 0 {
            conn.execute(
                "UPDATE episodes SET step_count = step_count + ?3, changed_seq = ?4 \
                 WHERE ns = ?1 AND id = ?2",
                vec![
                    text(ns),
                    text(id),
                    Value::Integer(inserted),
                    Value::Integer(position),
                ],
            )
            .await?;
            text_index::insert(conn, &body, ns, id, "steps").await?;
        }
        Ok(())
    }

    /// Loads the stored items an update names (see [`LearningUpdate`]).
    async fn load_existing(
        conn: &Connection,
        ns: &str,
        update: &LearningUpdate,
    ) -> DbResult<ExistingLearned> {
        async fn bodies(
            conn: &Connection,
            sql_head: &str,
            ns: &str,
            keys: Vec<String>,
        ) -> DbResult<Vec<String>> {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let sql = format!("{sql_head} ({}) ORDER BY id", placeholders(2, keys.len()));
            let mut params = Vec::with_capacity(keys.len() + 1);
            params.push(text(ns));
            params.extend(keys.into_iter().map(Value::Text));
            let mut rows = conn.query(&sql, params).await?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                out.push(Cols::new(&row, "learned item").text(0)?);
            }
            Ok(out)
        }
        let patterns = bodies(
            conn,
            "SELECT body FROM patterns WHERE ns = ?1 AND id IN",
            ns,
            update.pattern_ids().into_iter().map(|p| p.0).collect(),
        )
        .await?
        .iter()
        .map(|b| from_json("pattern", b))
        .collect::<DbResult<Vec<Pattern>>>()?;
        let heuristics = bodies(
            conn,
            "SELECT body FROM heuristics WHERE ns = ?1 AND condition_key IN",
            ns,
            update.condition_keys(),
        )
        .await?
        .iter()
        .map(|b| from_json("heuristic", b))
        .collect::<DbResult<Vec<Heuristic>>>()?;
        let lessons = bodies(
            conn,
            "SELECT body FROM lessons WHERE ns = ?1 AND id IN",
            ns,
            update.lesson_ids().into_iter().map(|l| l.0).collect(),
        )
        .await?
        .iter()
        .map(|b| from_json("lesson", b))
        .collect::<DbResult<Vec<FailureLesson>>>()?;
        Ok(ExistingLearned {
            patterns,
            heuristics,
            lessons,
        })
    }

    /// Upserts every item, stamping patterns and heuristics with `position`.
    async fn write_items<'a>(
        conn: &Connection,
        ns: &str,
        position: i64,
        patterns: impl Iterator<Item = &'a Pattern>,
        heuristics: impl Iterator<Item = &'a Heuristic>,
        lessons: impl Iterator<Item = &'a FailureLesson>,
    ) -> DbResult<()> {
        let rows = patterns
            .map(|p| pattern_params(ns, p, position))
            .collect::<DbResult<Vec<_>>>()?;
        let (head, tail) = UPSERT_PATTERNS;
        insert_rows(conn, head, STAMPED_LEARNED_COLUMNS, rows, tail).await?;
        let rows = heuristics
            .map(|h| heuristic_params(ns, h, position))
            .collect::<DbResult<Vec<_>>>()?;
        let (head, tail) = UPSERT_HEURISTICS;
        insert_rows(conn, head, STAMPED_LEARNED_COLUMNS, rows, tail).await?;
        let rows = lessons
            .map(|l| lesson_params(ns, l))
            .collect::<DbResult<Vec<_>>>()?;
        let (head, tail) = UPSERT_LESSONS;
        insert_rows(conn, head, LEARNED_COLUMNS, rows, tail).await?;
        Ok(())
    }

    /// Loads, merges (in core) and writes back a learning update, inside the caller's
    /// transaction.
    async fn merge_learning(
        conn: &Connection,
        ns: &str,
        update: &LearningUpdate,
        position: i64,
    ) -> DbResult<LearnedChanges> {
        let existing = Self::load_existing(conn, ns, update).await?;
        let changes = update.apply(existing);
        Self::write_items(
            conn,
            ns,
            position,
            changes.patterns.iter().map(|c| &c.item),
            changes.heuristics.iter().map(|c| &c.item),
            changes.lessons.iter().map(|c| &c.item),
        )
        .await?;
        Ok(changes)
    }

    /// One JSON `body` by primary key, from `sql` (`... WHERE ns = ?1 AND id = ?2`).
    async fn body_by_id(&self, sql: &str, ns: &str, id: &str) -> DbResult<Option<String>> {
        self.read(async |conn| {
            let mut rows = conn.query(sql, vec![text(ns), text(id)]).await?;
            match rows.next().await? {
                Some(row) => Ok(Some(Cols::new(&row, "learned item").text(0)?)),
                None => Ok(None),
            }
        })
        .await
    }

    /// JSON bodies of a learned-item query.
    async fn bodies(&self, sql: &str, params: Vec<Value>) -> DbResult<Vec<String>> {
        self.read(async |conn| {
            let mut rows = conn.query(sql, params).await?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                out.push(Cols::new(&row, "learned item").text(0)?);
            }
            Ok(out)
        })
        .await
    }

    /// A page of the learned items of `kind` matching `q`, in the order the storage contract
    /// gives (most occurrences, or support, first; ties by id).
    async fn query_learned(
        &self,
        kind: LearnedKind,
        ns: &Namespace,
        q: &LearnedQuery,
    ) -> DbResult<Vec<LearnedItem>> {
        let mut sql = Sql::default();
        sql.push("SELECT body FROM ")
            .push(table(kind))
            .cond(" WHERE ns = ", text(ns.as_str()), "");
        learned_sql(q, &mut sql);
        if let (LearnedKind::Pattern, Some(k)) = (kind, q.kind.as_deref()) {
            sql.push(" AND kind").cond(" = ", text(k), "");
        }
        let order = match kind {
            LearnedKind::Heuristic => "support DESC, id ASC",
            LearnedKind::Pattern | LearnedKind::Lesson => "occurrences DESC, id ASC",
        };
        sql.push(" ORDER BY ")
            .push(order)
            .cond(" LIMIT ", Value::Integer(i64::from(q.limit)), "")
            .cond(" OFFSET ", Value::Integer(i64::from(q.offset)), "");
        self.bodies(&sql.text, sql.values)
            .await?
            .iter()
            .map(|b| decode_learned(kind, b))
            .collect()
    }
}

/// The table a kind of learned item is stored in.
fn table(kind: LearnedKind) -> &'static str {
    match kind {
        LearnedKind::Pattern => "patterns",
        LearnedKind::Heuristic => "heuristics",
        LearnedKind::Lesson => "lessons",
    }
}

/// A stored JSON body as an item of `kind`.
fn decode_learned(kind: LearnedKind, body: &str) -> DbResult<LearnedItem> {
    fn decode<T: Learned + serde::de::DeserializeOwned>(body: &str) -> DbResult<LearnedItem> {
        Ok(from_json::<T>(T::KIND.name(), body)?.into_item())
    }
    match kind {
        LearnedKind::Pattern => decode::<Pattern>(body),
        LearnedKind::Heuristic => decode::<Heuristic>(body),
        LearnedKind::Lesson => decode::<FailureLesson>(body),
    }
}

fn conflict_completed(id: EpisodeId) -> Error {
    Error::Conflict {
        kind: ObjectKind::Episode,
        id: id.to_string(),
        reason: "is already completed; steps can no longer be added".into(),
    }
}

/// Whether the episode exists (`None`) and is completed.
pub(crate) async fn episode_state(conn: &Connection, ns: &str, id: &str) -> DbResult<Option<bool>> {
    let mut rows = conn
        .query(
            "SELECT outcome_kind IS NOT NULL FROM episodes WHERE ns = ?1 AND id = ?2",
            vec![text(ns), text(id)],
        )
        .await?;
    match rows.next().await? {
        Some(row) => Ok(Some(Cols::new(&row, "episode").i64(0)? != 0)),
        None => Ok(None),
    }
}

/// An episode with its steps in order, `None` if absent.
async fn read_episode(conn: &Connection, ns: &str, id: &str) -> DbResult<Option<Episode>> {
    let sql = format!("SELECT {EPISODE_COLUMNS} FROM episodes WHERE ns = ?1 AND id = ?2");
    let mut rows = conn.query(&sql, vec![text(ns), text(id)]).await?;
    let Some(row) = rows.next().await? else {
        return Ok(None);
    };
    let mut episode = episode_from_row(&row)?;
    drop(rows);
    let sql = format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE ns = ?1 AND episode_id = ?2 ORDER BY step_number"
    );
    let mut rows = conn.query(&sql, vec![text(ns), text(id)]).await?;
    while let Some(row) = rows.next().await? {
        episode.steps.push(step_from_row(&row)?);
    }
    Ok(Some(episode))
}

/// The transaction of [`EpisodeStore::complete_episode`]: records the outcome of an
/// in-progress episode (`update` binds `?1..?8`), indexes its reflection and merges the
/// learning, stamping what it writes with `position`. `Ok(None)` when it was already
/// completed.
async fn complete_in_tx(
    tx: &Connection,
    ns: &str,
    id: &str,
    c: &EpisodeCompletion,
    mut update: Vec<Value>,
    position: i64,
) -> DbResult<Option<LearnedChanges>> {
    update.push(Value::Integer(position));
    // Completes only an in-progress episode; when nothing changed, find out why.
    let changed = tx
        .execute(
            "UPDATE episodes SET outcome_kind = ?3, outcome = ?4, reward_total = ?5, \
             reward = ?6, reflection = ?7, completed_at = ?8, changed_seq = ?9 \
             WHERE ns = ?1 AND id = ?2 AND outcome_kind IS NULL",
            update,
        )
        .await?;
    if changed == 0 {
        return match episode_state(tx, ns, id).await? {
            None => Err(Error::not_found(ObjectKind::Episode, c.episode_id).into()),
            Some(_) => Ok(None), // already completed: a replay changes nothing
        };
    }
    text_index::insert(tx, &c.reflection.text(), ns, id, "reflection").await?;
    Ok(Some(
        Inner::merge_learning(tx, ns, &c.learning, position).await?,
    ))
}

/// The transaction of [`LearningStore::record_feedback`]: replaces the event of (target,
/// episode) and recomputes the target's effectiveness or votes from all its events.
async fn feedback_in_tx(
    tx: &Connection,
    ns: &str,
    fb: &Feedback,
    recorded_at: i64,
    position: i64,
) -> DbResult<()> {
    let (kind, target_id) = (fb.target.kind(), fb.target.id());
    let select = match fb.target {
        FeedbackTarget::Pattern(_) => "SELECT body FROM patterns WHERE ns = ?1 AND id = ?2",
        FeedbackTarget::Heuristic(_) => "SELECT body FROM heuristics WHERE ns = ?1 AND id = ?2",
    };
    let mut rows = tx.query(select, vec![text(ns), text(target_id)]).await?;
    let Some(row) = rows.next().await? else {
        let object = match fb.target {
            FeedbackTarget::Pattern(_) => ObjectKind::Pattern,
            FeedbackTarget::Heuristic(_) => ObjectKind::Heuristic,
        };
        return Err(Error::not_found(object, target_id).into());
    };
    let body = Cols::new(&row, "learned item").text(0)?;
    drop(rows);

    let key = || vec![text(ns), text(kind), text(target_id)];
    let mut params = key();
    params.push(Value::Text(fb.episode_id.to_string()));
    tx.execute(
        "DELETE FROM feedback \
         WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 AND episode_id = ?4",
        params.clone(),
    )
    .await?;
    params.push(text(fb.outcome.as_str()));
    params.push(Value::Integer(recorded_at));
    tx.execute(
        "INSERT INTO feedback (ns, target_kind, target_id, episode_id, outcome, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params,
    )
    .await?;

    let mut rows = tx
        .query(
            "SELECT outcome, COUNT(*) FROM feedback \
             WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 GROUP BY outcome",
            key(),
        )
        .await?;
    let mut eff = memory_core::Effectiveness::default();
    while let Some(row) = rows.next().await? {
        let c = Cols::new(&row, "feedback");
        let n = c.i64(1)? as u64;
        match c.parse::<FeedbackOutcome>(0)? {
            FeedbackOutcome::Helped => eff.helped = n,
            FeedbackOutcome::NoEffect => eff.no_effect = n,
            FeedbackOutcome::Hindered => eff.hindered = n,
        }
    }
    drop(rows);

    let (no_patterns, no_heuristics, no_lessons) = (
        std::iter::empty::<&Pattern>(),
        std::iter::empty::<&Heuristic>(),
        std::iter::empty::<&FailureLesson>(),
    );
    match fb.target {
        FeedbackTarget::Pattern(_) => {
            let mut p: Pattern = from_json("pattern", &body)?;
            p.effectiveness = eff;
            Inner::write_items(
                tx,
                ns,
                position,
                std::iter::once(&p),
                no_heuristics,
                no_lessons,
            )
            .await
        }
        FeedbackTarget::Heuristic(_) => {
            let mut h: Heuristic = from_json("heuristic", &body)?;
            h.votes_up = eff.helped;
            h.votes_down = eff.hindered;
            Inner::write_items(
                tx,
                ns,
                position,
                no_patterns,
                std::iter::once(&h),
                no_lessons,
            )
            .await
        }
    }
}

#[async_trait]
impl EpisodeStore for TursoStorage {
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode.id))]
    async fn create_episode(&self, ns: &Namespace, episode: &Episode) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("create_episode", async {
                let (ns, id) = (ns.as_str(), episode.id.to_string());
                let ctx = &episode.context;
                let outcome_kind = episode.outcome.as_ref().map(|o| o.kind().as_str());
                let params = vec![
                    text(ns),
                    text(&id),
                    text(&episode.task_description),
                    text(episode.task_type.as_str()),
                    text(&ctx.domain),
                    opt_text(ctx.language.as_deref()),
                    opt_text(ctx.framework.as_deref()),
                    text(ctx.complexity.as_str()),
                    Value::Text(to_json("context.tags", &ctx.tags)?),
                    Value::Integer(nanos("started_at", episode.started_at)?),
                    episode
                        .completed_at
                        .map(|t| nanos("completed_at", t))
                        .transpose()?
                        .map_or(Value::Null, Value::Integer),
                    opt_text(outcome_kind),
                    episode
                        .outcome
                        .as_ref()
                        .map(|o| to_json("outcome", o))
                        .transpose()?
                        .map_or(Value::Null, Value::Text),
                    episode
                        .reward
                        .as_ref()
                        .map_or(Value::Null, |r| Value::Real(r.total)),
                    episode
                        .reward
                        .as_ref()
                        .map(|r| to_json("reward", r))
                        .transpose()?
                        .map_or(Value::Null, Value::Text),
                    episode
                        .reflection
                        .as_ref()
                        .map(|r| to_json("reflection", r))
                        .transpose()?
                        .map_or(Value::Null, Value::Text),
                ];
                inner
                    .write_tx(async |tx| {
                        if tx.execute(INSERT_EPISODE, params).await? == 0 {
                            return Ok(()); // a replay: the episode exists; change nothing
                        }
                        let tags = ctx
                            .tags
                            .iter()
                            .map(|tag| vec![text(ns), text(tag), text(&id)])
                            .collect();
                        insert_rows(tx, INSERT_TAGS, 3, tags, "ON CONFLICT DO NOTHING").await?;
                        let task = task_search_text(&episode.task_description, ctx);
                        text_index::insert(tx, &task, ns, &id, "task").await?;
                        // A new row is in no cache: it needs no change stamp.
                        Inner::append_step_rows(tx, ns, &id, &episode.steps, 0).await?;
                        if let Some(r) = &episode.reflection {
                            text_index::insert(tx, &r.text(), ns, &id, "reflection").await?;
                        }
                        Ok(())
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id, steps = steps.len()))]
    async fn append_steps(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        steps: &[ExecutionStep],
    ) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("append_steps", async {
                let (ns, id) = (ns.as_str(), episode_id.to_string());
                inner
                    .write_tx_stamped(async |tx, position| {
                        match episode_state(tx, ns, &id).await? {
                            None => {
                                let missing = Error::not_found(ObjectKind::Episode, episode_id);
                                return Err(missing.into());
                            }
                            Some(true) => return Err(conflict_completed(episode_id).into()),
                            Some(false) => {}
                        }
                        Inner::append_step_rows(tx, ns, &id, steps, position).await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %completion.episode_id))]
    async fn complete_episode(
        &self,
        ns: &Namespace,
        completion: &EpisodeCompletion,
    ) -> Result<Option<LearnedChanges>> {
        let inner = &*self.inner;
        inner
            .call("complete_episode", async {
                let c = completion;
                let (ns, id) = (ns.as_str(), c.episode_id.to_string());
                let update = vec![
                    text(ns),
                    text(&id),
                    text(c.outcome.kind().as_str()),
                    Value::Text(to_json("outcome", &c.outcome)?),
                    Value::Real(c.reward.total),
                    Value::Text(to_json("reward", &c.reward)?),
                    Value::Text(to_json("reflection", &c.reflection)?),
                    Value::Integer(nanos("completed_at", c.completed_at)?),
                ];
                inner
                    .write_tx_stamped(async |tx, position| {
                        complete_in_tx(tx, ns, &id, c, update, position).await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %id))]
    async fn get_episode(&self, ns: &Namespace, id: EpisodeId) -> Result<Option<Episode>> {
        let inner = &*self.inner;
        inner
            .call("get_episode", async {
                let (ns, id) = (ns.as_str(), id.to_string());
                inner
                    .read(async |conn| read_episode(conn, ns, &id).await)
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, limit = query.limit, offset = query.offset))]
    async fn query_episodes(
        &self,
        ns: &Namespace,
        query: &EpisodeQuery,
    ) -> Result<Vec<EpisodeSummary>> {
        let inner = &*self.inner;
        inner
            .call("query_episodes", async {
                let mut sql = Sql::default();
                sql.push("SELECT ").push(SUMMARY_COLUMNS).cond(
                    " FROM episodes e WHERE e.ns = ",
                    text(ns.as_str()),
                    "",
                );
                filter_sql(&query.filter, &mut sql);
                sql.push(" ORDER BY e.started_at DESC, e.id DESC")
                    .cond(" LIMIT ", Value::Integer(i64::from(query.limit)), "")
                    .cond(" OFFSET ", Value::Integer(i64::from(query.offset)), "");
                inner
                    .read(async |conn| {
                        let mut rows = conn.query(&sql.text, sql.values).await?;
                        let mut out = Vec::new();
                        while let Some(row) = rows.next().await? {
                            out.push(summary_from_row(&row)?);
                        }
                        Ok(out)
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, limit = query.limit))]
    async fn search_episodes(&self, ns: &Namespace, query: &TextQuery) -> Result<Vec<TextHit>> {
        let inner = &*self.inner;
        inner
            .call("search_episodes", async {
                inner
                    .read(async |conn| {
                        text_index::search(
                            conn,
                            ns.as_str(),
                            &query.text,
                            &query.filter,
                            query.limit,
                        )
                        .await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns))]
    async fn namespace_stats(&self, ns: &Namespace) -> Result<NamespaceStats> {
        let inner = &*self.inner;
        inner
            .call("namespace_stats", async {
                inner.read(async |conn| {
                let mut rows = conn
                    .query(
                        "SELECT \
                         (SELECT COUNT(*) FROM episodes WHERE ns = ?1), \
                         (SELECT COUNT(*) FROM episodes WHERE ns = ?1 AND outcome_kind IS NOT NULL), \
                         (SELECT COUNT(*) FROM episodes WHERE ns = ?1 AND outcome_kind = 'success'), \
                         (SELECT COALESCE(SUM(step_count), 0) FROM episodes WHERE ns = ?1), \
                         (SELECT COUNT(*) FROM patterns WHERE ns = ?1), \
                         (SELECT COUNT(*) FROM patterns WHERE ns = ?1 AND status = 'active'), \
                         (SELECT COUNT(*) FROM heuristics WHERE ns = ?1), \
                         (SELECT COUNT(*) FROM heuristics WHERE ns = ?1 AND status = 'active'), \
                         (SELECT COUNT(*) FROM lessons WHERE ns = ?1), \
                         (SELECT COUNT(*) FROM feedback WHERE ns = ?1)",
                        vec![text(ns.as_str())],
                    )
                    .await?;
                let row = rows
                    .next()
                    .await?
                    .ok_or_else(|| decode("namespace stats", "no row returned"))?;
                let c = Cols::new(&row, "namespace stats");
                let n = |i: i32| c.i64(i).map(|v| v as u64);
                Ok(NamespaceStats {
                    episodes: n(0)?,
                    completed: n(1)?,
                    successes: n(2)?,
                    steps: n(3)?,
                    patterns: n(4)?,
                    active_patterns: n(5)?,
                    heuristics: n(6)?,
                    active_heuristics: n(7)?,
                    lessons: n(8)?,
                    feedback: n(9)?,
                })
                }).await
            })
            .await
    }

    #[instrument(skip_all)]
    async fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        let inner = &*self.inner;
        inner
            .call("list_namespaces", async {
                inner
                    .read(async |conn| {
                        let mut rows = conn
                            // A skip scan: one index seek per namespace instead of a
                            // pass over every episode (6-10 ms at 100k, at every start).
                            .query(
                                "WITH RECURSIVE n(ns) AS ( \
                                 SELECT MIN(ns) FROM episodes UNION ALL \
                                 SELECT (SELECT MIN(ns) FROM episodes WHERE ns > n.ns) \
                                 FROM n WHERE n.ns IS NOT NULL) \
                                 SELECT ns FROM n WHERE ns IS NOT NULL",
                                (),
                            )
                            .await?;
                        let mut out = Vec::new();
                        while let Some(row) = rows.next().await? {
                            let name = Cols::new(&row, "namespace").text(0)?;
                            out.push(Namespace::new(name).map_err(|e| decode("namespace", e))?);
                        }
                        Ok(out)
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all)]
    async fn ping(&self) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("ping", async {
                inner
                    .read(async |conn| {
                        let mut rows = conn.query("SELECT 1", ()).await?;
                        rows.next().await?;
                        Ok(())
                    })
                    .await
            })
            .await
    }
}

#[async_trait]
impl LearningStore for TursoStorage {
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %update.episode_id))]
    async fn apply_learning(
        &self,
        ns: &Namespace,
        update: &LearningUpdate,
    ) -> Result<LearnedChanges> {
        let inner = &*self.inner;
        inner
            .call("apply_learning", async {
                inner
                    .write_tx_stamped(async |tx, position| {
                        Inner::merge_learning(tx, ns.as_str(), update, position).await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, patterns = items.patterns.len(), heuristics = items.heuristics.len(), lessons = items.lessons.len()))]
    async fn put_learned(&self, ns: &Namespace, items: &LearnedItems) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("put_learned", async {
                inner
                    .write_tx_stamped(async |tx, position| {
                        Inner::write_items(
                            tx,
                            ns.as_str(),
                            position,
                            items.patterns.iter(),
                            items.heuristics.iter(),
                            items.lessons.iter(),
                        )
                        .await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, kind = id.kind().name(), id = id.as_str()))]
    async fn get_learned(&self, ns: &Namespace, id: &LearnedId) -> Result<Option<LearnedItem>> {
        let inner = &*self.inner;
        let kind = id.kind();
        inner
            .call("get_learned", async {
                let sql = format!("SELECT body FROM {} WHERE ns = ?1 AND id = ?2", table(kind));
                inner
                    .body_by_id(&sql, ns.as_str(), id.as_str())
                    .await?
                    .map(|b| decode_learned(kind, &b))
                    .transpose()
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, kind = kind.name()))]
    async fn query_learned(
        &self,
        ns: &Namespace,
        kind: LearnedKind,
        query: &LearnedQuery,
    ) -> Result<Vec<LearnedItem>> {
        let inner = &*self.inner;
        inner
            .call("query_learned", inner.query_learned(kind, ns, query))
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, target = %feedback.target.id(), episode_id = %feedback.episode_id))]
    async fn record_feedback(&self, ns: &Namespace, feedback: &Feedback) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("record_feedback", async {
                let fb = feedback;
                let ns = ns.as_str();
                let recorded_at = nanos("feedback.recorded_at", fb.recorded_at)?;
                inner
                    .write_tx_stamped(async |tx, position| {
                        feedback_in_tx(tx, ns, fb, recorded_at, position).await
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, target = %target.id()))]
    async fn list_feedback(
        &self,
        ns: &Namespace,
        target: &FeedbackTarget,
    ) -> Result<Vec<Feedback>> {
        let inner = &*self.inner;
        inner
            .call("list_feedback", async {
                inner
                    .read(async |conn| {
                        let mut rows = conn
                            .query(
                                "SELECT episode_id, outcome, recorded_at FROM feedback \
                         WHERE ns = ?1 AND target_kind = ?2 AND target_id = ?3 ORDER BY seq",
                                vec![text(ns.as_str()), text(target.kind()), text(target.id())],
                            )
                            .await?;
                        let mut out = Vec::new();
                        while let Some(row) = rows.next().await? {
                            let c = Cols::new(&row, "feedback");
                            out.push(Feedback {
                                target: target.clone(),
                                episode_id: c.episode_id(0)?,
                                outcome: c.parse(1)?,
                                recorded_at: crate::codec::from_nanos(c.i64(2)?),
                            });
                        }
                        Ok(out)
                    })
                    .await
            })
            .await
    }
}

#[async_trait]
impl EmbeddingStore for TursoStorage {
    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id, model, dims = vector.len()))]
    async fn put_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
        vector: &[f32],
    ) -> Result<()> {
        let inner = &*self.inner;
        inner
            .call("put_embedding", async {
                let conn = inner.writer().await?;
                // One statement: stored only if the episode exists, replacing an earlier vector.
                let changed = conn
                    .execute(
                        "INSERT INTO embeddings (ns, episode_id, model, dims, vector, created_at) \
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
                         WHERE EXISTS (SELECT 1 FROM episodes WHERE ns = ?1 AND id = ?2) \
                         ON CONFLICT (ns, episode_id, model) DO UPDATE SET dims = excluded.dims, \
                         vector = excluded.vector, created_at = excluded.created_at",
                        vec![
                            text(ns.as_str()),
                            Value::Text(episode_id.to_string()),
                            text(model),
                            Value::Integer(vector.len() as i64),
                            Value::Blob(vector_to_blob(vector)),
                            Value::Integer(nanos_clamped(Utc::now())),
                        ],
                    )
                    .await?;
                if changed == 0 {
                    return Err(Error::not_found(ObjectKind::Episode, episode_id).into());
                }
                Ok(())
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, episode_id = %episode_id, model))]
    async fn get_embedding(
        &self,
        ns: &Namespace,
        episode_id: EpisodeId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        let inner = &*self.inner;
        inner
            .call("get_embedding", async {
                inner.read(async |conn| {
                let mut rows = conn
                    .query(
                        "SELECT vector FROM embeddings WHERE ns = ?1 AND episode_id = ?2 AND model = ?3",
                        vec![text(ns.as_str()), Value::Text(episode_id.to_string()), text(model)],
                    )
                    .await?;
                match rows.next().await? {
                    Some(row) => Ok(Some(blob_to_vector(&Cols::new(&row, "embedding").blob(0)?)?)),
                    None => Ok(None),
                }
                }).await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, limit))]
    async fn episodes_missing_embedding(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<EpisodeId>> {
        let inner = &*self.inner;
        // '' sorts before every id.
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        inner
            .call("episodes_missing_embedding", async {
                inner.read(async |conn| {
                let mut rows = conn
                    .query(
                        "SELECT e.id FROM episodes e WHERE e.ns = ?1 AND e.id > ?4 AND NOT EXISTS \
                         (SELECT 1 FROM embeddings m WHERE m.ns = e.ns AND m.episode_id = e.id AND m.model = ?2) \
                         ORDER BY e.id LIMIT ?3",
                        vec![
                            text(ns.as_str()),
                            text(model),
                            Value::Integer(i64::from(limit)),
                            Value::Text(after.clone()),
                        ],
                    )
                    .await?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().await? {
                    out.push(Cols::new(&row, "episode").episode_id(0)?);
                }
                Ok(out)
                }).await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, limit))]
    async fn scan_embeddings(
        &self,
        ns: &Namespace,
        model: &str,
        after: Option<EpisodeId>,
        limit: u32,
    ) -> Result<Vec<StoredEmbedding>> {
        let inner = &*self.inner;
        // Keyset paging on the embeddings primary key; '' sorts before every id.
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS}, m.vector FROM embeddings m \
             JOIN episodes e ON e.ns = m.ns AND e.id = m.episode_id \
             WHERE m.ns = ?1 AND m.model = ?2 AND m.episode_id > ?3 \
             ORDER BY m.episode_id LIMIT ?4"
        );
        inner
            .call("scan_embeddings", async {
                inner
                    .read(async |conn| {
                        let mut rows = conn
                            .query(
                                &sql,
                                vec![
                                    text(ns.as_str()),
                                    text(model),
                                    Value::Text(after.clone()),
                                    Value::Integer(i64::from(limit)),
                                ],
                            )
                            .await?;
                        let mut out = Vec::new();
                        while let Some(row) = rows.next().await? {
                            let vector = Cols::new(&row, "embedding").blob(13)?;
                            out.push(StoredEmbedding {
                                summary: summary_from_row(&row)?,
                                vector: blob_to_vector(&vector)?,
                            });
                        }
                        Ok(out)
                    })
                    .await
            })
            .await
    }

    async fn embedding_coverage(&self, ns: &Namespace, model: &str) -> Result<EmbeddingCoverage> {
        let inner = &*self.inner;
        inner
            .call("embedding_coverage", async {
                inner
                    .read(async |conn| {
                        // Two index counts and an index max: no probe per episode.
                        let mut rows = conn
                            .query(
                                "SELECT \
                                 (SELECT COUNT(*) FROM episodes WHERE ns = ?1), \
                                 (SELECT COUNT(*) FROM embeddings WHERE ns = ?1 AND model = ?2), \
                                 (SELECT MAX(id) FROM episodes WHERE ns = ?1)",
                                vec![text(ns.as_str()), text(model)],
                            )
                            .await?;
                        let row = rows
                            .next()
                            .await?
                            .ok_or_else(|| decode("embedding coverage", "no row returned"))?;
                        let c = Cols::new(&row, "embedding coverage");
                        let last_episode = match c.opt_text(2)? {
                            Some(_) => Some(c.episode_id(2)?),
                            None => None,
                        };
                        Ok(EmbeddingCoverage {
                            episodes: c.i64(0)? as u64,
                            embedded: c.i64(1)? as u64,
                            last_episode,
                        })
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns))]
    async fn index_log_head(&self, ns: &Namespace) -> Result<u64> {
        let inner = &*self.inner;
        inner
            .call("index_log_head", async {
                inner
                    .read(async |conn| {
                        let mut rows = conn
                            .query(
                                "SELECT COALESCE(MAX(seq), 0) FROM index_changes WHERE ns = ?1",
                                vec![text(ns.as_str())],
                            )
                            .await?;
                        let row = rows
                            .next()
                            .await?
                            .ok_or_else(|| decode("index log head", "no row returned"))?;
                        Ok(Cols::new(&row, "index log head").i64(0)?.max(0) as u64)
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, after, limit))]
    async fn index_changes(
        &self,
        ns: &Namespace,
        model: &str,
        after: u64,
        limit: u32,
    ) -> Result<IndexChanges> {
        let inner = &*self.inner;
        let after_i = i64::try_from(after).unwrap_or(i64::MAX);
        let rows_sql = format!(
            "SELECT {SUMMARY_COLUMNS}, m.vector FROM embeddings m \
             JOIN episodes e ON e.ns = m.ns AND e.id = m.episode_id \
             WHERE m.ns = ?1 AND m.model = ?2 AND m.episode_id IN \
             (SELECT episode_id FROM index_changes WHERE ns = ?1 AND seq > ?3 AND seq <= ?4)"
        );
        inner
            .call("index_changes", async {
                inner
                    .read(async |conn| {
                        // The log page first, then the rows it names: a row read after its log
                        // entry is at least that new, and anything changed later has a later
                        // entry, read next time.
                        let mut rows = conn
                            .query(
                                "SELECT seq, episode_id FROM index_changes \
                                 WHERE ns = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                                vec![
                                    text(ns.as_str()),
                                    Value::Integer(after_i),
                                    Value::Integer(i64::from(limit)),
                                ],
                            )
                            .await?;
                        let mut through = after_i;
                        let mut entries = 0u32;
                        let mut ids = std::collections::BTreeSet::new();
                        while let Some(row) = rows.next().await? {
                            let c = Cols::new(&row, "index change");
                            through = c.i64(0)?;
                            ids.insert(c.episode_id(1)?);
                            entries += 1;
                        }
                        drop(rows);
                        // A full page may have more after it (at worst the next page is
                        // empty); a short one is the end: no second query on every search.
                        let mut changes = IndexChanges {
                            through: through.max(0) as u64,
                            more: limit > 0 && entries == limit,
                            ..IndexChanges::default()
                        };
                        if ids.is_empty() {
                            return Ok(changes);
                        }
                        let mut rows = conn
                            .query(
                                &rows_sql,
                                vec![
                                    text(ns.as_str()),
                                    text(model),
                                    Value::Integer(after_i),
                                    Value::Integer(through),
                                ],
                            )
                            .await?;
                        while let Some(row) = rows.next().await? {
                            let vector = Cols::new(&row, "embedding").blob(13)?;
                            let summary = summary_from_row(&row)?;
                            ids.remove(&summary.id);
                            changes.upserts.push(StoredEmbedding {
                                summary,
                                vector: blob_to_vector(&vector)?,
                            });
                        }
                        changes.upserts.sort_by_key(|e| e.summary.id);
                        changes.removed = ids.into_iter().collect();
                        Ok(changes)
                    })
                    .await
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model))]
    async fn get_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
    ) -> Result<Option<IndexSnapshot>> {
        let inner = &*self.inner;
        inner
            .call("get_index_snapshot", async {
                let header = inner
                    .read(async |conn| {
                        let mut rows = conn
                            .query(
                                "SELECT as_of, written_at, parts, bytes FROM index_snapshots \
                                 WHERE ns = ?1 AND model = ?2",
                                vec![text(ns.as_str()), text(model)],
                            )
                            .await?;
                        let Some(row) = rows.next().await? else {
                            return Ok(None);
                        };
                        let c = Cols::new(&row, "index snapshot");
                        Ok(Some((c.i64(0)?, c.i64(1)?, c.i64(2)?, c.i64(3)?)))
                    })
                    .await?;
                let Some((as_of, written_at, parts, bytes)) = header else {
                    return Ok(None);
                };
                // The parts in two halves, on two reader connections at once (a 100k-episode
                // image is ~65 MB, and SQLite reads a blob at about 600 MB/s on one core).
                // (The local driver works on the calling thread, so the second half runs
                // as a task of its own.)
                let half = parts / 2;
                let second = {
                    let (inner, ns, model) =
                        (Arc::clone(&self.inner), ns.clone(), model.to_owned());
                    tokio::spawn(async move {
                        read_snapshot_parts(&inner, &ns, &model, half, parts).await
                    })
                };
                let first = read_snapshot_parts(inner, ns, model, 0, half).await;
                let second = second.await.map_err(|e| {
                    DriverError::Schema(format!("index snapshot reader stopped: {e}"))
                })?;
                let mut data = Vec::with_capacity(usize::try_from(parts).unwrap_or(0));
                let mut expected = 0;
                let mut total = 0i64;
                for (part, tag, chunk) in first?.into_iter().chain(second?) {
                    if part != expected || tag != written_at {
                        // Rewritten between the reads: no consistent image to offer.
                        return Err(DriverError::Schema(
                            "index snapshot replaced while it was read".into(),
                        )
                        .into());
                    }
                    total += chunk.len() as i64;
                    data.push(chunk);
                    expected += 1;
                }
                if expected != parts || total != bytes {
                    return Err(decode("index snapshot", "parts missing"));
                }
                // Handed over in parts: the decoder reads across them without a join.
                Ok(Some(IndexSnapshot {
                    as_of: as_of.max(0) as u64,
                    parts: data,
                }))
            })
            .await
    }

    #[instrument(skip_all, fields(namespace = %ns, model, bytes = snapshot.len()))]
    async fn put_index_snapshot(
        &self,
        ns: &Namespace,
        model: &str,
        snapshot: &IndexSnapshot,
    ) -> Result<()> {
        check_index_snapshot_size(snapshot.len())?;
        let pieces = snapshot.pieces(SNAPSHOT_PART_BYTES);
        let inner = &*self.inner;
        let written_at = nanos_clamped(Utc::now());
        inner
            .call("put_index_snapshot", async {
                inner
                    .write_tx(async |tx| {
                        tx.execute(
                            "DELETE FROM index_snapshot_parts WHERE ns = ?1 AND model = ?2",
                            vec![text(ns.as_str()), text(model)],
                        )
                        .await?;
                        let parts = pieces.len() as i64;
                        for (i, chunk) in pieces.iter().enumerate() {
                            tx.execute(
                                "INSERT INTO index_snapshot_parts \
                                 (ns, model, part, written_at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                                vec![
                                    text(ns.as_str()),
                                    text(model),
                                    Value::Integer(i as i64),
                                    Value::Integer(written_at),
                                    Value::Blob(chunk.clone()),
                                ],
                            )
                            .await?;
                        }
                        tx.execute(
                            "INSERT INTO index_snapshots \
                             (ns, model, as_of, written_at, parts, bytes) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                             ON CONFLICT (ns, model) DO UPDATE SET as_of = excluded.as_of, \
                             written_at = excluded.written_at, parts = excluded.parts, \
                             bytes = excluded.bytes",
                            vec![
                                text(ns.as_str()),
                                text(model),
                                Value::Integer(i64::try_from(snapshot.as_of).unwrap_or(i64::MAX)),
                                Value::Integer(written_at),
                                Value::Integer(parts),
                                Value::Integer(snapshot.len() as i64),
                            ],
                        )
                        .await?;
                        Ok(())
                    })
                    .await
            })
            .await
    }
}

/// The largest part an index snapshot is stored in: small enough for one statement of an
/// embedded replica's write delegation (gRPC refuses messages over 4 MB).
const SNAPSHOT_PART_BYTES: usize = 1024 * 1024;

/// Parts `from..to` of a stored index snapshot: `(part, written_at, bytes)`, in part order.
async fn read_snapshot_parts(
    inner: &Inner,
    ns: &Namespace,
    model: &str,
    from: i64,
    to: i64,
) -> DbResult<Vec<(i64, i64, Vec<u8>)>> {
    if from >= to {
        return Ok(Vec::new());
    }
    inner
        .read(async |conn| {
            let mut rows = conn
                .query(
                    "SELECT part, written_at, data FROM index_snapshot_parts \
                     WHERE ns = ?1 AND model = ?2 AND part >= ?3 AND part < ?4 ORDER BY part",
                    vec![
                        text(ns.as_str()),
                        text(model),
                        Value::Integer(from),
                        Value::Integer(to),
                    ],
                )
                .await?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                let c = Cols::new(&row, "index snapshot part");
                out.push((c.i64(0)?, c.i64(1)?, c.blob(2)?));
            }
            Ok(out)
        })
        .await
}

#[async_trait]
impl Storage for TursoStorage {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn may_have_changed(&self) -> Result<bool> {
        let inner = &*self.inner;
        match &inner.changes {
            Some(c) => inner.call("may_have_changed", c.may_have_changed()).await,
            None => Ok(false),
        }
    }

    #[instrument(skip_all, fields(after, limit))]
    async fn changes_since(&self, after: u64, limit: u32) -> Result<Option<ChangeSet>> {
        let inner = &*self.inner;
        let Some(tracker) = &inner.changes else {
            return Ok(None);
        };
        let set = inner
            .call("changes_since", async {
                inner
                    .read(async |conn| {
                        let (database, head) = read_head(conn).await?;
                        let own = tracker.own_between(after, head);
                        let mut set = ChangeSet {
                            database,
                            head,
                            ..ChangeSet::default()
                        };
                        // Only this handle wrote since `after`: nothing for a reader to drop.
                        if limit > 0 && head > after && own.len() as u64 != head - after {
                            read_rows(conn, after, limit, &mut set).await?;
                        }
                        set.own = own;
                        Ok(set)
                    })
                    .await
            })
            .await?;
        Ok(Some(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MEMORY_PATH;
    use memory_core::{NewEpisode, StepInput, TaskContext, TaskType};

    async fn memory_store_with_episode(task: &str) -> (TursoStorage, Namespace, Episode) {
        let s = TursoStorage::open_local(MEMORY_PATH).await.unwrap();
        let ns = Namespace::default();
        let mut e = Episode::start(
            NewEpisode::new(task, TaskType::Other, TaskContext::new("d")),
            Utc::now(),
        );
        e.steps.push(ExecutionStep {
            step_number: 1,
            key: memory_core::ExecutionStep::new_key(),
            timestamp: Utc::now(),
            input: StepInput::ok(task, task, task),
        });
        s.create_episode(&ns, &e).await.unwrap();
        (s, ns, e)
    }

    #[tokio::test]
    async fn stored_vectors_work_with_libsql_vector_functions() {
        let (s, ns, e) = memory_store_with_episode("x").await;
        s.put_embedding(&ns, e.id, "m", &[1.0, 0.0, 0.0])
            .await
            .unwrap();
        let conn = s.inner.writer.lock().await;
        let mut rows = conn
            .query(
                "SELECT vector_distance_cos(vector, vector32('[0,1,0]')), vector_extract(vector) \
                 FROM embeddings",
                (),
            )
            .await
            .unwrap();
        let row = rows.next().await.unwrap().unwrap();
        let distance = Cols::new(&row, "t").opt_f64(0).unwrap().unwrap();
        assert!((distance - 1.0).abs() < 1e-6, "{distance}");
        assert_eq!(Cols::new(&row, "t").text(1).unwrap(), "[1,0,0]");
    }

    #[tokio::test]
    async fn text_with_nul_bytes_round_trips() {
        let task = "a\0b\0\0c";
        let (s, ns, e) = memory_store_with_episode(task).await;
        let got = s.get_episode(&ns, e.id).await.unwrap().unwrap();
        assert_eq!(got, e);
    }

    #[tokio::test]
    async fn writer_heals_a_transaction_left_open() {
        let (s, ns, e) = memory_store_with_episode("x").await;
        {
            let conn = s.inner.writer.lock().await;
            conn.execute("BEGIN IMMEDIATE", ()).await.unwrap();
            assert!(!conn.is_autocommit());
        }
        s.append_steps(&ns, e.id, &[]).await.unwrap();
        assert!(s.inner.writer.lock().await.is_autocommit());
    }
}
