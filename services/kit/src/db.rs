//! One database layer for SQLite (the embedded default) and PostgreSQL, chosen by `DATABASE_URL`.
//!
//! Services write portable SQL (`$1` placeholders, `BIGINT`/`TEXT` columns, ids as text) and run it
//! through sqlx's `Any` driver, so one storage module and one migration set serve both backends.
//! Rows are read into `#[derive(sqlx::FromRow)]` structs named after their columns (flags are
//! `BIGINT` 0/1, read as `i64`); a pair may stay a tuple destructured where it is read.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Executor, Transaction};

use crate::config::env_parse;

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

pub type Tx = Transaction<'static, sqlx::Any>;

/// A connection pool with its backend. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    /// Where reads that need no transaction go: on SQLite, read-only connections beside the one
    /// writer (WAL lets them read while it writes, so a read never queues behind writes); on
    /// PostgreSQL (and in-memory SQLite), `pool` itself.
    readers: AnyPool,
    backend: Backend,
}

impl Database {
    /// Connects without running migrations. The URL is never logged or put in errors: it may
    /// hold a password.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_owned();
        let new_options = || AnyPoolOptions::new().acquire_timeout(Duration::from_secs(3));
        let unreachable = || format!("could not connect to the {backend} database in DATABASE_URL");
        let mut options = new_options();
        match backend {
            Backend::Sqlite => {
                if !url.contains("mode=") {
                    // Create the file on first start.
                    url.push_str(if url.contains('?') {
                        "&mode=rwc"
                    } else {
                        "?mode=rwc"
                    });
                }
                // One connection by default: SQLite has one writer, and a second connection's
                // writer waits in SQLite's busy handler, which sleeps 1, 2, 5 … 100 ms between
                // tries (a checkout's write waited up to 1.6 s under load). The pool's queue is
                // fair and never sleeps; a statement here takes microseconds.
                options = options
                    .max_connections(env_parse("SHOP_DB_MAX_CONNECTIONS", 1)?)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the one writer; busy_timeout makes
                            // writers of other processes (a `shop migrate`, a larger pool) queue
                            // instead of failing with "database is locked".
                            conn.execute(
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                                 PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    });
            }
            Backend::Postgres => {
                options = options.max_connections(env_parse("SHOP_DB_MAX_CONNECTIONS", 8)?);
            }
        }
        let pool = options.connect(&url).await.with_context(unreachable)?;
        let readers = match backend {
            // After the writer: it has created the file and switched it to WAL.
            Backend::Sqlite if !url.contains(":memory:") && !url.contains("mode=memory") => {
                new_options()
                    .max_connections(env_parse("SHOP_DB_READERS", 2)?)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // query_only: a write sent here by mistake fails at once instead
                            // of racing the writer.
                            conn.execute(
                                "PRAGMA query_only=ON; PRAGMA busy_timeout=5000; \
                                 PRAGMA foreign_keys=ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await
                    .with_context(unreachable)?
            }
            _ => pool.clone(),
        };
        Ok(Self {
            pool,
            readers,
            backend,
        })
    }

    /// Connects and brings the schema up to date.
    pub async fn connect_and_migrate(url: &str, migrator: &Migrator) -> Result<Self> {
        let db = Self::connect(url).await?;
        db.migrate(migrator).await?;
        Ok(db)
    }

    pub async fn migrate(&self, migrator: &Migrator) -> Result<()> {
        migrator
            .run(&self.pool)
            .await
            .with_context(|| format!("running migrations on the {} database", self.backend))
    }

    /// The pool for writes, transactions, and reads that must see this connection's writes.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for reads outside a transaction (they see every committed write): on SQLite,
    /// read-only connections that never wait for the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.readers
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin().await
    }

    /// For `/readyz`: the database answers a trivial query. On a reader: under load a probe
    /// must not wait behind the writer's queue and fail a busy but healthy service.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map(|_| ())
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
