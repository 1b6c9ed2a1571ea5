//! Checkout through the real services, on SQLite and on PostgreSQL.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_contracts::identity::HEADER;
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::testing::expect_problem;
use shop_kit::testing::service_token;

#[tokio::test]
async fn the_happy_path_confirms_charges_once_ships_and_announces_it() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let shop = Shop::start(backend, settings()).await;
        let products = shop.products(2, 10).await;
        let (a, b) = (
            products[0]["id"].as_str().unwrap(),
            products[1]["id"].as_str().unwrap(),
        );
        let ann = user();
        shop.add_to_cart(&ann, a, 2).await;
        shop.add_to_cart(&ann, b, 1).await;
        let key = key();
        let started = Instant::now();
        let response = shop
            .checkout(&ann, Some(&key), &checkout_body(GOOD_CARD))
            .await;
        eprintln!(
            "one checkout (2 lines, 5 upstream services) took {:?}",
            started.elapsed()
        );
        assert_eq!(response.status(), StatusCode::CREATED);
        let order: Value = response.json().await.unwrap();
        let id = order["id"].as_str().unwrap();
        assert_eq!(order["status"], "CONFIRMED");
        assert_eq!(order["step"], "confirmed");
        let price = |p: &Value| p["price"]["amount"].as_i64().unwrap();
        let subtotal = 2 * price(&products[0]) + price(&products[1]);
        assert_eq!(order["subtotal"]["amount"], subtotal);
        let shipping = order["shipping_cost"]["amount"].as_i64().unwrap();
        assert!(shipping > 0);
        assert_eq!(order["total"]["amount"], subtotal + shipping);
        assert_eq!(order["card"], json!({"brand": "visa", "last4": "4242"}));
        assert!(
            !order.to_string().contains(GOOD_CARD),
            "no card number: {order}"
        );
        let history: Vec<&str> = order["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            history,
            [
                "placed",
                "reserved",
                "quoted",
                "charged",
                "committed",
                "shipped",
                "confirmed"
            ]
        );

        // Stock lowered, one charge of the total, a shipment with tracking.
        assert_eq!(shop.available(a).await, 8);
        assert_eq!(shop.available(b).await, 9);
        let charges = shop.charges(id).await;
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0]["amount"]["amount"], subtotal + shipping);
        assert_eq!(shop.standing_charges(id).await, 1);
        let tracking = order["tracking_number"].as_str().unwrap();
        let shipment: Value = shop
            .client
            .get(format!("{}/api/shipments/{tracking}", shop.shipping.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shipment["status"], "label_created");
        // The cart is left to the cart's consumer of order.confirmed (services/cart/tests/events.rs,
        // and across processes in services/shop/tests/checkout.rs).

        // The outbox holds order.placed and order.confirmed, as the contract shapes them.
        let events = shop.events_of(id).await;
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds, ["order.placed", "order.confirmed"]);
        let confirmed = &events[1].1;
        assert_eq!(confirmed["user_id"], ann);
        assert_eq!(confirmed["tracking_number"], tracking);
        assert_eq!(confirmed["total"]["amount"], subtotal + shipping);
        assert_eq!(confirmed["version"], 1);
        assert_eq!(confirmed["items"].as_array().unwrap().len(), 2);
        assert!(!confirmed.to_string().contains(GOOD_CARD));

        // The same key and body: the same order and answer; another body: 422.
        let again = shop
            .checkout(&ann, Some(&key), &checkout_body(GOOD_CARD))
            .await;
        assert_eq!(again.status(), StatusCode::CREATED);
        let again: Value = again.json().await.unwrap();
        // The first answer was the row the saga's last write returned; the replay reads the
        // order as stored: the same, history and timestamps too.
        assert_eq!(again, order);
        let mut other = checkout_body(GOOD_CARD);
        other["shipping_address"]["city"] = json!("Hamburg");
        let problem = expect_problem(shop.checkout(&ann, Some(&key), &other).await, 422).await;
        assert!(problem.kind.ends_with("idempotency-key-reused"));
        assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 1);
        assert_eq!(shop.charges(id).await.len(), 1);
        // Keys are per user: another user's order under the same key is their own.
        let bob = user();
        shop.add_to_cart(&bob, a, 1).await;
        let bobs = shop
            .checkout(&bob, Some(&key), &checkout_body(GOOD_CARD))
            .await;
        assert_eq!(bobs.status(), StatusCode::CREATED);
        let bobs: Value = bobs.json().await.unwrap();
        assert_ne!(bobs["id"], order["id"]);
        assert_eq!(shop.available(a).await, 7);

        // History and access: the owner lists it, an admin reads it, anyone else gets 404.
        let list: Value = shop
            .client
            .get(format!("{}/api/orders", shop.order_url()))
            .header(USER_ID_HEADER, &ann)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["items"][0]["id"], order["id"]);
        assert_eq!(
            shop.order(&user(), id).await.status(),
            StatusCode::NOT_FOUND
        );
        let as_admin = shop
            .client
            .get(format!("{}/api/orders/{id}", shop.order_url()))
            .header(USER_ID_HEADER, ADMIN)
            .header(USER_ROLES_HEADER, "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(as_admin.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn declined_cards_fail_the_order_and_give_the_stock_back() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let shop = Shop::start(backend, settings()).await;
        let products = shop.products(1, 5).await;
        let product = products[0]["id"].as_str().unwrap();
        for (card, code) in [
            (DECLINED_CARD, "card_declined"),
            (NO_FUNDS_CARD, "insufficient_funds"),
        ] {
            let buyer = user();
            shop.add_to_cart(&buyer, product, 3).await;
            let response = shop
                .checkout(&buyer, Some(&key()), &checkout_body(card))
                .await;
            let problem = expect_problem(response, 402).await;
            assert!(problem.kind.ends_with(&code.replace('_', "-")));
            let orders: Vec<(String, String, String)> =
                sqlx::query_as("SELECT id, status, reason_code FROM orders WHERE user_id = $1")
                    .bind(&buyer)
                    .fetch_all(shop.order_db.pool())
                    .await
                    .unwrap();
            assert_eq!(orders.len(), 1);
            let (id, status, reason_code) = &orders[0];
            assert_eq!((status.as_str(), reason_code.as_str()), ("FAILED", code));
            assert_eq!(shop.available(product).await, 5, "the stock is back");
            assert_eq!(shop.standing_charges(id).await, 0, "no charge standing");
            let kinds: Vec<String> = shop.events_of(id).await.into_iter().map(|e| e.0).collect();
            assert_eq!(kinds, ["order.placed", "order.failed"]);
            let failed = &shop.events_of(id).await[1].1;
            assert_eq!(failed["reason_code"], code);
            // The cart is kept for another try.
            assert_eq!(shop.cart(&buyer).await["item_count"], 3);
        }
    }
}

