//! The payment service: charges against a built-in card processor simulation, refunds, and the
//! record of every transaction, each write guarded by an idempotency key.
//!
//! `routes` (HTTP, idempotency-key handling) → `domain` (card validation, the simulated
//! processor, request fingerprints; no I/O) → `storage` (SQL: the insert-first key claim, charges,
//! refunds as one conditional UPDATE, transactions). No card number or CVC is ever stored.

pub mod domain;
pub mod routes;
pub mod storage;

use std::time::Duration;

use anyhow::{Result, ensure};
use shop_events::Runtime;
use shop_kit::config::env_parse;
use shop_kit::tasks::Tasks;
use shop_kit::{Database, Service};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an idempotency key, and the answer it replays, is kept after its request
    /// (`PAYMENT_IDEMPOTENCY_RETENTION_HOURS`, default 24, as card processors keep theirs). A
    /// key used again after that is a new request.
    pub idempotency_retention: Duration,
    /// How often expired keys are deleted (`PAYMENT_IDEMPOTENCY_SWEEP_INTERVAL_SECS`, default
    /// 600).
    pub sweep_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            idempotency_retention: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(600),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let defaults = Self::default();
        let settings = Self {
            idempotency_retention: Duration::from_secs(
                3600 * env_parse(
                    "PAYMENT_IDEMPOTENCY_RETENTION_HOURS",
                    defaults.idempotency_retention.as_secs() / 3600,
                )?,
            ),
            sweep_interval: Duration::from_secs(env_parse(
                "PAYMENT_IDEMPOTENCY_SWEEP_INTERVAL_SECS",
                defaults.sweep_interval.as_secs(),
            )?),
        };
        ensure!(
            !settings.idempotency_retention.is_zero(),
            "PAYMENT_IDEMPOTENCY_RETENTION_HOURS must be above 0: a retry must find its key"
        );
        ensure!(
            !settings.sweep_interval.is_zero(),
            "PAYMENT_IDEMPOTENCY_SWEEP_INTERVAL_SECS must be above 0"
        );
        Ok(settings)
    }
}

/// Connects, migrates, and returns the service to serve.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    Ok(service_with(db, settings))
}

/// The service over a migrated database, with the default settings.
pub fn service(db: Database) -> Service {
    service_with(db, Settings::default())
}

/// The service over a migrated database, with its sweeper of expired idempotency keys.
pub fn service_with(db: Database, settings: Settings) -> Service {
    let store = storage::Store::new(db.clone());
    let mut tasks = Tasks::new();
    let sweeping = store.clone();
    // The first pass one interval after start: keys expire after a day, so nothing is owed at
    // start, and a pass then raced the test that ages keys by hand (CI saw a key deleted under
    // it). The tasks that owe work at start (the order's resumer, the inventory's sweeper) run
    // at once.
    tasks.spawn_every(
        tokio::time::interval_at(
            tokio::time::Instant::now() + settings.sweep_interval,
            settings.sweep_interval,
        ),
        "deleting expired idempotency keys",
        move || {
            let store = sweeping.clone();
            async move {
                let deleted = store
                    .delete_expired_keys(settings.idempotency_retention)
                    .await?;
                if deleted > 0 {
                    tracing::info!(deleted, "deleted expired idempotency keys");
                }
                Ok::<_, sqlx::Error>(())
            }
        },
    );
    Service {
        name: "payment",
        router: routes::router(routes::AppState { store }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks,
    }
}
