//! The notification service on real databases (SQLite and PostgreSQL): events applied through
//! the events crate's consumer become recorded messages, the sender gets them afterwards, and each user
//! reads theirs over real HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_events::Event;
use shop_events::consume::{Applied, HandleError, apply};
use shop_kit::context::{USER_ID_HEADER, USER_ROLES_HEADER};
use shop_kit::testing::{self, TestDatabase, TestServer, expect_problem};
use shop_kit::{Database, Metrics};
use shop_notification::events::CONSUMER;
use shop_notification::sender::{Delivery, MAX_ATTEMPTS, Sender, send_due};
use shop_notification::storage::{Due, Store};
use shop_notification::{NotificationHandler, Settings};
use uuid::Uuid;

const ANN: &str = "0190f5c4-0000-7000-8000-0000000000a1";
const BOB: &str = "0190f5c4-0000-7000-8000-0000000000b2";
const CAROL: &str = "0190f5c4-0000-7000-8000-0000000000c3";
const ADMIN: &str = "0190f5c4-0000-7000-8000-0000000000ad";
const TRACKING: &str = "SHP-7KQ2-M4XA-PL3D-ZR6B";

/// A sender that fails its first `failures` calls, then records what it sent.
#[derive(Default)]
struct RecordingSender {
    failures: AtomicUsize,
    sent: Mutex<Vec<Due>>,
}

#[async_trait]
impl Sender for RecordingSender {
    async fn send(&self, message: &Due) -> anyhow::Result<Delivery> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            anyhow::bail!("the mail gateway answered 503");
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(Delivery::Sent)
    }
}

struct Notifications {
    _server: TestServer,
    url: String,
    db: Database,
    store: Store,
    handler: NotificationHandler,
    sender: Arc<RecordingSender>,
    client: Client,
}

/// The service with a recording sender whose background pass runs every `interval`.
async fn start_with(test_db: &TestDatabase, interval: Duration) -> Notifications {
    let db = shop_notification::open(&test_db.url).await.unwrap();
    let sender = Arc::new(RecordingSender::default());
    let config = testing::config(&test_db.url);
    let metrics = Metrics::new("notification");
    let service = shop_notification::service_with_sender(db.clone(), sender.clone(), interval);
    let server = testing::spawn_service(service, &config, &metrics).await;
    let settings = Settings {
        admin_emails: vec!["ops@shop.local".into(), "boss@shop.local".into()],
        ..Settings::default()
    };
    Notifications {
        url: server.url.clone(),
        _server: server,
        store: Store::new(db.clone()),
        db,
        handler: shop_notification::handler(&settings),
        sender,
        client: Client::new(),
    }
}

/// The dispatcher's background pass out of the way (an hour apart): tests send explicitly.
async fn start(test_db: &TestDatabase) -> Notifications {
    start_with(test_db, Duration::from_secs(3600)).await
}

