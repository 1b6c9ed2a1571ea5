//! A SQLite connection whose statements run on the calling thread.
//!
//! sqlx's SQLite driver gives each connection a thread of its own and hands every statement to
//! it and back: two thread wake-ups per statement. On a loaded machine each wake-up waits its
//! turn for a core, and the one writer connection of a service stays taken for that time, so a
//! service's writes queue behind context switches rather than work (docs/decisions.md, "SQLite
//! statements run on the caller's thread", has the measurements). A statement here is a call:
//! SQLite is a library, its statements take microseconds, and the pool gives each connection to
//! one task at a time.
//!
//! The rows come back as sqlx's `Any` rows, typed as sqlx's SQLite driver types them (by each
//! value's storage class), so every query in the services reads them unchanged.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, ffi};
use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow, AnyTypeInfoKind};
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Any, Either, Execute};
use sqlx_core::any::{AnyColumn, AnyTypeInfo, AnyValue, AnyValueKind};
use sqlx_core::ext::ustr::UStr;

/// How many prepared statements a connection keeps (sqlx's SQLite default too).
const STATEMENT_CACHE: usize = 100;
/// How many statement strings a connection remembers as single statements before it forgets
/// them all and looks again (queries built with a varying number of parameters add up).
const SINGLE_STATEMENTS: usize = 1_000;

pub struct SqliteConnection {
    connection: rusqlite::Connection,
    /// Statements seen to be one statement each. SQLite prepares the first statement of a
    /// string and leaves the rest (rusqlite does not say there was more), so a string is looked
    /// at whole the first time it comes; the services' statements are a bounded set.
    single: std::collections::HashSet<String>,
}

impl std::fmt::Debug for SqliteConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteConnection").finish_non_exhaustive()
    }
}

/// What a statement returned: its results as sqlx's `fetch_many` yields them.
pub type Results = Vec<Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>>;

impl SqliteConnection {
    /// Opens the database of a `sqlite:` URL as sqlx reads one: `sqlite://PATH` or
    /// `sqlite:PATH`, `sqlite::memory:`, and `mode=ro|rw|rwc|memory` (without `mode`, the file
    /// must exist).
    pub fn open(url: &str) -> Result<Self, sqlx::Error> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| config("not a sqlite: URL".into()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut mode = None;
        for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            match key {
                "mode" => mode = Some(value),
                // sqlx's own options the services never set (cache, immutable, vfs): refused
                // rather than ignored.
                other => return Err(config(format!("unsupported SQLite URL option `{other}`"))),
            }
        }
        let connection = if path == ":memory:" || mode == Some("memory") {
            rusqlite::Connection::open_in_memory()
        } else {
            let access = match mode {
                Some("ro") => OpenFlags::SQLITE_OPEN_READ_ONLY,
                Some("rwc") => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
                None | Some("rw") => OpenFlags::SQLITE_OPEN_READ_WRITE,
                Some(other) => return Err(config(format!("unknown SQLite mode `{other}`"))),
            };
            // No mutex: the pool gives a connection to one task at a time.
            rusqlite::Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        }
        .map_err(database_error)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            connection,
            single: Default::default(),
        })
    }

    /// Runs `query` to its end: every row, then the count of rows it changed.
    pub fn run<'q>(&mut self, mut query: impl Execute<'q, Any>) -> Results {
        let arguments = match query.take_arguments() {
            Ok(arguments) => arguments,
            Err(e) => return vec![Err(sqlx::Error::Encode(e))],
        };
        let sql = query.sql();
        if !self.single.contains(sql) {
            match self.is_one_statement(sql) {
                Ok(true) => {
                    if self.single.len() >= SINGLE_STATEMENTS {
                        self.single.clear();
                    }
                    self.single.insert(sql.to_owned());
                }
                // Several statements (or none) and nothing to bind: the setup's PRAGMAs, a
                // script.
                Ok(false) if arguments.as_ref().is_none_or(|a| a.values.0.is_empty()) => {
                    return vec![
                        self.connection
                            .execute_batch(sql)
                            .map(|()| Either::Left(changed(self.connection.changes())))
                            .map_err(database_error),
                    ];
                }
                Ok(false) => {
                    return vec![Err(driver(
                        "several statements in one query with arguments; send them one at a time"
                            .into(),
                    ))];
                }
                Err(e) => return vec![Err(e)],
            }
        }
        let mut statement = match self.connection.prepare_cached(sql) {
            Ok(statement) => statement,
            Err(e) => return vec![Err(database_error(e))],
        };
        if let Err(e) = bind(&mut statement, arguments) {
            return vec![Err(e)];
        }
        let names: Vec<UStr> = statement
            .column_names()
            .into_iter()
            .map(UStr::new)
            .collect();
        let column_names = Arc::new(
            names
                .iter()
                .enumerate()
                .map(|(ordinal, name)| (name.clone(), ordinal))
                .collect::<sqlx_core::HashMap<_, _>>(),
        );
        let read_only = statement.readonly();
        let mut results = Vec::new();
        let mut rows = statement.raw_query();
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let mut columns = Vec::with_capacity(names.len());
                    let mut values = Vec::with_capacity(names.len());
                    for (ordinal, name) in names.iter().enumerate() {
                        let kind = match row.get_ref(ordinal) {
                            Ok(value) => value_kind(value),
                            Err(e) => return with(results, Err(database_error(e))),
                        };
                        columns.push(AnyColumn {
                            ordinal,
                            name: name.clone(),
                            type_info: AnyTypeInfo {
                                kind: type_of(&kind),
                            },
                        });
                        values.push(AnyValue { kind });
                    }
                    results.push(Ok(Either::Right(AnyRow {
                        column_names: column_names.clone(),
                        columns,
                        values,
                    })));
                }
                Ok(None) => break,
                Err(e) => return with(results, Err(database_error(e))),
            }
        }
        drop(rows);
        // `changes()` is the last INSERT, UPDATE or DELETE's, whatever ran since: a read
        // changed nothing.
        let changes = if read_only {
            0
        } else {
            self.connection.changes()
        };
        with(results, Ok(Either::Left(changed(changes))))
    }

    /// Whether `sql` is exactly one statement: the first prepared (a failure is the query's
    /// error), then whether anything follows. What follows is not prepared to be counted: it may
    /// name a table the first statement creates.
    fn is_one_statement(&self, sql: &str) -> Result<bool, sqlx::Error> {
        let mut batch = rusqlite::Batch::new(&self.connection, sql);
        if batch.next().map_err(database_error)?.is_none() {
            return Ok(false);
        }
        Ok(matches!(batch.next(), Ok(None)))
    }
}

