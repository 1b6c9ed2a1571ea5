//! Latency samples per operation, percentiles, and the report (a table, or JSON for scripts).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::mix::{Classified, Group, Operation};

/// How a shed request (`503`) is classified: an error of this kind.
pub const SHED: &str = "HTTP 503";

/// The nearest-rank percentile (`p` in 0..=1) of sorted samples: the smallest sample with at
/// least `p` of all samples at or below it.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// What one operation (or a group of them) saw.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Microseconds, every answered or failed request.
    latencies_us: Vec<u32>,
    /// Microseconds, the requests the shop took on: all but the `503`s it shed.
    accepted_us: Vec<u32>,
    outcomes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Samples {
    pub fn record(&mut self, latency: Duration, classified: Classified) {
        let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        self.latencies_us.push(us);
        if !matches!(&classified, Classified::Error(kind) if kind == SHED) {
            self.accepted_us.push(us);
        }
        match classified {
            Classified::Success => {}
            Classified::Outcome(label) => *self.outcomes.entry(label.into()).or_default() += 1,
            Classified::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub fn merge(&mut self, other: Self) {
        self.latencies_us.extend(other.latencies_us);
        self.accepted_us.extend(other.accepted_us);
        for (k, n) in other.outcomes {
            *self.outcomes.entry(k).or_default() += n;
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }

    pub fn into_row(mut self, name: &str, elapsed: Duration) -> Row {
        self.latencies_us.sort_unstable();
        self.accepted_us.sort_unstable();
        let ms = |p| percentile(&self.latencies_us, p).map(|us| f64::from(us) / 1000.0);
        Row {
            name: name.to_owned(),
            count: self.latencies_us.len() as u64,
            accepted: self.accepted_us.len() as u64,
            shed: (self.latencies_us.len() - self.accepted_us.len()) as u64,
            accepted_p99_ms: percentile(&self.accepted_us, 0.99).map(|us| f64::from(us) / 1000.0),
            per_second: self.latencies_us.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: ms(1.0),
            errors: self.errors.values().sum(),
            outcomes: self.outcomes,
            error_kinds: self.errors,
        }
    }
}

/// Samples of every operation of one run.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    by_operation: BTreeMap<Operation, Samples>,
}

impl Recorder {
    pub fn record(&mut self, operation: Operation, latency: Duration, classified: Classified) {
        self.by_operation
            .entry(operation)
            .or_default()
            .record(latency, classified);
    }

    pub fn merge(&mut self, other: Self) {
        for (operation, samples) in other.by_operation {
            self.by_operation
                .entry(operation)
                .or_default()
                .merge(samples);
        }
    }

    /// The report over `elapsed` (the measured period, without set-up or warm-up).
    pub fn report(self, elapsed: Duration) -> Report {
        let mut groups: BTreeMap<Group, Samples> = BTreeMap::new();
        let mut all = Samples::default();
        let mut operations = Vec::new();
        for (operation, samples) in self.by_operation {
            groups
                .entry(operation.group())
                .or_default()
                .merge(samples.clone());
            all.merge(samples.clone());
            operations.push(samples.into_row(operation.name(), elapsed));
        }
        Report {
            elapsed_s: elapsed.as_secs_f64(),
            operations,
            groups: groups
                .into_iter()
                .map(|(g, s)| s.into_row(g.as_str(), elapsed))
                .collect(),
            total: all.into_row("all", elapsed),
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub count: u64,
    /// Requests the shop took on (answered anything but `503`).
    pub accepted: u64,
    /// Requests the shop shed: answered `503` (overloaded, or a dependency down).
    pub shed: u64,
    /// p99 latency of the accepted requests only.
    pub accepted_p99_ms: Option<f64>,
    pub per_second: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: u64,
    /// Expected business answers (declined cards, stock gone), by kind.
    pub outcomes: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
}

impl Row {
    /// The kinds of error other than shedding (`503`), with their counts: what a run that
    /// expects `503`s (an outage, an overload) must not see.
    pub fn errors_besides_shed(&self) -> BTreeMap<&str, u64> {
        self.error_kinds
            .iter()
            .filter(|(kind, _)| kind.as_str() != SHED)
            .map(|(kind, n)| (kind.as_str(), *n))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub elapsed_s: f64,
    pub operations: Vec<Row>,
    pub groups: Vec<Row>,
    pub total: Row,
}

impl Report {
    pub fn group(&self, group: Group) -> Option<&Row> {
        self.groups.iter().find(|r| r.name == group.as_str())
    }

    pub fn print(&self) {
        println!(
            "  {:<30} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}  outcomes",
            "operation", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        for row in &self.operations {
            print_row(row);
        }
        println!();
        for row in self.groups.iter().chain([&self.total]) {
            print_row(row);
        }
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for row in &self.operations {
            for (kind, n) in &row.error_kinds {
                *kinds.entry(kind).or_default() += n;
            }
        }
        let total = &self.total;
        if total.shed > 0 {
            println!(
                "\n  accepted {}, shed {} (503), p99 of the accepted {} ms",
                total.accepted,
                total.shed,
                total
                    .accepted_p99_ms
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
            );
        }
        if !kinds.is_empty() {
            println!("\n  errors by kind:");
            for (kind, n) in &kinds {
                println!("    {kind}: {n}");
            }
        }
        if kinds.contains_key("HTTP 429") {
            println!(
                "\n  the gateway rate-limits each client address (SHOP_RATE_LIMIT_PER_SECOND, 200 by default);\n  \
                 start the shop with SHOP_RATE_LIMIT_PER_SECOND=0 to load it from one machine"
            );
        }
        if self
            .operations
            .iter()
            .any(|r| r.name == Operation::Checkout.name() && r.error_kinds.contains_key("HTTP 404"))
        {
            println!(
                "\n  checkout answered 404: this shop has no order service; `--weights checkout=0` leaves checkout out"
            );
        }
    }
}

fn print_row(row: &Row) {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let outcomes = row
        .outcomes
        .iter()
        .map(|(k, n)| format!("{k}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "  {:<30} {:>8} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>7}  {}",
        row.name,
        row.count,
        row.per_second,
        ms(row.p50_ms),
        ms(row.p90_ms),
        ms(row.p99_ms),
        ms(row.max_ms),
        row.errors,
        outcomes
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 0.50), Some(50));
        assert_eq!(percentile(&hundred, 0.90), Some(90));
        assert_eq!(percentile(&hundred, 0.99), Some(99));
        assert_eq!(percentile(&hundred, 1.0), Some(100));
        assert_eq!(percentile(&hundred, 0.0), Some(1));
        // With few samples p99 is the maximum, never an index past the end.
        assert_eq!(percentile(&[5, 7, 9], 0.99), Some(9));
        assert_eq!(percentile(&[5, 7, 9], 0.50), Some(7));
        assert_eq!(percentile(&[4], 0.5), Some(4));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn shed_requests_are_counted_apart_from_the_accepted() {
        let mut samples = Samples::default();
        for ms in 1..=98 {
            samples.record(Duration::from_millis(ms), Classified::Success);
        }
        samples.record(
            Duration::from_millis(500),
            Classified::Outcome("402 declined"),
        );
        for _ in 0..3 {
            samples.record(
                Duration::from_millis(2),
                Classified::Error("HTTP 503".into()),
            );
        }
        let row = samples.into_row("all", Duration::from_secs(1));
        assert_eq!((row.count, row.accepted, row.shed), (102, 99, 3));
        // A declined checkout was accepted (its 500 ms is the accepted p99); the shed answers
        // are not among the accepted.
        assert_eq!(row.accepted_p99_ms, Some(500.0));
        assert_eq!(row.errors, 3);
        assert!(row.errors_besides_shed().is_empty());
    }

    #[test]
    fn report_per_operation_per_group_and_in_total() {
        let mut first = Recorder::default();
        let mut second = Recorder::default();
        for ms in 1..=10 {
            first.record(
                Operation::ProductDetails,
                Duration::from_millis(ms),
                Classified::Success,
            );
        }
        second.record(
            Operation::Categories,
            Duration::from_millis(100),
            Classified::Error("HTTP 500".into()),
        );
        second.record(
            Operation::Checkout,
            Duration::from_millis(40),
            Classified::Outcome("402 declined"),
        );
        first.merge(second);
        let report = first.report(Duration::from_secs(2));

        let details = &report.operations[0];
        assert_eq!(details.name, "GET /api/products/{id}");
        assert_eq!(details.count, 10);
        assert_eq!(details.per_second, 5.0);
        assert_eq!(details.p50_ms, Some(5.0));
        assert_eq!(details.p90_ms, Some(9.0));
        assert_eq!(details.max_ms, Some(10.0));

        let browse = report.group(Group::Browse).unwrap();
        assert_eq!((browse.count, browse.errors), (11, 1));
        assert_eq!(browse.max_ms, Some(100.0));
        let checkout = report.group(Group::Checkout).unwrap();
        assert_eq!(checkout.errors, 0);
        assert_eq!(checkout.outcomes["402 declined"], 1);
        assert!(report.group(Group::Cart).is_none());
        assert_eq!((report.total.count, report.total.errors), (12, 1));
        assert_eq!(report.total.error_kinds["HTTP 500"], 1);
    }
}
