//! The operator's HTTP endpoints: `/healthz` (the process is alive), `/readyz` (its cache of
//! ShopServices is synced) and `/metrics` (Prometheus: reconciles, failures, duration, the
//! work waiting: reconciles in flight and ShopServices known to need one, and the standard
//! `process_*` metrics).
//!
//! kube-runtime keeps its queue of scheduled reconciles private (kube-rs/kube#1917), so the
//! queue depth is measured from what the operator can see: the reconciles it is running, and
//! the ShopServices in its cache whose latest spec or deletion is not reconciled yet, or whose
//! last reconcile failed. See docs/decisions.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::FINALIZER;
use crate::crd::ShopService;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Why a ShopService is known to need a reconcile. Each counts under one reason only, the
/// first that applies in this order.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Pending {
    /// Its last reconcile failed: it waits out its backoff.
    Retrying,
    /// It is being deleted and its cleanup (under the finalizer) has not run yet.
    Deleting,
    /// Its current spec is not reconciled yet: `status.observedGeneration` lags
    /// `metadata.generation` (or there is no status).
    NewGeneration,
}

const PENDING_REASONS: [Pending; 3] =
    [Pending::Retrying, Pending::Deleting, Pending::NewGeneration];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PendingLabels {
    reason: Pending,
}

/// Why `shop` needs a reconcile, if it is known to; `failing` when its last reconcile failed.
pub fn pending_reason(shop: &ShopService, failing: bool) -> Option<Pending> {
    let finalizing = shop.metadata.deletion_timestamp.is_some()
        && shop
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|finalizer| finalizer == FINALIZER);
    let observed = shop.status.as_ref().and_then(|s| s.observed_generation);
    if failing {
        Some(Pending::Retrying)
    } else if finalizing {
        Some(Pending::Deleting)
    } else if shop.metadata.deletion_timestamp.is_none() && observed != shop.metadata.generation {
        Some(Pending::NewGeneration)
    } else {
        None
    }
}

/// How many ShopServices need a reconcile, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCounts {
    pub retrying: i64,
    pub deleting: i64,
    pub new_generation: i64,
}

impl PendingCounts {
    /// Counts `shops`; `failing` says whether a ShopService's last reconcile failed.
    pub fn of<'a>(
        shops: impl IntoIterator<Item = &'a ShopService>,
        failing: impl Fn(&ShopService) -> bool,
    ) -> PendingCounts {
        let mut counts = PendingCounts::default();
        for shop in shops {
            match pending_reason(shop, failing(shop)) {
                Some(Pending::Retrying) => counts.retrying += 1,
                Some(Pending::Deleting) => counts.deleting += 1,
                Some(Pending::NewGeneration) => counts.new_generation += 1,
                None => {}
            }
        }
        counts
    }

    fn get(&self, reason: Pending) -> i64 {
        match reason {
            Pending::Retrying => self.retrying,
            Pending::Deleting => self.deleting,
            Pending::NewGeneration => self.new_generation,
        }
    }
}

/// Counts the pending ShopServices when `/metrics` is read.
type PendingSource = Box<dyn Fn() -> PendingCounts + Send + Sync>;

