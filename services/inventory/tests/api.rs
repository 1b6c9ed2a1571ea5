//! The inventory service over real HTTP, on SQLite and on PostgreSQL.

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use shop_contracts::identity::HEADER;
use shop_events::testing::{EventSink, local_bus};
use shop_inventory::Settings;
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::testing::service_token;
use shop_kit::testing::{self, TestDatabase, TestService, expect_problem};
use uuid::Uuid;

const ADMIN: &str = "0190f5c4-0000-7000-8000-0000000000ad";
const SHOPPER: &str = "0190f5c4-0000-7000-8000-0000000000b2";

struct Inventory(TestService);

impl std::ops::Deref for Inventory {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.0
    }
}

async fn start(db: &TestDatabase, settings: Settings) -> Inventory {
    Inventory(
        TestService::start(db, &shop_inventory::MIGRATOR, |database| {
            shop_inventory::service(database, settings)
        })
        .await,
    )
}

fn product() -> String {
    Uuid::now_v7().to_string()
}

impl Inventory {
    async fn set_stock(&self, product_id: &str, on_hand: i64) -> Response {
        self.client
            .put(format!("{}/api/stock/{product_id}", self.url))
            .header(USER_ID_HEADER, ADMIN)
            .header(USER_ROLES_HEADER, "admin")
            .json(&json!({ "on_hand": on_hand }))
            .send()
            .await
            .unwrap()
    }