fn money(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

fn items() -> Value {
    json!([
        {"product_id": Uuid::now_v7(), "name": "Storm Lantern", "quantity": 2, "unit_price": money(1999)},
        {"product_id": Uuid::now_v7(), "name": "Enamel Kettle", "quantity": 1, "unit_price": money(1251)},
    ])
}

fn registered(user: &str, email: &str, name: &str) -> Event {
    Event::new(
        "user.registered",
        "user",
        1,
        json!({"user_id": user, "email": email, "name": name}),
    )
}

fn placed(user: &str, order_id: Uuid) -> Event {
    Event::new(
        "order.placed",
        "order",
        1,
        json!({"order_id": order_id, "user_id": user, "items": items(), "total": money(5249)}),
    )
}

fn confirmed(user: &str, order_id: Uuid) -> Event {
    Event::new(
        "order.confirmed",
        "order",
        1,
        json!({"order_id": order_id, "user_id": user, "items": items(), "total": money(5249),
               "tracking_number": TRACKING}),
    )
}

fn failed(user: &str, order_id: Uuid) -> Event {
    Event::new(
        "order.failed",
        "order",
        1,
        json!({"order_id": order_id, "user_id": user, "reason_code": "insufficient_funds",
               "reason": "the card has insufficient funds"}),
    )
}

fn shipped(user: &str, order_id: Uuid) -> Event {
    Event::new(
        "shipment.created",
        "shipping",
        1,
        json!({"tracking_number": TRACKING, "order_id": order_id, "user_id": user,
               "status": "label_created", "items_count": 3, "country": "DE",
               "quote": {"amount": money(490), "service_level": "standard", "estimated_days": 2}}),
    )
}

fn stock_low(product_id: Uuid) -> Event {
    Event::new(
        "stock.low",
        "inventory",
        1,
        json!({"product_id": product_id, "available": 3, "threshold": 5}),
    )
}

impl Notifications {
    async fn apply(&self, event: &Event) -> Result<Applied, HandleError> {
        apply(&self.db, CONSUMER, &self.handler, event).await
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }

    /// (send_state, attempts, address, last_error) of the message for `event`.
    async fn state(&self, event: &Event) -> (String, i64, Option<String>, Option<String>) {
        sqlx::query_as(
            "SELECT send_state, attempts, address, last_error FROM notifications WHERE event_id = $1",
        )
        .bind(event.id.to_string())
        .fetch_one(self.db.pool())
        .await
        .unwrap()
    }

    async fn list_as(&self, user: &str, roles: &str, query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/notifications{query}", self.url))
            .header(USER_ID_HEADER, user)
            .header(USER_ROLES_HEADER, roles)
            .send()
            .await
            .unwrap()
    }

    async fn page(&self, user: &str, query: &str) -> Value {
        let response = self.list_as(user, "", query).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// Every message of `user`, newest first, following the cursor `limit` at a time.
    async fn all_pages(&self, user: &str, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut query = format!("?limit={limit}");
        loop {
            let page = self.page(user, &query).await;
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= limit);
            all.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("?limit={limit}&cursor={cursor}"),
                None => return all,
            }
        }
    }
}

/// The message recorded for `event`, as the API shows it to `user`.
async fn message_for(n: &Notifications, user: &str, event: &Event) -> Value {
    let all = n.all_pages(user, 100).await;
    let id: String = sqlx::query_scalar("SELECT id FROM notifications WHERE event_id = $1")
        .bind(event.id.to_string())
        .fetch_one(n.db.pool())
        .await
        .unwrap();
    all.into_iter()
        .find(|m| m["id"] == id.as_str())
        .expect("the message is listed")
}

