//! Calls to other services: connect and request timeouts, bounded retries within a retry budget,
//! a circuit breaker per upstream, and the request id and trace context carried along.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::{Method, StatusCode};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;

use crate::config::env_parse;
use crate::context::{REQUEST_ID_HEADER, current_request_id};
use crate::identity::Identity;
use crate::metrics::{BreakerState, Metrics};
use crate::problem::Problem;

/// How long an idle pooled connection to an upstream is kept (see its use).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Tuning for one upstream; every field has a sensible default and an environment override.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Retries for one call, on top of the first attempt.
    pub max_retries: u32,
    /// Retries may add at most this fraction of extra load (0.2 = 20 %).
    pub retry_budget: f32,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit first stays open (doubling, jittered, up to 30 s).
    pub breaker_open: Duration,
    /// Where each breaker reports its state and refused calls, per upstream
    /// (`shop_upstream_breaker_*`); `None` reports nowhere.
    pub metrics: Option<Metrics>,
    /// Who calls: requests to an upstream's `/internal/` API carry a token of this service
    /// for it. `None` sends none (the upstream refuses such calls).
    pub caller: Option<Identity>,
}

impl UpstreamOptions {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            connect_timeout: Duration::from_millis(env_parse(
                "SHOP_UPSTREAM_CONNECT_TIMEOUT_MS",
                500,
            )?),
            request_timeout: Duration::from_millis(env_parse("SHOP_UPSTREAM_TIMEOUT_MS", 3_000)?),
            max_retries: env_parse("SHOP_UPSTREAM_MAX_RETRIES", 2)?,
            retry_budget: env_parse("SHOP_UPSTREAM_RETRY_BUDGET", 0.2)?,
            breaker_failures: env_parse("SHOP_UPSTREAM_BREAKER_FAILURES", 5)?,
            breaker_open: Duration::from_millis(env_parse("SHOP_UPSTREAM_BREAKER_OPEN_MS", 1_000)?),
            metrics: None,
            caller: None,
        })
    }

    /// These options, with every upstream built from them calling as `identity`.
    pub fn calling_as(self, identity: &Identity) -> Self {
        Self {
            caller: Some(identity.clone()),
            ..self
        }
    }

    /// These options, with every upstream built from them reporting its breaker to `metrics`.
    pub fn reporting_to(self, metrics: &Metrics) -> Self {
        Self {
            metrics: Some(metrics.clone()),
            ..self
        }
    }
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(3),
            max_retries: 2,
            retry_budget: 0.2,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(1),
            metrics: None,
            caller: None,
        }
    }
}

type Breaker = StateMachine<ConsecutiveFailures<OpenBackoff>, BreakerReport>;

/// failsafe calls this on each transition and refusal: the state gauge and the refusal counter
/// of one upstream. Half-open is entered lazily, by the first call after the open period.
#[derive(Debug, Default)]
pub struct BreakerReport(Option<(Gauge, Counter)>);

impl BreakerReport {
    fn set(&self, state: BreakerState) {
        if let Some((gauge, _)) = &self.0 {
            gauge.set(state as i64);
        }
    }
}

impl Instrument for BreakerReport {
    fn on_call_rejected(&self) {
        if let Some((_, rejected)) = &self.0 {
            rejected.inc();
        }
    }

    fn on_open(&self) {
        self.set(BreakerState::Open);
    }

