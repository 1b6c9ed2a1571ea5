//! The local bus for `shop up`: each producer's relay POSTs what it has for a peer, up to a
//! batch, to that peer's `/internal/events/<consumer>`; the consumer applies it and answers.
//!
//! The answer is the contract: 200 with the ids to deliver again later (`{"retry": [...]}`);
//! the producer may forget every other event of the batch (applied, applied before, or
//! dead-lettered). Dead letters go to the consumer's own `dead_letters` table.

use std::sync::Arc;

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing;
use serde::Deserialize;

use shop_kit::db::{Database, now_rfc3339};
use shop_kit::propagation::TraceContext;
use shop_kit::{Problem, Upstream, UpstreamError};
use tracing::Instrument;

use crate::bus::EventOptions;
use crate::consume::{self, DeadLetterCount, DeadReason, HandleError, Handler};
use crate::event::Event;
use crate::outbox::OutboxRow;

/// The route a consumer listens on for local deliveries.
pub fn route(consumer: &str) -> String {
    format!("/internal/events/{consumer}")
}

/// One event of a batch, with what the relay knows of its delivery.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BatchItem<E = serde_json::Value> {
    /// The event's id (its outbox row's), to name it in the answer even when `event` cannot be
    /// read.
    pub id: String,
    /// The delivery's attempt for this event (1 for the first).
    pub attempt: u32,
    /// The producer's trace context, stored with the event: the consumer's span links to it
    /// rather than being its child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// The event: the relay sends it as the producer wrote it (`&Event`); the consumer reads
    /// any JSON and decodes each on its own, so that one unreadable event is dead-lettered alone.
    pub event: E,
}

/// A batch delivery's body.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Batch<E = serde_json::Value> {
    pub events: Vec<BatchItem<E>>,
}

/// A consumer's answer to a batch: the events to deliver again later. Every other event of the
/// batch was applied, had been applied, or was dead-lettered.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BatchAnswer {
    pub retry: Vec<String>,
}

/// What a peer did with a batch.
pub(crate) enum Delivery {
    /// 200: these events are to be delivered again later; the rest are the peer's.
    Taken { retry: Vec<String> },
    /// The peer answered but took none of them (503 while it starts, a misconfiguration).
    Refused(String),
}

/// Delivers `rows` (each with its attempt) to one peer in one request. `Err` means the peer could
/// not be reached at all.
pub(crate) async fn deliver(
    upstream: &Upstream,
    consumer: &str,
    rows: &[(&OutboxRow, u32)],
) -> Result<Delivery> {
    let batch = Batch {
        events: rows
            .iter()
            .map(|(row, attempt)| BatchItem {
                id: row.id.clone(),
                attempt: *attempt,
                traceparent: row.trace.as_ref().map(|t| t.traceparent.clone()),
                tracestate: row.trace.as_ref().and_then(|t| t.tracestate.clone()),
                event: &row.event,
            })
            .collect(),
    };
    let request = upstream
        .request(Method::POST, &route(consumer))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&batch).expect("a batch serializes"));
    match upstream.send(request).await {
        Ok(response) if response.status().is_success() => match response.json().await {
            Ok(BatchAnswer { retry }) => Ok(Delivery::Taken { retry }),
            Err(error) => Ok(Delivery::Refused(format!("an unreadable answer: {error}"))),
        },
        Ok(response) => Ok(Delivery::Refused(format!("answered {}", response.status()))),
        Err(error @ UpstreamError::Status { .. }) => Ok(Delivery::Refused(error.to_string())),
        Err(error) => Err(error.into()),
    }
}

#[derive(Clone)]
struct Receiver {
    db: Database,
    consumer: Arc<str>,
    handler: Arc<dyn Handler>,
    options: EventOptions,
    dead: DeadLetterCount,
}

/// The consumer's route for local deliveries.
pub(crate) fn router(
    db: Database,
    consumer: &str,
    handler: Arc<dyn Handler>,
    options: EventOptions,
    dead: DeadLetterCount,
) -> Router {
    let receiver = Receiver {
        db,
        consumer: consumer.into(),
        handler,
        options,
        dead,
    };
    Router::new()
        .route(&route(consumer), routing::post(receive))
        .with_state(receiver)
}

/// What became of one delivered event.
enum Settled {
    /// Applied, applied before, or dead-lettered: the producer may forget it.
    Taken,
    /// To be delivered again later.
    Retry,
}

/// A batch: every event in one transaction when all of them apply; otherwise each on its own,
/// so that one event's failure holds up no other.
async fn receive(State(receiver): State<Receiver>, body: Bytes) -> Response {
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(error) => {
            return Problem::bad_request(format!("not a batch of events: {error}")).into_response();
        }
    };
    let items: Vec<_> = batch
        .events
        .into_iter()
        .map(|item| {
            let event = Event::deserialize(&item.event)
                .map_err(|error| (error, Bytes::from(item.event.to_string())));
            let producer = TraceContext::new(item.traceparent, item.tracestate);
            (item.id, event, item.attempt, producer)
        })
        .collect();
    let consumer = &*receiver.consumer;
    let readable: Option<Vec<(&Event, Option<&TraceContext>)>> = items
        .iter()
        .map(|(_, event, _, producer)| Some((event.as_ref().ok()?, producer.as_ref())))
        .collect();
    if let Some(events) = readable
        && consume::apply_all(&receiver.db, consumer, &*receiver.handler, &events)
            .await
            .is_ok()
    {
        return axum::Json(BatchAnswer::default()).into_response();
    }
    let mut answer = BatchAnswer::default();
    for (id, event, attempt, producer) in items {
        if let Settled::Retry = settle(&receiver, event, attempt, producer).await {
            answer.retry.push(id);
        }
    }
    axum::Json(answer).into_response()
}