#[tokio::test]
async fn a_failed_checkout_answers_with_its_order_and_reason() {
    let shop = Shop::start(shop_kit::db::Backend::Sqlite, settings()).await;
    let products = shop.products(1, 5).await;
    let buyer = user();
    shop.add_to_cart(&buyer, products[0]["id"].as_str().unwrap(), 1)
        .await;
    let key = key();
    let response = shop
        .checkout(&buyer, Some(&key), &checkout_body(DECLINED_CARD))
        .await;
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason_code"], "card_declined");
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    // The same key answers the same.
    let again: Value = shop
        .checkout(&buyer, Some(&key), &checkout_body(DECLINED_CARD))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["order_id"], order_id);
    assert_eq!(again["status"], 402);
}

#[tokio::test]
async fn one_key_sent_a_hundred_times_at_once_makes_one_order_and_one_charge() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let shop = Shop::start(backend, settings()).await;
        let products = shop.products(1, 10).await;
        let buyer = user();
        shop.add_to_cart(&buyer, products[0]["id"].as_str().unwrap(), 1)
            .await;
        let key = key();
        let body = checkout_body(GOOD_CARD);
        let started = Instant::now();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (client, url, buyer, key, body) = (
                shop.client.clone(),
                shop.order_url(),
                buyer.clone(),
                key.clone(),
                body.clone(),
            );
            requests.spawn(async move {
                let response = client
                    .post(format!("{url}/api/orders"))
                    .header(USER_ID_HEADER, buyer)
                    .header("idempotency-key", key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let order: Value = response.json().await.unwrap();
                (status, order["id"].as_str().unwrap_or_default().to_owned())
            });
        }
        let mut ids = HashSet::new();
        while let Some(result) = requests.join_next().await {
            let (status, id) = result.unwrap();
            assert_eq!(status, StatusCode::CREATED);
            ids.insert(id);
        }
        eprintln!(
            "100 concurrent duplicates answered in {:?}",
            started.elapsed()
        );
        assert_eq!(ids.len(), 1, "one order for every duplicate");
        let id = ids.into_iter().next().unwrap();
        assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 1);
        assert_eq!(shop.charges(&id).await.len(), 1);
        assert_eq!(shop.available(products[0]["id"].as_str().unwrap()).await, 9);
    }
}