    async fn stock(&self, product_id: &str, on_hand: i64) {
        let response = self.set_stock(product_id, on_hand).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    async fn available(&self, product_id: &str) -> i64 {
        let body: Value = self
            .client
            .get(format!("{}/api/stock/{product_id}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["product_id"], product_id);
        body["available"].as_i64().unwrap()
    }

    async fn reserve(&self, body: Value) -> Response {
        self.client
            .post(format!("{}/internal/reservations", self.url))
            .header(HEADER, service_token("order", "inventory"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn reserve_raw(&self, body: String) -> Response {
        self.client
            .post(format!("{}/internal/reservations", self.url))
            .header(HEADER, service_token("order", "inventory"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn act(&self, order_id: &str, action: &str) -> Response {
        self.client
            .post(format!(
                "{}/internal/reservations/{order_id}/{action}",
                self.url
            ))
            .header(HEADER, service_token("order", "inventory"))
            .send()
            .await
            .unwrap()
    }

    async fn reservation(&self, order_id: &str) -> Response {
        self.client
            .get(format!("{}/internal/reservations/{order_id}", self.url))
            .header(HEADER, service_token("order", "inventory"))
            .send()
            .await
            .unwrap()
    }

    /// (on_hand, reserved) as stored.
    async fn row(&self, product_id: &str) -> (i64, i64) {
        sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE product_id = $1")
            .bind(product_id)
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// Payloads of the `stock.low` events in the outbox.
    async fn low_events(&self) -> Vec<Value> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT type, source, payload FROM outbox WHERE type = 'stock.low' ORDER BY time",
        )
        .fetch_all(self.db.pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(_, source, payload)| {
                assert_eq!(source, "inventory");
                serde_json::from_str(&payload).unwrap()
            })
            .collect()
    }
}

fn order(order_id: &str, items: &[(&str, i64)]) -> Value {
    json!({
        "order_id": order_id,
        "items": items.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn reserve_commit_and_release() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let (a, b) = (product(), product());
        inv.stock(&a, 10).await;
        inv.stock(&b, 3).await;
        assert_eq!(inv.available(&product()).await, 0, "never stocked: 0");

        let first = Uuid::now_v7().to_string();
        let response = inv.reserve(order(&first, &[(&a, 4), (&b, 1)])).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let held: Value = response.json().await.unwrap();
        assert_eq!(held["status"], "held");
        assert_eq!(held["items"].as_array().unwrap().len(), 2);
        assert_eq!((inv.available(&a).await, inv.available(&b).await), (6, 2));

        // A retry (the saga after a crash) gets the same reservation and holds nothing more.
        let retry = inv.reserve(order(&first, &[(&b, 1), (&a, 4)])).await;
        assert_eq!(retry.status(), StatusCode::OK);
        assert_eq!(retry.json::<Value>().await.unwrap(), held);
        assert_eq!((inv.available(&a).await, inv.available(&b).await), (6, 2));
        // The same order id with other items is a conflict, not a second hold.
        let other = expect_problem(inv.reserve(order(&first, &[(&a, 5)])).await, 409).await;
        assert!(other.kind.ends_with("reservation-mismatch"));

        // Commit: the units leave the warehouse; committing again is a no-op.
        // The answer is the reservation as stored: the first from the commit's own rows, the
        // second read back.
        for _ in 0..2 {
            let committed = inv.act(&first, "commit").await;
            assert_eq!(committed.status(), StatusCode::OK);
            let committed: Value = committed.json().await.unwrap();
            assert_eq!(committed["status"], "committed");
            assert_eq!(committed["items"], held["items"]);
            let stored: Value = inv.reservation(&first).await.json().await.unwrap();
            assert_eq!(committed, stored);
        }
        assert_eq!(inv.row(&a).await, (6, 0));
        assert_eq!(inv.row(&b).await, (2, 0));
        assert_eq!((inv.available(&a).await, inv.available(&b).await), (6, 2));
        expect_problem(inv.act(&first, "release").await, 409).await;

        // Release: the units come back; releasing again is a no-op; a released one cannot commit.
        let second = Uuid::now_v7().to_string();
        assert_eq!(
            inv.reserve(order(&second, &[(&a, 6)])).await.status(),
            StatusCode::CREATED
        );
        assert_eq!(inv.available(&a).await, 0);
        for _ in 0..2 {
            let released = inv.act(&second, "release").await;
            assert_eq!(released.status(), StatusCode::OK);
            let released: Value = released.json().await.unwrap();
            assert_eq!(released["status"], "released");
            assert_eq!(released["items"][0]["quantity"], 6);
            let stored: Value = inv.reservation(&second).await.json().await.unwrap();
            assert_eq!(released, stored);
        }
        assert_eq!(inv.available(&a).await, 6);
        assert_eq!(inv.row(&a).await, (6, 0));
        let refused = expect_problem(inv.act(&second, "commit").await, 409).await;
        assert!(refused.kind.ends_with("reservation-not-held"));
        let seen: Value = inv.reservation(&second).await.json().await.unwrap();
        assert_eq!(seen["status"], "released");

        let unknown = Uuid::now_v7().to_string();
        expect_problem(inv.act(&unknown, "commit").await, 404).await;
        expect_problem(inv.act(&unknown, "release").await, 404).await;
        expect_problem(inv.reservation(&unknown).await, 404).await;
    }
}

#[tokio::test]
async fn one_short_item_holds_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let (plenty, scarce, unknown) = (product(), product(), product());
        inv.stock(&plenty, 10).await;
        inv.stock(&scarce, 1).await;
        let order_id = Uuid::now_v7().to_string();
        let problem = expect_problem(
            inv.reserve(order(
                &order_id,
                &[(&plenty, 5), (&scarce, 2), (&unknown, 1)],
            ))
            .await,
            409,
        )
        .await;
        assert!(problem.kind.ends_with("insufficient-stock"));
        let mut short: Vec<_> = problem.errors.iter().map(|e| e.field.as_str()).collect();
        short.sort();
        assert_eq!(short, ["items[1].quantity", "items[2].quantity"]);
        let messages: Vec<_> = problem.errors.iter().map(|e| e.message.as_str()).collect();
        assert!(
            messages.contains(&format!("product {scarce}: requested 2, available 1").as_str()),
            "{messages:?}"
        );
        assert!(
            messages.contains(&format!("product {unknown}: requested 1, available 0").as_str()),
            "{messages:?}"
        );
        let detail = problem.detail.unwrap();
        assert!(detail.contains(&scarce) && detail.contains(&unknown) && !detail.contains(&plenty));

        assert_eq!(inv.available(&plenty).await, 10);
        assert_eq!(inv.row(&plenty).await, (10, 0));
        assert_eq!(inv.row(&scarce).await, (1, 0));
        expect_problem(inv.reservation(&order_id).await, 404).await;
        // The order id was not used up: once stock is there, the same order reserves.
        inv.stock(&unknown, 1).await;
        assert_eq!(
            inv.reserve(order(
                &order_id,
                &[(&plenty, 5), (&scarce, 1), (&unknown, 1)]
            ))
            .await
            .status(),
            StatusCode::CREATED
        );
    }
}

#[tokio::test]
async fn an_expired_hold_frees_its_stock() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        // No sweep during the test: reads and new holds must treat the expired hold as free alone.
        let idle = Settings {
            sweep_interval: Duration::from_secs(3600),
            ..Settings::default()
        };
        let inv = start(&db, idle).await;
        let p = product();
        inv.stock(&p, 3).await;
        let abandoned = Uuid::now_v7().to_string();
        let mut body = order(&abandoned, &[(&p, 3)]);
        body["ttl_seconds"] = json!(1);
        assert_eq!(inv.reserve(body).await.status(), StatusCode::CREATED);
        assert_eq!(inv.available(&p).await, 0);
        tokio::time::sleep(Duration::from_millis(1_300)).await;

        assert_eq!(inv.available(&p).await, 3, "expired holds read as free");
        assert_eq!(inv.row(&p).await, (3, 3), "not swept yet");
        let seen: Value = inv.reservation(&abandoned).await.json().await.unwrap();
        assert_eq!(seen["status"], "expired");
        expect_problem(inv.act(&abandoned, "commit").await, 409).await;
        // A new order gets the freed units.
        let next = Uuid::now_v7().to_string();
        assert_eq!(
            inv.reserve(order(&next, &[(&p, 3)])).await.status(),
            StatusCode::CREATED
        );
        assert_eq!(inv.row(&p).await, (3, 3));
        assert_eq!(inv.available(&p).await, 0);
        expect_problem(inv.act(&abandoned, "commit").await, 409).await;
    }
}

#[tokio::test]
async fn the_sweeper_releases_expired_holds() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let busy = Settings {
            sweep_interval: Duration::from_millis(100),
            ..Settings::default()
        };
        let inv = start(&db, busy).await;
        let p = product();
        inv.stock(&p, 5).await;
        let abandoned = Uuid::now_v7().to_string();
        let mut body = order(&abandoned, &[(&p, 2)]);
        body["ttl_seconds"] = json!(1);
        assert_eq!(inv.reserve(body).await.status(), StatusCode::CREATED);
        assert_eq!(inv.row(&p).await, (5, 2));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while inv.row(&p).await != (5, 0) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sweeper did not free the hold"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status: String =
            sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
                .bind(&abandoned)
                .fetch_one(inv.db.pool())
                .await
                .unwrap();
        assert_eq!(status, "expired");
        // Releasing an expired reservation is a harmless no-op that gives nothing back twice.
        assert_eq!(
            inv.act(&abandoned, "release").await.status(),
            StatusCode::OK
        );
        assert_eq!(inv.row(&p).await, (5, 0));
    }
}

/// The sweeper is one of the service's tasks: once the server is gone, so is the sweeper.
#[tokio::test]
async fn the_sweeper_stops_with_the_service() {
    let db = testing::sqlite();
    let busy = Settings {
        sweep_interval: Duration::from_millis(50),
        ..Settings::default()
    };
    let inv = start(&db, busy).await;
    let p = product();
    inv.stock(&p, 5).await;
    let mut body = order(&Uuid::now_v7().to_string(), &[(&p, 2)]);
    body["ttl_seconds"] = json!(1);
    assert_eq!(inv.reserve(body).await.status(), StatusCode::CREATED);

    let Inventory(TestService {
        server, db: pool, ..
    }) = inv;
    drop(server);
    // Well past the hold's expiry, at twenty sweeps a second had the sweeper run on.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let row: (i64, i64) =
        sqlx::query_as("SELECT on_hand, reserved FROM stock WHERE product_id = $1")
            .bind(&p)
            .fetch_one(pool.pool())
            .await
            .unwrap();
    assert_eq!(
        row,
        (5, 2),
        "the hold was freed after the service was dropped"
    );
    // The hold had expired: a sweep run by hand frees it, so only the sweeper was gone.
    let freed = shop_inventory::storage::Store::new(pool.clone())
        .free_expired(None)
        .await
        .unwrap();
    assert_eq!(freed, 1, "the hold had expired by then");
}

#[tokio::test]
async fn fifty_checkouts_race_for_ten_units() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let p = product();
        inv.stock(&p, 10).await;
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (client, url, p) = (inv.client.clone(), inv.url.clone(), p.clone());
            racers.spawn(async move {
                client
                    .post(format!("{url}/internal/reservations"))
                    .header(HEADER, service_token("order", "inventory"))
                    .json(&order(&Uuid::now_v7().to_string(), &[(&p, 1)]))
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
        }
        let (mut won, mut lost) = (0, 0);
        while let Some(status) = racers.join_next().await {
            match status.unwrap() {
                StatusCode::CREATED => won += 1,
                StatusCode::CONFLICT => lost += 1,
                other => panic!("unexpected {other}"),
            }
        }
        eprintln!("{}: {won} held, {lost} refused", db.backend);
        assert_eq!((won, lost), (10, 40));
        assert_eq!(inv.row(&p).await, (10, 10));
        assert_eq!(inv.available(&p).await, 0);
        let held: i64 = sqlx::query_scalar(
            "SELECT CAST(SUM(quantity) AS BIGINT) FROM reservation_lines WHERE product_id = $1",
        )
        .bind(&p)
        .fetch_one(inv.db.pool())
        .await
        .unwrap();
        assert_eq!(held, 10, "the lines agree with the counter");
        // The crossing below 5 happened once, whichever racer made it.
        let events = inv.low_events().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["available"], 4);
    }
}

#[tokio::test]
async fn stock_low_is_written_once_on_the_crossing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let p = product();
        inv.stock(&p, 7).await;
        for (quantity, expected_events) in [(1, 0), (2, 1), (1, 1), (3, 1)] {
            let response = inv
                .reserve(order(&Uuid::now_v7().to_string(), &[(&p, quantity)]))
                .await;
            assert_eq!(response.status(), StatusCode::CREATED);
            assert_eq!(inv.low_events().await.len(), expected_events);
        }
        let events = inv.low_events().await;
        assert_eq!(
            events[0],
            json!({"version": 1, "product_id": p, "available": 4, "threshold": 5})
        );
        // A refused reservation writes no event either.
        expect_problem(
            inv.reserve(order(&Uuid::now_v7().to_string(), &[(&p, 1)]))
                .await,
            409,
        )
        .await;
        assert_eq!(inv.low_events().await.len(), 1);
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let p = product();
        inv.stock(&p, 10).await;
        let order_id = Uuid::now_v7().to_string();
        let big = "x".repeat(100 * 1024);
        let cases: Vec<(String, u16, &str)> = vec![
            (order(&order_id, &[(&p, 0)]).to_string(), 422, "items[0].quantity"),
            (order(&order_id, &[(&p, -2)]).to_string(), 422, "items[0].quantity"),
            (order(&order_id, &[(&p, 1_001)]).to_string(), 422, "items[0].quantity"),
            (order(&order_id, &[(&p, 1), (&p, 2)]).to_string(), 422, "items[1].product_id"),
            (order(&order_id, &[]).to_string(), 422, "items"),
            (
                json!({"order_id": order_id, "items": [{"product_id": p, "quantity": 1}], "ttl_seconds": 0}).to_string(),
                422,
                "ttl_seconds",
            ),
            (
                json!({"order_id": order_id, "items": [{"product_id": p, "quantity": 1}], "coupon": "x"}).to_string(),
                422,
                "coupon",
            ),
            (
                json!({"order_id": order_id, "items": [{"product_id": p, "quantity": 1, "price": 3}]}).to_string(),
                422,
                "price",
            ),
            (
                json!({"order_id": "not-a-uuid", "items": [{"product_id": p, "quantity": 1}]}).to_string(),
                422,
                "order_id",
            ),
            (
                json!({"order_id": order_id, "items": [{"product_id": "kettle", "quantity": 1}]}).to_string(),
                422,
                "items[0].product_id",
            ),
            (
                json!({"order_id": order_id, "items": [{"product_id": p, "quantity": 1.5}]}).to_string(),
                422,
                "items[0].quantity",
            ),
            (
                json!({"order_id": order_id, "items": [{"product_id": p, "quantity": 1}], "note": big}).to_string(),
                413,
                "",
            ),
            (r#"{"order_id": "#.to_owned(), 400, ""),
        ];
        for (body, status, field) in cases {
            let problem = expect_problem(inv.reserve_raw(body.clone()).await, status).await;
            let named = problem.errors.iter().any(|e| e.field == field)
                || problem
                    .detail
                    .as_deref()
                    .unwrap_or_default()
                    .contains(field);
            assert!(named, "{status} for {body:.120} names {field}: {problem:?}");
        }
        // Bad ids in paths.
        expect_problem(inv.act("not-a-uuid", "commit").await, 404).await;
        expect_problem(
            inv.client
                .get(format!("{}/api/stock/not-a-uuid", inv.url))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        // Setting stock: admins only, never negative, never below what is held.
        let put = |who: Option<(&'static str, &'static str)>, body: Value| {
            let mut request = inv
                .client
                .put(format!("{}/api/stock/{p}", inv.url))
                .json(&body);
            if let Some((user, roles)) = who {
                request = request
                    .header(USER_ID_HEADER, user)
                    .header(USER_ROLES_HEADER, roles);
            }
            request.send()
        };
        expect_problem(put(None, json!({"on_hand": 1})).await.unwrap(), 401).await;
        expect_problem(
            put(Some((SHOPPER, "")), json!({"on_hand": 1}))
                .await
                .unwrap(),
            403,
        )
        .await;
        let negative = expect_problem(inv.set_stock(&p, -1).await, 422).await;
        assert_eq!(negative.errors[0].field, "on_hand");
        expect_problem(
            put(Some((ADMIN, "admin")), json!({"on_hand": 1, "reserved": 0}))
                .await
                .unwrap(),
            422,
        )
        .await;

        assert_eq!(
            inv.row(&p).await,
            (10, 0),
            "refused requests changed nothing"
        );
        expect_problem(inv.reservation(&order_id).await, 404).await;
        assert_eq!(inv.count("reservations").await, 0);

        // On-hand cannot drop below what live reservations hold.
        let held = Uuid::now_v7().to_string();
        assert_eq!(
            inv.reserve(order(&held, &[(&p, 6)])).await.status(),
            StatusCode::CREATED
        );
        let problem = expect_problem(inv.set_stock(&p, 5).await, 409).await;
        assert!(problem.kind.ends_with("stock-held"));
        assert_eq!(inv.row(&p).await, (10, 6));
        let restocked: Value = inv.set_stock(&p, 20).await.json().await.unwrap();
        assert_eq!(
            restocked,
            json!({"product_id": p, "on_hand": 20, "reserved": 6, "available": 14})
        );
    }
}

#[tokio::test]
async fn the_seed_catalog_is_stocked() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let runtime = shop_events::testing::runtime("inventory", &db.url);
        let (config, metrics) = (&runtime.config, &runtime.metrics);
        let server = testing::spawn_service(
            shop_inventory::build(&runtime, Settings::default())
                .await
                .unwrap(),
            config,
            metrics,
        )
        .await;
        let (_, products) = shop_catalog::domain::seed();
        let client = Client::new();
        for p in [&products[0], &products[products.len() - 1]] {
            let body: Value = client
                .get(format!("{}/api/stock/{}", server.url, p.id))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["available"], shop_inventory::domain::SEED_ON_HAND);
        }
        let document: Value = client
            .get(format!("{}/openapi.json", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for path in [
            "/api/stock/{product_id}",
            "/internal/reservations",
            "/internal/reservations/{order_id}",
            "/internal/reservations/{order_id}/commit",
            "/internal/reservations/{order_id}/release",
        ] {
            assert!(document["paths"][path].is_object(), "{path} is documented");
        }
        // A second start leaves stock alone.
        let again = shop_kit::Database::connect_and_migrate(&db.url, &shop_inventory::MIGRATOR)
            .await
            .unwrap();
        let seeded = shop_inventory::storage::Store::new(again)
            .seed_if_empty(&[products[0].id.clone()])
            .await
            .unwrap();
        assert_eq!(seeded, 0);
    }
}

