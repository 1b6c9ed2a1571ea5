//! The Grafana dashboards of the charts query only metrics the shop serves: the whole shop runs
//! as real processes, a checkout goes through (and a declined one fails) so lazily created
//! series exist, and every metric name in every panel's PromQL is looked up in the scraped
//! `/metrics` of the services. The operator's dashboard is checked in the operator's own tests.

mod common;

use common::stack::{Bus, DECLINED_CARD, GOOD_CARD, Stack, Storage};
use reqwest::StatusCode;
use serde_json::Value;
use shop::ServiceName;
use shop_kit::testing::dashboards::{missing_metrics, queried_metrics};

const SHOP_DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../charts/shop/dashboards/shop.json"
);

/// The value of the first sample of `metric` whose labels include every one of `labels`.
fn sample(exposition: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|label| set.split(',').any(|l| l == *label))
            .then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_shop_dashboard_queries_is_served() {
    let stack = Stack::start(Storage::Sqlite, Bus::Local)
        .await
        .expect("SQLite needs nothing");
    let customer = stack.customer("dashboards").await;
    let product = stack.products(1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack.set_cart(&customer, &product, 1).await;
    let key = uuid::Uuid::new_v4().to_string();
    let (status, order) = stack.checkout(&customer, &key, GOOD_CARD).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    // Another customer: the first one's cart is emptied by an event, some time after.
    let declined = stack.customer("declined").await;
    stack.set_cart(&declined, &product, 1).await;
    let (status, problem) = stack
        .checkout(&declined, &uuid::Uuid::new_v4().to_string(), DECLINED_CARD)
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{problem}");

    let mut expositions = Vec::new();
    for service in ServiceName::ALL.map(ServiceName::as_str) {
        let response = stack
            .client
            .get(format!("{}/metrics", stack.url(service)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{service}");
        let text = response.text().await.unwrap();
        // The constant label is never repeated by a metric's own.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(
                line.matches("service=").count(),
                1,
                "{service} serves {line}"
            );
        }
        expositions.push((service, text));
    }
    let exposition = |name: &str| {
        &expositions
            .iter()
            .find(|(service, _)| *service == name)
            .unwrap()
            .1
    };

    // What the checkout saga and the gateway counted.
    let order_metrics = exposition("order");
    let finished = "shop_order_sagas_finished_total";
    assert_eq!(
        sample(order_metrics, finished, &[r#"outcome="confirmed""#]),
        Some(1.0),
        "{order_metrics}"
    );
    assert_eq!(
        sample(
            order_metrics,
            finished,
            &[r#"outcome="failed""#, r#"reason="card_declined""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            order_metrics,
            "shop_upstream_breaker_state",
            &[r#"upstream="payment""#]
        ),
        Some(0.0),
        "closed"
    );
    assert!(
        sample(
            exposition("gateway"),
            "shop_gateway_upstream_responses_total",
            &[r#"upstream="order""#, r#"status="201""#]
        )
        .is_some_and(|n| n >= 1.0)
    );

    let texts: Vec<String> = expositions.into_iter().map(|(_, text)| text).collect();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(SHOP_DASHBOARD).unwrap()).unwrap();
    let queried = queried_metrics(&dashboard);
    assert!(
        queried.len() >= 15,
        "the parser finds the dashboard's metrics: {queried:?}"
    );
    let missing = missing_metrics(&dashboard, &texts);
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no service serves (metric, panels): {missing:?}"
    );

    // The check catches a misspelt name.
    let misspelt: Value = serde_json::from_str(
        &serde_json::to_string(&dashboard)
            .unwrap()
            .replace("shop_outbox_pending_events", "shop_outbox_pending_event"),
    )
    .unwrap();
    let missing = missing_metrics(&misspelt, &texts);
    assert_eq!(
        missing
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["shop_outbox_pending_event"]
    );
}
