//! One database layer for SQLite (the embedded default) and PostgreSQL, chosen by `DATABASE_URL`.
//!
//! Services write portable SQL (`$1` placeholders, `BIGINT`/`TEXT` columns, ids as text) and run it
//! through sqlx's `Any` driver, so one storage module and one migration set serve both backends.
//! Rows are read into `#[derive(sqlx::FromRow)]` structs named after their columns (flags are
//! `BIGINT` 0/1, read as `i64`); a pair may stay a tuple destructured where it is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::Connection as _;
use sqlx::any::AnyConnectOptions;
use sqlx::migrate::Migrator;

use crate::config::env_parse;

mod pool;
mod sqlite;

pub use pool::{Connection, Pool, PoolSettings, PooledConnection, Tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            let scheme = url.split(':').next().unwrap_or_default();
            bail!("DATABASE_URL must start with sqlite:// or postgres://, not {scheme:?}")
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A connection pool with its backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: Pool,
    /// Where reads that need no transaction go: on SQLite, read-only connections beside the one
    /// writer (WAL lets them read while it writes, so a read never queues behind writes); on
    /// PostgreSQL (and in-memory SQLite), `pool` itself.
    readers: Pool,
    backend: Backend,
    /// SQLite's checkpoints, on a thread of their own while any clone lives (file databases).
    _checkpointer: Option<Arc<sqlite::Checkpointer>>,
    outage: Arc<Outage>,
}

/// Refuses a SQLite writer pool of other than one connection (see `Database::connect`).
fn one_sqlite_writer(writers: usize) -> Result<()> {
    if writers != 1 {
        bail!(
            "SHOP_DB_MAX_CONNECTIONS is {writers}, but a SQLite database takes exactly 1 (its one \
             writer); unset it, or set SHOP_DB_READERS for more readers"
        );
    }
    Ok(())
}

/// What kind of database failure an error is, for the answer a caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Every connection was in use for the whole acquire timeout.
    Busy,
    /// The server cannot be reached or is shutting down: a refused or broken connection, TLS,
    /// PostgreSQL's connection exceptions (class 08) and shutdown codes (57P01 to 57P03).
    Unreachable,
    /// The database cannot write: out of space (SQLite's FULL, PostgreSQL's class 53), a file
    /// that became read-only or unreadable (SQLite's READONLY, IOERR, CANTOPEN).
    CannotWrite,
}

impl Failure {
    /// The failure `err` is, or `None` for an error of the request itself (a constraint, SQL).
    pub fn of(err: &sqlx::Error) -> Option<Self> {
        match err {
            sqlx::Error::PoolTimedOut => Some(Self::Busy),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
                Some(Self::Unreachable)
            }
            sqlx::Error::Database(db) => {
                let code = db.code()?;
                // The Any driver passes the backend's own error through.
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    Self::of_sqlstate(&code)
                } else {
                    Self::of_sqlite_code(&code)
                }
            }
            _ => None,
        }
    }

    /// By SQLite's (extended) result code.
    fn of_sqlite_code(code: &str) -> Option<Self> {
        // The primary result code is the low byte of an extended one.
        match code.parse::<u32>().ok()? & 0xff {
            8 | 10 | 13 | 14 => Some(Self::CannotWrite),
            _ => None,
        }
    }

    /// By PostgreSQL's SQLSTATE.
    fn of_sqlstate(code: &str) -> Option<Self> {
        if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03") {
            Some(Self::Unreachable)
        } else if code.starts_with("53") {
            Some(Self::CannotWrite)
        } else {
            None
        }
    }
}

/// Put on a response whose handler found the database server unreachable, or waited out the
/// pool's acquire timeout (see [`crate::Problem`]): the service then checks the server with a
/// connection of its own and, while it stays down, answers at once instead of letting every
/// request wait out the acquire timeout.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseMayBeDown;

/// Whether the database server is known to be down, and the check that finds it back.
#[derive(Debug)]
struct Outage {
    /// Where to open the probe's own connection (never logged: it may hold a password). `None`
    /// on SQLite: there is no server to lose.
    url: Option<String>,
    down: AtomicBool,
    checking: AtomicBool,
}