#[tokio::test]
async fn each_event_becomes_its_message() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        let order_id = Uuid::now_v7();
        let order = order_id.to_string();

        let welcome = registered(ANN, "ann.lee@example.com", "Ann Lee");
        assert_eq!(n.apply(&welcome).await.unwrap(), Applied::Now);
        let message = message_for(&n, ANN, &welcome).await;
        assert_eq!(message["event_type"], "user.registered");
        assert_eq!(message["channel"], "email");
        assert_eq!(message["address"], "ann.lee@example.com");
        assert_eq!(message["subject"], "Welcome to the shop");
        assert!(
            message["body"]
                .as_str()
                .unwrap()
                .starts_with("Hello Ann Lee,")
        );

        let event = placed(ANN, order_id);
        n.apply(&event).await.unwrap();
        let message = message_for(&n, ANN, &event).await;
        let body = message["body"].as_str().unwrap();
        assert_eq!(
            message["subject"],
            format!("We received your order {order}")
        );
        assert_eq!(message["address"], "ann.lee@example.com");
        assert!(body.starts_with("Hello Ann Lee,"), "{body}");
        assert!(
            body.contains("2 × Storm Lantern at 19.99 EUR: 39.98 EUR"),
            "{body}"
        );
        assert!(
            body.contains("1 × Enamel Kettle at 12.51 EUR: 12.51 EUR"),
            "{body}"
        );
        assert!(body.contains("Total: 52.49 EUR"), "{body}");

        let event = confirmed(ANN, order_id);
        n.apply(&event).await.unwrap();
        let message = message_for(&n, ANN, &event).await;
        let body = message["body"].as_str().unwrap();
        assert_eq!(
            message["subject"],
            format!("Your order {order} is confirmed")
        );
        assert!(body.contains(&order), "{body}");
        assert!(body.contains("Total paid: 52.49 EUR"), "{body}");
        assert!(
            body.contains(&format!("tracking number is {TRACKING}")),
            "{body}"
        );

        let event = shipped(ANN, order_id);
        n.apply(&event).await.unwrap();
        let message = message_for(&n, ANN, &event).await;
        let body = message["body"].as_str().unwrap();
        assert_eq!(
            message["subject"],
            format!("Your order {order} is being shipped")
        );
        assert!(body.contains("(3 items) is ready to ship to DE"), "{body}");
        assert!(body.contains("within 2 working days"), "{body}");
        assert!(
            body.contains(&format!("Tracking number: {TRACKING}")),
            "{body}"
        );
        assert!(body.contains("Shipping: 4.90 EUR"), "{body}");

        let other_order = Uuid::now_v7();
        let event = failed(ANN, other_order);
        n.apply(&event).await.unwrap();
        let message = message_for(&n, ANN, &event).await;
        let body = message["body"].as_str().unwrap();
        assert_eq!(
            message["subject"],
            format!("Your order {other_order} could not be completed")
        );
        assert!(
            body.contains("Reason: the card has insufficient funds"),
            "{body}"
        );
        assert!(
            body.contains("insufficient funds. Please try another card"),
            "{body}"
        );
        assert!(body.contains("Nothing has been charged"), "{body}");

        // Low stock goes to the administrators, addressed to SHOP_ADMIN_EMAILS.
        let product = Uuid::now_v7();
        let event = stock_low(product);
        n.apply(&event).await.unwrap();
        let (_, _, address, _) = n.state(&event).await;
        assert_eq!(address.as_deref(), Some("ops@shop.local, boss@shop.local"));
        let admins: Value = n
            .list_as(ADMIN, "admin", "?audience=admins")
            .await
            .json()
            .await
            .unwrap();
        let items = admins["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["subject"], format!("Low stock: product {product}"));
        assert_eq!(items[0]["user_id"], Value::Null);
        assert!(items[0]["body"].as_str().unwrap().contains("3 available"));

        // Six messages, five of them Ann's; all pending until the sender has had them.
        assert_eq!(n.count("notifications").await, 6);
        assert_eq!(n.all_pages(ANN, 100).await.len(), 5);
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 6);
        let sent = n.sender.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 6);
        assert!(sent.iter().all(|m| !m.address.is_empty()));
        for message in n.all_pages(ANN, 100).await {
            assert_eq!(message["send_state"], "sent");
            assert!(message["sent_at"].is_string());
        }
        // Nothing is due any more: each message is sent once.
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn an_event_applied_twice_gives_one_message() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        n.apply(&registered(ANN, "ann@example.com", "Ann"))
            .await
            .unwrap();
        let event = confirmed(ANN, Uuid::now_v7());
        assert_eq!(n.apply(&event).await.unwrap(), Applied::Now);
        assert_eq!(n.apply(&event).await.unwrap(), Applied::Already);
        // Also under another consumer name (a renamed or second runner): one message per event.
        apply(&n.db, "notification-replay", &n.handler, &event)
            .await
            .unwrap();
        let rows: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE event_id = $1")
                .bind(event.id.to_string())
                .fetch_one(n.db.pool())
                .await
                .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(n.count("notifications").await, 2);
        // Concurrent duplicates: still one.
        let event = placed(ANN, Uuid::now_v7());
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (db, handler, event) = (n.db.clone(), n.handler.clone(), event.clone());
            racers.spawn(async move { apply(&db, CONSUMER, &handler, &event).await });
        }
        let mut now = 0;
        while let Some(result) = racers.join_next().await {
            if result.unwrap().unwrap() == Applied::Now {
                now += 1;
            }
        }
        assert_eq!(now, 1);
        assert_eq!(n.count("notifications").await, 3);
    }
}