#[tokio::test]
async fn fifty_buyers_racing_for_ten_units_confirm_exactly_ten() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let shop = Shop::start(backend, settings()).await;
        let products = shop.products(1, 10).await;
        let product = products[0]["id"].as_str().unwrap().to_owned();
        let mut buyers = Vec::new();
        for _ in 0..50 {
            let buyer = user();
            shop.add_to_cart(&buyer, &product, 1).await;
            buyers.push(buyer);
        }
        let started = Instant::now();
        let mut requests = tokio::task::JoinSet::new();
        for buyer in buyers {
            let (client, url) = (shop.client.clone(), shop.order_url());
            requests.spawn(async move {
                let response = client
                    .post(format!("{url}/api/orders"))
                    .header(USER_ID_HEADER, buyer)
                    .header("idempotency-key", key())
                    .json(&checkout_body(GOOD_CARD))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                (status, body)
            });
        }
        let (mut confirmed, mut out_of_stock) = (0, 0);
        while let Some(result) = requests.join_next().await {
            let (status, body) = result.unwrap();
            match status {
                StatusCode::CREATED => confirmed += 1,
                StatusCode::CONFLICT => {
                    assert_eq!(body["reason_code"], "out_of_stock");
                    assert!(
                        body["errors"][0]["message"]
                            .as_str()
                            .unwrap()
                            .contains(&product)
                    );
                    out_of_stock += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        eprintln!("50 racing checkouts answered in {:?}", started.elapsed());
        assert_eq!((confirmed, out_of_stock), (10, 40));
        assert_eq!(shop.available(&product).await, 0);
        assert_eq!(
            shop.count("SELECT COUNT(*) FROM orders WHERE status = 'CONFIRMED'")
                .await,
            10
        );
        assert_eq!(
            shop.count("SELECT COUNT(*) FROM orders WHERE status = 'FAILED'")
                .await,
            40
        );
    }
}

#[tokio::test]
async fn with_payment_down_checkout_fails_fast_and_holds_no_stock() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let mut shop = Shop::start(backend, settings()).await;
        let products = shop.products(1, 10).await;
        let product = products[0]["id"].as_str().unwrap();
        // One checkout while payment is up, so the order service has live connections to it.
        let first = user();
        shop.add_to_cart(&first, product, 1).await;
        let ok = shop
            .checkout(&first, Some(&key()), &checkout_body(GOOD_CARD))
            .await;
        assert_eq!(ok.status(), StatusCode::CREATED);
        shop.payment.stop().await;

        for attempt in 0..3 {
            let buyer = user();
            shop.add_to_cart(&buyer, product, 2).await;
            let started = Instant::now();
            let response = shop
                .checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
                .await;
            let elapsed = started.elapsed();
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("5")
            );
            let body: Value = response.json().await.unwrap();
            eprintln!("attempt {attempt}: 503 in {elapsed:?}");
            assert_eq!(body["status"], 503, "{body}");
            assert_eq!(body["reason_code"], "payment_unavailable");
            assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
            assert_eq!(shop.available(product).await, 9, "no stock held");
            let order: Value = shop
                .order(&buyer, body["order_id"].as_str().unwrap())
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(order["status"], "FAILED");
            assert_eq!(order["history"].as_array().unwrap().len(), 3);
            // Failing before reserving: inventory was never asked to hold anything.
            let reservation = shop
                .client
                .get(format!(
                    "{}/internal/reservations/{}",
                    shop.inventory.url,
                    body["order_id"].as_str().unwrap()
                ))
                .header(HEADER, service_token("order", "inventory"))
                .send()
                .await
                .unwrap();
            assert_eq!(reservation.status(), StatusCode::NOT_FOUND);
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_creates_nothing() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let shop = Shop::start(backend, settings()).await;
        let products = shop.products(2, 10).await;
        let (a, b) = (
            products[0]["id"].as_str().unwrap(),
            products[1]["id"].as_str().unwrap(),
        );
        let buyer = user();

        // An empty cart.
        let problem = expect_problem(
            shop.checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
                .await,
            409,
        )
        .await;
        assert!(problem.kind.ends_with("empty-cart"));

        shop.add_to_cart(&buyer, a, 1).await;
        // No key, a malformed key.
        expect_problem(
            shop.checkout(&buyer, None, &checkout_body(GOOD_CARD)).await,
            428,
        )
        .await;
        expect_problem(
            shop.checkout(&buyer, Some("has space"), &checkout_body(GOOD_CARD))
                .await,
            400,
        )
        .await;
        // A malformed card, an expired card, a bad CVC, a bad address.
        let problem = expect_problem(
            shop.checkout(&buyer, Some(&key()), &checkout_body("4242424242424241"))
                .await,
            422,
        )
        .await;
        assert_eq!(problem.errors[0].field, "payment.card_number");
        assert!(!problem.detail.unwrap().contains("4242424242424241"));
        let mut expired = checkout_body(GOOD_CARD);
        expired["payment"]["exp_year"] = json!(2020);
        let problem =
            expect_problem(shop.checkout(&buyer, Some(&key()), &expired).await, 422).await;
        assert_eq!(problem.errors[0].field, "payment.exp_year");
        assert_eq!(problem.errors[0].message, "the card has expired");
        let mut bad_cvc = checkout_body(GOOD_CARD);
        bad_cvc["payment"]["cvc"] = json!("1");
        expect_problem(shop.checkout(&buyer, Some(&key()), &bad_cvc).await, 422).await;
        let mut bad_address = checkout_body(GOOD_CARD);
        bad_address["shipping_address"]["country"] = json!("Germany");
        let problem =
            expect_problem(shop.checkout(&buyer, Some(&key()), &bad_address).await, 422).await;
        assert_eq!(problem.errors[0].field, "shipping_address.country");
        // A card number sent as a number is not echoed back.
        let mut numeric = checkout_body(GOOD_CARD);
        numeric["payment"]["card_number"] = json!(GOOD_CARD.parse::<u64>().unwrap());
        let response = shop.checkout(&buyer, Some(&key()), &numeric).await;
        assert_eq!(response.status().as_u16(), 422);
        assert!(!response.text().await.unwrap().contains(GOOD_CARD));
        // An oversized body, on its own client: the server answers 413 without reading the body
        // and closes that connection, which a pooled client could otherwise pick for the next
        // request.
        let mut huge = checkout_body(GOOD_CARD);
        huge["shipping_address"]["line1"] = json!("x".repeat(100_000));
        let oversized = reqwest::Client::new()
            .post(format!("{}/api/orders", shop.order_url()))
            .header(USER_ID_HEADER, &buyer)
            .header("idempotency-key", key())
            .json(&huge)
            .send()
            .await
            .unwrap();
        expect_problem(oversized, 413).await;

        // A product that left the catalog after it went into the cart.
        shop.add_to_cart(&buyer, b, 1).await;
        let deleted = shop
            .client
            .delete(format!("{}/api/products/{b}", shop.catalog.url))
            .header(USER_ID_HEADER, ADMIN)
            .header(USER_ROLES_HEADER, "admin")
            .send()
            .await
            .unwrap();
        assert!(deleted.status().is_success(), "{}", deleted.status());
        let problem = expect_problem(
            shop.checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
                .await,
            409,
        )
        .await;
        assert!(problem.kind.ends_with("unknown-product"));
        assert!(problem.detail.unwrap().contains(b));

        // Nothing was created anywhere.
        assert_eq!(shop.count("SELECT COUNT(*) FROM orders").await, 0);
        assert_eq!(shop.count("SELECT COUNT(*) FROM outbox").await, 0);
        assert_eq!(shop.available(a).await, 10);
        // Anonymous callers are refused.
        let anonymous = shop
            .client
            .post(format!("{}/api/orders", shop.order_url()))
            .header("idempotency-key", key())
            .json(&checkout_body(GOOD_CARD))
            .send()
            .await
            .unwrap();
        expect_problem(anonymous, 401).await;
    }
}

