//! The catalog service: products and categories.
//!
//! `routes` (HTTP) → `domain` (rules, the seed; no I/O) → `storage` (SQL); `pictures` draws the
//! product pictures it serves.

pub mod domain;
pub mod pictures;
pub mod routes;
pub mod storage;

use anyhow::Result;
use shop_events::Runtime;
use shop_kit::{Database, Service};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The catalog service has no settings of its own.
pub type Settings = shop_kit::NoSettings;

/// Connects, migrates, seeds an empty catalog, and returns the service to serve.
pub async fn build(runtime: &Runtime, _settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    let store = storage::Store::new(db.clone());
    let seeded = store.seed_if_empty().await?;
    if seeded > 0 {
        tracing::info!(products = seeded, "loaded the seed catalog");
    }
    Ok(Service {
        name: "catalog",
        router: routes::router(routes::AppState { store }),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::database_ready(db),
        tasks: Default::default(),
    })
}