#[tokio::test]
async fn a_message_for_an_unknown_recipient_is_kept_until_the_address_arrives() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        // The order's event overtook the registration's.
        let order = placed(CAROL, Uuid::now_v7());
        assert_eq!(n.apply(&order).await.unwrap(), Applied::Now);
        let (state, attempts, address, _) = n.state(&order).await;
        assert_eq!((state.as_str(), attempts, address), ("pending", 0, None));
        let listed = message_for(&n, CAROL, &order).await;
        assert!(listed["body"].as_str().unwrap().starts_with("Hello,\n"));
        assert_eq!(listed["address"], Value::Null);
        // Nowhere to send it yet.
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 0);

        n.apply(&registered(CAROL, "carol@example.com", "Carol"))
            .await
            .unwrap();
        let (_, _, address, _) = n.state(&order).await;
        assert_eq!(address.as_deref(), Some("carol@example.com"));
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 2);
        let sent = n.sender.sent.lock().unwrap().clone();
        assert!(sent.iter().all(|m| m.address == "carol@example.com"));
        assert_eq!(n.state(&order).await.0, "sent");
    }
}

#[tokio::test]
async fn bad_events_are_rejected_and_record_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        let order_id = Uuid::now_v7();
        let mut no_total = placed(ANN, order_id);
        no_total.data.as_object_mut().unwrap().remove("total");
        let mut bad_user = confirmed(ANN, order_id);
        bad_user.data["user_id"] = json!("ann");
        let mut bad_money = confirmed(ANN, order_id);
        bad_money.data["total"] = json!("52.49");
        let mut zero = placed(ANN, order_id);
        zero.data["items"][0]["quantity"] = json!(0);
        let mut no_version = registered(ANN, "ann@example.com", "Ann");
        no_version.data.as_object_mut().unwrap().remove("version");
        let mut v2 = failed(ANN, order_id);
        v2.data["version"] = json!(2);
        let mut not_an_object = shipped(ANN, order_id);
        not_an_object.data = json!([1, 2, 3]);
        for event in [
            no_total,
            bad_user,
            bad_money,
            zero,
            no_version,
            v2,
            not_an_object,
        ] {
            let result = n.apply(&event).await;
            assert!(
                matches!(result, Err(HandleError::Reject(_))),
                "{} {} → {result:?}",
                event.kind,
                event.data
            );
        }
        assert_eq!(n.count("notifications").await, 0);
        assert_eq!(n.count("recipients").await, 0);
        assert_eq!(n.count("processed_events").await, 0);

        // A type it does not handle is applied as a no-op.
        let other = Event::new("cart.updated", "cart", 9, json!({"anything": true}));
        assert_eq!(n.apply(&other).await.unwrap(), Applied::Now);
        assert_eq!(n.count("notifications").await, 0);
    }
}

