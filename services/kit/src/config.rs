//! Configuration from the environment, with the same variable names in every service.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use shop_contracts::env;

/// Reads `key`, or `default` when it is unset or empty.
pub fn env_or(key: &str, default: &str) -> String {
    match std::env::var(key) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => default.to_string(),
    }
}

/// Reads and parses `key`, or `default` when it is unset; a value that does not parse is an error
/// naming the variable, so a typo fails at start instead of silently using the default.
pub fn env_parse<T>(key: &str, default: T) -> Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(key) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{key}={value:?} is not valid: {e}")),
        _ => Ok(default),
    }
}

/// What every service needs to start.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The address to listen on (`SHOP_LISTEN`, default `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// `DATABASE_URL`: `sqlite://…` (default, a file in the working directory) or `postgres://…`.
    pub database_url: String,
    /// How long in-flight requests may take to finish after SIGTERM (`SHOP_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long to keep serving (unready, closing each connection after its
    /// response) before the listener closes, so clients and load balancers move away first
    /// (`SHOP_SHUTDOWN_DELAY_MS`).
    pub shutdown_delay: Duration,
    /// Upper bound for handling one request (`SHOP_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Largest accepted request body in bytes (`SHOP_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers, from the first byte of the
    /// request, or an idle kept-alive connection may wait for its next request
    /// (`SHOP_HEADER_READ_TIMEOUT_MS`, default 10000): a slow-headers ("slowloris") client is
    /// cut off then.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) in bytes (`SHOP_MAX_HEADER_BYTES`,
    /// default 16384, at least 8192); larger is answered `431`.
    pub max_header_bytes: usize,
    /// The installation's key for the tokens of the internal APIs (`SHOP_SERVICE_KEY`).
    pub service_key: crate::identity::ServiceKey,
    /// How much work a service admits before it sheds load with `503 overloaded`.
    pub admission: Admission,
}

/// A service's bound on concurrent work: requests handled at once, and how many may wait (and
/// for how long) for one of those slots. Past either bound a request is answered `503` at once,
/// so an overloaded service keeps answering what it admits within a bounded time.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Requests handled at once (`SHOP_MAX_IN_FLIGHT`, default 128; 0 turns admission off).
    pub max_in_flight: usize,
    /// Requests waiting for a slot (`SHOP_MAX_QUEUED`, default 256).
    pub max_queued: usize,
    /// The longest a request waits for a slot (`SHOP_QUEUE_TIMEOUT_MS`, default 500).
    pub queue_timeout: Duration,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            max_in_flight: 128,
            max_queued: 256,
            queue_timeout: Duration::from_millis(500),
        }
    }
}

impl Admission {
    pub fn from_env() -> Result<Self> {
        let defaults = Self::default();
        Ok(Self {
            max_in_flight: env_parse("SHOP_MAX_IN_FLIGHT", defaults.max_in_flight)?,
            max_queued: env_parse("SHOP_MAX_QUEUED", defaults.max_queued)?,
            queue_timeout: Duration::from_millis(env_parse(
                "SHOP_QUEUE_TIMEOUT_MS",
                defaults.queue_timeout.as_millis() as u64,
            )?),
        })
    }
}

/// The smallest head hyper can be told to accept.
pub const MIN_HEADER_BYTES: usize = 8192;

impl ServiceConfig {
    pub fn from_env(service: &str) -> Result<Self> {
        let listen = env_or(env::LISTEN, "0.0.0.0:8080");
        Ok(Self {
            listen: listen
                .parse()
                .with_context(|| format!("SHOP_LISTEN={listen:?} is not a socket address"))?,
            database_url: env_or(env::DATABASE_URL, &format!("sqlite://{service}.db")),
            shutdown_grace: Duration::from_secs(env_parse("SHOP_SHUTDOWN_GRACE_SECS", 20)?),
            shutdown_delay: Duration::from_millis(env_parse(env::SHUTDOWN_DELAY_MS, 1_000)?),
            request_timeout: Duration::from_millis(env_parse("SHOP_REQUEST_TIMEOUT_MS", 10_000)?),
            max_body_bytes: env_parse("SHOP_MAX_BODY_BYTES", 64 * 1024)?,
            header_read_timeout: Duration::from_millis(
                env_parse("SHOP_HEADER_READ_TIMEOUT_MS", 10_000u64)?.max(1),
            ),
            max_header_bytes: {
                let bytes = env_parse("SHOP_MAX_HEADER_BYTES", 16 * 1024)?;
                anyhow::ensure!(
                    bytes >= MIN_HEADER_BYTES,
                    "SHOP_MAX_HEADER_BYTES must be at least {MIN_HEADER_BYTES}, not {bytes}"
                );
                bytes
            },
            service_key: crate::identity::ServiceKey::from_env()?,
            admission: Admission::from_env()?,
        })
    }
}
