//! The kit's client against real local servers: request ids, breaker, retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use shop_kit::testing::{self, spawn};
use shop_kit::{Metrics, Service, Upstream, UpstreamError, UpstreamOptions};

fn options() -> UpstreamOptions {
    UpstreamOptions {
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        max_retries: 2,
        retry_budget: 0.2,
        breaker_failures: 3,
        breaker_open: Duration::from_millis(400),
        metrics: None,
        caller: None,
    }
}

/// The value of the sample `name{service="test",upstream="flaky"}` in `metrics`' exposition.
fn flaky_sample(metrics: &Metrics, name: &str) -> Option<f64> {
    let prefix = format!(r#"{name}{{service="test",upstream="flaky"}} "#);
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.parse().ok())
}

#[tokio::test]
async fn the_request_id_travels_to_the_next_service() {
    // Downstream echoes the request id it received.
    let downstream = spawn(Router::new().route(
        "/echo",
        get(|headers: HeaderMap| async move {
            headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    ))
    .await;
    let upstream = Upstream::new("echo", &downstream.url, &options()).unwrap();
    // Upstream service: a kit app whose handler calls downstream.
    let router = Router::new().route(
        "/call",
        get(move || {
            let upstream = upstream.clone();
            async move {
                let response = upstream
                    .send(upstream.request(axum::http::Method::GET, "/echo"))
                    .await
                    .unwrap();
                response.text().await.unwrap()
            }
        }),
    );
    let service = Service {
        name: "caller",
        router,
        openapi: utoipa::openapi::OpenApi::default().into(),
        ready: shop_kit::server::Readiness::Always,
        tasks: Default::default(),
    };
    let config = testing::config("sqlite://unused");
    let app = testing::spawn_service(service, &config, &Metrics::new("caller")).await;
    let client = reqwest::Client::new();
    let given = client
        .get(format!("{}/call", app.url))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.text().await.unwrap(), "abc-123");
    // Without one, the first service makes one up and passes it on.
    let made = client
        .get(format!("{}/call", app.url))
        .send()
        .await
        .unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.text().await.unwrap(), id);
    assert_eq!(id.len(), 36, "a UUID");
}

#[tokio::test]
async fn the_breaker_opens_on_failures_and_closes_after_recovery() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let server = spawn(Router::new().route(
        "/",
        get(move || {
            let ok = flag.load(Ordering::Relaxed);
            async move {
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        }),
    ))
    .await;
    let metrics = Metrics::new("test");
    let upstream = Upstream::new("flaky", &server.url, &options().reporting_to(&metrics)).unwrap();
    let state = |metrics: &Metrics| flaky_sample(metrics, "shop_upstream_breaker_state");
    assert_eq!(state(&metrics), Some(0.0), "closed from the start");
    for _ in 0..3 {
        let response = upstream
            .send(upstream.request(axum::http::Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let started = Instant::now();
    let open = upstream
        .send(upstream.request(axum::http::Method::GET, "/"))
        .await;
    assert!(
        matches!(open, Err(UpstreamError::CircuitOpen { .. })),
        "{open:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "an open breaker answers at once"
    );
    assert_eq!(state(&metrics), Some(2.0), "open");
    assert_eq!(
        flaky_sample(&metrics, "shop_upstream_breaker_rejected_calls_total"),
        Some(1.0)
    );

    healthy.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match upstream
            .send(upstream.request(axum::http::Method::GET, "/"))
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => break,
            _ => assert!(
                Instant::now() < deadline,
                "the breaker never let a trial call through"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state(&metrics), Some(0.0), "closed again");
}

#[tokio::test]
async fn a_deliberate_503_does_not_open_the_breaker() {
    let server =
        spawn(Router::new().route("/", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))).await;
    let upstream = Upstream::new("busy", &server.url, &options()).unwrap();
    for _ in 0..10 {
        let response = upstream
            .send(upstream.request(axum::http::Method::GET, "/"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test]
async fn refused_connections_are_reported_and_answered_requests_are_sent_once() {
    // A port with nothing listening: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = Upstream::new("gone", &format!("http://127.0.0.1:{port}"), &options()).unwrap();
    let result = upstream.get_json::<serde_json::Value>("/").await;
    assert!(
        matches!(result, Err(UpstreamError::Unreachable { .. })),
        "{result:?}"
    );

    // Only failed connections are retried: a request that got an answer, even a 500 to a POST,
    // reaches the service exactly once.
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let server = spawn(Router::new().route(
        "/",
        axum::routing::post(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            async { StatusCode::INTERNAL_SERVER_ERROR }
        }),
    ))
    .await;
    let upstream = Upstream::new("failing", &server.url, &options()).unwrap();
    let response = upstream
        .send(upstream.request(axum::http::Method::POST, "/"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        hits.load(Ordering::Relaxed),
        1,
        "an answered request is never sent again"
    );
}

#[test]
fn an_impossible_breaker_open_time_is_refused_not_a_panic() {
    for open in [Duration::ZERO, Duration::from_secs(31)] {
        let options = UpstreamOptions {
            breaker_open: open,
            ..options()
        };
        let err = Upstream::new("x", "http://127.0.0.1:1", &options).unwrap_err();
        assert!(
            err.to_string().contains("SHOP_UPSTREAM_BREAKER_OPEN_MS"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    let server = spawn(Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    ))
    .await;
    let upstream = Upstream::new("slow", &server.url, &options()).unwrap();
    let started = Instant::now();
    let result = upstream.get_json::<serde_json::Value>("/").await;
    assert!(
        matches!(result, Err(UpstreamError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the 500 ms request timeout holds"
    );
}