fn with(
    mut results: Results,
    last: Result<Either<AnyQueryResult, AnyRow>, sqlx::Error>,
) -> Results {
    results.push(last);
    results
}

fn changed(rows_affected: u64) -> AnyQueryResult {
    AnyQueryResult {
        rows_affected,
        last_insert_id: None,
    }
}

/// Binds `arguments` as sqlx's SQLite driver does: `$N` and `?N` to the Nth argument, `?` to the
/// next; a parameter past the arguments stays NULL.
fn bind(
    statement: &mut rusqlite::Statement<'_>,
    arguments: Option<AnyArguments<'_>>,
) -> Result<(), sqlx::Error> {
    let values = arguments.map(|a| a.values.0).unwrap_or_default();
    let mut next = 0;
    for parameter in 1..=statement.parameter_count() {
        let n = match statement.parameter_name(parameter) {
            Some(name) => name
                .strip_prefix('$')
                .or_else(|| name.strip_prefix('?'))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| driver(format!("unsupported SQL parameter `{name}`")))?,
            None => {
                next += 1;
                next
            }
        };
        let Some(value) = n.checked_sub(1).and_then(|i| values.get(i)) else {
            break;
        };
        let value = match value {
            AnyValueKind::Null(_) => ValueRef::Null,
            AnyValueKind::Bool(b) => ValueRef::Integer(i64::from(*b)),
            AnyValueKind::SmallInt(i) => ValueRef::Integer(i64::from(*i)),
            AnyValueKind::Integer(i) => ValueRef::Integer(i64::from(*i)),
            AnyValueKind::BigInt(i) => ValueRef::Integer(*i),
            AnyValueKind::Real(r) => ValueRef::Real(f64::from(*r)),
            AnyValueKind::Double(d) => ValueRef::Real(*d),
            AnyValueKind::Text(t) => ValueRef::Text(t.as_bytes()),
            AnyValueKind::Blob(b) => ValueRef::Blob(b),
            other => return Err(driver(format!("no SQLite type for the argument {other:?}"))),
        };
        statement
            .raw_bind_parameter(parameter, ToSqlOutput::Borrowed(value))
            .map_err(database_error)?;
    }
    Ok(())
}

