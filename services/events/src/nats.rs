//! NATS JetStream: the streams, publishing, and the pull consumers with their dead letters.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{AckKind, Context};
use futures_util::StreamExt;

use shop_kit::Database;
use shop_kit::propagation::{TRACEPARENT, TRACESTATE, TraceContext};
use tracing::Instrument;

use crate::bus::EventOptions;
use crate::consume::{self, DeadLetterCount, DeadReason, HandleError, Handler};
use crate::event::Event;
use crate::outbox::OutboxRow;

/// The stream every event goes to, on `shop.events.<type>`.
pub const EVENT_STREAM: &str = "SHOP_EVENTS";
/// Where consumers put messages they gave up on, on `shop.dead.<consumer>.<type>`.
pub const DEAD_LETTER_STREAM: &str = "SHOP_DEAD_LETTERS";
/// Dead-letter headers: which consumer gave up, why, after how many deliveries, and the subject
/// the message was published on.
pub const HEADER_DEAD_CONSUMER: &str = "Shop-Dead-Consumer";
pub const HEADER_DEAD_ERROR: &str = "Shop-Dead-Error";
pub const HEADER_DEAD_DELIVERIES: &str = "Shop-Dead-Deliveries";
pub const HEADER_DEAD_SUBJECT: &str = "Shop-Dead-Subject";

/// A subject token from an event type: NATS wildcards and whitespace become `_`.
fn subject_part(kind: &str) -> String {
    let cleaned: String = kind
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '*' || c == '>' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('.');
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned.replace("..", ".")
    }
}

pub fn event_subject(kind: &str) -> String {
    format!("shop.events.{}", subject_part(kind))
}

/// Every event's subject.
const ALL_EVENTS: &str = "shop.events.>";

/// The subject durable consumer `name` is subscribed to. A service's consumer that reads one
/// type of the contracts (`shop_contracts::events::read_by`) gets only that type's subject,
/// so JetStream does not send it the events it would skip: the cart reads `order.confirmed`
/// alone. Any other consumer (every type, several of them, a name that is no service) gets
/// every event, as one filter subject is what NATS 2.9 has, and its handler skips what it does
/// not read.
pub fn consumer_subject(name: &str) -> String {
    let reads = shop_contracts::ServiceName::parse(name)
        .map(shop_contracts::events::read_by)
        .unwrap_or_default();
    match reads {
        [one] => event_subject(one.name),
        _ => ALL_EVENTS.to_owned(),
    }
}

/// The event as a message: its JSON, its id for JetStream's deduplication, and the producer's
/// trace context as W3C headers (`traceparent`, `tracestate`), as OpenTelemetry's messaging
/// conventions put it.
pub(crate) fn event_message(row: &OutboxRow) -> PublishMessage {
    let mut message = PublishMessage::build()
        .payload(row.json().into())
        .message_id(&row.id);
    if let Some(trace) = &row.trace {
        message = message.header(TRACEPARENT, trace.traceparent.as_str());
        if let Some(tracestate) = &trace.tracestate {
            message = message.header(TRACESTATE, tracestate.as_str());
        }
    }
    message
}

/// The producer's trace context a message carries.
fn producer_context(message: &async_nats::jetstream::Message) -> Option<TraceContext> {
    let headers = message.headers.as_ref()?;
    let text = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    TraceContext::new(text(TRACEPARENT), text(TRACESTATE))
}

fn stream_configs() -> [stream::Config; 2] {
    [
        stream::Config {
            name: EVENT_STREAM.into(),
            subjects: vec!["shop.events.>".into()],
            storage: StorageType::File,
            // Consumers are durable and keep their own place; a week bounds the disk.
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
        stream::Config {
            name: DEAD_LETTER_STREAM.into(),
            subjects: vec!["shop.dead.>".into()],
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
    ]
}

/// Creates both streams if missing, or brings their subjects back to ours; safe to race.
pub async fn ensure_streams(jetstream: &Context) -> Result<()> {
    for config in stream_configs() {
        let mut stream = jetstream
            .get_or_create_stream(config.clone())
            .await
            .with_context(|| format!("creating the {} stream", config.name))?;
        let current = stream
            .info()
            .await
            .context("reading a stream's configuration")?;
        if current.config.subjects != config.subjects {
            jetstream
                .update_stream(&config)
                .await
                .with_context(|| format!("updating the {} stream", config.name))?;
        }
    }
    Ok(())
}

/// Runs the durable pull consumer `name` forever, reconnecting with backoff.
pub(crate) async fn consume_forever(
    jetstream: Context,
    db: Database,
    name: String,
    handler: Arc<dyn Handler>,
    options: EventOptions,
    dead: DeadLetterCount,
) {
    let mut failures = 0u32;
    loop {
        let error = consume_until_error(
            &jetstream,
            &db,
            &name,
            &*handler,
            &options,
            &dead,
            &mut failures,
        )
        .await
        .unwrap_err();
        failures += 1;
        if failures == 1 || failures.is_multiple_of(20) {
            tracing::warn!(target: "shop::events", consumer = %name, failures, error = %format!("{error:#}"), "consuming from NATS failed; retrying with backoff");
        }
        tokio::time::sleep(options.backoff(failures)).await;
    }
}

async fn consume_until_error(
    jetstream: &Context,
    db: &Database,
    name: &str,
    handler: &dyn Handler,
    options: &EventOptions,
    dead: &DeadLetterCount,
    failures: &mut u32,
) -> Result<()> {
    ensure_streams(jetstream).await?;
    let stream = jetstream
        .get_stream(EVENT_STREAM)
        .await
        .context("opening the event stream")?;
    let config = pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: consumer_subject(name),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        // Unlimited at the server: the consumer itself dead-letters after `max_deliveries`,
        // so a message never silently stops being delivered.
        max_deliver: -1,
        ..Default::default()
    };
    // Created, or brought to this config (a narrower subject than an older version's). A
    // server that will not change an existing consumer's subject (NATS before 2.10) keeps the
    // one it has: it only sends events the handler skips.
    let consumer: async_nats::jetstream::consumer::PullConsumer = match stream
        .create_consumer(config.clone())
        .await
    {
        Ok(consumer) => consumer,
        Err(refused) => {
            let existing = stream.get_consumer(name).await.map_err(|e| {
                anyhow!("creating the durable consumer: {refused}; reading it: {e}")
            })?;
            tracing::info!(target: "shop::events", consumer = %name, subject = %config.filter_subject, error = %refused, "the server kept the consumer's earlier config");
            existing
        }
    };
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(100)
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(1))
        .messages()
        .await
        .context("pulling messages")?;
    while let Some(message) = messages.next().await {
        let message = message
            .map_err(|e| anyhow!(e))
            .context("receiving a message")?;
        if *failures > 0 {
            tracing::info!(target: "shop::events", consumer = %name, failures = *failures, "consuming from NATS works again");
            *failures = 0;
        }
        if let Err(error) =
            handle_message(jetstream, db, name, handler, options, dead, &message).await
        {
            // The message was neither acked nor nakked: JetStream redelivers it after ack_wait.
            tracing::warn!(target: "shop::events", consumer = %name, error = %format!("{error:#}"), "could not settle a message");
        }
    }
    Err(anyhow!("the message stream ended"))
}