/// Applies one delivered event (or dead-letters it: unreadable, rejected, or out of attempts).
async fn settle(
    receiver: &Receiver,
    event: Result<Event, (serde_json::Error, Bytes)>,
    attempt: u32,
    producer: Option<TraceContext>,
) -> Settled {
    let attempt = attempt.max(1);
    let consumer = &*receiver.consumer;
    let event = match event {
        Ok(event) => event,
        Err((error, body)) => {
            let letter = DeadLetter::undecodable(
                consumer,
                &body,
                format!("undecodable event: {error}"),
                attempt,
            );
            return settle_dead(receiver, letter, DeadReason::Undecodable).await;
        }
    };
    let applied = consume::apply(&receiver.db, consumer, &*receiver.handler, &event)
        .instrument(consume::span(consumer, &event, producer.as_ref()))
        .await;
    match applied {
        Ok(_) => Settled::Taken,
        Err(HandleError::Reject(error)) => {
            settle_dead(
                receiver,
                DeadLetter::of(consumer, &event, format!("rejected: {error:#}"), attempt),
                DeadReason::Rejected,
            )
            .await
        }
        Err(HandleError::Retry(error)) if attempt >= receiver.options.max_deliveries => {
            let why = format!("still failing after {attempt} deliveries: {error:#}");
            let letter = DeadLetter::of(consumer, &event, why, attempt);
            settle_dead(receiver, letter, DeadReason::Exhausted).await
        }
        Err(HandleError::Retry(error)) => {
            tracing::debug!(target: "shop::events", consumer, event_id = %event.id, attempt, error = %format!("{error:#}"), "event will be retried");
            Settled::Retry
        }
    }
}

async fn settle_dead(receiver: &Receiver, letter: DeadLetter, reason: DeadReason) -> Settled {
    tracing::warn!(target: "shop::events", consumer = %letter.consumer, event_id = %letter.event_id, kind = %letter.kind, error = %letter.error, "dead-lettering an event");
    match record_dead_letter(&receiver.db, &letter).await {
        Ok(()) => {
            receiver.dead.inc(reason);
            Settled::Taken
        }
        Err(error) => {
            tracing::warn!(target: "shop::events", error = %error, "could not store a dead letter; the producer will retry");
            Settled::Retry
        }
    }
}

/// One event a consumer gave up on, as kept in its `dead_letters` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetter {
    pub consumer: String,
    /// The event's id, or for a body that is not an event a UUID v5 of the body.
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The event as delivered.
    pub payload: String,
    pub error: String,
    pub attempts: i64,
    pub dead_at: String,
}

impl DeadLetter {
    fn of(consumer: &str, event: &Event, error: String, attempts: u32) -> Self {
        Self {
            consumer: consumer.to_owned(),
            event_id: event.id.to_string(),
            kind: event.kind.clone(),
            payload: serde_json::to_string(event).expect("an event serializes"),
            error,
            attempts: attempts.into(),
            dead_at: now_rfc3339(),
        }
    }

    fn undecodable(consumer: &str, body: &[u8], error: String, attempts: u32) -> Self {
        let kind = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        Self {
            consumer: consumer.to_owned(),
            event_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, body).to_string(),
            kind,
            payload: String::from_utf8_lossy(body).into_owned(),
            error,
            attempts: attempts.into(),
            dead_at: now_rfc3339(),
        }
    }
}

/// Keeps a dead letter; the same event dead-lettered twice by one consumer is kept once.
pub async fn record_dead_letter(db: &Database, letter: &DeadLetter) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (consumer, event_id, type, payload, error, attempts, dead_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(&letter.consumer)
    .bind(&letter.event_id)
    .bind(&letter.kind)
    .bind(&letter.payload)
    .bind(&letter.error)
    .bind(letter.attempts)
    .bind(&letter.dead_at)
    .execute(db.pool())
    .await
    .map(|_| ())
}

/// The dead letters of `consumer`, oldest first.
pub async fn dead_letters(db: &Database, consumer: &str) -> Result<Vec<DeadLetter>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT consumer, event_id, type, payload, error, attempts, dead_at FROM dead_letters \
         WHERE consumer = $1 ORDER BY dead_at, event_id",
    )
    .bind(consumer)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(DeadLetter {
                consumer: row.try_get("consumer")?,
                event_id: row.try_get("event_id")?,
                kind: row.try_get("type")?,
                payload: row.try_get("payload")?,
                error: row.try_get("error")?,
                attempts: row.try_get("attempts")?,
                dead_at: row.try_get("dead_at")?,
            })
        })
        .collect()
}