/// A value by its storage class, as sqlx's SQLite driver gives it to `Any`.
fn value_kind(value: ValueRef<'_>) -> AnyValueKind<'static> {
    match value {
        ValueRef::Null => AnyValueKind::Null(AnyTypeInfoKind::Null),
        ValueRef::Integer(i) => AnyValueKind::BigInt(i),
        ValueRef::Real(r) => AnyValueKind::Double(r),
        ValueRef::Text(t) => {
            AnyValueKind::Text(Cow::Owned(String::from_utf8_lossy(t).into_owned()))
        }
        ValueRef::Blob(b) => AnyValueKind::Blob(Cow::Owned(b.to_vec())),
    }
}

fn type_of(kind: &AnyValueKind<'_>) -> AnyTypeInfoKind {
    match kind {
        AnyValueKind::BigInt(_) => AnyTypeInfoKind::BigInt,
        AnyValueKind::Double(_) => AnyTypeInfoKind::Double,
        AnyValueKind::Text(_) => AnyTypeInfoKind::Text,
        AnyValueKind::Blob(_) => AnyTypeInfoKind::Blob,
        _ => AnyTypeInfoKind::Null,
    }
}

fn config(message: String) -> sqlx::Error {
    sqlx::Error::Configuration(message.into())
}

/// SQLite's own failures as sqlx reports them (`Error::Database`, the extended result code as
/// the code, the constraint kinds), so that callers tell a duplicate key or a full disk apart
/// as before.
fn database_error(error: rusqlite::Error) -> sqlx::Error {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(SqliteError {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            }))
        }
        // A misuse (a column out of range, say), not a lost connection.
        other => sqlx::Error::AnyDriverError(Box::new(other)),
    }
}

fn driver(message: String) -> sqlx::Error {
    sqlx::Error::AnyDriverError(message.into())
}

#[derive(Debug)]
pub struct SqliteError {
    code: i32,
    message: String,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteError {}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// Copies a SQLite database's write-ahead log back into its file from a thread of its own,
/// every `every`, until dropped.
///
/// SQLite's automatic checkpoint runs on the connection that commits, after its commit, and
/// syncs the file to disk: run on the caller's thread, that would stall a service's runtime for
/// the length of an `fsync`. The pool's connections turn it off (`wal_autocheckpoint=0`), and
/// this thread checkpoints instead (`PASSIVE`: beside the writer and the readers, waiting for
/// neither).
pub struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::Thread,
}

impl Checkpointer {
    pub fn start(url: &str, every: std::time::Duration) -> Result<Self, sqlx::Error> {
        let connection = SqliteConnection::open(url)?.connection;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(every);
                    if let Err(e) =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "SQLite checkpoint failed; trying again");
                    }
                }
            })
            .map_err(sqlx::Error::Io)?;
        Ok(Self {
            stop,
            thread: thread.thread().clone(),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.unpark();
    }
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("shop-kit-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn urls_open_as_sqlx_reads_them_and_unknown_options_are_refused() {
        SqliteConnection::open("sqlite::memory:").unwrap();
        let file = temp_file("a.db");
        // Without `mode`, the file must exist; `rwc` creates it; then `rw` and `ro` open it.
        let missing = SqliteConnection::open(&format!("sqlite://{}", file.display())).unwrap_err();
        assert_eq!(missing.as_database_error().unwrap().code().unwrap(), "14");
        SqliteConnection::open(&format!("sqlite://{}?mode=rwc", file.display())).unwrap();
        SqliteConnection::open(&format!("sqlite:{}?mode=rw", file.display())).unwrap();
        SqliteConnection::open(&format!("sqlite://{}?mode=ro", file.display())).unwrap();
        let unknown = SqliteConnection::open(&format!("sqlite://{}?cache=shared", file.display()))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("unsupported SQLite URL option `cache`"),
            "{unknown}"
        );
        let mode = SqliteConnection::open(&format!("sqlite://{}?mode=rwx", file.display()))
            .unwrap_err()
            .to_string();
        assert!(mode.contains("unknown SQLite mode `rwx`"), "{mode}");
        assert!(SqliteConnection::open("postgres://db/shop").is_err());
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_string_of_statements_runs_whole_and_refuses_arguments() {
        let mut connection = SqliteConnection::open("sqlite::memory:").unwrap();
        let script =
            "CREATE TABLE t (n BIGINT); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);";
        for result in connection.run(sqlx::query(script)) {
            result.unwrap();
        }
        let rows = connection.run(sqlx::query("SELECT n FROM t ORDER BY n"));
        // Two rows, then the statement's count.
        assert_eq!(rows.len(), 3, "both inserts ran");
        let refused = connection
            .run(sqlx::query("INSERT INTO t VALUES ($1); INSERT INTO t VALUES ($1)").bind(3_i64))
            .pop()
            .unwrap()
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("several statements in one query with arguments"),
            "{refused}"
        );
        // Nothing of the refused string ran.
        assert_eq!(connection.run(sqlx::query("SELECT n FROM t")).len(), 3);
    }
}
