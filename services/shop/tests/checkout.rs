//! The checkout across the real service processes, through the gateway: the happy path on
//! both storage backends and both buses, declined cards, the order service SIGKILLed at every
//! saga step, NATS down for a while, payment down.

mod common;

use std::time::{Duration, Instant};

use common::stack::{
    Bus, Customer, DECLINED_CARD, GOOD_CARD, NO_FUNDS_CARD, Stack, Storage, checkout_body,
    eventually, standing,
};
use reqwest::StatusCode;
use serde_json::Value;
use shop_kit::testing::NatsServer;

const EVENTS_ARRIVE: Duration = Duration::from_secs(30);

/// A customer with `quantities[i]` units of the i-th seed product in the cart; returns the ids.
async fn filled_cart(stack: &Stack, customer: &Customer, quantities: &[u32]) -> Vec<String> {
    let products = stack.products(quantities.len()).await;
    let mut ids = Vec::new();
    for (product, quantity) in products.iter().zip(quantities) {
        let id = product["id"].as_str().unwrap().to_owned();
        stack.set_cart(customer, &id, *quantity).await;
        ids.push(id);
    }
    ids
}

async fn stock_of(stack: &Stack, ids: &[String]) -> Vec<i64> {
    let mut levels = Vec::new();
    for id in ids {
        levels.push(stack.available(id).await);
    }
    levels
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn happy_path(stack: &Stack) {
    let customer = stack.customer("happy").await;
    let ids = filled_cart(stack, &customer, &[2, 1]).await;
    let before = stock_of(stack, &ids).await;

    let (status, order) = stack.checkout(&customer, &key(), GOOD_CARD).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();

    let after = stock_of(stack, &ids).await;
    assert_eq!(after, [before[0] - 2, before[1] - 1], "stock lowered");
    assert_eq!(standing(&stack.charges(&order_id).await), 1, "one charge");

    let tracking = order["tracking_number"]
        .as_str()
        .expect("a tracking number");
    let shipment = stack
        .client
        .get(stack.api(&format!("/shipments/{tracking}")))
        .bearer_auth(&customer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(shipment.status(), StatusCode::OK);

    let seen = stack.order(&customer, &order_id).await;
    assert_eq!(seen["status"], "CONFIRMED");

    // The events: the cart is emptied and a notification recorded, both by consumers.
    eventually(
        "the cart emptied by order.confirmed",
        EVENTS_ARRIVE,
        || async {
            let cart = stack.cart(&customer).await;
            cart["items"].as_array().unwrap().is_empty().then_some(())
        },
    )
    .await;
    eventually("a notification of the order", EVENTS_ARRIVE, || async {
        let notes = stack.notifications(&customer).await;
        notes
            .iter()
            .any(|n| n.to_string().contains(&order_id))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_happy_path_on_sqlite_with_the_local_bus() {
    let stack = Stack::start(Storage::Sqlite, Bus::Local).await.unwrap();
    happy_path(&stack).await;
}

#[tokio::test]
async fn the_happy_path_on_postgres_with_nats() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let Some(stack) = Stack::start(Storage::Postgres, Bus::Nats(nats.url.clone())).await else {
        return;
    };
    happy_path(&stack).await;
}

#[tokio::test]
async fn declined_cards_fail_the_order_and_put_the_stock_back() {
    let stack = Stack::start(Storage::Sqlite, Bus::Local).await.unwrap();
    for (card, code) in [
        (DECLINED_CARD, "card_declined"),
        (NO_FUNDS_CARD, "insufficient_funds"),
    ] {
        let customer = stack.customer("declined").await;
        let ids = filled_cart(&stack, &customer, &[3]).await;
        let before = stock_of(&stack, &ids).await;
        let (status, problem) = stack.checkout(&customer, &key(), card).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{problem}");
        assert!(problem.to_string().contains(code), "{problem}");
        let order_id = problem["order_id"]
            .as_str()
            .expect("the order's id")
            .to_owned();
        let order = stack.order(&customer, &order_id).await;
        assert_eq!(order["status"], "FAILED");
        assert_eq!(order["reason_code"], code);
        assert_eq!(stock_of(&stack, &ids).await, before, "stock back");
        assert_eq!(standing(&stack.charges(&order_id).await), 0, "no charge");
        // The cart is left as it was: the customer may try another card.
        let cart = stack.cart(&customer).await;
        assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    }
}

/// For each step of the saga: the order service kills itself (SIGKILL) right after persisting
/// it; a new order process must finish every saga, CONFIRMED or FAILED, with stock and charges
/// that agree with the outcome.
#[tokio::test]
async fn the_order_service_killed_at_every_step_finishes_every_saga() {
    let mut stack = Stack::start(Storage::Sqlite, Bus::Local).await.unwrap();
    for step in shop_order::STEPS {
        // The compensation steps are reached with a declined card only.
        let card = match step {
            shop_order::Step::Compensating | shop_order::Step::Failed => DECLINED_CARD,
            _ => GOOD_CARD,
        };
        let step = step.as_str();
        let customer = stack.customer("crash").await;
        let ids = filled_cart(&stack, &customer, &[1, 2]).await;
        let before = stock_of(&stack, &ids).await;

        stack.kill("order").await;
        stack
            .start_service("order", &[("SHOP_ORDER_CRASH_AT", step.to_owned())])
            .await;
        let key = key();
        // The answer is lost with the process: the request fails or times out.
        let cut_off = stack
            .client
            .post(stack.api("/orders"))
            .bearer_auth(&customer.token)
            .header("Idempotency-Key", &key)
            .json(&checkout_body(card))
            .send()
            .await
            .map(|r| r.status());
        let exit = stack.wait_exit("order", Duration::from_secs(30)).await;
        assert!(
            !exit.success(),
            "step {step}: the order service should have killed itself (answered {cut_off:?})"
        );
        stack.start_service("order", &[]).await;

        // The same key finds the same order; the resumed saga ends it.
        let order = eventually(
            &format!("step {step}: the order ends"),
            Duration::from_secs(60),
            || async {
                let orders = stack.orders(&customer).await;
                let order = orders.first()?.clone();
                matches!(order["status"].as_str(), Some("CONFIRMED" | "FAILED")).then_some(order)
            },
        )
        .await;
        assert_eq!(
            stack.orders(&customer).await.len(),
            1,
            "step {step}: one order"
        );
        let order_id = order["id"].as_str().unwrap();
        let (status, replay) = stack.checkout(&customer, &key, card).await;
        assert_eq!(
            replay["id"].as_str().or(replay["order_id"].as_str()),
            Some(order_id),
            "step {step}: {status} {replay}"
        );

        eprintln!(
            "killed after {step}: the order ended {} ({})",
            order["status"], order["reason_code"]
        );
        let after = stock_of(&stack, &ids).await;
        let charges = standing(&stack.charges(order_id).await);
        match order["status"].as_str().unwrap() {
            "CONFIRMED" => {
                assert_eq!(after, [before[0] - 1, before[1] - 2], "step {step}: stock");
                assert_eq!(charges, 1, "step {step}: one charge");
            }
            _ => {
                assert_eq!(after, before, "step {step}: stock back");
                assert_eq!(charges, 0, "step {step}: no charge standing");
            }
        }
    }
}

/// NATS down while customers check out: the orders go through (the outbox keeps the events), and
/// every event arrives once NATS is back.
#[tokio::test]
async fn events_written_while_nats_is_down_arrive_after_it_returns() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    let stack = Stack::start(Storage::Sqlite, Bus::Nats(nats.url.clone()))
        .await
        .unwrap();
    nats.stop().await;
    let mut customers = Vec::new();
    for _ in 0..3 {
        let customer = stack.customer("outage").await;
        filled_cart(&stack, &customer, &[1]).await;
        let (status, order) = stack.checkout(&customer, &key(), GOOD_CARD).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        customers.push((customer, order["id"].as_str().unwrap().to_owned()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await;
    for (customer, order_id) in &customers {
        eventually(
            "the cart emptied after the outage",
            Duration::from_secs(60),
            || async {
                let cart = stack.cart(customer).await;
                cart["items"].as_array().unwrap().is_empty().then_some(())
            },
        )
        .await;
        eventually(
            "the notification after the outage",
            Duration::from_secs(60),
            || async {
                let notes = stack.notifications(customer).await;
                notes
                    .iter()
                    .any(|n| n.to_string().contains(order_id.as_str()))
                    .then_some(())
            },
        )
        .await;
    }
}

/// Payment down: browsing, search and the cart answer; checkout fails fast with a clear error and
/// leaves no stock reserved.
#[tokio::test]
async fn with_payment_down_the_shop_browses_and_checkout_fails_fast() {
    let mut stack = Stack::start(Storage::Sqlite, Bus::Local).await.unwrap();
    let customer = stack.customer("nopay").await;
    let ids = filled_cart(&stack, &customer, &[1]).await;
    let before = stock_of(&stack, &ids).await;
    stack.kill("payment").await;

    for path in ["/products?q=lantern", "/categories", "/cart"] {
        let response = stack
            .client
            .get(stack.api(path))
            .bearer_auth(&customer.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    for attempt in 0..3 {
        let started = Instant::now();
        let (status, problem) = stack.checkout(&customer, &key(), GOOD_CARD).await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "a clear error: {problem}"
        );
        // Generous: the machine is shared and noisy; a hang would be the request timeout.
        assert!(
            took < Duration::from_secs(3),
            "attempt {attempt} took {took:?}"
        );
        assert_eq!(
            stock_of(&stack, &ids).await,
            before,
            "nothing stays reserved"
        );
    }
}

/// Bad input through the gateway: a clear 4xx, and no order.
#[tokio::test]
async fn bad_checkouts_are_refused_and_create_nothing() {
    let stack = Stack::start(Storage::Sqlite, Bus::Local).await.unwrap();
    let customer = stack.customer("bad").await;
    filled_cart(&stack, &customer, &[1]).await;

    let missing_key = stack
        .client
        .post(stack.api("/orders"))
        .bearer_auth(&customer.token)
        .json(&checkout_body(GOOD_CARD))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_key.status(), StatusCode::PRECONDITION_REQUIRED);

    let (status, _) = stack.checkout(&customer, &key(), "4242424242424241").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a card failing Luhn"
    );

    let mut expired = checkout_body(GOOD_CARD);
    expired["payment"]["exp_year"] = 2020.into();
    let response = stack
        .client
        .post(stack.api("/orders"))
        .bearer_auth(&customer.token)
        .header("Idempotency-Key", key())
        .json(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Its own client: the gateway answers 413 without reading the body and closes that
    // connection, which a pooled client could otherwise pick for the next request. When the
    // gateway closes before the client has written the whole 2 MiB, the client sees the
    // connection broken instead of the answer: a refusal as well (nothing is created either
    // way; checked below).
    let oversized = reqwest::Client::new()
        .post(stack.api("/orders"))
        .bearer_auth(&customer.token)
        .header("Idempotency-Key", key())
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await;
    match oversized {
        Ok(response) => assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => {
            let cause = format!("{e:?}");
            assert!(
                cause.contains("Broken pipe") || cause.contains("reset"),
                "the oversized checkout failed otherwise: {cause}"
            );
        }
    }

    let anonymous = stack
        .client
        .post(stack.api("/orders"))
        .header("Idempotency-Key", key())
        .json(&checkout_body(GOOD_CARD))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    assert!(
        stack.orders(&customer).await.is_empty(),
        "no order was made"
    );
}

/// The internal APIs answer only the services of the installation, each only where it may
/// call: a caller without the key, with another installation's key, with a token made for
/// another service, or not allowed the path is refused with a problem, logged without the token.
#[tokio::test]
async fn internal_apis_refuse_callers_without_the_right_credential() {
    use shop_contracts::identity::HEADER;
    let stack = Stack::start(Storage::Sqlite, Bus::Local).await.unwrap();
    let charges = format!("{}/internal/charges", stack.url("payment"));
    let body = serde_json::json!({"order_id": "00000000-0000-7000-8000-000000000000"});
    let post = |token: Option<String>| {
        let mut request = stack.client.post(&charges).json(&body);
        if let Some(token) = token {
            request = request.header(HEADER, token);
        }
        request.send()
    };

    let bare = post(None).await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bare.headers()["content-type"],
        "application/problem+json",
        "a problem"
    );
    let problem: Value = bare.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains(HEADER),
        "{problem}"
    );

    let cart = stack.service_token("cart", "payment");
    let refused = post(Some(cart.clone())).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(
        problem["detail"],
        "the cart service may not call /internal/charges"
    );

    let stranger = shop_kit::Identity::new(
        "order",
        shop_kit::ServiceKey::decode(&shop_kit::ServiceKey::generate()).unwrap(),
    )
    .token_for("payment");
    assert_eq!(
        post(Some(stranger.clone())).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let for_inventory = stack.service_token("order", "inventory");
    assert_eq!(
        post(Some(for_inventory.clone())).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The order service's own token passes the check (the body is then judged on its merits).
    let order = stack.service_token("order", "payment");
    let judged = post(Some(order)).await.unwrap().status();
    assert!(
        judged != StatusCode::UNAUTHORIZED && judged != StatusCode::FORBIDDEN,
        "{judged}"
    );

    let log = stack.log("payment");
    assert!(log.contains("internal call refused"), "{log}");
    for token in [&cart, &stranger, &for_inventory] {
        let signature = token.rsplit(':').next().unwrap();
        assert!(!log.contains(signature), "a token in the log:\n{log}");
    }
}
