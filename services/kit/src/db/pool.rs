//! The connections a service holds to its database, handed out one statement or one transaction
//! at a time.
//!
//! sqlx's own pool pings every connection when it is given back (and, by default, before it is
//! handed out): a round trip per statement to the PostgreSQL server (or, with sqlx's SQLite
//! driver, to the connection's worker thread), on top of the statement's own. This pool keeps
//! what the services need of it (a bound on connections, a fair wait with the acquire timeout,
//! broken connections replaced) and pings only a PostgreSQL connection that sat idle, the way
//! connection pools such as HikariCP do. SQLite connections are the kit's own and run each
//! statement on the caller's thread (`sqlite.rs`). docs/decisions.md, "The services hold their
//! own database connections" and "SQLite statements run on the caller's thread", has the
//! figures.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::any::{Any, AnyConnectOptions, AnyQueryResult, AnyRow, AnyStatement, AnyTypeInfo};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyConnection, Connection as _, Describe, Either, Execute, Executor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Backend;
use super::sqlite::SqliteConnection;

/// A bounded set of connections to one database. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    options: AnyConnectOptions,
    /// Run on each new connection (PRAGMAs): `None` for nothing.
    setup: Option<&'static str>,
    /// One per connection that may be out at once; closed when the pool is.
    permits: Arc<Semaphore>,
    /// Connections not in use, the most recently used last.
    idle: Mutex<Vec<Idle>>,
    acquire_timeout: Duration,
    /// A connection idle for longer is pinged before it is handed out: a server restarted
    /// meanwhile has broken it. `None`: never (a SQLite file has no server to lose).
    ping_idle_after: Option<Duration>,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One connection to the database: sqlx's (PostgreSQL), or SQLite run on the caller's thread
/// (see `sqlite.rs`).
#[derive(Debug)]
pub enum Connection {
    Sqlx(AnyConnection),
    Sqlite(SqliteConnection),
}

impl Connection {
    async fn connect(options: &AnyConnectOptions) -> Result<Self, sqlx::Error> {
        let url = options.database_url.as_str();
        match Backend::from_url(url) {
            Ok(Backend::Sqlite) => Ok(Self::Sqlite(SqliteConnection::open(url)?)),
            _ => Ok(Self::Sqlx(AnyConnection::connect_with(options).await?)),
        }
    }

    async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlx(connection) => connection.ping().await,
            // A file in this process: nothing to lose between statements.
            Self::Sqlite(_) => Ok(()),
        }
    }

    async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlx(connection) => connection.close().await,
            Self::Sqlite(_) => Ok(()),
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the URL, which may hold a password: never printed.
        f.debug_struct("Pool")
            .field("available", &self.inner.permits.available_permits())
            .field("closed", &self.inner.permits.is_closed())
            .finish_non_exhaustive()
    }
}

/// How a [`Pool`] opens and keeps its connections.
pub struct PoolSettings {
    pub max_connections: usize,
    pub acquire_timeout: Duration,
    pub setup: Option<&'static str>,
    pub ping_idle_after: Option<Duration>,
}

