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
