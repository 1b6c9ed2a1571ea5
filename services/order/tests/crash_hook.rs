//! The `SHOP_ORDER_CRASH_AT` test hook in a real process: this test runs a copy of itself that
//! checks out with the hook set, and expects it to die by SIGKILL right after persisting the step.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::*;
use shop_kit::db::Backend;
use shop_kit::{Database, testing};

const CHILD_DB: &str = "SHOP_ORDER_CRASH_TEST_DB";

#[tokio::test]
async fn the_crash_hook_kills_the_process_right_after_its_step() {
    let db = testing::sqlite();
    let status = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["checkout_under_the_crash_hook", "--exact", "--ignored"])
        .env("SHOP_ORDER_CRASH_AT", "reserved")
        .env(CHILD_DB, &db.url)
        .status()
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    let db = Database::connect(&db.url).await.unwrap();
    let steps: Vec<(String, String)> = sqlx::query_as("SELECT step, status FROM orders")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(steps, [("reserved".to_owned(), "PENDING".to_owned())]);
}

/// The child: a checkout with the hook from the environment. Never returns when the hook works.
#[tokio::test]
#[ignore = "run by the_crash_hook_kills_the_process_right_after_its_step"]
async fn checkout_under_the_crash_hook() {
    let Ok(order_db) = std::env::var(CHILD_DB) else {
        eprintln!(
            "skipped: {CHILD_DB} is unset; the_crash_hook_kills_the_process_right_after_its_step runs this"
        );
        return;
    };
    let settings = shop_order::Settings::from_env().unwrap();
    // Migrates the order database and installs the event tables.
    let shop = Shop::start_with_order_db(Backend::Sqlite, settings, Some(order_db)).await;
    let products = shop.products(1, 10).await;
    let buyer = user();
    shop.add_to_cart(&buyer, products[0]["id"].as_str().unwrap(), 1)
        .await;
    let response = shop
        .checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
        .await;
    panic!(
        "the process should have been killed, but checkout answered {}",
        response.status()
    );
}
