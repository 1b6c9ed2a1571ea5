//! The shipping service over real HTTP, on SQLite and on PostgreSQL.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shop_contracts::identity::HEADER;
use shop_events::testing::{EventSink, local_bus};
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::testing::service_token;
use shop_kit::testing::{self, TestDatabase, TestService, expect_problem};
use uuid::Uuid;

const ADMIN: &str = "0190f5c4-0000-7000-8000-0000000000ad";

struct Shipping(TestService);

impl std::ops::Deref for Shipping {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.0
    }
}

async fn start(db: &TestDatabase) -> Shipping {
    Shipping(TestService::start(db, &shop_shipping::MIGRATOR, shop_shipping::service).await)
}

fn address(country: &str) -> Value {
    json!({
        "name": "Ada Lovelace",
        "line1": "12 Analytical Street",
        "line2": "Back house",
        "city": "Springfield",
        "postal_code": "12345",
        "country": country,
    })
}

/// Two products: 2 × 750 g and 1 × the default 500 g, so 2 kg.
fn items() -> Value {
    json!([
        {"product_id": Uuid::from_u128(1), "quantity": 2, "weight_grams": 750},
        {"product_id": Uuid::from_u128(2), "quantity": 1},
    ])
}

impl Shipping {
    async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header(HEADER, service_token("order", "shipping"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_raw(&self, path: &str, body: String) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header(HEADER, service_token("order", "shipping"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn quote(&self, country: &str, currency: &str) -> Value {
        let response = self
            .post(
                "/internal/quotes",
                &json!({"items": items(), "address": address(country), "currency": currency}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn shipment_body(&self, order_id: &str, user_id: &str) -> Value {
        json!({
            "order_id": order_id,
            "user_id": user_id,
            "items": items(),
            "address": address("FR"),
            "quote": self.quote("FR", "EUR").await,
        })
    }

    async fn track(&self, tracking_number: &str, who: Option<(&str, &str)>) -> Response {
        let mut request = self
            .client
            .get(format!("{}/api/shipments/{tracking_number}", self.url));
        if let Some((user, roles)) = who {
            request = request
                .header(USER_ID_HEADER, user)
                .header(USER_ROLES_HEADER, roles);
        }
        request.send().await.unwrap()
    }

    async fn event(&self, tracking_number: &str, status: &str) -> Response {
        self.post(
            &format!("/internal/shipments/{tracking_number}/events"),
            &json!({ "status": status }),
        )
        .await
    }

    /// Rows of shipments, their history and the outbox: what "nothing changed" compares.
    async fn counts(&self) -> (i64, i64, i64) {
        (
            self.count("shipments").await,
            self.count("shipment_events").await,
            self.count("outbox").await,
        )
    }
}

fn statuses(body: &Value) -> Vec<String> {
    body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn quotes_come_from_the_rate_table_per_zone() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        // 2 kg: base + 2 × per kg, by zone.
        for (country, amount, days) in [
            ("DE", 490 + 2 * 100, 2),
            ("FR", 990 + 2 * 250, 5),
            ("PL", 990 + 2 * 250, 5),
            ("CH", 1_990 + 2 * 600, 10),
            ("US", 1_990 + 2 * 600, 10),
        ] {
            let quote = shipping.quote(country, "EUR").await;
            assert_eq!(
                quote,
                json!({
                    "amount": {"amount": amount, "currency": "EUR"},
                    "service_level": "standard",
                    "estimated_days": days,
                }),
                "{country}"
            );
            assert_eq!(shipping.quote(country, "EUR").await, quote, "deterministic");
        }
        assert_eq!(
            shipping.quote("US", "USD").await["amount"]["currency"],
            "USD"
        );
        assert_eq!(shipping.counts().await, (0, 0, 0), "quotes store nothing");
    }
}

#[tokio::test]
async fn a_shipment_is_created_once_per_order_and_tracked() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        let (order_id, owner, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (owner, other) = (owner.to_string(), other.to_string());
        let body = shipping.shipment_body(&order_id.to_string(), &owner).await;

        let response = shipping.post("/internal/shipments", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();
        let tracking = created["tracking_number"].as_str().unwrap().to_owned();
        assert!(
            shop_shipping::domain::is_tracking_number(&tracking),
            "{tracking}"
        );
        assert_eq!(created["status"], "label_created");
        assert_eq!(created["items_count"], 3);
        assert_eq!(statuses(&created), ["label_created"]);

        // A retry (the saga after a crash) gets the same shipment; items in another order are
        // the same request.
        let mut reordered = body.clone();
        reordered["items"].as_array_mut().unwrap().reverse();
        for retry in [&body, &reordered] {
            let response = shipping.post("/internal/shipments", retry).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.json::<Value>().await.unwrap(), created);
        }
        // The same order with another address is a conflict, and creates nothing.
        let mut moved = body.clone();
        moved["address"]["line1"] = json!("13 Analytical Street");
        let conflict =
            expect_problem(shipping.post("/internal/shipments", &moved).await, 409).await;
        assert!(conflict.kind.ends_with("shipment-mismatch"), "{conflict:?}");
        assert_eq!(shipping.counts().await, (1, 1, 1));

        // The outbox has one shipment.created, without name or street.
        let (kind, source, payload, published): (String, String, String, Option<String>) =
            sqlx::query_as("SELECT type, source, payload, published_at FROM outbox")
                .fetch_one(shipping.db.pool())
                .await
                .unwrap();
        assert_eq!(
            (kind.as_str(), source.as_str()),
            ("shipment.created", "shipping")
        );
        assert_eq!(published, None, "no relay yet");
        let payload: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(payload["version"], 1);
        assert_eq!(payload["tracking_number"], tracking.as_str());
        assert_eq!(payload["order_id"], order_id.to_string());
        assert_eq!(payload["country"], "FR");
        assert!(!payload.to_string().contains("Analytical"), "{payload}");

        // Tracking: the owner and admins see name and street, anyone else not.
        for who in [Some((owner.as_str(), "")), Some((ADMIN, "admin"))] {
            let response = shipping.track(&tracking, who).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page: Value = response.json().await.unwrap();
            assert_eq!(page["address"]["line1"], "12 Analytical Street");
            assert_eq!(page["address"]["line2"], "Back house");
            assert_eq!(page["address"]["name"], "Ada Lovelace");
            assert_eq!(page["address"]["complete"], true);
        }
        for who in [None, Some((other.as_str(), ""))] {
            let response = shipping.track(&tracking, who).await;
            assert_eq!(response.status(), StatusCode::OK);
            let page: Value = response.json().await.unwrap();
            assert_eq!(page["status"], "label_created");
            assert_eq!(page["items_count"], 3);
            assert_eq!(page["estimated_days"], 5);
            assert_eq!(statuses(&page), ["label_created"]);
            assert_eq!(
                page["address"],
                json!({"city": "Springfield", "postal_code": "12345", "country": "FR", "complete": false})
            );
            assert!(!page.to_string().contains("Analytical"), "{page}");
        }
        // The internal view has everything.
        let internal: Value = shipping
            .client
            .get(format!("{}/internal/shipments/{tracking}", shipping.url))
            .header(HEADER, service_token("order", "shipping"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(internal, created);
    }
}

#[tokio::test]
async fn status_moves_along_the_transition_table() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        let body = shipping
            .shipment_body(&Uuid::now_v7().to_string(), &Uuid::now_v7().to_string())
            .await;
        let created: Value = shipping
            .post("/internal/shipments", &body)
            .await
            .json()
            .await
            .unwrap();
        let tracking = created["tracking_number"].as_str().unwrap();

        // No skipping ahead.
        let skip = expect_problem(shipping.event(tracking, "delivered").await, 409).await;
        assert!(skip.kind.ends_with("status-transition"));
        assert!(skip.detail.unwrap().contains("in_transit, cancelled"));

        for (status, expected_history) in [
            ("in_transit", 2),
            // The same status again (a repeated carrier event) changes nothing.
            ("in_transit", 2),
            ("out_for_delivery", 3),
            // A failed attempt goes back to the depot, then out again.
            ("in_transit", 4),
            ("out_for_delivery", 5),
            ("delivered", 6),
        ] {
            let response = shipping.event(tracking, status).await;
            assert_eq!(response.status(), StatusCode::OK, "{status}");
            let shipment: Value = response.json().await.unwrap();
            assert_eq!(shipment["status"], status);
            assert_eq!(statuses(&shipment).len(), expected_history, "{status}");
        }
        // Delivered cannot be cancelled, only returned; returned is final.
        expect_problem(shipping.event(tracking, "cancelled").await, 409).await;
        assert_eq!(
            shipping.event(tracking, "returned").await.status(),
            StatusCode::OK
        );
        for status in ["in_transit", "delivered", "cancelled", "label_created"] {
            expect_problem(shipping.event(tracking, status).await, 409).await;
        }
        let page: Value = shipping.track(tracking, None).await.json().await.unwrap();
        assert_eq!(page["status"], "returned");
        assert_eq!(
            statuses(&page),
            [
                "label_created",
                "in_transit",
                "out_for_delivery",
                "in_transit",
                "out_for_delivery",
                "delivered",
                "returned"
            ]
        );
        let times: Vec<&str> = page["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

        // A fresh shipment can be cancelled before pickup, and then nothing else.
        let body = shipping
            .shipment_body(&Uuid::now_v7().to_string(), &Uuid::now_v7().to_string())
            .await;
        let created: Value = shipping
            .post("/internal/shipments", &body)
            .await
            .json()
            .await
            .unwrap();
        let second = created["tracking_number"].as_str().unwrap();
        assert_ne!(second, tracking);
        assert_eq!(
            shipping.event(second, "cancelled").await.status(),
            StatusCode::OK
        );
        expect_problem(shipping.event(second, "in_transit").await, 409).await;
        // Status events never write to the outbox: only creation is announced so far.
        assert_eq!(shipping.count("outbox").await, 2);
    }
}

#[tokio::test]
async fn twenty_identical_retries_racing_create_one_shipment() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        let body = shipping
            .shipment_body(&Uuid::now_v7().to_string(), &Uuid::now_v7().to_string())
            .await;
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (client, url, body) = (shipping.client.clone(), shipping.url.clone(), body.clone());
            racers.spawn(async move {
                let response = client
                    .post(format!("{url}/internal/shipments"))
                    .header(HEADER, service_token("order", "shipping"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                (status, response.json::<Value>().await.unwrap())
            });
        }
        let results = racers.join_all().await;
        let created = results
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        let existing = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        assert_eq!((created, existing), (1, 19), "{results:?}");
        let tracking = &results[0].1["tracking_number"];
        assert!(
            results
                .iter()
                .all(|(_, b)| &b["tracking_number"] == tracking)
        );
        assert_eq!(shipping.counts().await, (1, 1, 1));
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        // One real shipment, so "nothing changed" is checked against something.
        let good = shipping
            .shipment_body(&Uuid::now_v7().to_string(), &Uuid::now_v7().to_string())
            .await;
        let created: Value = shipping
            .post("/internal/shipments", &good)
            .await
            .json()
            .await
            .unwrap();
        let tracking = created["tracking_number"].as_str().unwrap().to_owned();
        let before = shipping.counts().await;

        let with = |pointer: &str, value: Value| {
            let mut body = good.clone();
            body["order_id"] = json!(Uuid::now_v7());
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match body.pointer_mut(parent).unwrap() {
                Value::Object(object) => {
                    object.insert(key.to_owned(), value);
                }
                Value::Array(array) => array[key.parse::<usize>().unwrap()] = value,
                other => panic!("{pointer} is inside {other}"),
            }
            body.to_string()
        };
        let without = |field: &str| {
            let mut body = good.clone();
            body["order_id"] = json!(Uuid::now_v7());
            body["address"].as_object_mut().unwrap().remove(field);
            body.to_string()
        };
        let big = "x".repeat(100 * 1024);
        let shipments: Vec<(String, u16, &str)> = vec![
            (
                with("/address/country", json!("XX")),
                422,
                "address.country",
            ),
            (
                with("/address/country", json!("de")),
                422,
                "address.country",
            ),
            (with("/items", json!([])), 422, "items"),
            (
                with("/items/0/quantity", json!(0)),
                422,
                "items[0].quantity",
            ),
            (
                with("/items/1/quantity", json!(-3)),
                422,
                "items[1].quantity",
            ),
            (
                with("/items/0/quantity", json!(1.5)),
                422,
                "items[0].quantity",
            ),
            (
                with("/items/0/weight_grams", json!(0)),
                422,
                "items[0].weight_grams",
            ),
            (
                with("/items/1/product_id", json!(Uuid::from_u128(1))),
                422,
                "items[1].product_id",
            ),
            (
                with("/items/0/product_id", json!("kettle")),
                422,
                "items[0].product_id",
            ),
            (without("city"), 422, "city"),
            (without("line1"), 422, "line1"),
            (with("/address/name", json!("   ")), 422, "address.name"),
            (
                with("/address/line1", json!("x".repeat(201))),
                422,
                "address.line1",
            ),
            (
                with("/address/line2", json!("x".repeat(201))),
                422,
                "address.line2",
            ),
            (
                with("/address/postal_code", json!("1".repeat(21))),
                422,
                "address.postal_code",
            ),
            (with("/order_id", json!("not-a-uuid")), 422, "order_id"),
            (with("/user_id", json!(Uuid::nil())), 422, "user_id"),
            (with("/quote/amount/amount", json!(1)), 409, "quote"),
            (
                with("/quote/amount/currency", json!("JPY")),
                422,
                "quote.amount.currency",
            ),
            (with("/quote/estimated_days", json!(1)), 409, "quote"),
            (with("/address/phone", json!("555")), 422, "phone"),
            (with("/coupon", json!("FREE")), 422, "coupon"),
            (with("/note", json!(big)), 413, ""),
            (r#"{"order_id": "#.to_owned(), 400, ""),
        ];
        let quotes: Vec<(String, u16, &str)> = vec![
            (
                json!({"items": items(), "address": address("ZZ"), "currency": "EUR"}).to_string(),
                422,
                "address.country",
            ),
            (
                json!({"items": [], "address": address("DE"), "currency": "EUR"}).to_string(),
                422,
                "items",
            ),
            (
                json!({"items": [{"product_id": Uuid::now_v7(), "quantity": 0}], "address": address("DE"), "currency": "EUR"}).to_string(),
                422,
                "items[0].quantity",
            ),
            (
                json!({"items": items(), "address": address("DE"), "currency": "eur"}).to_string(),
                422,
                "currency",
            ),
            (
                json!({"items": items(), "address": address("DE")}).to_string(),
                422,
                "currency",
            ),
            (
                json!({"items": items(), "address": address("DE"), "currency": "EUR", "express": true}).to_string(),
                422,
                "express",
            ),
        ];
        for (path, cases) in [
            ("/internal/shipments", shipments),
            ("/internal/quotes", quotes),
        ] {
            for (body, status, field) in cases {
                let problem =
                    expect_problem(shipping.post_raw(path, body.clone()).await, status).await;
                let named = problem.errors.iter().any(|e| e.field == field)
                    || problem
                        .detail
                        .as_deref()
                        .unwrap_or_default()
                        .contains(field);
                assert!(named, "{status} for {body:.160} names {field}: {problem:?}");
            }
        }

        // Tracking numbers that are not ones, and ones that do not exist.
        for bad in [
            "SHP-1234",
            "shp-aaaa-aaaa-aaaa-aaaa",
            "SHP-AAAA-AAAA-AAAA-AAA0",
        ] {
            let problem = expect_problem(shipping.track(bad, None).await, 404).await;
            assert!(problem.detail.unwrap().contains("tracking_number"));
            expect_problem(shipping.event(bad, "in_transit").await, 404).await;
        }
        let unknown = shop_shipping::domain::tracking_number([0; 10]);
        expect_problem(shipping.track(&unknown, None).await, 404).await;
        expect_problem(shipping.event(&unknown, "in_transit").await, 404).await;
        // Status events: unknown statuses and fields.
        let path = format!("/internal/shipments/{tracking}/events");
        for (body, field) in [
            (json!({"status": "lost"}), "status"),
            (json!({"status": "in_transit", "at": "now"}), "at"),
            (json!({}), "status"),
        ] {
            let problem = expect_problem(shipping.post(&path, &body).await, 422).await;
            assert!(problem.detail.unwrap().contains(field), "{body}");
        }
        // A malformed caller identity is refused rather than treated as anonymous.
        expect_problem(
            shipping.track(&tracking, Some(("not-a-uuid", ""))).await,
            401,
        )
        .await;

        assert_eq!(shipping.counts().await, before, "nothing changed");
        let unchanged: Value = shipping.track(&tracking, None).await.json().await.unwrap();
        assert_eq!(unchanged["status"], "label_created");
        assert_eq!(statuses(&unchanged).len(), 1);
    }
}

#[tokio::test]
async fn racing_status_events_move_a_shipment_once() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        let create = || async {
            let body = shipping
                .shipment_body(&Uuid::now_v7().to_string(), &Uuid::now_v7().to_string())
                .await;
            let created: Value = shipping
                .post("/internal/shipments", &body)
                .await
                .json()
                .await
                .unwrap();
            created["tracking_number"].as_str().unwrap().to_owned()
        };
        // Ten copies of one carrier event: one move, one history entry.
        let tracking = create().await;
        let mut copies = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (client, url) = (shipping.client.clone(), shipping.url.clone());
            let path = format!("{url}/internal/shipments/{tracking}/events");
            copies.spawn(async move {
                client
                    .post(path)
                    .header(HEADER, service_token("carrier", "shipping"))
                    .json(&json!({"status": "in_transit"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
        }
        assert!(copies.join_all().await.iter().all(|s| *s == StatusCode::OK));
        let page: Value = shipping.track(&tracking, None).await.json().await.unwrap();
        assert_eq!(statuses(&page), ["label_created", "in_transit"]);

        // Pickup racing a cancellation: exactly one of them happens.
        let tracking = create().await;
        let (picked_up, cancelled) = tokio::join!(
            shipping.event(&tracking, "in_transit"),
            shipping.event(&tracking, "cancelled")
        );
        let mut outcomes = [picked_up.status().as_u16(), cancelled.status().as_u16()];
        outcomes.sort();
        assert_eq!(outcomes, [200, 409]);
        let page: Value = shipping.track(&tracking, None).await.json().await.unwrap();
        assert_eq!(statuses(&page).len(), 2, "{page}");
    }
}

/// The built service (as `shop serve` runs it) relays `shipment.created` to a consumer.
#[tokio::test]
async fn shipment_created_reaches_a_consumer() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let sink = EventSink::start("audit").await;
        let bus = local_bus(vec![sink.peer()]);
        let runtime = shop_events::testing::runtime_with_bus("shipping", &db.url, bus);
        let service = shop_shipping::build(&runtime, shop_shipping::Settings::default())
            .await
            .unwrap();
        let shipping = Shipping(TestService::serve(service, &runtime.metrics, &db.url).await);
        let (order_id, owner) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
        let body = shipping.shipment_body(&order_id, &owner).await;
        let response = shipping.post("/internal/shipments", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.unwrap();

        let event = sink
            .wait_for("shipment.created", std::time::Duration::from_secs(10))
            .await;
        assert_eq!(event.source, "shipping");
        assert_eq!(event.data["version"], 1);
        assert_eq!(event.data["order_id"], order_id.as_str());
        assert_eq!(event.data["user_id"], owner.as_str());
        assert_eq!(event.data["tracking_number"], created["tracking_number"]);
        assert!(
            !event.data.to_string().contains("Lovelace"),
            "no name in events"
        );
        assert_eq!(sink.events().len(), 1);
    }
}

#[tokio::test]
async fn a_tracking_number_taken_already_is_drawn_again() {
    use shop_shipping::storage::{CreateOutcome, NUMBER_ATTEMPTS, Store};
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let shipping = start(&db).await;
        let store = Store::new(shipping.db.clone());
        let request = |body: Value| -> shop_contracts::shipping::CreateShipment {
            serde_json::from_value(body).unwrap()
        };
        let user = Uuid::new_v4().to_string();
        let taken = "SH-TAKEN0000000000".to_owned();
        let first = request(
            shipping
                .shipment_body(&Uuid::now_v7().to_string(), &user)
                .await,
        );
        let created = store
            .create_numbered(&first, || Ok(taken.clone()))
            .await
            .unwrap();
        assert!(matches!(created, CreateOutcome::Created(ref s) if s.tracking_number == taken));

        // The next shipment draws the taken number first, then a free one.
        let second = request(
            shipping
                .shipment_body(&Uuid::now_v7().to_string(), &user)
                .await,
        );
        let mut numbers = [taken.clone(), "SH-FREE00000000000".to_owned()].into_iter();
        let created = store
            .create_numbered(&second, || Ok(numbers.next().unwrap()))
            .await
            .unwrap();
        assert!(
            matches!(created, CreateOutcome::Created(ref s) if s.tracking_number == "SH-FREE00000000000")
        );

        // Only taken numbers: it gives up after a bounded number of draws, having written nothing.
        let third = request(
            shipping
                .shipment_body(&Uuid::now_v7().to_string(), &user)
                .await,
        );
        let mut draws = 0;
        let failed = store
            .create_numbered(&third, || {
                draws += 1;
                Ok(taken.clone())
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(draws, NUMBER_ATTEMPTS);
        assert_eq!(shipping.count("shipments").await, 2);
    }
}