/// A PostgreSQL connection idle for longer is pinged before it is used again: long enough that
/// a busy service never pings, short enough that connections left from before a server restart
/// are found broken before a request uses them.
pub const PING_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How often a SQLite database's log is copied back into its file (see
/// `sqlite::Checkpointer`): at the order service's write rate under `shop bench` the log grows
/// by about 10 MB between two.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How often the outage check tries a new connection while the server is down.
const OUTAGE_CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long one try may take before it counts as a failure.
const OUTAGE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Database {
    /// Connects without running migrations. The URL is never logged or put in errors: it may
    /// hold a password.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_owned();
        // Shorter than the callers' upstream timeout (3 s), so that a caller waiting on a
        // service whose database has just gone away hears that service's 503, not its own 504.
        let acquire_timeout =
            Duration::from_millis(env_parse("SHOP_DB_ACQUIRE_TIMEOUT_MS", 2_000)?);
        let unreachable = || format!("could not connect to the {backend} database in DATABASE_URL");
        let settings = match backend {
            Backend::Sqlite => {
                if !url.contains("mode=") {
                    // Create the file on first start.
                    url.push_str(if url.contains('?') {
                        "&mode=rwc"
                    } else {
                        "?mode=rwc"
                    });
                }
                // One writer connection: SQLite has one writer at a time, and a second
                // connection's write would wait in SQLite's busy handler, which sleeps on the
                // service's own thread (statements run there), where the first connection's
                // transaction would then wait too. The pool's queue is fair and never sleeps.
                one_sqlite_writer(env_parse("SHOP_DB_MAX_CONNECTIONS", 1)?)?;
                PoolSettings {
                    max_connections: 1,
                    acquire_timeout,
                    // WAL lets readers run beside the one writer; busy_timeout makes writers of
                    // other processes (a `shop migrate`) queue instead of
                    // failing with "database is locked".
                    setup: Some(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                         PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; \
                         PRAGMA wal_autocheckpoint=0;",
                    ),
                    // A file in this process: nothing to lose between statements.
                    ping_idle_after: None,
                }
            }
            Backend::Postgres => PoolSettings {
                max_connections: env_parse("SHOP_DB_MAX_CONNECTIONS", 8)?,
                acquire_timeout,
                setup: None,
                ping_idle_after: Some(PING_IDLE_AFTER),
            },
        };
        let options: AnyConnectOptions = url.parse().with_context(unreachable)?;
        let pool = Pool::new(options.clone(), settings);
        // Connect now: a wrong URL or a server that is not there stops the service at start.
        drop(pool.acquire().await.with_context(unreachable)?);
        let file =
            backend == Backend::Sqlite && !url.contains(":memory:") && !url.contains("mode=memory");
        // After the writer: it has created the file and switched it to WAL.
        let checkpointer = if file {
            Some(Arc::new(
                sqlite::Checkpointer::start(&url, CHECKPOINT_EVERY).with_context(unreachable)?,
            ))
        } else {
            None
        };
        let readers = match backend {
            Backend::Sqlite if file => {
                let readers = Pool::new(
                    options,
                    PoolSettings {
                        max_connections: env_parse("SHOP_DB_READERS", 2)?,
                        acquire_timeout,
                        // query_only: a write sent here by mistake fails at once instead of
                        // racing the writer.
                        setup: Some(
                            "PRAGMA query_only=ON; PRAGMA busy_timeout=5000; \
                             PRAGMA foreign_keys=ON;",
                        ),
                        ping_idle_after: None,
                    },
                );
                drop(readers.acquire().await.with_context(unreachable)?);
                readers
            }
            _ => pool.clone(),
        };
        let outage = Arc::new(Outage {
            url: (backend == Backend::Postgres).then(|| url.clone()),
            down: AtomicBool::new(false),
            checking: AtomicBool::new(false),
        });
        Ok(Self {
            pool,
            readers,
            backend,
            _checkpointer: checkpointer,
            outage,
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn connect_and_migrate(url: &str, migrator: &Migrator) -> Result<Self> {
        let db = Self::connect(url).await?;
        db.migrate(migrator).await?;
        Ok(db)
    }

    pub async fn migrate(&self, migrator: &Migrator) -> Result<()> {
        self.pool
            .migrate(migrator)
            .await
            .with_context(|| format!("running migrations on the {} database", self.backend))
    }

    /// The pool for writes, transactions, and reads that must see this connection's writes.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The pool for reads outside a transaction (they see every committed write): on SQLite,
    /// read-only connections that never wait for the writer.
    pub fn reader(&self) -> &Pool {
        &self.readers
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin().await
    }

    /// Closes every connection (the readers' too) as it comes back.
    pub async fn close(&self) {
        self.pool.close().await;
        self.readers.close().await;
    }

    /// For `/readyz`: the database answers a trivial query. On a reader: under load a probe
    /// must not wait behind the writer's queue and fail a busy but healthy service.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map(|_| ())
    }

    /// Whether the server is known to be down right now (the last check could not connect).
    pub fn is_down(&self) -> bool {
        self.outage.down.load(Ordering::Relaxed)
    }

    /// A request found the server unreachable or the pool exhausted: checks the server with a
    /// connection of its own (the pool may only be busy) until one opens, and marks the database
    /// down meanwhile. One check runs at a time; it ends as soon as the server answers, or when
    /// the service has let go of its `Database` (it holds only a weak reference).
    pub fn suspect_outage(&self) {
        let Some(url) = self.outage.url.clone() else {
            return;
        };
        if self.outage.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.outage);
        tokio::spawn(async move {
            while let Some(outage) = weak.upgrade() {
                let tried =
                    tokio::time::timeout(OUTAGE_CHECK_TIMEOUT, sqlx::AnyConnection::connect(&url))
                        .await;
                if let Ok(Ok(connection)) = tried {
                    let _ = connection.close().await;
                    if outage.down.swap(false, Ordering::AcqRel) {
                        tracing::info!("the database is reachable again");
                    }
                    outage.checking.store(false, Ordering::Release);
                    return;
                }
                if !outage.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!("the database is down: answering 503 at once until it is back");
                }
                drop(outage);
                tokio::time::sleep(OUTAGE_CHECK_EVERY).await;
            }
        });
    }

    /// Whether an error is a unique-constraint violation (for 409 responses), on either backend:
    /// the `Any` driver hands the backend's own error through, whose kind sqlx classifies.
    pub fn is_unique_violation(err: &sqlx::Error) -> bool {
        err.as_database_error()
            .is_some_and(|db| db.is_unique_violation())
    }
}

