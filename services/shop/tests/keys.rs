//! The user service's signing key rotates under a running shop: the new key is in the JWKS
//! before any token is signed with it, the gateway accepts tokens of the old and the new key
//! across the switch, and the old key leaves the JWKS only after the last token it signed has
//! expired.

mod common;

use std::time::{Duration, Instant};

use common::{SHOP_UP_PORTS, TempDir, free_ports, interrupt};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_contracts::auth::JWKS_PATH;

/// Seconds: a new key every 4, published 3 before it signs, tokens living 4.
const ROTATION: u64 = 4;
const PUBLISH_AHEAD: u64 = 3;
const ACCESS_TTL: u64 = 4;

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("a kid")
}

fn expiry_of(token: &str) -> i64 {
    let mut validation = jsonwebtoken::Validation::default();
    validation.insecure_disable_signature_validation();
    validation.validate_aud = false;
    validation.validate_exp = false;
    jsonwebtoken::decode::<shop_kit::auth::Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(&[]),
        &validation,
    )
    .unwrap()
    .claims
    .exp
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn the_signing_key_rotates_without_refusing_a_valid_token() {
    let data = TempDir::new();
    let port = free_ports(SHOP_UP_PORTS);
    let shop = common::shop_up(
        &data,
        port,
        &[],
        &[
            // The gateway refetches the JWKS every 150 route reloads: every 1.5 s here, well
            // inside the publication lead.
            ("SHOP_ROUTES_RELOAD_MS", "10".into()),
            ("SHOP_SIGNING_KEY_ROTATION_SECS", ROTATION.to_string()),
            (
                "SHOP_SIGNING_KEY_PUBLISH_AHEAD_SECS",
                PUBLISH_AHEAD.to_string(),
            ),
            ("SHOP_ACCESS_TOKEN_TTL_SECS", ACCESS_TTL.to_string()),
            // The test signs in every quarter second to see which key signs.
            ("SHOP_LOGIN_ATTEMPTS_PER_MINUTE", "1000".into()),
        ],
    )
    .await;
    let client = Client::new();
    let api = |path: &str| format!("http://127.0.0.1:{port}/api{path}");
    // The user service listens on the port after the gateway's.
    let jwks_url = format!("http://127.0.0.1:{}{JWKS_PATH}", port + 1);
    let kids = || async {
        let jwks: Value = client
            .get(&jwks_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let credentials = json!({"email": "keys@example.com", "password": "keys password"});
    let created = client
        .post(api("/users"))
        .json(&json!({"email": "keys@example.com", "password": "keys password", "name": "Kay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let login = || async {
        let response = client
            .post(api("/auth/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "signing in");
        let tokens: Value = response.json().await.unwrap();
        tokens["access_token"].as_str().unwrap().to_owned()
    };
    let me = |token: String| {
        let client = client.clone();
        let url = api("/users/me");
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    let first = login().await;
    let old_kid = kid_of(&first);
    assert!(kids().await.contains(&old_kid));
    assert_eq!(me(first).await, StatusCode::OK);

    // The next key appears in the JWKS, and is not signing yet.
    let deadline = Instant::now() + Duration::from_secs(ROTATION + 5);
    let new_kid = loop {
        let now = kids().await;
        if let Some(kid) = now.iter().find(|k| **k != old_kid) {
            assert!(
                now.contains(&old_kid),
                "the old key left with the new one's arrival"
            );
            break kid.clone();
        }
        assert!(Instant::now() < deadline, "no second key in the JWKS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let last_old = login().await;
    assert_eq!(
        kid_of(&last_old),
        old_kid,
        "a key signed as soon as it was published"
    );

    // Then it signs; the gateway takes tokens of both keys.
    let deadline = Instant::now() + Duration::from_secs(PUBLISH_AHEAD + 5);
    let mut last_old = last_old;
    let new = loop {
        let token = login().await;
        if kid_of(&token) == new_kid {
            break token;
        }
        last_old = token;
        assert!(Instant::now() < deadline, "the new key never signed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(me(new).await, StatusCode::OK, "a token of the new key");
    assert_eq!(
        me(last_old.clone()).await,
        StatusCode::OK,
        "a valid token of the old key"
    );

    // The old key goes, but not before the last token it signed has expired.
    let last_expiry = expiry_of(&last_old);
    let deadline = Instant::now() + Duration::from_secs(PUBLISH_AHEAD + ACCESS_TTL + 15);
    while kids().await.contains(&old_kid) {
        assert!(Instant::now() < deadline, "the old key was never retired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retired_at = unix_now();
    assert!(
        retired_at > last_expiry,
        "retired at {retired_at}, while a token it signed lived until {last_expiry}"
    );
    interrupt(shop).await;
}
