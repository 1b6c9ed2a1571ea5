//! The cart service over real HTTP, with a real catalog beside it, on SQLite and on PostgreSQL.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_kit::context::USER_ID_HEADER;
use shop_kit::testing::{self, TestServer, expect_problem};
use shop_kit::{Metrics, Upstream, UpstreamOptions};

const ANN: &str = "0190f5c4-0000-7000-8000-0000000000a1";
const BOB: &str = "0190f5c4-0000-7000-8000-0000000000b2";

/// A catalog on SQLite and a cart on `cart_db`, wired together.
async fn start(
    cart_db: &testing::TestDatabase,
    catalog_db: &testing::TestDatabase,
) -> (TestServer, TestServer) {
    let runtime = shop_events::testing::runtime("catalog", &catalog_db.url);
    let catalog = testing::spawn_service(
        shop_catalog::build(&runtime, shop_catalog::Settings::default())
            .await
            .unwrap(),
        &runtime.config,
        &runtime.metrics,
    )
    .await;
    let config = testing::config(&cart_db.url);
    let metrics = Metrics::new("cart");
    let db = shop_kit::Database::connect_and_migrate(&cart_db.url, &shop_cart::MIGRATOR)
        .await
        .unwrap();
    let upstream = Upstream::new("catalog", &catalog.url, &UpstreamOptions::default()).unwrap();
    let cart = testing::spawn_service(shop_cart::service(db, upstream), &config, &metrics).await;
    (catalog, cart)
}

async fn products(client: &Client, catalog: &str, q: &str) -> Vec<Value> {
    let page: Value = client
        .get(format!("{catalog}/api/products?q={q}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_cart_from_empty_to_full_and_back() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let catalog_db = testing::sqlite();
        let (catalog, cart) = start(&db, &catalog_db).await;
        let client = Client::new();
        let url = &cart.url;
        let kettles = products(&client, &catalog.url, "kettle").await;
        let (a, b) = (&kettles[0], &kettles[1]);
        let put = |who: &'static str, id: &Value, quantity: Value| {
            client
                .put(format!("{url}/api/cart/items/{}", id.as_str().unwrap()))
                .header(USER_ID_HEADER, who)
                .json(&json!({ "quantity": quantity }))
                .send()
        };
        let read = |who: &'static str| {
            client
                .get(format!("{url}/api/cart"))
                .header(USER_ID_HEADER, who)
                .send()
        };

        let empty: Value = read(ANN).await.unwrap().json().await.unwrap();
        assert_eq!(empty, json!({"items": [], "total": null, "item_count": 0}));

        assert_eq!(
            put(ANN, &a["id"], json!(2)).await.unwrap().status(),
            StatusCode::OK
        );
        let cart_now: Value = put(ANN, &b["id"], json!(1))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let expected =
            2 * a["price"]["amount"].as_i64().unwrap() + b["price"]["amount"].as_i64().unwrap();
        assert_eq!(
            cart_now["total"],
            json!({"amount": expected, "currency": "USD"})
        );
        assert_eq!(cart_now["item_count"], 3);
        // The answer is the cart as stored, lines in the order they were first added.
        let stored: Value = read(ANN).await.unwrap().json().await.unwrap();
        assert_eq!(cart_now, stored);

        // Setting a quantity replaces it.
        let cart_now: Value = put(ANN, &a["id"], json!(5))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(cart_now["item_count"], 6);
        assert_eq!(
            cart_now["items"][0]["line_total"]["amount"],
            5 * a["price"]["amount"].as_i64().unwrap()
        );
        let stored: Value = read(ANN).await.unwrap().json().await.unwrap();
        assert_eq!(cart_now, stored);

        // Carts are per caller.
        let bobs: Value = read(BOB).await.unwrap().json().await.unwrap();
        assert_eq!(bobs["item_count"], 0);

        let removed = client
            .delete(format!(
                "{url}/api/cart/items/{}",
                b["id"].as_str().unwrap()
            ))
            .header(USER_ID_HEADER, ANN)
            .send()
            .await
            .unwrap();
        assert_eq!(removed.json::<Value>().await.unwrap()["item_count"], 5);
        let cleared = client
            .delete(format!("{url}/api/cart"))
            .header(USER_ID_HEADER, ANN)
            .send()
            .await
            .unwrap();
        assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            read(ANN).await.unwrap().json::<Value>().await.unwrap()["item_count"],
            0
        );
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let catalog_db = testing::sqlite();
        let (catalog, cart) = start(&db, &catalog_db).await;
        let client = Client::new();
        let url = &cart.url;
        let item = products(&client, &catalog.url, "kettle").await[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let put_raw = |path: String, body: &'static str| {
            client
                .put(format!("{url}/api/cart/items/{path}"))
                .header(USER_ID_HEADER, ANN)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        assert_eq!(
            put_raw(item.clone(), r#"{"quantity": 1}"#)
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        let before: Value = client
            .get(format!("{url}/api/cart"))
            .header(USER_ID_HEADER, ANN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();

        for (body, status) in [
            (r#"{"quantity": 0}"#, 422),
            (r#"{"quantity": -3}"#, 422),
            (r#"{"quantity": 100}"#, 422),
            (r#"{"quantity": 9223372036854775807}"#, 422),
            (r#"{"quantity": 1e30}"#, 422),
            (r#"{"quantity": "two"}"#, 422),
            (r#"{}"#, 422),
            (r#"{"quantity": 1"#, 400),
        ] {
            expect_problem(put_raw(item.clone(), body).await.unwrap(), status).await;
        }
        let unknown = expect_problem(
            put_raw(uuid::Uuid::new_v4().to_string(), r#"{"quantity": 1}"#)
                .await
                .unwrap(),
            404,
        )
        .await;
        assert!(unknown.kind.ends_with("unknown-product"));
        expect_problem(
            put_raw("not-a-product".into(), r#"{"quantity": 1}"#)
                .await
                .unwrap(),
            404,
        )
        .await;
        let anonymous = client
            .put(format!("{url}/api/cart/items/{item}"))
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        expect_problem(anonymous, 401).await;
        let forged = client
            .get(format!("{url}/api/cart"))
            .header(USER_ID_HEADER, "admin")
            .send()
            .await
            .unwrap();
        expect_problem(forged, 401).await;

        let after: Value = client
            .get(format!("{url}/api/cart"))
            .header(USER_ID_HEADER, ANN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(before, after, "refused requests left the cart as it was");
    }
}
