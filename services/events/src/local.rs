//! The local bus for `shop up`: producers POST each event to every peer's
//! `/internal/events/<consumer>`; the consumer applies it and answers.
//!
//! The answer is the contract: 204 when the event is applied, was applied before, or was
//! dead-lettered (the producer may forget it); 503 when it should be retried later. Dead letters
//! go to the consumer's own `dead_letters` table.

use std::sync::Arc;

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;

use shop_kit::db::{Database, now_rfc3339};
use shop_kit::propagation::TraceContext;
use shop_kit::{Problem, Upstream, UpstreamError};
use tracing::Instrument;

use crate::bus::EventOptions;
use crate::consume::{self, DeadLetterCount, DeadReason, HandleError, Handler};
use crate::event::Event;
use crate::outbox::OutboxRow;

/// The attempt number of a delivery (1 for the first), sent by the producer.
pub const ATTEMPT_HEADER: &str = "shop-event-attempt";
/// The producer's trace context. Not `traceparent`: that one is the delivery's own (the relay's,
/// none), and the consumer links to the producer rather than being its child.
pub const TRACEPARENT_HEADER: &str = "shop-event-traceparent";
pub const TRACESTATE_HEADER: &str = "shop-event-tracestate";

/// The route a consumer listens on for local deliveries.
pub fn route(consumer: &str) -> String {
    format!("/internal/events/{consumer}")
}

/// What a peer did with one delivery.
pub(crate) enum Delivery {
    /// 2xx: applied, already applied, or dead-lettered by the peer.
    Taken,
    /// The peer answered but could not take it now (503 on `Retry`, or a misconfiguration).
    Refused(String),
}

/// Delivers one event to one peer. `Err` means the peer could not be reached at all.
pub(crate) async fn deliver(
    upstream: &Upstream,
    consumer: &str,
    row: &OutboxRow,
    attempt: u32,
) -> Result<Delivery> {
    let mut request = upstream
        .request(Method::POST, &route(consumer))
        .header("content-type", "application/json")
        .header(ATTEMPT_HEADER, attempt.to_string())
        .body(row.json());
    if let Some(trace) = &row.trace {
        request = trace.apply(request, TRACEPARENT_HEADER, TRACESTATE_HEADER);
    }
    match upstream.send(request).await {
        Ok(response) if response.status().is_success() => Ok(Delivery::Taken),
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

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let attempt = headers
        .get(ATTEMPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let consumer = &*receiver.consumer;
    let event = match serde_json::from_slice::<Event>(&body) {
        Ok(event) => event,
        Err(error) => {
            let letter = DeadLetter::undecodable(
                consumer,
                &body,
                format!("undecodable event: {error}"),
                attempt,
            );
            return settle_dead(&receiver, letter, DeadReason::Undecodable).await;
        }
    };
    let producer =
        TraceContext::from_named_headers(&headers, TRACEPARENT_HEADER, TRACESTATE_HEADER);
    let applied = consume::apply(&receiver.db, consumer, &*receiver.handler, &event)
        .instrument(consume::span(consumer, &event, producer.as_ref()))
        .await;
    match applied {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(HandleError::Reject(error)) => {
            settle_dead(
                &receiver,
                DeadLetter::of(consumer, &event, format!("rejected: {error:#}"), attempt),
                DeadReason::Rejected,
            )
            .await
        }
        Err(HandleError::Retry(error)) if attempt >= receiver.options.max_deliveries => {
            let why = format!("still failing after {attempt} deliveries: {error:#}");
            let letter = DeadLetter::of(consumer, &event, why, attempt);
            settle_dead(&receiver, letter, DeadReason::Exhausted).await
        }
        Err(HandleError::Retry(error)) => {
            tracing::debug!(target: "shop::events", consumer, event_id = %event.id, attempt, error = %format!("{error:#}"), "event will be retried");
            Problem::typed(
                StatusCode::SERVICE_UNAVAILABLE,
                "event-retry",
                "the event could not be applied now; retry later",
            )
            .into_response()
        }
    }
}

async fn settle_dead(receiver: &Receiver, letter: DeadLetter, reason: DeadReason) -> Response {
    tracing::warn!(target: "shop::events", consumer = %letter.consumer, event_id = %letter.event_id, kind = %letter.kind, error = %letter.error, "dead-lettering an event");
    match record_dead_letter(&receiver.db, &letter).await {
        Ok(()) => {
            receiver.dead.inc(reason);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => {
            tracing::warn!(target: "shop::events", error = %error, "could not store a dead letter; the producer will retry");
            Problem::typed(
                StatusCode::SERVICE_UNAVAILABLE,
                "event-retry",
                "the event could not be stored; retry later",
            )
            .into_response()
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