#[tokio::test]
async fn order_history_pages_newest_first() {
    let shop = Shop::start(shop_kit::db::Backend::Sqlite, settings()).await;
    let products = shop.products(1, 100).await;
    let product = products[0]["id"].as_str().unwrap();
    let buyer = user();
    let mut ids = Vec::new();
    for _ in 0..5 {
        shop.add_to_cart(&buyer, product, 1).await;
        let order: Value = shop
            .checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
            .await
            .json()
            .await
            .unwrap();
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/orders?limit=2", shop.order_url());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = shop
            .client
            .get(url)
            .header(USER_ID_HEADER, &buyer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for order in page["items"].as_array().unwrap() {
            seen.push(order["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = shop
        .client
        .get(format!("{}/api/orders?cursor=garbage!", shop.order_url()))
        .header(USER_ID_HEADER, &buyer)
        .send()
        .await
        .unwrap();
    expect_problem(bad, 400).await;
    let other: Value = shop
        .client
        .get(format!("{}/api/orders", shop.order_url()))
        .header(USER_ID_HEADER, user())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["items"], json!([]));
}

#[tokio::test]
async fn a_saga_slower_than_the_deadline_answers_202_and_finishes_in_the_background() {
    let shop = Shop::start(
        shop_kit::db::Backend::Sqlite,
        shop_order::Settings {
            checkout_deadline: Duration::from_millis(1),
            ..settings()
        },
    )
    .await;
    let products = shop.products(1, 10).await;
    let buyer = user();
    shop.add_to_cart(&buyer, products[0]["id"].as_str().unwrap(), 1)
        .await;
    let key = key();
    let response = shop
        .checkout(&buyer, Some(&key), &checkout_body(GOOD_CARD))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "PENDING");
    assert_eq!(
        location,
        format!("/api/orders/{}", order["id"].as_str().unwrap())
    );
    let done = shop
        .wait_terminal(
            &buyer,
            order["id"].as_str().unwrap(),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(done["status"], "CONFIRMED");
    // Now that it has an outcome, the same key answers with it.
    let again = shop
        .checkout(&buyer, Some(&key), &checkout_body(GOOD_CARD))
        .await;
    assert_eq!(again.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn the_openapi_document_lists_the_endpoints() {
    let shop = Shop::start(shop_kit::db::Backend::Sqlite, settings()).await;
    let doc: Value = shop
        .client
        .get(format!("{}/openapi.json", shop.order_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/orders"]["post"].is_object());
    assert!(doc["paths"]["/api/orders/{order_id}"]["get"].is_object());
}

#[tokio::test]
async fn with_shipping_down_the_order_fails_before_charging_and_gives_the_stock_back() {
    for backend in backends().await {
        eprintln!("backend: {backend}");
        let mut shop = Shop::start(backend, settings()).await;
        let products = shop.products(1, 10).await;
        let product = products[0]["id"].as_str().unwrap();
        shop.shipping.stop().await;
        let buyer = user();
        shop.add_to_cart(&buyer, product, 4).await;
        let response = shop
            .checkout(&buyer, Some(&key()), &checkout_body(GOOD_CARD))
            .await;
        assert!(response.headers().contains_key("retry-after"));
        let problem = expect_problem(response, 503).await;
        assert!(
            problem.kind.ends_with("upstream-unavailable"),
            "{problem:?}"
        );
        let id: String = sqlx::query_scalar("SELECT id FROM orders")
            .fetch_one(shop.order_db.pool())
            .await
            .unwrap();
        assert_eq!(shop.available(product).await, 10, "the stock is back");
        assert!(shop.charges(&id).await.is_empty(), "nothing was charged");
        let failed = &shop.events_of(&id).await[1];
        assert_eq!(failed.0, "order.failed");
        assert_eq!(failed.1["reason_code"], "upstream_unavailable");
    }
}
