//! Migration 0003 moves each order's step history from the `order_steps` table into the order
//! row: an order placed before the upgrade keeps its history, in order, on both backends.

use shop_kit::Database;
use shop_kit::testing;
use shop_order::Step;
use shop_order::storage::Store;
use sqlx::migrate::Migrator;

#[tokio::test]
async fn the_history_of_an_order_placed_before_the_upgrade_survives_it() {
    for test_db in testing::all_backends().await {
        eprintln!("backend: {}", test_db.backend);
        let db = Database::connect(&test_db.url).await.unwrap();
        // The schema as it was: the migrations before 0003, from a folder of their own.
        let old =
            std::env::temp_dir().join(format!("shop-test-migrations-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&old).unwrap();
        for file in ["0001_order.sql", "0002_order_trace_context.sql"] {
            let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
            std::fs::copy(from.join(file), old.join(file)).unwrap();
        }
        db.migrate(&Migrator::new(old.as_path()).await.unwrap())
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(&old);
        sqlx::query(
            "INSERT INTO orders (id, user_id, idem_key, request_hash, status, step, runner, items, \
             currency, subtotal, shipping_address, card_brand, card_last4, created_at, updated_at) \
             VALUES ('o-1', 'u-1', 'k-1', 'h', 'PENDING', 'compensating', 'r', '[]', 'USD', 100, \
             $1, 'visa', '4242', '2026-12-01T10:00:00.000000Z', '2026-12-01T10:00:02.000000Z')",
        )
        .bind(
            serde_json::json!({"name": "Ada", "line1": "1 Main St", "city": "Berlin",
                "postal_code": "10115", "country": "DE"})
            .to_string(),
        )
        .execute(db.pool())
        .await
        .unwrap();
        // Inserted out of order: the history is ordered by time.
        for (step, at) in [
            ("reserved", "2026-12-01T10:00:01.000000Z"),
            ("placed", "2026-12-01T10:00:00.000000Z"),
            ("compensating", "2026-12-01T10:00:02.000000Z"),
        ] {
            sqlx::query("INSERT INTO order_steps (order_id, step, at) VALUES ('o-1', $1, $2)")
                .bind(step)
                .bind(at)
                .execute(db.pool())
                .await
                .unwrap();
        }

        db.migrate(&shop_order::MIGRATOR).await.unwrap();

        let state = Store::new(db.clone()).state("o-1").await.unwrap().unwrap();
        let history: Vec<(Step, &str)> = state
            .order
            .history
            .iter()
            .map(|e| (e.step, e.at.as_str()))
            .collect();
        assert_eq!(
            history,
            [
                (Step::Placed, "2026-12-01T10:00:00.000000Z"),
                (Step::Reserved, "2026-12-01T10:00:01.000000Z"),
                (Step::Compensating, "2026-12-01T10:00:02.000000Z"),
            ]
        );
        assert!(
            sqlx::query("SELECT 1 FROM order_steps")
                .execute(db.pool())
                .await
                .is_err(),
            "order_steps is still there"
        );
    }
}
