//! Prometheus metrics: request count and latency per route and status, each circuit breaker's
//! state, the process's memory, CPU and file descriptors, plus whatever a service adds.
//!
//! Names follow Prometheus' conventions: `shop_` then the subsystem, base units in the name
//! (`_seconds`, `_bytes`), counters registered without `_total` (the encoder adds it), and the
//! service as the constant label `service`, which no metric may use again. The process metrics
//! keep their standard unprefixed names (`process_resident_memory_bytes`, …) so that existing
//! dashboards and alerts find them.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// The prefix of every metric of the shop's own (see [`Metrics::register`]).
pub const PREFIX: &str = "shop";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    /// The route template (`/api/products/{id}`), never the raw path, so cardinality stays bounded.
    route: String,
    status: String,
}

type LatencyFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// The other service a circuit breaker guards: bounded by configuration, never by traffic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

/// A circuit breaker's state as [`Metrics::breaker_state`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// A service's metric registry. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<HttpLabels, Counter>,
    latency: LatencyFamily,
    breaker_state: Family<UpstreamLabels, Gauge>,
    breaker_rejections: Family<UpstreamLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s: sub-millisecond reads and slow checkouts both land in a useful bucket.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        // No registry prefix: `register` adds `shop_` itself, so that the process collector's
        // standard names stay unprefixed.
        let mut registry =
            Registry::with_labels([("service".into(), service.to_string().into())].into_iter());
        registry.register_collector(Box::new(ProcessCollector));
        let this = Self {
            registry: Arc::new(Mutex::new(registry)),
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
            breaker_state: Family::default(),
            breaker_rejections: Family::default(),
        };
        this.register(
            "http_requests",
            "HTTP requests handled",
            this.requests.clone(),
        );
        this.register(
            "http_request_duration_seconds",
            "Time to handle an HTTP request",
            this.latency.clone(),
        );
        this.register(
            "upstream_breaker_state",
            "The circuit breaker of calls to an upstream service: 0 closed, 1 half-open (letting a trial call through), 2 open (refusing calls)",
            this.breaker_state.clone(),
        );
        this.register(
            "upstream_breaker_rejected_calls",
            "Calls to an upstream service refused at once because its circuit breaker was open",
            this.breaker_rejections.clone(),
        );
        this
    }

    /// Adds a service-specific metric (for example failed logins) to `/metrics`, named
    /// `shop_<name>`.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .expect("metrics registry lock")
            .register(format!("{PREFIX}_{name}"), help, metric);
    }

    /// The state gauge of the breaker guarding calls to `upstream`.
    pub fn breaker_state(&self, upstream: &str) -> Gauge {
        self.breaker_state
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .clone()
    }

    /// The counter of calls to `upstream` its open breaker refused.
    pub fn breaker_rejections(&self, upstream: &str) -> Counter {
        self.breaker_rejections
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .clone()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Middleware recording every request.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let labels = HttpLabels {
        method,
        route,
        status: response.status().as_u16().to_string(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

pub async fn handler(State(metrics): State<Metrics>) -> Response {
    let mut response = (StatusCode::OK, metrics.encode()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The standard process metrics, read from `/proc/self` on each scrape (Linux; elsewhere none):
/// resident and virtual memory, CPU time, open file descriptors and the start time.
#[derive(Debug)]
pub struct ProcessCollector;

/// What `/proc` says about this process now.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// The kernel's fixed unit for times in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// The value of line `key` (`VmRSS:`, `Pss:`) in a /proc file of `key    1234 kB` lines
/// (`status`, `smaps_rollup`), in KiB.
pub fn proc_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcessStats {
    /// This process's.
    pub fn read() -> Self {
        Self::from_proc("/proc/self")
    }

    /// Process `pid`'s (`shop bench` reads its services' with it).
    pub fn of(pid: u32) -> Self {
        Self::from_proc(&format!("/proc/{pid}"))
    }

    fn from_proc(dir: &str) -> Self {
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let kib = |key: &str| proc_kib(&status, key).map(|v| v * 1024);
        // Fields after the command name, which is in parentheses and may hold spaces: the 14th
        // and 15th fields of the whole line are utime and stime, the 22nd the start in ticks
        // after boot.
        let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) / USER_HZ);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        let start_time_seconds = boot
            .zip(field(22))
            .map(|(boot, ticks)| boot + ticks / USER_HZ);
        let open_fds = std::fs::read_dir(format!("{dir}/fd"))
            .ok()
            .map(|dir| dir.count() as u64);
        Self {
            resident_memory_bytes: kib("VmRSS:"),
            virtual_memory_bytes: kib("VmSize:"),
            cpu_seconds,
            open_fds,
            start_time_seconds,
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = ProcessStats::read();
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stats.resident_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stats.virtual_memory_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                stats.open_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                stats.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        if let Some(seconds) = stats.cpu_seconds {
            // The encoder adds `_total`.
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_the_unit_and_total_and_the_service_once() {
        let metrics = Metrics::new("cart");
        metrics.register("widgets_made", "Widgets", Counter::<u64>::default());
        metrics.breaker_rejections("catalog").inc();
        metrics
            .breaker_state("catalog")
            .set(BreakerState::Open as i64);
        let text = metrics.encode();
        assert!(
            text.contains("shop_widgets_made_total{service=\"cart\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("shop_upstream_breaker_state{service=\"cart\",upstream=\"catalog\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "shop_upstream_breaker_rejected_calls_total{service=\"cart\",upstream=\"catalog\"} 1"
            ),
            "{text}"
        );
        // A family without a series is left out entirely (prometheus-client): no request yet.
        assert!(
            !text.contains("shop_http_request_duration_seconds"),
            "{text}"
        );
        // Every sample line names `service` exactly once.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(line.matches("service=").count(), 1, "{line}");
        }
    }

    #[test]
    fn the_process_metrics_come_from_proc_under_their_standard_names() {
        let stats = ProcessStats::read();
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        assert!(
            stats.resident_memory_bytes.unwrap() > 1024 * 1024,
            "{stats:?}"
        );
        assert!(stats.open_fds.unwrap() >= 3, "{stats:?}");
        // Another process's, by its id: this one's, as `/proc/self` gives it.
        let by_pid = ProcessStats::of(std::process::id());
        assert_eq!(by_pid.start_time_seconds, stats.start_time_seconds);
        assert!(by_pid.cpu_seconds.unwrap() >= stats.cpu_seconds.unwrap());
        assert_eq!(
            ProcessStats::of(u32::MAX),
            ProcessStats::default(),
            "no such process"
        );
        let started = stats.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{stats:?}"
        );
        let text = Metrics::new("user").encode();
        for name in [
            "process_resident_memory_bytes{service=\"user\"} ",
            "process_virtual_memory_bytes{service=\"user\"} ",
            "process_open_fds{service=\"user\"} ",
            "process_start_time_seconds{service=\"user\"} ",
            "process_cpu_seconds_total{service=\"user\"} ",
        ] {
            assert!(text.contains(name), "{name} in {text}");
        }
    }
}