#[tokio::test]
async fn each_user_reads_their_own_newest_first_page_by_page() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        let mut anns = Vec::new();
        for i in 0..7 {
            let event = if i % 2 == 0 {
                placed(ANN, Uuid::now_v7())
            } else {
                confirmed(ANN, Uuid::now_v7())
            };
            n.apply(&event).await.unwrap();
            anns.push(event.id.to_string());
            n.apply(&placed(BOB, Uuid::now_v7())).await.unwrap();
        }
        let event_ids: Vec<String> = {
            let mut ids = Vec::new();
            for m in n.all_pages(ANN, 3).await {
                let event_id: String =
                    sqlx::query_scalar("SELECT event_id FROM notifications WHERE id = $1")
                        .bind(m["id"].as_str().unwrap())
                        .fetch_one(n.db.pool())
                        .await
                        .unwrap();
                ids.push(event_id);
            }
            ids
        };
        anns.reverse();
        assert_eq!(event_ids, anns, "Ann's messages, newest first, each once");
        let first = n.page(ANN, "?limit=3").await;
        assert_eq!(first["items"].as_array().unwrap().len(), 3);
        assert!(first["next_cursor"].is_string());
        assert_eq!(n.page(ANN, "").await["items"].as_array().unwrap().len(), 7);
        assert_eq!(n.page(ANN, "?limit=7").await["next_cursor"], Value::Null);
        let bobs = n.all_pages(BOB, 100).await;
        assert_eq!(bobs.len(), 7);
        assert!(bobs.iter().all(|m| m["user_id"] == BOB));
        assert_eq!(
            n.page(CAROL, "").await,
            json!({"items": [], "next_cursor": null})
        );

        // Admins may read another user's; others may not.
        let as_admin: Value = n
            .list_as(ADMIN, "admin", &format!("?user_id={BOB}&limit=100"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(as_admin["items"].as_array().unwrap().len(), 7);
        expect_problem(n.list_as(ANN, "", &format!("?user_id={BOB}")).await, 403).await;
        expect_problem(n.list_as(ANN, "", "?audience=admins").await, 403).await;
        // Naming oneself is fine.
        let own: Value = n
            .list_as(ANN, "", &format!("?user_id={ANN}&limit=100"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(own["items"].as_array().unwrap().len(), 7);

        // No caller: 401.
        expect_problem(
            n.client
                .get(format!("{}/api/notifications", n.url))
                .send()
                .await
                .unwrap(),
            401,
        )
        .await;
        // Bad paging: 400.
        for query in [
            "?limit=0",
            "?limit=101",
            "?limit=-1",
            "?limit=ten",
            "?cursor=not-a-cursor",
            "?cursor=eyJ4IjoxfQ",
            "?user_id=not-a-uuid",
            "?audience=everyone",
        ] {
            expect_problem(n.list_as(ANN, "", query).await, 400).await;
        }

        let openapi: Value = n
            .client
            .get(format!("{}/openapi.json", n.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(openapi["paths"]["/api/notifications"]["get"].is_object());
    }
}

#[tokio::test]
async fn a_failed_send_keeps_the_message_and_is_tried_again() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        n.apply(&registered(ANN, "ann@example.com", "Ann"))
            .await
            .unwrap();
        let event = confirmed(ANN, Uuid::now_v7());
        n.apply(&event).await.unwrap();
        sqlx::query(
            "UPDATE notifications SET send_state = 'sent' WHERE event_type = 'user.registered'",
        )
        .execute(n.db.pool())
        .await
        .unwrap();

        n.sender.failures.store(1, Ordering::SeqCst);
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 0);
        let (state, attempts, _, error) = n.state(&event).await;
        assert_eq!((state.as_str(), attempts), ("pending", 1));
        assert!(error.unwrap().contains("503"));
        // Not due again before its back-off has passed.
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 0);

        // Time passes: the next pass sends it.
        let due_now = "UPDATE notifications SET next_attempt_at = '2000-01-01T00:00:00.000000Z' \
                       WHERE send_state = 'pending'";
        sqlx::query(due_now).execute(n.db.pool()).await.unwrap();
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 1);
        let (state, attempts, _, error) = n.state(&event).await;
        assert_eq!((state.as_str(), attempts, error), ("sent", 2, None));

        // A sender that keeps failing: given up after MAX_ATTEMPTS, still recorded and listed.
        let event = failed(ANN, Uuid::now_v7());
        n.apply(&event).await.unwrap();
        n.sender.failures.store(100, Ordering::SeqCst);
        for _ in 0..MAX_ATTEMPTS + 2 {
            sqlx::query(due_now).execute(n.db.pool()).await.unwrap();
            send_due(&n.store, n.sender.as_ref()).await.unwrap();
        }
        let (state, attempts, _, _) = n.state(&event).await;
        assert_eq!((state.as_str(), attempts), ("failed", MAX_ATTEMPTS));
        assert_eq!(message_for(&n, ANN, &event).await["send_state"], "failed");
    }
}

