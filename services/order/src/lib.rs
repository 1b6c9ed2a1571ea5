//! The order service: checkout of the caller's cart as a saga with persisted state, order history
//! and status.
//!
//! `routes` (HTTP, Idempotency-Key) → `saga` (the steps, their compensations, the resumer; calls
//! cart, catalog, inventory, payment and shipping through the kit's `Upstream`) → `domain`
//! (validation, steps, failure answers; no I/O) → `storage` (SQL: the insert-first order claim,
//! conditional step writes) and `events` (`order.placed`, `order.confirmed`, `order.failed`,
//! written to the outbox in the transaction of the step they announce).

pub mod domain;
pub mod events;
pub mod metrics;
pub mod routes;
pub mod saga;
pub mod storage;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use shop_contracts::ServiceName;
use shop_events::{Relay, Runtime, Waker};
use shop_kit::config::{env_or, env_parse};
use shop_kit::{Database, Identity, Metrics, Service, Tasks, Upstream, UpstreamOptions};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub use domain::{STEPS, Step};
pub use saga::{Crash, Saga, Upstreams};

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The order service's own settings, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often unfinished orders are looked for (`ORDER_RESUME_INTERVAL_MS`, default 5000); also
    /// once at start-up.
    pub resume_interval: Duration,
    /// How long an unfinished order must have gone without an update before the resumer takes it
    /// over from its runner (`ORDER_RESUME_LEASE_MS`, default 15000). Longer than any one step
    /// takes, so a live request's saga is not taken from it.
    pub resume_lease: Duration,
    /// How long `POST /api/orders` waits for the saga before answering 202 with the order as it
    /// stands (`ORDER_CHECKOUT_DEADLINE_MS`, default 8000; below the request timeout).
    pub checkout_deadline: Duration,
    /// A test hook, never for production: `SHOP_ORDER_CRASH_AT=<step>` (one of [`STEPS`]) makes
    /// the process kill itself with SIGKILL right after persisting that step, once per order
    /// (each step is persisted once per order). Unset: never.
    pub crash_at: Option<Step>,
    /// What the hook does: SIGKILL from the environment; tests in one process halt the saga.
    pub crash: saga::Crash,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            resume_interval: Duration::from_secs(5),
            resume_lease: Duration::from_secs(15),
            checkout_deadline: Duration::from_secs(8),
            crash_at: None,
            crash: saga::Crash::Kill,
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let defaults = Self::default();
        let crash_at = match std::env::var("SHOP_ORDER_CRASH_AT") {
            Ok(step) if !step.trim().is_empty() => match Step::parse(step.trim()) {
                Some(step) => Some(step),
                None => bail!(
                    "SHOP_ORDER_CRASH_AT={step:?} is not a saga step; use one of {}",
                    STEPS.map(Step::as_str).join(", ")
                ),
            },
            _ => None,
        };
        let millis = |key, default: Duration| -> Result<Duration> {
            Ok(Duration::from_millis(env_parse(
                key,
                default.as_millis() as u64,
            )?))
        };
        let settings = Self {
            resume_interval: millis("ORDER_RESUME_INTERVAL_MS", defaults.resume_interval)?,
            resume_lease: millis("ORDER_RESUME_LEASE_MS", defaults.resume_lease)?,
            checkout_deadline: millis("ORDER_CHECKOUT_DEADLINE_MS", defaults.checkout_deadline)?,
            crash_at,
            crash: saga::Crash::Kill,
        };
        ensure!(
            !settings.resume_interval.is_zero(),
            "ORDER_RESUME_INTERVAL_MS must be above 0"
        );
        ensure!(
            !settings.checkout_deadline.is_zero(),
            "ORDER_CHECKOUT_DEADLINE_MS must be above 0"
        );
        Ok(settings)
    }
}

impl Upstreams {
    /// `CART_URL`, `CATALOG_URL`, `INVENTORY_URL`, `PAYMENT_URL`, `SHIPPING_URL`; the defaults are
    /// the `shop up` ports. Their breakers report to `metrics`.
    /// The internal calls carry tokens of `caller`.
    pub fn from_env(metrics: &Metrics, caller: &Identity) -> Result<Self> {
        let options = UpstreamOptions::from_env()?
            .reporting_to(metrics)
            .calling_as(caller);
        let upstream = |service: ServiceName, default: &str| {
            Upstream::new(
                service.as_str(),
                &env_or(&service.url_var(), default),
                &options,
            )
        };
        Ok(Self {
            cart: upstream(ServiceName::Cart, "http://127.0.0.1:8083")?,
            catalog: upstream(ServiceName::Catalog, "http://127.0.0.1:8082")?,
            inventory: upstream(ServiceName::Inventory, "http://127.0.0.1:8084")?,
            payment: upstream(ServiceName::Payment, "http://127.0.0.1:8085")?,
            shipping: upstream(ServiceName::Shipping, "http://127.0.0.1:8086")?,
        })
    }
}

/// Connects, migrates, and returns the service to serve, its events relayed to the runtime's
/// bus (the relay creates the event tables).
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    // Relays `order.*` from the outbox while the service runs.
    let relay = Relay::start(runtime, db.clone()).await?;
    let upstreams = Upstreams::from_env(&runtime.metrics, &runtime.identity)?;
    let saga_metrics = metrics::SagaMetrics::register(&runtime.metrics);
    let mut service = service_waking(db, upstreams, settings, relay.waker.clone(), saga_metrics);
    service.tasks.extend(relay.tasks);
    Ok(service)
}

/// The service over a migrated database (with the event tables), its resumer among its tasks.
pub fn service(db: Database, upstreams: Upstreams, settings: Settings) -> Service {
    service_waking(
        db,
        upstreams,
        settings,
        Waker::default(),
        metrics::SagaMetrics::default(),
    )
}

/// [`service`], waking `relay` whenever an order ends, so its `order.confirmed` (which empties
/// the cart) or `order.failed` leaves within milliseconds instead of at the next poll, and
/// counting how sagas end in `metrics`.
pub fn service_waking(
    db: Database,
    upstreams: Upstreams,
    settings: Settings,
    relay: Waker,
    metrics: metrics::SagaMetrics,
) -> Service {
    let saga = Arc::new(Saga {
        store: storage::Store::new(db.clone()),
        upstreams,
        crash_at: settings.crash_at,
        crash: settings.crash,
        relay,
        metrics,
    });
    let mut tasks = Tasks::new();
    let (resuming, lease) = (saga.clone(), settings.resume_lease);
    // Continues unfinished orders whose runner has gone quiet: at start, then every interval.
    tasks.spawn_every(
        tokio::time::interval(settings.resume_interval),
        "resuming unfinished orders",
        move || {
            let saga = resuming.clone();
            async move { saga::resume_once(&saga, lease).await.map(|_| ()) }
        },
    );
    Service {
        name: "order",
        router: routes::router(routes::AppState {
            saga,
            deadline: settings.checkout_deadline,
        }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks,
    }
}
