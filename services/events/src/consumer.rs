//! Starting a consumer on whichever bus the process has.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use shop_kit::{Database, Metrics, Tasks};

use crate::bus::{Bus, Kind};
use crate::consume::{DeadLetterCount, Handler};
use crate::schema::install_tables;
use crate::{local, nats};

/// A started consumer: the routes producers deliver to and the tasks that pull from the bus.
pub struct Consumer {
    /// On the local bus, or with no bus, `POST /internal/events/<name>`, where producers
    /// deliver; empty on NATS. Merge them into the service's router.
    pub routes: Router,
    /// On NATS, the pull loop; none otherwise. Give them to the service so they run while it
    /// does. Dropped, they stop.
    pub tasks: Tasks,
}

impl Consumer {
    /// Starts consumer `name` (letters, digits, `-`, `_`; unique per consumer across the shop)
    /// applying events with `handler` in `db` (creating the event tables if needed), counting
    /// its dead letters in `metrics`.
    pub async fn start(
        bus: &Bus,
        db: Database,
        metrics: &Metrics,
        name: &str,
        handler: impl Handler,
    ) -> Result<Self> {
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
        let dead = DeadLetterCount::register(metrics, name);
        let mut tasks = Tasks::new();
        let routes = match &*bus.kind {
            Kind::Nats(jetstream) => {
                tasks.spawn(nats::consume_forever(
                    jetstream.clone(),
                    db,
                    name.to_owned(),
                    handler,
                    bus.options.clone(),
                    dead,
                ));
                Router::new()
            }
            Kind::Local(_) | Kind::None => {
                local::router(db, name, handler, bus.options.clone(), dead)
            }
        };
        Ok(Self { routes, tasks })
    }
}