/// Sends each body to `/internal/reservations` at once; returns the statuses.
async fn race(inv: &Inventory, bodies: Vec<Value>) -> Vec<StatusCode> {
    let mut racers = tokio::task::JoinSet::new();
    for body in bodies {
        let (client, url) = (inv.client.clone(), inv.url.clone());
        racers.spawn(async move {
            client
                .post(format!("{url}/internal/reservations"))
                .header(HEADER, service_token("order", "inventory"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    racers.join_all().await
}

#[tokio::test]
async fn orders_of_several_items_race_without_deadlock_or_oversell() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let (a, b) = (product(), product());
        inv.stock(&a, 10).await;
        inv.stock(&b, 10).await;
        // Half list the products one way round, half the other: lock order must not follow the
        // request, or PostgreSQL would deadlock them.
        let bodies = (0..30)
            .map(|n| {
                let id = Uuid::now_v7().to_string();
                if n % 2 == 0 {
                    order(&id, &[(&a, 1), (&b, 1)])
                } else {
                    order(&id, &[(&b, 1), (&a, 1)])
                }
            })
            .collect();
        let statuses = race(&inv, bodies).await;
        let won = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let lost = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((won, lost), (10, 20), "{statuses:?}");
        assert_eq!(inv.row(&a).await, (10, 10));
        assert_eq!(inv.row(&b).await, (10, 10));
    }
}

#[tokio::test]
async fn retries_of_one_order_racing_hold_once() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let p = product();
        inv.stock(&p, 10).await;
        let order_id = Uuid::now_v7().to_string();
        let statuses = race(&inv, vec![order(&order_id, &[(&p, 3)]); 20]).await;
        let created = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let replayed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!((created, replayed), (1, 19), "{statuses:?}");
        assert_eq!(inv.row(&p).await, (10, 3));
    }
}

#[tokio::test]
async fn commit_and_release_racing_settle_on_one() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let inv = start(&db, Settings::default()).await;
        let p = product();
        inv.stock(&p, 100).await;
        for _ in 0..5 {
            let order_id = Uuid::now_v7().to_string();
            assert_eq!(
                inv.reserve(order(&order_id, &[(&p, 2)])).await.status(),
                StatusCode::CREATED
            );
            let (on_hand_before, _) = inv.row(&p).await;
            let (committed, released) =
                tokio::join!(inv.act(&order_id, "commit"), inv.act(&order_id, "release"));
            let final_status: Value = inv.reservation(&order_id).await.json().await.unwrap();
            let (on_hand, reserved) = inv.row(&p).await;
            assert_eq!(reserved, 0, "the hold is gone either way");
            match final_status["status"].as_str().unwrap() {
                "committed" => {
                    assert_eq!(committed.status(), StatusCode::OK);
                    assert_eq!(released.status(), StatusCode::CONFLICT);
                    assert_eq!(on_hand, on_hand_before - 2);
                }
                "released" => {
                    assert_eq!(released.status(), StatusCode::OK);
                    assert_eq!(committed.status(), StatusCode::CONFLICT);
                    assert_eq!(on_hand, on_hand_before);
                }
                other => panic!("unexpected status {other}"),
            }
        }
    }
}

