//! Starting a consumer on whichever bus the process has.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;

use super::bus::{Bus, Kind};
use super::consume::Handler;
use super::running::Running;
use super::{install_tables, local, nats};
use crate::db::Database;

/// A named consumer of events.
pub struct Consumer;

impl Consumer {
    /// Starts consumer `name` (letters, digits, `-`, `_`; unique per consumer across the shop)
    /// applying events with `handler` in `db` (creating the kit's tables if needed).
    ///
    /// Returns the routes to merge into the service's router (on the local bus, or with no bus,
    /// `POST /internal/events/<name>`, where producers deliver; empty on NATS) and the guard
    /// that keeps the consumer running.
    pub async fn start(
        bus: &Bus,
        db: Database,
        name: &str,
        handler: impl Handler,
    ) -> Result<(Router, Running)> {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "a consumer name is letters, digits, - and _, not {name:?}"
        );
        install_tables(&db)
            .await
            .context("creating the event tables")?;
        let handler: Arc<dyn Handler> = Arc::new(handler);
        match &*bus.kind {
            Kind::Nats(jetstream) => {
                let task = tokio::spawn(nats::consume_forever(
                    jetstream.clone(),
                    db,
                    name.to_owned(),
                    handler,
                    bus.options.clone(),
                ));
                Ok((Router::new(), Running::new(vec![task], Vec::new())))
            }
            Kind::Local(_) | Kind::None => Ok((
                local::router(db, name, handler, bus.options.clone()),
                Running::default(),
            )),
        }
    }
}