impl Pool {
    /// A pool over `options`. Opens no connection until one is asked for.
    pub fn new(options: AnyConnectOptions, settings: PoolSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                setup: settings.setup,
                permits: Arc::new(Semaphore::new(settings.max_connections.max(1))),
                idle: Mutex::new(Vec::new()),
                acquire_timeout: settings.acquire_timeout,
                ping_idle_after: settings.ping_idle_after,
            }),
        }
    }

    /// A connection, waiting in line (first come, first served) for at most the acquire
    /// timeout, then `PoolTimedOut`; opening one when none is idle.
    pub async fn acquire(&self) -> Result<PooledConnection, sqlx::Error> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let idle = inner.idle.lock().expect("the idle list").pop();
            let Some(Idle {
                mut connection,
                since,
            }) = idle
            else {
                break;
            };
            if let Some(after) = inner.ping_idle_after
                && since.elapsed() > after
                && tokio::time::timeout_at(deadline, connection.ping())
                    .await
                    .map_or(true, |pinged| pinged.is_err())
            {
                // Broken while it waited: dropped, and the next one tried.
                continue;
            }
            return Ok(self.hand_out(connection, permit));
        }
        let mut connection = tokio::time::timeout_at(deadline, Connection::connect(&inner.options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        if let Some(setup) = inner.setup {
            connection.execute(setup).await?;
        }
        Ok(self.hand_out(connection, permit))
    }

    fn hand_out(&self, connection: Connection, permit: OwnedSemaphorePermit) -> PooledConnection {
        PooledConnection {
            connection: Some(connection),
            pool: self.inner.clone(),
            _permit: permit,
            broken: false,
            in_flight: false,
        }
    }

    /// Closes the idle connections and every other one as it is given back; later acquires
    /// fail with `PoolClosed`.
    pub async fn close(&self) {
        self.inner.permits.close();
        let idle = std::mem::take(&mut *self.inner.idle.lock().expect("the idle list"));
        for Idle { connection, .. } in idle {
            let _ = connection.close().await;
        }
    }

    /// Brings the schema up to date, on a connection of its own (sqlx's migrator runs on sqlx's
    /// connections: for SQLite, one opened for this).
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), MigrateError> {
        let mut connection = self.acquire().await?;
        match &mut *connection {
            Connection::Sqlx(connection) => migrator.run(connection).await,
            Connection::Sqlite(_) => {
                let mut connection = AnyConnection::connect_with(&self.inner.options).await?;
                let migrated = migrator.run(&mut connection).await;
                let _ = connection.close().await;
                migrated
            }
        }
    }

    /// A transaction on a connection of its own (`BEGIN` sent); rolled back if dropped before
    /// [`Tx::commit`].
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let mut connection = self.acquire().await?;
        if let Err(e) = connection.execute("BEGIN").await {
            connection.check(&e);
            return Err(e);
        }
        Ok(Tx {
            connection: Some(connection),
        })
    }
}

/// A connection out of a [`Pool`]; given back when dropped, unless it broke.
pub struct PooledConnection {
    connection: Option<Connection>,
    pool: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
    broken: bool,
    /// A statement was sent and its answer not yet read in full: if the connection is dropped
    /// so (its caller was cancelled), it may be left mid-exchange, and is closed.
    in_flight: bool,
}

impl PooledConnection {
    /// Marks the connection broken when `error` says it is (the server is gone, the socket
    /// failed): it is closed instead of given back.
    fn check(&mut self, error: &sqlx::Error) {
        if connection_lost(error) {
            self.broken = true;
        }
    }

    /// Closes the connection instead of giving it back.
    fn discard(&mut self) {
        self.broken = true;
    }

    fn check_result<T>(&mut self, result: &Result<T, sqlx::Error>) {
        if let Err(e) = result {
            self.check(e);
        }
    }
}

/// Whether an error leaves the connection unusable: the server unreachable (I/O, TLS, its
/// connection and shutdown codes), or an exchange the driver could not follow. (Only sqlx's
/// PostgreSQL connections fail so: SQLite's are calls in this process.)
fn connection_lost(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Protocol(_))
        || super::Failure::of(error) == Some(super::Failure::Unreachable)
}

impl Deref for PooledConnection {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.broken || self.in_flight || self.pool.permits.is_closed() {
            // Dropping it closes it (SQLite's file handle, PostgreSQL's socket).
            return;
        }
        self.pool.idle.lock().expect("the idle list").push(Idle {
            connection,
            since: Instant::now(),
        });
        // The permit is released after this, with the connection already back.
    }
}

/// A transaction on a pooled connection. Statements run on `&mut *tx`. Dropped without
/// [`Tx::commit`] (an error, a cancelled caller), it is rolled back before its connection serves
/// anyone else; `ROLLBACK` is sent after whatever the connection was in the middle of, as sqlx's
/// own transactions do.
pub struct Tx {
    connection: Option<PooledConnection>,
}

impl Tx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let mut connection = self.connection.take().expect("present until finished");
        let committed = connection.execute("COMMIT").await;
        if let Err(e) = &committed {
            connection.check(e);
            // A failed COMMIT may leave the transaction open (or SQLite may have rolled it back
            // by itself, on a full disk): either way the connection must not go back inside one.
            if !connection.broken {
                let _ = roll_back(&mut connection).await;
            }
        }
        committed.map(|_| ())
    }

    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let mut connection = self.connection.take().expect("present until finished");
        roll_back(&mut connection).await
    }
}

