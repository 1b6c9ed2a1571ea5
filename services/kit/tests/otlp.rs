//! Traces leave the service over OTLP/HTTP when an endpoint is configured.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use shop_kit::testing::{self, spawn};
use shop_kit::{Metrics, Service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_collector() {
    // A collector on loopback that keeps what is posted to the OTLP/HTTP traces path.
    let received: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let store = received.clone();
    let collector = spawn(Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            store.lock().unwrap().push((content_type, body));
            async { StatusCode::OK }
        }),
    ))
    .await;

    let telemetry = shop_kit::telemetry::init_with("otlp-test", Some(&collector.url));
    let service = Service {
        name: "otlp-test",
        router: Router::new().route("/hello", get(|| async { "hi" })),
        openapi: utoipa::openapi::OpenApi::default().into(),
        ready: shop_kit::server::Readiness::Always,
        tasks: Default::default(),
    };
    let config = testing::config("sqlite://unused");
    let app = testing::spawn_service(service, &config, &Metrics::new("otlp-test")).await;
    let response = reqwest::get(format!("{}/hello", app.url)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    telemetry.shutdown().await; // flushes the batch
    let received = received.lock().unwrap();
    assert!(!received.is_empty(), "the collector received no traces");
    assert!(
        received
            .iter()
            .all(|(content_type, _)| content_type == "application/x-protobuf")
    );
    // Protobuf keeps strings as UTF-8 bytes: the service name and the span name are in there.
    let payload: Vec<u8> = received
        .iter()
        .flat_map(|(_, body)| body.to_vec())
        .collect();
    let contains = |needle: &[u8]| payload.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"otlp-test"), "service.name is exported");
    assert!(contains(b"request"), "the request span is exported");
    assert!(contains(b"/hello"), "with its path attribute");
}
