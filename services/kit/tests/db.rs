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
        db.pool().close().await;
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
        db.pool().close().await;
    }
}