/// Sends `ROLLBACK`; a connection on which that fails is closed instead of given back, so it
/// can never serve again inside a transaction.
async fn roll_back(connection: &mut PooledConnection) -> Result<(), sqlx::Error> {
    let rolled_back = connection.execute("ROLLBACK").await;
    if rolled_back.is_err() {
        connection.discard();
    }
    rolled_back.map(|_| ())
}

impl Deref for Tx {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.connection.as_ref().expect("present until finished")
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection.as_mut().expect("present until finished")
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            // The connection, and its permit, stay out until the rollback is done.
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = roll_back(&mut connection).await;
                });
            }
            // No runtime to roll back on: closing the connection rolls the transaction back.
            Err(_) => connection.discard(),
        }
    }
}

/// Runs one statement on a connection taken from `$pool` for it: marked in flight meanwhile,
/// and checked for a lost connection after.
macro_rules! on_a_connection {
    ($pool:expr, $connection:ident => $statement:expr) => {
        Box::pin(async move {
            let mut $connection = $pool.acquire().await?;
            $connection.in_flight = true;
            let result = $statement.await;
            $connection.in_flight = false;
            $connection.check_result(&result);
            result
        })
    };
}

/// A statement on a connection: sqlx's driver, or the SQLite connection run here and now.
impl<'c> Executor<'c> for &'c mut Connection {
    type Database = Any;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Connection::Sqlx(connection) => connection.fetch_many(query),
            Connection::Sqlite(connection) => {
                futures_util::stream::iter(connection.run(query)).boxed()
            }
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        match self {
            Connection::Sqlx(connection) => connection.fetch_optional(query),
            Connection::Sqlite(connection) => {
                let first = connection
                    .run(query)
                    .into_iter()
                    .find_map(|result| match result {
                        Ok(Either::Right(row)) => Some(Ok(row)),
                        Ok(Either::Left(_)) => None,
                        Err(e) => Some(Err(e)),
                    });
                Box::pin(std::future::ready(first.transpose()))
            }
        }
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            Connection::Sqlx(connection) => connection.prepare_with(sql, parameters),
            Connection::Sqlite(_) => Box::pin(std::future::ready(Err(unsupported("prepare")))),
        }
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        match self {
            Connection::Sqlx(connection) => connection.describe(sql),
            Connection::Sqlite(_) => Box::pin(std::future::ready(Err(unsupported("describe")))),
        }
    }
}

/// What the services never ask of a connection (they run queries; sqlx prepares and caches
/// statements by itself), and the SQLite connection does not offer.
fn unsupported(what: &str) -> sqlx::Error {
    sqlx::Error::AnyDriverError(
        format!("{what} is not supported on the kit's SQLite connection").into(),
    )
}

/// Statements on a pool take a connection for the statement and give it back.
impl<'c> Executor<'c> for &'c Pool {
    type Database = Any;

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<AnyQueryResult, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        on_a_connection!(self, connection => connection.execute(query))
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Vec<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        on_a_connection!(self, connection => connection.fetch_all(query))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        on_a_connection!(self, connection => connection.fetch_optional(query))
    }

    /// Collects the statement's results before handing them on, so that the connection goes
    /// back at once: the services' queries are bounded (pages, a cart's lines).
    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Any>,
    {
        futures_util::stream::once(async move {
            let results = match self.acquire().await {
                Ok(mut connection) => {
                    connection.in_flight = true;
                    let results: Vec<_> = connection.fetch_many(query).collect().await;
                    connection.in_flight = false;
                    if let Some(Err(e)) = results.last() {
                        connection.check(e);
                    }
                    results
                }
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(results)
        })
        .flatten()
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [AnyTypeInfo],
    ) -> BoxFuture<'e, Result<AnyStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        on_a_connection!(self, connection => connection.prepare_with(sql, parameters))
    }

    fn describe<'e, 'q: 'e>(self, sql: &'q str) -> BoxFuture<'e, Result<Describe<Any>, sqlx::Error>>
    where
        'c: 'e,
    {
        on_a_connection!(self, connection => connection.describe(sql))
    }
}
