//! The inventory service: stock per product, and the reservations checkout holds it with.
//!
//! `routes` (HTTP) → `domain` (validation, states, the low-stock rule; no I/O) → `storage` (SQL).
//! A hold is one conditional UPDATE per item inside one transaction, so concurrent checkouts of
//! the last units can never oversell; a background sweeper frees holds nobody committed in time.

pub mod domain;
pub mod routes;
pub mod storage;

use std::time::Duration;

use anyhow::{Result, ensure};
use shop_events::{Relay, Runtime};
use shop_kit::config::env_parse;
use shop_kit::{Database, Service, Tasks};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Settings {
    /// `stock.low` is written when a hold takes availability below this
    /// (`INVENTORY_LOW_STOCK_THRESHOLD`, default 5).
    pub low_stock_threshold: i64,
    /// How often expired holds are freed (`INVENTORY_SWEEP_INTERVAL_MS`, default 5000).
    pub sweep_interval: Duration,
    /// How long a hold lasts when the request names no TTL (`INVENTORY_RESERVATION_TTL_SECS`,
    /// default 900).
    pub default_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            low_stock_threshold: 5,
            sweep_interval: Duration::from_secs(5),
            default_ttl: Duration::from_secs(900),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let defaults = Self::default();
        let settings = Self {
            low_stock_threshold: env_parse(
                "INVENTORY_LOW_STOCK_THRESHOLD",
                defaults.low_stock_threshold,
            )?,
            sweep_interval: Duration::from_millis(env_parse(
                "INVENTORY_SWEEP_INTERVAL_MS",
                defaults.sweep_interval.as_millis() as u64,
            )?),
            default_ttl: Duration::from_secs(env_parse(
                "INVENTORY_RESERVATION_TTL_SECS",
                defaults.default_ttl.as_secs(),
            )?),
        };
        ensure!(
            !settings.sweep_interval.is_zero(),
            "INVENTORY_SWEEP_INTERVAL_MS must be above 0"
        );
        ensure!(
            (1..=domain::MAX_TTL_SECONDS as u64).contains(&settings.default_ttl.as_secs()),
            "INVENTORY_RESERVATION_TTL_SECS must be 1 to {}",
            domain::MAX_TTL_SECONDS
        );
        Ok(settings)
    }
}

/// Connects, migrates, stocks the seed catalog's products on an empty database, and returns the
/// service to serve.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    // The seed ids are the contracts' (derived from the seed SKUs), so catalog and inventory agree
    // without a call between them at start-up. Products added later start at 0 until stocked.
    let seed_ids = shop_contracts::seed::product_ids();
    let seeded = storage::Store::new(db.clone())
        .seed_if_empty(&seed_ids)
        .await?;
    if seeded > 0 {
        tracing::info!(products = seeded, "stocked the seed catalog");
    }
    // Relays `stock.low` from the outbox while the service runs.
    let relay = Relay::start(runtime, db.clone()).await?;
    let mut service = service(db, settings);
    service.tasks.extend(relay.tasks);
    Ok(service)
}

/// The service over a migrated database, with its expiry sweeper among its tasks.
pub fn service(db: Database, settings: Settings) -> Service {
    let store = storage::Store::new(db.clone());
    let mut tasks = Tasks::new();
    let sweeping = store.clone();
    // Frees the holds nobody committed in time: at start, then every interval.
    tasks.spawn_every(
        tokio::time::interval(settings.sweep_interval),
        "sweeping expired reservations",
        move || {
            let store = sweeping.clone();
            async move {
                let freed = store.free_expired(None).await?;
                if freed > 0 {
                    tracing::info!(freed, "freed expired reservations");
                }
                Ok::<_, sqlx::Error>(())
            }
        },
    );
    Service {
        name: "inventory",
        router: routes::router(routes::AppState { store, settings }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks,
    }
}
