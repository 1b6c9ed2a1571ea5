//! Starting a consumer on whichever bus the process has.

use std::sync::Arc;
use std::time::Duration;

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
        let retention = bus.options.processed_retention;
        let (forgetting, consumer) = (db.clone(), name.to_owned());
        tasks.spawn_every(
            tokio::time::interval(forget_every(retention)),
            "forgetting old processed events",
            move || {
                let (db, consumer) = (forgetting.clone(), consumer.clone());
                async move {
                    let forgotten = forget_processed_before(&db, &consumer, retention).await?;
                    if forgotten > 0 {
                        tracing::debug!(target: "shop::events", consumer, forgotten, "forgot processed events past the retention");
                    }
                    Ok::<_, sqlx::Error>(())
                }
            },
        );
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

/// How often a consumer deletes what it no longer needs to remember: a few times per
/// retention, at most hourly, at least every second (tests use seconds).
fn forget_every(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Deletes consumer `name`'s records of events it applied more than `retention` ago: no
/// redelivery comes that late (JetStream keeps an event 7 days; the outbox redelivers within
/// its own retention). Returns how many.
pub async fn forget_processed_before(
    db: &Database,
    name: &str,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let cutoff = shop_kit::db::rfc3339(time::OffsetDateTime::now_utc() - retention);
    // A batch at a time, as the outbox's cleanup (`relay::delete_published_before`).
    let mut forgotten = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM processed_events WHERE consumer = $1 AND event_id IN \
             (SELECT event_id FROM processed_events WHERE consumer = $1 AND processed_at < $2 \
              LIMIT $3)",
        )
        .bind(name)
        .bind(&cutoff)
        .bind(crate::relay::CLEANUP_BATCH)
        .execute(db.pool())
        .await?
        .rows_affected();
        forgotten += batch;
        if batch < crate::relay::CLEANUP_BATCH as u64 {
            return Ok(forgotten);
        }
        tokio::task::yield_now().await;
    }
}
