//! Fault isolation and graceful shutdown, with each service in its own process.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{SHOP_UP_PORTS, TempDir, free_ports, serve};
use nix::sys::signal::Signal;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use shop_kit::testing::expect_problem;

#[tokio::test]
async fn with_the_catalog_down_the_cart_still_reads_and_adding_fails_fast() {
    let dir = TempDir::new();
    let base = free_ports(4);
    let (gateway, user, catalog, cart) = (base, base + 1, base + 2, base + 3);
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let _user = serve("user", user, &dir, &[]).await;
    let mut catalog_process = serve("catalog", catalog, &dir, &[]).await;
    // A long upstream timeout: failing fast must come from the breaker and refused connections,
    // not from a short timeout.
    let _cart = serve(
        "cart",
        cart,
        &dir,
        &[
            ("CATALOG_URL", url(catalog)),
            ("SHOP_UPSTREAM_TIMEOUT_MS", "10000".into()),
        ],
    )
    .await;
    let routes = json!({"routes": [
        {"prefix": "/api/users", "service": "user", "upstream": url(user)},
        {"prefix": "/api/auth", "service": "user", "upstream": url(user)},
        {"prefix": "/api/products", "service": "catalog", "upstream": url(catalog)},
        {"prefix": "/api/cart", "service": "cart", "upstream": url(cart)},
    ]});
    let _gateway = serve(
        "gateway",
        gateway,
        &dir,
        &[("SHOP_ROUTES", routes.to_string()), ("USER_URL", url(user))],
    )
    .await;

    let client = Client::new();
    let api = |path: &str| format!("{}/api{path}", url(gateway));
    client
        .post(api("/users"))
        .json(&json!({"email": "iso@example.com", "password": "iso password", "name": "Iso"}))
        .send()
        .await
        .unwrap();
    let tokens: Value = client
        .post(api("/auth/login"))
        .json(&json!({"email": "iso@example.com", "password": "iso password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    let products: Value = client
        .get(api("/products?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (first, second) = (
        products["items"][0]["id"].as_str().unwrap(),
        products["items"][1]["id"].as_str().unwrap(),
    );
    let set = |id: &str| {
        client
            .put(api(&format!("/cart/items/{id}")))
            .bearer_auth(&token)
            .json(&json!({"quantity": 1}))
            .send()
    };
    assert_eq!(set(first).await.unwrap().status(), StatusCode::OK);

    catalog_process.signal(Signal::SIGKILL);
    catalog_process.wait(Duration::from_secs(5)).await;

    let cart_read = client
        .get(api("/cart"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let status = cart_read.status();
    let cart_read: Value = cart_read.json().await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "reading the cart does not need the catalog: {cart_read}"
    );
    assert_eq!(cart_read["item_count"], 1);
    for attempt in 0..8 {
        let started = Instant::now();
        let refused = set(second).await.unwrap();
        let took = started.elapsed();
        expect_problem(refused, 503).await;
        assert!(
            took < Duration::from_secs(2),
            "attempt {attempt} took {took:?}; the upstream timeout is 10 s"
        );
    }
    let browse = client.get(api("/products")).send().await.unwrap();
    expect_problem(browse, 503).await;
    // Readiness: the gateway stays in rotation; its aggregate view names what is down.
    let gateway_ready = client
        .get(format!("{}/readyz", url(gateway)))
        .send()
        .await
        .unwrap();
    assert_eq!(gateway_ready.status(), StatusCode::OK);
    let all = client
        .get(format!("{}/readyz/upstreams", url(gateway)))
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), StatusCode::SERVICE_UNAVAILABLE);
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["ready"], false);
    assert_eq!(all["services"]["cart"], "ready");
    assert_ne!(all["services"]["catalog"], "ready");
    assert_eq!(
        client
            .get(api("/cart"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // The catalog comes back; once the breaker lets a trial call through, adding works again.
    let _catalog_again = serve("catalog", catalog, &dir, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while set(second).await.unwrap().status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "the cart did not recover after the catalog returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sigterm_under_load_finishes_every_accepted_request() {
    let dir = TempDir::new();
    let port = free_ports(1);
    let mut catalog = serve("catalog", port, &dir, &[]).await;
    let url = format!("http://127.0.0.1:{port}/api/products?q=e&limit=100");
    let client = Client::new();
    let signalled_at: Arc<std::sync::OnceLock<Instant>> = Arc::default();

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, signalled_at) = (client.clone(), url.clone(), signalled_at.clone());
        workers.spawn(async move {
            let (mut ok, mut in_flight_at_signal, mut refused) = (0u32, 0u32, 0u32);
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let started = Instant::now();
                match client.get(&url).send().await {
                    Ok(response) => {
                        let status = response.status();
                        let body = response.bytes().await;
                        if status == StatusCode::OK && body.is_ok() {
                            ok += 1;
                            if signalled_at.get().is_some_and(|at| started < *at) {
                                in_flight_at_signal += 1;
                            }
                        } else {
                            failures.push(format!("status {status}, body read {:?}", body.err()));
                        }
                    }
                    // Once the listener is closed, new connections are refused: that is the
                    // expected end, not a failure.
                    Err(e) if e.is_connect() => {
                        refused += 1;
                        break;
                    }
                    Err(e) => failures.push(format!(
                        "{e:?} (started {:?} after the signal)",
                        signalled_at
                            .get()
                            .map(|at| started.saturating_duration_since(*at))
                    )),
                }
            }
            (ok, in_flight_at_signal, refused, failures)
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    signalled_at.set(Instant::now()).unwrap();
    catalog.signal(Signal::SIGTERM);
    // Waiting must not block the runtime: the clients keep running through the shutdown.
    let status = catalog.wait(Duration::from_secs(15)).await;

    let (mut ok, mut in_flight, mut failures) = (0, 0, Vec::new());
    while let Some(result) = workers.join_next().await {
        let (o, i, _refused, f) = result.unwrap();
        ok += o;
        in_flight += i;
        failures.extend(f);
    }
    assert!(
        status.success(),
        "the service exits cleanly after draining: {status}"
    );
    assert!(
        failures.is_empty(),
        "{} requests failed mid-flight: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 16, "the load ran ({ok} requests)");
    assert!(
        in_flight > 0,
        "requests in flight at SIGTERM completed ({in_flight})"
    );
}

#[tokio::test]
async fn the_gateway_limits_each_client() {
    let dir = TempDir::new();
    let base = free_ports(2);
    let _catalog = serve("catalog", base + 1, &dir, &[]).await;
    let routes = json!({"routes": [{"prefix": "/api/products", "service": "catalog", "upstream": format!("http://127.0.0.1:{}", base + 1)}]});
    let _gateway = serve(
        "gateway",
        base,
        &dir,
        &[
            ("SHOP_ROUTES", routes.to_string()),
            ("SHOP_RATE_LIMIT_PER_SECOND", "1".into()),
            ("SHOP_RATE_LIMIT_BURST", "5".into()),
        ],
    )
    .await;
    let client = Client::new();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = client
            .get(format!("http://127.0.0.1:{base}/api/products?limit=1"))
            .send()
            .await
            .unwrap();
        statuses.push((
            response.status(),
            response.headers().get("retry-after").cloned(),
        ));
    }
    let allowed = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    assert!(
        (5..=6).contains(&allowed),
        "a burst of 5 (plus at most one refill) passes: {statuses:?}"
    );
    let (status, retry_after) = statuses.last().unwrap();
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some(), "429 says when to retry");
}

#[tokio::test]
async fn migrate_brings_a_database_up_to_date_and_refuses_the_gateway() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.0.join("catalog.db").display());
    let mut migrate = common::Process::start(
        "migrate",
        &["migrate", "catalog"],
        &[("DATABASE_URL", db.clone())],
    );
    assert!(migrate.wait(Duration::from_secs(30)).await.success());
    let pool = shop_kit::Database::connect(&db).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(pool.pool())
            .await
            .unwrap();
    assert!(
        tables.contains(&"products".to_owned()) && tables.contains(&"_sqlx_migrations".to_owned()),
        "{tables:?}"
    );
    // Running it again is a no-op, not an error.
    let mut again =
        common::Process::start("migrate", &["migrate", "catalog"], &[("DATABASE_URL", db)]);
    assert!(again.wait(Duration::from_secs(30)).await.success());
    let mut gateway = common::Process::start("migrate", &["migrate", "gateway"], &[]);
    assert!(
        !gateway.wait(Duration::from_secs(30)).await.success(),
        "the gateway has no database to migrate"
    );
}

#[tokio::test]
async fn the_services_of_a_killed_shop_up_stop_too() {
    let data = TempDir::new();
    let port = free_ports(SHOP_UP_PORTS);
    let mut shop = common::shop_up(&data, port, &[], &[]).await;
    // No Ctrl-C for `shop up` to stop its services in order: it dies at once.
    shop.signal(Signal::SIGKILL);
    shop.wait(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for service_port in port..port + SHOP_UP_PORTS {
        while tokio::net::TcpStream::connect(("127.0.0.1", service_port))
            .await
            .is_ok()
        {
            assert!(
                Instant::now() < deadline,
                "port {service_port} still answers 30 s after shop up was killed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
