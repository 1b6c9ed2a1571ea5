//! The kit's database layer on both backends, as the services see it through sqlx's `Any` driver.

use shop_kit::Database;
use shop_kit::testing;

/// A duplicate primary key and a duplicate unique column are unique violations (the 409 of a
/// duplicate email or slug); a missing NOT NULL value and a syntax error are not.
#[tokio::test]
async fn unique_violations_are_told_apart_on_both_backends() {
    for test_db in testing::all_backends().await {
        let backend = test_db.backend;
        let db = Database::connect(&test_db.url).await.unwrap();
        sqlx::query("CREATE TABLE accounts (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE)")
            .execute(db.pool())
            .await
            .unwrap();
        let insert = |id: &'static str, email: Option<&'static str>| {
            sqlx::query("INSERT INTO accounts (id, email) VALUES ($1, $2)")
                .bind(id)
                .bind(email)
                .execute(db.pool())
        };
        insert("a", Some("a@example.com")).await.unwrap();

        let same_id = insert("a", Some("b@example.com")).await.unwrap_err();
        assert!(
            Database::is_unique_violation(&same_id),
            "{backend}: {same_id}"
        );
        let same_email = insert("b", Some("a@example.com")).await.unwrap_err();
        assert!(
            Database::is_unique_violation(&same_email),
            "{backend}: {same_email}"
        );

        let no_email = insert("c", None).await.unwrap_err();
        assert!(
            !Database::is_unique_violation(&no_email),
            "{backend}: {no_email}"
        );
        let syntax = sqlx::query("INSERT INTO")
            .execute(db.pool())
            .await
            .unwrap_err();
        assert!(
            !Database::is_unique_violation(&syntax),
            "{backend}: {syntax}"
        );
        db.close().await;
    }
}

/// The column types the services' row structs read through `Any`: BIGINT and TEXT, nullable or
/// not, and flags kept as BIGINT 0/1, come back the same from both backends.
#[tokio::test]
async fn row_structs_read_the_portable_column_types_on_both_backends() {
    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Row {
        id: String,
        amount: i64,
        shipping: Option<i64>,
        note: Option<String>,
        flag: i64,
    }

    for test_db in testing::all_backends().await {
        let backend = test_db.backend;
        let db = Database::connect(&test_db.url).await.unwrap();
        sqlx::query(
            "CREATE TABLE rows (id TEXT PRIMARY KEY, amount BIGINT NOT NULL, shipping BIGINT, \
             note TEXT, flag BIGINT NOT NULL DEFAULT 0)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO rows (id, amount, shipping, note, flag) VALUES \
             ('a', 4200, 499, 'gift', 1), ('b', -9007199254740993, NULL, NULL, 0)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        let rows: Vec<Row> =
            sqlx::query_as("SELECT id, amount, shipping, note, flag FROM rows ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(
            rows,
            [
                Row {
                    id: "a".into(),
                    amount: 4200,
                    shipping: Some(499),
                    note: Some("gift".into()),
                    flag: 1,
                },
                Row {
                    id: "b".into(),
                    amount: -9_007_199_254_740_993,
                    shipping: None,
                    note: None,
                    flag: 0,
                },
            ],
            "{backend}"
        );
        db.close().await;
    }
}

/// Parameters bind as sqlx binds them (`$N` is the Nth argument, in any order and as often as
/// it appears), and a write's count of changed rows is its own.
#[tokio::test]
async fn parameters_and_changed_rows_are_as_sqlx_reports_them_on_both_backends() {
    for test_db in testing::all_backends().await {
        let backend = test_db.backend;
        let db = Database::connect(&test_db.url).await.unwrap();
        sqlx::query("CREATE TABLE stock (id TEXT PRIMARY KEY, count BIGINT NOT NULL, price DOUBLE PRECISION)")
            .execute(db.pool())
            .await
            .unwrap();
        let inserted = sqlx::query(
            "INSERT INTO stock (id, count, price) VALUES ($2, $1, $3), ($2 || '-b', $1 + $1, NULL)",
        )
        .bind(7_i64)
        .bind("a")
        .bind(2.5_f64)
        .execute(db.pool())
        .await
        .unwrap();
        assert_eq!(inserted.rows_affected(), 2, "{backend}");
        let updated = sqlx::query("UPDATE stock SET count = count - $1 WHERE count >= $1")
            .bind(10_i64)
            .execute(db.pool())
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 1, "{backend}");
        let rows: Vec<(String, i64, Option<f64>)> =
            sqlx::query_as("SELECT id, count, price FROM stock ORDER BY id")
                .fetch_all(db.pool())
                .await
                .unwrap();
        assert_eq!(
            rows,
            [("a".into(), 7, Some(2.5)), ("a-b".into(), 4, None)],
            "{backend}"
        );
        let none: Option<(String,)> = sqlx::query_as("SELECT id FROM stock WHERE id = $1")
            .bind("missing")
            .fetch_optional(db.pool())
            .await
            .unwrap();
        assert_eq!(none, None, "{backend}");
        db.close().await;
    }
}