    fn on_half_open(&self) {
        self.set(BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        self.set(BreakerState::Closed);
    }
}

const BREAKER_MAX_OPEN: Duration = Duration::from_secs(30);

/// How long the breaker stays open each time: doubling from the first period up to 30 s, half of
/// it fixed and half random ("equal jitter"), so callers do not all come back at once.
///
/// backon's schedule rather than failsafe's: failsafe's backoffs count whole seconds, so a 1 s
/// start gives a first period of 0 s, and they panic below 1 s. backon's jitter adds up to one
/// more delay, so the schedule runs at half the periods.
#[derive(Debug)]
pub struct OpenBackoff {
    schedule: ExponentialBuilder,
    periods: ExponentialBackoff,
}

/// Doubling from `first` up to `max`, each delay between half and all of its value ("equal
/// jitter"): backon's jitter adds up to one more delay, so the schedule runs at half the periods.
pub fn equal_jitter(first: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

impl OpenBackoff {
    pub fn new(first: Duration) -> Self {
        let schedule = equal_jitter(first, BREAKER_MAX_OPEN);
        Self {
            schedule,
            periods: schedule.build(),
        }
    }
}

/// A clone starts the schedule over. backon's iterator is not `Clone`, and failsafe only ever
/// clones a pristine copy, to start over each time the circuit closes again.
impl Clone for OpenBackoff {
    fn clone(&self) -> Self {
        Self {
            schedule: self.schedule,
            periods: self.schedule.build(),
        }
    }
}

impl Iterator for OpenBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.periods.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL built from the parsed base is the one parsing the joined string gives.
    #[test]
    fn a_request_url_is_the_base_and_the_path_as_parsing_them_gives() {
        let options = UpstreamOptions::default();
        for base in [
            "http://127.0.0.1:8082",
            "http://shop-catalog.shop.svc:8080/",
            "http://gw.example:9000/prefix",
        ] {
            let upstream = Upstream::new("catalog", base, &options).unwrap();
            assert_eq!(upstream.base_url(), base.trim_end_matches('/'));
            for path in [
                "/",
                "/api/products",
                "/api/products/47c760a6-4881-5546-97c1-c5d40ade3c1c",
                "/api/products?q=kettle&limit=20",
                "/api/products?q=caf%C3%A9+cr%C3%A8me&category=home%20office",
                "/api/products?q=a b&x=ü",
                "/path with space/ü",
                "/api/cart?",
            ] {
                let joined = format!("{}{path}", base.trim_end_matches('/'));
                assert_eq!(
                    upstream.url(path).as_str(),
                    reqwest::Url::parse(&joined).unwrap().as_str(),
                    "{base} + {path}"
                );
            }
        }
    }

    /// backon doubles in `f32`: a period may miss the exact bound by a few nanoseconds.
    const ROUNDING: Duration = Duration::from_micros(1);

    #[test]
    fn open_periods_double_with_jitter_up_to_the_cap() {
        let periods: Vec<_> = OpenBackoff::new(Duration::from_millis(400))
            .take(10)
            .collect();
        let mut base = Duration::from_millis(400);
        for period in &periods {
            assert!(
                *period + ROUNDING >= base / 2 && *period <= base + ROUNDING,
                "{period:?} outside [{:?}, {base:?}]",
                base / 2
            );
            base = (base * 2).min(BREAKER_MAX_OPEN);
        }
        assert!(periods[9] + ROUNDING >= BREAKER_MAX_OPEN / 2);
        assert!(
            periods.windows(2).any(|pair| pair[1] != pair[0] * 2),
            "the periods are jittered: {periods:?}"
        );
    }

    #[test]
    fn a_clone_starts_the_schedule_over() {
        let mut backoff = OpenBackoff::new(Duration::from_secs(8));
        backoff.by_ref().take(3).for_each(drop);
        let first = backoff.clone().next().unwrap();
        assert!(
            first + ROUNDING >= Duration::from_secs(4)
                && first <= Duration::from_secs(8) + ROUNDING,
            "{first:?}"
        );
        assert!(backoff.next().unwrap() + ROUNDING >= BREAKER_MAX_OPEN / 2);
    }
}

/// Why a call to another service did not produce a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the {upstream} service is unavailable (circuit open)")]
    CircuitOpen { upstream: Arc<str> },
    #[error("the {upstream} service did not answer in time")]
    Timeout { upstream: Arc<str> },
    #[error("the {upstream} service cannot be reached")]
    Unreachable {
        upstream: Arc<str>,
        source: reqwest::Error,
    },
    /// The upstream answered with an error; its problem body is kept when it sent one.
    #[error("the {upstream} service answered {status}")]
    Status {
        upstream: Arc<str>,
        status: StatusCode,
        problem: Option<Problem>,
    },
    #[error("the {upstream} service sent a response that could not be read")]
    Malformed {
        upstream: Arc<str>,
        source: reqwest::Error,
    },
}

impl UpstreamError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<UpstreamError> for Problem {
    fn from(err: UpstreamError) -> Self {
        match err {
            UpstreamError::Status {
                status, problem, ..
            } if status.is_client_error() => {
                problem.unwrap_or_else(|| Problem::new(status, "the request was rejected"))
            }
            UpstreamError::Timeout { .. } => Problem::typed(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                err.to_string(),
            ),
            UpstreamError::Malformed { .. } => {
                tracing::warn!(error = %err, "bad upstream response");
                Problem::new(StatusCode::BAD_GATEWAY, err.to_string())
            }
            _ => Problem::typed(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream-unavailable",
                err.to_string(),
            ),
        }
    }
}