/// Current time as RFC 3339 in UTC with fixed precision, so text order is time order.
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

/// `at` as RFC 3339 in UTC with fixed precision (microseconds), the form every stored timestamp
/// takes, so text order is time order on both backends.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("formatting a UTC time cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_database_takes_exactly_one_writer() {
        one_sqlite_writer(1).unwrap();
        for writers in [0, 2] {
            let refused = one_sqlite_writer(writers).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("SHOP_DB_MAX_CONNECTIONS is {writers}"))
                    && refused.contains("exactly 1"),
                "{refused}"
            );
        }
    }

    #[test]
    fn failures_by_backend_code() {
        // SQLite: primary codes, and extended ones whose low byte is the primary.
        for code in ["13", "8", "10", "14", "266", "1032"] {
            assert_eq!(
                Failure::of_sqlite_code(code),
                Some(Failure::CannotWrite),
                "{code}"
            );
        }
        // SQLITE_CONSTRAINT (19) and its extended UNIQUE (2067) are the request's own.
        for code in ["19", "2067", "1"] {
            assert_eq!(Failure::of_sqlite_code(code), None, "{code}");
        }
        // PostgreSQL: connection exceptions and shutdowns; out of disk; a unique violation.
        for code in ["08006", "08001", "57P01", "57P03"] {
            assert_eq!(
                Failure::of_sqlstate(code),
                Some(Failure::Unreachable),
                "{code}"
            );
        }
        assert_eq!(Failure::of_sqlstate("53100"), Some(Failure::CannotWrite));
        assert_eq!(Failure::of_sqlstate("23505"), None);
        assert_eq!(Failure::of_sqlstate("57014"), None, "a cancelled statement");
    }
}