enum Verdict {
    Ack,
    Retry(Duration),
    Dead(DeadReason, String),
}

async fn handle_message(
    jetstream: &Context,
    db: &Database,
    name: &str,
    handler: &dyn Handler,
    options: &EventOptions,
    dead: &DeadLetterCount,
    message: &async_nats::jetstream::Message,
) -> Result<()> {
    let info = message.info().map_err(|e| anyhow!(e))?;
    let delivered = u32::try_from(info.delivered).unwrap_or(1).max(1);
    let stream_sequence = info.stream_sequence;
    let subject = message.subject.as_str().to_owned();
    let decoded = serde_json::from_slice::<Event>(&message.payload);
    let verdict = match &decoded {
        Err(error) => Verdict::Dead(
            DeadReason::Undecodable,
            format!("undecodable event: {error}"),
        ),
        Ok(_) if delivered > options.max_deliveries => Verdict::Dead(
            DeadReason::Exhausted,
            format!("delivered {delivered} times without being acknowledged"),
        ),
        Ok(event) => match consume::apply(db, name, handler, event)
            .instrument(consume::span(
                name,
                event,
                producer_context(message).as_ref(),
            ))
            .await
        {
            Ok(_) => Verdict::Ack,
            Err(HandleError::Reject(error)) => {
                Verdict::Dead(DeadReason::Rejected, format!("rejected: {error:#}"))
            }
            Err(HandleError::Retry(error)) if delivered >= options.max_deliveries => Verdict::Dead(
                DeadReason::Exhausted,
                format!("still failing after {delivered} deliveries: {error:#}"),
            ),
            Err(HandleError::Retry(error)) => {
                tracing::debug!(target: "shop::events", consumer = %name, delivered, error = %format!("{error:#}"), "event will be retried");
                Verdict::Retry(options.backoff(delivered))
            }
        },
    };
    match verdict {
        Verdict::Ack => message.ack().await.map_err(|e| anyhow!(e)),
        Verdict::Retry(delay) => message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| anyhow!(e)),
        Verdict::Dead(reason, error) => {
            let kind = decoded
                .as_ref()
                .map(|e| e.kind.clone())
                .unwrap_or_else(|_| {
                    subject
                        .strip_prefix("shop.events.")
                        .unwrap_or(&subject)
                        .to_owned()
                });
            tracing::warn!(target: "shop::events", consumer = %name, subject = %subject, delivered, error = %error, "dead-lettering a message");
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("{name}:{stream_sequence}").as_str(),
            );
            headers.insert(HEADER_DEAD_CONSUMER, name);
            headers.insert(HEADER_DEAD_ERROR, header_safe(&error).as_str());
            headers.insert(HEADER_DEAD_DELIVERIES, delivered.to_string().as_str());
            headers.insert(HEADER_DEAD_SUBJECT, subject.as_str());
            let dead_subject = format!("shop.dead.{}.{}", subject_part(name), subject_part(&kind));
            let published = async {
                jetstream
                    .send_publish(
                        dead_subject,
                        PublishMessage::build()
                            .payload(message.payload.clone())
                            .headers(headers),
                    )
                    .await?
                    .await?;
                anyhow::Ok(())
            }
            .await;
            match published {
                // Only once the dead letter is stored does the original go.
                Ok(()) => {
                    dead.inc(reason);
                    message
                        .ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow!(e))
                }
                Err(error) => {
                    message
                        .ack_with(AckKind::Nak(Some(options.backoff(delivered))))
                        .await
                        .map_err(|e| anyhow!(e))?;
                    Err(error.context("publishing a dead letter"))
                }
            }
        }
    }
}

/// A header value: one line, bounded.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_of_one_type_is_subscribed_to_its_subject_alone() {
        assert_eq!(consumer_subject("cart"), "shop.events.order.confirmed");
        assert_eq!(consumer_subject("notification"), ALL_EVENTS);
        // Not a service: every event, its handler decides.
        assert_eq!(consumer_subject("recorder_1"), ALL_EVENTS);
    }
}