/// The built service (as `shop serve` runs it) relays `stock.low` to a consumer on the bus.
#[tokio::test]
async fn stock_low_reaches_a_consumer() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let sink = EventSink::start("audit").await;
        let bus = local_bus(vec![sink.peer()]);
        let runtime = shop_events::testing::runtime_with_bus("inventory", &db.url, bus);
        let service = shop_inventory::build(&runtime, Settings::default())
            .await
            .unwrap();
        let inv = Inventory(TestService::serve(service, &runtime.metrics, &db.url).await);
        let p = product();
        inv.stock(&p, 6).await;
        let response = inv
            .reserve(order(&Uuid::now_v7().to_string(), &[(&p, 2)]))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);

        let event = sink.wait_for("stock.low", Duration::from_secs(10)).await;
        assert_eq!(event.source, "inventory");
        assert_eq!(
            event.data,
            json!({"version": 1, "product_id": p, "available": 4, "threshold": 5})
        );
        // The row is marked once the consumer took it (just after its answer).
        for attempt in 0.. {
            let published: Option<String> =
                sqlx::query_scalar("SELECT published_at FROM outbox WHERE id = $1")
                    .bind(event.id.to_string())
                    .fetch_one(inv.db.pool())
                    .await
                    .unwrap();
            if published.is_some() {
                break;
            }
            assert!(attempt < 200, "the outbox row was never marked published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
