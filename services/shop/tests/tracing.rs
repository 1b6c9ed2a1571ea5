//! Distributed tracing against a real Jaeger (tests/tracing/jaeger.sh): one checkout through the
//! gateway is one trace, across every service it calls, and the events it causes are consumed in
//! spans linked to it. Once on the local bus with every service exporting, once on NATS with the
//! gateway exporting nothing (it must pass the caller's context on unchanged).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::stack::{Bus, GOOD_CARD, Stack, Storage, checkout_body, eventually};
use reqwest::StatusCode;
use serde_json::Value;

/// Jaeger's query API and its OTLP/HTTP endpoint, or `None` (with a message) when the test
/// Jaeger is not running outside CI; under `CI=true` a missing Jaeger fails the test.
fn jaeger() -> Option<(String, String)> {
    match (
        std::env::var("SHOP_TEST_JAEGER_URL"),
        std::env::var("SHOP_TEST_JAEGER_OTLP_ENDPOINT"),
    ) {
        (Ok(query), Ok(otlp)) => Some((query, otlp)),
        _ => {
            assert!(
                !shop_kit::testing::in_ci(),
                "SHOP_TEST_JAEGER_URL / SHOP_TEST_JAEGER_OTLP_ENDPOINT are not set: under CI=true \
                 the tracing test must run (tests/run.sh starts Jaeger)"
            );
            eprintln!(
                "SKIPPED: no test Jaeger (eval \"$(tests/tracing/jaeger.sh start)\" or tests/run.sh)"
            );
            None
        }
    }
}

/// What every service gets: the exporter (unless `untraced`), JSON logs with the request spans'
/// fields, and batches sent within a fraction of a second.
fn traced_env(service: &str, untraced: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("SHOP_LOG_FORMAT", "json".to_owned()),
        // tower-http's "finished processing request" line: one log line per request, inside its span.
        ("SHOP_LOG", "info,tower_http=debug".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    if service != untraced {
        env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            std::env::var("SHOP_TEST_JAEGER_OTLP_ENDPOINT").unwrap(),
        ));
    }
    env
}

const ALL_TRACED: fn(&str) -> Vec<(&'static str, String)> = |s| traced_env(s, "");
const GATEWAY_UNTRACED: fn(&str) -> Vec<(&'static str, String)> = |s| traced_env(s, "gateway");

/// A `traceparent` of a new trace, sampled, as a client that traces would send; and its trace id.
fn new_traceparent() -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let span_id = &uuid::Uuid::new_v4().simple().to_string()[..16];
    (format!("00-{trace_id}-{span_id}-01"), trace_id)
}

/// The services with spans in `trace` (a trace of Jaeger's API).
fn services_of(trace: &Value) -> BTreeSet<String> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|span| processes[span["processID"].as_str()?]["serviceName"].as_str())
        .map(str::to_owned)
        .collect()
}

async fn jaeger_get(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// Spans of `service` named `operation` that link (Jaeger: a FOLLOWS_FROM reference) to `trace_id`.
async fn linked_spans(
    client: &reqwest::Client,
    jaeger: &str,
    service: &str,
    operation: &str,
    trace_id: &str,
) -> usize {
    let url = format!("{jaeger}/api/traces?service={service}&lookback=1h&limit=1000");
    let Some(found) = jaeger_get(client, &url).await else {
        return 0;
    };
    found["data"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|trace| trace["spans"].as_array().cloned().unwrap_or_default())
        .filter(|span| span["operationName"] == operation)
        .filter(|span| {
            span["references"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["refType"] == "FOLLOWS_FROM" && r["traceID"].as_str() == Some(trace_id))
        })
        .count()
}

/// Registers, fills a cart and checks out through the gateway under a trace of the test's own,
/// then asks Jaeger for that trace and for the consumers' linked spans.
async fn checkout_is_one_trace(stack: &Stack, jaeger: &str, expected: &[&str]) {
    let customer = stack.customer("traced").await;
    let product = &stack.products(1).await[0];
    let product_id = product["id"].as_str().unwrap();
    stack.set_cart(&customer, product_id, 1).await;

    let (traceparent, trace_id) = new_traceparent();
    let response = stack
        .client
        .post(stack.api("/orders"))
        .bearer_auth(&customer.token)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .header("traceparent", &traceparent)
        .json(&checkout_body(GOOD_CARD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "CONFIRMED", "{order}");

    let client = &stack.client;
    let url = format!("{jaeger}/api/traces/{trace_id}");
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let trace = eventually(
        "the checkout's trace holds every service's spans",
        Duration::from_secs(30),
        || async {
            let found = jaeger_get(client, &url).await?;
            let traces = found["data"].as_array()?;
            assert_eq!(traces.len(), 1, "one trace under {trace_id}");
            let trace = traces[0].clone();
            want.is_subset(&services_of(&trace)).then_some(trace)
        },
    )
    .await;
    let operations: BTreeSet<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["operationName"].as_str())
        .collect();
    for step in [
        "saga reserve",
        "saga quote",
        "saga charge",
        "saga commit",
        "saga ship",
    ] {
        assert!(
            operations.contains(step),
            "no {step} span in {operations:?}"
        );
    }

    // The events the checkout wrote are consumed in spans of their own traces, linked to it.
    for (service, operation) in [
        ("notification", "consume order.placed"),
        ("notification", "consume order.confirmed"),
        ("cart", "consume order.confirmed"),
    ] {
        eventually(
            &format!("{service}'s `{operation}` span links to the checkout"),
            Duration::from_secs(30),
            || async {
                (linked_spans(client, jaeger, service, operation, &trace_id).await > 0)
                    .then_some(())
            },
        )
        .await;
    }

    // Every log line of a traced request names its trace; the request id stays as it was.
    for service in ["gateway", "order"] {
        let log = stack.log(service);
        let line = log
            .lines()
            .find(|line| line.contains(&format!("\"trace_id\":\"{trace_id}\"")))
            .unwrap_or_else(|| panic!("no {service} log line names trace {trace_id}:\n{log}"));
        assert!(line.contains("\"request_id\":\""), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_is_one_trace_on_the_local_bus() {
    let Some((jaeger, _)) = jaeger() else { return };
    let stack = Stack::start_with(Storage::Sqlite, Bus::Local, ALL_TRACED)
        .await
        .unwrap();
    checkout_is_one_trace(
        &stack,
        &jaeger,
        &[
            "gateway",
            "order",
            "cart",
            "catalog",
            "inventory",
            "payment",
            "shipping",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_tracing_passes_the_trace_on_over_nats() {
    let Some((jaeger, _)) = jaeger() else { return };
    let Some(nats) = shop_kit::testing::nats() else {
        return;
    };
    let stack = Stack::start_with(Storage::Sqlite, Bus::Nats(nats), GATEWAY_UNTRACED)
        .await
        .unwrap();
    // No gateway spans: the caller's context reached the order service unchanged.
    checkout_is_one_trace(
        &stack,
        &jaeger,
        &[
            "order",
            "cart",
            "catalog",
            "inventory",
            "payment",
            "shipping",
        ],
    )
    .await;
}