/// A client for one upstream service. Cheap to clone; clones share the pool, budget and breaker.
#[derive(Clone)]
pub struct Upstream {
    name: Arc<str>,
    /// The base URL, parsed once: a request's URL is this with its path and query set, so no
    /// request parses a host again (`Url::parse` runs the host through IDNA every time, about
    /// 2 % of the shop's CPU under load).
    base: reqwest::Url,
    client: reqwest::Client,
    breaker: Breaker,
    caller: Option<Identity>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    pub fn new(name: &str, base_url: &str, options: &UpstreamOptions) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/');
        anyhow::ensure!(
            !options.breaker_open.is_zero() && options.breaker_open <= BREAKER_MAX_OPEN,
            "the circuit breaker's open time (SHOP_UPSTREAM_BREAKER_OPEN_MS) must be between 1 ms and 30 s, not {:?}",
            options.breaker_open
        );
        let parsed = reqwest::Url::parse(base_url)
            .with_context(|| format!("the {name} service URL {base_url:?} is not a URL"))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        // reqwest's retry layer draws from a token budget (tower's TpsBudget), so retries can
        // never multiply load on a struggling upstream. Only failed connections are retried:
        // nothing was sent, so it is safe for any method. An upstream's error answer is not
        // retried; its problem goes back to the caller. Each retry is logged (a connection
        // refused by a pod going away, say), so the failures retries absorb can be counted.
        let upstream = name.to_owned();
        let retry = reqwest::retry::for_host(host)
            .max_retries_per_request(options.max_retries)
            .max_extra_load(options.retry_budget)
            .classify_fn(move |attempt| {
                let connect_failed = attempt
                    .error()
                    .and_then(|e| e.downcast_ref::<reqwest::Error>())
                    .is_some_and(reqwest::Error::is_connect);
                if connect_failed {
                    tracing::info!(
                        upstream = %upstream,
                        "upstream connection failed; retrying if the retry budget allows"
                    );
                    attempt.retryable()
                } else {
                    attempt.success()
                }
            });
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            // Below the servers' idle cut-off (`SHOP_HEADER_READ_TIMEOUT_MS`, 10 s by default):
            // a pooled connection is dropped here before the server closes it, never reused
            // as the server's FIN is on its way.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            // A redirect is an answer for the caller (the gateway passes a page's 303 on to the
            // browser), never something to follow here with the caller's headers.
            .redirect(reqwest::redirect::Policy::none())
            .retry(retry)
            .build()
            .context("building an HTTP client")?;
        let report = BreakerReport(
            options
                .metrics
                .as_ref()
                .map(|m| (m.breaker_state(name), m.breaker_rejections(name))),
        );
        let breaker = Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                options.breaker_failures,
                OpenBackoff::new(options.breaker_open),
            ))
            .instrument(report)
            .build();
        Ok(Self {
            name: name.into(),
            base: parsed,
            client,
            breaker,
            caller: options.caller.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL (as `Url` normalizes it), without a trailing `/`.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `path` (which begins with `/` and may carry a query) on this upstream.
    pub fn url(&self, path: &str) -> reqwest::Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/');
        if prefix.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{prefix}{path}"));
        }
        url.set_query(query);
        url
    }

    /// Starts a request to `path` (which begins with `/`), carrying the current request id and
    /// trace context (`traceparent`, `tracestate`).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut builder = self.client.request(method, self.url(path));
        if let Some(id) = current_request_id() {
            builder = builder.header(REQUEST_ID_HEADER, id);
        }
        if let Some(caller) = &self.caller
            && path.starts_with(shop_contracts::identity::INTERNAL_PREFIX)
        {
            builder = builder.header(
                shop_contracts::identity::HEADER,
                caller.token_for(&self.name),
            );
        }
        crate::propagation::inject(builder)
    }

    /// Sends through the circuit breaker. Any answer comes back, including 4xx and 5xx.
    ///
    /// Failed connections, timeouts and 500/502/504 count against the breaker. A 503 does not:
    /// it is a service answering quickly that it cannot do this now (typically because one of
    /// *its* dependencies is down), and opening this breaker would spread that outage to every
    /// other thing the service can still do.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, UpstreamError> {
        if !self.breaker.is_call_permitted() {
            return Err(UpstreamError::CircuitOpen {
                upstream: self.name.clone(),
            });
        }
        match request.send().await {
            Ok(response) => {
                if response.status().is_server_error()
                    && response.status() != StatusCode::SERVICE_UNAVAILABLE
                {
                    self.breaker.on_error();
                } else {
                    self.breaker.on_success();
                }
                Ok(response)
            }
            Err(source) => {
                self.breaker.on_error();
                let upstream = self.name.clone();
                Err(if source.is_timeout() {
                    UpstreamError::Timeout { upstream }
                } else {
                    UpstreamError::Unreachable { upstream, source }
                })
            }
        }
    }

    /// Sends and decodes a 2xx JSON answer; anything else becomes an [`UpstreamError`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, UpstreamError> {
        let response = self.send(request).await?;
        let status = response.status();
        if status.is_success() {
            return response
                .json::<T>()
                .await
                .map_err(|source| UpstreamError::Malformed {
                    upstream: self.name.clone(),
                    source,
                });
        }
        let problem = response.json::<Problem>().await.ok();
        Err(UpstreamError::Status {
            upstream: self.name.clone(),
            status,
            problem,
        })
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, UpstreamError> {
        self.json(self.request(Method::GET, path)).await
    }
}
