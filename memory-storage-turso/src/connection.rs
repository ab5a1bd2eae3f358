//! The connections of a libsql database: one writer and a pool of readers, the transaction
//! helpers every write and read goes through, and opening the database in each mode.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use libsql::params::IntoParams;
use libsql::{Builder, Connection, Database, Row, TransactionBehavior, Value};
use memory_core::Result;
use tokio::sync::{Mutex, MutexGuard};
use tracing::{debug, info, warn};

use crate::changes::{ChangeTracker, next_position};
use crate::checkpoint::Checkpointer;
use crate::codec::Cols;
use crate::config::{TursoConfig, TursoMode, is_memory_path};
use crate::error::{DbResult, DriverError, Failure};
use crate::group_state::Grouping;
use crate::prepared::{Db, Prepared};
use crate::schema;
use crate::sql::{query_all, query_opt};

pub(crate) struct Inner {
    pub(crate) config: TursoConfig,
    /// Keeps the database (and, for replicas, its background sync) alive; gives the liveness
    /// probe its fresh connections.
    pub(crate) db: Database,
    pub(crate) writer: Arc<Mutex<Connection>>,
    /// Empty when reads share the writer (`:memory:`).
    pub(crate) readers: Vec<Mutex<Connection>>,
    /// The statements each reader keeps prepared (by the reader's index; unused remotely).
    pub(crate) reader_statements: Vec<Prepared>,
    pub(crate) next_reader: AtomicUsize,
    /// Reads go to a remote server over Hrana (see [`Inner::read`]).
    pub(crate) remote_reads: bool,
    /// The schema version after opening; 0 while a server that could not be reached at open
    /// has not been checked yet (see [`TursoConfigBuilder::open_when_unreachable`]).
    ///
    /// [`TursoConfigBuilder::open_when_unreachable`]: crate::TursoConfigBuilder::open_when_unreachable
    pub(crate) schema_version: AtomicU32,
    /// Serializes a deferred schema check.
    pub(crate) schema_check: Mutex<()>,
    /// The longest a write transaction waited to begin (this process's writer connection,
    /// then the database's write lock, which other processes may hold), in microseconds.
    pub(crate) longest_lock_wait_us: std::sync::atomic::AtomicU64,
    /// Background WAL checkpoints (local files, unless turned off).
    pub(crate) checkpointer: Option<Checkpointer>,
    /// The change feed (files and servers; a private `:memory:` database has none).
    pub(crate) changes: Option<ChangeTracker>,
    /// Remote mode: the client that sends a completion or an episode read as whole Hrana
    /// batches ([`crate::remote_batch`]).
    #[cfg(feature = "remote")]
    pub(crate) hrana: Option<crate::hrana::HranaClient>,
    /// Remote mode: the learned items this handle last read or wrote, so a completion can
    /// skip reading them ([`crate::learned_bodies`]).
    #[cfg(feature = "remote")]
    pub(crate) learned_bodies: crate::learned_bodies::LearnedBodies,
    /// The gate every write of this process to the same server takes first (remote and
    /// replica modes; see [`crate::server_gate`]).
    pub(crate) server_gate: Option<Arc<crate::server_gate::ServerGate>>,
    /// Concurrent writes share commits (local databases; see [`crate::group_commit`]).
    pub(crate) grouped: bool,
    pub(crate) grouping: Grouping,
    /// The writer's statements, kept prepared while writes are grouped (see
    /// [`crate::prepared`]).
    pub(crate) prepared: Prepared,
}

