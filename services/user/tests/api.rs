//! The user service over real HTTP, on SQLite and on PostgreSQL.

use std::num::NonZeroUsize;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_events::testing::{EventSink, local_bus};
use shop_kit::context::USER_ID_HEADER;
use shop_kit::testing::{self, TestDatabase, TestServer, expect_problem};

/// Short token lifetimes, a low login limit, and `boss@example.com` as the admin.
fn settings() -> shop_user::Settings {
    shop_user::Settings {
        admin_emails: ["boss@example.com".to_owned()].into(),
        access_ttl: Duration::from_secs(60),
        refresh_ttl: Duration::from_secs(3600),
        login_attempts_per_minute: 5,
        // Off, except in the test of it: the tests register many accounts from one address.
        registrations_per_minute: 0,
        password_hash_concurrency: NonZeroUsize::MIN,
        key_rotation: Default::default(),
    }
}

async fn start(db: &TestDatabase) -> TestServer {
    let runtime = shop_events::testing::runtime("user", &db.url);
    let service = shop_user::build(&runtime, settings())
        .await
        .expect("the user service builds");
    testing::spawn_service(service, &runtime.config, &runtime.metrics).await
}

async fn register(client: &Client, url: &str, email: &str) -> reqwest::Response {
    client
        .post(format!("{url}/api/users"))
        .json(&json!({"email": email, "password": "a long password", "name": "Ann Example"}))
        .send()
        .await
        .unwrap()
}