/// Decrements the in-flight gauge when the reconcile ends, also when it is cancelled.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The operator's metrics and readiness. Shared by the controller and the HTTP server.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    in_flight: Gauge,
    pending: Family<PendingLabels, Gauge>,
    pending_source: OnceLock<PendingSource>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        // No registry prefix: the names below carry `shop_operator_`, so that the process
        // metrics keep their standard names (`process_resident_memory_bytes`, …).
        let mut registry = Registry::default();
        registry.register_collector(Box::new(shop_kit::metrics::ProcessCollector));
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        // 1 ms .. ~16 s: a reconcile is a handful of API calls.
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "shop_operator_reconciles",
            "Reconciles of a ShopService, by outcome",
            reconciles.clone(),
        );
        registry.register(
            "shop_operator_reconcile_duration_seconds",
            "Time to reconcile a ShopService",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "shop_operator_reconciles_in_flight",
            "Reconciles running now (at most the controller's concurrency)",
            in_flight.clone(),
        );
        let pending = Family::<PendingLabels, Gauge>::default();
        // Every reason from the start, so that a dashboard sees zeros rather than nothing.
        for reason in PENDING_REASONS {
            let _ = pending.get_or_create(&PendingLabels { reason });
        }
        registry.register(
            "shop_operator_shopservices_pending",
            "ShopServices in the operator's cache known to need a reconcile, by reason: NewGeneration (status.observedGeneration behind metadata.generation), Deleting (cleanup not run yet), Retrying (last reconcile failed, waiting out its backoff). Reconciles triggered by changes to children or peers and periodic resyncs are not counted; 0 on a standby replica",
            pending.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            in_flight,
            pending,
            pending_source: OnceLock::new(),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    pub fn record(&self, outcome: Outcome, took: Duration) {
        self.reconciles
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts a reconcile as running until the returned guard is dropped.
    pub fn reconcile_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Where `shopservices_pending` comes from once the controller runs: called on each
    /// scrape, so the value is never stale. Only the first source set is used.
    pub fn count_pending_with(&self, source: impl Fn() -> PendingCounts + Send + Sync + 'static) {
        let _ = self.pending_source.set(Box::new(source));
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        if let Some(source) = self.pending_source.get() {
            let counts = source();
            for reason in PENDING_REASONS {
                self.pending
                    .get_or_create(&PendingLabels { reason })
                    .set(counts.get(reason));
            }
        }
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)
            .expect("writing to a String cannot fail");
        body
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
    }
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the ShopService cache is not synced yet",
        )
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let body = metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::build::fixtures;
    use crate::crd::{Component, ShopServiceStatus};

    fn at_generation(generation: i64, observed: Option<i64>) -> ShopService {
        let mut shop = fixtures::shop("cart", Some(Component::Cart));
        shop.metadata.generation = Some(generation);
        shop.status = observed.map(|observed| ShopServiceStatus {
            observed_generation: Some(observed),
            ..Default::default()
        });
        shop
    }

    fn deleting(finalizers: &[&str]) -> ShopService {
        let mut shop = at_generation(2, Some(1));
        shop.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        shop.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        shop
    }

    #[test]
    fn a_shop_service_is_pending_until_its_generation_is_observed() {
        assert_eq!(
            pending_reason(&at_generation(1, None), false),
            Some(Pending::NewGeneration)
        );
        assert_eq!(
            pending_reason(&at_generation(3, Some(2)), false),
            Some(Pending::NewGeneration)
        );
        assert_eq!(pending_reason(&at_generation(3, Some(3)), false), None);
    }

    #[test]
    fn a_failure_counts_as_retrying_whatever_else_holds() {
        assert_eq!(
            pending_reason(&at_generation(3, Some(3)), true),
            Some(Pending::Retrying)
        );
        assert_eq!(
            pending_reason(&deleting(&[FINALIZER]), true),
            Some(Pending::Retrying)
        );
    }

    #[test]
    fn a_deletion_is_pending_only_while_the_operators_finalizer_holds_it() {
        assert_eq!(
            pending_reason(&deleting(&[FINALIZER]), false),
            Some(Pending::Deleting)
        );
        // Someone else's finalizer: nothing for the operator to do.
        assert_eq!(
            pending_reason(&deleting(&["example.org/other"]), false),
            None
        );
    }

    #[test]
    fn counts_add_up_by_reason() {
        let shops = [
            at_generation(1, None),
            at_generation(2, Some(1)),
            at_generation(2, Some(2)),
            deleting(&[FINALIZER]),
            at_generation(5, Some(5)),
        ];
        // The last one failed.
        let counts = PendingCounts::of(&shops, |shop| std::ptr::eq(shop, &shops[4]));
        assert_eq!(
            counts,
            PendingCounts {
                retrying: 1,
                deleting: 1,
                new_generation: 2,
            }
        );
    }

    fn sample(text: &str, name: &str) -> Option<i64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map(|value| value.trim().parse().unwrap())
    }

    #[test]
    fn the_scrape_reads_pending_counts_and_in_flight_reconciles() {
        let metrics = Metrics::default();
        let before = metrics.encode();
        assert_eq!(
            sample(
                &before,
                r#"shop_operator_shopservices_pending{reason="Retrying"}"#
            ),
            Some(0)
        );
        assert_eq!(
            sample(&before, "shop_operator_reconciles_in_flight"),
            Some(0)
        );

        metrics.count_pending_with(|| PendingCounts {
            retrying: 1,
            deleting: 2,
            new_generation: 3,
        });
        let first = metrics.reconcile_started();
        let second = metrics.reconcile_started();
        let during = metrics.encode();
        assert_eq!(
            sample(
                &during,
                r#"shop_operator_shopservices_pending{reason="Retrying"}"#
            ),
            Some(1)
        );
        assert_eq!(
            sample(
                &during,
                r#"shop_operator_shopservices_pending{reason="Deleting"}"#
            ),
            Some(2)
        );
        assert_eq!(
            sample(
                &during,
                r#"shop_operator_shopservices_pending{reason="NewGeneration"}"#
            ),
            Some(3)
        );
        assert_eq!(
            sample(&during, "shop_operator_reconciles_in_flight"),
            Some(2)
        );
        assert!(during.contains("# HELP shop_operator_shopservices_pending ShopServices"));

        assert!(
            during.contains("\nprocess_resident_memory_bytes "),
            "the process metrics, unprefixed: {during}"
        );
        drop(first);
        drop(second);
        assert_eq!(
            sample(&metrics.encode(), "shop_operator_reconciles_in_flight"),
            Some(0)
        );
    }

    #[test]
    fn every_metric_the_operator_dashboard_queries_is_served() {
        let metrics = Metrics::default();
        metrics.record(Outcome::Success, Duration::from_millis(20));
        metrics.record(Outcome::Failure, Duration::from_millis(30));
        let text = metrics.encode();
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../charts/shop-operator/dashboards/operator.json"
        ))
        .unwrap();
        let queried = shop_kit::testing::dashboards::queried_metrics(&dashboard);
        assert!(queried.len() >= 7, "{queried:?}");
        let missing =
            shop_kit::testing::dashboards::missing_metrics(&dashboard, std::slice::from_ref(&text));
        assert!(missing.is_empty(), "(metric, panels): {missing:?}");
        // And a misspelt name is caught.
        let misspelt: serde_json::Value = serde_json::from_str(&dashboard.to_string().replace(
            "shop_operator_reconciles_in_flight",
            "shop_operator_reconcile_in_flight",
        ))
        .unwrap();
        let missing = shop_kit::testing::dashboards::missing_metrics(&misspelt, &[text]);
        assert_eq!(missing.len(), 1, "{missing:?}");
    }
}