/// The writer connection, held with the server's gate (when there is one) until dropped.
pub(crate) struct WriterGuard<'a> {
    conn: MutexGuard<'a, Connection>,
    /// Released after the connection (fields drop in order).
    _server: Option<crate::server_gate::GateGuard>,
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl Inner {
    /// How step page bodies and reflections are written: compressed from schema version 10 on
    /// (before the schema is known, a remote store not reached yet, as JSON text, which every
    /// version reads).
    pub(crate) fn json_format(&self) -> crate::compressed_json::JsonFormat {
        crate::compressed_json::JsonFormat::of_version(self.schema_version.load(Ordering::Acquire))
    }

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
            match result {
                Ok(v) => Ok(v),
                Err(f) => Err(self.explain_schema(f).await.into_core(operation)),
            }
        } else {
            warn!(operation, ?timeout, "libsql call timed out");
            Err(Failure::Driver(DriverError::Timeout(timeout)).into_core(operation))
        }
    }

    /// A statement that fails for a table or column this build expects may have met a schema
    /// that a newer release migrated to while this process ran (a rolling upgrade): the
    /// version is read again, on a connection of its own, and a newer one is what the error
    /// names (`database schema version N is newer than this build supports`), instead of the
    /// missing table. Any other failure is returned as it is.
    async fn explain_schema(&self, f: Failure) -> Failure {
        let text = match &f {
            Failure::Driver(DriverError::Libsql(e)) => e.to_string(),
            Failure::Driver(DriverError::Http { message, .. }) => message.clone(),
            _ => return f,
        };
        let missing = ["no such table", "no such column", "has no column named"];
        if !missing.iter().any(|m| text.contains(m)) {
            return f;
        }
        let Ok(conn) = self.db.connect() else {
            return f;
        };
        let deadline = std::time::Duration::from_secs(3);
        match tokio::time::timeout(deadline, schema::current_version(&conn)).await {
            Ok(Ok(found)) => match schema::check_not_newer(found) {
                Err(newer) => {
                    warn!(
                        found,
                        "the database was migrated to a newer schema while this process ran"
                    );
                    newer
                }
                Ok(()) => f,
            },
            _ => f,
        }
    }

    /// Whether the database answers `SELECT 1` within `deadline` on a connection of its own:
    /// never behind this process's writer or readers, which a slow call may hold, so only a
    /// server that stopped answering (or refuses) fails it.
    pub(crate) async fn answers_within(&self, deadline: std::time::Duration) -> bool {
        let Ok(conn) = self.db.connect() else {
            return false;
        };
        matches!(
            tokio::time::timeout(deadline, conn.query("SELECT 1", ())).await,
            Ok(Ok(_))
        )
    }

    /// [`Inner::call`] of [`Inner::read`].
    pub(crate) async fn call_read<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&Db<'_>) -> DbResult<T>,
    ) -> Result<T> {
        self.call(operation, self.read(body)).await
    }

    /// [`Inner::call_read`] of one query: every row `sql` returns, each mapped by `f`.
    pub(crate) async fn call_query<T>(
        &self,
        operation: &'static str,
        sql: &str,
        params: impl IntoParams,
        f: impl FnMut(&Row) -> DbResult<T>,
    ) -> Result<Vec<T>> {
        self.call_read(operation, async |conn| {
            query_all(conn, sql, params, f).await
        })
        .await
    }

    /// [`Inner::call_query`] with each row read through [`Cols`] (named `what` in decode
    /// errors); `operation` names the call in storage errors. Over a server it is one Hrana request ([`crate::hrana`]), not the four a
    /// read transaction of one query costs through libsql's remote client.
    pub(crate) async fn call_rows<T>(
        &self,
        operation: &'static str,
        what: &'static str,
        sql: &str,
        params: impl IntoParams,
        mut f: impl FnMut(&Cols<'_>) -> DbResult<T>,
    ) -> Result<Vec<T>> {
        #[cfg(feature = "remote")]
        if let Some(client) = &self.hrana {
            let read = async {
                let values = match params.into_params()? {
                    libsql::params::Params::None => Vec::new(),
                    libsql::params::Params::Positional(values) => values,
                    libsql::params::Params::Named(_) => {
                        return Err(crate::error::decode(what, "named parameters"));
                    }
                };
                let mut batch = crate::hrana::BatchBuilder::default();
                let step = batch.step(crate::hrana::Statement::query(sql, values), None);
                let outcome = client.batch(batch).await?;
                outcome
                    .rows(step, what)?
                    .iter()
                    .map(|row| f(&Cols::values(row, what)))
                    .collect()
            };
            return self.call(operation, read).await;
        }
        self.call_query(operation, sql, params, |row| f(&Cols::new(row, what)))
            .await
    }

    /// [`Inner::call`] of [`Inner::write_tx`].
    pub(crate) async fn call_write<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&Db<'_>) -> DbResult<T>,
    ) -> Result<T> {
        self.call(operation, self.write_tx(body)).await
    }

    /// [`Inner::call`] of one statement, run in a write transaction of its own with the
    /// values `params` returns (its failure fails the call before the transaction begins).
    pub(crate) async fn call_execute<P: IntoParams>(
        &self,
        operation: &'static str,
        sql: &str,
        params: impl FnOnce() -> DbResult<P>,
    ) -> Result<()> {
        self.call(operation, async {
            let params = params()?;
            self.write_tx(async |tx| {
                tx.execute(sql, params).await?;
                Ok(())
            })
            .await
        })
        .await
    }

    /// [`Inner::call`] of [`Inner::write_tx_stamped`].
    pub(crate) async fn call_write_stamped<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&Db<'_>, i64) -> DbResult<T>,
    ) -> Result<T> {
        self.call(operation, self.write_tx_stamped(body)).await
    }

    /// [`Inner::call`] around [`Inner::write_tx_stamped_unowned`].
    pub(crate) async fn call_write_stamped_unowned<T>(
        &self,
        operation: &'static str,
        body: impl AsyncFnOnce(&Db<'_>, i64) -> DbResult<T>,
    ) -> Result<T> {
        self.call(operation, self.write_tx_stamped_unowned(body))
            .await
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

    /// The writer connection, after the server's gate when the database is on a server
    /// ([`crate::server_gate`]: one write of this process at a time waits for the server's
    /// write lock). A transaction left open by a cancelled call (timeout) is rolled back
    /// first.
    pub(crate) async fn writer(&self) -> DbResult<WriterGuard<'_>> {
        let server = crate::server_gate::lock_if_any(self.server_gate.as_ref()).await;
        Ok(WriterGuard {
            conn: self.writer_conn().await?,
            _server: server,
        })
    }

    /// The writer connection without the server's gate (reads that share it).
    async fn writer_conn(&self) -> DbResult<MutexGuard<'_, Connection>> {
        let conn = self.writer.lock().await;
        if let Err(e) = self.settle(&conn).await {
            warn!(error = %e, "the open group's commit failed; its writes were not acknowledged");
        }
        if !conn.is_autocommit() {
            warn!(
                "writer connection was left inside a transaction by a cancelled call; rolling back"
            );
            conn.execute("ROLLBACK", ()).await?;
        }
        Ok(conn)
    }

    /// A reader connection (a free one if any, else the next in turn), with the statements it
    /// keeps prepared (none for the shared writer, remote servers and replicas).
    async fn reader(&self) -> DbResult<(MutexGuard<'_, Connection>, Option<&Prepared>)> {
        let n = self.readers.len();
        if n == 0 {
            return Ok((self.writer_conn().await?, None));
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            let at = (start + i) % n;
            if let Ok(guard) = self.readers[at].try_lock() {
                return Ok((guard, self.reader_statements.get(at)));
            }
        }
        Ok((
            self.readers[start].lock().await,
            self.reader_statements.get(start),
        ))
    }

    /// Runs `body` in an IMMEDIATE (write-locking) transaction on the writer connection:
    /// committed when it returns `Ok`, rolled back when it returns `Err`. On a local database
    /// the transaction may be shared with concurrent writes ([`crate::group_commit`]).
    pub(crate) async fn write_tx<T>(
        &self,
        body: impl AsyncFnOnce(&Db<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        if self.grouped {
            return self.write_grouped(body).await;
        }
        let asked = std::time::Instant::now();
        let conn = self.writer().await?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await?;
        let waited = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.longest_lock_wait_us
            .fetch_max(waited, Ordering::Relaxed);
        match body(&Db::plain(&tx)).await {
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
        body: impl AsyncFnOnce(&Db<'_>, i64) -> DbResult<T>,
    ) -> DbResult<T> {
        self.stamped(body, true).await
    }

    /// Like [`Inner::write_tx_stamped`], for a write that may change rows its caller does
    /// not write through to a cache: its position is not recorded as this handle's own, so
    /// the change feed reports its rows to this process's cache as another writer's.
    pub(crate) async fn write_tx_stamped_unowned<T>(
        &self,
        body: impl AsyncFnOnce(&Db<'_>, i64) -> DbResult<T>,
    ) -> DbResult<T> {
        self.stamped(body, false).await
    }

    async fn stamped<T>(
        &self,
        body: impl AsyncFnOnce(&Db<'_>, i64) -> DbResult<T>,
        own: bool,
    ) -> DbResult<T> {
        let mut taken = None;
        let value = self
            .write_tx(async |tx| {
                let position = next_position(tx).await?;
                taken = Some(position);
                body(tx, position).await
            })
            .await?;
        if let (Some(c), Some(p), true) = (&self.changes, taken, own) {
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
        body: impl AsyncFnOnce(&Db<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        let (conn, prepared) = self.reader().await?;
        if !self.remote_reads {
            let db = match prepared {
                Some(prepared) => Db::with(&conn, prepared),
                None => Db::plain(&conn),
            };
            return body(&db).await;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .await?;
        match body(&Db::plain(&tx)).await {
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

pub(crate) async fn build_database(config: &TursoConfig) -> DbResult<Database> {
    match config.mode() {
        TursoMode::Local { path } => {
            if !is_memory_path(path) {
                create_parent(path)?;
                // SQLite would create the file with the umask's permissions, and give its
                // -wal and -shm files the same: it opens this empty one, 0600, instead.
                memory_files::precreate(path)?;
            }
            let builder = Builder::new_local(path);
            #[cfg(feature = "encryption")]
            let builder = match &config.encryption {
                Some(key) => builder.encryption_config(encryption_config(key)),
                None => builder,
            };
            #[cfg(not(feature = "encryption"))]
            refuse_encryption(config)?;
            Ok(builder.build().await?)
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
            #[cfg(feature = "encryption")]
            if let Some(key) = &config.encryption {
                builder = builder.encryption_config(encryption_config(key));
            }
            #[cfg(not(feature = "encryption"))]
            refuse_encryption(config)?;
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

/// libsql's setting for a file encrypted under `key` (a passphrase derived from it).
#[cfg(feature = "encryption")]
pub(crate) fn encryption_config(key: &memory_seal::MasterKey) -> libsql::EncryptionConfig {
    let passphrase = key.database_passphrase();
    libsql::EncryptionConfig::new(
        libsql::Cipher::Aes256Cbc,
        bytes::Bytes::copy_from_slice(passphrase.as_bytes()),
    )
}

/// A key for a file in a build that cannot encrypt: refused, never ignored.
#[cfg(not(feature = "encryption"))]
fn refuse_encryption(config: &TursoConfig) -> DbResult<()> {
    if config.encryption.is_some() {
        return Err(DriverError::Setup(
            "an encryption key is set, but this build cannot encrypt the database file: build \
             with the `encryption` feature (`cargo build --release -p memory-cli --features \
             encryption`; it needs cmake: `bash scripts/install-cmake.sh`)"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// Creates the missing directories above `path`, 0700.
pub(crate) fn create_parent(path: &Path) -> DbResult<()> {
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
pub(crate) async fn pragma(conn: &Connection, sql: &str) -> DbResult<Option<String>> {
    let conn = Db::plain(conn);
    let value = query_opt(&conn, sql, (), |row| match row.get_value(0)? {
        Value::Text(s) => Ok(Some(s)),
        Value::Integer(n) => Ok(Some(n.to_string())),
        _ => Ok(None),
    });
    Ok(value.await?.flatten())
}

/// Puts the file in WAL mode. WAL is a property of the file, so only the first opener of a
/// new file switches it; everyone else finds it set and writes nothing.
///
/// The switch needs an exclusive lock, and SQLite answers a contended switch with
/// `SQLITE_BUSY` at once instead of calling the busy handler (many handles opening one new
/// file at the same moment hit this). So a busy switch is retried, with a short growing
/// pause, until `busy_timeout` has passed, the same patience every other statement gets.
async fn enable_wal(conn: &Connection, busy_timeout: std::time::Duration) -> DbResult<()> {
    retry_busy(busy_timeout, || async move {
        let mode = match pragma(conn, "PRAGMA journal_mode").await? {
            Some(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            _ => pragma(conn, "PRAGMA journal_mode = WAL").await?,
        };
        match mode {
            Some(m) if m.eq_ignore_ascii_case("wal") => Ok(()),
            other => {
                Err(DriverError::Setup(format!("journal_mode is {other:?}, expected wal")).into())
            }
        }
    })
    .await
}

/// Runs `attempt` until it does not fail with `SQLITE_BUSY` (or `LOCKED`) or `timeout` has
/// passed, pausing 1 ms, then twice as long each time up to 8 ms, asynchronously: the thread
/// runs other tasks meanwhile, where SQLite's busy handler would sleep on it.
pub(crate) async fn retry_busy<T, F: Future<Output = DbResult<T>>>(
    timeout: std::time::Duration,
    mut attempt: impl FnMut() -> F,
) -> DbResult<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match attempt().await {
            Err(Failure::Driver(DriverError::Libsql(e)))
                if is_busy(&e) && tokio::time::Instant::now() < deadline =>
            {
                debug!(error = %e, "busy; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(8));
            }
            result => return result,
        }
    }
}

fn is_busy(e: &libsql::Error) -> bool {
    matches!(e, libsql::Error::SqliteFailure(code, _) if matches!(code & 0xff, 5 | 6))
}

/// Per-connection settings of local databases.
pub(crate) async fn configure_local(
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
    // Statement journals (savepoints of multi-row statements, the full-text index) stay in
    // memory: they never need to survive a crash, and a temporary file costs syscalls.
    pragma(conn, "PRAGMA temp_store = MEMORY").await?;
    // Freed space is overwritten with zeros (deleted rows, the old copy of a row an update
    // moved, pages put on the free list), so what an erasure removes, and the earlier
    // versions of what it changed, leave no bytes behind in the file (`crate::forget`).
    pragma(conn, "PRAGMA secure_delete = ON").await?;
    if reader {
        pragma(conn, "PRAGMA query_only = ON").await?;
    }
    Ok(())
}
