//! The payment service over real HTTP, on SQLite and on PostgreSQL.

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shop_contracts::identity::HEADER;
use shop_kit::testing::service_token;
use shop_kit::testing::{self, TestDatabase, TestService, expect_problem};
use sqlx::Row;
use uuid::Uuid;

const SUCCEEDS: &str = shop_contracts::test_cards::SUCCEEDS;
const DECLINED: &str = shop_contracts::test_cards::DECLINED;
const NO_FUNDS: &str = shop_contracts::test_cards::INSUFFICIENT_FUNDS;
/// Every full card number the tests send; none may be stored or answered.
const ALL_CARDS: [&str; 4] = [SUCCEEDS, DECLINED, NO_FUNDS, "5555555555554444"];
const TABLES: [&str; 3] = ["charges", "transactions", "idempotency_keys"];

struct Payment(TestService);

impl std::ops::Deref for Payment {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.0
    }
}

async fn start(db: &TestDatabase) -> Payment {
    Payment(TestService::start(db, &shop_payment::MIGRATOR, shop_payment::service).await)
}

fn key() -> String {
    Uuid::new_v4().to_string()
}

fn charge_body(order_id: &str, amount: i64, number: &str) -> Value {
    json!({
        "order_id": order_id,
        "amount": {"amount": amount, "currency": "EUR"},
        "card": {"number": number, "exp_month": 12, "exp_year": 2099, "cvc": "123"},
    })
}

/// A response's status and exact body text.
async fn read(response: Response) -> (StatusCode, String) {
    let status = response.status();
    let body = response.text().await.unwrap();
    for card in ALL_CARDS {
        assert!(
            !body.contains(card),
            "a response holds a card number: {body}"
        );
    }
    (status, body)
}

