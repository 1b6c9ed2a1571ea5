//! The consumer's side: each event applied once, however often it is delivered.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use shop_kit::Metrics;
use shop_kit::db::{Database, Tx};
use shop_kit::propagation::{self, TraceContext};
use tracing::Instrument;

use crate::event::Event;

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth another try later (a database or an upstream that is down).
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// Never going to apply (malformed data, an unknown version): dead-letter it now.
    #[error("{0:#}")]
    Reject(anyhow::Error),
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(e.into())
    }
}

/// Applies one type of event (or several) for one consumer.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies `event` inside `tx`. This crate has already recorded the event's id in `tx` and
    /// commits both together; an error rolls both back. Events of types the consumer does not
    /// handle should return `Ok(())`.
    async fn handle(&self, tx: &mut Tx, event: &Event) -> Result<(), HandleError>;
}

/// The span an event is applied in. It is linked to the producer's span (`producer`, the
/// context stored with the event), not its child: the consumer runs later, maybe much later or
/// more than once, and belongs to the delivery that brought the event (an OpenTelemetry link, as
/// the messaging conventions do it for consumers).
pub fn span(consumer: &str, event: &Event, producer: Option<&TraceContext>) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        otel.name = %format_args!("consume {}", event.kind),
        otel.kind = "consumer",
        consumer,
        event_type = %event.kind,
        event_id = %event.id,
        trace_id = tracing::field::Empty,
        linked_trace_id = tracing::field::Empty,
    );
    if let Some(producer) = producer {
        propagation::link(&span, producer);
    }
    propagation::record_trace_id(&span);
    span
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The handler ran and its changes are committed.
    Now,
    /// This consumer had already applied the event; nothing ran.
    Already,
}

/// Runs `handler` for `event` once per `consumer`: the event id is claimed in
/// `processed_events` first, in the handler's transaction. A concurrent duplicate waits on the
/// claim (PostgreSQL's unique index, SQLite's single writer) and then finds it taken.
pub async fn apply(
    db: &Database,
    consumer: &str,
    handler: &dyn Handler,
    event: &Event,
) -> Result<Applied, HandleError> {
    let mut tx = db.begin().await?;
    if claim_all(&mut tx, consumer, std::iter::once(event))
        .await?
        .is_empty()
    {
        tx.rollback().await?;
        return Ok(Applied::Already);
    }
    handler.handle(&mut tx, event).await?;
    tx.commit().await?;
    Ok(Applied::Now)
}

/// Applies `events` in one transaction, each once per `consumer` as [`apply`] does: one commit
/// for a whole delivery of the local bus instead of one per event. Any handler's error rolls back
/// all of them; the caller then applies them one at a time, so that one event's failure holds up
/// no other. Each handler runs in its event's span (`producer` is the context stored with it).
pub async fn apply_all(
    db: &Database,
    consumer: &str,
    handler: &dyn Handler,
    events: &[(&Event, Option<&TraceContext>)],
) -> Result<(), HandleError> {
    let mut tx = db.begin().await?;
    let claimed = claim_all(&mut tx, consumer, events.iter().map(|(event, _)| *event)).await?;
    for (event, producer) in events {
        if !claimed.contains(&event.id.to_string()) {
            continue;
        }
        handler
            .handle(&mut tx, event)
            .instrument(span(consumer, event, *producer))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records in `tx` that `consumer` applies `events`, in one statement; returns the ids it had
/// not applied yet (an id twice in `events` is claimed once).
async fn claim_all<'a>(
    tx: &mut Tx,
    consumer: &str,
    events: impl ExactSizeIterator<Item = &'a Event>,
) -> Result<HashSet<String>, sqlx::Error> {
    if events.len() == 0 {
        return Ok(HashSet::new());
    }
    // $1 the consumer, $2 the time, then the ids.
    let values: Vec<String> = (0..events.len())
        .map(|i| format!("($1, ${}, $2)", i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES {} \
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id",
        values.join(", ")
    );
    let mut insert = sqlx::query_scalar(&sql)
        .bind(consumer)
        .bind(shop_kit::db::now_rfc3339());
    for event in events {
        insert = insert.bind(event.id.to_string());
    }
    Ok(insert.fetch_all(&mut **tx).await?.into_iter().collect())
}

/// Why a consumer gave up on an event: the `reason` of `shop_events_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Not an event at all.
    Undecodable,
    /// The handler said it can never apply it ([`HandleError::Reject`]).
    Rejected,
    /// Still failing after `max_deliveries`.
    Exhausted,
}

impl DeadReason {
    const ALL: [Self; 3] = [Self::Undecodable, Self::Rejected, Self::Exhausted];

    fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Rejected => "rejected",
            Self::Exhausted => "exhausted",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadLabels {
    consumer: String,
    reason: &'static str,
}

/// Counts one consumer's dead letters, once each is stored (a dead letter that could not be
/// stored is retried, and counted when it is).
#[derive(Clone, Debug)]
pub struct DeadLetterCount {
    consumer: Arc<str>,
    family: Family<DeadLabels, Counter>,
}

impl DeadLetterCount {
    /// `shop_events_dead_lettered_total{consumer, reason}` in `metrics`, every reason at 0 from
    /// the start so that a dashboard shows zeros rather than nothing.
    pub fn register(metrics: &Metrics, consumer: &str) -> Self {
        let this = Self {
            consumer: consumer.into(),
            family: Family::default(),
        };
        for reason in DeadReason::ALL {
            let _ = this.family.get_or_create(&this.labels(reason));
        }
        metrics.register(
            "events_dead_lettered",
            "Events a consumer gave up on and dead-lettered, by reason: undecodable, rejected (can never apply), exhausted (still failing after SHOP_EVENT_MAX_DELIVER deliveries)",
            this.family.clone(),
        );
        this
    }

    fn labels(&self, reason: DeadReason) -> DeadLabels {
        DeadLabels {
            consumer: self.consumer.to_string(),
            reason: reason.as_str(),
        }
    }

    pub fn inc(&self, reason: DeadReason) {
        self.family.get_or_create(&self.labels(reason)).inc();
    }
}