/// The SQLite connections are set up as the pool says: every PRAGMA of the setup, not only the
/// first (SQLite prepares one statement of a string at a time).
#[tokio::test]
async fn every_setup_pragma_holds_on_the_sqlite_connections() {
    let test_db = testing::sqlite();
    let db = Database::connect(&test_db.url).await.unwrap();
    assert_eq!(pragma("journal_mode", db.pool()).await, "wal");
    // NORMAL: in WAL mode a commit does not wait for the disk.
    assert_eq!(pragma("synchronous", db.pool()).await, "1");
    assert_eq!(pragma("foreign_keys", db.pool()).await, "1");
    assert_eq!(pragma("busy_timeout", db.pool()).await, "5000");
    // The checkpoints are the checkpointer's, off the callers' thread.
    assert_eq!(pragma("wal_autocheckpoint", db.pool()).await, "0");
    assert_eq!(pragma("query_only", db.reader()).await, "1");
    assert_eq!(pragma("foreign_keys", db.reader()).await, "1");
    db.close().await;
}

/// A PRAGMA's value on a connection of `pool`: a number, or for journal_mode a word.
async fn pragma(name: &str, pool: &shop_kit::db::Pool) -> String {
    use sqlx::Row;
    let row: sqlx::any::AnyRow = sqlx::query(&format!("PRAGMA {name}"))
        .fetch_one(pool)
        .await
        .unwrap();
    row.try_get::<i64, _>(0)
        .map(|n| n.to_string())
        .or_else(|_| row.try_get::<String, _>(0))
        .unwrap()
}

/// SQLite's own checkpoints are off (they would sync the file on the committing caller's
/// thread); the kit's checkpointer copies the log into the database file by itself.
#[tokio::test]
async fn the_checkpointer_copies_the_sqlite_log_into_the_file() {
    let test_db = testing::sqlite();
    let file = std::path::PathBuf::from(test_db.url.strip_prefix("sqlite://").unwrap());
    let db = Database::connect(&test_db.url).await.unwrap();
    sqlx::query("CREATE TABLE blobs (data BLOB NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query("INSERT INTO blobs (data) VALUES (zeroblob(200000))")
        .execute(db.pool())
        .await
        .unwrap();
    // The commit went to the log; the file holds the blob once a checkpoint has run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::metadata(&file).unwrap().len() < 200_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint within 5 s: the file is {} bytes",
            std::fs::metadata(&file).unwrap().len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    db.close().await;
}

/// A SQLite database that cannot grow (a full disk, here its page limit) is a `CannotWrite`
/// failure (the services' `507`), told apart by SQLite's result code; the connection serves on.
#[tokio::test]
async fn a_full_sqlite_database_is_a_cannot_write_failure() {
    use shop_kit::db::Failure;
    let test_db = testing::sqlite();
    let db = Database::connect(&test_db.url).await.unwrap();
    sqlx::query("CREATE TABLE blobs (data BLOB NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    // The writer is one connection: the limit holds for the statements that follow.
    sqlx::query("PRAGMA max_page_count = 8")
        .execute(db.pool())
        .await
        .unwrap();
    let full = sqlx::query("INSERT INTO blobs (data) VALUES (zeroblob(1000000))")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert_eq!(Failure::of(&full), Some(Failure::CannotWrite), "{full}");
    let counted: (i64,) = sqlx::query_as("SELECT count(*) FROM blobs")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(counted.0, 0);
    db.close().await;
}

/// A transaction dropped without a commit is rolled back before its connection serves the next
/// statement, on one connection as on many.
#[tokio::test]
async fn a_dropped_transaction_is_rolled_back_before_its_connection_serves_again() {
    for test_db in testing::all_backends().await {
        let backend = test_db.backend;
        let db = Database::connect(&test_db.url).await.unwrap();
        sqlx::query("CREATE TABLE notes (id TEXT PRIMARY KEY)")
            .execute(db.pool())
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO notes (id) VALUES ('dropped')")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        // The same row again: on SQLite on the same one writer connection (inside the dropped
        // transaction, were it still open, this would be a duplicate key); on PostgreSQL on
        // another, which waits on the dropped transaction's row lock until it is rolled back.
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sqlx::query("INSERT INTO notes (id) VALUES ('dropped')").execute(db.pool()),
        )
        .await
        .unwrap_or_else(|_| panic!("{backend}: the dropped transaction still holds its row"))
        .unwrap();
        sqlx::query("DELETE FROM notes")
            .execute(db.pool())
            .await
            .unwrap();
        sqlx::query("INSERT INTO notes (id) VALUES ('kept')")
            .execute(db.pool())
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO notes (id) VALUES ('committed')")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM notes ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(
            ids,
            [("committed".to_owned(),), ("kept".to_owned(),)],
            "{backend}"
        );
        db.close().await;
    }
}

