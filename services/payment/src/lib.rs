//! The payment service: charges against a built-in card processor simulation, refunds, and the
//! record of every transaction, each write guarded by an idempotency key.
//!
//! `routes` (HTTP, idempotency-key handling) → `domain` (card validation, the simulated
//! processor, request fingerprints; no I/O) → `storage` (SQL: the insert-first key claim, charges,
//! refunds as one conditional UPDATE, transactions). No card number or CVC is ever stored.

pub mod domain;
pub mod routes;
pub mod storage;

use anyhow::Result;
use shop_events::Runtime;
use shop_kit::{Database, Service};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The payment service has no settings of its own.
pub type Settings = shop_kit::NoSettings;

/// Connects, migrates, and returns the service to serve.
pub async fn build(runtime: &Runtime, _settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    Ok(service(db))
}

/// The service over a migrated database.
pub fn service(db: Database) -> Service {
    Service {
        name: "payment",
        router: routes::router(routes::AppState {
            store: storage::Store::new(db.clone()),
        }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::database_ready(db),
        tasks: Default::default(),
    }
}
