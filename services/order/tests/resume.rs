//! Crash recovery: the saga is cut off right after each step in turn (the runner halts as if the
//! process had died), the order service is replaced by a new one on the same database, and its
//! resumer must bring every order to CONFIRMED or FAILED with stock and charges consistent.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_contracts::identity::HEADER;
use shop_kit::db::Backend;
use shop_kit::testing::service_token;
use shop_order::{Crash, Settings, Step};

fn halting_at(step: Step) -> Settings {
    Settings {
        crash_at: Some(step),
        crash: Crash::Halt,
        ..settings()
    }
}

/// A fresh service after the "crash": it takes over orders untouched for 200 ms.
fn resuming() -> Settings {
    Settings {
        resume_interval: Duration::from_millis(50),
        resume_lease: Duration::from_millis(200),
        ..settings()
    }
}

/// What the order must end as when its saga was cut off right after `step`.
fn expected(step: Step) -> (&'static str, Option<&'static str>) {
    match step {
        // The card is never stored, so a saga cut off before charging cannot charge later.
        Step::Placed | Step::Reserved | Step::Quoted => ("FAILED", Some("checkout_interrupted")),
        Step::Charged | Step::Committed | Step::Shipped | Step::Confirmed => ("CONFIRMED", None),
        Step::Compensating | Step::Failed => ("FAILED", Some("card_declined")),
    }
}

async fn assert_consistent(shop: &Shop, product: &str, order: &Value, on_hand: i64, quantity: i64) {
    let id = order["id"].as_str().unwrap();
    let kinds: Vec<String> = shop.events_of(id).await.into_iter().map(|e| e.0).collect();
    match order["status"].as_str().unwrap() {
        "CONFIRMED" => {
            assert_eq!(shop.available(product).await, on_hand - quantity);
            assert_eq!(shop.standing_charges(id).await, 1);
            assert_eq!(shop.charges(id).await.len(), 1, "one charge, never two");
            assert!(order["tracking_number"].is_string());
            assert_eq!(kinds, ["order.placed", "order.confirmed"]);
        }
        "FAILED" => {
            assert_eq!(shop.available(product).await, on_hand, "the stock is back");
            assert_eq!(shop.standing_charges(id).await, 0, "no charge standing");
            assert_eq!(kinds, ["order.placed", "order.failed"]);
        }
        other => panic!("not terminal: {other}"),
    }
}

#[tokio::test]
async fn a_saga_cut_off_after_any_step_ends_consistently_after_a_restart() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let mut shop = Shop::start(backend, settings()).await;
        let products = shop.products(1, 10).await;
        let product = products[0]["id"].as_str().unwrap().to_owned();
        for step in shop_order::STEPS {
            shop.set_stock(&product, 10).await;
            shop.start_order(halting_at(step)).await;
            let buyer = user();
            shop.add_to_cart(&buyer, &product, 2).await;
            let card = match step {
                Step::Compensating | Step::Failed => DECLINED_CARD,
                _ => GOOD_CARD,
            };
            let response = shop
                .checkout(&buyer, Some(&key()), &checkout_body(card))
                .await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            let id = body["id"]
                .as_str()
                .or(body["order_id"].as_str())
                .unwrap_or_else(|| panic!("{status}: {body}"))
                .to_owned();
            // Once compensation has begun the outcome is known and answered; before, 202.
            let answered = match step {
                Step::Confirmed => StatusCode::CREATED,
                Step::Compensating | Step::Failed => StatusCode::PAYMENT_REQUIRED,
                _ => StatusCode::ACCEPTED,
            };
            assert_eq!(status, answered, "{step:?}: {body}");

            shop.start_order(resuming()).await;
            let order = shop
                .wait_terminal(&buyer, &id, Duration::from_secs(10))
                .await;
            let (status, reason) = expected(step);
            eprintln!("cut off after {}: {}", step.as_str(), order["status"]);
            assert_eq!(order["status"], status, "after {step:?}: {order}");
            assert_eq!(order["reason_code"].as_str(), reason, "after {step:?}");
            assert_consistent(&shop, &product, &order, 10, 2).await;
        }
    }
}

#[tokio::test]
async fn a_charge_made_just_before_the_crash_is_found_and_the_order_confirmed() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let mut shop = Shop::start(backend, halting_at(Step::Quoted)).await;
        let products = shop.products(1, 10).await;
        let product = products[0]["id"].as_str().unwrap().to_owned();
        let buyer = user();
        shop.add_to_cart(&buyer, &product, 3).await;
        let response = shop
            .checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let order: Value = response.json().await.unwrap();
        let id = order["id"].as_str().unwrap().to_owned();
        assert_eq!(order["step"], "quoted");

        // The process "died" after payment took the charge, before the order recorded it: the
        // charge exactly as the saga sends it, under the key derived from the order.
        let charge = shop
            .client
            .post(format!("{}/internal/charges", shop.payment.url))
            .header(HEADER, service_token("order", "payment"))
            .header("idempotency-key", shop_order::domain::charge_key(&id))
            .json(&json!({
                "order_id": id,
                "amount": order["total"],
                "card": {"number": GOOD_CARD, "exp_month": 12, "exp_year": 2099, "cvc": "123"},
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(charge.status(), StatusCode::CREATED);

        shop.start_order(resuming()).await;
        let order = shop
            .wait_terminal(&buyer, &id, Duration::from_secs(10))
            .await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
        assert_consistent(&shop, &product, &order, 10, 3).await;
    }
}

#[tokio::test]
async fn a_live_saga_is_not_taken_over_before_its_lease_runs_out() {
    let mut shop = Shop::start(Backend::Sqlite, halting_at(Step::Charged)).await;
    let products = shop.products(1, 10).await;
    let product = products[0]["id"].as_str().unwrap().to_owned();
    let buyer = user();
    shop.add_to_cart(&buyer, &product, 1).await;
    let order: Value = shop
        .checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
        .await
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    // A new instance with the test's 10 s lease leaves the order alone for now...
    shop.start_order(settings()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now: Value = shop.order(&buyer, &id).await.json().await.unwrap();
    assert_eq!(now["step"], "charged");
    // ...and one with a short lease finishes it.
    shop.start_order(resuming()).await;
    let done = shop
        .wait_terminal(&buyer, &id, Duration::from_secs(10))
        .await;
    assert_eq!(done["status"], "CONFIRMED");
}