impl Payment {
    async fn charge_raw(&self, key: Option<&str>, body: String) -> Response {
        let mut request = self
            .client
            .post(format!("{}/internal/charges", self.url))
            .header(HEADER, service_token("order", "payment"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.unwrap()
    }

    async fn charge(&self, key: &str, body: &Value) -> Response {
        self.charge_raw(Some(key), body.to_string()).await
    }

    /// Charges `amount` on the succeeding card and returns the charge id.
    async fn charged(&self, amount: i64) -> String {
        let order_id = Uuid::now_v7().to_string();
        let response = self
            .charge(&key(), &charge_body(&order_id, amount, SUCCEEDS))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["charge_id"].as_str().unwrap().to_owned()
    }

    async fn refund(&self, key: &str, charge_id: &str, amount: i64, currency: &str) -> Response {
        self.client
            .post(format!("{}/internal/charges/{charge_id}/refunds", self.url))
            .header(HEADER, service_token("order", "payment"))
            .header("Idempotency-Key", key)
            .json(&json!({"amount": {"amount": amount, "currency": currency}}))
            .send()
            .await
            .unwrap()
    }

    async fn details(&self, charge_id: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/internal/charges/{charge_id}", self.url))
            .header(HEADER, service_token("order", "payment"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn of_order(&self, order_id: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/internal/charges?order_id={order_id}", self.url))
            .header(HEADER, service_token("order", "payment"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Every text value stored in the service's tables.
    async fn stored_text(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for table in TABLES {
            let rows = sqlx::query(&format!("SELECT * FROM {table}"))
                .fetch_all(self.db.pool())
                .await
                .unwrap();
            for row in rows {
                for i in 0..row.len() {
                    if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                        texts.push(text);
                    }
                }
            }
        }
        texts
    }
}

#[tokio::test]
async fn a_charge_succeeds_and_is_recorded() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let order_id = Uuid::now_v7().to_string();
        let (status, body) = read(
            pay.charge(&key(), &charge_body(&order_id, 1999, SUCCEEDS))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let created: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(created["status"], "succeeded");
        assert_eq!(created["order_id"], order_id.as_str());
        assert_eq!(
            created["amount"],
            json!({"amount": 1999, "currency": "EUR"})
        );
        assert_eq!(created["card"], json!({"brand": "visa", "last4": "4242"}));
        let charge_id = created["charge_id"].as_str().unwrap();

        let details = pay.details(charge_id).await;
        assert_eq!(details["status"], "succeeded");
        assert_eq!(details["refunded"], 0);
        assert_eq!(details["created_at"], created["created_at"]);
        let transactions = details["transactions"].as_array().unwrap();
        assert_eq!(transactions.len(), 1);
        assert_eq!(transactions[0]["type"], "charge");
        assert_eq!(transactions[0]["outcome"], "succeeded");
        assert_eq!(transactions[0]["amount"]["amount"], 1999);

        // Another valid card the simulator does not know succeeds too.
        let (status, body) = read(
            pay.charge(&key(), &charge_body(&order_id, 500, "5555555555554444"))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let listed = pay.of_order(&order_id).await;
        let items = listed["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], details);
        assert_eq!(items[1]["card"]["brand"], "mastercard");
        assert_eq!(
            pay.of_order(&Uuid::now_v7().to_string()).await["items"],
            json!([])
        );
        expect_problem(
            pay.client
                .get(format!("{}/internal/charges/{}", pay.url, Uuid::now_v7()))
                .header(HEADER, service_token("order", "payment"))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        assert_eq!(pay.count("charges").await, 2);
        assert_eq!(pay.count("transactions").await, 2);

        let openapi: Value = pay
            .client
            .get(format!("{}/openapi.json", pay.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for path in [
            "/internal/charges",
            "/internal/charges/{charge_id}",
            "/internal/charges/{charge_id}/refunds",
        ] {
            assert!(openapi["paths"][path].is_object(), "{path} is documented");
        }
    }
}

#[tokio::test]
async fn declines_are_business_outcomes_recorded_and_replayed() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        for (number, code) in [
            (DECLINED, "card_declined"),
            (NO_FUNDS, "insufficient_funds"),
        ] {
            let order_id = Uuid::now_v7().to_string();
            let k = key();
            let body = charge_body(&order_id, 2500, number);
            let first = pay.charge(&k, &body).await;
            assert_eq!(first.headers()["content-type"], "application/problem+json");
            let (status, text) = read(first).await;
            assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{text}");
            let problem: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(problem["code"], code);
            assert_eq!(problem["status"], 402);
            let charge_id = problem["charge_id"].as_str().unwrap().to_owned();

            // The same key and body: the same answer, byte for byte, and nothing charged again.
            let replay = read(pay.charge(&k, &body).await).await;
            assert_eq!(replay, (status, text.clone()));

            let details = pay.details(&charge_id).await;
            assert_eq!(details["status"], "failed");
            assert_eq!(details["failure_code"], code);
            assert_eq!(details["transactions"][0]["outcome"], code);
            assert_eq!(
                pay.of_order(&order_id).await["items"]
                    .as_array()
                    .unwrap()
                    .len(),
                1
            );

            // A failed charge has nothing to refund.
            let problem =
                expect_problem(pay.refund(&key(), &charge_id, 100, "EUR").await, 409).await;
            assert!(problem.kind.ends_with("charge-failed"), "{problem:?}");
        }
        assert_eq!(pay.count("charges").await, 2);
        assert_eq!(pay.count("transactions").await, 2);
    }
}

#[tokio::test]
async fn a_hundred_identical_requests_charge_once() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let order_id = Uuid::now_v7().to_string();
        let k = key();
        let body = charge_body(&order_id, 4200, SUCCEEDS).to_string();
        let started = std::time::Instant::now();
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (client, url, k, body) =
                (pay.client.clone(), pay.url.clone(), k.clone(), body.clone());
            racers.spawn(async move {
                let response = client
                    .post(format!("{url}/internal/charges"))
                    .header(HEADER, service_token("order", "payment"))
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", k)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (response.status(), response.text().await.unwrap())
            });
        }
        let answers = racers.join_all().await;
        eprintln!(
            "100 identical charges on {}: {:?}",
            db.backend,
            started.elapsed()
        );
        assert_eq!(answers.len(), 100);
        assert_eq!(answers[0].0, StatusCode::CREATED, "{}", answers[0].1);
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "every response is the first: {:?}",
            answers.iter().find(|a| **a != answers[0])
        );
        assert_eq!(pay.count("charges").await, 1);
        assert_eq!(pay.count("transactions").await, 1);
        assert_eq!(
            pay.of_order(&order_id).await["items"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn idempotency_keys_are_required_and_bound_to_one_request() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let order_id = Uuid::now_v7().to_string();
        let body = charge_body(&order_id, 1000, SUCCEEDS);

        let missing = expect_problem(pay.charge_raw(None, body.to_string()).await, 428).await;
        assert!(missing.detail.unwrap().contains("Idempotency-Key"));
        for bad in ["", "k".repeat(256).as_str(), "has space"] {
            expect_problem(pay.charge(bad, &body).await, 400).await;
        }
        assert_eq!(pay.count("charges").await, 0);

        let k = key();
        let (status, first) = read(pay.charge(&k, &body).await).await;
        assert_eq!(status, StatusCode::CREATED);
        // Same key, another amount or card: refused, and nothing charged.
        for other in [
            charge_body(&order_id, 1001, SUCCEEDS),
            charge_body(&order_id, 1000, "5555555555554444"),
            charge_body(&Uuid::now_v7().to_string(), 1000, SUCCEEDS),
        ] {
            let problem = expect_problem(pay.charge(&k, &other).await, 422).await;
            assert!(
                problem.kind.ends_with("idempotency-key-reused"),
                "{problem:?}"
            );
        }
        // The original is still replayed.
        assert_eq!(
            read(pay.charge(&k, &body).await).await,
            (StatusCode::CREATED, first.clone())
        );
        assert_eq!(pay.count("charges").await, 1);

        // Keys are scoped per endpoint: the charge's key is free for a refund.
        let charge_id = serde_json::from_str::<Value>(&first).unwrap()["charge_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            pay.refund(&k, &charge_id, 100, "EUR").await.status(),
            StatusCode::CREATED
        );
        let missing = pay
            .client
            .post(format!("{}/internal/charges/{charge_id}/refunds", pay.url))
            .header(HEADER, service_token("order", "payment"))
            .json(&json!({"amount": {"amount": 100, "currency": "EUR"}}))
            .send()
            .await
            .unwrap();
        expect_problem(missing, 428).await;
        expect_problem(pay.refund(&k, &charge_id, 200, "EUR").await, 422).await;
        assert_eq!(pay.details(&charge_id).await["refunded"], 100);
    }
}

#[tokio::test]
async fn partial_and_full_refunds_never_exceed_the_charge() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let charge_id = pay.charged(1000).await;

        let k = key();
        let (status, first) = read(pay.refund(&k, &charge_id, 300, "EUR").await).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let refund: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(refund["refunded_total"], 300);
        assert_eq!(refund["charge_id"], charge_id.as_str());
        // A retry refunds nothing more and answers the same.
        assert_eq!(
            read(pay.refund(&k, &charge_id, 300, "EUR").await).await,
            (status, first)
        );

        let problem = expect_problem(pay.refund(&key(), &charge_id, 701, "EUR").await, 409).await;
        assert!(
            problem.kind.ends_with("refund-exceeds-charge"),
            "{problem:?}"
        );
        // Another currency than the charge's: a conflict with the charge, naming the field.
        let problem = expect_problem(pay.refund(&key(), &charge_id, 100, "USD").await, 409).await;
        assert_eq!(problem.errors[0].field, "amount.currency");
        expect_problem(
            pay.refund(&key(), &Uuid::now_v7().to_string(), 100, "EUR")
                .await,
            404,
        )
        .await;

        let rest = pay.refund(&key(), &charge_id, 700, "EUR").await;
        assert_eq!(rest.status(), StatusCode::CREATED);
        assert_eq!(rest.json::<Value>().await.unwrap()["refunded_total"], 1000);
        expect_problem(pay.refund(&key(), &charge_id, 1, "EUR").await, 409).await;

        let details = pay.details(&charge_id).await;
        assert_eq!(details["refunded"], 1000);
        let kinds: Vec<(&str, i64, &str)> = details["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["type"].as_str().unwrap(),
                    t["amount"]["amount"].as_i64().unwrap(),
                    t["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("charge", 1000, "succeeded"),
                ("refund", 300, "succeeded"),
                ("refund", 700, "succeeded")
            ]
        );
        let times: Vec<&str> = details["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["created_at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    }
}

#[tokio::test]
async fn concurrent_refunds_never_exceed_the_charge() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let charge_id = pay.charged(1000).await;
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..25 {
            let (client, url, charge_id) = (pay.client.clone(), pay.url.clone(), charge_id.clone());
            racers.spawn(async move {
                client
                    .post(format!("{url}/internal/charges/{charge_id}/refunds"))
                    .header(HEADER, service_token("order", "payment"))
                    .header("Idempotency-Key", key())
                    .json(&json!({"amount": {"amount": 90, "currency": "EUR"}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            });
        }
        let statuses = racers.join_all().await;
        let refunded = statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count();
        let refused = statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count();
        assert_eq!((refunded, refused), (11, 14), "{statuses:?}");
        let details = pay.details(&charge_id).await;
        assert_eq!(details["refunded"], 990);
        assert_eq!(details["transactions"].as_array().unwrap().len(), 12);
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_records_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let order_id = Uuid::now_v7().to_string();
        let with_card = |card: Value| {
            json!({"order_id": order_id, "amount": {"amount": 100, "currency": "EUR"}, "card": card})
                .to_string()
        };
        let card = |number: &str, month: Value, year: Value, cvc: Value| {
            with_card(json!({"number": number, "exp_month": month, "exp_year": year, "cvc": cvc}))
        };
        let (year, month) = shop_payment::domain::this_month();
        let (last_month_year, last_month) = if month == 1 {
            (year - 1, 12)
        } else {
            (year, month - 1)
        };
        let big = "x".repeat(100 * 1024);
        let cases: Vec<(String, u16, &str)> = vec![
            (card("4242424242424241", json!(12), json!(2099), json!("123")), 422, "card.number"),
            (card("4242abcd42424242", json!(12), json!(2099), json!("123")), 422, "card.number"),
            (card("424242", json!(12), json!(2099), json!("123")), 422, "card.number"),
            (card(&format!("{SUCCEEDS}4242"), json!(12), json!(2099), json!("123")), 422, "card.number"),
            (card("", json!(12), json!(2099), json!("123")), 422, "card.number"),
            (card(SUCCEEDS, json!(13), json!(2099), json!("123")), 422, "card.exp_month"),
            (card(SUCCEEDS, json!(0), json!(2099), json!("123")), 422, "card.exp_month"),
            (card(SUCCEEDS, json!(12), json!(99), json!("123")), 422, "card.exp_year"),
            (card(SUCCEEDS, json!(12), json!(2020), json!("123")), 422, "card.exp_year"),
            (
                card(SUCCEEDS, json!(last_month), json!(last_month_year), json!("123")),
                422,
                if last_month_year == year { "card.exp_month" } else { "card.exp_year" },
            ),
            (card(SUCCEEDS, json!(12), json!(2099), json!("12")), 422, "card.cvc"),
            (card(SUCCEEDS, json!(12), json!(2099), json!("12345")), 422, "card.cvc"),
            (card(SUCCEEDS, json!(12), json!(2099), json!("12a")), 422, "card.cvc"),
            (
                with_card(json!({"number": SUCCEEDS.parse::<u64>().unwrap(), "exp_month": 12, "exp_year": 2099, "cvc": "123"})),
                422,
                "card.number",
            ),
            (
                with_card(json!({"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123", "name": "A"})),
                422,
                "name",
            ),
            (
                json!({"order_id": order_id, "amount": {"amount": 0, "currency": "EUR"}, "card": {"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}).to_string(),
                422,
                "amount.amount",
            ),
            (
                json!({"order_id": order_id, "amount": {"amount": -5, "currency": "EUR"}, "card": {"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}).to_string(),
                422,
                "amount.amount",
            ),
            (
                json!({"order_id": order_id, "amount": {"amount": 100, "currency": "eur"}, "card": {"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}).to_string(),
                422,
                "amount.currency",
            ),
            (
                json!({"order_id": order_id, "amount": {"amount": 100, "currency": "EURO"}, "card": {"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}).to_string(),
                422,
                "amount.currency",
            ),
            (
                json!({"order_id": "not-a-uuid", "amount": {"amount": 100, "currency": "EUR"}, "card": {"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}).to_string(),
                422,
                "order_id",
            ),
            (
                json!({"order_id": order_id, "amount": {"amount": 100, "currency": "EUR"}, "card": {"number": SUCCEEDS, "exp_month": 12, "exp_year": 2099, "cvc": "123"}, "note": big}).to_string(),
                413,
                "",
            ),
            (r#"{"order_id": "#.to_owned(), 400, ""),
        ];
        for (body, status, field) in cases {
            let response = pay.charge_raw(Some(&key()), body.clone()).await;
            let problem = expect_problem(response, status).await;
            let text = serde_json::to_string(&problem).unwrap();
            for number in ALL_CARDS {
                assert!(
                    !text.contains(number),
                    "a problem echoes the card number: {text}"
                );
            }
            let named = problem.errors.iter().any(|e| e.field == field)
                || problem
                    .detail
                    .as_deref()
                    .unwrap_or_default()
                    .contains(field);
            assert!(named, "{status} for {body:.160} names {field}: {problem:?}");
        }
        // Refunds: zero, negative, bad currency, unknown fields, a bad charge id.
        let charge_id = pay.charged(1000).await;
        for (amount, currency, field) in [
            (0, "EUR", "amount.amount"),
            (-1, "EUR", "amount.amount"),
            (1, "eu", "amount.currency"),
        ] {
            let problem =
                expect_problem(pay.refund(&key(), &charge_id, amount, currency).await, 422).await;
            assert_eq!(problem.errors[0].field, field);
        }
        let extra = pay
            .client
            .post(format!("{}/internal/charges/{charge_id}/refunds", pay.url))
            .header(HEADER, service_token("order", "payment"))
            .header("Idempotency-Key", key())
            .json(&json!({"amount": {"amount": 1, "currency": "EUR"}, "reason": "x"}))
            .send()
            .await
            .unwrap();
        assert!(
            expect_problem(extra, 422)
                .await
                .detail
                .unwrap()
                .contains("reason")
        );
        expect_problem(pay.refund(&key(), "not-a-uuid", 1, "EUR").await, 404).await;
        expect_problem(
            pay.client
                .get(format!("{}/internal/charges?order_id=nope", pay.url))
                .header(HEADER, service_token("order", "payment"))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;

        // Only the one good charge is recorded; no key was claimed by a refused request.
        assert_eq!(pay.count("charges").await, 1);
        assert_eq!(pay.count("transactions").await, 1);
        assert_eq!(pay.count("idempotency_keys").await, 1);
        assert_eq!(pay.details(&charge_id).await["refunded"], 0);
    }
}

#[tokio::test]
async fn no_card_number_or_cvc_is_stored() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let order_id = Uuid::now_v7().to_string();
        for number in ALL_CARDS {
            let mut body = charge_body(&order_id, 700, number);
            body["card"]["cvc"] = json!("9876");
            let (status, text) = read(pay.charge(&key(), &body).await).await;
            assert!(
                [StatusCode::CREATED, StatusCode::PAYMENT_REQUIRED].contains(&status),
                "{text}"
            );
        }
        let charge_id = pay.charged(700).await;
        read(pay.refund(&key(), &charge_id, 700, "EUR").await).await;
        read(
            pay.client
                .get(format!("{}/internal/charges?order_id={order_id}", pay.url))
                .header(HEADER, service_token("order", "payment"))
                .send()
                .await
                .unwrap(),
        )
        .await;

        let texts = pay.stored_text().await;
        // The scan reads real rows: brands and last fours are there.
        assert!(texts.iter().any(|t| t == "4242"), "{texts:?}");
        assert!(texts.iter().any(|t| t.contains("\"last4\":\"4444\"")));
        for text in &texts {
            for number in ALL_CARDS {
                assert!(
                    !text.contains(number),
                    "a stored value holds a card number: {text}"
                );
            }
            // Digits like the CVC's occur in ids and times; a stored CVC would be a value or JSON.
            assert!(
                text != "9876" && !text.contains("\"9876\"") && !text.contains("cvc"),
                "a stored value holds a CVC: {text}"
            );
        }
    }
}

/// Backdates the claim of idempotency key `key` by `age`.
async fn age_key(db: &shop_kit::Database, key: &str, age: std::time::Duration) {
    let claimed = shop_kit::db::rfc3339(time::OffsetDateTime::now_utc() - age);
    let updated = sqlx::query("UPDATE idempotency_keys SET claimed_at = $1 WHERE idem_key = $2")
        .bind(claimed)
        .bind(key)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1);
}

#[tokio::test]
async fn idempotency_keys_expire_after_the_retention_and_then_name_a_new_request() {
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let pay = start(&db).await;
        let (old, fresh) = (key(), key());
        for k in [&old, &fresh] {
            let body = charge_body(&Uuid::now_v7().to_string(), 1000, SUCCEEDS);
            assert_eq!(pay.charge(k, &body).await.status(), StatusCode::CREATED);
        }
        // The first key's request was 25 hours ago, the second's an hour ago.
        age_key(&pay.db, &old, DAY + std::time::Duration::from_secs(3600)).await;
        age_key(&pay.db, &fresh, std::time::Duration::from_secs(3600)).await;
        let store = shop_payment::storage::Store::new(pay.db.clone());
        assert_eq!(store.delete_expired_keys(DAY).await.unwrap(), 1);

        // The expired key names a new request: another order with it is charged, not refused.
        let other = charge_body(&Uuid::now_v7().to_string(), 500, SUCCEEDS);
        assert_eq!(pay.charge(&old, &other).await.status(), StatusCode::CREATED);
        // The key within the retention still binds its request.
        let problem = expect_problem(pay.charge(&fresh, &other).await, 422).await;
        assert!(problem.kind.ends_with("idempotency-key-reused"));
        assert_eq!(pay.count("charges").await, 3);
    }
}

#[tokio::test]
async fn the_service_deletes_expired_keys_by_itself() {
    let db = testing::sqlite();
    let settings = shop_payment::Settings {
        idempotency_retention: std::time::Duration::from_secs(3600),
        sweep_interval: std::time::Duration::from_millis(50),
    };
    let pay = Payment(
        TestService::start(&db, &shop_payment::MIGRATOR, move |db| {
            shop_payment::service_with(db, settings)
        })
        .await,
    );
    let k = key();
    let body = charge_body(&Uuid::now_v7().to_string(), 1000, SUCCEEDS);
    assert_eq!(pay.charge(&k, &body).await.status(), StatusCode::CREATED);
    assert_eq!(pay.count("idempotency_keys").await, 1);
    age_key(&pay.db, &k, std::time::Duration::from_secs(7200)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pay.count("idempotency_keys").await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper never deleted the expired key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(pay.count("charges").await, 1, "the charge itself is kept");
}