/// How many different messages `sent` holds.
fn distinct_ids(sent: &[Due]) -> usize {
    sent.iter()
        .map(|m| m.id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// One pass drains what is due, however many batches that takes: at 50 a pass and one pass per
/// interval, a shop confirming more than 100 orders a second fell further behind every second.
#[tokio::test]
async fn one_pass_sends_every_due_message_however_many_batches_that_takes() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start(&db).await;
        n.apply(&registered(ANN, "ann@example.com", "Ann"))
            .await
            .unwrap();
        for _ in 0..129 {
            n.apply(&placed(ANN, Uuid::now_v7())).await.unwrap();
        }
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 130);
        let sent = n.sender.sent.lock().unwrap().clone();
        assert_eq!(distinct_ids(&sent), 130, "each message sent once");
        assert!(sent.iter().all(|m| m.attempts == 1));
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT send_state, COUNT(*) FROM notifications GROUP BY send_state")
                .fetch_all(n.db.pool())
                .await
                .unwrap();
        assert_eq!(states, [("sent".to_owned(), 130)]);
        assert_eq!(send_due(&n.store, n.sender.as_ref()).await.unwrap(), 0);

        // Two dispatchers (two replicas) at once: each message goes to one of them.
        for _ in 0..130 {
            n.apply(&placed(ANN, Uuid::now_v7())).await.unwrap();
        }
        let (a, b) = tokio::join!(
            send_due(&n.store, n.sender.as_ref()),
            send_due(&n.store, n.sender.as_ref())
        );
        assert_eq!(a.unwrap() + b.unwrap(), 130);
        let sent = n.sender.sent.lock().unwrap().clone();
        assert_eq!(
            (sent.len(), distinct_ids(&sent)),
            (260, 260),
            "each message sent once"
        );
    }
}

#[tokio::test]
async fn the_background_dispatcher_sends_recorded_messages() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let n = start_with(&db, Duration::from_millis(20)).await;
        n.apply(&registered(ANN, "ann@example.com", "Ann"))
            .await
            .unwrap();
        let event = confirmed(ANN, Uuid::now_v7());
        n.apply(&event).await.unwrap();
        // Done when both are recorded as sent (the sender has them before the state is written).
        let started = std::time::Instant::now();
        loop {
            let sent: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE send_state = 'sent'")
                    .fetch_one(n.db.pool())
                    .await
                    .unwrap();
            if sent == 2 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the dispatcher did not send within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("sent by the dispatcher after {:?}", started.elapsed());
        assert_eq!(n.state(&event).await.0, "sent");
        assert_eq!(n.sender.sent.lock().unwrap().len(), 2);
        // Sent once, however many passes run.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(n.sender.sent.lock().unwrap().len(), 2);
    }
}

#[tokio::test]
async fn the_none_sender_records_and_skips() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let database = shop_notification::open(&db.url).await.unwrap();
        let store = Store::new(database.clone());
        let handler = shop_notification::handler(&Settings::default());
        apply(
            &database,
            CONSUMER,
            &handler,
            &registered(BOB, "bob@example.com", "Bob"),
        )
        .await
        .unwrap();
        // With no admin addresses, low stock is recorded but never sent anywhere.
        apply(&database, CONSUMER, &handler, &stock_low(Uuid::now_v7()))
            .await
            .unwrap();
        let none = shop_notification::sender::NoSender;
        assert_eq!(send_due(&store, &none).await.unwrap(), 1);
        let states: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT send_state, address FROM notifications ORDER BY event_type")
                .fetch_all(database.pool())
                .await
                .unwrap();
        assert_eq!(
            states,
            vec![
                ("pending".to_owned(), None),
                ("skipped".to_owned(), Some("bob@example.com".to_owned()))
            ]
        );
    }
}
