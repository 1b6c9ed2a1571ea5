//! The cart's event consumer on real databases (SQLite and PostgreSQL): `order.confirmed` takes
//! what was bought out of the buyer's cart, once.

use serde_json::{Value, json};
use shop_cart::events::{CONSUMER, handler};
use shop_cart::storage::Store;
use shop_events::Event;
use shop_events::consume::{Applied, HandleError, apply};
use shop_kit::testing;
use shop_kit::{Database, Money};
use uuid::Uuid;

const ANN: &str = "0190f5c4-0000-7000-8000-0000000000a1";
const BOB: &str = "0190f5c4-0000-7000-8000-0000000000b2";

fn product(n: u8) -> String {
    format!("0190f5c4-0000-7000-8000-0000000001{n:02}")
}

async fn put(store: &Store, user: &str, product_id: &str, quantity: i64) {
    let line = shop_cart::domain::line(
        product_id.to_owned(),
        format!("product {product_id}"),
        quantity,
        Money::new(1250, "EUR"),
    );
    store.set_line(user, &line).await.unwrap();
}

/// The cart as (product id, quantity) pairs, in product order.
async fn lines(store: &Store, user: &str) -> Vec<(String, i64)> {
    let mut lines: Vec<_> = store
        .cart(user)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    lines.sort();
    lines
}

fn confirmed(user: &str, items: &[(String, i64)]) -> Value {
    json!({
        "order_id": Uuid::now_v7(),
        "user_id": user,
        "items": items.iter().map(|(id, q)| json!({
            "product_id": id, "name": "x", "quantity": q,
            "unit_price": {"amount": 1250, "currency": "EUR"},
        })).collect::<Vec<_>>(),
        "total": {"amount": 1250, "currency": "EUR"},
        "tracking_number": "SHP-7KQ2-M4XA-PL3D-ZR6B",
    })
}

async fn processed(db: &Database) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM processed_events")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_confirmed_order_leaves_the_buyers_cart_once() {
    for test_db in testing::all_backends().await {
        eprintln!("backend: {}", test_db.backend);
        let db = shop_cart::open(&test_db.url).await.unwrap();
        let store = Store::new(db.clone());
        let (a, b, c, d) = (product(1), product(2), product(3), product(4));
        put(&store, ANN, &a, 2).await;
        put(&store, ANN, &b, 1).await;
        // Raised from 1 to 3 after checking out: 2 were added on top of what was bought.
        put(&store, ANN, &c, 3).await;
        put(&store, ANN, &d, 4).await;
        put(&store, BOB, &a, 2).await;
        put(&store, BOB, &c, 1).await;

        let event = Event::new(
            "order.confirmed",
            "order",
            1,
            confirmed(ANN, &[(a.clone(), 2), (b.clone(), 1), (c.clone(), 1)]),
        );
        let applied = apply(&db, CONSUMER, &handler(), &event).await.unwrap();
        assert_eq!(applied, Applied::Now);
        assert_eq!(
            lines(&store, ANN).await,
            vec![(c.clone(), 2), (d.clone(), 4)]
        );
        // Another user's cart with the same products is untouched.
        assert_eq!(
            lines(&store, BOB).await,
            vec![(a.clone(), 2), (c.clone(), 1)]
        );

        // Delivered again: nothing more is taken out.
        let again = apply(&db, CONSUMER, &handler(), &event).await.unwrap();
        assert_eq!(again, Applied::Already);
        assert_eq!(
            lines(&store, ANN).await,
            vec![(c.clone(), 2), (d.clone(), 4)]
        );

        // A product the cart no longer holds is fine (bought and already removed).
        let later = Event::new(
            "order.confirmed",
            "order",
            1,
            confirmed(BOB, &[(b, 5), (c, 1)]),
        );
        apply(&db, CONSUMER, &handler(), &later).await.unwrap();
        assert_eq!(lines(&store, BOB).await, vec![(a, 2)]);
        assert_eq!(processed(&db).await, 2);
    }
}

/// A line set again after the order was placed is what the customer wants now: the confirmation
/// of the earlier order leaves it alone, and takes out only the lines untouched since.
#[tokio::test]
async fn lines_changed_after_the_order_was_placed_are_kept() {
    for test_db in testing::all_backends().await {
        eprintln!("backend: {}", test_db.backend);
        let db = shop_cart::open(&test_db.url).await.unwrap();
        let store = Store::new(db.clone());
        let (a, b) = (product(1), product(2));
        put(&store, ANN, &a, 2).await;
        put(&store, ANN, &b, 1).await;
        let placed_at = shop_kit::now_rfc3339();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        // Bought 2 of `a`, then put 1 of `a` back in before the confirmation arrived.
        put(&store, ANN, &a, 1).await;

        let mut data = confirmed(ANN, &[(a.clone(), 2), (b.clone(), 1)]);
        data["placed_at"] = json!(placed_at);
        let event = Event::new("order.confirmed", "order", 1, data);
        apply(&db, CONSUMER, &handler(), &event).await.unwrap();
        assert_eq!(lines(&store, ANN).await, vec![(a, 1)]);
    }
}

#[tokio::test]
async fn other_events_are_ignored_and_bad_ones_rejected() {
    for test_db in testing::all_backends().await {
        eprintln!("backend: {}", test_db.backend);
        let db = shop_cart::open(&test_db.url).await.unwrap();
        let store = Store::new(db.clone());
        let a = product(1);
        put(&store, ANN, &a, 2).await;
        let items = [(a.clone(), 2)];

        // order.placed and order.failed leave the cart as it is (a failed checkout keeps it).
        for kind in ["order.placed", "order.failed", "user.registered"] {
            let event = Event::new(kind, "order", 1, confirmed(ANN, &items));
            assert_eq!(
                apply(&db, CONSUMER, &handler(), &event).await.unwrap(),
                Applied::Now
            );
        }
        assert_eq!(lines(&store, ANN).await, vec![(a.clone(), 2)]);
        let before = processed(&db).await;

        let mut wrong_user = confirmed(ANN, &items);
        wrong_user["user_id"] = json!("not-a-uuid");
        let mut zero = confirmed(ANN, &items);
        zero["items"][0]["quantity"] = json!(0);
        let mut no_items = confirmed(ANN, &items);
        no_items.as_object_mut().unwrap().remove("items");
        for event in [
            Event::new("order.confirmed", "order", 2, confirmed(ANN, &items)),
            Event::new("order.confirmed", "order", 1, wrong_user),
            Event::new("order.confirmed", "order", 1, zero),
            Event::new("order.confirmed", "order", 1, no_items),
        ] {
            let result = apply(&db, CONSUMER, &handler(), &event).await;
            assert!(
                matches!(result, Err(HandleError::Reject(_))),
                "{event:?} → {result:?}"
            );
        }
        // Rejected events change nothing and are not marked as processed.
        assert_eq!(lines(&store, ANN).await, vec![(a, 2)]);
        assert_eq!(processed(&db).await, before);
    }
}