/// With every connection out, the next caller waits the acquire timeout and gets
/// `PoolTimedOut` (a `503` in the services), and is served once a connection comes back.
#[tokio::test]
async fn a_pool_with_every_connection_out_times_out_then_serves_again() {
    use shop_kit::db::{Pool, PoolSettings};
    // Database::connect does this; this test builds a pool without it.
    sqlx::any::install_default_drivers();
    let test_db = testing::sqlite();
    let pool = Pool::new(
        format!("{}?mode=rwc", test_db.url).parse().unwrap(),
        PoolSettings {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_millis(200),
            setup: None,
            ping_idle_after: None,
        },
    );
    let held = pool.acquire().await.unwrap();
    let started = std::time::Instant::now();
    let waited = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
    assert!(
        matches!(waited, sqlx::Error::PoolTimedOut),
        "expected PoolTimedOut, got {waited}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    drop(held);
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    pool.close().await;
    assert!(matches!(
        pool.acquire().await.map(|_| ()).unwrap_err(),
        sqlx::Error::PoolClosed
    ));
}

/// A PostgreSQL connection the server closed while it sat idle (a restart, an idle timeout) is
/// found broken by the ping before its next use and replaced: the caller sees no error. A
/// connection that breaks during a statement fails that statement only.
#[tokio::test]
async fn postgres_connections_closed_by_the_server_are_replaced() {
    let Some(test_db) = testing::postgres().await else {
        return;
    };
    let db = Database::connect(&test_db.url).await.unwrap();
    // Another session of the same role may end this one's backends.
    let other = Database::connect(&test_db.url).await.unwrap();
    let backend_pid = |db: &Database| {
        let pool = db.pool().clone();
        async move {
            let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .unwrap();
            pid
        }
    };
    let terminate = |pid: i32| {
        let other = other.pool().clone();
        async move {
            let (ended,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&other)
                .await
                .unwrap();
            assert!(ended, "backend {pid} ended");
            // The signal is sent, not awaited: give the backend time to go.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };

    // Idle past the ping threshold: replaced before use.
    let first = backend_pid(&db).await;
    terminate(first).await;
    tokio::time::sleep(shop_kit::db::PING_IDLE_AFTER + std::time::Duration::from_millis(200)).await;
    let second = backend_pid(&db).await;
    assert_ne!(
        first, second,
        "a new connection after the old one was closed"
    );

    // Broken between two statements with no idle time to speak of: that statement fails,
    // the connection is not given back, and the next statement gets a new one.
    terminate(second).await;
    let failed = sqlx::query("SELECT 1").execute(db.pool()).await;
    assert!(
        failed.is_err(),
        "the statement on a closed connection fails"
    );
    let third = backend_pid(&db).await;
    assert_ne!(second, third);
    db.close().await;
    other.close().await;
}

/// A statement whose caller gave up (a request timeout, a client gone) leaves its connection
/// mid-exchange: that connection is closed, and the next statement gets a fresh one at once
/// instead of waiting behind the abandoned statement.
#[tokio::test]
async fn a_connection_abandoned_mid_statement_is_not_reused() {
    let Some(test_db) = testing::postgres().await else {
        return;
    };
    let db = Database::connect(&test_db.url).await.unwrap();
    let pid = || async {
        let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
            .fetch_one(db.pool())
            .await
            .unwrap();
        pid
    };
    let before = pid().await;
    // The most recently used idle connection is handed out first: this one is `before`'s.
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        sqlx::query("SELECT pg_sleep(3)").execute(db.pool()),
    )
    .await;
    assert!(abandoned.is_err(), "the sleep was cut off");
    let started = std::time::Instant::now();
    let after = pid().await;
    assert_ne!(
        before, after,
        "the abandoned connection was not handed out again"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "the next statement waited {:?}",
        started.elapsed()
    );
    db.close().await;
}
