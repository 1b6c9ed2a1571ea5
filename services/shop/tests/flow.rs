//! A customer's path through the gateway of a whole shop started with `shop up`.

mod common;

use std::time::Duration;

use base64::Engine;
use common::{Process, SHOP_UP_PORTS, TempDir, free_ports, interrupt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_kit::auth::{AUDIENCE, Claims, ISSUER};
use shop_kit::testing::expect_problem;

struct Shop {
    process: Process,
    data: TempDir,
    url: String,
}

async fn start_shop() -> Shop {
    let data = TempDir::new();
    // One port per service of `shop up`, gateway first (see `port_of` in up.rs).
    let port = free_ports(SHOP_UP_PORTS);
    let process =
        common::shop_up(&data, port, &[], &[("SHOP_ROUTES_RELOAD_MS", "200".into())]).await;
    let url = format!("http://127.0.0.1:{port}");
    Shop { process, data, url }
}

/// A token like the user service's, but made here: signed with `pkcs8`, under `kid`.
fn forge(pkcs8: &[u8], kid: &str, sub: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = Claims {
        sub: sub.into(),
        roles: vec!["admin".into()],
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now - 3600,
        exp: now + exp_offset,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(pkcs8)).unwrap()
}

#[tokio::test]
async fn register_login_browse_and_fill_a_cart() {
    let shop = start_shop().await;
    let client = Client::new();
    let api = |path: &str| format!("{}/api{path}", shop.url);

    let created = client
        .post(api("/users"))
        .json(&json!({"email": "flow@example.com", "password": "flow password", "name": "Flo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let user_id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens: Value = client
        .post(api("/auth/login"))
        .json(&json!({"email": "flow@example.com", "password": "flow password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refreshed: Value = client
        .post(api("/auth/refresh"))
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = refreshed["access_token"].as_str().unwrap().to_owned();
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth(&token);

    let me: Value = auth(client.get(api("/users/me")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], user_id.as_str());

    let found: Value = client
        .get(api("/products?q=lantern"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lanterns = found["items"].as_array().unwrap();
    assert_eq!(lanterns.len(), 4);
    let categories: Value = client
        .get(api("/categories"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        categories
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["slug"] == "outdoors")
    );

    for (product, quantity) in [(&lanterns[0], 1), (&lanterns[1], 2), (&lanterns[0], 3)] {
        let set = auth(client.put(api(&format!(
            "/cart/items/{}",
            product["id"].as_str().unwrap()
        ))))
        .json(&json!({ "quantity": quantity }))
        .send()
        .await
        .unwrap();
        assert_eq!(set.status(), StatusCode::OK);
    }
    let cart: Value = auth(client.get(api("/cart")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["item_count"], 5);
    let total = 3 * lanterns[0]["price"]["amount"].as_i64().unwrap()
        + 2 * lanterns[1]["price"]["amount"].as_i64().unwrap();
    assert_eq!(cart["total"]["amount"], total);

    // `shop up` connects the services' events: the registration reaches the notification
    // service as a welcome message (the user service's outbox, the local bus, its consumer).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let notes: Value = auth(client.get(api("/notifications")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let subjects: Vec<&str> = notes["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["subject"].as_str())
            .collect();
        if subjects == ["Welcome to the shop"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no welcome message: {notes}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Shipment tracking is routed to the shipping service: its own 404, not the gateway's.
    let untracked = expect_problem(
        client
            .get(api("/shipments/SHP-AAAA-AAAA-AAAA-AAAA"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(
        untracked.detail.as_deref(),
        Some("there is no shipment SHP-AAAA-AAAA-AAAA-AAAA")
    );

    // Tokens the gateway must refuse.
    let db = shop_kit::Database::connect(&format!(
        "sqlite://{}",
        shop.data.0.join("user.db").display()
    ))
    .await
    .unwrap();
    let (kid, pkcs8): (String, String) = sqlx::query_as("SELECT kid, pkcs8 FROM signing_keys")
        .fetch_one(db.pool())
        .await
        .unwrap();
    let real_key = base64::engine::general_purpose::STANDARD
        .decode(pkcs8)
        .unwrap();
    let other_key =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let valid = forge(&real_key, &kid, &user_id, 600);
    let expired = forge(&real_key, &kid, &user_id, -60);
    let foreign = forge(other_key.as_ref(), &kid, &user_id, 600);
    let unknown_kid = forge(other_key.as_ref(), "some-other-key", &user_id, 600);
    let mut tampered = valid.clone();
    tampered.insert(
        tampered.len() - 3,
        if tampered.ends_with('A') { 'B' } else { 'A' },
    );

    let status_with = |token: String| {
        let client = client.clone();
        let url = api("/cart");
        async move { client.get(url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(
        status_with(valid).await.status(),
        StatusCode::OK,
        "the forging itself is sound"
    );
    let problem = expect_problem(status_with(expired).await, 401).await;
    assert!(problem.detail.unwrap().contains("expired"));
    expect_problem(status_with(foreign).await, 401).await;
    expect_problem(status_with(unknown_kid).await, 401).await;
    expect_problem(status_with(tampered).await, 401).await;
    expect_problem(status_with("not-a-jwt".into()).await, 401).await;
    let basic = client
        .get(api("/cart"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    expect_problem(basic, 401).await;
    // Identity headers from outside are dropped: without a token, the cart does not know you.
    let spoofed = client
        .get(api("/cart"))
        .header("x-shop-user-id", &user_id)
        .send()
        .await
        .unwrap();
    expect_problem(spoofed, 401).await;

    // The route table is reloaded without a restart.
    let unrouted = expect_problem(client.get(api("/extra")).send().await.unwrap(), 404).await;
    assert_eq!(
        unrouted.detail.as_deref(),
        Some("no service serves this path")
    );
    let routes_file = shop.data.0.join("routes.json");
    let mut routes: Value =
        serde_json::from_str(&std::fs::read_to_string(&routes_file).unwrap()).unwrap();
    let catalog_url = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "catalog")
        .unwrap()["upstream"]
        .clone();
    routes["routes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"prefix": "/api/extra", "service": "catalog", "upstream": catalog_url}));
    std::fs::write(&routes_file, routes.to_string()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let problem = expect_problem(client.get(api("/extra")).send().await.unwrap(), 404).await;
        if problem.detail.as_deref() == Some("no such route") {
            break; // answered by the catalog now
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new route was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ctrl-C (SIGINT) stops the whole shop cleanly.
    interrupt(shop.process).await;
}
