//! The producer's side: events written in the same transaction as the change, and read back
//! as rows for the relay and the buses.

use shop_kit::db::Tx;
use shop_kit::propagation::TraceContext;
use sqlx::Row;

use crate::event::Event;

/// Writes `event` to the outbox in the caller's transaction. The relay publishes it after commit;
/// a rollback takes it away with the change.
/// The trace context of the code writing it (see [`shop_kit::propagation::current`]) is stored with
/// it, so its consumers can link to the change that caused it.
pub async fn insert(tx: &mut Tx, event: &Event) -> Result<(), sqlx::Error> {
    let trace = shop_kit::propagation::current();
    sqlx::query(
        "INSERT INTO outbox (id, type, source, time, payload, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.id.to_string())
    .bind(&event.kind)
    .bind(&event.source)
    .bind(&event.time)
    .bind(event.data.to_string())
    .bind(trace.as_ref().map(|t| t.traceparent.clone()))
    .bind(trace.and_then(|t| t.tracestate))
    .execute(&mut **tx)
    .await
    .map(|_| ())
}

/// One outbox row.
pub(crate) struct OutboxRow {
    pub id: String,
    pub event: Event,
    /// The producer's trace context, travelling beside the event (headers), not in it.
    pub trace: Option<TraceContext>,
}

impl OutboxRow {
    pub(crate) fn from_row(row: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        let id: String = row.try_get("id")?;
        let payload: String = row.try_get("payload")?;
        let event = Event {
            id: id.parse().unwrap_or_default(),
            kind: row.try_get("type")?,
            source: row.try_get("source")?,
            time: row.try_get("time")?,
            // A payload that is not JSON travels as a string; consumers reject and dead-letter it.
            data: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        };
        let trace = TraceContext::new(row.try_get("traceparent")?, row.try_get("tracestate")?);
        Ok(Self { id, event, trace })
    }

    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.event).expect("an event serializes")
    }
}