async fn login(client: &Client, url: &str, email: &str, password: &str) -> reqwest::Response {
    client
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn accounts_and_tokens() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let server = start(&db).await;
        let (client, url) = (Client::new(), server.url.as_str());

        let created = register(&client, url, "Ann@Example.com").await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let profile: Value = created.json().await.unwrap();
        assert_eq!(profile["email"], "ann@example.com");
        assert_eq!(profile["roles"], json!([]));
        let user_id = profile["id"].as_str().unwrap().to_owned();

        // The same email in another case is the same account.
        let problem = expect_problem(register(&client, url, "ann@EXAMPLE.com").await, 409).await;
        assert!(problem.detail.unwrap().contains("already exists"));

        // Wrong password and unknown account answer alike.
        let wrong = expect_problem(
            login(&client, url, "ann@example.com", "not the password").await,
            401,
        )
        .await;
        let unknown = expect_problem(
            login(&client, url, "nobody@example.com", "a long password").await,
            401,
        )
        .await;
        assert_eq!(wrong.detail, unknown.detail);

        let tokens: Value = login(&client, url, "ANN@example.com", "a long password")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 60);
        assert_eq!(
            tokens["access_token"].as_str().unwrap().split('.').count(),
            3
        );

        // Refresh tokens rotate: the first use works, a second use of the same token does not.
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let refreshed = client
            .post(format!("{url}/api/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap();
        assert_eq!(refreshed.status(), StatusCode::OK);
        let refreshed: Value = refreshed.json().await.unwrap();
        assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);
        let reused = client
            .post(format!("{url}/api/auth/refresh"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap();
        expect_problem(reused, 401).await;
        let garbage = client
            .post(format!("{url}/api/auth/refresh"))
            .json(&json!({"refresh_token": "x".repeat(500)}))
            .send()
            .await
            .unwrap();
        expect_problem(garbage, 401).await;

        // The profile needs the identity the gateway vouches for.
        expect_problem(
            client
                .get(format!("{url}/api/users/me"))
                .send()
                .await
                .unwrap(),
            401,
        )
        .await;
        let me: Value = client
            .get(format!("{url}/api/users/me"))
            .header(USER_ID_HEADER, &user_id)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["name"], "Ann Example");
        let updated = client
            .patch(format!("{url}/api/users/me"))
            .header(USER_ID_HEADER, &user_id)
            .json(&json!({"name": "Ann Renamed", "password": "another long password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), StatusCode::OK);
        assert_eq!(
            updated.json::<Value>().await.unwrap()["name"],
            "Ann Renamed"
        );
        // The new password signed the account out everywhere: earlier refresh tokens are dead.
        let after_change = client
            .post(format!("{url}/api/auth/refresh"))
            .json(&json!({"refresh_token": refreshed["refresh_token"]}))
            .send()
            .await
            .unwrap();
        expect_problem(after_change, 401).await;
        assert_eq!(
            login(&client, url, "ann@example.com", "another long password")
                .await
                .status(),
            StatusCode::OK
        );

        // Admins are named by configuration.
        let boss: Value = register(&client, url, "boss@example.com")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(boss["roles"], json!(["admin"]));

        // The JWKS publishes an Ed25519 key.
        let jwks: Value = client
            .get(format!("{url}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let server = start(&db).await;
        let (client, url) = (Client::new(), server.url.as_str());
        let post = |body: &'static str| {
            client
                .post(format!("{url}/api/users"))
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        expect_problem(post("{not json").await.unwrap(), 400).await;
        let missing = expect_problem(
            post(r#"{"email": "bo@example.com", "name": "Bo"}"#)
                .await
                .unwrap(),
            422,
        )
        .await;
        assert!(
            missing.detail.unwrap().contains("password"),
            "the problem names the missing field"
        );
        let wrong_type = client
            .post(format!("{url}/api/users"))
            .body(r#"{"email":"bo@example.com"}"#)
            .send()
            .await
            .unwrap();
        expect_problem(wrong_type, 415).await;
        let long_name = json!({"email": "bo@example.com", "password": "a long password", "name": "n".repeat(101)});
        let problem = expect_problem(
            client
                .post(format!("{url}/api/users"))
                .json(&long_name)
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(problem.errors[0].field, "name");
        let bad = json!({"email": "not-an-email", "password": "short", "name": ""});
        let problem = expect_problem(
            client
                .post(format!("{url}/api/users"))
                .json(&bad)
                .send()
                .await
                .unwrap(),
            422,
        )
        .await;
        assert_eq!(problem.errors.len(), 3);
        let sql = json!({"email": "x'; DROP TABLE users; --@example.com", "password": "a long password", "name": "Robert'); DROP TABLE users;--"});
        let sneaky = client
            .post(format!("{url}/api/users"))
            .json(&sql)
            .send()
            .await
            .unwrap();
        assert_eq!(
            sneaky.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "an email with spaces is not an email"
        );
        let huge = "x".repeat(100 * 1024);
        let too_big = client
            .post(format!("{url}/api/users"))
            .header("content-type", "application/json")
            .body(huge)
            .send()
            .await
            .unwrap();
        expect_problem(too_big, 413).await;

        // None of it created an account: the email is still free.
        assert_eq!(
            register(&client, url, "bo@example.com").await.status(),
            StatusCode::CREATED
        );
        // And the table survived the SQL-looking strings.
        assert_eq!(
            register(&client, url, "robert@example.com").await.status(),
            StatusCode::CREATED
        );
    }
}

#[tokio::test]
async fn login_attempts_are_limited_per_account() {
    let db = testing::sqlite();
    let server = start(&db).await;
    let (client, url) = (Client::new(), server.url.as_str());
    register(&client, url, "target@example.com").await;
    register(&client, url, "other@example.com").await;
    for _ in 0..5 {
        assert_eq!(
            login(&client, url, "target@example.com", "guess guess")
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // The sixth attempt within the minute is refused, even with the right password...
    expect_problem(
        login(&client, url, "target@example.com", "a long password").await,
        429,
    )
    .await;
    // ...while other accounts are unaffected.
    assert_eq!(
        login(&client, url, "other@example.com", "a long password")
            .await
            .status(),
        StatusCode::OK
    );
}

/// With one hash at a time (the default), concurrent registrations and logins queue for the
/// argon2 buffer; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_and_logins_all_succeed() {
    let db = testing::sqlite();
    let server = start(&db).await;
    let url = server.url.clone();
    let emails: Vec<String> = (0..6).map(|i| format!("crowd{i}@example.com")).collect();
    let mut registrations = tokio::task::JoinSet::new();
    for email in emails.clone() {
        let url = url.clone();
        registrations.spawn(async move { register(&Client::new(), &url, &email).await.status() });
    }
    for status in registrations.join_all().await {
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut logins = tokio::task::JoinSet::new();
    for (email, password) in emails
        .iter()
        .map(|e| (e.clone(), "a long password"))
        .chain([
            ("crowd0@example.com".into(), "not the password"),
            ("nobody@example.com".into(), "a long password"),
        ])
    {
        let url = url.clone();
        logins.spawn(async move {
            let status = login(&Client::new(), &url, &email, password).await.status();
            (email, password, status)
        });
    }
    let mut answered = 0;
    for (email, password, status) in logins.join_all().await {
        let expected = if password == "a long password" && email != "nobody@example.com" {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, expected, "{email} with {password:?}");
        answered += 1;
    }
    assert_eq!(answered, 8);
}

#[tokio::test]
async fn operational_endpoints() {
    let db = testing::sqlite();
    let server = start(&db).await;
    let client = Client::new();
    let url = &server.url;
    assert_eq!(
        client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let doc: Value = client
        .get(format!("{url}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/auth/login"]["post"].is_object(), "{doc}");
    register(&client, url, "metrics@example.com").await;
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"shop_http_requests_total{service="user",method="POST",route="/api/users",status="201"} 1"#),
        "{metrics}"
    );
    let response = client
        .get(format!("{url}/healthz"))
        .header("x-request-id", "trace-me")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "trace-me",
        "request ids are echoed"
    );
    expect_problem(
        client
            .get(format!("{url}/no/such/route"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}

/// Registration relays `user.registered` to a consumer; a refused registration sends nothing.
#[tokio::test]
async fn user_registered_reaches_a_consumer() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let sink = EventSink::start("notification").await;
        let bus = local_bus(vec![sink.peer()]);
        let runtime = shop_events::testing::runtime_with_bus("user", &db.url, bus);
        let service = shop_user::build(&runtime, settings()).await.unwrap();
        let server = testing::spawn_service(service, &runtime.config, &runtime.metrics).await;
        let client = Client::new();

        let created = register(&client, &server.url, "Bea@Example.com").await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let profile: Value = created.json().await.unwrap();
        expect_problem(register(&client, &server.url, "bea@example.com").await, 409).await;

        let event = sink
            .wait_for("user.registered", Duration::from_secs(10))
            .await;
        assert_eq!(event.source, "user");
        assert_eq!(
            event.data,
            json!({"version": 1, "user_id": profile["id"], "email": "bea@example.com", "name": "Ann Example"})
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            sink.events().len(),
            1,
            "the refused duplicate wrote no event"
        );
        assert!(!event.data.to_string().contains("password"));
    }
}

async fn refresh(client: &Client, url: &str, token: &Value) -> reqwest::Response {
    client
        .post(format!("{url}/api/auth/refresh"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
}

async fn logout(client: &Client, url: &str, token: &Value) -> StatusCode {
    client
        .post(format!("{url}/api/auth/logout"))
        .json(&json!({ "refresh_token": token }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn signing_out_and_a_replayed_refresh_token_revoke_the_sign_in() {
    for db in testing::all_backends().await {
        eprintln!("backend: {}", db.backend);
        let server = start(&db).await;
        let (client, url) = (Client::new(), server.url.clone());
        assert_eq!(
            register(&client, &url, "ann@example.com").await.status(),
            StatusCode::CREATED
        );
        let sign_in = || async {
            let tokens: Value = login(&client, &url, "ann@example.com", "a long password")
                .await
                .json()
                .await
                .unwrap();
            tokens["refresh_token"].clone()
        };
        let rotate = |token: Value| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = refresh(&client, &url, &token).await;
                assert_eq!(response.status(), StatusCode::OK);
                response.json::<Value>().await.unwrap()["refresh_token"].clone()
            }
        };

        // A replay seconds after the rotation (two tabs refreshing at once): refused, nothing
        // revoked.
        let first = sign_in().await;
        let second = rotate(first.clone()).await;
        expect_problem(refresh(&client, &url, &first).await, 401).await;
        let third = rotate(second).await;

        // A replay long after the rotation: the token was copied. Every token of that sign-in
        // is revoked, and only of that one.
        let other_device = sign_in().await;
        let database = shop_kit::Database::connect(&db.url).await.unwrap();
        sqlx::query("UPDATE refresh_tokens SET used = used - 3600 WHERE used > 1")
            .execute(database.pool())
            .await
            .unwrap();
        expect_problem(refresh(&client, &url, &first).await, 401).await;
        expect_problem(refresh(&client, &url, &third).await, 401).await;
        let other_device = rotate(other_device).await;

        // Signing out revokes the sign-in; the answer is the same for a token that is unknown.
        assert_eq!(
            logout(&client, &url, &other_device).await,
            StatusCode::NO_CONTENT
        );
        expect_problem(refresh(&client, &url, &other_device).await, 401).await;
        assert_eq!(
            logout(&client, &url, &json!("not-a-token")).await,
            StatusCode::NO_CONTENT
        );
        // A new sign-in still works.
        rotate(sign_in().await).await;
    }
}

/// Registrations are limited per client address: the last `X-Forwarded-For` entry (the one the
/// gateway appends), so an address a client writes in front of it buys nothing.
#[tokio::test]
async fn registrations_are_limited_per_client_address() {
    let db = testing::sqlite();
    let runtime = shop_events::testing::runtime("user", &db.url);
    let service = shop_user::build(
        &runtime,
        shop_user::Settings {
            registrations_per_minute: 2,
            ..settings()
        },
    )
    .await
    .expect("the user service builds");
    let server = testing::spawn_service(service, &runtime.config, &runtime.metrics).await;
    let client = Client::new();
    let register_from = |forwarded: &'static str, email: String| {
        client
            .post(format!("{}/api/users", server.url))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"email": email, "password": "a long password", "name": "Bot"}))
            .send()
    };
    for n in 0..2 {
        let created = register_from("203.0.113.7", format!("bot{n}@example.com"))
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    for (n, forged) in ["203.0.113.7", "198.51.100.1, 203.0.113.7"]
        .into_iter()
        .enumerate()
    {
        let refused = register_from(forged, format!("refused{n}@example.com"))
            .await
            .unwrap();
        let problem = expect_problem(refused, 429).await;
        assert!(
            problem.detail.unwrap().contains("from this address"),
            "{forged}"
        );
    }
    // Another address is not held back by the first one's.
    let other = register_from("203.0.113.8", "other@example.com".into())
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
}
