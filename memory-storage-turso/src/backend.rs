//! [`TursoStorage`]: opening the database, its connections, and the storage traits over them.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use async_trait::async_trait;
use libsql::Value;
use memory_core::{ChangeSet, EpisodeId, Error, Namespace, Result, Storage};
use tokio::sync::Mutex;
use tracing::{debug, instrument, warn};

use crate::changes::{ChangeTracker, Probe, read_head, read_rows};
use crate::checkpoint::{BACKSTOP_PAGES, Checkpointer};
use crate::codec::{Cols, text};
use crate::config::{TursoConfig, TursoMode, is_memory_path};
use crate::connection::{Inner, build_database, configure_local, create_parent, pragma};
use crate::error::{BACKEND, DbResult, DriverError, Failure};
use crate::group_commit::WRITER_BUSY_TIMEOUT;
use crate::group_state::Grouping;
use crate::prepared::Db;
use crate::schema;
use crate::sql::{query_all, query_opt};

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

impl fmt::Debug for TursoStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TursoStorage")
            .field("mode", &self.inner.config.mode())
            .field("readers", &self.inner.readers.len())
            .field("schema_version", &self.schema_version())
            .finish_non_exhaustive()
    }
}

/// SQLite's "file is not a database" at open, said in the memory's terms: an encrypted file
/// opened without its key (or with another), or a plain one opened with a key, reads as
/// noise.
fn explain_not_a_database(failure: Failure, encrypted: bool) -> Failure {
    if !failure.to_string().contains("file is not a database") {
        return failure;
    }
    let why = if encrypted {
        "the database file does not open with this encryption key: it is encrypted under another key, not encrypted, or not a memory database"
    } else {
        "the database file is encrypted (set the key: MEMORY_ENCRYPTION_KEY, MEMORY_ENCRYPTION_KEY_FILE or MEMORY_ENCRYPTION_KEY_COMMAND) or is not a memory database"
    };
    DriverError::Setup(why.into()).into()
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
        let encrypted = config.encrypted();
        match tokio::time::timeout(timeout, Self::open_inner(config)).await {
            Ok(result) => {
                result.map_err(|f| explain_not_a_database(f, encrypted).into_core("open"))
            }
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
        let server_gate = match &mode {
            TursoMode::Remote { url, .. } | TursoMode::Replica { url, .. } => {
                Some(crate::server_gate::server_gate(url))
            }
            TursoMode::Local { .. } => None,
        };
        let schema_version = migrate_at_open(&writer, &config, server_gate.as_ref(), local).await?;
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
        if local {
            // Grouped writes wait for the write lock asynchronously (see group_commit).
            pragma(&writer, WRITER_BUSY_TIMEOUT).await?;
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
        let changes = change_tracker(&db, &config, local_file).await?;
        #[cfg(feature = "remote")]
        let hrana = match &mode {
            TursoMode::Remote { url, auth_token } => {
                Some(crate::hrana::HranaClient::new(url, auth_token.as_deref())?)
            }
            _ => None,
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
                #[cfg(feature = "remote")]
                hrana,
                #[cfg(feature = "remote")]
                learned_bodies: crate::learned_bodies::LearnedBodies::default(),
                server_gate,
                grouped: local,
                grouping: Grouping::default(),
                prepared: crate::prepared::Prepared::default(),
                // Replicas' and servers' connections prepare every statement.
                reader_statements: (0..if local { reader_count } else { 0 })
                    .map(|_| crate::prepared::Prepared::default())
                    .collect(),
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

    /// How many commits concurrent writes of this handle shared, and how many writes they
    /// held (local databases group concurrent writes into one commit; the others never do).
    ///
    /// ```no_run
    /// # async fn run() -> memory_core::Result<()> {
    /// let storage = memory_storage_turso::TursoStorage::open_in_data_dir(".memory").await?;
    /// let shared = storage.group_commits();
    /// println!("{} writes in {} shared commits", shared.writes, shared.commits);
    /// # Ok(())
    /// # }
    /// ```
    pub fn group_commits(&self) -> crate::GroupCommits {
        self.inner.grouping.stats()
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
            .call_read("salvage_episode_ids", async |conn| {
                let max = query_opt(conn, "SELECT MAX(rowid) FROM episodes", (), |row| {
                    Cols::new(row, "episode").opt_i64(0)
                });
                Ok(max.await?.flatten())
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
                .call_read("salvage_episode_ids", async |conn| {
                    query_all(
                        conn,
                        "SELECT id FROM episodes WHERE rowid >= ?1 AND rowid < ?2 AND ns = ?3",
                        vec![Value::Integer(from), Value::Integer(to), text(n)],
                        |row| Cols::new(row, "episode").episode_id(0),
                    )
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
        self.inner
            .call_execute(
                "renew_identity",
                "UPDATE change_counter SET db_id = lower(hex(randomblob(16))) WHERE id = 1",
                || Ok(()),
            )
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
        let outcome = query_all(&Db::plain(&conn), &sql, (), |row| {
            Cols::new(row, "quick_check").text(0)
        })
        .await;
        watchdog.abort();
        let (problems, finished) = match outcome {
            Ok(lines) if lines.iter().all(|l| l == "ok") => (Vec::new(), true),
            Ok(lines) => (lines, true),
            // SQLITE_INTERRUPT: the deadline passed first.
            Err(Failure::Driver(DriverError::Libsql(libsql::Error::SqliteFailure(code, _))))
                if code & 0xff == 9 =>
            {
                (Vec::new(), false)
            }
            // Reading a damaged page can fail the check itself: that is its finding.
            Err(e) => (vec![e.to_string()], true),
        };
        Ok(Some(IntegrityCheck { problems, finished }))
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
            .call_read("changes_since", async |conn| {
                let (database, head) = read_head(conn).await?;
                let own = tracker.own_between(after, head);
                let mut set = ChangeSet {
                    database,
                    head,
                    ..ChangeSet::default()
                };
                // Only this handle wrote since `after`: nothing for a reader to drop.
                if limit > 0 && head > after && own.len() as u64 != head - after {
                    let logged = inner.schema_version.load(Ordering::Acquire) >= schema::CHANGE_LOG;
                    read_rows(conn, after, limit, logged, &mut set).await?;
                }
                set.own = own;
                Ok(set)
            })
            .await?;
        Ok(Some(set))
    }
}

/// How long a store that may open while its server is unreachable waits for the server's
/// first answer: a hung server (one that takes connections and answers nothing) counts as
/// unreachable after it, as a refusing one does at once, so the process opens and journals
/// instead of waiting out the call timeout.
pub(crate) const OPEN_PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the server answers a trivial query within [`OPEN_PROBE_DEADLINE`] (an error is an
/// answer: the migration that follows reports it). The migration runs only after an answer,
/// never under this deadline, so a slow migration is not cut short.
async fn answers_soon(writer: &libsql::Connection) -> bool {
    tokio::time::timeout(OPEN_PROBE_DEADLINE, writer.query("SELECT 1", ()))
        .await
        .is_ok()
}

/// Runs the schema's migrations at open, under the server's gate when there is a server. A
/// remote store that may open while its server is unreachable opens at version 0 when the
/// server does not answer (the schema is checked again when it does).
async fn migrate_at_open(
    writer: &libsql::Connection,
    config: &TursoConfig,
    server_gate: Option<&Arc<crate::server_gate::ServerGate>>,
    local: bool,
) -> DbResult<u32> {
    if !local && config.open_when_unreachable() && !answers_soon(writer).await {
        warn!(
            deadline_ms = OPEN_PROBE_DEADLINE.as_millis() as u64,
            "server does not answer at open: the schema is checked when it answers"
        );
        return Ok(0);
    }
    let gate = crate::server_gate::lock_if_any(server_gate).await;
    let migrated = schema::migrate(writer, config.schema_version()).await;
    drop(gate);
    match migrated {
        Ok(v) => Ok(v),
        Err(f) if !local && config.open_when_unreachable() && f.is_transient() => {
            warn!(error = %f, "server unreachable at open: the schema is checked when it answers");
            Ok(0)
        }
        Err(f) => Err(f),
    }
}

/// How the store learns that another process wrote: `PRAGMA data_version` on a connection of
/// its own for a local file, a poll interval over a server, nothing for an in-memory database.
async fn change_tracker(
    db: &libsql::Database,
    config: &TursoConfig,
    local_file: bool,
) -> DbResult<Option<ChangeTracker>> {
    Ok(match config.mode() {
        TursoMode::Local { path } if is_memory_path(path) => None,
        TursoMode::Local { .. } => {
            let conn = db.connect()?;
            configure_local(&conn, config, local_file, true).await?;
            Some(ChangeTracker::new(Probe::DataVersion {
                version: Mutex::new(conn.prepare("PRAGMA data_version").await?),
                _conn: conn,
                last: std::sync::Mutex::new(None),
            }))
        }
        _ => Some(ChangeTracker::new(Probe::Interval {
            every: config.change_poll_interval(),
            last: std::sync::Mutex::new(None),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MEMORY_PATH;
    use chrono::Utc;
    use memory_core::{
        EmbeddingStore, Episode, EpisodeStore, ExecutionStep, NewEpisode, StepInput, TaskContext,
        TaskType,
    };

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
        assert_eq!(*got, e);
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
