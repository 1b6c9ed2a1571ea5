//! The saga's metrics: how checkouts end, by reason, and how long each step takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use shop_kit::Metrics;

use crate::domain::{Step, reason};

/// Every reason an order can fail with (`domain::reason`); anything else counts as `other`, so
/// the label stays bounded whatever a downstream sends.
const REASONS: [&str; 9] = [
    reason::CARD_DECLINED,
    reason::INSUFFICIENT_FUNDS,
    reason::OUT_OF_STOCK,
    reason::PAYMENT_UNAVAILABLE,
    reason::UPSTREAM_UNAVAILABLE,
    reason::INVALID_CARD,
    reason::RESERVATION_LOST,
    reason::CHECKOUT_INTERRUPTED,
    reason::SHIPPING_FAILED,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `confirmed` or `failed`.
    outcome: &'static str,
    /// Why it failed; empty for a confirmed order.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    /// The step the saga was moving to (`reserved` … `shipped`), or `compensating`.
    step: &'static str,
}

type StepFamily = Family<StepLabels, Histogram, fn() -> Histogram>;

fn step_histogram() -> Histogram {
    // 1 ms .. ~16 s: a step is one or two calls to another service, bounded by their timeouts.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Unregistered by default (a service built by a test reports nowhere); see [`Self::register`].
#[derive(Clone, Debug)]
pub struct SagaMetrics {
    finished: Family<OutcomeLabels, Counter>,
    steps: StepFamily,
}

impl Default for SagaMetrics {
    fn default() -> Self {
        Self {
            finished: Family::default(),
            steps: StepFamily::new_with_constructor(step_histogram),
        }
    }
}

impl SagaMetrics {
    /// `shop_order_sagas_finished_total{outcome, reason}` (every outcome at 0 from the start, so
    /// a dashboard shows zeros rather than nothing) and `shop_order_saga_step_duration_seconds`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self::default();
        let _ = this.finished.get_or_create(&confirmed());
        for reason in REASONS {
            let _ = this.finished.get_or_create(&failed(reason));
        }
        metrics.register(
            "order_sagas_finished",
            "Checkout sagas that reached CONFIRMED or FAILED, by outcome and failure reason",
            this.finished.clone(),
        );
        metrics.register(
            "order_saga_step_duration_seconds",
            "Time to do one step of the checkout saga (its calls to other services), by the step it moves to; compensating: releasing and refunding",
            this.steps.clone(),
        );
        this
    }

    pub fn confirmed(&self) {
        self.finished.get_or_create(&confirmed()).inc();
    }

    /// A saga ended FAILED with `reason_code`.
    pub fn failed(&self, reason_code: Option<&str>) {
        let reason = REASONS
            .into_iter()
            .find(|known| Some(*known) == reason_code)
            .unwrap_or("other");
        self.finished.get_or_create(&failed(reason)).inc();
    }

    /// One step towards `to` took `seconds`.
    pub fn step(&self, to: Step, seconds: f64) {
        self.steps
            .get_or_create(&StepLabels { step: to.as_str() })
            .observe(seconds);
    }
}

fn confirmed() -> OutcomeLabels {
    OutcomeLabels {
        outcome: "confirmed",
        reason: "",
    }
}

fn failed(reason: &'static str) -> OutcomeLabels {
    OutcomeLabels {
        outcome: "failed",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_reason_counts_as_other_and_known_ones_as_themselves() {
        let metrics = Metrics::new("order");
        let saga = SagaMetrics::register(&metrics);
        saga.failed(Some("something a downstream made up"));
        saga.failed(Some(reason::OUT_OF_STOCK));
        saga.failed(None);
        saga.confirmed();
        let text = metrics.encode();
        for sample in [
            r#"shop_order_sagas_finished_total{service="order",outcome="failed",reason="other"} 2"#,
            r#"shop_order_sagas_finished_total{service="order",outcome="failed",reason="out_of_stock"} 1"#,
            r#"shop_order_sagas_finished_total{service="order",outcome="failed",reason="card_declined"} 0"#,
            r#"shop_order_sagas_finished_total{service="order",outcome="confirmed",reason=""} 1"#,
        ] {
            assert!(text.contains(sample), "{sample} in {text}");
        }
    }
}
